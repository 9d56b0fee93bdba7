//! order-router: see the library's documentation.

use std::process::ExitCode;

use clap::Parser;
use shardbot_service::{SINGLE_INSTANCE, ServiceArgs, exit_code, run};

/// The order router: the only process that places orders. Takes intents from the workers,
/// has the risk manager approve and size them, places market orders with exchange-side
/// SL/TP (never twice for one intent), and publishes order and fill events from the
/// private stream (configuration: [router], [exchange], [endpoints]; keys from
/// SHARDBOT_API_KEY / SHARDBOT_API_SECRET, or the sim's demo account in sim mode).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit_code(
        "order-router",
        run(
            "order-router",
            SINGLE_INSTANCE,
            &args.service,
            order_router::start,
        ),
    )
}
