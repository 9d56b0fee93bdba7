//! The path from the exchange's public stream to order intents, with real processes:
//! bybit-sim (600 generated USDT perpetuals, clock at 60×, 1-minute bars: one bar a
//! second), the market-data gateway, and three strategy workers — shards 0/2 and 1/2
//! sending to one router, and a reference copy of shard 0/2 sending to another. The
//! routers are test repliers that record every intent.
//!
//! Shows: the gateway discovers the whole universe; every symbol gets every closed bar,
//! in order, equal to the exchange's klines, also across a forced WebSocket outage (the
//! sim's public stream paused and every connection dropped, so bars are really missed);
//! a worker killed with SIGKILL and restarted produces exactly the intents of the
//! uninterrupted reference worker for the same bars.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use shardbot_bus::{BusOptions, Replier, Subscriber};
use shardbot_e2e::{FAST_PARAMS, Stack};
use shardbot_protocol::{
    Bar, CloseProgress, Event, IntentAction, Interval, OrderIntent, RouterReply, RouterRequest,
    ServiceState, Shard, Symbol,
};

const STEP: i64 = 60_000;

const CONFIG: &str = r#"
[sim]
listen = "{sim_listen}"
seed = 11
symbols = 600
universe_file = ""
universe_price_dir = ""
clock_speed = 60.0

[strategy]
enabled = ["trend_following", "mean_reversion"]
interval = "1"
parameters_file = "optimized_parameters.json"
history_bars = 400

[market_data]
store_dir = "history"
ip_requests_per_5s = 500
stale_after_ms = 1500

[worker]
late_bars = 1
"#;

/// Every bar frame the gateway publishes, with its topic's sequence number.
struct BarTap {
    frames: Arc<Mutex<Vec<(u64, u64, Bar)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BarTap {
    fn start(url: &str) -> BarTap {
        let opts = BusOptions {
            sub_recv_buffer: 8192,
            ..BusOptions::default()
        };
        let sub = Subscriber::dial(&[url], &opts).unwrap();
        sub.subscribe("bar.").unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(Some(r)) = sub.recv(Some(Duration::from_millis(100)))
                    && let Event::Bar(bar) = r.event
                {
                    f.lock().unwrap().push((r.epoch, r.seq, bar));
                }
            }
        });
        BarTap {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// Open time of the newest bar seen.
    fn newest(&self) -> Option<i64> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, b)| b.open_time_ms)
            .max()
    }

    /// Open time of the newest bar of the symbol that is furthest behind.
    fn slowest(&self, universe: &[String]) -> Option<i64> {
        let frames = self.frames.lock().unwrap();
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for (_, _, b) in frames.iter() {
            let e = newest.entry(b.symbol.as_str()).or_insert(b.open_time_ms);
            *e = (*e).max(b.open_time_ms);
        }
        universe
            .iter()
            .map(|s| newest.get(s.as_str()).copied())
            .min()
            .flatten()
    }

    /// Stops recording: the thread ends within its receive timeout and closes its socket
    /// while the gateway still publishes at full rate (which could block inside Debian's
    /// libnng 1.5.2's `nng_close`).
    fn finish(mut self) -> Vec<(u64, u64, Bar)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.frames.lock().unwrap())
    }
}

/// A stand-in for the order router: records every intent and when it arrived, and the
/// parameters workers announce.
#[derive(Clone)]
struct Router {
    intents: Arc<Mutex<Vec<(Instant, OrderIntent)>>>,
    announced: Arc<Mutex<Vec<(Instant, String)>>>,
    reports: Arc<Mutex<Vec<CloseProgress>>>,
}

