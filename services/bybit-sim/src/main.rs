//! `bybit-sim`: the local Bybit v5 exchange of `sim` mode.

use std::{net::TcpListener, process::ExitCode, sync::Arc};

use bybit_sim::{Exchange, SimSettings, server};
use clap::Parser;
use shardbot_service::{ServiceArgs, exit_code, run};

/// A local exchange that speaks Bybit's v5 REST protocol: market data for 600+ USDT
/// perpetuals from a seeded generator, signed account endpoints with Bybit's auth and rate
/// limits. Configured by the [sim] section (listen address, seed, symbols, clock speed,
/// accounts and their keys).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    exit_code(
        "bybit-sim",
        run("bybit-sim", "main", &args.service, |ctx| {
            let settings: SimSettings = ctx.settings.section("sim")?;
            let exchange = Arc::new(Exchange::new(&settings)?);
            let listener = TcpListener::bind(&settings.listen)
                .map_err(|e| format!("cannot listen on {} (sim.listen): {e}", settings.listen))?;
            tracing::info!(
                listen = %settings.listen,
                symbols = exchange.market.instruments.len(),
                real_names = exchange.market.instruments.iter().filter(|i| i.real).count(),
                accounts = exchange.accounts.len(),
                profile = ?settings.profile,
                clock_speed = settings.clock_speed,
                "bybit-sim serving"
            );
            actix_web::rt::spawn(server(exchange, listener, 2)?);
            Ok(())
        }),
    )
}
