//! `lastmile bench <scenario>`.

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    pub scenario: String,
}

pub async fn run(args: BenchArgs, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("bench {} is not written yet", args.scenario)
}
