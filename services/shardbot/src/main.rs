//! `shardbot`: the operator's command line.
#![allow(clippy::print_stdout)] // a command line prints its results

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// shardbot: paper and live trading of every Bybit USDT perpetual.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure this machine: the message bus, and more as components arrive.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardbot: {e:#}");
            ExitCode::FAILURE
        }
    }
}
