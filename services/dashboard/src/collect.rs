//! What the dashboard shows, gathered on its own thread once per `dashboard.refresh_ms`
//! while a page is open, and otherwise only when a request asks ([`Demand`]): a dashboard
//! nobody looks at costs nothing but its heartbeat listener. It gathers
//! the risk manager's positions, balance, limits and settings (over the bus), every
//! process's heartbeat, the journal's trades with their verified marks and the performance
//! figures of the closed ones, and the strategies' parameter status.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::Serialize;
use shardbot_analytics::{Report, TradeResult};
use shardbot_bus::{BusOptions, Requester, Subscriber};
use shardbot_bybit::{AccountsFile, Environment, ExchangeSettings};
use shardbot_journal::{Journal, JournalCounts, TradeView};
use shardbot_protocol::{
    BalanceSnapshot, Event, Heartbeat, Position, RiskReply, RiskRequest, RiskStatus, TimestampMs,
    now_ms,
};
use shardbot_service::{Endpoints, Settings};
use shardbot_strategy::{OptimizedFile, ParamStatus, StrategySettings};

/// The services of an account stack with one process each.
const SINGLE: [&str; 4] = ["order-router", "risk-manager", "reconciler", "dashboard"];
/// The market group's (shared by the account stacks; bybit-sim only in sim mode).
const MARKET: [&str; 2] = shardbot_service::MARKET_GROUP;

/// The account this stack trades.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccountView {
    pub name: String,
    pub environment: String,
    /// Real money: the UI shows it as Live Trading, in its own colours.
    pub live: bool,
}

impl AccountView {
    pub fn of(exchange: &ExchangeSettings, risk_account: &str) -> AccountView {
        let name = if exchange.account.trim().is_empty() {
            risk_account.to_owned()
        } else {
            exchange.account.clone()
        };
        AccountView {
            name,
            environment: exchange.environment.as_str().to_owned(),
            live: exchange.environment == Environment::Live,
        }
    }
}

/// An account the user could pick (names and environments only: never keys).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccountChoice {
    pub name: String,
    pub environment: String,
    /// The account of this stack.
    pub current: bool,
}

/// The accounts of this stack's environment kind: sim accounts in sim mode, else the
/// accounts file's (an unreadable file lists only the current account).
pub fn account_choices(
    settings: &Settings,
    exchange: &ExchangeSettings,
    current: &AccountView,
) -> Vec<AccountChoice> {
    let mut out: Vec<AccountChoice> = if exchange.environment == Environment::Sim {
        settings
            .sim_account_names()
            .into_iter()
            .map(|name| AccountChoice {
                environment: "sim".into(),
                current: name == current.name,
                name,
            })
            .collect()
    } else {
        // Names and environments only: the dashboard never holds a key or a secret.
        match AccountsFile::names(std::path::Path::new(&exchange.accounts_file)) {
            Ok(names) => names
                .iter()
                .map(|a| AccountChoice {
                    name: a.name.clone(),
                    environment: a.environment.as_str().into(),
                    current: a.name == current.name,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the accounts");
                Vec::new()
            }
        }
    };
    if !out.iter().any(|a| a.current) {
        out.insert(
            0,
            AccountChoice {
                name: current.name.clone(),
                environment: current.environment.clone(),
                current: true,
            },
        );
    }
    out
}

/// Every heartbeat endpoint of the stack: the market group's (on `market_heartbeat`, a
/// template like `endpoints.heartbeat`; "" = that one), the single services and strategy
/// workers of up to `max_workers` shards (any `i-n`, n ≤ max_workers; `scale` changes n).
pub fn heartbeat_urls(ep: &Endpoints, market_heartbeat: &str, max_workers: u32) -> Vec<String> {
    let market = if market_heartbeat.trim().is_empty() {
        ep.heartbeat.as_str()
    } else {
        market_heartbeat
    };
    let mut urls: Vec<String> = MARKET
        .iter()
        .map(|s| market.replace("{service}", s).replace("{instance}", "main"))
        .collect();
    urls.extend(SINGLE.iter().map(|s| ep.heartbeat_of(s, "main")));
    for n in 1..=max_workers {
        for i in 0..n {
            urls.push(ep.heartbeat_of("strategy-worker", &format!("{i}-{n}")));
        }
    }
    urls
}

/// One process as the health page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessView {
    pub service: String,
    pub instance: String,
    /// running, starting, degraded, stopping, or silent (no heartbeat for 3 intervals).
    pub state: String,
    pub detail: String,
    pub pid: u32,
    pub version: String,
    pub heartbeat_age_ms: i64,
    pub uptime_ms: i64,
    /// Restarts seen by this dashboard (a new pid or start time of the same process).
    pub restarts: u32,
    /// The process's own figures from its last heartbeat.
    pub metrics: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StrategyView {
    pub name: String,
    pub optimized: bool,
    /// "optimized ✓ 2026-11-20T12:00:00Z (sharpe)" or "defaults (not optimized)".
    pub label: String,
    pub optimized_at: Option<String>,
    pub objective: Option<String>,
}

/// A trade row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TradeRow {
    pub trade_key: String,
    pub symbol: String,
    pub side: &'static str,
    pub strategy: String,
    pub source: String,
    pub qty: Decimal,
    pub entry_time_ms: TimestampMs,
    pub exit_time_ms: Option<TimestampMs>,
    pub entry_price: Decimal,
    pub exit_price: Option<Decimal>,
    /// How it closed (`stop_loss`, `take_profit`, `signal`, `kill_switch`, ...).
    pub exit_reason: Option<String>,
    pub fees: Decimal,
    pub pnl: Option<Decimal>,
    /// The exchange's own numbers (✓), or our calculation so far.
    pub verified: bool,
    pub discrepancy: Option<String>,
}

