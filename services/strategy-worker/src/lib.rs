//! A strategy worker (see DESIGN.md §2): owns the symbols of its shard (`--shard i/n`),
//! warms each one from the gateway's history, runs the configured strategies on every
//! closed bar in order (refilling any bar the bus dropped), and sends deterministic order
//! intents to the router. It never calls the exchange.

pub mod engine;
pub mod tally;
mod worker;

use std::time::Duration;

use actix::Actor;
use serde::Deserialize;
use shardbot_bus::{Requester, Subscriber, forward_subscription};
use shardbot_protocol::{Interval, Shard, Topic};
use shardbot_service::{ServiceContext, StartError};
use shardbot_strategy::StrategySettings;

pub use engine::{Engine, Step};
pub use worker::{Worker, WorkerConfig};

/// `[worker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub intent_attempts: u32,
    pub positions_retry_ms: u64,
    pub late_bars: u32,
    pub universe_refresh_s: u64,
}

/// Starts the worker of `shard`.
pub fn start(ctx: &ServiceContext, shard: Shard) -> Result<(), StartError> {
    let ws: WorkerSettings = ctx.settings.section("worker")?;
    let strategy: StrategySettings = ctx.settings.section("strategy")?;
    let roster = strategy.load()?;
    let interval: Interval = strategy
        .interval
        .parse()
        .map_err(|e| format!("strategy.interval: {e}"))?;
    if ws.intent_attempts == 0 || ws.positions_retry_ms == 0 || ws.universe_refresh_s == 0 {
        return Err(
            "worker.intent_attempts, worker.positions_retry_ms and worker.universe_refresh_s \
             must be greater than 0"
                .into(),
        );
    }
    let history_bars = u32::try_from(strategy.history_bars).map_err(|_| {
        format!(
            "strategy.history_bars = {} is too large",
            strategy.history_bars
        )
    })?;
    for (name, status) in roster.status() {
        tracing::info!(strategy = name, parameters = %status, "strategy");
    }
    let ep = &ctx.common.endpoints;
    let bus = &ctx.common.bus;
    let gateway = Requester::dial(&ep.market_data_rep, bus)?;
    let router = Requester::dial(&ep.order_router_rep, bus)?;
    let risk = Requester::dial(&ep.risk_manager_rep, bus)?;
    let subscriber = Subscriber::dial(&[&ep.market_data_pub, &ep.risk_manager_pub], bus)?;
    let mut slots = 0;
    for slot in shard.slots() {
        subscriber.subscribe(Topic::bar_slot_prefix(slot))?;
        slots += 1;
    }
    subscriber.subscribe(Topic::Positions.exact_prefix())?;
    tracing::info!(
        shard = %shard,
        slots,
        interval = %interval,
        bars = %ep.market_data_pub,
        history = %ep.market_data_rep,
        router = %ep.order_router_rep,
        "subscribed to the shard's slots"
    );
    let parameters = roster.in_force().to_json();
    let engine = Engine::new(shard, interval, roster, ws.late_bars);
    let cfg = WorkerConfig {
        history_bars,
        intent_attempts: ws.intent_attempts,
        positions_retry: Duration::from_millis(ws.positions_retry_ms),
        universe_refresh: Duration::from_secs(ws.universe_refresh_s),
    };
    let worker = Worker::new(
        cfg,
        engine,
        gateway,
        router,
        risk,
        ctx.heartbeat.clone(),
        parameters,
    );
    ctx.metrics.gauge("bus_lag_max_us", worker.bus_lag_gauge());
    for name in tally::CloseTally::NAMES {
        let t = worker.tally();
        ctx.metrics.gauge(name, move || {
            t.lock().unwrap_or_else(|p| p.into_inner()).gauge(name)
        });
    }
    let addr = worker.start();
    let _forwarder = forward_subscription(subscriber, addr.recipient())?;
    Ok(())
}
