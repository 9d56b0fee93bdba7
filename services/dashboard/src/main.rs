//! dashboard: see the library's documentation.

use std::process::ExitCode;

use clap::Parser;
use shardbot_service::{SINGLE_INSTANCE, ServiceArgs, exit_code, run};

/// The dashboard of one account stack: a web UI on 127.0.0.1 (dashboard.bind), behind the
/// token in dashboard.token_file (created 0600 on first start), and Prometheus metrics on
/// /metrics (the same token as a Bearer header). Configuration: [dashboard], [endpoints],
/// [journal], [risk], [strategy], [exchange].
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit_code(
        "dashboard",
        run(
            "dashboard",
            SINGLE_INSTANCE,
            &args.service,
            dashboard::start,
        ),
    )
}
