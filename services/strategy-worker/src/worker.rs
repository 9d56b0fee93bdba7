//! The worker actor: the [`Engine`] plus its I/O (bus frames in; history, positions and
//! intents over REQ/REP).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message};
use shardbot_bus::{BusError, Inbound, Requester};
use shardbot_protocol::{
    CloseProgress, Event, GapDetector, GatewayReply, GatewayRequest, HistoryRequest, OrderIntent,
    RiskReply, RiskRequest, RouterReply, RouterRequest, SeqCheck, ServiceState, Symbol,
};
use shardbot_service::{HeartbeatActor, SetState};
use tokio::sync::Semaphore;

use crate::{
    engine::{Engine, Step},
    tally::CloseTally,
};

/// The worker's I/O settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub history_bars: u32,
    pub intent_attempts: u32,
    pub positions_retry: Duration,
    pub universe_refresh: Duration,
}

const RETRY: Duration = Duration::from_secs(1);
const STATE_EVERY: Duration = Duration::from_secs(1);
const SWEEP_EVERY: Duration = Duration::from_millis(500);
const STATS_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Worker {
    cfg: WorkerConfig,
    engine: Engine,
    gateway: Requester,
    router: Requester,
    risk: Requester,
    heartbeat: Addr<HeartbeatActor>,
    positions_known: bool,
    gaps: GapDetector,
    bus_gaps: u64,
    /// The largest bus lag (publish → receive) of a bar since the heartbeat last read it, µs.
    bus_lag_max_us: Arc<std::sync::atomic::AtomicI64>,
    state: Option<ServiceState>,
    history_slots: Arc<Semaphore>,
    /// When the last bar arrived (or the worker started): a worker that hears no bar for
    /// 1.5 intervals says so in its heartbeat.
    last_bar: Instant,
    /// The newest close's signals and outcomes, for the heartbeat.
    tally: Arc<Mutex<CloseTally>>,
    /// The strategies and parameters this worker loaded (`ParametersInForce` JSON),
    /// announced to the router at the start, which journals them for `shardbot drift`.
    parameters: String,
}

fn locked(t: &Mutex<CloseTally>) -> std::sync::MutexGuard<'_, CloseTally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// The heartbeat's complaint when no bar arrived for more than 1.5 intervals since `since`
/// (the last bar, or the start): the gateway or the bus is silent, and the shard trades
/// nothing while every other sign says "running".
pub fn silence(since: Instant, now: Instant, interval_ms: Option<i64>) -> Option<String> {
    let every = Duration::from_millis(u64::try_from(interval_ms?).ok()?);
    let quiet = now.saturating_duration_since(since);
    (quiet > every * 3 / 2).then(|| {
        format!(
            "no bar for {} s (one every {} s expected): the gateway or the bus is silent",
            quiet.as_secs(),
            every.as_secs()
        )
    })
}

