//! `lastmile config` and how every command reads its configuration: `LASTMILE_CONFIG` names
//! the TOML file (as `--config` does), environment variables override it, `LASTMILE_*`
//! variables that name no setting are ignored with a warning instead of failing the
//! command, and the printed TOML hides every secret, the database password included.

use std::process::{Command, Output, Stdio};

/// `lastmile config` with a clean `LASTMILE_*` environment plus `env`.
fn config(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lastmile"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LASTMILE_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("config").envs(env.iter().copied()).stdin(Stdio::null());
    cmd.output().expect("run lastmile config")
}

fn stdout_toml(out: &Output) -> toml::Table {
    assert!(out.status.success(), "lastmile config failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).parse::<toml::Table>().expect("lastmile config prints TOML")
}

#[test]
fn lastmile_config_file_is_read_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lastmile.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9123\"\npublic_url = \"https://deliver.example.com\"\n[dispatch]\nabandon_s = 90\ntick_ms = 250\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let shown = stdout_toml(&config(&[("LASTMILE_CONFIG", path), ("LASTMILE_DISPATCH__TICK_MS", "100")]));
    assert_eq!(shown["listen"].as_str(), Some("127.0.0.1:9123"), "{shown}");
    assert_eq!(shown["public_url"].as_str(), Some("https://deliver.example.com"));
    assert_eq!(shown["dispatch"]["abandon_s"].as_integer(), Some(90));
    assert_eq!(shown["dispatch"]["tick_ms"].as_integer(), Some(100), "the environment overrides the file");
    assert_eq!(shown["tracking"]["cors_origins"].as_array().map(Vec::len), Some(1));

    let missing = config(&[("LASTMILE_CONFIG", "/nonexistent/lastmile.toml")]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[test]
fn stray_lastmile_variables_are_ignored_with_a_warning() {
    let out = config(&[
        ("LASTMILE_ADMIN_KEY", "lm_admin_xyz"),
        ("LASTMILE_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        ("LASTMILE_LISTEN", "127.0.0.1:9999"),
    ]);
    let shown = stdout_toml(&out);
    assert_eq!(shown["listen"].as_str(), Some("127.0.0.1:9999"), "real settings still apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LASTMILE_ADMIN_KEY") && err.contains("LASTMILE_TEST_DATABASE_URL"), "{err}");
    assert!(!err.contains("LASTMILE_LISTEN"), "a setting is not reported: {err}");
    // A bad value for a real setting still fails, naming it.
    let bad = config(&[("LASTMILE_DISPATCH__ABANDON_S", "0")]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("abandon_s"));
}

#[test]
fn printed_configuration_hides_secrets() {
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes, base64
    let out = config(&[
        ("LASTMILE_DATABASE_URL", "postgres://lastmile:hunter2@db.internal:5432/lastmile"),
        ("LASTMILE_SECRET_KEY", key),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let shown = stdout_toml(&out);
    assert!(!text.contains("hunter2") && !text.contains(key), "{text}");
    assert_eq!(shown["database_url"].as_str(), Some("postgres://lastmile:[redacted]@db.internal:5432/lastmile"));
    assert_eq!(shown["secret_key"].as_str(), Some("[redacted]"));
}
