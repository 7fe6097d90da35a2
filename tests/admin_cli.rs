//! `lastmile admin create-user`: a console user made from the command line signs in to the
//! console's API with the password it printed.

// Each test binary uses a different part of the shared helpers.
#[allow(dead_code)]
mod common;

use common::run;
use serde_json::{json, Value};

#[tokio::test]
async fn create_user_prints_a_password_that_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lastmile.db").display());
    let (ok, out, err) = run(common::lastmile(dir.path(), &url).args(["admin", "create-tenant", "Acme Eats"]));
    assert!(ok, "{err}");
    let tenant: Value = serde_json::from_str(&out).unwrap();
    let tenant_id = tenant["tenant_id"].as_str().unwrap();

    let (ok, out, err) = run(common::lastmile(dir.path(), &url).args([
        "admin",
        "create-user",
        "--tenant",
        tenant_id,
        "--email",
        "Ana@Example.com",
        "--role",
        "viewer",
    ]));
    assert!(ok, "{err}");
    let user: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((user["email"].as_str(), user["role"].as_str()), (Some("ana@example.com"), Some("viewer")));
    let password = user["password"].as_str().expect("a generated password is printed once").to_owned();

    // The same email again, an unknown tenant, a bad role: clear errors, non-zero exits.
    let again = ["admin", "create-user", "--tenant", tenant_id, "--email", "ana@example.com"];
    let (ok, _, err) =
        run(common::lastmile(dir.path(), &url).args(again).env("LASTMILE_USER_PASSWORD", "long enough pw"));
    assert!(!ok && err.contains("user_exists"), "{err}");
    let (ok, _, err) = run(common::lastmile(dir.path(), &url).args([
        "admin",
        "create-user",
        "--tenant",
        "ten_nope",
        "--email",
        "b@example.com",
    ]));
    assert!(!ok && err.contains("no tenant"), "{err}");
    let (ok, _, err) = run(common::lastmile(dir.path(), &url).args([
        "admin",
        "create-user",
        "--tenant",
        tenant_id,
        "--email",
        "c@example.com",
        "--role",
        "owner",
    ]));
    assert!(!ok && err.contains("role"), "{err}");

    let http = reqwest::Client::new();
    let server = common::ChildServer::start(dir.path(), &url, &[], "serve", &http).await;
    let res = http
        .post(format!("{}/v1/console/login", server.base))
        .json(&json!({"email": "ana@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["role"], "viewer");
}
