//! Opening hours: weekly windows in UTC. A window whose close is not after its open runs
//! past midnight into the next day. A store with no windows is always open.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpeningHours {
    /// Three-letter lower-case day names (`mon` … `sun`) on which the window opens.
    pub days: Vec<String>,
    /// `HH:MM`, UTC.
    pub open: String,
    /// `HH:MM`, UTC; at or before `open` means the window closes the next day.
    pub close: String,
}

/// Minutes since midnight for `HH:MM`, or None.
pub(crate) fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn day_index(name: &str) -> Option<u32> {
    DAYS.iter().position(|d| *d == name).map(|i| i as u32)
}

/// Whether a store with these hours is open at `now`.
pub fn is_open(hours: &[OpeningHours], now: DateTime<Utc>) -> bool {
    if hours.is_empty() {
        return true;
    }
    let today = now.weekday().num_days_from_monday();
    let yesterday = (today + 6) % 7;
    let minute = now.hour() * 60 + now.minute();
    hours.iter().any(|w| {
        let (Some(open), Some(close)) = (parse_hhmm(&w.open), parse_hhmm(&w.close)) else { return false };
        w.days.iter().filter_map(|d| day_index(d)).any(|d| {
            if close > open {
                d == today && (open..close).contains(&minute)
            } else {
                (d == today && minute >= open) || (d == yesterday && minute < close)
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn w(days: &[&str], open: &str, close: &str) -> OpeningHours {
        OpeningHours { days: days.iter().map(|d| d.to_string()).collect(), open: open.into(), close: close.into() }
    }

    #[test]
    fn windows_include_overnight_spans() {
        // 2026-12-01 is a Tuesday.
        let tue_23 = Utc.with_ymd_and_hms(2026, 12, 1, 23, 0, 0).unwrap();
        let wed_01 = Utc.with_ymd_and_hms(2026, 12, 2, 1, 0, 0).unwrap();
        let lunch = [w(&["tue"], "11:00", "14:00")];
        assert!(!is_open(&lunch, tue_23));
        let late = [w(&["tue"], "18:00", "02:00")];
        assert!(is_open(&late, tue_23));
        assert!(is_open(&late, wed_01));
        assert!(is_open(&[], wed_01));
    }

    #[test]
    fn parses_only_real_clock_times() {
        assert_eq!(parse_hhmm("09:30"), Some(570));
        assert_eq!(parse_hhmm("24:00"), None);
        assert_eq!(parse_hhmm("9:30"), None);
    }
}
