//! The in-process catalog index: every store with a menu and every dish, searchable with
//! typos. Words are folded (lower case, common diacritics dropped) and split; each word of
//! the vocabulary is indexed by its character trigrams (padded, so short words have some),
//! and a query word matches a vocabulary word exactly, as a prefix, or within one edit
//! (words of 4–7 letters) or two (8 and more), edits counted as Damerau-Levenshtein
//! (optimal string alignment: a swap of neighbours is one edit). Words of 4–7 letters that
//! are spelt as they sound also match a word of about their length with the same first
//! letter and the same consonant skeleton (vowels dropped, b/p, d/t, c/g/k/q, v/w and s/z
//! folded, doubled letters once): "kabob" and "kebap" both find "kebab", which two edits
//! in a five-letter word would not. A dish matches when every
//! query word matches one of its name, aliases, tags, category or description words.
//!
//! A snapshot is immutable; a menu change builds a new one (tens of milliseconds for
//! 10,000 dishes), so readers never wait on writers.

use crate::hours::{is_open, OpeningHours};
use chrono::{DateTime, Utc};
use lastmile_core::GeoPoint;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One store with a menu, as the index and the store list need it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogStore {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub location: GeoPoint,
    pub cuisine: Vec<String>,
    pub hours: Vec<OpeningHours>,
    pub delivery_radius_m: Option<f64>,
    pub dishes: Vec<CatalogDish>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogDish {
    pub id: String,
    pub category: String,
    pub name: String,
    pub description: Option<String>,
    pub aliases: Vec<String>,
    pub tags: Vec<String>,
    pub price_minor: i64,
    pub currency: String,
    pub prep_time_s: i64,
    pub available: bool,
}

impl CatalogStore {
    /// The store's usual preparation time: the median over its dishes.
    pub fn typical_prep_s(&self) -> i64 {
        let mut p: Vec<i64> = self.dishes.iter().map(|d| d.prep_time_s).collect();
        p.sort_unstable();
        p.get(p.len() / 2).copied().unwrap_or(0)
    }
}

/// Where and what a shopper looks for; shared by the store list and search.
#[derive(Debug, Clone)]
pub struct StoreQuery {
    pub tenant_id: String,
    pub near: GeoPoint,
    pub radius_m: f64,
    pub cuisine: Option<String>,
    pub open_now: bool,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: String,
    pub place: StoreQuery,
    pub tags: Vec<String>,
    pub max_price_minor: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreHit {
    pub store: Arc<CatalogStore>,
    pub distance_m: f64,
    pub open_now: bool,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DishHit {
    pub store: Arc<CatalogStore>,
    pub dish: usize,
    pub distance_m: f64,
    pub score: f32,
}

#[derive(Debug, Clone, Default)]
pub struct SearchHits {
    pub stores: Vec<StoreHit>,
    pub dishes: Vec<DishHit>,
}

/// Lower-case, drop common Latin diacritics, and split on anything not a letter or digit.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| {
        w.chars()
            .flat_map(char::to_lowercase)
            .map(|c| match c {
                'ä' | 'à' | 'á' | 'â' | 'ã' | 'å' => 'a',
                'ö' | 'ò' | 'ó' | 'ô' | 'õ' | 'ø' => 'o',
                'ü' | 'ù' | 'ú' | 'û' => 'u',
                'é' | 'è' | 'ê' | 'ë' => 'e',
                'í' | 'ì' | 'î' | 'ï' | 'ı' => 'i',
                'ç' => 'c',
                'ñ' => 'n',
                'ş' => 's',
                'ğ' => 'g',
                c => c,
            })
            .collect()
    })
}