/// History requests a worker has in flight at once.
const HISTORY_IN_FLIGHT: usize = 8;

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        engine: Engine,
        gateway: Requester,
        router: Requester,
        risk: Requester,
        heartbeat: Addr<HeartbeatActor>,
        parameters: String,
    ) -> Worker {
        let engine_interval_ms = engine.interval().duration_ms().unwrap_or(0);
        Worker {
            cfg,
            engine,
            gateway,
            router,
            risk,
            heartbeat,
            positions_known: false,
            gaps: GapDetector::new(),
            bus_gaps: 0,
            bus_lag_max_us: Arc::default(),
            state: None,
            history_slots: Arc::new(Semaphore::new(HISTORY_IN_FLIGHT)),
            last_bar: Instant::now(),
            tally: Arc::new(Mutex::new(CloseTally::new(engine_interval_ms))),
            parameters,
        }
    }

    /// Tells the router the strategies and parameters in force (until it has them
    /// journalled: retried while it is unreachable).
    fn announce_parameters(&self, ctx: &mut Context<Self>) {
        let router = self.router.clone();
        let json = self.parameters.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            let r = router
                .request_async::<_, RouterReply>(RouterRequest::Parameters { json })
                .await;
            addr.do_send(Announced(r));
        });
    }

    /// The newest close's tally, shared with the heartbeat's gauges.
    pub fn tally(&self) -> Arc<Mutex<CloseTally>> {
        self.tally.clone()
    }

    /// The bus-lag gauge: the largest lag of a bar since the last read (which resets it).
    pub fn bus_lag_gauge(&self) -> impl Fn() -> i64 + Send + Sync + 'static {
        let lag = self.bus_lag_max_us.clone();
        move || lag.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    fn fetch_universe(&self, ctx: &mut Context<Self>) {
        let gateway = self.gateway.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            let r = gateway
                .request_async::<_, GatewayReply>(GatewayRequest::Universe)
                .await;
            addr.do_send(UniverseDone(r));
        });
    }

    fn fetch_positions(&self, ctx: &mut Context<Self>) {
        let risk = self.risk.clone();
        let addr = ctx.address();
        actix::spawn(async move {
            let r = risk
                .request_async::<_, RiskReply>(RiskRequest::Positions)
                .await;
            addr.do_send(PositionsDone(r));
        });
    }

    fn apply(&mut self, step: Step, ctx: &mut Context<Self>) {
        match step {
            Step::Nothing => {}
            Step::Intents(intents) => self.send(intents),
            Step::Fetch { symbol, from_ms } => {
                let req = GatewayRequest::History(HistoryRequest {
                    symbol: symbol.clone(),
                    interval: self.engine.interval(),
                    start_ms: from_ms,
                    end_ms: None,
                    limit: if from_ms.is_none() {
                        self.cfg.history_bars
                    } else {
                        0
                    },
                });
                let gateway = self.gateway.clone();
                let addr = ctx.address();
                let slots = self.history_slots.clone();
                actix::spawn(async move {
                    // Bounded, so a worker warming hundreds of symbols does not queue
                    // them all on the gateway's single replier at once.
                    let _permit = slots.acquire_owned().await;
                    let r = gateway.request_async::<_, GatewayReply>(req).await;
                    addr.do_send(HistoryDone { symbol, result: r });
                });
            }
        }
    }

    /// Sends one symbol's intents (what [`Engine`] gives for a symbol's bars) to the
    /// router, one after the other in the strategy's order, so a reversal's exit is
    /// judged and placed before its entry; each is retried with the same id (never
    /// doubled: the router recognises an intent it has seen). Other symbols' intents go
    /// at the same time, from their own calls.
    fn send(&self, intents: Vec<OrderIntent>) {
        for intent in &intents {
            tracing::info!(
                intent_id = %intent.intent_id,
                strategy = %intent.strategy,
                symbol = %intent.symbol,
                bar_open_ms = intent.bar_open_time_ms,
                action = intent.action.id_tag(),
                price = %intent.reference_price,
                "intent"
            );
        }
        if intents.is_empty() {
            return;
        }
        {
            let mut t = locked(&self.tally);
            for intent in &intents {
                t.signals(intent.bar_open_time_ms, 1);
            }
        }
        let router = self.router.clone();
        let attempts = self.cfg.intent_attempts.max(1);
        let tally = self.tally.clone();
        actix::spawn(async move {
            for intent in intents {
                let bar = intent.bar_open_time_ms;
                let placed = deliver(&router, intent, attempts).await;
                locked(&tally).outcome(bar, placed);
            }
        });
    }

    /// Tells the router how far this shard is through a bar close (once: a report lost
    /// costs the close's entries at most `router.close_wait_ms`, never an order).
    fn report(&self, p: CloseProgress) {
        let router = self.router.clone();
        let (bar_open_ms, undecided) = (p.bar_open_time_ms, p.undecided);
        actix::spawn(async move {
            match router
                .request_async::<_, RouterReply>(RouterRequest::CloseProgress(p))
                .await
            {
                Ok(RouterReply::Recorded { .. }) => {}
                other => {
                    let why = failure(other, |r| match r {
                        RouterReply::Error(e) => Some(e.message),
                        _ => None,
                    });
                    tracing::warn!(
                        bar_open_ms,
                        undecided,
                        error = why,
                        "cannot report the close's progress to the router"
                    );
                }
            }
        });
    }

    fn update_state(&mut self) {
        let (owned, cold) = self.engine.symbols();
        let state = if owned == 0 {
            ServiceState::Degraded {
                reason: "no symbols yet (waiting for the gateway's universe)".into(),
            }
        } else if cold > 0 {
            ServiceState::Degraded {
                reason: format!("warming {cold} of {owned} symbols"),
            }
        } else if let Some(reason) = silence(
            self.last_bar,
            Instant::now(),
            self.engine.interval().duration_ms(),
        ) {
            ServiceState::Degraded { reason }
        } else if !self.positions_known {
            ServiceState::Degraded {
                reason: "positions unknown (risk manager not answering); treating symbols as flat"
                    .into(),
            }
        } else {
            ServiceState::Running
        };
        if self.state.as_ref() != Some(&state) {
            if matches!(state, ServiceState::Running) || owned > 0 && cold == 0 {
                tracing::info!(symbols = owned, "every owned symbol is warm");
            }
            self.heartbeat.do_send(SetState(state.clone()));
            self.state = Some(state);
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.announce_parameters(ctx);
        self.fetch_universe(ctx);
        self.fetch_positions(ctx);
        ctx.run_interval(self.cfg.universe_refresh, |act, ctx| {
            act.fetch_universe(ctx)
        });
        ctx.run_interval(STATE_EVERY, |act, _| act.update_state());
        ctx.run_interval(SWEEP_EVERY, |act, ctx| {
            for step in act.engine.sweep(Instant::now()) {
                act.apply(step, ctx);
            }
        });
        ctx.run_interval(STATS_EVERY, |act, _| {
            let s = act.engine.stats();
            tracing::info!(
                symbols = act.engine.symbols().0,
                bars = s.bars,
                intents = s.intents,
                refills = s.refills,
                bus_gaps = act.bus_gaps,
                skipped_bars = s.skipped_bars,
                "worker stats"
            );
        });
    }
}

