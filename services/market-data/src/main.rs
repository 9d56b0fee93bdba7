//! market-data: see the library's documentation.

use std::process::ExitCode;

use clap::Parser;
use shardbot_service::{SINGLE_INSTANCE, ServiceArgs, exit_code, run};

/// The market-data gateway: discovers every Bybit USDT perpetual, backfills history,
/// streams closed bars and tickers onto the bus, and answers history and universe requests
/// (configuration: [market_data], [strategy], [exchange], [endpoints]).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit_code(
        "market-data",
        run(
            "market-data",
            SINGLE_INSTANCE,
            &args.service,
            market_data::start,
        ),
    )
}
