//! `lastmile demo | sim | bench` subcommands.

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Start a server on a fresh SQLite database and run a simulated city against it.
    Demo,
}

pub async fn run(cmd: SimCommand) -> anyhow::Result<()> {
    anyhow::bail!("{cmd:?} is not available in this build")
}
