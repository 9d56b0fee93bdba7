//! risk-manager: see the library's documentation.

use std::process::ExitCode;

use clap::Parser;
use shardbot_service::{SINGLE_INSTANCE, ServiceArgs, exit_code, run};

/// The risk manager: positions and balance from the exchange, the simulated balance,
/// sizing and limits from trading_settings.json, and the kill switch (configuration:
/// [risk], [exchange], [endpoints]; keys from SHARDBOT_API_KEY / SHARDBOT_API_SECRET, or
/// the sim's demo account in sim mode).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit_code(
        "risk-manager",
        run(
            "risk-manager",
            SINGLE_INSTANCE,
            &args.service,
            risk_manager::start,
        ),
    )
}