impl TradeRow {
    fn of(t: &TradeView) -> TradeRow {
        TradeRow {
            trade_key: t.calc.trade_key.clone(),
            symbol: t.calc.symbol.clone(),
            side: if t.calc.side == shardbot_protocol::Side::Buy {
                "long"
            } else {
                "short"
            },
            strategy: t.strategy_label(),
            source: t.calc.source.clone(),
            qty: t.qty(),
            entry_time_ms: t.calc.entry_time_ms,
            exit_time_ms: t.calc.exit_time_ms,
            entry_price: t.entry_price(),
            exit_price: t.exit_price(),
            exit_reason: t.calc.exit_reason.clone(),
            fees: t.fees(),
            pnl: t.pnl(),
            verified: t.verified(),
            discrepancy: t.discrepancy.clone(),
        }
    }
}

/// Performance of the closed trades.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Performance {
    pub report: Report,
    pub best_symbol: Option<String>,
    /// The symbols with the most closed trades (several on a tie, by name), and that
    /// count; empty without trades.
    pub most_active: Vec<String>,
    pub most_active_trades: usize,
    /// (exit time ms, equity USDT) from the starting balance.
    pub equity: Vec<(i64, f64)>,
    /// (time ms, drawdown in % of the running peak, ≤ 0).
    pub drawdown: Vec<(i64, f64)>,
    /// (exchange time ms, simulated equity USDT with the open positions marked to market):
    /// the risk manager's samples (`risk.equity_sample_ms`) since the simulated balance in
    /// force was set, at most [`EQUITY_POINTS`]; empty before the first.
    pub marked: Vec<(i64, f64)>,
    /// The drawdown of `marked`, in % of its running peak.
    pub marked_drawdown: Vec<(i64, f64)>,
    /// The closed trades day by day (UTC), newest first, the last 60 days with a trade.
    pub daily: Vec<shardbot_analytics::Day>,
}

/// Everything a page shows, as one JSON document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct View {
    pub generated_ms: TimestampMs,
    pub account: AccountView,
    pub accounts: Vec<AccountChoice>,
    pub risk: Option<RiskStatus>,
    pub balance: Option<BalanceSnapshot>,
    pub positions: Vec<Position>,
    pub unrealised_pnl: Decimal,
    /// trading_settings.json as the risk manager holds it.
    pub settings: Option<serde_json::Value>,
    pub strategies: Vec<StrategyView>,
    /// optimized_parameters.json: each strategy's optimization record.
    pub optimizations: serde_json::Value,
    /// `shardbot backtest` runs found in `dashboard.backtests`, newest first.
    pub backtests: Vec<BacktestRun>,
    /// The newest trades (open and closed), newest first.
    pub trades: Vec<TradeRow>,
    pub closed_trades: usize,
    pub verified_trades: usize,
    pub performance: Option<Performance>,
    /// The journal's closed trades of the last `dashboard.drift_days` against the
    /// backtest of the same bars (None: off, or not worked out; `problems` says why).
    pub drift: Option<crate::drift::DriftView>,
    pub health: Vec<ProcessView>,
    /// The newest orders, fills and refusals, and the refusals' counts by reason.
    pub activity: Activity,
    /// The newest notifications (fills, stops, mode changes, the daily loss limit, a process
    /// not running), newest first: the page shows new ones as browser notifications.
    pub notifications: Vec<crate::notify::Note>,
    /// Decimals of each shown symbol's price (its tick) and quantity (its step), from the
    /// exchange's instruments: prices and sizes are shown at the instrument's own precision.
    pub precision: BTreeMap<String, [u32; 2]>,
    /// What could not be read this round, in words.
    pub problems: Vec<String>,
}

/// Rows of each Activity table at most (the newest).
const ACTIVITY_ROWS: u32 = 100;

/// The Activity view: what the stack did and refused, newest first.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Activity {
    pub orders: Vec<shardbot_journal::OrderRecord>,
    pub fills: Vec<FillRow>,
    pub refusals: Vec<shardbot_journal::RefusalRecord>,
    /// Every refusal the journal holds, by reason (code), most first.
    pub refusals_by_reason: Vec<(String, u64)>,
    /// The newest bar closes with refusals (of the newest rows read), newest first: the
    /// bar's open time and its refusals by reason.
    pub refusals_by_close: Vec<(TimestampMs, BTreeMap<String, u64>)>,
    /// Each process's newest warnings and errors (its log file's).
    pub logs: Vec<LogTail>,
    /// The newest close's refusals, when many more than usual (the badge turns red).
    pub refusal_spike: Option<crate::spikes::RefusalSpike>,
    /// The logs' errors of the last minutes (the badge counts them).
    pub recent_errors: Option<crate::spikes::RecentErrors>,
}

/// One process's newest warnings and errors, from its log file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogTail {
    /// The file's name, e.g. `order-router.log`, `strategy-worker-0-2.log`.
    pub file: String,
    /// Newest last, at most [`LOG_LINES`].
    pub lines: Vec<String>,
}

/// Warnings and errors kept per log file.
const LOG_LINES: usize = 20;
/// How much of a log file's end is read for them.
const LOG_TAIL_BYTES: u64 = 128 * 1024;

/// Whether a log line (text or JSON, as `log.json` chooses) is a warning or an error.
fn warning_or_error(line: &str) -> bool {
    line.contains(" WARN ")
        || line.contains(" ERROR ")
        || line.contains("\"level\":\"WARN\"")
        || line.contains("\"level\":\"ERROR\"")
}

/// The newest warnings and errors of the end of `text` (a log file's last bytes; a first,
/// partial line is left out when `cut`), newest last.
pub fn warnings_and_errors(text: &str, cut: bool) -> Vec<String> {
    let mut lines: Vec<&str> = text.lines().skip(usize::from(cut)).collect();
    lines.retain(|l| warning_or_error(l));
    let start = lines.len().saturating_sub(LOG_LINES);
    lines[start..].iter().map(|l| (*l).to_owned()).collect()
}

