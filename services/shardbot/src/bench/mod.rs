//! `shardbot bench ...`: benchmarks that print their figures.

mod burst;
mod bus;
mod idle;
mod pipeline;

use std::{
    path::PathBuf,
    process::{Child, Command},
};

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The nng bus over ipc:// between real processes: PUB/SUB messages/s and drops to 1, 2
    /// and 4 subscriber processes (burst and paced), REQ/REP round trip p50/p99, and the
    /// MessagePack encode+decode cost of a bar.
    Bus(bus::BusBenchArgs),
    /// Bar close -> order intent latency (p50/p99) across the bus with 1, 2 and 4 real
    /// strategy-worker processes on a 600-symbol synthetic universe (needs the release
    /// strategy-worker binary next to this one).
    Pipeline(pipeline::PipelineBenchArgs),
    /// A bar close's burst of orders against bybit-sim at Bybit's own order limits: N
    /// entries at once then N exits, time to the first and the last order acknowledged,
    /// next to the floor N / 20 s of both order budgets (needs the release bybit-sim,
    /// risk-manager and order-router next to this binary).
    Burst(burst::BurstBenchArgs),
    /// What a running stack costs between bar closes: CPU time (% of a core) and RSS of
    /// every service process on this machine over a window that starts 15 s after a
    /// 5-minute close, against the targets (account services < 5 % of a core together,
    /// the dashboard < 1 % with no page open, < 150 MB of RSS in all).
    Idle(idle::IdleBenchArgs),
    /// (internal) One subscriber process of `bench bus`.
    #[command(hide = true)]
    BusSub {
        #[arg(long)]
        url: String,
    },
    /// (internal) The replier process of `bench bus`.
    #[command(hide = true)]
    BusRep {
        #[arg(long)]
        url: String,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Bus(args) => bus::run(&args),
        BenchCommand::Pipeline(args) => pipeline::run(&args),
        BenchCommand::Idle(args) => idle::run(&args),
        BenchCommand::Burst(args) => burst::run(&args),
        BenchCommand::BusSub { url } => bus::subscriber_process(&url),
        BenchCommand::BusRep { url } => bus::replier_process(&url),
    }
}

/// A release binary of the workspace next to this one (`bench` starts real services).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let p = exe.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --workspace --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// Processes a benchmark started: asked to stop (SIGTERM) and waited for when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}
