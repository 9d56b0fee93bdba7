//! `shardbot bench burst`: the order path at a bar close, against bybit-sim at Bybit's own
//! order limits (`sim.uid_limit_scale = 1`: `/v5/order/create` 10 orders/s, and
//! `/v5/order/create-batch` 10 orders/s counted per order).
//!
//! This process starts the release `bybit-sim`, `risk-manager` and `order-router` next to
//! it on a private configuration, then plays the workers: for each round it sends N entry
//! intents at once (one requester, as a worker's intents share one), then, once the risk
//! manager holds the N positions, N exits at once. An intent's time is from the burst's
//! send to the router's answer, which comes once the exchange has acknowledged its order.
//! The floor is N / 20 s (both budgets together); the last acknowledgement is compared
//! with it. A first round (not measured) sets every symbol's leverage, which the router
//! does once per symbol.
//!
//! Then, from the router's journal, each intent's stages ([`shardbot_journal::IntentStages`]:
//! decided → router → approved → sent → acknowledged → filled), p50 and p99 per burst size.
//! Here "decided" is the burst's send; the bar close → decided part is what `bench
//! pipeline` measures, and is in the journal of a running stack.

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rust_decimal::Decimal;
use shardbot_bus::{BusOptions, Requester};
use shardbot_bybit::ExchangeSettings;
use shardbot_protocol::{
    CloseProgress, IntentAction, Interval, OrderIntent, RiskReply, RiskRequest, RouterReply,
    RouterRequest, Shard, Side, Symbol,
};
use shardbot_service::Settings;

use super::bus::percentile;

#[derive(clap::Args, Debug)]
pub struct BurstBenchArgs {
    /// Burst sizes (approved entries per close) to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,50,150")]
    sizes: Vec<usize>,
    /// Measured rounds (bar closes) per size (each: a burst of entries, then one of exits).
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// Keep the benchmark's folder (its config, the services' logs at `warn`, the router's
    /// journal with every intent's stages) and print where it is, to look into a round.
    #[arg(long)]
    keep: bool,
}

