//! `bandsync-local`: run the whole bandsync pipeline on 127.0.0.1 (the embedded default),
//! or mint a member token for it.

use bandsync_local::cli::{Cli, run};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Cli::parse()).await
}