/// Every `*.log` file of `dirs`, by name, with its newest warnings and errors.
pub fn log_tails(dirs: &[PathBuf]) -> Vec<LogTail> {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("log") {
                continue;
            }
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            let len = f.metadata().map_or(0, |m| m.len());
            let from = len.saturating_sub(LOG_TAIL_BYTES);
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
                continue;
            }
            let text = String::from_utf8_lossy(&buf);
            out.push(LogTail {
                file: path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                lines: warnings_and_errors(&text, from > 0),
            });
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// One fill as the Activity table shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FillRow {
    pub exec_id: String,
    pub exec_time_ms: TimestampMs,
    pub symbol: String,
    pub side: &'static str,
    pub qty: Decimal,
    pub price: Decimal,
    pub fee: Decimal,
    /// `Trade`, `Funding`, ...
    pub exec_type: String,
    pub strategy: Option<String>,
    pub order_link_id: String,
}

impl Activity {
    /// The journal's newest rows, and the refusals counted by reason (all of them) and by
    /// bar close (of the newest `ACTIVITY_ROWS * 5`).
    pub fn read(
        j: &Journal,
        counts: &JournalCounts,
    ) -> Result<Activity, shardbot_journal::JournalError> {
        let fills = j
            .recent_fills(ACTIVITY_ROWS)?
            .into_iter()
            .map(|f| FillRow {
                exec_id: f.fill.exec_id.clone(),
                exec_time_ms: f.fill.exec_time_ms,
                symbol: f.fill.symbol.as_str().to_owned(),
                side: f.fill.side.as_str(),
                qty: f.fill.exec_qty,
                price: f.fill.exec_price,
                fee: f.fill.exec_fee,
                exec_type: f.fill.exec_type,
                strategy: f.strategy,
                order_link_id: f.fill.order_link_id,
            })
            .collect();
        let newest = j.refusals(ACTIVITY_ROWS * 5)?;
        let mut by_close: BTreeMap<TimestampMs, BTreeMap<String, u64>> = BTreeMap::new();
        for r in &newest {
            *by_close
                .entry(r.bar_open_ms)
                .or_default()
                .entry(r.code.clone())
                .or_default() += 1;
        }
        let mut by_reason = counts.refusals_by_code.clone();
        by_reason.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(Activity {
            orders: j.recent_orders(ACTIVITY_ROWS)?,
            fills,
            refusals: newest.into_iter().take(ACTIVITY_ROWS as usize).collect(),
            refusals_by_reason: by_reason,
            refusals_by_close: by_close.into_iter().rev().take(10).collect(),
            logs: Vec::new(),
            refusal_spike: None,
            recent_errors: None,
        })
    }
}

/// The decimals of an instrument's tick and quantity step (`0.0000001` → 7, `1` → 0).
pub fn precision_of(i: &shardbot_protocol::Instrument) -> [u32; 2] {
    [
        i.tick_size.normalize().scale(),
        i.qty_step.normalize().scale(),
    ]
}

/// How often the instruments' filters are read again (a new listing shows within it).
const INSTRUMENTS_EVERY: Duration = Duration::from_secs(3600);

/// One `shardbot backtest --out DIR` run: its folder and its summary.json.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BacktestRun {
    pub folder: String,
    pub modified_ms: i64,
    pub summary: serde_json::Value,
}

