//! The market-data gateway (see DESIGN.md §2): the one process that reads public market
//! data from the exchange. It discovers every trading USDT perpetual, backfills the
//! history the strategies need within its share of the IP limit, streams closed klines and
//! tickers for all of them over as few WebSocket connections as Bybit allows, and
//! publishes closed bars (in order, with refills after any loss) and coalesced tickers on
//! the bus. Workers warm up from its history replies.

pub mod convert;
mod gateway;
mod series;

use std::time::Duration;

use actix::Actor;
use serde::Deserialize;
use shardbot_bus::{Publisher, Replier};
use shardbot_bybit::ExchangeSettings;
use shardbot_history::HistoryStore;
use shardbot_protocol::{ErrorReply, GatewayReply, GatewayRequest, Interval};
use shardbot_service::{ServiceContext, StartError};
use shardbot_strategy::StrategySettings;

/// The longest a history or universe request may take the gateway (a history request
/// may read the store and the exchange); beyond it the gateway counts as stuck.
const REPLY_DEADLINE: Duration = Duration::from_secs(60);

pub use gateway::{Gateway, GatewayConfig, Query};

/// `[market_data]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketDataSettings {
    pub extra_intervals: Vec<String>,
    pub store_dir: String,
    pub ticker_publish_ms: u64,
    pub universe_refresh_s: u64,
    pub ip_requests_per_5s: u32,
    pub fill_concurrency: usize,
    pub stale_after_ms: u64,
}

fn interval(key: &str, s: &str) -> Result<Interval, StartError> {
    let i: Interval = s.parse().map_err(|e| format!("{key}: {e}"))?;
    if i.duration_ms().is_none() {
        return Err(format!("{key} = \"{s}\": monthly klines are not streamed").into());
    }
    Ok(i)
}

/// Reads and checks the configuration of the gateway.
pub fn config(
    ctx: &ServiceContext,
) -> Result<(GatewayConfig, ExchangeSettings, MarketDataSettings), StartError> {
    let md: MarketDataSettings = ctx.settings.section("market_data")?;
    let strategy: StrategySettings = ctx.settings.section("strategy")?;
    let roster = strategy.load()?;
    let mut intervals = vec![interval("strategy.interval", &strategy.interval)?];
    for s in &md.extra_intervals {
        let i = interval("market_data.extra_intervals", s)?;
        if !intervals.contains(&i) {
            intervals.push(i);
        }
    }
    for (name, v) in [
        ("market_data.universe_refresh_s", md.universe_refresh_s),
        ("market_data.stale_after_ms", md.stale_after_ms),
        ("market_data.fill_concurrency", md.fill_concurrency as u64),
    ] {
        if v == 0 {
            return Err(format!("{name} must be greater than 0").into());
        }
    }
    let mut exchange: ExchangeSettings = ctx.settings.section("exchange")?;
    exchange.ip_requests_per_5s = md.ip_requests_per_5s;
    exchange
        .validate()
        .map_err(|e| format!("market_data.ip_requests_per_5s / [exchange]: {e}"))?;
    let urls = exchange.urls()?;
    tracing::info!(
        strategies = ?roster.names(),
        history_bars = strategy.history_bars,
        "history sized for the configured strategies"
    );
    let cfg = GatewayConfig {
        intervals,
        history_bars: strategy.history_bars,
        ticker_publish: (md.ticker_publish_ms > 0)
            .then(|| Duration::from_millis(md.ticker_publish_ms)),
        universe_refresh: Duration::from_secs(md.universe_refresh_s),
        fill_concurrency: md.fill_concurrency,
        stale_after: Duration::from_millis(md.stale_after_ms),
        public_ws_url: urls.public_ws,
        ws: exchange.ws_config(),
    };
    Ok((cfg, exchange, md))
}

/// Starts the gateway actor and its REP thread.
pub fn start(ctx: &ServiceContext) -> Result<(), StartError> {
    let (cfg, exchange, md) = config(ctx)?;
    let client = exchange.client(None)?;
    let limiter = client.limiter().clone();
    ctx.metrics.gauge("ratelimit_ip_headroom", move || {
        i64::from(limiter.ip_headroom())
    });
    ctx.metrics.gauge("ws_reconnects_total", || {
        i64::try_from(shardbot_bybit::ws::ws_reconnects()).unwrap_or(i64::MAX)
    });
    let store = if md.store_dir.trim().is_empty() {
        None
    } else {
        Some(HistoryStore::open(&md.store_dir)?)
    };
    let publisher = Publisher::bind(&ctx.common.endpoints.market_data_pub, &ctx.common.bus)?;
    let replier = Replier::bind(&ctx.common.endpoints.market_data_rep, &ctx.common.bus)?;
    tracing::info!(
        publish = %ctx.common.endpoints.market_data_pub,
        reply = %ctx.common.endpoints.market_data_rep,
        store = %md.store_dir,
        "bus endpoints bound"
    );
    let addr = Gateway::new(cfg, client, publisher, store, ctx.heartbeat.clone()).start();
    let shutdown = ctx.shutdown.clone();
    std::thread::Builder::new()
        .name("gateway-rep".into())
        .spawn(move || {
            let served = replier.serve(
                |request: GatewayRequest| {
                    shutdown
                        .ask_actor("gateway", REPLY_DEADLINE, |reply| {
                            // do_send: the mailbox's capacity is for senders that can wait.
                            addr.do_send(Query { request, reply });
                            addr.connected()
                        })
                        .unwrap_or_else(|e| {
                            GatewayReply::Error(ErrorReply {
                                message: format!("the gateway cannot answer: {e}"),
                            })
                        })
                },
                |message| GatewayReply::Error(ErrorReply { message }),
            );
            if let Err(e) = served {
                shutdown.fatal(format!("history/universe replier failed: {e}"));
            }
        })?;
    Ok(())
}
