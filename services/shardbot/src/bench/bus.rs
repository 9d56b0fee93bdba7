//! The bus benchmark. The publisher (this process) and every subscriber or replier are
//! separate OS processes (this binary started again with a hidden subcommand), talking
//! over `ipc://` with the production socket options (`BusOptions::default()`).

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shardbot_bus::{BusOptions, Publisher, Replier, Requester, Subscriber};
use shardbot_protocol::{
    Bar, Envelope, GapDetector, Interval, Publish, SeqCheck, Symbol, decode, decode_frame,
    encode_frame, now_ns, split_frame,
};

const END_TOPIC: &str = "bench.end";
const WARM_TOPIC: &str = "bench.warm";
const QUIT_TOPIC: &str = "bench.quit";

#[derive(clap::Args, Debug)]
pub struct BusBenchArgs {
    /// Messages per unthrottled burst.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Subscriber process counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    subscribers: Vec<usize>,
    /// Paced publishing rates (messages/s) to measure drops at.
    #[arg(long, value_delimiter = ',', default_value = "10000,20000,50000")]
    rates: Vec<u64>,
    /// Seconds each paced rate runs.
    #[arg(long, default_value_t = 2.0)]
    paced_secs: f64,
    /// Timed REQ/REP round trips (after 2,000 warm-up ones).
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    /// Encode+decode iterations per codec run (best of 5 runs is reported).
    #[arg(long, default_value_t = 1_000_000)]
    codec_iterations: u64,
}

/// What a subscriber process reports at the end of a phase.
#[derive(Debug, Serialize, Deserialize)]
struct PhaseReport {
    received: u64,
    /// sent − received.
    lost: u64,
    /// Frames the gap detector reported missing: must equal `lost`.
    gap_lost: u64,
    /// Receive rate between the first and the last frame of the phase.
    recv_per_s: f64,
    lat_p50_us: f64,
    lat_p99_us: f64,
}

/// The end-of-phase marker.
#[derive(Debug, Serialize, Deserialize)]
struct PhaseEnd {
    sent: u64,
}

fn bar(t: i64) -> Bar {
    // A realistic closed bar: ~100 bytes of MessagePack body.
    Bar {
        symbol: Symbol::new("BTCUSDT").unwrap_or_else(|_| unreachable!("valid literal")),
        interval: Interval::M1,
        open_time_ms: 1_758_672_000_000 + t * 60_000,
        open: Decimal::new(11_223_340, 2),
        high: Decimal::new(11_250_000, 2),
        low: Decimal::new(11_199_990, 2),
        close: Decimal::new(11_234_560, 2),
        volume: Decimal::new(123_456, 3),
        turnover: Decimal::new(1_387_000_012, 2),
        published_ms: None,
        stamps: Default::default(),
    }
}

pub(super) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

pub fn subscriber_process(url: &str) -> anyhow::Result<()> {
    let sub = Subscriber::dial(&[url], &BusOptions::default())?;
    sub.subscribe("")?;
    let out = std::io::stdout();
    let mut det = GapDetector::new();
    let mut ready = false;
    let (mut received, mut gap_lost) = (0u64, 0u64);
    let mut lat_ns: Vec<u64> = Vec::with_capacity(1 << 20);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    loop {
        let Some(frame) = sub.recv_frame(Some(Duration::from_secs(120)))? else {
            bail!("no frame for 120 s");
        };
        let now = now_ns();
        let (topic, body) = split_frame(&frame)?;
        match topic {
            WARM_TOPIC => {
                if !ready {
                    ready = true;
                    writeln!(out.lock(), "ready")?;
                }
            }
            QUIT_TOPIC => return Ok(()),
            END_TOPIC => {
                let end: Envelope<PhaseEnd> = decode("phase end", body)?;
                lat_ns.sort_unstable();
                let secs = first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0);
                let report = PhaseReport {
                    received,
                    lost: end.msg.sent.saturating_sub(received),
                    gap_lost,
                    recv_per_s: if secs > 0.0 {
                        received as f64 / secs
                    } else {
                        f64::NAN
                    },
                    lat_p50_us: percentile(&lat_ns, 0.50) / 1e3,
                    lat_p99_us: percentile(&lat_ns, 0.99) / 1e3,
                };
                writeln!(out.lock(), "{}", serde_json::to_string(&report)?)?;
                (received, gap_lost, first) = (0, 0, None);
                lat_ns.clear();
            }
            _ => {
                let r = decode_frame(&frame)?;
                let t = Instant::now();
                first.get_or_insert(t);
                last = t;
                received += 1;
                lat_ns.push(now.saturating_sub(r.sent_ns));
                match det.observe(topic, r.epoch, r.seq) {
                    SeqCheck::Gap { from, to } => gap_lost += to - from + 1,
                    // The publisher is new for this subscriber count, so its bar topic
                    // starts at 1: a queue that overflowed before this process read its
                    // first bar dropped the oldest, i.e. the first `seq - 1` (a service
                    // warms up from history there; here they are counted).
                    SeqCheck::First { seq } => gap_lost += seq - 1,
                    SeqCheck::InOrder => {}
                    other => bail!("unexpected sequence {other:?}"),
                }
            }
        }
    }
}

