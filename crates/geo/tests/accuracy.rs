//! The geocoding budget: ≥ 95% of addresses within 50 m however people write them, per
//! writing style, on real addresses of the Helsinki extract.

use lastmile_geo::testset::{parse_cases, score, ACCURATE_WITHIN_M, HELSINKI_ADDRESSES, STYLES};
use lastmile_geo::AddressIndex;

#[test]
fn helsinki_addresses_geocode_within_50_m_in_every_writing_style() {
    let index = AddressIndex::from_pbf_file(&lastmile_geo::helsinki_pbf_path()).unwrap();
    let cases = parse_cases(HELSINKI_ADDRESSES).unwrap();
    assert!(cases.len() >= 200 * STYLES.len(), "the set holds {} queries", cases.len());
    let scores = score(&index, &cases);
    for s in &scores {
        println!(
            "{:<26} {:>4} queries  {:>6.1}% within {ACCURATE_WITHIN_M} m  ({} unmatched)",
            s.style,
            s.cases,
            100.0 * s.share(),
            s.unmatched
        );
    }
    assert_eq!(scores.len(), STYLES.len() + 1, "every style is scored");
    for s in &scores {
        assert!(s.share() >= 0.95, "{}: {:.1}% within {ACCURATE_WITHIN_M} m", s.style, 100.0 * s.share());
    }
}

#[test]
fn the_shipped_set_is_what_the_generator_makes_from_the_extract() {
    let index = AddressIndex::from_pbf_file(&lastmile_geo::helsinki_pbf_path()).unwrap();
    let shipped = parse_cases(HELSINKI_ADDRESSES).unwrap();
    let fresh = lastmile_geo::testset::generate(&index, 250);
    assert_eq!(shipped.len(), fresh.len());
    for (a, b) in shipped.iter().zip(&fresh) {
        assert_eq!((&a.style, &a.query), (&b.style, &b.query));
        assert!(a.expected.distance_m(&b.expected) < 0.1, "{a:?} vs {b:?}");
    }
}
