//! A simulated city, fully determined by its seed: where the stores are and on which
//! platform, where the drivers start, and for every order number which store sends it,
//! where it goes, who ordered what, how long it takes to prepare, and whether a driver
//! takes a given offer. The same seed and sizes give the same scenario.

use crate::graph::RoadGraph;
use lastmile_core::GeoPoint;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Where an order comes from: a platform webhook (signed, real payload shape) or the
/// native ordering API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Shopify,
    Woocommerce,
    /// A signed `store/order/created` callback; the order itself is fetched from the
    /// store's API (a stand-in the simulator runs on 127.0.0.1).
    Bigcommerce,
    Native,
    /// A native store with a menu (`PUT /v1/stores/{id}/menu`) whose customers order its
    /// dishes by `item_id` through the catalog: prices, stock and readiness are the server's.
    Restaurant,
}

impl Source {
    pub fn platform(self) -> &'static str {
        match self {
            Source::Shopify => "shopify",
            Source::Woocommerce => "woocommerce",
            Source::Bigcommerce => "bigcommerce",
            Source::Native | Source::Restaurant => "native",
        }
    }

    /// As on the command line (`restaurant` for a native store with a menu).
    pub fn name(self) -> &'static str {
        match self {
            Source::Restaurant => "restaurant",
            other => other.platform(),
        }
    }

    /// Its orders carry a street address and no coordinates: the server geocodes them.
    pub fn needs_geocoding(self) -> bool {
        matches!(self, Source::Woocommerce | Source::Bigcommerce)
    }
}

/// The knobs of a simulated city (all shared by `demo`, `sim` and `bench city`).
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct CityConfig {
    /// Drivers in the fleet.
    #[arg(long, default_value_t = 40)]
    pub drivers: usize,
    /// Stores; their platforms cycle through --sources.
    #[arg(long, default_value_t = 6)]
    pub stores: usize,
    /// Orders sent per minute, over all stores, at a steady rate.
    #[arg(long, default_value_t = 30.0)]
    pub orders_per_minute: f64,
    /// The scenario's seed: the same seed gives the same city, orders and decisions.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// How orders arrive; stores take these in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Source::Shopify, Source::Woocommerce, Source::Bigcommerce, Source::Restaurant])]
    pub sources: Vec<Source>,
    /// Chance that a driver accepts an offer (the rest are declined with a reason).
    #[arg(long, default_value_t = 0.85)]
    pub accept_probability: f64,
    /// Driving speed along the roads, m/s (the server flags > 70 m/s as implausible).
    #[arg(long, default_value_t = 11.0)]
    pub speed_mps: f64,
    /// Dropoffs are road nodes within this distance of their store.
    #[arg(long, default_value_t = 2_500.0)]
    pub dropoff_radius_m: f64,
    /// Drivers start at road nodes within this distance of the city centre.
    #[arg(long, default_value_t = 2_000.0)]
    pub fleet_radius_m: f64,
    /// Native orders are ready this many seconds after they are placed, at most (uniform).
    #[arg(long, default_value_t = 0.0)]
    pub max_prep_s: f64,
    /// Seconds spent at the store door and at the customer's door.
    #[arg(long, default_value_t = 5.0)]
    pub handover_s: f64,
    /// Milliseconds between two GPS fixes of a driver.
    #[arg(long, default_value_t = 1000)]
    pub gps_interval_ms: u64,
    /// Locate WooCommerce orders (they carry an address, no coordinates) with
    /// `PATCH /v1/orders/{id}` as an operator would, instead of leaving them to the
    /// server's geocoder.
    #[arg(long)]
    pub locate_by_hand: bool,
}

impl CityConfig {
    /// The defaults with some flags changed, as on the command line (`["--drivers", "9"]`).
    pub fn from_flags(flags: &[&str]) -> anyhow::Result<CityConfig> {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            city: CityConfig,
        }
        let argv = std::iter::once("city").chain(flags.iter().copied());
        Ok(<Flags as clap::Parser>::try_parse_from(argv)?.city)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.drivers > 0 && self.stores > 0, "--drivers and --stores must be positive");
        anyhow::ensure!(self.orders_per_minute > 0.0, "--orders-per-minute must be positive");
        anyhow::ensure!(!self.sources.is_empty(), "--sources needs at least one source");
        anyhow::ensure!((0.0..=1.0).contains(&self.accept_probability), "--accept-probability is a probability");
        anyhow::ensure!(self.speed_mps > 0.0 && self.speed_mps < 70.0, "--speed-mps must be in (0, 70)");
        anyhow::ensure!(self.gps_interval_ms >= 50, "--gps-interval-ms must be at least 50");
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct StoreSpec {
    pub index: usize,
    pub name: String,
    pub source: Source,
    /// Shop domain, site URL or store hash, unique per run.
    pub identity: String,
    pub secret: String,
    pub point: GeoPoint,
    pub address: String,
}