/// The runs in `roots` (each a run folder, or a folder of run folders), newest first.
pub fn backtest_runs(roots: &[PathBuf]) -> Vec<BacktestRun> {
    fn run(dir: &std::path::Path) -> Option<BacktestRun> {
        let file = dir.join("summary.json");
        let text = std::fs::read_to_string(&file).ok()?;
        let modified_ms = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        match serde_json::from_str(&text) {
            Ok(summary) => Some(BacktestRun {
                folder: dir.display().to_string(),
                modified_ms,
                summary,
            }),
            Err(e) => {
                tracing::debug!(file = %file.display(), error = %e, "not a backtest summary");
                None
            }
        }
    }
    let mut runs = Vec::new();
    for root in roots {
        if let Some(r) = run(root) {
            runs.push(r);
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(root) {
            runs.extend(entries.flatten().filter_map(|e| run(&e.path())));
        }
    }
    runs.sort_by(|a, b| {
        b.modified_ms
            .cmp(&a.modified_ms)
            .then(a.folder.cmp(&b.folder))
    });
    runs
}

/// A view as published: the JSON the pages get and the figures /metrics renders.
#[derive(Debug, Clone)]
pub struct Published {
    pub json: String,
    pub view: Option<View>,
    pub counts: JournalCounts,
    /// When it was gathered (`None`: nothing yet).
    pub built: Option<Instant>,
}

impl Published {
    pub fn empty() -> Published {
        Published {
            json: "null".into(),
            view: None,
            counts: JournalCounts::default(),
            built: None,
        }
    }

    /// Gathered less than `max_age` ago.
    pub fn fresh(&self, max_age: Duration) -> bool {
        self.built.is_some_and(|t| t.elapsed() < max_age)
    }
}

/// A request's call for a fresh view, to a collector that gathers nothing while no page
/// is open. Asking twice before the collector wakes counts once.
#[derive(Debug, Clone)]
pub struct Demand(std::sync::mpsc::SyncSender<()>);

impl Demand {
    /// The caller's end and the collector's.
    pub fn channel() -> (Demand, std::sync::mpsc::Receiver<()>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        (Demand(tx), rx)
    }

    pub fn ask(&self) {
        let _ = self.0.try_send(());
    }
}

#[derive(Debug)]
pub struct CollectorConfig {
    pub journal_file: PathBuf,
    pub strategy: StrategySettings,
    pub account: AccountView,
    pub accounts: Vec<AccountChoice>,
    pub refresh: Duration,
    pub heartbeat_interval_ms: u64,
    pub trades_shown: usize,
    pub heartbeat_urls: Vec<String>,
    /// Backtest runs: folders with a summary.json, or folders of such folders.
    pub backtests: Vec<PathBuf>,
    pub bus: BusOptions,
    pub risk: Arc<Requester>,
    /// The paper-against-backtest section (None: off).
    pub drift: Option<crate::drift::DriftConfig>,
    /// Where the instruments' precision is read (public, no keys).
    pub exchange: shardbot_bybit::ExchangeSettings,
    /// Folders of log files whose warnings and errors the Activity page shows.
    pub log_dirs: Vec<PathBuf>,
    /// Where notifications go besides the page (`[alerts]`'s webhook; a no-op without).
    pub alerts: shardbot_service::alert::Alerts,
    /// The runtime the webhook's deliveries run on (the web server's).
    pub runtime: tokio::runtime::Handle,
}

#[derive(Debug)]
struct Seen {
    last: Heartbeat,
    restarts: u32,
}

type SeenMap = Arc<Mutex<BTreeMap<(String, String), Seen>>>;

#[derive(Debug)]
pub struct Collector {
    cfg: CollectorConfig,
    /// Kept up to date by the heartbeat thread, whatever the collector is waiting for (a
    /// risk manager that does not answer must not freeze the health view).
    seen: SeenMap,
    journal: Option<Journal>,
    /// The newest paper-against-backtest comparison (or why there is none), and when.
    drift: Option<(Instant, Result<crate::drift::DriftView, String>)>,
    /// The exchange's instrument filters (or why they could not be read), and when they
    /// were read: the prices' precision and the drift section's backtest both use them.
    instruments: Option<(Instant, Result<Filters, String>)>,
    /// What the previous view showed, for the notifications.
    watch: crate::notify::Watch,
    /// The newest notifications, newest first.
    notes: std::collections::VecDeque<crate::notify::Note>,
    /// The log files' newest warnings and errors, and when they were read.
    logs: Option<(Instant, Vec<LogTail>)>,
}

/// How long the log files' warnings and errors are reused before they are read again
/// (every view read a dozen files' ends: 128 KiB each, every `refresh_ms`).
const LOGS_EVERY: Duration = Duration::from_secs(3);

/// Notifications kept for the page.
const NOTES_KEPT: usize = 50;

/// Every instrument's filters, by symbol.
type Filters = HashMap<shardbot_protocol::Symbol, shardbot_protocol::Instrument>;

/// How often the heartbeat endpoints that exist are looked for (a worker scaled up shows
/// within this time).
const DIAL_SCAN: Duration = Duration::from_secs(2);

/// Dials the heartbeat endpoints that have a listener and hangs up on those that lost it
/// ([`shardbot_bus::ipc`]): of the dozens of possible workers' endpoints only those that
/// run are dialled, since a dialer of an endpoint nobody listens on redials several times
/// a second, for ever (it cost the idle dashboard 15 % of a core).
fn redial(sub: &Subscriber, urls: &[String], bus: &BusOptions) {
    let listening = shardbot_bus::ipc::listening();
    let dialled = sub.dialled();
    for url in urls {
        let may = shardbot_bus::ipc::may_listen(url, listening.as_ref());
        let is = dialled.contains(url);
        if may && !is {
            if let Err(e) = sub.dial_also(url, bus) {
                tracing::warn!(url, error = %e, "cannot dial a heartbeat endpoint");
            }
        } else if !may && is {
            sub.hang_up(url);
        }
    }
}

/// Receives every heartbeat into `seen`, for the life of the process, dialling the
/// endpoints of `urls` that exist ([`redial`]).
fn listen(sub: Subscriber, urls: Vec<String>, bus: BusOptions, seen: SeenMap) {
    let mut scanned: Option<Instant> = None;
    loop {
        if scanned.is_none_or(|t| t.elapsed() >= DIAL_SCAN) {
            redial(&sub, &urls, &bus);
            scanned = Some(Instant::now());
        }
        match sub.recv_frame(Some(DIAL_SCAN)) {
            Ok(Some(frame)) => match shardbot_protocol::decode_frame(&frame) {
                Ok(r) => {
                    let mut map = seen.lock().unwrap_or_else(|p| p.into_inner());
                    heard(&mut map, r.event);
                }
                Err(e) => tracing::warn!(error = %e, "an undecodable heartbeat frame skipped"),
            },
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "heartbeats can no longer be received: the health view stops");
                return;
            }
        }
    }
}

impl Collector {
    pub fn new(cfg: CollectorConfig) -> Result<Collector, shardbot_bus::BusError> {
        for url in &cfg.heartbeat_urls {
            shardbot_bus::validate_url(url).map_err(shardbot_bus::BusError::Endpoint)?;
        }
        let heartbeats = Subscriber::dial::<&str>(&[], &cfg.bus)?;
        heartbeats.subscribe("hb.")?;
        Ok(Collector {
            cfg,
            seen: SeenMap::default(),
            journal: None,
            drift: None,
            logs: None,
            instruments: None,
            watch: crate::notify::Watch::default(),
            notes: std::collections::VecDeque::new(),
        }
        .listening(heartbeats))
    }