impl Router {
    fn start(url: &str) -> Router {
        let replier = Replier::bind(url, &BusOptions::default()).unwrap();
        let intents: Arc<Mutex<Vec<(Instant, OrderIntent)>>> = Arc::default();
        let announced: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let log = intents.clone();
        let parameters = announced.clone();
        let reports: Arc<Mutex<Vec<CloseProgress>>> = Arc::default();
        let progress = reports.clone();
        std::thread::spawn(move || {
            let _ = replier.serve(
                |request: RouterRequest| {
                    let intent = match request {
                        RouterRequest::Submit(intent) => intent,
                        RouterRequest::Parameters { json } => {
                            parameters.lock().unwrap().push((Instant::now(), json));
                            return RouterReply::Recorded { new: true };
                        }
                        RouterRequest::Flatten { .. } => {
                            panic!("a worker asked for a flatten: {request:?}")
                        }
                        RouterRequest::CloseProgress(p) => {
                            progress.lock().unwrap().push(p);
                            return RouterReply::Recorded { new: true };
                        }
                    };
                    let mut log = log.lock().unwrap();
                    let duplicate = log.iter().any(|(_, i)| i.intent_id == intent.intent_id);
                    log.push((Instant::now(), intent.clone()));
                    RouterReply::Placed {
                        order_link_id: intent.intent_id.order_link_id(),
                        intent_id: intent.intent_id,
                        order_id: "test".into(),
                        duplicate,
                    }
                },
                |e| panic!("a worker sent an undecodable request: {e}"),
            );
        });
        Router {
            intents,
            announced,
            reports,
        }
    }

    /// The close progress reports, in arrival order.
    fn reports(&self) -> Vec<CloseProgress> {
        self.reports.lock().unwrap().clone()
    }

    /// The parameters announced, each parsed, with when.
    fn announced(&self) -> Vec<(Instant, shardbot_strategy::ParametersInForce)> {
        self.announced
            .lock()
            .unwrap()
            .iter()
            .map(|(t, json)| {
                let set =
                    shardbot_strategy::ParametersInForce::parse(json, "an announcement").unwrap();
                (*t, set)
            })
            .collect()
    }

    fn snapshot(&self) -> Vec<(Instant, OrderIntent)> {
        self.intents.lock().unwrap().clone()
    }
}

