//! The risk manager (see DESIGN.md §2): the authority on positions and balance. It reads
//! the positions and the UNIFIED wallet from the exchange at start, every
//! `risk.sync_interval_ms` and after every fill the router publishes; keeps the simulated
//! balance (exchange balance − a persisted offset); approves and sizes every intent by the
//! rules of `shardbot-risk` and `trading_settings.json`; and carries the kill switch
//! (halt, reduce-only, flatten all, resume), persisted across restarts. It publishes
//! `pos`, `bal` and `risk` and answers `RiskRequest`s.

mod manager;
pub mod state;

use std::{path::PathBuf, time::Duration};

use actix::Actor;
use serde::Deserialize;
use shardbot_bus::{Inbound, Publisher, Replier, Requester, Subscriber, forward_subscription};
use shardbot_bybit::ExchangeSettings;
use shardbot_journal::{Journal, JournalSettings};
use shardbot_protocol::{ErrorReply, Event, OrderStatus, RiskReply, RiskRequest};
use shardbot_risk::TradingSettings;
use shardbot_service::{ServiceContext, StartError};

pub use manager::{Filled, ManagerConfig, Query, RiskManager, StoppedOut};
pub use state::RiskState;

/// `[risk]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSettings {
    pub account: String,
    pub trading_settings_file: PathBuf,
    pub state_file: PathBuf,
    pub sync_interval_ms: u64,
    pub ip_requests_per_5s: u32,
    pub start_halted: bool,
    pub flatten_deadline_ms: u64,
    pub equity_sample_ms: u64,
}

/// The longest any request may take the risk manager (a reversal's entry waits 3 s for its
/// exit's fill, a flatten's answer one router round trip); beyond it it counts as stuck.
const REPLY_DEADLINE: Duration = Duration::from_secs(30);

pub fn start(ctx: &ServiceContext) -> Result<(), StartError> {
    let rs: RiskSettings = ctx.settings.section("risk")?;
    // Real money only when the configuration names the live account to trade: checked
    // before anything else is read.
    ctx.settings
        .section::<ExchangeSettings>("exchange")?
        .check_live_confirmed()?;
    if rs.sync_interval_ms == 0 {
        return Err("risk.sync_interval_ms must be greater than 0".into());
    }
    if !(1_000..=3_600_000).contains(&rs.flatten_deadline_ms) {
        return Err(format!(
            "risk.flatten_deadline_ms = {}: between 1000 (1 s) and 3600000 (an hour)",
            rs.flatten_deadline_ms
        )
        .into());
    }
    if !(1_000..=86_400_000).contains(&rs.equity_sample_ms) {
        return Err(format!(
            "risk.equity_sample_ms = {}: between 1000 (1 s) and 86400000 (a day)",
            rs.equity_sample_ms
        )
        .into());
    }
    let settings = TradingSettings::load(&rs.trading_settings_file)?;
    let state = RiskState::load(&rs.state_file, &rs.account)?;
    // The simulated balances go into the account stack's journal, where the report, the
    // CSV and the dashboard read the base of every balance and percentage they show.
    let js: JournalSettings = ctx.settings.section("journal")?;
    let journal = Journal::open(&js.file)?;
    if let Some(s) = &state {
        journal.record_simulated_balance(&s.simulated_balance())?;
    }
    let mut exchange: ExchangeSettings = ctx.settings.section("exchange")?;
    exchange.ip_requests_per_5s = rs.ip_requests_per_5s;
    let sim_account = ctx
        .settings
        .sim_account(&exchange.account)
        .map(|(_, k, s)| (k, s));
    let client = exchange
        .client(Some(exchange.credentials(sim_account)?))
        .map_err(|e| format!("risk.ip_requests_per_5s / [exchange]: {e}"))?;
    let limiter = client.limiter().clone();
    ctx.metrics.gauge("ratelimit_ip_headroom", move || {
        i64::from(limiter.ip_headroom())
    });
    let ep = &ctx.common.endpoints;
    let publisher = Publisher::bind(&ep.risk_manager_pub, &ctx.common.bus)?;
    let replier = Replier::bind(&ep.risk_manager_rep, &ctx.common.bus)?;
    let router = Requester::dial(&ep.order_router_rep, &ctx.common.bus)?;
    let fills = Subscriber::dial(&[&ep.order_router_pub], &ctx.common.bus)?;
    fills.subscribe("fill.")?;
    fills.subscribe("order.")?;
    tracing::info!(
        account = rs.account,
        simulated_balance = %settings.simulated_balance,
        offset = ?state.as_ref().map(|s| s.offset),
        mode = ?state.as_ref().map(|s| s.mode),
        settings = %rs.trading_settings_file.display(),
        "risk manager starting"
    );
    let addr = RiskManager::new(
        ManagerConfig {
            account: rs.account,
            state_file: rs.state_file,
            settings_file: rs.trading_settings_file.clone(),
            start_halted: rs.start_halted,
            sync_every: Duration::from_millis(rs.sync_interval_ms),
            flatten_deadline_ms: i64::try_from(rs.flatten_deadline_ms).unwrap_or(60_000),
            equity_sample_ms: i64::try_from(rs.equity_sample_ms).unwrap_or(60_000),
        },
        settings,
        client,
        publisher,
        router,
        state,
        journal,
    )
    .start();
    // Every fill changes positions and balance: read them again.
    let resync = addr.clone();
    let fills_to = actix::Actor::start(FillWatch(resync));
    let _ = forward_subscription(fills, fills_to.recipient())?;
    let shutdown = ctx.shutdown.clone();
    std::thread::Builder::new()
        .name("risk-rep".into())
        .spawn(move || {
            let served = replier.serve(
                |request: RiskRequest| {
                    shutdown
                        .ask_actor("risk manager", REPLY_DEADLINE, |reply| {
                            // do_send: the mailbox's capacity is for senders that can wait.
                            addr.do_send(Query { request, reply });
                            addr.connected()
                        })
                        .unwrap_or_else(|e| {
                            RiskReply::Error(ErrorReply {
                                message: format!("the risk manager cannot answer: {e}"),
                            })
                        })
                },
                |message| RiskReply::Error(ErrorReply { message }),
            );
            if let Err(e) = served {
                shutdown.fatal(format!("risk replier failed: {e}"));
            }
        })?;
    Ok(())
}

/// Turns fill frames into [`Filled`]s (booked and a sync) and stop-outs into [`StoppedOut`]s.
struct FillWatch(actix::Addr<RiskManager>);

impl std::fmt::Debug for FillWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FillWatch")
    }
}

impl actix::Actor for FillWatch {
    type Context = actix::Context<Self>;
}

impl actix::Handler<Inbound> for FillWatch {
    type Result = ();

    fn handle(&mut self, msg: Inbound, _ctx: &mut actix::Context<Self>) {
        match msg.0.event {
            Event::Fill(f) => self.0.do_send(Filled(f)),
            // A position's stop-loss closed it: the symbol's cooldown starts.
            Event::Order(o)
                if o.stop_order_type.as_deref() == Some("StopLoss")
                    && o.status == OrderStatus::Filled =>
            {
                self.0.do_send(StoppedOut(o.symbol));
            }
            _ => {}
        }
    }
}