    fn listening(self, sub: Subscriber) -> Collector {
        let seen = self.seen.clone();
        let urls = self.cfg.heartbeat_urls.clone();
        let bus = self.cfg.bus.clone();
        let spawned = std::thread::Builder::new()
            .name("heartbeats".into())
            .spawn(move || listen(sub, urls, bus, seen));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the heartbeat thread: the health view stays empty");
        }
        self
    }

    /// Builds a view every `refresh` while a page is open (a receiver beyond the web
    /// server's own), and otherwise once per request that asks (`demand`), until the web
    /// server is gone.
    pub fn run(
        mut self,
        tx: tokio::sync::watch::Sender<Arc<Published>>,
        demand: std::sync::mpsc::Receiver<()>,
    ) {
        // With a webhook the views are worked out whether or not a page is open: its
        // notifications must not wait for one.
        let notifying = self.cfg.alerts.is_on();
        let watched =
            |tx: &tokio::sync::watch::Sender<Arc<Published>>| notifying || tx.receiver_count() > 1;
        loop {
            if !watched(&tx) {
                // Nobody is looking: wait for a page or a request (a page that opens asks).
                if demand.recv().is_err() {
                    return;
                }
            }
            let started = Instant::now();
            let published = self.collect();
            if tx.send(Arc::new(published)).is_err() {
                return;
            }
            // Asked while gathering: this view answers it.
            while demand.try_recv().is_ok() {}
            // While watched, a fixed rate: the next round starts one refresh after this one.
            if watched(&tx)
                && let Some(left) = self.cfg.refresh.checked_sub(started.elapsed())
            {
                std::thread::sleep(left);
            }
        }
    }
}

/// Records a heartbeat; a new pid or start time of a known process is a restart.
fn heard(seen: &mut BTreeMap<(String, String), Seen>, event: Event) {
    let Event::Heartbeat(h) = event else { return };
    {
        let key = (h.service.clone(), h.instance.clone());
        match seen.get_mut(&key) {
            Some(s) => {
                if s.last.pid != h.pid || s.last.started_ms != h.started_ms {
                    s.restarts += 1;
                }
                s.last = h;
            }
            None => {
                seen.insert(
                    key,
                    Seen {
                        last: h,
                        restarts: 0,
                    },
                );
            }
        }
    }
}

