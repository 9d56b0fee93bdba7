//! `shardbot bench pipeline`: bar close → order intent latency across the bus, with 1, 2
//! and 4 real strategy-worker processes.
//!
//! This process plays the gateway (PUB of closed bars, REP of universe and history for a
//! synthetic universe) and the order router (REP that timestamps every intent). The
//! workers are the release `strategy-worker` binary next to this one, started with
//! `--shard i/n` on a private configuration. Each bar close publishes one bar per symbol;
//! an intent's latency is the time from its bar's publication to the intent's arrival at
//! the router, so it includes the bus both ways, decoding, ordering checks and both
//! strategies.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rust_decimal::{Decimal, prelude::FromPrimitive};
use shardbot_bus::{BusOptions, Publisher, Replier, Subscriber};
use shardbot_protocol::{
    Bar, ErrorReply, Event, GatewayReply, GatewayRequest, HistoryResponse, Instrument, Interval,
    RouterReply, RouterRequest, ServiceState, Symbol, Topic, UniverseResponse,
};

use super::bus::percentile;

#[derive(clap::Args, Debug)]
pub struct PipelineBenchArgs {
    /// Worker process counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<u16>,
    /// Symbols in the synthetic universe.
    #[arg(long, default_value_t = 600)]
    symbols: usize,
    /// Bar closes measured per worker count.
    #[arg(long, default_value_t = 40)]
    closes: usize,
    /// Wall time between two bar closes, ms.
    #[arg(long, default_value_t = 250)]
    close_every_ms: u64,
}

const STEP: i64 = 60_000;
const T0: i64 = 1_790_000_000_000;
const HISTORY: i64 = 200;

/// A deterministic random walk per symbol (SplitMix64 steps).
fn close(sym: usize, k: i64) -> f64 {
    let mut x = (sym as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    // a zig-zag plus noise: crosses its moving averages often
    100.0 + 5.0 * ((k as f64) / 7.0 + sym as f64).sin() + (u - 0.5)
}

fn bar(symbols: &[Symbol], sym: usize, k: i64, published: Option<i64>) -> Bar {
    let c = Decimal::from_f64(close(sym, k))
        .unwrap_or(Decimal::ONE_HUNDRED)
        .round_dp(4);
    Bar {
        symbol: symbols[sym].clone(),
        interval: Interval::M1,
        open_time_ms: T0 + k * STEP,
        open: c,
        high: c,
        low: c,
        close: c,
        volume: Decimal::ONE,
        turnover: c,
        published_ms: published,
        stamps: Default::default(),
    }
}

fn instrument(s: &Symbol) -> Instrument {
    Instrument {
        symbol: s.clone(),
        tick_size: Decimal::new(1, 4),
        qty_step: Decimal::new(1, 3),
        min_order_qty: Decimal::new(1, 3),
        max_market_order_qty: Decimal::from(1000),
        min_notional: Decimal::from(5),
        max_leverage: Decimal::from(50),
        funding_interval_min: 480,
    }
}

const PARAMS: &str = r#"{
  "trend_following": {"optimized_at": "bench", "objective": "bench", "params": {"fast": 2, "slow": 5}},
  "mean_reversion": {"optimized_at": "bench", "objective": "bench", "params": {"rsi_period": 5, "bb_period": 10}}
}"#;