pub fn replier_process(url: &str) -> anyhow::Result<()> {
    let rep = Replier::bind(url, &BusOptions::default())?;
    println!("ready");
    rep.serve(|b: Bar| b.open_time_ms, |_| -1i64)?;
    Ok(())
}

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> anyhow::Result<(Proc, ChildStdout)> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start a benchmark process")?;
    let stdout = child.stdout.take().context("no stdout")?;
    Ok((Proc { child }, stdout))
}

/// Reads the lines of every child into one channel.
fn lines(outs: Vec<ChildStdout>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    for out in outs {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

fn collect(rx: &mpsc::Receiver<String>, n: usize) -> anyhow::Result<Vec<PhaseReport>> {
    (0..n)
        .map(|_| {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .context("a subscriber went silent")?;
            serde_json::from_str(&line).with_context(|| format!("bad report `{line}`"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------

pub fn run(args: &BusBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let sample = bar(0);
    let frame = encode_frame(
        &sample.topic().to_string(),
        &Envelope {
            seq: 1,
            epoch: 1,
            sent_ns: 1,
            msg: &sample,
        },
    )?;
    println!(
        "shardbot bench bus: ipc://, {} B bar frame, production socket options",
        frame.len()
    );
    println!(
        "(PUB send buffer {}, SUB receive buffer {})",
        BusOptions::default().pub_send_buffer,
        BusOptions::default().sub_recv_buffer
    );
    println!();
    println!(
        "{:<6} {:<12} {:>12} {:>14} {:>10} {:>9} {:>10} {:>10}",
        "subs", "phase", "sent/s", "recv/s/sub", "lost", "lost %", "p50 µs", "p99 µs"
    );
    for &k in &args.subscribers {
        pubsub(dir.path(), k, args)?;
    }
    println!();
    reqrep(dir.path(), args.round_trips)?;
    println!();
    codec(args.codec_iterations)?;
    Ok(())
}

fn pubsub(dir: &std::path::Path, k: usize, args: &BusBenchArgs) -> anyhow::Result<()> {
    let url = format!("ipc://{}/bench-{k}.pub", dir.display());
    let mut publisher = Publisher::bind(&url, &BusOptions::default())?;
    let mut procs = Vec::new();
    let mut outs = Vec::new();
    for _ in 0..k {
        let (p, out) = spawn(&["bench", "bus-sub", "--url", &url])?;
        procs.push(p);
        outs.push(out);
    }
    let rx = lines(outs);
    // Warm up until every subscriber is connected.
    let mut ready = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready < k {
        publisher.publish_on(WARM_TOPIC, &0u8)?;
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(10)) {
            anyhow::ensure!(line == "ready", "unexpected `{line}`");
            ready += 1;
        }
        anyhow::ensure!(Instant::now() < deadline, "subscribers did not connect");
    }

    let mut t = 0i64;
    let mut phase =
        |publisher: &mut Publisher, name: String, rate: Option<u64>| -> anyhow::Result<()> {
            let start = Instant::now();
            let sent = match rate {
                None => {
                    for _ in 0..args.messages {
                        t += 1;
                        publisher.publish(&bar(t))?;
                    }
                    args.messages
                }
                Some(rate) => {
                    // Bursts every millisecond; sleeping until the next tick is the pacing.
                    let per_tick = (rate / 1000).max(1);
                    let ticks = (args.paced_secs * 1000.0) as u64;
                    for tick in 0..ticks {
                        for _ in 0..per_tick {
                            t += 1;
                            publisher.publish(&bar(t))?;
                        }
                        let next = start + Duration::from_millis(tick + 1);
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                    }
                    per_tick * ticks
                }
            };
            let secs = start.elapsed().as_secs_f64();
            publisher.publish_on(END_TOPIC, &PhaseEnd { sent })?;
            let reports = collect(&rx, k)?;
            let recv: f64 = reports.iter().map(|r| r.recv_per_s).sum::<f64>() / k as f64;
            let lost: u64 = reports.iter().map(|r| r.lost).sum();
            for r in &reports {
                anyhow::ensure!(
                    r.lost == r.gap_lost,
                    "gap detector disagrees with the count: lost {} vs gaps {}",
                    r.lost,
                    r.gap_lost
                );
            }
            let p50 = reports.iter().map(|r| r.lat_p50_us).fold(0.0, f64::max);
            let p99 = reports.iter().map(|r| r.lat_p99_us).fold(0.0, f64::max);
            println!(
                "{:<6} {:<12} {:>12.0} {:>14.0} {:>10} {:>8.2}% {:>10.0} {:>10.0}",
                k,
                name,
                sent as f64 / secs,
                recv,
                lost,
                100.0 * lost as f64 / (sent * k as u64) as f64,
                p50,
                p99
            );
            Ok(())
        };
    phase(&mut publisher, "burst".into(), None)?;
    for &rate in &args.rates {
        phase(
            &mut publisher,
            format!("paced {}k", rate / 1000),
            Some(rate),
        )?;
    }
    publisher.publish_on(QUIT_TOPIC, &0u8)?;
    drop(procs);
    Ok(())
}

fn reqrep(dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let url = format!("ipc://{}/bench.rep", dir.display());
    let (_proc, out) = spawn(&["bench", "bus-rep", "--url", &url])?;
    let rx = lines(vec![out]);
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .context("replier did not start")?;
    anyhow::ensure!(line == "ready", "unexpected `{line}`");
    let req = Requester::dial(&url, &BusOptions::default())?;
    for i in 0..2000 {
        let _: i64 = req.request(&bar(i))?;
    }
    let mut rtt = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let b = bar(i as i64);
        let t = Instant::now();
        let back: i64 = req.request(&b)?;
        rtt.push(t.elapsed().as_nanos() as u64);
        anyhow::ensure!(back == b.open_time_ms, "wrong reply");
    }
    let total = start.elapsed().as_secs_f64();
    rtt.sort_unstable();
    println!(
        "REQ/REP round trip over ipc:// ({n} requests of a bar, one at a time): \
         p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, {:.0} round trips/s",
        percentile(&rtt, 0.50) / 1e3,
        percentile(&rtt, 0.90) / 1e3,
        percentile(&rtt, 0.99) / 1e3,
        percentile(&rtt, 0.999) / 1e3,
        n as f64 / total
    );
    Ok(())
}

fn codec(iterations: u64) -> anyhow::Result<()> {
    let b = bar(1);
    let topic = b.topic().to_string();
    let env = Envelope {
        seq: 1,
        epoch: 2,
        sent_ns: 3,
        msg: b,
    };
    let frame = encode_frame(&topic, &env)?;
    let time = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..iterations {
                f()?;
            }
            best = best.min(t.elapsed().as_nanos() as f64 / iterations as f64);
        }
        Ok(best)
    };
    let enc = time(&mut || {
        std::hint::black_box(encode_frame(&topic, std::hint::black_box(&env))?);
        Ok(())
    })?;
    let dec = time(&mut || {
        std::hint::black_box(decode_frame(std::hint::black_box(&frame))?);
        Ok(())
    })?;
    let both = time(&mut || {
        let f = encode_frame(&topic, std::hint::black_box(&env))?;
        std::hint::black_box(decode_frame(&f)?);
        Ok(())
    })?;
    println!(
        "MessagePack (named) bar frame of {} B: encode {enc:.0} ns, decode {dec:.0} ns, \
         encode+decode {both:.0} ns per message (best of 5 × {iterations})",
        frame.len()
    );
    Ok(())
}