impl Handler<Inbound> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        let r = msg.0;
        match r.event {
            Event::Bar(bar) => {
                if bar.interval == self.engine.interval() {
                    locked(&self.tally).bar(bar.open_time_ms);
                }
                let lag_us = shardbot_protocol::now_ns().saturating_sub(r.sent_ns) / 1000;
                self.bus_lag_max_us.fetch_max(
                    i64::try_from(lag_us).unwrap_or(i64::MAX),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let check = self.gaps.observe(&r.topic.to_string(), r.epoch, r.seq);
                if let SeqCheck::Gap { from, to } = check {
                    self.bus_gaps += to - from + 1;
                }
                self.last_bar = Instant::now();
                let step = self.engine.on_bar(bar);
                // The report first: the router decides none of the close's entries before
                // it knows what each shard may still send.
                if let Some(p) = self.engine.take_progress() {
                    self.report(p);
                }
                self.apply(step, ctx);
            }
            Event::Positions(snapshot) => {
                self.engine.set_positions(&snapshot);
                self.positions_known = true;
            }
            _ => {}
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct UniverseDone(Result<GatewayReply, BusError>);

impl Handler<UniverseDone> for Worker {
    type Result = ();

    fn handle(&mut self, msg: UniverseDone, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(GatewayReply::Universe(u)) => {
                let first = self.engine.symbols().0 == 0;
                let steps = self.engine.set_universe(u.instruments);
                if first {
                    tracing::info!(
                        symbols = self.engine.symbols().0,
                        "universe received; warming up from the gateway's history"
                    );
                }
                for s in steps {
                    self.apply(s, ctx);
                }
            }
            other => {
                let why = failure(other, |r| match r {
                    GatewayReply::Error(e) => Some(e.message),
                    _ => None,
                });
                tracing::warn!(
                    error = why,
                    "cannot read the universe from the gateway; retrying"
                );
                ctx.run_later(RETRY, |act, ctx| act.fetch_universe(ctx));
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct HistoryDone {
    symbol: Symbol,
    result: Result<GatewayReply, BusError>,
}

impl Handler<HistoryDone> for Worker {
    type Result = ();

    fn handle(&mut self, msg: HistoryDone, ctx: &mut Context<Self>) {
        match msg.result {
            Ok(GatewayReply::History(h)) => {
                if let Some(seq) = h.last_seq {
                    let topic = shardbot_protocol::Topic::Bar {
                        symbol: h.symbol.clone(),
                        interval: h.interval,
                    };
                    self.gaps.resume_at(&topic.to_string(), h.epoch, seq);
                }
                let intents = self.engine.on_history(&msg.symbol, h.bars);
                self.send(intents);
                for step in self.engine.take_refetches() {
                    ctx.run_later(RETRY, move |act, ctx| act.apply(step, ctx));
                }
            }
            other => {
                let why = failure(other, |r| match r {
                    GatewayReply::Error(e) => Some(e.message),
                    _ => None,
                });
                tracing::debug!(symbol = %msg.symbol, error = why, "history not available yet; retrying");
                let symbol = msg.symbol;
                ctx.run_later(RETRY, move |act, ctx| {
                    if let Some(step) = act.engine.history_failed(&symbol) {
                        act.apply(step, ctx);
                    }
                });
            }
        }
    }
}

/// Submits one intent to the router, retrying up to `attempts` times on errors; whether
/// it was placed.
async fn deliver(router: &Requester, intent: OrderIntent, attempts: u32) -> bool {
    for attempt in 1..=attempts {
        let r = router
            .request_async::<_, RouterReply>(RouterRequest::Submit(intent.clone()))
            .await;
        match r {
            Ok(RouterReply::Placed {
                order_id,
                duplicate,
                ..
            }) => {
                tracing::info!(intent_id = %intent.intent_id, order_id, duplicate, "intent placed");
                return true;
            }
            Ok(RouterReply::Refused { refusal, .. }) => {
                tracing::info!(intent_id = %intent.intent_id, code = ?refusal.code, reason = refusal.reason, "intent refused");
                return false;
            }
            Ok(RouterReply::Error(e)) => {
                tracing::warn!(intent_id = %intent.intent_id, attempt, error = e.message, "router error");
            }
            Ok(other @ (RouterReply::Flatten(_) | RouterReply::Recorded { .. })) => {
                tracing::warn!(intent_id = %intent.intent_id, attempt, reply = ?other, "unexpected router reply");
            }
            Err(e) => {
                tracing::warn!(intent_id = %intent.intent_id, attempt, error = %e, "router unreachable");
            }
        }
    }
    tracing::error!(intent_id = %intent.intent_id, symbol = %intent.symbol, attempts, "intent not delivered to the router");
    false
}

#[derive(Message)]
#[rtype(result = "()")]
struct Announced(Result<RouterReply, BusError>);

impl Handler<Announced> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Announced, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(RouterReply::Recorded { new }) => {
                tracing::info!(new, "the router journalled the parameters in force");
            }
            Ok(RouterReply::Error(e)) => {
                tracing::warn!(
                    error = e.message,
                    "the router did not journal the parameters; retrying"
                );
                ctx.run_later(RETRY, |act, ctx| act.announce_parameters(ctx));
            }
            Ok(other) => {
                // A router of another version: nothing to retry.
                tracing::error!(reply = ?other, "unexpected router reply to the parameters in force");
            }
            Err(e) => {
                tracing::warn!(error = %e, "router unreachable for the parameters in force; retrying");
                ctx.run_later(RETRY, |act, ctx| act.announce_parameters(ctx));
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct PositionsDone(Result<RiskReply, BusError>);

impl Handler<PositionsDone> for Worker {
    type Result = ();

    fn handle(&mut self, msg: PositionsDone, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(RiskReply::Positions(snapshot)) => {
                tracing::info!(
                    open = snapshot.positions.len(),
                    "positions from the risk manager"
                );
                self.engine.set_positions(&snapshot);
                self.positions_known = true;
            }
            other => {
                if !self.positions_known {
                    let why = failure(other, |r| match r {
                        RiskReply::Error(e) => Some(e.message),
                        _ => None,
                    });
                    tracing::warn!(
                        error = why,
                        "no positions from the risk manager yet; treating symbols as flat and asking again"
                    );
                    let retry = self.cfg.positions_retry;
                    ctx.run_later(retry, |act, ctx| act.fetch_positions(ctx));
                }
            }
        }
    }
}

/// Why a request failed: the replier's error message, a reply of the wrong kind, or the
/// bus error.
fn failure<R>(r: Result<R, BusError>, message: impl FnOnce(R) -> Option<String>) -> String {
    match r {
        Ok(reply) => message(reply).unwrap_or_else(|| "unexpected reply".into()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::just_heard(0, Some(300_000), false)]
    #[case::one_interval(300, Some(300_000), false)]
    #[case::at_one_and_a_half(450, Some(300_000), false)]
    #[case::past_one_and_a_half(451, Some(300_000), true)]
    #[case::an_hour_of_silence(3600, Some(300_000), true)]
    #[case::no_fixed_interval(99_999, None, false)]
    fn silence_after_one_and_a_half_intervals(
        #[case] quiet_s: u64,
        #[case] interval_ms: Option<i64>,
        #[case] degraded: bool,
    ) {
        let since = Instant::now();
        let r = silence(since, since + Duration::from_secs(quiet_s), interval_ms);
        assert_eq!(r.is_some(), degraded, "{r:?}");
        if let Some(r) = r {
            assert!(r.contains("one every 300 s"), "{r}");
        }
    }
}
