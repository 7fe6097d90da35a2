//! How people write addresses, read into parts: the street, the house number (with a
//! letter), the staircase and flat that follow it in Finnish addresses ("Annankatu 31 A 5"),
//! a postcode and whatever names a city or country. Pure string work, no index.

/// A street name folded for comparison: lower case, Nordic and accented letters folded to
/// ASCII (people type "Toolonkatu" for "Töölönkatu"), and only letters and digits kept, so
/// "Iso Roobertinkatu", "Iso-Roobertinkatu" and "ISOROOBERTINKATU" are one key.
pub fn street_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        match fold(c) {
            Some(f) => out.push(f),
            None if c.is_alphanumeric() => out.push(c),
            None => {}
        }
    }
    out
}

/// ASCII for the accented letters that Finnish, Swedish and visitors' keyboards produce.
fn fold(c: char) -> Option<char> {
    Some(match c {
        'a'..='z' | '0'..='9' => c,
        'ä' | 'å' | 'á' | 'à' | 'â' | 'ã' => 'a',
        'ö' | 'ø' | 'ó' | 'ò' | 'ô' | 'õ' => 'o',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'ü' | 'ú' | 'ù' | 'û' => 'u',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'š' => 's',
        'ž' => 'z',
        _ => return None,
    })
}

/// A house number as OSM and people both write it, folded: "31", "31a", "31 A" → "31a".
pub fn number_key(number: &str) -> String {
    street_key(number)
}

/// The parts of a written address. Everything but the street is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedAddress {
    /// The street as written (for messages), and its folded key.
    pub street: String,
    pub street_key: String,
    /// The number's digits ("31").
    pub number: Option<u32>,
    /// A letter that may belong to the number ("31b") or be a staircase ("31 B 5").
    pub letter: Option<char>,
    pub postcode: Option<String>,
}

/// Split an address line into its parts. `None` when no street name can be found.
///
/// The first comma-separated part holds the street and number; later parts hold the
/// postcode, city and country. Without commas, a five-digit token is the postcode and
/// words after the number are a staircase, flat, city or country.
pub fn parse(q: &str) -> Option<ParsedAddress> {
    let all: Vec<&str> = q.split([',', ';', '\n']).map(str::trim).filter(|p| !p.is_empty()).collect();
    // A building or company name may come first ("Kaivopiha, Mannerheimintie 3"): the
    // street is the first part where a word is followed by a number.
    let at = all.iter().position(|p| has_street_number(p)).unwrap_or(0);
    let first = *all.get(at)?;
    let parts = all.into_iter().skip(at + 1);
    let tokens: Vec<&str> = first.split_whitespace().collect();
    let num_at = tokens.iter().skip(1).position(|t| t.starts_with(|c: char| c.is_ascii_digit())).map(|i| i + 1);
    let street_tokens = &tokens[..num_at.unwrap_or(tokens.len())];
    let street = street_tokens.join(" ");
    let key = street_key(&street);
    if key.is_empty() {
        return None;
    }
    let mut out = ParsedAddress { street, street_key: key, ..ParsedAddress::default() };
    let mut rest: Vec<&str> = num_at.map(|i| tokens[i..].to_vec()).unwrap_or_default();
    if let Some(first) = rest.first().copied() {
        let (number, suffix) = split_number(first);
        if number.is_some() && !is_postcode(first) {
            out.number = number;
            out.letter = suffix.chars().find(|c| c.is_alphabetic()).and_then(|c| c.to_lowercase().next());
            rest.remove(0);
            // "31 B", "31 b 5": a lone letter right after the number.
            if out.letter.is_none() {
                if let Some(t) = rest.first().filter(|t| is_letter_token(t)) {
                    out.letter = t.chars().next().and_then(|c| c.to_lowercase().next());
                    rest.remove(0);
                }
            }
        }
    }
    out.postcode = rest
        .into_iter()
        .chain(parts.flat_map(str::split_whitespace))
        .find(|t| is_postcode(t))
        .map(|t| t.trim_matches(|c: char| !c.is_ascii_digit()).to_owned());
    Some(out)
}

/// A word, then a token that starts with a digit and is not a postcode.
fn has_street_number(part: &str) -> bool {
    let mut tokens = part.split_whitespace();
    tokens.next().is_some_and(|w| !w.starts_with(|c: char| c.is_ascii_digit()))
        && tokens.any(|t| t.starts_with(|c: char| c.is_ascii_digit()) && !is_postcode(t))
}

/// "31" → (31, ""), "31a" → (31, "a"), "31-33" → (31, "-33"), "A5" → (None, ...).
fn split_number(t: &str) -> (Option<u32>, &str) {
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    (t[..end].parse().ok(), &t[end..])
}

/// A single letter (optionally with a flat number glued on, "A5"), not a word.
fn is_letter_token(t: &str) -> bool {
    let mut chars = t.trim_end_matches('.').chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic()) && chars.all(|c| c.is_ascii_digit())
}

/// Finnish postcodes are five digits.
fn is_postcode(t: &str) -> bool {
    let t = t.trim_matches(|c: char| !c.is_ascii_digit());
    t.len() == 5 && t.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> (String, Option<u32>, Option<char>, Option<String>) {
        let a = parse(q).unwrap();
        (a.street_key, a.number, a.letter, a.postcode)
    }

    #[test]
    fn finnish_ways_of_writing_an_address() {
        let k = |s: &str| s.to_owned();
        assert_eq!(p("annankatu 31"), (k("annankatu"), Some(31), None, None));
        assert_eq!(p("Annankatu 31 A 5, 00100 Helsinki"), (k("annankatu"), Some(31), Some('a'), Some(k("00100"))));
        assert_eq!(p("ANNANKATU 31 B"), (k("annankatu"), Some(31), Some('b'), None));
        assert_eq!(p("Annankatu 31, Helsinki, Finland"), (k("annankatu"), Some(31), None, None));
        assert_eq!(p("Annankatu 31b as. 4"), (k("annankatu"), Some(31), Some('b'), None));
        assert_eq!(p("Annankatu 31 A5 00100 Helsinki"), (k("annankatu"), Some(31), Some('a'), Some(k("00100"))));
        assert_eq!(p("Iso-Roobertinkatu 7"), (k("isoroobertinkatu"), Some(7), None, None));
        assert_eq!(p("Töölönkatu 4"), (k("toolonkatu"), Some(4), None, None));
        assert_eq!(p("Kaivopiha, Mannerheimintie 3, Helsinki"), (k("mannerheimintie"), Some(3), None, None));
        assert_eq!(p("Annankatu, 00100 Helsinki"), (k("annankatu"), None, None, Some(k("00100"))));
    }

    #[test]
    fn nothing_to_read_is_none() {
        assert_eq!(parse(""), None);
        assert_eq!(parse(" , ,"), None);
        assert_eq!(parse("!!!"), None);
    }
}