impl Collector {
    fn ask(&self, req: RiskRequest, problems: &mut Vec<String>) -> Option<RiskReply> {
        match self
            .cfg
            .risk
            .request_within::<_, RiskReply>(&req, Duration::from_secs(2))
        {
            Ok(RiskReply::Error(e)) => {
                problems.push(format!("risk manager: {}", e.message));
                None
            }
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(format!("risk manager not answering: {e}"));
                None
            }
        }
    }

    fn collect(&mut self) -> Published {
        let mut problems = Vec::new();
        let now = now_ms();
        let risk = match self.ask(RiskRequest::Status, &mut problems) {
            Some(RiskReply::Status(s)) => Some(s),
            _ => None,
        };
        // One unanswered request is enough to know the others would wait too.
        let up = risk.is_some();
        let positions = match up
            .then(|| self.ask(RiskRequest::Positions, &mut problems))
            .flatten()
        {
            Some(RiskReply::Positions(p)) => p.positions,
            _ => Vec::new(),
        };
        let balance = match up
            .then(|| self.ask(RiskRequest::Balance, &mut problems))
            .flatten()
        {
            Some(RiskReply::Balance(b)) => Some(b),
            _ => None,
        };
        let settings = match up
            .then(|| self.ask(RiskRequest::TradingSettings, &mut problems))
            .flatten()
        {
            Some(RiskReply::TradingSettings { json }) => serde_json::from_str(&json).ok(),
            _ => None,
        };
        let (strategies, optimizations) = self.strategies(&mut problems);
        let (trades, counts) = self.journal_read(&mut problems);
        let mut activity = match self.journal.as_ref().map(|j| Activity::read(j, &counts)) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                problems.push(format!("journal activity: {e}"));
                Activity::default()
            }
            None => Activity::default(),
        };
        activity.logs = match &self.logs {
            Some((at, tails)) if at.elapsed() < LOGS_EVERY => tails.clone(),
            _ => {
                let tails = log_tails(&self.cfg.log_dirs);
                self.logs = Some((Instant::now(), tails.clone()));
                tails
            }
        };
        activity.refusal_spike = crate::spikes::refusal_spike(&activity.refusals_by_close);
        activity.recent_errors = crate::spikes::recent_errors(&activity.logs, now);
        let closed: Vec<TradeResult> = trades.iter().filter_map(TradeView::result).collect();
        let verified_trades = closed.iter().filter(|t| t.verified).count();
        let starting = settings
            .as_ref()
            .and_then(|s: &serde_json::Value| s.get("simulated_balance"))
            .and_then(|v| match v {
                serde_json::Value::String(s) => s.parse::<Decimal>().ok(),
                serde_json::Value::Number(n) => n.to_string().parse().ok(),
                _ => None,
            });
        // Measured from the simulated balance in force (the journal records each one the
        // risk manager set), on the trades traded on it; the settings' balance until the
        // journal has one.
        let balances = self
            .journal
            .as_ref()
            .and_then(|j| j.simulated_balances().ok())
            .unwrap_or_default();
        let mut performance = match shardbot_journal::periods(&balances, &closed).pop() {
            Some(p) => Some(performance(&p.trades, p.balance.simulated_balance)),
            None => starting.map(|start| performance(&closed, start)),
        };
        // The equity marked to market, as the risk manager sampled it since the balance in
        // force was set.
        if let (Some(p), Some(j)) = (performance.as_mut(), self.journal.as_ref()) {
            let from = balances.last().map_or(i64::MIN, |b| b.set_at_ms);
            match j.equity_since(from, EQUITY_POINTS) {
                Ok(samples) => {
                    p.marked = samples
                        .iter()
                        .map(|s| (s.at_ms, s.equity.to_f64().unwrap_or(f64::NAN)))
                        .collect();
                    p.marked_drawdown = drawdown_of(&p.marked);
                }
                Err(e) => problems.push(format!("journal equity samples: {e}")),
            }
        }
        let drift = self.drift(now, settings.as_ref(), &mut problems);
        let mut rows: Vec<TradeRow> = trades.iter().map(TradeRow::of).collect();
        rows.sort_by(|a, b| {
            let ka = a.exit_time_ms.unwrap_or(i64::MAX).max(a.entry_time_ms);
            let kb = b.exit_time_ms.unwrap_or(i64::MAX).max(b.entry_time_ms);
            kb.cmp(&ka)
        });
        rows.truncate(self.cfg.trades_shown);
        let precision = self.precision(
            positions
                .iter()
                .map(|p| p.symbol.as_str())
                .chain(rows.iter().map(|t| t.symbol.as_str()))
                .chain(activity.orders.iter().map(|o| o.symbol.as_str()))
                .chain(activity.fills.iter().map(|f| f.symbol.as_str())),
            &mut problems,
        );
        let mut view = View {
            generated_ms: now,
            account: self.cfg.account.clone(),
            accounts: self.cfg.accounts.clone(),
            unrealised_pnl: positions.iter().map(|p| p.unrealised_pnl).sum(),
            risk,
            balance,
            positions,
            settings,
            strategies,
            optimizations,
            backtests: backtest_runs(&self.cfg.backtests),
            trades: rows,
            closed_trades: closed.len(),
            verified_trades,
            performance,
            drift,
            health: self.health(now),
            activity,
            precision,
            notifications: Vec::new(),
            problems,
        };
        for note in self.watch.step(&view) {
            tracing::info!(kind = note.kind, text = note.text, "notification");
            {
                let _runtime = self.cfg.runtime.enter();
                self.cfg
                    .alerts
                    .send(note.kind, &note.text, serde_json::json!({}));
            }
            self.notes.push_front(note);
            self.notes.truncate(NOTES_KEPT);
        }
        view.notifications = self.notes.iter().cloned().collect();
        let json = serde_json::to_string(&view).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode the dashboard view");
            "null".into()
        });
        Published {
            json,
            view: Some(view),
            counts,
            built: Some(Instant::now()),
        }
    }

    /// The exchange's instrument filters, read at most once per [`INSTRUMENTS_EVERY`] (and
    /// again 5 s after a failed read).
    fn instruments(&mut self) -> Result<&Filters, &str> {
        let stale = match &self.instruments {
            None => true,
            Some((at, Ok(_))) => at.elapsed() >= INSTRUMENTS_EVERY,
            // Soon after a failure: at a stack's start the exchange may not be up yet.
            Some((at, Err(_))) => at.elapsed() >= Duration::from_secs(5),
        };
        if stale {
            let read = self
                .cfg
                .exchange
                .read_instrument_filters()
                .map_err(|e| format!("reading the instruments from the exchange: {e}"));
            if let Err(e) = &read {
                tracing::warn!(error = %e, "cannot read the instruments");
            }
            self.instruments = Some((Instant::now(), read));
        }
        match self.instruments.as_ref().map(|(_, r)| r) {
            Some(Ok(f)) => Ok(f),
            Some(Err(e)) => Err(e),
            None => Err("not read yet"),
        }
    }

    /// The precision of `symbols`, from [`Self::instruments`].
    fn precision<'a>(
        &mut self,
        symbols: impl Iterator<Item = &'a str>,
        problems: &mut Vec<String>,
    ) -> BTreeMap<String, [u32; 2]> {
        match self.instruments() {
            Ok(all) => symbols
                .filter_map(|s| all.get(s).map(|i| (s.to_owned(), precision_of(i))))
                .collect(),
            Err(e) => {
                problems.push(format!(
                    "instruments (prices shown at 6 decimals until read): {e}"
                ));
                BTreeMap::new()
            }
        }
    }

    /// The paper-against-backtest comparison, worked out again once the last is
    /// `drift.every` old (it backtests the window with the cached instrument filters).
    fn drift(
        &mut self,
        now: TimestampMs,
        settings: Option<&serde_json::Value>,
        problems: &mut Vec<String>,
    ) -> Option<crate::drift::DriftView> {
        let cfg = self.cfg.drift.as_ref()?;
        let stale = self
            .drift
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= cfg.every);
        if stale {
            // A copy: the cache is borrowed from `self`, like the journal below.
            let instruments = self.instruments().cloned().map_err(str::to_owned);
            let cfg = self.cfg.drift.as_ref()?;
            let result = match (&self.journal, instruments) {
                (Some(j), Ok(instruments)) => {
                    crate::drift::work_out(cfg, &self.cfg.strategy, settings, j, &instruments, now)
                }
                (None, _) => Err("no journal yet".to_owned()),
                (_, Err(e)) => Err(e),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "the paper-against-backtest comparison failed");
            }
            self.drift = Some((Instant::now(), result));
        }
        match self.drift.as_ref().map(|(_, r)| r) {
            Some(Ok(v)) => Some(v.clone()),
            Some(Err(e)) => {
                problems.push(format!("paper against backtest: {e}"));
                None
            }
            None => None,
        }
    }

    fn journal_read(&mut self, problems: &mut Vec<String>) -> (Vec<TradeView>, JournalCounts) {
        if self.journal.is_none() {
            if !self.cfg.journal_file.exists() {
                problems.push(format!(
                    "no journal at {} yet (the order router creates it)",
                    self.cfg.journal_file.display()
                ));
                return (Vec::new(), JournalCounts::default());
            }
            match Journal::open(&self.cfg.journal_file) {
                Ok(j) => self.journal = Some(j),
                Err(e) => {
                    problems.push(format!("journal: {e}"));
                    return (Vec::new(), JournalCounts::default());
                }
            }
        }
        let Some(j) = self.journal.as_ref() else {
            return (Vec::new(), JournalCounts::default());
        };
        let r = j.trades().and_then(|t| Ok((t, j.counts()?)));
        match r {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("journal: {e}"));
                self.journal = None;
                (Vec::new(), JournalCounts::default())
            }
        }
    }

    fn strategies(&self, problems: &mut Vec<String>) -> (Vec<StrategyView>, serde_json::Value) {
        let file = match OptimizedFile::load(&self.cfg.strategy.parameters_file) {
            Ok(f) => f,
            Err(e) => {
                problems.push(e.to_string());
                OptimizedFile::default()
            }
        };
        let views = self
            .cfg
            .strategy
            .enabled
            .iter()
            .map(|name| {
                let (_, status) = file.params_for(name, "");
                let label = status.to_string();
                match status {
                    ParamStatus::Optimized { at, objective, .. } => StrategyView {
                        name: name.clone(),
                        optimized: true,
                        label,
                        optimized_at: Some(at),
                        objective: Some(objective),
                    },
                    ParamStatus::Defaults => StrategyView {
                        name: name.clone(),
                        optimized: false,
                        label,
                        optimized_at: None,
                        objective: None,
                    },
                }
            })
            .collect();
        let records = serde_json::to_value(&file).unwrap_or(serde_json::Value::Null);
        (views, records)
    }

    fn health(&self, now: TimestampMs) -> Vec<ProcessView> {
        let silent_after = (self.cfg.heartbeat_interval_ms as i64).saturating_mul(3);
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.values()
            .map(|s| {
                let h = &s.last;
                let age = now.saturating_sub(h.now_ms).max(0);
                let (state, detail) = if age > silent_after {
                    (
                        "silent".to_owned(),
                        format!("no heartbeat for {} s", age / 1000),
                    )
                } else {
                    let (state, detail) = h.shown_state();
                    (state.to_owned(), detail)
                };
                ProcessView {
                    service: h.service.clone(),
                    instance: h.instance.clone(),
                    state,
                    detail,
                    pid: h.pid,
                    version: h.version.clone(),
                    heartbeat_age_ms: age,
                    uptime_ms: h.now_ms.saturating_sub(h.started_ms).max(0),
                    restarts: s.restarts,
                    metrics: h.metrics.clone(),
                }
            })
            .collect()
    }
}