fn wait_until(stack: &mut Stack, what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        stack.assert_alive();
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the gateway has published `n` more bar closes.
fn wait_bars(stack: &mut Stack, tap: &BarTap, n: i64) -> i64 {
    let from = tap.newest().unwrap_or(0);
    wait_until(stack, "bars to close", Duration::from_secs(30), || {
        tap.newest().is_some_and(|t| t >= from + n * STEP)
    });
    tap.newest().unwrap()
}

type IntentKey = (String, i64, String);

/// (symbol, bar, intent id) of the intents for shard 0's symbols with a bar in `range`.
fn intents_in(
    list: &[(Instant, OrderIntent)],
    after: Option<Instant>,
    range: std::ops::RangeInclusive<i64>,
) -> BTreeSet<IntentKey> {
    let shard0 = Shard::new(0, 2).unwrap();
    list.iter()
        .filter(|(t, i)| {
            after.is_none_or(|a| *t > a)
                && shard0.owns_symbol(i.symbol.as_str())
                && range.contains(&i.bar_open_time_ms)
        })
        .map(|(_, i)| {
            (
                i.symbol.to_string(),
                i.bar_open_time_ms,
                i.intent_id.to_string(),
            )
        })
        .collect()
}

#[test]
fn gateway_and_workers_on_the_full_sim_universe() {
    let mut stack = Stack::new(CONFIG);
    stack.write("optimized_parameters.json", FAST_PARAMS);

    stack.spawn("bybit-sim", "bybit-sim", &[], &[]);
    let client = stack.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if rt.block_on(client.sync_time()).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        up,
        "bybit-sim did not start:\n{}",
        stack.output("bybit-sim")
    );

    let tap = BarTap::start(&stack.ipc("md.pub"));
    stack.spawn("market-data", "market-data", &[], &[]);
    let universe = stack.wait_for_universe(Duration::from_secs(60));
    assert!(universe.len() >= 600, "universe: {}", universe.len());

    let router = Router::start(&stack.ipc("router.rep"));
    let reference = Router::start(&stack.ipc("router-ref.rep"));
    let ref_env = [
        (
            "SHARDBOT__ENDPOINTS__ORDER_ROUTER_REP",
            stack.ipc("router-ref.rep"),
        ),
        (
            "SHARDBOT__ENDPOINTS__HEARTBEAT",
            stack.ipc("hb-ref-{service}-{instance}.pub"),
        ),
    ];
    let ref_env: Vec<(&str, &str)> = ref_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    stack.spawn("worker-0", "strategy-worker", &["--shard", "0/2"], &[]);
    stack.spawn("worker-1", "strategy-worker", &["--shard", "1/2"], &[]);
    stack.spawn(
        "worker-ref",
        "strategy-worker",
        &["--shard", "0/2"],
        &ref_env,
    );

    // Both shards trade live bars, and so does the reference.
    let shard0 = Shard::new(0, 2).unwrap();
    wait_until(
        &mut stack,
        "intents from every worker",
        Duration::from_secs(90),
        || {
            let live = tap.newest().unwrap_or(i64::MAX);
            let r = router.snapshot();
            r.iter()
                .any(|(_, i)| shard0.owns_symbol(i.symbol.as_str()) && i.bar_open_time_ms >= live)
                && r.iter().any(|(_, i)| {
                    !shard0.owns_symbol(i.symbol.as_str()) && i.bar_open_time_ms >= live
                })
                && reference
                    .snapshot()
                    .iter()
                    .any(|(_, i)| i.bar_open_time_ms >= live)
        },
    );
    // Each worker told its router the strategies and parameters it trades with (the
    // configuration's and the parameters file's), before its first intent.
    let file: shardbot_strategy::OptimizedFile = serde_json::from_str(FAST_PARAMS).unwrap();
    for (r, workers) in [(&router, 2), (&reference, 1)] {
        let announced = r.announced();
        assert_eq!(announced.len(), workers, "one announcement per worker");
        let first_intent = r.snapshot().iter().map(|(t, _)| *t).min().unwrap();
        for (at, set) in announced {
            assert_eq!(set.strategies, ["trend_following", "mean_reversion"]);
            assert_eq!(set.parameters, file);
            assert!(at < first_intent, "announced after trading");
        }
    }
    wait_until(
        &mut stack,
        "live bars of every symbol",
        Duration::from_secs(60),
        || tap.slowest(&universe).is_some(),
    );
    // Each shard reports a live close as decided with the entries it marked for it: the
    // router's count of what can still come ends at zero.
    // (A close before every symbol has live bars stays undecided: the router's
    // `close_wait_ms` ends its wait.)
    let all_live = tap.newest().unwrap();
    let mut live_entry = None;
    wait_until(
        &mut stack,
        "an entry marked with its shard at a close with every symbol live",
        Duration::from_secs(120),
        || {
            live_entry = router
                .snapshot()
                .into_iter()
                .map(|(_, i)| i)
                .find(|i| i.shard.is_some() && i.bar_open_time_ms > all_live);
            live_entry.is_some()
        },
    );
    let live_entry = live_entry.unwrap();
    let of_shard = live_entry.shard.unwrap();
    assert!(matches!(live_entry.action, IntentAction::Enter { .. }));
    wait_until(
        &mut stack,
        "the shard's report of the close as decided, counting its marked entries",
        Duration::from_secs(30),
        || {
            let marked: BTreeSet<String> = router
                .snapshot()
                .iter()
                .filter(|(_, i)| {
                    i.shard == Some(of_shard) && i.bar_open_time_ms == live_entry.bar_open_time_ms
                })
                .map(|(_, i)| i.symbol.to_string())
                .collect();
            router.reports().iter().any(|p| {
                p.shard == of_shard
                    && p.bar_open_time_ms == live_entry.bar_open_time_ms
                    && p.undecided == 0
                    && p.pending
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<BTreeSet<_>>()
                        == marked
            })
        },
    );
    // And its first bar of the close was reported with symbols still undecided, every one
    // of them pending.
    assert!(
        router.reports().iter().any(|p| p.shard == of_shard
            && p.bar_open_time_ms == live_entry.bar_open_time_ms
            && p.undecided > 0
            && p.pending.len() >= p.undecided as usize),
        "{:?}",
        router.reports()
    );
    // Every worker has warmed every symbol it owns (no risk manager runs here, so they
    // stay "degraded: positions unknown", which is what they should say).
    for hb in [
        "hb-strategy-worker-0-2.pub",
        "hb-strategy-worker-1-2.pub",
        "hb-ref-strategy-worker-0-2.pub",
    ] {
        let url = stack.ipc(hb);
        stack.wait_heartbeat(&url, Duration::from_secs(60), |h| {
            matches!(&h.state, ServiceState::Degraded { reason } if reason.starts_with("positions unknown"))
        });
    }
    let live_from = wait_bars(&mut stack, &tap, 1) + STEP;
    wait_bars(&mut stack, &tap, 6);

    // kill -9 a worker, let a bar close without it, start it again.
    stack.kill9("worker-0");
    let killed_at = wait_bars(&mut stack, &tap, 1);
    let restarted = Instant::now();
    stack.spawn("worker-0b", "strategy-worker", &["--shard", "0/2"], &[]);
    let url = stack.ipc("hb-strategy-worker-0-2.pub");
    stack.wait_heartbeat(&url, Duration::from_secs(60), |h| {
        matches!(&h.state, ServiceState::Degraded { reason } if reason.starts_with("positions unknown"))
    });
    // Every symbol is warm: from the next bar on, the restarted worker must act exactly
    // as the reference does.
    let warm_from = tap.newest().unwrap() + STEP;
    wait_bars(&mut stack, &tap, 3);

    // A WebSocket outage: the sim's public stream goes silent and every connection drops.
    let sim_now = |c: &shardbot_bybit::rest::BybitClient| {
        rt.block_on(c.sync_time()).unwrap();
        c.raw().clock().now_ms()
    };
    stack.admin("/admin/faults", r#"{"pause_public": true}"#);
    stack.admin("/admin/ws/drop", "");
    let paused_at = sim_now(&client);
    while sim_now(&client) < paused_at + 3 * STEP {
        stack.assert_alive();
        std::thread::sleep(Duration::from_millis(100));
    }
    stack.admin("/admin/faults", "{}");
    let resumed_at = sim_now(&client);
    // Every symbol catches up past the outage (one REST request per symbol, within the
    // gateway's share of the IP limit).
    let end = resumed_at - resumed_at % STEP + 2 * STEP;
    wait_until(
        &mut stack,
        "every symbol past the outage",
        Duration::from_secs(60),
        || tap.slowest(&universe).is_some_and(|t| t >= end),
    );
    // Workers that dropped a frame refill it from the gateway; give them three more bar
    // closes before reading what the routers got for the bars up to `end`.
    wait_until(
        &mut stack,
        "three more bars everywhere",
        Duration::from_secs(30),
        || tap.slowest(&universe).is_some_and(|t| t >= end + 3 * STEP),
    );
    stack.assert_alive();
    let frames = tap.finish();

    // --- every symbol got every closed bar, in order ---------------------------------
    let mut by_symbol: HashMap<String, Vec<(u64, u64, Bar)>> = HashMap::new();
    for f in frames {
        by_symbol.entry(f.2.symbol.to_string()).or_default().push(f);
    }
    let mut tap_losses = 0u64;
    let mut received = 0usize;
    for sym in &universe {
        let frames = by_symbol
            .get(sym)
            .unwrap_or_else(|| panic!("no bar at all for {sym}"));
        received += frames.len();
        for w in frames.windows(2) {
            let ((e0, s0, b0), (e1, s1, b1)) = (&w[0], &w[1]);
            assert_eq!(e0, e1, "the gateway did not restart");
            assert!(s1 > s0, "{sym}: sequence went back ({s0} then {s1})");
            // The gateway stamps one sequence number per bar: consecutive numbers are
            // consecutive bars, so a bar the gateway skipped would break this.
            assert_eq!(
                b1.open_time_ms - b0.open_time_ms,
                (*s1 - *s0) as i64 * STEP,
                "{sym}: bars {} (seq {s0}) and {} (seq {s1}) are not contiguous",
                b0.open_time_ms,
                b1.open_time_ms
            );
            tap_losses += s1 - s0 - 1;
        }
        let first = frames.first().unwrap().2.open_time_ms;
        let last = frames.last().unwrap().2.open_time_ms;
        assert!(
            first < live_from,
            "{sym}: first live bar {first} not before {live_from}"
        );
        assert!(
            last >= end - STEP,
            "{sym}: stopped at {last}, expected ≥ {}",
            end - STEP
        );
        assert!(
            first < paused_at - STEP && last > resumed_at,
            "{sym}: the run must span the outage"
        );
    }
    assert!(
        tap_losses * 100 < received as u64,
        "the test's own subscriber lost {tap_losses} of {received} frames: too many to judge"
    );

    // ... with the exchange's own numbers.
    for sym in universe.iter().take(5) {
        let frames = &by_symbol[sym];
        let (from, to) = (
            frames[0].2.open_time_ms,
            frames.last().unwrap().2.open_time_ms,
        );
        let rest: BTreeMap<i64, _> = rt
            .block_on(client.klines(sym, Interval::M1, from, to))
            .unwrap()
            .into_iter()
            .map(|k| (k.start_ms, k))
            .collect();
        for (_, _, b) in frames {
            let k = &rest[&b.open_time_ms];
            assert_eq!(
                (b.open, b.high, b.low, b.close, b.volume),
                (k.open, k.high, k.low, k.close, k.volume),
                "{sym} bar {}",
                b.open_time_ms
            );
        }
    }

    // --- the restarted worker computes what the uninterrupted one does ----------------
    let ours = router.snapshot();
    let theirs = reference.snapshot();
    let first_after = ours
        .iter()
        .filter(|(t, i)| *t > restarted && shard0.owns_symbol(i.symbol.as_str()))
        .map(|(_, i)| i.bar_open_time_ms)
        .min()
        .expect("the restarted worker sent intents");
    assert!(first_after <= killed_at + 2 * STEP, "it traded at once");
    // While it warms (symbol by symbol), the newest bars of each symbol's history are
    // traded as their warm-up completes; once every symbol is warm, everything matches.
    let newest_both = |l: &[(Instant, OrderIntent)]| {
        l.iter()
            .filter(|(_, i)| shard0.owns_symbol(i.symbol.as_str()))
            .map(|(_, i)| i.bar_open_time_ms)
            .max()
            .unwrap()
    };
    let until = newest_both(&ours).min(newest_both(&theirs)).min(end);
    let range = warm_from.max(first_after)..=until;
    let a = intents_in(&ours, Some(restarted), range.clone());
    let b = intents_in(&theirs, None, range.clone());
    assert!(a.len() >= 20, "too few intents to compare: {}", a.len());
    let only_a: Vec<_> = a.difference(&b).take(5).collect();
    let only_b: Vec<_> = b.difference(&a).take(5).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "restarted vs reference over bars {range:?}: only restarted {only_a:?}, only reference {only_b:?}"
    );
    // And before the kill, the two copies of shard 0 agreed as well.
    // (A worker killed while refilling a dropped frame loses that work: bars up to three
    // before the kill are compared.)
    let before = live_from..=killed_at - 4 * STEP;
    let a = intents_in(&ours, None, before.clone());
    let b = intents_in(&theirs, None, before.clone());
    assert!(!a.is_empty());
    let only_a: Vec<_> = a.difference(&b).take(5).collect();
    let only_b: Vec<_> = b.difference(&a).take(5).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "before the kill, over bars {before:?}: only worker 0 {only_a:?}, only reference {only_b:?}"
    );

    // Shard 1's symbols were traded too (by worker 1).
    let symbols: BTreeSet<Symbol> = ours.iter().map(|(_, i)| i.symbol.clone()).collect();
    assert!(symbols.iter().any(|s| !shard0.owns_symbol(s.as_str())));
}