/// Edits allowed for a query word of `len` characters.
fn max_edits(len: usize) -> usize {
    match len {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// The consonant skeleton of a word (see the module notes); None when too short to say
/// much (under two consonants).
fn sound_key(word: &str) -> Option<String> {
    let mut key = String::new();
    for c in word.chars() {
        let folded = match c {
            'a' | 'e' | 'i' | 'o' | 'u' | 'y' | 'h' => continue,
            'p' => 'b',
            't' => 'd',
            'c' | 'g' | 'q' => 'k',
            'v' => 'w',
            'z' => 's',
            c => c,
        };
        if !key.ends_with(folded) {
            key.push(folded);
        }
    }
    (key.chars().count() >= 2).then_some(key)
}

fn trigrams(word: &str) -> impl Iterator<Item = [char; 3]> {
    let padded: Vec<char> = std::iter::once('\u{2}').chain(word.chars()).chain(std::iter::once('\u{3}')).collect();
    (0..padded.len().saturating_sub(2)).map(move |i| [padded[i], padded[i + 1], padded[i + 2]])
}

/// How much a match in each part of a document counts.
mod weight {
    pub const NAME: f32 = 3.0;
    pub const ALIAS: f32 = 2.5;
    pub const CUISINE: f32 = 2.0;
    pub const TAG: f32 = 2.0;
    pub const CATEGORY: f32 = 1.5;
    pub const DESCRIPTION: f32 = 1.0;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Doc {
    Store(u32),
    Dish(u32, u32),
}

/// An immutable view of the catalog: the stores and an index over them.
#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    stores: Vec<Arc<CatalogStore>>,
    by_id: HashMap<String, u32>,
    terms: Vec<String>,
    term_ids: HashMap<String, u32>,
    /// For each term, the documents holding it with the best weight it has there.
    postings: Vec<Vec<(Doc, f32)>>,
    grams: HashMap<[char; 3], Vec<u32>>,
    /// Terms by their [`sound_key`].
    sounds: HashMap<String, Vec<u32>>,
}

impl CatalogSnapshot {
    pub fn build(stores: impl IntoIterator<Item = Arc<CatalogStore>>) -> Self {
        let mut snap = CatalogSnapshot::default();
        let mut postings: Vec<BTreeMap<DocKey, f32>> = Vec::new();
        for store in stores {
            let si = snap.stores.len() as u32;
            let mut add = |snap: &mut CatalogSnapshot, doc: Doc, text: &str, w: f32| {
                for word in words(text) {
                    let next = snap.terms.len() as u32;
                    let t = *snap.term_ids.entry(word.clone()).or_insert(next);
                    if t == next {
                        for g in trigrams(&word) {
                            snap.grams.entry(g).or_default().push(t);
                        }
                        if let Some(k) = sound_key(&word) {
                            snap.sounds.entry(k).or_default().push(t);
                        }
                        snap.terms.push(word);
                        postings.push(BTreeMap::new());
                    }
                    let e = postings[t as usize].entry(DocKey(doc)).or_insert(0.0);
                    *e = e.max(w);
                }
            };
            add(&mut snap, Doc::Store(si), &store.name, weight::NAME);
            for c in &store.cuisine {
                add(&mut snap, Doc::Store(si), c, weight::CUISINE);
            }
            for (di, d) in store.dishes.iter().enumerate() {
                let doc = Doc::Dish(si, di as u32);
                add(&mut snap, doc, &d.name, weight::NAME);
                for a in &d.aliases {
                    add(&mut snap, doc, a, weight::ALIAS);
                }
                for t in &d.tags {
                    add(&mut snap, doc, t, weight::TAG);
                }
                add(&mut snap, doc, &d.category, weight::CATEGORY);
                if let Some(desc) = &d.description {
                    add(&mut snap, doc, desc, weight::DESCRIPTION);
                }
            }
            snap.by_id.insert(store.id.clone(), si);
            snap.stores.push(store);
        }
        snap.postings = postings.into_iter().map(|m| m.into_iter().map(|(k, w)| (k.0, w)).collect()).collect();
        snap
    }

    /// A new snapshot with `store` added or replaced (None removes `store_id`).
    pub fn with_store(&self, store_id: &str, store: Option<CatalogStore>) -> Self {
        let kept = self.stores.iter().filter(|s| s.id != store_id).cloned();
        Self::build(kept.chain(store.map(Arc::new)))
    }

    pub fn store(&self, id: &str) -> Option<&Arc<CatalogStore>> {
        self.by_id.get(id).map(|i| &self.stores[*i as usize])
    }

    pub fn dish_count(&self) -> usize {
        self.stores.iter().map(|s| s.dishes.len()).sum()
    }

    /// Vocabulary words that a query word matches, with how well (1 exact … 0.5 two edits).
    fn expand(&self, word: &str) -> Vec<(u32, f32)> {
        let mut out = Vec::new();
        let exact = self.term_ids.get(word).copied();
        if let Some(t) = exact {
            out.push((t, 1.0));
        }
        let len = word.chars().count();
        let edits = max_edits(len);
        if len < 3 {
            return out;
        }
        let mut candidates: Vec<u32> = trigrams(word).filter_map(|g| self.grams.get(&g)).flatten().copied().collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut consider = |t: u32| {
            if Some(t) == exact {
                return;
            }
            let term = &self.terms[t as usize];
            let tlen = term.chars().count();
            if term.starts_with(word) {
                out.push((t, 0.8));
            } else if edits > 0 && tlen.abs_diff(len) <= edits {
                let d = strsim::osa_distance(word, term);
                if d <= edits {
                    out.push((t, 1.0 - 0.25 * d as f32));
                }
            }
        };
        if candidates.is_empty() {
            // Enough edits can leave no trigram in common: look through the vocabulary.
            (0..self.terms.len() as u32).for_each(&mut consider);
        } else {
            candidates.into_iter().for_each(&mut consider);
        }
        // Spelt as it sounds: the same consonant skeleton, for words too short for two edits.
        if (4..=7).contains(&len) {
            let alike = sound_key(word).and_then(|k| self.sounds.get(&k));
            let first = word.chars().next();
            for &t in alike.into_iter().flatten() {
                let term = &self.terms[t as usize];
                // Same first letter and about the same length: two consonants say little alone.
                let close = term.chars().next() == first && term.chars().count().abs_diff(len) <= 1;
                if close && Some(t) != exact && !out.iter().any(|(seen, _)| *seen == t) {
                    out.push((t, 0.5));
                }
            }
        }
        out
    }

    /// Stores whose delivery area covers `near` within `radius_m`, nearest first.
    pub fn nearby(&self, q: &StoreQuery) -> Vec<StoreHit> {
        let mut hits: Vec<StoreHit> = self.stores.iter().filter_map(|s| self.place_hit(s, q, 0.0)).collect();
        hits.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
        hits
    }

    fn place_hit(&self, s: &Arc<CatalogStore>, q: &StoreQuery, score: f32) -> Option<StoreHit> {
        if s.tenant_id != q.tenant_id {
            return None;
        }
        let distance_m = s.location.distance_m(&q.near);
        if distance_m > q.radius_m || distance_m > s.delivery_radius_m.unwrap_or(f64::INFINITY) {
            return None;
        }
        if let Some(c) = &q.cuisine {
            if !s.cuisine.iter().any(|x| x == c) {
                return None;
            }
        }
        let open_now = is_open(&s.hours, q.now);
        if q.open_now && !open_now {
            return None;
        }
        Some(StoreHit { store: s.clone(), distance_m, open_now, score })
    }

    /// Ranked restaurants and dishes: relevance first, then distance.
    pub fn search(&self, q: &SearchQuery) -> SearchHits {
        let query: Vec<String> = words(&q.text).take(8).collect();
        if query.is_empty() {
            return SearchHits::default();
        }
        // For each document: summed best score per query word, and how many words matched.
        let mut scores: HashMap<Doc, (f32, usize)> = HashMap::new();
        for (qi, word) in query.iter().enumerate() {
            let mut best: HashMap<Doc, f32> = HashMap::new();
            for (t, sim) in self.expand(word) {
                for &(doc, w) in &self.postings[t as usize] {
                    let e = best.entry(doc).or_insert(0.0);
                    *e = e.max(sim * w);
                }
            }
            for (doc, s) in best {
                let e = scores.entry(doc).or_insert((0.0, 0));
                if e.1 == qi {
                    *e = (e.0 + s, qi + 1);
                }
            }
        }
        let mut places: HashMap<u32, Option<StoreHit>> = HashMap::new();
        let mut place = |si: u32| {
            places.entry(si).or_insert_with(|| self.place_hit(&self.stores[si as usize], &q.place, 0.0)).clone()
        };
        let mut stores: HashMap<u32, StoreHit> = HashMap::new();
        let mut dishes = Vec::new();
        for (doc, (score, matched)) in scores {
            if matched < query.len() {
                continue;
            }
            match doc {
                Doc::Store(si) => {
                    if let Some(hit) = place(si) {
                        let e = stores.entry(si).or_insert(hit);
                        e.score = e.score.max(score);
                    }
                }
                Doc::Dish(si, di) => {
                    let Some(hit) = place(si) else { continue };
                    let dish = &hit.store.dishes[di as usize];
                    if q.max_price_minor.is_some_and(|m| dish.price_minor > m)
                        || !q.tags.iter().all(|t| dish.tags.contains(t))
                    {
                        continue;
                    }
                    // A restaurant with a matching dish matches too, a little less.
                    let e = stores.entry(si).or_insert_with(|| hit.clone());
                    e.score = e.score.max(score * 0.5);
                    dishes.push(DishHit { distance_m: hit.distance_m, store: hit.store, dish: di as usize, score });
                }
            }
        }
        let mut stores: Vec<StoreHit> = stores.into_values().collect();
        let rank = |s: f32| (s * 100.0).round() as i64;
        stores.sort_by(|a, b| rank(b.score).cmp(&rank(a.score)).then(a.distance_m.total_cmp(&b.distance_m)));
        dishes.sort_by(|a, b| rank(b.score).cmp(&rank(a.score)).then(a.distance_m.total_cmp(&b.distance_m)));
        stores.truncate(q.limit);
        dishes.truncate(q.limit);
        SearchHits { stores, dishes }
    }
}

/// Orders documents so postings lists come out sorted (stable results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DocKey(Doc);

impl Ord for DocKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let key = |d: &Doc| match *d {
            Doc::Store(s) => (s, 0u32, 0u8),
            Doc::Dish(s, i) => (s, i, 1u8),
        };
        key(&self.0).cmp(&key(&other.0))
    }
}