pub fn run(args: &PipelineBenchArgs) -> anyhow::Result<()> {
    let worker = super::sibling("strategy-worker")?;
    let dir = tempfile::Builder::new()
        .prefix("sb-bench-pipeline")
        .tempdir()
        .context("creating a temporary folder")?;
    let d = dir.path().display().to_string();
    let ipc = |name: &str| format!("ipc://{d}/{name}");
    let config = dir.path().join("config.toml");
    std::fs::write(dir.path().join("optimized_parameters.json"), PARAMS)?;
    std::fs::write(
        &config,
        format!(
            r#"[log]
dir = "{d}/log"
level = "warn"
[endpoints]
market_data_pub = "{}"
market_data_rep = "{}"
order_router_rep = "{}"
risk_manager_pub = "{}"
risk_manager_rep = "{}"
heartbeat = "ipc://{d}/hb-{{service}}-{{instance}}.pub"
[strategy]
enabled = ["trend_following", "mean_reversion"]
interval = "1"
parameters_file = "{d}/optimized_parameters.json"
history_bars = {HISTORY}
"#,
            ipc("md.pub"),
            ipc("md.rep"),
            ipc("router.rep"),
            ipc("risk.pub"),
            ipc("risk.rep"),
        ),
    )?;

    let symbols: Vec<Symbol> = (0..args.symbols)
        .map(|i| Symbol::new(format!("B{i}USDT")))
        .collect::<Result<_, _>>()?;
    let opts = BusOptions::default();
    let mut publisher = Publisher::bind(&ipc("md.pub"), &opts)?;
    // Bars published so far (open index k), shared with the history replier.
    let published_k = Arc::new(Mutex::new(-1i64));
    {
        let replier = Replier::bind(&ipc("md.rep"), &opts)?;
        let symbols = symbols.clone();
        let published_k = published_k.clone();
        let index: HashMap<Symbol, usize> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        thread::spawn(move || {
            let _ = replier.serve(
                |req: GatewayRequest| match req {
                    GatewayRequest::Universe => GatewayReply::Universe(UniverseResponse {
                        instruments: symbols.iter().map(instrument).collect(),
                        as_of_ms: T0,
                    }),
                    GatewayRequest::History(h) => {
                        let Some(&i) = index.get(&h.symbol) else {
                            return GatewayReply::Error(ErrorReply {
                                message: "unknown".into(),
                            });
                        };
                        let last = *published_k.lock().unwrap_or_else(|p| p.into_inner());
                        let from = h
                            .start_ms
                            .map_or(last - HISTORY + 1, |s| (s - T0) / STEP)
                            .max(-HISTORY);
                        let bars = (from..=last)
                            .map(|k| bar(&symbols, i, k, (k >= 0).then_some(T0 + (k + 1) * STEP)))
                            .collect();
                        GatewayReply::History(HistoryResponse {
                            symbol: h.symbol,
                            interval: h.interval,
                            bars,
                            epoch: 0,
                            last_seq: None,
                        })
                    }
                },
                |message| GatewayReply::Error(ErrorReply { message }),
            );
        });
    }
    // (symbol index, bar k) -> arrival at the router
    let arrivals: Arc<Mutex<Vec<(Instant, String, i64)>>> = Arc::default();
    {
        let replier = Replier::bind(&ipc("router.rep"), &opts)?;
        let arrivals = arrivals.clone();
        thread::spawn(move || {
            let _ = replier.serve(
                |r: RouterRequest| {
                    let i = match r {
                        RouterRequest::Submit(i) => i,
                        RouterRequest::Parameters { .. } | RouterRequest::CloseProgress(_) => {
                            return RouterReply::Recorded { new: true };
                        }
                        RouterRequest::Flatten { .. } => {
                            return RouterReply::Error(ErrorReply {
                                message: "the bench's router only takes intents".into(),
                            });
                        }
                    };
                    arrivals.lock().unwrap_or_else(|p| p.into_inner()).push((
                        Instant::now(),
                        i.symbol.to_string(),
                        i.bar_open_time_ms,
                    ));
                    RouterReply::Placed {
                        order_link_id: i.intent_id.order_link_id(),
                        intent_id: i.intent_id,
                        order_id: "bench".into(),
                        duplicate: false,
                    }
                },
                |message| RouterReply::Error(ErrorReply { message }),
            );
        });
    }

    println!(
        "bar close -> intent latency: {} symbols, trend_following + mean_reversion, {} closes \
         {} ms apart per run, workers = release strategy-worker processes",
        args.symbols, args.closes, args.close_every_ms
    );
    println!(
        "{:>7} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "workers", "intents", "p50 ms", "p99 ms", "max ms", "bars/s"
    );
    let mut k_next = 0i64;
    for &n in &args.workers {
        if n == 0 {
            bail!("--workers: a count must be at least 1");
        }
        arrivals.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut children = super::Children(Vec::new());
        for i in 0..n {
            let child = Command::new(&worker)
                .arg("--config")
                .arg(&config)
                .arg("--shard")
                .arg(format!("{i}/{n}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", worker.display()))?;
            children.0.push(child);
        }
        for i in 0..n {
            wait_warm(&ipc(&format!("hb-strategy-worker-{i}-{n}.pub")))?;
        }
        // Measured closes.
        let mut sent: HashMap<i64, Instant> = HashMap::new();
        let started = Instant::now();
        for _ in 0..args.closes {
            let k = k_next;
            k_next += 1;
            *published_k.lock().unwrap_or_else(|p| p.into_inner()) = k;
            sent.insert(T0 + k * STEP, Instant::now());
            for s in 0..symbols.len() {
                publisher.publish(&bar(&symbols, s, k, Some(T0 + (k + 1) * STEP)))?;
            }
            thread::sleep(Duration::from_millis(args.close_every_ms));
        }
        let elapsed = started.elapsed().as_secs_f64();
        thread::sleep(Duration::from_secs(1));
        let got = std::mem::take(&mut *arrivals.lock().unwrap_or_else(|p| p.into_inner()));
        let mut lat: Vec<u64> = got
            .iter()
            .filter_map(|(t, _, open)| {
                sent.get(open)
                    .map(|s| t.duration_since(*s).as_micros() as u64)
            })
            .collect();
        lat.sort_unstable();
        println!(
            "{:>7} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>10.0}",
            n,
            lat.len(),
            percentile(&lat, 0.50) / 1e3,
            percentile(&lat, 0.99) / 1e3,
            lat.last().copied().unwrap_or(0) as f64 / 1e3,
            (args.closes * symbols.len()) as f64 / elapsed
        );
        drop(children);
        // The next run's workers warm on history that ends where this one stopped.
    }
    Ok(())
}

/// Waits until a worker reports every symbol warm ("positions unknown" is the state that
/// follows warm-up when, as here, no risk manager runs).
fn wait_warm(hb_url: &str) -> anyhow::Result<()> {
    let sub = Subscriber::dial(&[hb_url], &BusOptions::default())?;
    sub.subscribe(Topic::HEARTBEAT_PREFIX)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(r) = sub.recv(Some(Duration::from_millis(200)))?
            && let Event::Heartbeat(hb) = r.event
            && matches!(&hb.state, ServiceState::Degraded { reason } if reason.starts_with("positions unknown"))
        {
            return Ok(());
        }
    }
    bail!("a worker did not warm up within 120 s ({hb_url})")
}