/// Both order budgets together, orders per second (reference §4).
const ORDERS_PER_S: f64 = 20.0;
/// Bybit's per-endpoint window (1 s), and a little more.
const BUDGET_WINDOW: Duration = Duration::from_millis(1100);

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn run(args: &BurstBenchArgs) -> anyhow::Result<()> {
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    if largest == 0 || args.rounds == 0 {
        bail!("--sizes and --rounds must be above 0");
    }
    let dir = tempfile::Builder::new()
        .prefix("sb-bench-burst")
        .tempdir()
        .context("creating a temporary folder")?;
    let d = dir.path().display().to_string();
    let port = free_port()?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"[log]
dir = "{d}/log"
level = "warn"
[endpoints]
order_router_pub = "ipc://{d}/router.pub"
order_router_rep = "ipc://{d}/router.rep"
risk_manager_pub = "ipc://{d}/risk.pub"
risk_manager_rep = "ipc://{d}/risk.rep"
heartbeat = "ipc://{d}/hb-{{service}}-{{instance}}.pub"
[journal]
file = "{d}/journal.sqlite"
[exchange]
environment = "sim"
sim_base_url = "http://127.0.0.1:{port}"
[sim]
listen = "127.0.0.1:{port}"
symbols = {symbols}
universe_file = ""
universe_price_dir = ""
uid_limit_scale = 1.0
clock_speed = 1.0
[risk]
sync_interval_ms = 1000
# The unmeasured first round sets every symbol's leverage at Bybit's 10 a second (15 s for
# 150 symbols): longer than the default entry age allows. Measured rounds never wait on it.
[router]
max_entry_age_ms = 600000
"#,
            symbols = largest * 2 + 50,
        ),
    )?;
    std::fs::write(
        dir.path().join("trading_settings.json"),
        format!(
            r#"{{"simulated_balance": 1000000, "sizing": {{"fixed": 20}}, "leverage": 2,
  "daily_loss_limit": 100000, "max_open_positions": {}, "max_margin_use_pct": 90,
  "cooldown_after_stop_min": 0}}"#,
            largest + 10
        ),
    )?;
    let spawn = |name: &str| -> anyhow::Result<Child> {
        Command::new(super::sibling(name)?)
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env_remove("SHARDBOT_CONFIG")
            .spawn()
            .with_context(|| format!("starting {name}"))
    };
    let mut procs = super::Children(vec![spawn("bybit-sim")?]);
    let settings = Settings::load(Some(&config))?;
    let ex: ExchangeSettings = settings.section("exchange")?;
    let sim = ex.client(None)?;
    let rt = tokio::runtime::Runtime::new()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while rt.block_on(sim.sync_time()).is_err() {
        if Instant::now() > deadline {
            bail!("bybit-sim did not answer within 20 s (logs in {d}/log)");
        }
        thread::sleep(Duration::from_millis(100)); // polling a process's start-up
    }
    procs.0.push(spawn("risk-manager")?);
    procs.0.push(spawn("order-router")?);
    // Symbols whose smallest order fits 20 USDT of margin at 2x, with their last prices.
    let instruments = rt.block_on(sim.usdt_perpetuals())?;
    let tickers = rt.block_on(sim.tickers())?;
    let price = |s: &str| tickers.iter().find(|t| t.symbol == s).map(|t| t.last_price);
    let mut universe: Vec<(Symbol, Decimal)> = Vec::new();
    for i in &instruments {
        let Some(p) = price(&i.symbol) else { continue };
        let min = i.lot_size_filter.min_order_qty * p;
        if min < Decimal::from(30)
            && i.lot_size_filter.min_notional_value.unwrap_or_default() < Decimal::from(30)
        {
            universe.push((Symbol::new(i.symbol.clone())?, p));
        }
    }
    if universe.len() < largest {
        bail!(
            "only {} symbols fit the sizing; a burst of {largest} needs as many",
            universe.len()
        );
    }
    let opts = BusOptions::default();
    // The last orders of a large burst are answered seconds after its send (the budgets).
    let patient = BusOptions {
        request_timeout_ms: 60_000,
        ..BusOptions::default()
    };
    let router = Requester::dial(&format!("ipc://{d}/router.rep"), &patient)?;
    let risk = Requester::dial(&format!("ipc://{d}/risk.rep"), &opts)?;
    wait_ready(&router, &risk)?;

    println!(
        "order burst: bybit-sim at Bybit's order limits (create 10/s + create-batch 10/s), \
         {} rounds per size; times from the burst's send to each order's acknowledgement",
        args.rounds
    );
    println!(
        "| N | kind | first ack p50 | first ack p99 | last ack p50 | last ack p99 | floor N/20 | last p50 / floor |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut bar = 0i64;
    // Not measured: every symbol's leverage is set by its first entry.
    round(&rt, &router, &risk, &universe[..largest], &mut bar)?;
    let mut windows = Vec::new();
    for &n in &args.sizes {
        let from_ms = shardbot_protocol::now_ms();
        let (mut first_in, mut last_in, mut first_out, mut last_out) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            let (entries, exits) = round(&rt, &router, &risk, &universe[..n], &mut bar)?;
            first_in.push(entries[0]);
            last_in.push(entries[entries.len() - 1]);
            first_out.push(exits[0]);
            last_out.push(exits[exits.len() - 1]);
        }
        let floor_ms = n as f64 / ORDERS_PER_S * 1000.0;
        for (kind, first, last) in [
            ("entries", &mut first_in, &mut last_in),
            ("exits", &mut first_out, &mut last_out),
        ] {
            first.sort_unstable();
            last.sort_unstable();
            let last_p50 = percentile(last, 0.5);
            println!(
                "| {n} | {kind} | {:.1} ms | {:.1} ms | {:.0} ms | {:.0} ms | {floor_ms:.0} ms | {:.2} |",
                percentile(first, 0.5) / 1000.0,
                percentile(first, 0.99) / 1000.0,
                last_p50 / 1000.0,
                percentile(last, 0.99) / 1000.0,
                last_p50 / 1000.0 / floor_ms,
            );
        }
        windows.push((n, from_ms, shardbot_protocol::now_ms()));
    }
    print_stages(&dir.path().join("journal.sqlite"), &windows)?;
    drop(procs);
    if args.keep {
        let kept = dir.keep();
        println!(
            "\nkept: {} (logs in log/, the journal in journal.sqlite)",
            kept.display()
        );
    }
    Ok(())
}

