//! The gateway actor: owns the universe, every symbol's bar sequencer and ring, the
//! publisher and the WebSocket stream. REST fills run as tasks and report back by message,
//! so the actor never waits on the network.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message};
use shardbot_bus::Publisher;
use shardbot_bus::ReplyTo;
use shardbot_bybit::{
    models::market::InstrumentInfo,
    rest::BybitClient,
    ws::{PublicEvent, WsConfig, WsHandle, kline_topic, spawn_public, ticker_topic},
};
use shardbot_history::HistoryStore;
use shardbot_protocol::{
    Bar, ErrorReply, GatewayReply, GatewayRequest, HistoryRequest, HistoryResponse, Instrument,
    Interval, Offer, ServiceState, Slot, Symbol, Ticker, Topic, UniverseResponse, now_ms,
};
use shardbot_service::{HeartbeatActor, SetState};
use tokio::sync::Semaphore;

use crate::{
    convert,
    series::{AfterFetch, Series, UniverseChange, fetch_window, step_ms},
};

/// How the gateway runs (from `[market_data]`, `[strategy]` and `[exchange]`).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Streamed intervals; the first is the strategies'.
    pub intervals: Vec<Interval>,
    /// Bars backfilled and kept per symbol and interval.
    pub history_bars: usize,
    /// How often each symbol's latest ticker is published; `None`: tickers are neither
    /// subscribed nor published (no service of the stack reads them).
    pub ticker_publish: Option<Duration>,
    pub universe_refresh: Duration,
    pub fill_concurrency: usize,
    /// Real time after a bar's expected close before it is refilled over REST.
    pub stale_after: Duration,
    pub public_ws_url: String,
    pub ws: WsConfig,
}

const RETRY: Duration = Duration::from_secs(2);
const SWEEP: Duration = Duration::from_millis(500);
const CLOCK_RESYNC: Duration = Duration::from_secs(300);
const STATS_EVERY: Duration = Duration::from_secs(60);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The least time without any kline after which the stream is resubscribed.
const KLINE_SILENCE_MIN: Duration = Duration::from_secs(10);
/// Ticker flushes are spread over this many phases of `ticker_publish`.
const TICKER_PHASES: u16 = 10;

type Key = (Symbol, Interval);

#[derive(Debug, Default)]
struct Stats {
    bars_published: u64,
    bars_refilled: u64,
    bars_skipped: u64,
    tickers_published: u64,
    fills: u64,
    fill_errors: u64,
    ws_disconnects: u64,
}

#[derive(Debug)]
struct Backfill {
    pending: usize,
    total: usize,
    started: Instant,
    last_log: Instant,
}

#[derive(Debug)]
pub struct Gateway {
    cfg: GatewayConfig,
    client: BybitClient,
    publisher: Publisher,
    store: Option<HistoryStore>,
    heartbeat: Addr<HeartbeatActor>,
    universe: BTreeMap<Symbol, Instrument>,
    universe_as_of: i64,
    series: HashMap<Key, Series>,
    tickers: HashMap<Symbol, Ticker>,
    dirty: HashSet<Symbol>,
    ticker_phase: u16,
    ws: Option<WsHandle>,
    /// When the stream last carried a kline (open or closed).
    last_kline: Instant,
    ws_gen: u64,
    fill_slots: Arc<Semaphore>,
    backfill: Option<Backfill>,
    stats: Stats,
}

impl Gateway {
    pub fn new(
        cfg: GatewayConfig,
        client: BybitClient,
        publisher: Publisher,
        store: Option<HistoryStore>,
        heartbeat: Addr<HeartbeatActor>,
    ) -> Gateway {
        let slots = Arc::new(Semaphore::new(cfg.fill_concurrency.max(1)));
        Gateway {
            cfg,
            client,
            publisher,
            store,
            heartbeat,
            universe: BTreeMap::new(),
            universe_as_of: 0,
            series: HashMap::new(),
            tickers: HashMap::new(),
            dirty: HashSet::new(),
            ticker_phase: 0,
            ws: None,
            last_kline: Instant::now(),
            ws_gen: 0,
            fill_slots: slots,
            backfill: None,
            stats: Stats::default(),
        }
    }

