//! The dashboard of one account stack (see `docs/dashboard.md`).
//!
//! It holds no exchange keys and places nothing itself: it reads the stack's journal (the
//! trades and their verified marks), asks the risk manager over the bus for positions,
//! balance, limits and trading settings, listens to every process's heartbeat, and sends
//! the risk manager the commands a user gives (start = resume, stop = halt, kill switch =
//! flatten everything, new trading settings). A [`collect::Collector`] thread builds one
//! [`collect::View`] per `dashboard.refresh_ms` while a page is open, and on request
//! otherwise; the web server serves it as JSON, pushes
//! it to every open page as server-sent events, and renders it as Prometheus metrics.
//!
//! Access: the server binds 127.0.0.1 by default; every page and API needs the token of
//! `dashboard.token_file` (a session cookie after logging in with it, or an
//! `Authorization: Bearer` header for scripts and Prometheus).

pub mod collect;
pub mod drift;
pub mod metrics;
pub mod notify;
pub mod spikes;
pub mod token;
pub mod web;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;
use shardbot_bus::Requester;
use shardbot_bybit::ExchangeSettings;
use shardbot_journal::JournalSettings;
use shardbot_service::StartError;
use shardbot_strategy::StrategySettings;

/// `[dashboard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    pub bind: String,
    pub token_file: PathBuf,
    pub refresh_ms: u64,
    pub max_workers: u32,
    pub market_heartbeat: String,
    /// The market group's log folder ("" = none), tailed beside this stack's `log.dir`.
    pub market_log_dir: String,
    pub trades_shown: usize,
    pub backtests: Vec<PathBuf>,
    /// The Performance page's paper-against-backtest section covers this many days back
    /// (0: off).
    pub drift_days: u32,
    /// How often it is worked out again, in seconds.
    pub drift_every_s: u64,
    /// The backtest's fills this many ticks through the price.
    pub drift_slippage_ticks: u32,
}

impl DashboardSettings {
    fn validate(&self) -> Result<(), String> {
        if self.refresh_ms < 100 {
            return Err("dashboard.refresh_ms must be at least 100".into());
        }
        if self.max_workers == 0 || self.max_workers > 64 {
            return Err("dashboard.max_workers must be in 1..=64".into());
        }
        if self.trades_shown == 0 {
            return Err("dashboard.trades_shown must be at least 1".into());
        }
        if self.drift_days > 0 && self.drift_every_s < 10 {
            return Err("dashboard.drift_every_s must be at least 10".into());
        }
        Ok(())
    }
}

pub fn start(ctx: &shardbot_service::ServiceContext) -> Result<(), StartError> {
    let ds: DashboardSettings = ctx.settings.section("dashboard")?;
    ds.validate()?;
    let journal: JournalSettings = ctx.settings.section("journal")?;
    let exchange: ExchangeSettings = ctx.settings.section("exchange")?;
    let strategy: StrategySettings = ctx.settings.section("strategy")?;
    let store_dir = ctx
        .settings
        .section::<serde_json::Value>("market_data")?
        .get("store_dir")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let risk_account: String = ctx
        .settings
        .section::<serde_json::Value>("risk")?
        .get("account")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let token = token::load_or_create(&ds.token_file)?;
    let journal_file = journal.file.clone();
    let ep = &ctx.common.endpoints;
    let risk = Arc::new(Requester::dial(&ep.risk_manager_rep, &ctx.common.bus)?);
    let gateway = Arc::new(Requester::dial(&ep.market_data_rep, &ctx.common.bus)?);
    let interval: shardbot_protocol::Interval = strategy
        .interval
        .parse()
        .map_err(|e| format!("strategy.interval = {:?}: {e}", strategy.interval))?;
    let account = collect::AccountView::of(&exchange, &risk_account);
    let accounts = collect::account_choices(&ctx.settings, &exchange, &account);
    let (view_tx, view_rx) = tokio::sync::watch::channel(Arc::new(collect::Published::empty()));
    let (demand, demand_rx) = collect::Demand::channel();
    let collector = collect::Collector::new(collect::CollectorConfig {
        journal_file: journal_file.clone(),
        strategy,
        account,
        accounts,
        refresh: Duration::from_millis(ds.refresh_ms),
        heartbeat_interval_ms: ctx.common.heartbeat.interval_ms,
        trades_shown: ds.trades_shown,
        backtests: ds.backtests.clone(),
        heartbeat_urls: collect::heartbeat_urls(
            &ctx.common.endpoints,
            &ds.market_heartbeat,
            ds.max_workers,
        ),
        bus: ctx.common.bus.clone(),
        risk: risk.clone(),
        drift: (ds.drift_days > 0 && !store_dir.is_empty()).then(|| drift::DriftConfig {
            days: ds.drift_days,
            every: Duration::from_secs(ds.drift_every_s),
            slippage_ticks: ds.drift_slippage_ticks,
            store_dir: PathBuf::from(&store_dir),
            exchange: exchange.clone(),
        }),
        exchange: exchange.clone(),
        alerts: ctx.alerts.clone(),
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|e| format!("the dashboard starts outside its async runtime: {e}"))?,
        log_dirs: std::iter::once(ctx.common.log.dir.clone())
            .chain((!ds.market_log_dir.is_empty()).then(|| PathBuf::from(&ds.market_log_dir)))
            .collect(),
    })?;
    let shutdown = ctx.shutdown.clone();
    std::thread::Builder::new()
        .name("collector".into())
        .spawn(move || collector.run(view_tx, demand_rx))?;
    let server = web::server(
        &ds.bind,
        web::AppState::new(
            token,
            view_rx,
            demand,
            Duration::from_millis(ds.refresh_ms),
            web::Peers {
                risk,
                gateway,
                interval,
            },
            journal_file,
            ctx.alerts.clone(),
        ),
    )
    .map_err(|e| format!("dashboard.bind = {:?}: cannot listen: {e}", ds.bind))?;
    tracing::info!(
        url = %format!("http://{}/", ds.bind),
        token_file = %ds.token_file.display(),
        "dashboard listening"
    );
    actix_web::rt::spawn(async move {
        if let Err(e) = server.await {
            shutdown.fatal(format!("the web server stopped: {e}"));
        }
    });
    Ok(())
}