/// The journal's stage breakdown of each size's intents, entries and exits apart; then
/// that of each burst's first acknowledged order.
fn print_stages(journal: &std::path::Path, windows: &[(usize, i64, i64)]) -> anyhow::Result<()> {
    use shardbot_journal::{IntentStages, SpanSummary, StageSummary, first_acknowledged_per_close};
    let journal = shardbot_journal::Journal::open(journal)?;
    let shown = [
        "decided → router",
        "router → approved",
        "approved → sent",
        "sent → acknowledged",
        "acknowledged → filled",
    ];
    let first_shown = &shown[..4];
    let cell = |p50: Option<i64>, p99: Option<i64>| match (p50, p99) {
        (Some(p50), Some(p99)) => format!("{p50} / {p99}"),
        _ => "-".into(),
    };
    let cells = |stages: &[IntentStages], names: &[&str]| -> Vec<String> {
        let sum = StageSummary::of(stages);
        names
            .iter()
            .map(|name| match sum.spans.iter().find(|s| s.name == *name) {
                Some(s) => cell(s.p50, s.p99),
                None => "-".into(),
            })
            .collect()
    };
    let (mut all_rows, mut first_rows) = (Vec::new(), Vec::new());
    for &(n, from_ms, to_ms) in windows {
        let all = journal.stages_since(from_ms)?;
        for (kind, exits) in [("entries", false), ("exits", true)] {
            let these: Vec<IntentStages> = all
                .iter()
                .filter(|s| s.router_ms < to_ms && (s.action == "exit") == exits)
                .cloned()
                .collect();
            all_rows.push(format!(
                "| {n} | {kind} | {} | {} |",
                these.len(),
                cells(&these, &shown).join(" | ")
            ));
            let firsts = first_acknowledged_per_close(&these);
            let from_decision = |name, to: fn(&IntentStages) -> i64| {
                let s = SpanSummary::of(name, firsts.iter().map(|s| to(s) - s.decided_ms));
                cell(s.p50, s.p99)
            };
            let mut row = cells(&firsts, first_shown);
            row.push(from_decision("ours", |s| s.sent_ms));
            row.push(from_decision("decided → acknowledged", |s| s.acked_ms));
            first_rows.push(format!(
                "| {n} | {kind} | {} | {} |",
                firsts.len(),
                row.join(" | ")
            ));
        }
    }
    println!();
    println!("stages (ms, p50 / p99, from the router's journal; decided = the burst's send):");
    println!("| N | kind | intents | {} |", shown.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(shown.len()));
    all_rows.iter().for_each(|r| println!("{r}"));
    println!();
    println!(
        "the first acknowledged order of each burst (ms, p50 / p99 over the bursts; ours = \
         decided → sent, everything before the exchange's round trip; decided → acknowledged \
         = when the router heard the exchange's answer):"
    );
    println!(
        "| N | kind | bursts | {} | ours | decided → acknowledged |",
        first_shown.join(" | ")
    );
    println!("|---|---|---|{}---|---|", "---|".repeat(first_shown.len()));
    first_rows.iter().for_each(|r| println!("{r}"));
    Ok(())
}

fn wait_ready(router: &Requester, risk: &Requester) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let risk_up = matches!(
            risk.request_within::<_, RiskReply>(&RiskRequest::Status, Duration::from_secs(2)),
            Ok(RiskReply::Status(_))
        );
        // An exit of nothing: the router answers once it serves (refused: no position).
        let probe = OrderIntent::new(
            "trend_following",
            Symbol::new("BTCUSDT")?,
            Interval::M5,
            0,
            IntentAction::Exit,
            Decimal::ONE,
            None,
            None,
            shardbot_protocol::now_ms(),
        );
        let router_up = risk_up
            && matches!(
                router.request_within::<_, RouterReply>(
                    &RouterRequest::Submit(probe),
                    Duration::from_secs(2)
                ),
                Ok(RouterReply::Refused { .. } | RouterReply::Placed { .. })
            );
        if router_up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the risk manager and the router did not answer within 60 s");
        }
        thread::sleep(Duration::from_millis(200)); // polling the services' start-up
    }
}