impl PartialOrd for DocKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dish(id: &str, name: &str, aliases: &[&str], tags: &[&str], price: i64) -> CatalogDish {
        CatalogDish {
            id: id.into(),
            category: "mains".into(),
            name: name.into(),
            description: None,
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            price_minor: price,
            currency: "EUR".into(),
            prep_time_s: 600,
            available: true,
        }
    }

    fn store(id: &str, name: &str, lat: f64, cuisine: &str, dishes: Vec<CatalogDish>) -> Arc<CatalogStore> {
        Arc::new(CatalogStore {
            id: id.into(),
            tenant_id: "t".into(),
            name: name.into(),
            location: GeoPoint::new(lat, 24.94).unwrap(),
            cuisine: vec![cuisine.into()],
            hours: vec![],
            delivery_radius_m: None,
            dishes,
        })
    }

    fn snapshot() -> CatalogSnapshot {
        CatalogSnapshot::build([
            store(
                "s1",
                "Anatolia Grill",
                60.170,
                "turkish",
                vec![
                    dish("d1", "Adana Kebab", &["kabob"], &["spicy", "halal"], 1290),
                    dish("d2", "Lentil Soup", &[], &["vegan"], 690),
                ],
            ),
            store(
                "s2",
                "Napoli Pizzeria",
                60.175,
                "italian",
                vec![dish("d3", "Margherita Pizza", &[], &["vegetarian"], 1090)],
            ),
            store("s3", "Far Kebab House", 60.300, "turkish", vec![dish("d4", "Döner Kebab", &[], &[], 990)]),
        ])
    }

    fn query(text: &str) -> SearchQuery {
        SearchQuery {
            text: text.into(),
            place: StoreQuery {
                tenant_id: "t".into(),
                near: GeoPoint::new(60.170, 24.94).unwrap(),
                radius_m: 5_000.0,
                cuisine: None,
                open_now: false,
                now: Utc::now(),
            },
            tags: vec![],
            max_price_minor: None,
            limit: 20,
        }
    }

    fn dish_ids(h: &SearchHits) -> Vec<&str> {
        h.dishes.iter().map(|d| d.store.dishes[d.dish].id.as_str()).collect()
    }

    #[test]
    fn kebab_is_found_exactly_with_a_typo_and_by_alias() {
        let s = snapshot();
        for q in ["kebab", "kebap", "kabob", "KEBAB", "keb"] {
            assert_eq!(dish_ids(&s.search(&query(q))), vec!["d1"], "query {q}");
        }
        // The far store is outside the radius.
        assert!(s.search(&query("kebab")).stores.iter().all(|h| h.store.id == "s1"));
    }

    #[test]
    fn words_spelt_as_they_sound_match_by_their_consonants() {
        assert_eq!(sound_key("kabob"), sound_key("kebab"));
        assert_eq!(sound_key("kebap"), sound_key("kebab"));
        assert_ne!(sound_key("pizza"), sound_key("kebab"));
        assert_eq!(sound_key("tea"), None, "too few consonants to say anything");
    }

    #[test]
    fn two_typos_in_a_long_word_still_match() {
        let s = snapshot();
        assert_eq!(dish_ids(&s.search(&query("margheritta piza"))), vec!["d3"]);
        assert_eq!(dish_ids(&s.search(&query("mragherita"))), vec!["d3"]);
    }

    #[test]
    fn filters_and_ranking() {
        let s = snapshot();
        let mut q = query("vegan");
        assert_eq!(dish_ids(&s.search(&q)), vec!["d2"]);
        q = query("kebab");
        q.max_price_minor = Some(1000);
        assert!(dish_ids(&s.search(&q)).is_empty());
        q = query("pizza");
        q.place.cuisine = Some("turkish".into());
        assert!(s.search(&q).dishes.is_empty());
        q = query("turkish");
        q.place.radius_m = 50_000.0;
        let ids: Vec<_> = s.search(&q).stores.iter().map(|h| h.store.id.clone()).collect();
        assert_eq!(ids, vec!["s1", "s3"], "same relevance: nearest first");
        q.tags = vec!["spicy".into()];
        q.text = "kebab".into();
        assert_eq!(dish_ids(&s.search(&q)), vec!["d1"]);
    }

    #[test]
    fn other_tenants_and_removed_stores_are_invisible() {
        let s = snapshot();
        let mut q = query("kebab");
        q.place.tenant_id = "other".into();
        assert!(s.search(&q).dishes.is_empty());
        let s = s.with_store("s1", None);
        assert!(s.search(&query("kebab")).dishes.is_empty());
        assert!(s.store("s2").is_some());
    }
}
