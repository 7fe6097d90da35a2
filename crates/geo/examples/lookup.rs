//! Geocode addresses given as arguments with the shipped Helsinki extract:
//! `cargo run -p lastmile-geo --example lookup -- "Annankatu 31 A 5, 00100 Helsinki"`

fn main() -> anyhow::Result<()> {
    let index = lastmile_geo::AddressIndex::from_pbf_file(&lastmile_geo::helsinki_pbf_path())?;
    for q in std::env::args().skip(1) {
        println!("{q:?} => {:?}", index.lookup(&q));
    }
    Ok(())
}