/// A burst of entries on `symbols`, then one of exits once the risk manager holds them;
/// each burst's acknowledgement times in µs, sorted.
fn round(
    rt: &tokio::runtime::Runtime,
    router: &Requester,
    risk: &Requester,
    symbols: &[(Symbol, Decimal)],
    bar: &mut i64,
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    *bar += 300_000;
    let entries = burst(
        rt,
        router,
        symbols,
        *bar,
        IntentAction::Enter { side: Side::Buy },
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(RiskReply::Positions(p)) =
            risk.request_within::<_, RiskReply>(&RiskRequest::Positions, Duration::from_secs(5))
            && p.positions.iter().filter(|p| !p.size.is_zero()).count() >= symbols.len()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the risk manager never held the burst's positions");
        }
        thread::sleep(Duration::from_millis(20)); // polling the fills' booking
    }
    let exits = burst(rt, router, symbols, *bar, IntentAction::Exit)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(RiskReply::Positions(p)) =
            risk.request_within::<_, RiskReply>(&RiskRequest::Positions, Duration::from_secs(5))
            && p.positions.iter().all(|p| p.size.is_zero())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the risk manager never saw the burst's exits");
        }
        thread::sleep(Duration::from_millis(20)); // polling the fills' booking
    }
    Ok((entries, exits))
}

/// N intents at once, each from its own task on one requester (as a worker sends a close's
/// intents: `request_async`, driven by NNG's callbacks); each one's answer time in µs from
/// the send, sorted. Every one must be placed (the sizing and limits are set so).
fn burst(
    rt: &tokio::runtime::Runtime,
    router: &Requester,
    symbols: &[(Symbol, Decimal)],
    bar: i64,
    action: IntentAction,
) -> anyhow::Result<Vec<u64>> {
    // Bar closes are minutes apart: each burst meets budgets a whole window fresh, as the
    // first burst of a close does (the pace of the benchmark, not a wait for a result).
    thread::sleep(BUDGET_WINDOW);
    let start = Instant::now();
    rt.block_on(async {
        // As one worker shard owning the burst's symbols: its close's progress at the first
        // bar and once every symbol had it (the router holds the entries with their close
        // until the limits' room is known to hold them all), its entries marked with it.
        let shard = Shard::whole();
        let entries = matches!(action, IntentAction::Enter { .. });
        let n = u32::try_from(symbols.len()).unwrap_or(u32::MAX);
        let pending: Vec<Symbol> = symbols.iter().map(|(s, _)| s.clone()).collect();
        let report = |undecided: u32| {
            let router = router.clone();
            // At the first bar every symbol may bring an entry; at the last, every one did.
            let pending = pending.clone();
            async move {
                match router
                    .request_async::<_, RouterReply>(RouterRequest::CloseProgress(CloseProgress {
                        shard,
                        interval: Interval::M5,
                        bar_open_time_ms: bar,
                        undecided,
                        pending,
                    }))
                    .await?
                {
                    RouterReply::Recorded { .. } => Ok(()),
                    other => bail!("the close's progress: {other:?}"),
                }
            }
        };
        let mut reports = tokio::task::JoinSet::new();
        if entries {
            reports.spawn(report(n));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (s, p) in symbols {
            let intent = OrderIntent::new(
                "trend_following",
                s.clone(),
                Interval::M5,
                bar,
                action,
                *p,
                None,
                None,
                shardbot_protocol::now_ms(),
            );
            let intent = if entries {
                intent.of_shard(shard)
            } else {
                intent
            };
            let (router, s) = (router.clone(), s.clone());
            tasks.spawn(async move {
                // As a worker: an error reply (an order whose outcome was unknown and not
                // found) is answered by sending the intent again.
                let mut last = None;
                for _ in 0..3 {
                    match router
                        .request_async::<_, RouterReply>(RouterRequest::Submit(intent.clone()))
                        .await?
                    {
                        RouterReply::Placed { .. } => {
                            return Ok(start.elapsed().as_micros() as u64);
                        }
                        RouterReply::Error(e) => last = Some(e.message),
                        other => bail!("{s}: {other:?}"),
                    }
                }
                bail!("{s}: {last:?}")
            });
        }
        if entries {
            reports.spawn(report(0));
        }
        while let Some(done) = reports.join_next().await {
            done.context("a report task failed")??;
        }
        let mut times = Vec::with_capacity(symbols.len());
        while let Some(done) = tasks.join_next().await {
            times.push(done.context("a sender task failed")??);
        }
        times.sort_unstable();
        Ok(times)
    })
}