#[derive(Debug, Clone)]
pub struct DriverSpec {
    pub index: usize,
    pub name: String,
    pub phone: String,
    pub vehicle: &'static str,
    pub start_node: u32,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub sku: String,
    pub name: &'static str,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone)]
pub struct OrderSpec {
    /// 0, 1, 2, … in sending order.
    pub number: u64,
    pub store: usize,
    pub dropoff: GeoPoint,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub street: String,
    pub postal_code: String,
    pub items: Vec<Item>,
    pub prep: Duration,
}

impl OrderSpec {
    pub fn subtotal_minor(&self) -> i64 {
        self.items.iter().map(|i| i.quantity * i.unit_price_minor).sum()
    }
    pub fn email(&self) -> String {
        format!("{}.{}@example.fi", self.first_name, self.last_name).to_lowercase().replace(['ä', 'ö'], "a")
    }
}

/// The city: its map, its stores and fleet, and its order stream.
pub struct Scenario {
    pub cfg: CityConfig,
    pub graph: RoadGraph,
    pub stores: Vec<StoreSpec>,
    pub drivers: Vec<DriverSpec>,
    /// Road nodes near each store, where its customers live.
    dropoff_nodes: Vec<Vec<u32>>,
    /// Real addresses near each store (from the extract), used instead of road nodes
    /// when known: orders then carry a street address a geocoder can find.
    dropoff_addresses: Vec<Vec<DropoffAddress>>,
}

/// A real address of the extract: what a customer types, and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoffAddress {
    pub line1: String,
    pub postal_code: Option<String>,
    pub point: GeoPoint,
}

/// Every address of an extract's address index, as dropoffs.
pub fn dropoff_addresses(index: &lastmile_geo::AddressIndex) -> Vec<DropoffAddress> {
    let mut out: Vec<DropoffAddress> = index
        .addresses()
        .map(|(street, number, postcode, point)| DropoffAddress {
            line1: format!("{street} {number}"),
            postal_code: postcode.map(str::to_owned),
            point,
        })
        .collect();
    // The index is a hash map: sort so the same seed picks the same addresses.
    out.sort_by(|a, b| a.line1.cmp(&b.line1));
    out
}

const FIRST: [&str; 12] =
    ["Aino", "Eero", "Liisa", "Mikko", "Sanna", "Juha", "Emma", "Onni", "Helmi", "Väinö", "Kaisa", "Timo"];
const LAST: [&str; 10] = [
    "Virtanen",
    "Korhonen",
    "Mäkinen",
    "Nieminen",
    "Mäkelä",
    "Hämäläinen",
    "Laine",
    "Heikkinen",
    "Koskinen",
    "Järvinen",
];
const STREETS: [&str; 12] = [
    "Mannerheimintie",
    "Aleksanterinkatu",
    "Bulevardi",
    "Fredrikinkatu",
    "Hämeentie",
    "Runeberginkatu",
    "Lönnrotinkatu",
    "Kaisaniemenkatu",
    "Unioninkatu",
    "Albertinkatu",
    "Annankatu",
    "Kalevankatu",
];
const MENU: [(&str, i64); 8] = [
    ("Lohikeitto", 1450),
    ("Karjalanpiirakka", 350),
    ("Korvapuusti", 420),
    ("Poronkäristys", 2390),
    ("Ruisleipä", 590),
    ("Leipäjuusto", 780),
    ("Mustikkapiirakka", 650),
    ("Kahvi", 290),
];
/// A dish's SKU, the same on a native order's lines and on a restaurant's menu.
pub fn dish_sku(name: &str, price: i64) -> String {
    format!("FI-{}", name.len() * 97 + price as usize)
}

/// The menu a [`Source::Restaurant`] publishes: the city's dishes, made to order, the
/// slowest ready within `--max-prep-s`.
pub fn restaurant_menu(cfg: &CityConfig) -> serde_json::Value {
    let n = MENU.len() as f64;
    let items: Vec<serde_json::Value> = MENU
        .iter()
        .enumerate()
        .map(|(k, (name, price))| {
            serde_json::json!({"sku": dish_sku(name, *price), "name": name, "price_minor": price, "currency": "EUR",
                "prep_time_s": (cfg.max_prep_s * (k as f64 + 1.0) / n).round() as i64,
                "stock": {"kind": "made_to_order", "per_hour": 100_000}})
        })
        .collect();
    serde_json::json!({"cuisine": ["Finnish"], "categories": [{"name": "Keittiö", "items": items}]})
}

