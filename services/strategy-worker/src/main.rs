//! strategy-worker: see the library's documentation.

use std::process::ExitCode;

use clap::Parser;
use shardbot_service::{ServiceArgs, ShardArgs, exit_code, run};

/// A strategy worker: runs the configured strategies ([strategy]) on every closed bar of
/// the symbols in its shard and sends order intents to the order router. Start one per
/// shard: --shard 0/4, 1/4, 2/4, 3/4 for four workers.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    shard: ShardArgs,
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let shard = args.shard.shard;
    exit_code(
        "strategy-worker",
        run(
            "strategy-worker",
            &args.shard.instance(),
            &args.service,
            |ctx| strategy_worker::start(ctx, shard),
        ),
    )
}
