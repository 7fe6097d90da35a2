//! Search latency over a synthetic city of 10,000 dishes (500 restaurants × 20 dishes),
//! with exact words, typos, aliases, prefixes and filters, single-threaded.
//!
//! `cargo run --release -p lastmile-catalog --example search_bench [dishes]`

use chrono::Utc;
use lastmile_catalog::{CatalogDish, CatalogSnapshot, CatalogStore, SearchQuery, StoreQuery};
use lastmile_core::GeoPoint;
use std::sync::Arc;
use std::time::Instant;

const WORDS: [&str; 40] = [
    "kebab",
    "pizza",
    "margherita",
    "burger",
    "cheeseburger",
    "falafel",
    "hummus",
    "shawarma",
    "ramen",
    "sushi",
    "nigiri",
    "salmon",
    "soup",
    "lentil",
    "chicken",
    "tikka",
    "masala",
    "curry",
    "paneer",
    "noodles",
    "pad",
    "thai",
    "burrito",
    "taco",
    "quesadilla",
    "gyoza",
    "dumplings",
    "bibimbap",
    "pho",
    "risotto",
    "lasagne",
    "carbonara",
    "pesto",
    "gnocchi",
    "salad",
    "caesar",
    "halloumi",
    "wrap",
    "fries",
    "tiramisu",
];
const CUISINES: [&str; 8] = ["turkish", "italian", "american", "japanese", "indian", "thai", "mexican", "finnish"];
const TAGS: [&str; 5] = ["vegan", "vegetarian", "spicy", "halal", "gluten-free"];

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

fn main() {
    let dishes: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let per_store = 20;
    let mut rng = Rng(0x5eed);
    let stores: Vec<Arc<CatalogStore>> = (0..dishes.div_ceil(per_store))
        .map(|s| {
            let lat = 60.10 + (rng.next() % 1_500) as f64 / 10_000.0;
            let lng = 24.80 + (rng.next() % 3_000) as f64 / 10_000.0;
            Arc::new(CatalogStore {
                id: format!("s{s}"),
                tenant_id: "t".into(),
                name: format!("{} {} House", rng.pick(&WORDS), rng.pick(&CUISINES)),
                location: GeoPoint::new(lat, lng).unwrap(),
                cuisine: vec![rng.pick(&CUISINES).into()],
                hours: vec![],
                delivery_radius_m: None,
                dishes: (0..per_store)
                    .map(|d| CatalogDish {
                        id: format!("s{s}d{d}"),
                        category: rng.pick(&["mains", "starters", "desserts", "drinks"]).into(),
                        name: format!("{} {}", rng.pick(&WORDS), rng.pick(&WORDS)),
                        description: Some(format!("with {} and {}", rng.pick(&WORDS), rng.pick(&WORDS))),
                        aliases: vec![format!("{}s", rng.pick(&WORDS))],
                        tags: vec![rng.pick(&TAGS).into()],
                        price_minor: 500 + (rng.next() % 2_000) as i64,
                        currency: "EUR".into(),
                        prep_time_s: 300 + (rng.next() % 1_200) as i64,
                        available: true,
                    })
                    .collect(),
            })
        })
        .collect();
    let t = Instant::now();
    let snap = CatalogSnapshot::build(stores);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let queries = [
        "kebab",
        "kebap",
        "kabob",
        "margarita",
        "cheesburger",
        "ramen",
        "sushii",
        "chiken tikka",
        "lasagna",
        "piz",
        "falafel wrap",
        "tiramisu",
        "dumplings",
        "carbonarra",
        "soup",
        "quesadila",
    ];
    let mut took = Vec::new();
    let mut hits = 0;
    for round in 0..200 {
        for (i, q) in queries.iter().enumerate() {
            let query = SearchQuery {
                text: (*q).into(),
                place: StoreQuery {
                    tenant_id: "t".into(),
                    near: GeoPoint::new(60.17, 24.94).unwrap(),
                    radius_m: if i % 2 == 0 { 5_000.0 } else { 20_000.0 },
                    cuisine: None,
                    open_now: false,
                    now: Utc::now(),
                },
                tags: if (round + i) % 4 == 0 { vec!["vegan".into()] } else { vec![] },
                max_price_minor: if (round + i) % 3 == 0 { Some(1_500) } else { None },
                limit: 20,
            };
            let t = Instant::now();
            let h = snap.search(&query);
            took.push(t.elapsed().as_secs_f64() * 1e3);
            hits += h.dishes.len();
        }
    }
    took.sort_by(f64::total_cmp);
    let at = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "{} dishes, index built in {build_ms:.1} ms; {} searches ({} dish hits): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        snap.dish_count(),
        took.len(),
        hits,
        at(0.50),
        at(0.99),
        took[took.len() - 1]
    );
}