const STORE_KINDS: [&str; 6] = ["Grill", "Bakery", "Deli", "Market", "Kitchen", "Café"];

/// Mix a seed with a stream tag and an index into an independent RNG seed (SplitMix64),
/// so each order or decision can be drawn without replaying everything before it.
pub fn stream(seed: u64, tag: u64, n: u64) -> StdRng {
    let mut z = seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

const TAG_STORES: u64 = 1;
const TAG_DRIVERS: u64 = 2;
const TAG_ORDERS: u64 = 3;
const TAG_DECISIONS: u64 = 4;
const TAG_ROAMING: u64 = 5;

impl Scenario {
    /// `run_tag` makes platform identities unique per run (a server may hold earlier runs);
    /// it changes no geography and no decision.
    pub fn new(cfg: CityConfig, graph: RoadGraph, run_tag: &str) -> anyhow::Result<Scenario> {
        cfg.validate()?;
        let centre = graph.centre();
        let near = |radius: f64| {
            let nodes = graph.nodes_within(&centre, radius);
            if nodes.is_empty() {
                (0..graph.len() as u32).collect()
            } else {
                nodes
            }
        };
        let store_area = near(cfg.fleet_radius_m);
        let mut rng = stream(cfg.seed, TAG_STORES, 0);
        let stores: Vec<StoreSpec> = (0..cfg.stores)
            .map(|i| {
                let source = cfg.sources[i % cfg.sources.len()];
                let node = store_area[rng.gen_range(0..store_area.len())];
                let slug = format!("sim{i}-{run_tag}");
                let identity = match source {
                    Source::Shopify => format!("{slug}.myshopify.com"),
                    Source::Woocommerce => format!("https://{slug}.example.fi"),
                    Source::Bigcommerce => slug.clone(),
                    Source::Native | Source::Restaurant => slug.clone(),
                };
                StoreSpec {
                    index: i,
                    name: format!("{} {} {}", LAST[i % LAST.len()], STORE_KINDS[i % STORE_KINDS.len()], i + 1),
                    source,
                    identity,
                    secret: format!("whsec-sim-{}-{:016x}", i, rng.gen::<u64>()),
                    point: graph.point(node),
                    address: format!("{} {}, Helsinki", STREETS[rng.gen_range(0..STREETS.len())], rng.gen_range(1..80)),
                }
            })
            .collect();
        let fleet_area = near(cfg.fleet_radius_m);
        let mut rng = stream(cfg.seed, TAG_DRIVERS, 0);
        let drivers = (0..cfg.drivers)
            .map(|i| DriverSpec {
                index: i,
                name: format!("{} {}", FIRST[rng.gen_range(0..FIRST.len())], LAST[rng.gen_range(0..LAST.len())]),
                phone: format!("+35840{:07}", rng.gen_range(0..10_000_000)),
                vehicle: ["car", "scooter", "bike"][rng.gen_range(0..3)],
                start_node: fleet_area[rng.gen_range(0..fleet_area.len())],
            })
            .collect();
        let dropoff_nodes = stores
            .iter()
            .map(|s| {
                let mut nodes = graph.nodes_within(&s.point, cfg.dropoff_radius_m);
                nodes.retain(|&n| graph.point(n).distance_m(&s.point) > 50.0);
                if nodes.is_empty() {
                    nodes.push(graph.nearest_node(&s.point));
                }
                nodes
            })
            .collect();
        let dropoff_addresses = vec![Vec::new(); stores.len()];
        Ok(Scenario { cfg, graph, stores, drivers, dropoff_nodes, dropoff_addresses })
    }

    /// Send customers to these real addresses (those within `--dropoff-radius-m` of their
    /// store) instead of bare road nodes.
    pub fn with_addresses(mut self, addresses: &[DropoffAddress]) -> Scenario {
        self.dropoff_addresses = self
            .stores
            .iter()
            .map(|s| {
                addresses
                    .iter()
                    .filter(|a| (50.0..=self.cfg.dropoff_radius_m).contains(&a.point.distance_m(&s.point)))
                    .cloned()
                    .collect()
            })
            .collect();
        self
    }

    /// When order `n` is sent, counted from the start of the run.
    pub fn send_offset(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 * 60.0 / self.cfg.orders_per_minute)
    }

    /// Order `n`: stores take turns so each sends at a steady rate.
    pub fn order(&self, n: u64) -> OrderSpec {
        let mut rng = stream(self.cfg.seed, TAG_ORDERS, n);
        let store = (n % self.stores.len() as u64) as usize;
        let nodes = &self.dropoff_nodes[store];
        let dropoff = self.graph.point(nodes[rng.gen_range(0..nodes.len())]);
        let addresses = &self.dropoff_addresses[store];
        let address = (!addresses.is_empty()).then(|| &addresses[rng.gen_range(0..addresses.len())]);
        let items = (0..rng.gen_range(1..=3))
            .map(|_| {
                let (name, price) = MENU[rng.gen_range(0..MENU.len())];
                Item { sku: dish_sku(name, price), name, quantity: rng.gen_range(1..=2), unit_price_minor: price }
            })
            .collect();
        let prep = if self.cfg.max_prep_s > 0.0 { rng.gen_range(0.0..self.cfg.max_prep_s) } else { 0.0 };
        OrderSpec {
            number: n,
            store,
            dropoff: address.map_or(dropoff, |a| a.point),
            first_name: FIRST[rng.gen_range(0..FIRST.len())],
            last_name: LAST[rng.gen_range(0..LAST.len())],
            street: match address {
                Some(a) => a.line1.clone(),
                None => format!("{} {}", STREETS[rng.gen_range(0..STREETS.len())], rng.gen_range(1..120)),
            },
            postal_code: match address {
                Some(a) => a.postal_code.clone().unwrap_or_else(|| "00100".into()),
                None => format!("00{:03}", rng.gen_range(10..99) * 10),
            },
            items,
            prep: Duration::from_secs_f64(prep),
        }
    }

    /// Does driver `driver` take the `k`-th offer it is shown?
    pub fn accepts(&self, driver: usize, k: u64) -> bool {
        stream(self.cfg.seed, TAG_DECISIONS, ((driver as u64) << 32) | k).gen_bool(self.cfg.accept_probability)
    }

    /// The `k`-th place an idle driver cruises to: a road node within 1.5 km of `from`.
    pub fn roam_target(&self, driver: usize, k: u64, from: &GeoPoint) -> u32 {
        let mut rng = stream(self.cfg.seed, TAG_ROAMING, ((driver as u64) << 32) | k);
        let nearby = self.graph.nodes_within(from, 1_500.0);
        if nearby.is_empty() {
            return rng.gen_range(0..self.graph.len() as u32);
        }
        nearby[rng.gen_range(0..nearby.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        city: CityConfig,
    }

    fn city(args: &[&str]) -> Scenario {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        let cfg = Args::parse_from(argv).city;
        Scenario::new(cfg, RoadGraph::helsinki().unwrap(), "test").unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_city_and_orders() {
        let (a, b) = (city(&["--seed", "11"]), city(&["--seed", "11"]));
        let c = city(&["--seed", "12"]);
        let stores = |s: &Scenario| s.stores.iter().map(|s| (s.point, s.secret.clone())).collect::<Vec<_>>();
        assert_eq!(stores(&a), stores(&b));
        assert_ne!(stores(&a), stores(&c));
        let starts = |s: &Scenario| s.drivers.iter().map(|d| d.start_node).collect::<Vec<_>>();
        assert_eq!(starts(&a), starts(&b));
        for n in [0, 1, 17, 500] {
            let (x, y) = (a.order(n), b.order(n));
            assert_eq!(
                (x.dropoff, x.store, x.subtotal_minor(), x.street),
                (y.dropoff, y.store, y.subtotal_minor(), y.street)
            );
            assert_eq!(a.accepts(3, n), b.accepts(3, n));
        }
    }

    #[test]
    fn stores_rotate_platforms_and_orders_rotate_stores_at_a_steady_rate() {
        let s = city(&["--stores", "4", "--orders-per-minute", "120", "--sources", "shopify,woocommerce,native"]);
        let sources: Vec<Source> = s.stores.iter().map(|s| s.source).collect();
        assert_eq!(sources, [Source::Shopify, Source::Woocommerce, Source::Native, Source::Shopify]);
        assert_eq!((0..8).map(|n| s.order(n).store).collect::<Vec<_>>(), [0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(s.send_offset(3), Duration::from_millis(1500));
        for n in 0..50 {
            let o = s.order(n);
            assert!(o.dropoff.distance_m(&s.stores[o.store].point) <= s.cfg.dropoff_radius_m + 1.0);
        }
    }

    #[test]
    fn accept_probability_is_respected_roughly() {
        let s = city(&["--accept-probability", "0.7"]);
        let yes = (0..2000).filter(|&k| s.accepts((k % 13) as usize, k)).count();
        assert!((1250..1550).contains(&yes), "{yes} of 2000");
    }
}
