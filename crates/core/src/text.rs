//! Text that every database accepts. PostgreSQL refuses the NUL character (U+0000) in
//! `TEXT`; SQLite stores it but truncates it in some functions. The rule: a request we
//! can refuse (an API call) is refused when any string carries NUL; a signed platform
//! delivery, which we must never lose, keeps its raw body byte for byte and has NUL
//! replaced by U+FFFD in the fields we store as text.

/// What NUL becomes in a stored field: the Unicode replacement character.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// Replace every NUL in `s` with [`NUL_REPLACEMENT`], in place; returns whether any was found.
pub fn scrub_nul(s: &mut String) -> bool {
    if !s.contains('\0') {
        return false;
    }
    *s = s.replace('\0', "\u{FFFD}");
    true
}

/// [`scrub_nul`] over an optional field.
pub fn scrub_nul_opt(s: &mut Option<String>) -> bool {
    s.as_mut().is_some_and(scrub_nul)
}

/// Whether a JSON document (as raw bytes) contains a string with NUL: the escape
/// `\u0000` (a raw NUL byte is not valid JSON and fails parsing anyway). A `\\u0000`
/// is an escaped backslash followed by the letters "u0000", which is harmless text.
pub fn json_has_nul(raw: &[u8]) -> bool {
    let needle = b"u0000";
    let mut from = 0;
    while let Some(pos) = find(&raw[from..], needle) {
        let at = from + pos;
        let backslashes = raw[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    raw.contains(&0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether a URL-encoded string (a query string or a form body) decodes to NUL anywhere.
pub fn urlencoded_has_nul(raw: &[u8]) -> bool {
    raw.windows(3).any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0') || raw.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scrubs_nul_and_reports_it() {
        let mut s = String::from("a\0b\0");
        assert!(scrub_nul(&mut s));
        assert_eq!(s, "a\u{FFFD}b\u{FFFD}");
        let mut clean = String::from("plain");
        assert!(!scrub_nul(&mut clean));
        let mut none: Option<String> = None;
        assert!(!scrub_nul_opt(&mut none));
    }

    #[test]
    fn finds_nul_escapes_in_json_and_not_escaped_backslashes() {
        assert!(json_has_nul(br#"{"note":"a\u0000b"}"#));
        assert!(json_has_nul(br#"{"note":"\\\u0000"}"#));
        assert!(!json_has_nul(br#"{"note":"\\u0000"}"#), "an escaped backslash then text");
        assert!(!json_has_nul(br#"{"note":"u0000"}"#));
        assert!(!json_has_nul(br#"{"note":"\u0001"}"#));
    }

    #[test]
    fn finds_nul_in_urlencoded_text() {
        assert!(urlencoded_has_nul(b"client_id=a%00b"));
        assert!(!urlencoded_has_nul(b"client_id=a%20b%100"));
    }

    proptest! {
        /// Whatever a string holds, serde's JSON for it is flagged exactly when it has NUL.
        #[test]
        fn json_detection_matches_serde(s in any::<String>()) {
            let json = serde_json::to_vec(&s).unwrap();
            prop_assert_eq!(json_has_nul(&json), s.contains('\0'));
        }
    }
}

/// The message a caught panic carried (`panic!("…")` gives a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
