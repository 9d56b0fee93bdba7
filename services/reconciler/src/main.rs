//! reconciler: see the library's documentation.

use std::process::ExitCode;

use clap::Parser;
use shardbot_service::{SINGLE_INSTANCE, ServiceArgs, exit_code, run};

/// The reconciler: verifies every closed trade against Bybit's closed-PnL and executions,
/// keeps the exchange's numbers, records discrepancies, imports trades the journal lacks,
/// and checks the expected balance against the wallet (configuration: [reconciler],
/// [journal], [exchange], [endpoints]; keys from SHARDBOT_API_KEY / SHARDBOT_API_SECRET,
/// or the sim's demo account in sim mode).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit_code(
        "reconciler",
        run(
            "reconciler",
            SINGLE_INSTANCE,
            &args.service,
            reconciler::start,
        ),
    )
}