/// The report, equity and drawdown curves, best and most active symbol of `closed`.
/// Points of the marked-to-market equity curve at most.
pub const EQUITY_POINTS: usize = 500;

/// An equity curve's drawdown: each point's fall from the running peak, in % of it (≤ 0).
pub fn drawdown_of(equity: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut peak = f64::MIN;
    equity
        .iter()
        .map(|(t, e)| {
            peak = peak.max(*e);
            let dd = if peak > 0.0 {
                (e - peak) / peak * 100.0
            } else {
                0.0
            };
            (*t, dd)
        })
        .collect()
}

pub fn performance(closed: &[TradeResult], starting_balance: Decimal) -> Performance {
    let mut sorted = closed.to_vec();
    sorted.sort_by_key(|t| t.exit_time_ms);
    let report = shardbot_analytics::report(&sorted, starting_balance);
    let curve = shardbot_analytics::equity_curve(&sorted, starting_balance);
    let equity: Vec<(i64, f64)> = curve
        .iter()
        .map(|(t, e)| (*t, e.to_f64().unwrap_or(f64::NAN)))
        .collect();
    let drawdown = drawdown_of(&equity);
    let best_symbol = report
        .by_symbol
        .iter()
        .max_by(|a, b| a.1.total_pnl.cmp(&b.1.total_pnl))
        .map(|(s, _)| s.clone());
    let most_active_trades = report
        .by_symbol
        .values()
        .map(|s| s.trades)
        .max()
        .unwrap_or(0);
    let mut most_active: Vec<String> = report
        .by_symbol
        .iter()
        .filter(|(_, s)| s.trades == most_active_trades && most_active_trades > 0)
        .map(|(sym, _)| sym.clone())
        .collect();
    most_active.sort();
    let mut daily = shardbot_analytics::daily(&sorted, starting_balance);
    daily.reverse();
    daily.truncate(60);
    Performance {
        daily,
        report,
        best_symbol,
        most_active,
        most_active_trades,
        equity,
        drawdown,
        marked: Vec::new(),
        marked_drawdown: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;

    fn t(sym: &str, exit_h: i64, net: Decimal) -> TradeResult {
        TradeResult {
            symbol: sym.into(),
            strategy: "trend_following".into(),
            entry_time_ms: (exit_h - 1) * 3_600_000,
            exit_time_ms: exit_h * 3_600_000,
            net,
            fees: dec!(0.1),
            verified: true,
        }
    }

    #[test]
    fn curves_best_and_most_active_symbol() {
        // Out of order on purpose: the curve follows exit times.
        let trades = vec![
            t("ETHUSDT", 3, dec!(-30)),
            t("BTCUSDT", 1, dec!(50)),
            t("ETHUSDT", 2, dec!(10)),
        ];
        let p = performance(&trades, dec!(1000));
        let eq: Vec<f64> = p.equity.iter().map(|x| x.1).collect();
        assert_eq!(eq, vec![1000.0, 1050.0, 1060.0, 1030.0]);
        let dd = p.drawdown.last().unwrap().1;
        assert!((dd - (1030.0 - 1060.0) / 1060.0 * 100.0).abs() < 1e-9);
        assert!(p.drawdown.iter().all(|x| x.1 <= 0.0));
        assert_eq!(p.best_symbol.as_deref(), Some("BTCUSDT"));
        assert_eq!(p.most_active, ["ETHUSDT"]);
        // Day by day, newest first (all three closed on day 0 here).
        assert_eq!(p.daily.len(), 1);
        assert_eq!((p.daily[0].trades, p.daily[0].net), (3, dec!(30)));
        assert_eq!(p.most_active_trades, 2);
        assert_eq!(p.report.overall.total_pnl, dec!(30));
    }

    #[rstest::rstest]
    #[case("0.0000001", "1", [7, 0])]
    #[case("0.10", "0.001", [1, 3])]
    #[case("0.5", "0.01", [1, 2])]
    #[case("1", "100", [0, 0])]
    fn an_instruments_precision_is_its_tick_and_steps_decimals(
        #[case] tick: &str,
        #[case] step: &str,
        #[case] want: [u32; 2],
    ) {
        let i = shardbot_protocol::Instrument {
            symbol: shardbot_protocol::Symbol::new("1000PEPEUSDT").unwrap(),
            tick_size: tick.parse().unwrap(),
            qty_step: step.parse().unwrap(),
            min_order_qty: dec!(1),
            max_market_order_qty: dec!(1000),
            min_notional: dec!(5),
            max_leverage: dec!(10),
            funding_interval_min: 480,
        };
        assert_eq!(precision_of(&i), want);
    }

    /// Every listed instrument of a real instruments list (Bybit testnet, 214 linear
    /// perpetuals, 70 with a tick under 0.0001) gets decimals that write its tick exactly:
    /// a sub-cent coin's price is never cut (1000BTTUSDT: tick 0.0000001, 7 decimals).
    #[test]
    fn real_instruments_get_decimals_that_write_their_tick_exactly() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../common/bybit/test_data/rest/v5_market_instruments_info_linear_full_testnet_2023_result.json",
        );
        let page: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let list: Vec<shardbot_bybit::models::market::InstrumentInfo> =
            serde_json::from_value(page["list"].clone()).unwrap();
        let mut checked = 0;
        for info in &list {
            let Some(i) = info.to_instrument() else {
                continue;
            };
            let [price_dp, qty_dp] = precision_of(&i);
            for (x, dp) in [(i.tick_size, price_dp), (i.qty_step, qty_dp)] {
                let written = x.round_dp(dp);
                assert_eq!(written, x, "{}: {x} at {dp} decimals", i.symbol);
            }
            if i.symbol.as_str() == "1000BTTUSDT" {
                assert_eq!([price_dp, qty_dp], [7, 0]);
            }
            checked += 1;
        }
        assert!(checked > 200, "{checked}");
    }

    #[test]
    fn the_warnings_and_errors_of_a_logs_end_newest_last() {
        let text = "tial line WARN cut off\n\
            2026-12-05T01:00:00Z  INFO router ready\n\
            2026-12-05T01:00:01Z  WARN order_router: stale entry refused\n\
            {\"level\":\"ERROR\",\"fields\":{\"message\":\"cannot journal\"}}\n\
            2026-12-05T01:00:02Z ERROR order_router: batch failed\n";
        let got = warnings_and_errors(text, true);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("stale entry refused"));
        assert!(got[1].contains("cannot journal"));
        assert!(got[2].contains("batch failed"));
        // Not cut: the first line is whole.
        assert_eq!(warnings_and_errors(text, false).len(), 4);
        let many: String = (0..50).map(|i| format!("t WARN w{i}\n")).collect();
        let got = warnings_and_errors(&many, false);
        assert_eq!(got.len(), LOG_LINES);
        assert!(got.last().unwrap().ends_with("w49"));
    }

    /// A tie is shown as one: no symbol is picked out of symbols with as many trades.
    #[test]
    fn the_most_active_symbols_of_a_tie_are_all_named() {
        let trades = vec![
            t("SOLUSDT", 1, dec!(1)),
            t("BTCUSDT", 2, dec!(1)),
            t("ETHUSDT", 3, dec!(1)),
        ];
        let p = performance(&trades, dec!(1000));
        assert_eq!(p.most_active, ["BTCUSDT", "ETHUSDT", "SOLUSDT"]);
        assert_eq!(p.most_active_trades, 1);
        let none = performance(&[], dec!(1000));
        assert!(none.most_active.is_empty());
        assert_eq!(none.most_active_trades, 0);
    }

    #[test]
    fn backtest_runs_are_found_in_run_folders_and_folders_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("backtest-out");
        let many = dir.path().join("backtests");
        for (d, strategy) in [
            (one.clone(), "trend_following"),
            (many.join("a"), "mean_reversion"),
            (many.join("b"), "trend_following"),
        ] {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("summary.json"),
                format!(r#"{{"strategy": "{strategy}", "trades": 3}}"#),
            )
            .unwrap();
        }
        std::fs::create_dir_all(many.join("not-a-run")).unwrap();
        let runs = backtest_runs(&[one, many, dir.path().join("missing")]);
        assert_eq!(runs.len(), 3);
        let mut strategies: Vec<&str> = runs
            .iter()
            .map(|r| r.summary["strategy"].as_str().unwrap())
            .collect();
        strategies.sort_unstable();
        assert_eq!(
            strategies,
            ["mean_reversion", "trend_following", "trend_following"]
        );
    }

    #[test]
    fn heartbeat_urls_cover_every_shard_up_to_the_maximum() {
        let ep = Settings::load(None).unwrap().common().unwrap().endpoints;
        let urls = heartbeat_urls(&ep, "ipc:///m/hb-{service}-{instance}.pub", 4);
        assert_eq!(urls.len(), 2 + 4 + 1 + 2 + 3 + 4);
        // The dashboard lists itself too.
        assert!(urls.contains(&ep.heartbeat_of("dashboard", "main")));
        assert!(urls.contains(&"ipc:///m/hb-market-data-main.pub".to_owned()));
        assert!(urls.contains(&ep.heartbeat_of("strategy-worker", "3-4")));
        assert!(urls.contains(&ep.heartbeat_of("order-router", "main")));
    }
}