    fn state(&self, state: ServiceState) {
        self.heartbeat.do_send(SetState(state));
    }

    /// Reads the instrument list (and the exchange's clock) and reports back.
    fn discover(&self, ctx: &mut Context<Self>) {
        let client = self.client.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            let result = async {
                client.sync_time().await?;
                client.usdt_perpetuals().await
            }
            .await
            .map_err(|e| e.to_string());
            addr.do_send(UniverseRead(result));
        });
    }

    fn on_universe(&mut self, list: Vec<InstrumentInfo>, ctx: &mut Context<Self>) {
        let fresh: BTreeMap<Symbol, Instrument> = list
            .iter()
            .filter_map(InstrumentInfo::to_instrument)
            .map(|i| (i.symbol.clone(), i))
            .collect();
        let change = UniverseChange::between(&self.universe, &fresh);
        let first = self.universe.is_empty();
        self.universe = fresh;
        self.universe_as_of = now_ms();
        if first {
            tracing::info!(
                symbols = self.universe.len(),
                intervals = ?self.cfg.intervals.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
                history_bars = self.cfg.history_bars,
                "universe discovered; backfilling"
            );
        }
        for s in &change.removed {
            tracing::info!(symbol = %s, "delisted: no longer streamed");
            for i in &self.cfg.intervals {
                self.series.remove(&(s.clone(), *i));
            }
            self.tickers.remove(s);
            self.dirty.remove(s);
        }
        if !change.added.is_empty() {
            if !first {
                for s in &change.added {
                    tracing::info!(symbol = %s, "new listing: backfilling and streaming it");
                }
            }
            let now = Instant::now();
            let bf = self.backfill.get_or_insert(Backfill {
                pending: 0,
                total: 0,
                started: now,
                last_log: now,
            });
            bf.pending += change.added.len() * self.cfg.intervals.len();
            bf.total += change.added.len() * self.cfg.intervals.len();
            let reason = format!("backfilling {} series", bf.pending);
            self.state(ServiceState::Degraded { reason });
            for s in &change.added {
                for &i in &self.cfg.intervals.clone() {
                    self.series.insert((s.clone(), i), Series::backfilling(i));
                    self.spawn_fill(s.clone(), i, None, None, ctx);
                }
            }
        }
        if !change.is_empty() {
            self.restart_ws(ctx);
        }
    }

    /// (Re)subscribes every symbol over as few connections as the limits allow. Bars that
    /// close while the old stream is replaced are refilled by the catch-up on connect.
    fn restart_ws(&mut self, ctx: &mut Context<Self>) {
        let tickers = self.cfg.ticker_publish.is_some();
        let topics: Vec<String> = self
            .universe
            .keys()
            .flat_map(|s| {
                self.cfg
                    .intervals
                    .iter()
                    .map(|i| kline_topic(*i, s.as_str()))
                    .chain(tickers.then(|| ticker_topic(s.as_str())))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.ws_gen += 1;
        self.last_kline = Instant::now();
        let generation = self.ws_gen;
        let n_topics = topics.len();
        let (handle, mut rx) = spawn_public(&self.cfg.public_ws_url, topics, self.cfg.ws.clone());
        tracing::info!(
            connections = handle.connections(),
            topics = n_topics,
            url = %self.cfg.public_ws_url,
            "subscribing the public stream"
        );
        // Dropping the old handle closes its connections.
        self.ws = Some(handle);
        let addr = ctx.address();
        actix::spawn(async move {
            while let Some(event) = rx.recv().await {
                if !addr.connected() {
                    return;
                }
                addr.do_send(Ws { generation, event });
            }
        });
    }

    /// Fetches closed bars from `from` (`None`: the last `history_bars`) to the exchange's
    /// now, and at least to `until` (bars the stream has already shown to be closed,
    /// whatever our estimate of the exchange's clock says).
    fn spawn_fill(
        &mut self,
        symbol: Symbol,
        interval: Interval,
        from: Option<i64>,
        until: Option<i64>,
        ctx: &mut Context<Self>,
    ) {
        let client = self.client.clone();
        let slots = self.fill_slots.clone();
        let addr = ctx.address();
        let history = self.cfg.history_bars;
        self.stats.fills += 1;
        actix::spawn(async move {
            let result = match slots.acquire_owned().await {
                Ok(_permit) => fetch_closed(&client, &symbol, interval, from, until, history).await,
                Err(_) => Err("the gateway is stopping".to_owned()),
            };
            addr.do_send(FillDone {
                symbol,
                interval,
                result,
            });
        });
    }

    fn on_fill(&mut self, msg: FillDone, ctx: &mut Context<Self>) {
        let key = (msg.symbol, msg.interval);
        let Some(series) = self.series.get_mut(&key) else {
            return; // delisted meanwhile
        };
        let error = msg.result.as_ref().err().cloned();
        let delivery = match series.fetched(msg.result) {
            AfterFetch::RetryLater => {
                self.stats.fill_errors += 1;
                tracing::warn!(symbol = %key.0, interval = %key.1, error = error.unwrap_or_default(), "REST kline fill failed; retrying");
                ctx.run_later(RETRY, move |act, ctx| {
                    if let Some(from) = act.series.get_mut(&key).and_then(Series::begin_fill) {
                        act.spawn_fill(key.0.clone(), key.1, from, None, ctx);
                    }
                });
                return;
            }
            AfterFetch::FetchAgain {
                from,
                until,
                attempt,
                missing,
            } => {
                tracing::debug!(symbol = %key.0, missing, attempt, ?until, "fill left a hole; fetching again");
                self.spawn_fill(key.0, key.1, from, until, ctx);
                return;
            }
            AfterFetch::Deliver(d) => d,
        };
        if !delivery.skipped.is_empty() {
            self.stats.bars_skipped += delivery.skipped.len() as u64;
            tracing::warn!(
                symbol = %key.0,
                interval = %key.1,
                missing = delivery.skipped.len(),
                first_missing_ms = delivery.skipped[0],
                delivered = delivery.bars.len(),
                clock_ms = self.client.clock().now_ms(),
                "the exchange has no such bars; continuing after them"
            );
        }
        if !delivery.initial {
            self.stats.bars_refilled += delivery.bars.len() as u64;
            if !delivery.bars.is_empty() {
                tracing::info!(symbol = %key.0, interval = %key.1, bars = delivery.bars.len(), "refilled missed bars over REST");
            }
        }
        self.deliver(&key, delivery.bars, delivery.publish_after);
        if delivery.initial {
            self.backfill_progress(true);
        }
    }

    fn backfill_progress(&mut self, one_done: bool) {
        let Some(bf) = self.backfill.as_mut() else {
            return;
        };
        if one_done {
            bf.pending = bf.pending.saturating_sub(1);
        }
        let done = bf.total - bf.pending;
        if bf.pending == 0 {
            tracing::info!(
                series = bf.total,
                seconds = format!("{:.1}", bf.started.elapsed().as_secs_f64()),
                "backfill complete; streaming"
            );
            self.backfill = None;
            self.state(ServiceState::Running);
        } else if bf.last_log.elapsed() >= PROGRESS_EVERY {
            bf.last_log = Instant::now();
            let secs = bf.started.elapsed().as_secs_f64();
            let rate = done as f64 / secs.max(0.001);
            tracing::info!(
                done,
                total = bf.total,
                percent = format!("{:.0}", 100.0 * done as f64 / bf.total.max(1) as f64),
                eta_s = format!("{:.0}", bf.pending as f64 / rate.max(0.001)),
                "backfill progress"
            );
        }
    }

    /// Stores, rings and (unless older than `publish_after`) publishes bars, in order.
    fn deliver(&mut self, key: &Key, bars: Vec<Bar>, publish_after: Option<i64>) {
        if bars.is_empty() {
            return;
        }
        // Whether the store holds this series up to these bars, so that the ring may
        // forget older ones: not when a write failed, nor when the store is ahead (a
        // run whose sim clock was faster wrote bars of a later time).
        let stored = match &self.store {
            Some(store) => match store.append_newest(&bars) {
                Ok((_, newest)) => newest == bars.last().map(|b| b.open_time_ms),
                Err(e) => {
                    tracing::warn!(symbol = %key.0, error = %e, "cannot persist bars to the history store");
                    false
                }
            },
            None => false,
        };
        let now = self.client.clock().now_ms();
        let Some(series) = self.series.get_mut(key) else {
            return;
        };
        if series.stored(stored) && self.store.is_some() {
            tracing::warn!(symbol = %key.0, "the history store does not hold this series' bars: its whole history stays in memory");
        }
        for mut bar in bars {
            if publish_after.is_none_or(|t| bar.open_time_ms > t) {
                bar.published_ms = Some(now);
                bar.stamps.published_ms = Some(now_ms());
                match self.publisher.publish(&bar) {
                    Ok(_) => self.stats.bars_published += 1,
                    Err(e) => tracing::warn!(symbol = %key.0, error = %e, "cannot publish a bar"),
                }
            }
            series.ring(bar, self.cfg.history_bars);
        }
    }

    fn on_live_bar(&mut self, bar: Bar, ctx: &mut Context<Self>) {
        let key = (bar.symbol.clone(), bar.interval);
        let Some(series) = self.series.get_mut(&key) else {
            return;
        };
        match series.offer(bar) {
            Offer::Ready(bars) => self.deliver(&key, bars, None),
            Offer::Fill { from_ms, to_ms } => {
                tracing::info!(symbol = %key.0, interval = %key.1, from_ms, "closed bars missing on the stream; fetching them");
                self.spawn_fill(key.0, key.1, Some(from_ms), Some(to_ms), ctx);
            }
            Offer::Held | Offer::Duplicate => {}
        }
    }

    /// Refills every series whose next bar should have been delivered by now (after a
    /// reconnect: the bars that closed while the stream was down).
    fn catch_up(&mut self, grace_ms: i64, why: &str, ctx: &mut Context<Self>) {
        let now = self.client.clock().now_ms();
        let stale: Vec<(Key, Option<i64>)> = self
            .series
            .iter_mut()
            .filter(|(_, s)| s.is_stale(now, grace_ms))
            .filter_map(|(k, s)| s.begin_fill().map(|from| (k.clone(), from)))
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                series = stale.len(),
                reason = why,
                "fetching closed bars the stream did not deliver"
            );
        }
        for ((symbol, interval), from) in stale {
            self.spawn_fill(symbol, interval, from, None, ctx);
        }
    }

    /// Publishes one tenth of the changed tickers (by slot), so a flush never lands on
    /// subscribers as one burst of 600+ frames on top of a bar close: every subscriber
    /// receives every frame (nng filters in the subscriber) and a queue that overflows
    /// drops silently.
    fn flush_tickers(&mut self) {
        self.ticker_phase = (self.ticker_phase + 1) % TICKER_PHASES;
        let phase = self.ticker_phase;
        let due: Vec<Symbol> = self
            .dirty
            .iter()
            .filter(|s| Slot::of(s.as_str()).get() % TICKER_PHASES == phase)
            .cloned()
            .collect();
        for sym in due {
            self.dirty.remove(&sym);
            if let Some(t) = self.tickers.get(&sym) {
                match self.publisher.publish(t) {
                    Ok(_) => self.stats.tickers_published += 1,
                    Err(e) => tracing::warn!(symbol = %sym, error = %e, "cannot publish a ticker"),
                }
            }
        }
    }

    fn answer(&self, request: GatewayRequest) -> GatewayReply {
        match request {
            GatewayRequest::Universe if self.universe.is_empty() => {
                error("the universe has not been discovered yet; retry shortly")
            }
            GatewayRequest::Universe => GatewayReply::Universe(UniverseResponse {
                instruments: self.universe.values().cloned().collect(),
                as_of_ms: self.universe_as_of,
            }),
            GatewayRequest::History(req) => self.history(req),
        }
    }

    fn history(&self, req: HistoryRequest) -> GatewayReply {
        let key = (req.symbol.clone(), req.interval);
        let Some(series) = self.series.get(&key) else {
            if !self.universe.contains_key(&req.symbol) {
                return error(&format!(
                    "{} is not a listed USDT perpetual (or the universe is not discovered yet)",
                    req.symbol
                ));
            }
            return error(&format!(
                "interval {} is not streamed (streamed: {})",
                req.interval,
                self.cfg
                    .intervals
                    .iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        };
        if !series.is_ready() {
            return error(&format!(
                "warming up: {} {} is still being backfilled",
                req.symbol, req.interval
            ));
        }
        let mut older = Vec::new();
        if let (Some(store), Some(part)) =
            (&self.store, series.store_part(&req, self.cfg.history_bars))
        {
            match store.read(
                &req.symbol,
                req.interval,
                part.start_ms,
                Some(part.end_ms),
                part.limit,
            ) {
                Ok(bars) => older = bars,
                Err(e) => {
                    tracing::warn!(symbol = %req.symbol, error = %e, "cannot read the history store")
                }
            }
        }
        let bars = series.history(&req, older);
        let topic = Topic::Bar {
            symbol: req.symbol.clone(),
            interval: req.interval,
        }
        .to_string();
        GatewayReply::History(HistoryResponse {
            symbol: req.symbol,
            interval: req.interval,
            bars,
            epoch: self.publisher.epoch(),
            last_seq: self.publisher.last_seq(&topic),
        })
    }
}

fn error(message: &str) -> GatewayReply {
    GatewayReply::Error(ErrorReply {
        message: message.to_owned(),
    })
}

/// Closed bars of a series from `from` (or the last `history` bars) to the exchange's now
/// (as far as the exchange has shown them closed).
async fn fetch_closed(
    client: &BybitClient,
    symbol: &Symbol,
    interval: Interval,
    from: Option<i64>,
    until: Option<i64>,
    history: usize,
) -> Result<Vec<Bar>, String> {
    let Some((start, last_closed_open)) = fetch_window(
        client.clock().now_ms(),
        step_ms(interval),
        from,
        until,
        history,
    ) else {
        return Ok(Vec::new());
    };
    // Closed as the exchange shows it, not as our estimate of its clock says: a bar it
    // has not yet followed with another is left for the stream or the next fetch.
    let klines = client
        .closed_klines(symbol.as_str(), interval, start, last_closed_open)
        .await
        .map_err(|e| e.to_string())?;
    Ok(klines.iter().map(|k| k.to_bar(symbol, interval)).collect())
}

impl Actor for Gateway {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.discover(ctx);
        if let Some(every) = self.cfg.ticker_publish {
            ctx.run_interval(every / u32::from(TICKER_PHASES), |act, _| {
                act.flush_tickers()
            });
        }
        ctx.run_interval(self.cfg.universe_refresh, |act, ctx| act.discover(ctx));
        ctx.run_interval(SWEEP, |act, ctx| {
            let grace = act.cfg.stale_after.as_millis() as f64 * act.client.clock().rate();
            act.catch_up(grace as i64, "late bar", ctx);
            // A connection can stay alive (pongs) while its subscriptions are gone, e.g.
            // a subscribe sent into a stalled session: klines stop although nothing
            // disconnects. REST refills would hide it forever; resubscribe instead.
            let silence = (act.cfg.stale_after * 4).max(KLINE_SILENCE_MIN);
            if act.ws.is_some() && act.last_kline.elapsed() > silence {
                tracing::warn!(
                    silent_s = act.last_kline.elapsed().as_secs(),
                    "no kline on the public stream although it is connected; resubscribing"
                );
                act.stats.ws_disconnects += 1;
                act.restart_ws(ctx);
            }
        });
        ctx.run_interval(CLOCK_RESYNC, |act, _| {
            let client = act.client.clone();
            actix::spawn(async move {
                if let Err(e) = client.sync_time().await {
                    tracing::warn!(error = %e, "cannot re-sync the exchange clock");
                }
            });
        });
        ctx.run_interval(STATS_EVERY, |act, _| {
            let s = &act.stats;
            tracing::info!(
                symbols = act.universe.len(),
                bars_published = s.bars_published,
                bars_refilled = s.bars_refilled,
                bars_skipped = s.bars_skipped,
                tickers_published = s.tickers_published,
                rest_fills = s.fills,
                fill_errors = s.fill_errors,
                ws_disconnects = s.ws_disconnects,
                "gateway stats"
            );
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.publisher.close();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct UniverseRead(Result<Vec<InstrumentInfo>, String>);

impl Handler<UniverseRead> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: UniverseRead, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(list) if list.is_empty() => {
                tracing::warn!("the exchange lists no trading USDT perpetual; asking again");
                ctx.run_later(RETRY, |act, ctx| act.discover(ctx));
            }
            Ok(list) => self.on_universe(list, ctx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the instrument list");
                if self.universe.is_empty() {
                    self.state(ServiceState::Degraded {
                        reason: format!("cannot read the instrument list: {e}"),
                    });
                    ctx.run_later(RETRY, |act, ctx| act.discover(ctx));
                }
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Ws {
    generation: u64,
    event: PublicEvent,
}

impl Handler<Ws> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: Ws, ctx: &mut Context<Self>) {
        if msg.generation != self.ws_gen {
            return;
        }
        match msg.event {
            PublicEvent::Kline { symbol, kline } => {
                self.last_kline = Instant::now();
                if let Some(mut bar) = convert::ws_bar(&symbol, &kline) {
                    bar.stamps.received_ms = Some(now_ms());
                    self.on_live_bar(bar, ctx);
                }
            }
            PublicEvent::Ticker { ts, ticker } => {
                if let Some(t) = convert::ticker(ts, &ticker)
                    && self.universe.contains_key(&t.symbol)
                {
                    self.dirty.insert(t.symbol.clone());
                    self.tickers.insert(t.symbol.clone(), t);
                }
            }
            PublicEvent::Connected { conn } => {
                tracing::info!(conn, "public stream connected");
                self.catch_up(0, "reconnected", ctx);
            }
            PublicEvent::Disconnected { conn, reason, .. } => {
                self.stats.ws_disconnects += 1;
                tracing::warn!(conn, reason, "public stream disconnected; reconnecting");
            }
            PublicEvent::SubscribeFailed { conn, message } => {
                tracing::error!(conn, message, "the exchange refused a subscription");
            }
            PublicEvent::Trade(_) => {}
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct FillDone {
    symbol: Symbol,
    interval: Interval,
    result: Result<Vec<Bar>, String>,
}

impl Handler<FillDone> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: FillDone, ctx: &mut Context<Self>) {
        self.on_fill(msg, ctx);
    }
}

/// A request from the REP thread; the reply goes back on the channel.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Query {
    pub request: GatewayRequest,
    pub reply: ReplyTo<GatewayReply>,
}

impl Handler<Query> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: Query, _ctx: &mut Context<Self>) {
        let _ = msg.reply.send(self.answer(msg.request));
    }
}
