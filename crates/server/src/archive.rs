//! `lastmile archive`: the command-line side of the order archive (the work itself is
//! `lastmile_storage`'s `archive` module). Parses the cutoff date, runs the archive or its
//! verification, and says what it did as JSON on stdout.

use crate::config::Config;
use anyhow::Context;
use chrono::{NaiveDate, Utc};
use std::path::Path;

/// Start of `date` (UTC) as unix milliseconds; a date after today is refused, so an order
/// still in progress today (and the stock hour it holds) can never fall before the cutoff.
pub fn cutoff_ms(date: &str, today: NaiveDate) -> anyhow::Result<i64> {
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .with_context(|| format!("--before {date:?}: expected a date as YYYY-MM-DD"))?;
    anyhow::ensure!(day <= today, "--before {day} is after today ({today}): only finished days can be archived");
    Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis())
}

/// `lastmile archive --before DATE --out DIR`.
pub async fn run(cfg: &Config, before: &str, out: &Path) -> anyhow::Result<()> {
    let cutoff = cutoff_ms(before, Utc::now().date_naive())?;
    let db = crate::open_database(cfg).await?;
    let report = db.archive_finished(out, cutoff).await;
    db.close().await;
    let report = report.with_context(|| format!("archiving into {}", out.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `lastmile archive verify DIR`: an error (non-zero exit) when anything does not match.
pub fn verify(dir: &Path) -> anyhow::Result<()> {
    let report = lastmile_storage::verify_archive(dir).with_context(|| format!("verifying {}", dir.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    anyhow::ensure!(
        report.problems.is_empty(),
        "{} problems in the archive at {}",
        report.problems.len(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::cutoff_ms;
    use chrono::NaiveDate;

    #[test]
    fn the_cutoff_is_a_past_or_present_day_at_midnight_utc() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(cutoff_ms("2026-11-01", today).unwrap(), 1_793_491_200_000);
        assert!(cutoff_ms("2026-12-01", today).is_ok());
        assert!(cutoff_ms("2026-12-02", today).is_err(), "tomorrow");
        assert!(cutoff_ms("01.11.2026", today).is_err());
        assert!(cutoff_ms("2026-02-30", today).is_err());
    }
}
