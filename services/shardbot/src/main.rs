//! `shardbot`: the operator's command line.
#![allow(clippy::print_stdout)] // a command line prints its results

mod accounts;
mod backtest;
mod bench;
mod config;
mod data;
mod drift;
mod exchange;
mod health;
mod indicators;
mod journal;
mod optimize;
mod params;
mod risk;
mod stacks;

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
    /// Backtest a strategy on kline CSV files with the workers' strategy code and the risk
    /// manager's rules; writes trades.csv, equity.csv and summary.json.
    Backtest(backtest::BacktestArgs),
    /// Download klines from the exchange into the history store (any symbols, interval
    /// and range; resumable; within a share of the IP rate limit).
    Download(data::DownloadArgs),
    /// Import kline CSV files into the history store.
    Import(data::ImportArgs),
    /// Bayesian optimization (TPE) of a strategy's parameters over backtests, trained on
    /// the first part of the data and tested on the rest; writes the winner to
    /// optimized_parameters.json, saying what changed.
    Optimize(optimize::OptimizeArgs),
    /// Measure this machine: the message bus, and more as components arrive.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Look at an exchange (sim, demo, live, testnet) through shardbot's Bybit client:
    /// check a setup, the clock, the universe, the wallet, positions and orders.
    Exchange(exchange::ExchangeArgs),
    /// Write every indicator series of a kline CSV (TA-Lib's conventions), to check a
    /// strategy by eye or compare with other tools.
    Indicators(indicators::IndicatorsArgs),
    /// The strategies' parameters, as every mode loads them from optimized_parameters.json:
    /// optimized ✓ with date, or defaults.
    Params(params::ParamsArgs),
    /// The running risk manager: show its state (mode, limits, balances, positions), or
    /// work the kill switch (halt, reduce-only, resume, flatten).
    Risk(risk::RiskArgs),
    /// Performance from the journal: summary, per symbol, per strategy, saying whether
    /// the figures are verified against the exchange or calculated.
    Report(journal::ReportArgs),
    /// The trade history from the journal, with the verified column (`--csv FILE`).
    Trades(journal::TradesArgs),
    /// Where the order path's time goes: each stage from the exchange's bar close to the
    /// first fill (gateway, worker, router, risk manager, order budgets, exchange), p50 and
    /// p99 over the newest bar closes, from the journal.
    Stages(journal::StagesArgs),
    /// Paper (or live) against the backtest: the journal's closed trades of a window
    /// compared trade for trade with a backtest of the same bars, parameters and settings;
    /// what explains each PnL gap (size, slippage, delay, fees, funding) and why a trade is
    /// on one side only.
    Drift(drift::DriftArgs),
    /// Demo and live accounts with their keys (api_accounts.json, owner-only): add, list,
    /// edit, remove, and test the keys against the exchange.
    Accounts(accounts::AccountsArgs),
    /// Check the configuration as every process reads it (file, SHARDBOT__ variables),
    /// naming the key that is wrong or unknown.
    Config(config::ConfigArgs),
    /// The last heartbeat of running processes (state, age, pid), read from the bus;
    /// `scripts/stack status` shows it next to the supervisor's view.
    Health(health::HealthArgs),
    /// Ask the running reconciler for a sweep now (`--full`: re-check every trade within
    /// the exchange's 7-day retention), and show what it found.
    Reconcile(journal::ReconcileArgs),
}

/// A closed pipe on standard output (`shardbot trades --csv - | head`) ends the command
/// quietly, as Unix tools end: Rust ignores SIGPIPE, so `println!` panics on EPIPE, and this
/// hook turns exactly that panic into a silent exit (status 141, a shell's SIGPIPE
/// status). Resetting SIGPIPE itself would take `unsafe`, which the workspace denies.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Backtest(args) => backtest::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Optimize(args) => optimize::run(args),
        Command::Download(args) => data::download(args),
        Command::Import(args) => data::import(args),
        Command::Exchange(args) => exchange::run(args),
        Command::Indicators(args) => indicators::run(args),
        Command::Params(args) => params::run(args),
        Command::Risk(args) => risk::run(args),
        Command::Report(args) => journal::report(args),
        Command::Trades(args) => journal::trades(args),
        Command::Stages(args) => journal::stages(args),
        Command::Drift(args) => drift::run(args),
        Command::Reconcile(args) => journal::reconcile(args),
        Command::Health(args) => health::run(args),
        Command::Config(args) => config::run(args),
        Command::Accounts(args) => accounts::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing to say about it.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(141)
        }
        Err(e) => {
            eprintln!("shardbot: {}", shardbot_service::single_line(&one_line(&e)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text is already shown.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
