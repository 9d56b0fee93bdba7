//! `shardbot bench idle`: what a running stack costs between bar closes. Every shardbot
//! service process on this machine (found by name in `/proc`), its CPU time over a window
//! (`/proc/<pid>/schedstat`, nanoseconds on a CPU) and its resident memory at the end
//! (`VmRSS`), against the targets: the account stack's own services (all but bybit-sim)
//! under 5 % of a core together, the dashboard under 1 % with no page open, and the whole
//! stack under 150 MB of RSS.

use std::{
    collections::BTreeMap,
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The service binaries, as `/proc/<pid>/comm` names them (at most 15 characters).
const SERVICES: [&str; 7] = [
    "bybit-sim",
    "market-data",
    "strategy-worker",
    "order-router",
    "risk-manager",
    "reconciler",
    "dashboard",
];

const TARGET_ACCOUNT_CPU_PCT: f64 = 5.0;
const TARGET_DASHBOARD_CPU_PCT: f64 = 1.0;
const TARGET_RSS_MB: f64 = 150.0;

#[derive(clap::Args, Debug)]
pub struct IdleBenchArgs {
    /// Length of the measured window, seconds (at most 270: it must fit between two
    /// 5-minute closes).
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Start at once, even if a 5-minute bar close falls inside the window.
    #[arg(long)]
    now: bool,
}

#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    name: String,
    /// The stack it belongs to: the last folder of its `SHARDBOT__LOG__DIR` (`market`, or
    /// the account's name, as `scripts/stack` lays them out).
    stack: String,
}

fn procs() -> anyhow::Result<Vec<Proc>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").context("cannot read /proc (Linux only)")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let name = comm.trim();
        if !SERVICES.contains(&name) {
            continue;
        }
        let stack = std::fs::read(entry.path().join("environ"))
            .ok()
            .and_then(|env| {
                env.split(|b| *b == 0)
                    .filter_map(|kv| std::str::from_utf8(kv).ok())
                    .find_map(|kv| kv.strip_prefix("SHARDBOT__LOG__DIR=").map(str::to_owned))
            })
            .and_then(|dir| {
                std::path::Path::new(&dir)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "-".into());
        out.push(Proc {
            pid,
            name: name.to_owned(),
            stack,
        });
    }
    out.sort_by(|a, b| (&a.stack, &a.name, a.pid).cmp(&(&b.stack, &b.name, b.pid)));
    Ok(out)
}

/// Nanoseconds the process has run on a CPU.
fn cpu_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// How long to wait so that a window of `seconds` starts 15 s after a 5-minute close and
/// ends before the next one.
fn wait_for_quiet(now_ms: i64, seconds: u64) -> Duration {
    const FIVE_MIN: i64 = 300_000;
    const AFTER_CLOSE: i64 = 15_000;
    let into = now_ms.rem_euclid(FIVE_MIN);
    let window = i64::try_from(seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    if into >= AFTER_CLOSE && into + window < FIVE_MIN {
        return Duration::ZERO;
    }
    // 15 s after this close if it is not that late yet, else after the next one.
    let to_next = if into < AFTER_CLOSE {
        AFTER_CLOSE - into
    } else {
        FIVE_MIN - into + AFTER_CLOSE
    };
    Duration::from_millis(u64::try_from(to_next).unwrap_or(0))
}

pub fn run(args: &IdleBenchArgs) -> anyhow::Result<()> {
    if args.seconds == 0 || args.seconds > 270 {
        bail!("--seconds must be 1 to 270 (the window fits between two 5-minute closes)");
    }
    let found = procs()?;
    if found.is_empty() {
        bail!(
            "no shardbot service runs on this machine; start the stack first (scripts/stack up) \
             and let it warm up"
        );
    }
    if !args.now {
        let wait = wait_for_quiet(shardbot_protocol::now_ms(), args.seconds);
        if !wait.is_zero() {
            eprintln!(
                "waiting {} s for a window between two 5-minute bar closes (--now to skip)",
                wait.as_secs()
            );
            std::thread::sleep(wait);
        }
    }
    let before: BTreeMap<u32, u64> = found
        .iter()
        .filter_map(|p| Some((p.pid, cpu_ns(p.pid)?)))
        .collect();
    let started = Instant::now();
    let window = Duration::from_secs(args.seconds);
    while started.elapsed() < window {
        let left = window.saturating_sub(started.elapsed());
        eprint!("\rmeasuring: {:>3} s left ", left.as_secs());
        let _ = std::io::stderr().flush();
        std::thread::sleep(left.min(Duration::from_secs(1)));
    }
    eprintln!();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<8} {:<16} {:>8} {:>10} {:>9} {:>8}",
        "stack", "process", "pid", "cpu s", "% core", "RSS MB"
    );
    let (mut account_cpu, mut total_rss, mut dashboard_pct) = (0.0, 0.0, 0.0f64);
    for p in &found {
        let (Some(b), Some(a), Some(rss)) = (before.get(&p.pid), cpu_ns(p.pid), rss_mb(p.pid))
        else {
            println!(
                "{:<8} {:<16} {:>8}  (ended during the window)",
                p.stack, p.name, p.pid
            );
            continue;
        };
        let cpu = a.saturating_sub(*b) as f64 / 1e9;
        let pct = 100.0 * cpu / secs;
        println!(
            "{:<8} {:<16} {:>8} {:>10.2} {:>9.2} {:>8.1}",
            p.stack, p.name, p.pid, cpu, pct, rss
        );
        total_rss += rss;
        if p.name != "bybit-sim" {
            account_cpu += pct;
        }
        if p.name == "dashboard" {
            dashboard_pct = dashboard_pct.max(pct);
        }
    }
    let verdict = |ok: bool| if ok { "ok" } else { "OVER" };
    println!();
    println!("over {secs:.0} s:");
    println!(
        "  services but bybit-sim: {account_cpu:.2} % of a core (target < {TARGET_ACCOUNT_CPU_PCT} %) {}",
        verdict(account_cpu < TARGET_ACCOUNT_CPU_PCT)
    );
    println!(
        "  dashboard:              {dashboard_pct:.2} % of a core (target < {TARGET_DASHBOARD_CPU_PCT} % with no page open) {}",
        verdict(dashboard_pct < TARGET_DASHBOARD_CPU_PCT)
    );
    println!(
        "  RSS of every process:   {total_rss:.1} MB (target < {TARGET_RSS_MB} MB) {}",
        verdict(total_rss < TARGET_RSS_MB)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MIN: i64 = 60_000;
    #[rstest]
    #[case::fits_now(30_000, 120, 0)]
    #[case::too_close_to_the_last_close(5_000, 120, 10_000)]
    #[case::would_cross_the_next(4 * MIN, 120, 75_000)]
    #[case::exactly_at_a_close(0, 60, 15_000)]
    fn the_window_falls_between_two_closes(
        #[case] into_ms: i64,
        #[case] seconds: u64,
        #[case] wait_ms: u64,
    ) {
        let base = 1_700_000_100_000; // a 5-minute close
        assert_eq!(
            wait_for_quiet(base + into_ms, seconds),
            Duration::from_millis(wait_ms)
        );
    }
}
