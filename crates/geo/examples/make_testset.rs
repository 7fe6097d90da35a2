//! Regenerate `data/helsinki_addresses.tsv`:
//! `cargo run -p lastmile-geo --example make_testset > crates/geo/data/helsinki_addresses.tsv`

fn main() -> anyhow::Result<()> {
    let index = lastmile_geo::AddressIndex::from_pbf_file(&lastmile_geo::helsinki_pbf_path())?;
    let cases = lastmile_geo::testset::generate(&index, 250);
    print!("{}", lastmile_geo::testset::to_tsv(&cases));
    Ok(())
}
