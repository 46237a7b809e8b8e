//! `gallop worker`: a worker process without HTTP. It claims jobs from the database that the
//! `gallop serve` processes share (--database-url), reads their inputs from and writes results
//! to the shared storage (--storage-url), and runs them with its own engines and slots.

use crate::serving::ServingArgs;
use crate::state::StateArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    serving: ServingArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.serving.apply(args.state.config()?)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(gallop_server::app::run_worker(config))
}
