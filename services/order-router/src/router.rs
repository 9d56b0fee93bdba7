//! The router actor. Every intent becomes at most one exchange order: its orderLinkId is
//! derived from the intent id, a repeat of an intent already placed (or being placed) is
//! answered from what the first attempt did, an order whose outcome is unknown (timeout,
//! 10006, 5xx) is looked up by its orderLinkId before anything else happens, and the
//! exchange's own uniqueness of orderLinkIds (110072) covers a router restarted between
//! sending an order and hearing back. The decisions are `plan.rs`'s (pure, table-tested);
//! this actor carries them out: the REST calls, the journal, the bus.

use std::{collections::HashMap, sync::Arc, time::Duration};

use actix::{Actor, AsyncContext, Context, Handler, Message};
use rust_decimal::Decimal;
use shardbot_bus::ReplyTo;
use shardbot_bus::{Publisher, Requester};
use shardbot_bybit::{
    models::order::{Execution, Order},
    rest::{BybitClient, CreateOrder, OrderResolution},
};
use shardbot_journal::{IntentStages, Journal, RouterStamps};
use shardbot_protocol::{
    ErrorReply, FlattenReport, Instrument, IntentId, OrderEvent, OrderIntent, Refusal, RefusalCode,
    RiskReply, RiskRequest, RouterReply, Side, Symbol, TimestampMs,
};
use shardbot_service::{StartError, alert::Alerts};

use crate::{
    approvals::Approvals,
    desk::{Desk, DeskResult},
    flatten::{self, EntryGate},
    plan::{
        self, Admission, OrderLedger, Outcome, PlannedOrder, Sent, placed, refused, stale_entry,
    },
};

/// Lookups of an order with an unknown outcome before the router says it was not placed.
const RESOLVE_TRIES: u32 = 3;
const RESOLVE_WAIT: Duration = Duration::from_millis(700);
/// The furthest back a catch-up of missed fills reads (in 7-day windows): an account idle
/// for longer does not cost a year of empty reads at every reconnect.
const CATCH_UP_MAX_MS: i64 = 90 * 86_400_000;

#[derive(Debug)]
pub struct Router {
    client: BybitClient,
    /// Symbols with an order on the exchange since this router started (any order of the
    /// account, by hand too): the start-up leverage pass leaves them alone.
    ordered: std::collections::HashSet<Symbol>,
    /// Every order goes out through it ([`Desk`]).
    desk: Desk,
    /// Every approval is asked through it, a burst's together ([`Approvals`]).
    approvals: Approvals,
    risk: Requester,
    publisher: Publisher,
    instruments: HashMap<Symbol, Instrument>,
    /// Orders known, attempts in flight and who waits for them, leverage set per symbol.
    ledger: OrderLedger<ReplyTo<RouterReply>>,
    /// Orders and fills, written before they are acknowledged or published.
    journal: Journal,
    /// Exchange time of the newest execution published.
    newest_exec_ms: i64,
    max_entry_age_ms: u64,
    /// Shared with every entry attempt: a flatten stops the entries approved before it.
    gate: Arc<EntryGate>,
    /// The flattens of this router's lifetime, by id: running or their last report.
    flattens: HashMap<String, FlattenReport>,
    /// `router.inject_panic_on_symbol` (sim only).
    inject_panic_on: Option<Symbol>,
    /// `[alerts]`: every flatten's end is sent to the webhook.
    alerts: Alerts,
    /// The order path's own thread ([`order_path`]): attempts, approvals and the desk.
    orders: tokio::runtime::Handle,
    /// `client` with connections of the order path's own (`with_own_connections`).
    order_client: BybitClient,
}

/// A runtime on a thread of its own for the order path: every attempt, the approval loop
/// and the desk run there (with HTTP connections of their own, `order_client`), while the
/// actor's thread takes in the intents and journals what they did. On the actor's thread,
/// the first intent of a burst waited while the actor took in the rest: actix handles
/// waiting messages back to back, and a task woken from another thread (an approval's
/// answer) is picked up only after some of those ready there. Timed with temporary probes
/// at 150 intents (`shardbot bench burst`), the answer to the first approval reached its
/// attempt 2-6 ms after the risk manager sent it; the benchmark's first-order "router →
/// approved" went from 6 / 5 ms to 2 / 3 ms (p50, entries / exits; docs/performance.md). A panic there ends the process like any other
/// (crash-only).
fn order_path() -> Result<tokio::runtime::Handle, StartError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("router-orders".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// How long an intent may take the router: `router.max_entry_age_ms`, and
/// `router.close_wait_ms` (the longest a shard's entries wait for the rest of their close,
/// `closes.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub max_entry_age_ms: u64,
    pub close_wait: Duration,
    /// The most entries held for their closes at once (`Closes::new`).
    pub held_at_most: usize,
}

impl Router {
    pub fn new(
        client: BybitClient,
        risk: Requester,
        publisher: Publisher,
        instruments: HashMap<Symbol, Instrument>,
        placed: HashMap<String, String>,
        journal: Journal,
        pacing: Pacing,
    ) -> Result<Router, StartError> {
        let Pacing {
            max_entry_age_ms,
            close_wait,
            held_at_most,
        } = pacing;
        let newest_fill_ms = journal.newest_fill_ms().ok().flatten().unwrap_or(0);
        let orders = order_path()?;
        let order_client = client.with_own_connections()?;
        Ok(Router {
            ordered: std::collections::HashSet::new(),
            desk: Desk::start(order_client.clone(), &orders),
            approvals: Approvals::start(risk.clone(), close_wait, held_at_most, &orders),
            client,
            risk,
            publisher,
            instruments,
            ledger: OrderLedger::new(placed, max_entry_age_ms),
            journal,
            // A restarted router catches up from the newest fill it journalled, however
            // long it was down.
            newest_exec_ms: newest_fill_ms,
            max_entry_age_ms,
            gate: Arc::new(EntryGate::default()),
            flattens: HashMap::new(),
            inject_panic_on: None,
            alerts: Alerts::none(),
            orders,
            order_client,
        })
    }

    /// The approval loop's handle: workers' close progress goes straight to it.
    pub(crate) fn approvals(&self) -> Approvals {
        self.approvals.clone()
    }

    /// Sends every flatten's end to `[alerts]`' webhook.
    pub fn with_alerts(mut self, alerts: Alerts) -> Router {
        self.alerts = alerts;
        self
    }

    /// Fault injection for tests (`router.inject_panic_on_symbol`, sim only): an attempt
    /// for this symbol panics once approved, where an overflow in rounding once did.
    pub fn inject_panic_on(mut self, symbol: Option<Symbol>) -> Router {
        self.inject_panic_on = symbol;
        self
    }

    /// After the private stream (re)subscribes: executions it may have missed meanwhile
    /// are read over REST and published like the stream's (each exactly once).
    fn catch_up(&self, ctx: &mut Context<Self>) {
        let client = self.client.clone();
        let addr = ctx.address();
        let newest = self.newest_exec_ms;
        actix::spawn(async move {
            let now = client.clock().now_ms();
            let from = if newest > 0 {
                (newest - 60_000).max(now - CATCH_UP_MAX_MS)
            } else {
                now - 3_600_000
            };
            match client.executions(None, from, now).await {
                Ok(list) => {
                    for e in list {
                        addr.do_send(Private::Missed(Box::new(e)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read recent executions after the private stream (re)connected")
                }
            }
        });
    }

    fn publish_order(&mut self, o: &Order) {
        let Some(ev) = o.to_order_event() else {
            return;
        };
        if ev.order_link_id.starts_with(IntentId::LINK_PREFIX)
            && let Err(e) = self.journal.record_order(&ev, None)
        {
            tracing::error!(error = %e, order_link_id = ev.order_link_id, "cannot journal an order");
        }
        if let Err(e) = self.publisher.publish(&ev) {
            tracing::warn!(error = %e, "cannot publish an order event");
        }
    }

    /// Journals a fill, then publishes it: each execution exactly once, whether it came
    /// from the stream or from a catch-up read. A `live` one (heard on the stream) is its
    /// order's first fill's time in the intent's stages.
    fn publish_fill(&mut self, e: &Execution, live: bool) {
        let Some(f) = e.to_fill() else {
            return;
        };
        match self.journal.record_fill(&f) {
            Ok(false) => return, // already journalled and published
            Ok(true) if live => {
                if let Err(err) = self
                    .journal
                    .record_first_fill(&f.order_link_id, shardbot_protocol::now_ms())
                {
                    tracing::error!(error = %err, order_link_id = f.order_link_id, "cannot journal a fill's time");
                }
            }
            Ok(true) => {}
            Err(err) => tracing::error!(error = %err, exec_id = f.exec_id, "cannot journal a fill"),
        }
        self.newest_exec_ms = self.newest_exec_ms.max(e.exec_time);
        if let Err(err) = self.publisher.publish(&f) {
            tracing::warn!(error = %err, "cannot publish a fill");
        }
    }
}

/// Everything one attempt needs, moved into its task.
struct Attempt {
    client: BybitClient,
    desk: Desk,
    approvals: Approvals,
    instrument: Option<Instrument>,
    /// The leverage last set on the intent's symbol, if any.
    leverage_set: Option<Decimal>,
    /// An earlier attempt ended without knowing whether the order exists: look first.
    look_first: bool,
    /// Entries decided longer ago than this are refused ([`stale_entry`]).
    max_entry_age_ms: u64,
    gate: Arc<EntryGate>,
    /// Panic once approved (fault injection, [`Router::inject_panic_on`]).
    panic_after_approval: bool,
}

/// What an attempt learned on its way, whatever its reply.
#[derive(Default)]
struct Progress {
    /// The leverage it set, on which symbol.
    leverage_set_for: Option<(Symbol, Decimal)>,
    /// The order as placed, to journal.
    order: Option<OrderEvent>,
    /// The risk manager approved an entry (it counts as open there until placed).
    approved_entry: bool,
    /// The router's stamps of the order it placed.
    stamps: Option<RouterStamps>,
}

impl Attempt {
    async fn run(
        self,
        intent: OrderIntent,
        router_ms: TimestampMs,
    ) -> (Outcome, Option<RouterStamps>) {
        let mut progress = Progress::default();
        let reply = self.place(&intent, router_ms, &mut progress).await;
        let outcome = Outcome {
            reply,
            leverage_set_for: progress.leverage_set_for,
            approved_entry: progress.approved_entry,
            order: progress.order,
        };
        (outcome, progress.stamps)
    }

    async fn place(
        &self,
        intent: &OrderIntent,
        router_ms: TimestampMs,
        progress: &mut Progress,
    ) -> RouterReply {
        let link = intent.intent_id.order_link_id();
        if self.look_first {
            match self.client.find_order(intent.symbol.as_str(), &link).await {
                Ok(OrderResolution::Placed(o)) => return placed(intent, &link, o.order_id, true),
                Ok(OrderResolution::NotFound) => {}
                // Its order may exist: a stale entry is not refused while that is unknown
                // (the reply says so and the next repeat looks again).
                Err(e) if self.stale(intent).is_some() => {
                    return RouterReply::Error(ErrorReply {
                        message: format!(
                            "order {link}: outcome still unknown, the lookup failed ({e}); \
                             send the intent again"
                        ),
                    });
                }
                Err(e) => {
                    tracing::warn!(order_link_id = link, error = %e, "order lookup failed; placing again (the same orderLinkId cannot be placed twice)");
                }
            }
        }
        if let Some(reply) = self.refuse_if_stale(intent) {
            return reply;
        }
        // When the approval was asked for: one asked before a flatten began may have been
        // given before the risk manager halted (it halts, then starts the flatten here), so
        // it is stopped below; one asked after meets the halt.
        let asked_ms = shardbot_protocol::now_ms();
        let decision = match self.approvals.approve(intent.clone()).await {
            Ok(RiskReply::Decision(d)) => d,
            Ok(other) => {
                return refused(
                    intent,
                    RefusalCode::RiskUnavailable,
                    format!("unexpected answer from the risk manager: {other:?}"),
                );
            }
            Err(e) => {
                return refused(
                    intent,
                    RefusalCode::RiskUnavailable,
                    format!("the risk manager does not answer ({e}); nothing is opened without it"),
                );
            }
        };
        let approved_ms = shardbot_protocol::now_ms();
        let approval = match plan::approval(intent, decision) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        progress.approved_entry = !approval.reduce_only;
        assert!(
            !self.panic_after_approval,
            "injected fault: router.inject_panic_on_symbol = {}",
            intent.symbol
        );
        let qty = match plan::sized(intent, approval.qty, self.instrument.as_ref()) {
            Ok(q) => q,
            Err(reply) => return reply,
        };
        let side = approval.side;
        if plan::needs_leverage(&approval, self.leverage_set) {
            let leverage = approval.leverage;
            // Setting leverage is idempotent: a rate-limited or unanswered call is simply
            // made again (the limiter waits out a 10006 first).
            let mut tries = 0;
            loop {
                tries += 1;
                match self
                    .client
                    .set_leverage(intent.symbol.as_str(), leverage)
                    .await
                {
                    Ok(()) => break,
                    Err(e) if tries < 4 && e.outcome_unknown() => {
                        tracing::warn!(symbol = %intent.symbol, error = %e, "setting leverage again");
                    }
                    Err(e) => {
                        return refused(
                            intent,
                            RefusalCode::Exchange,
                            format!("cannot set {leverage}x leverage on {}: {e}", intent.symbol),
                        );
                    }
                }
            }
            progress.leverage_set_for = Some((intent.symbol.clone(), leverage));
        }
        let tick = self
            .instrument
            .as_ref()
            .map_or(Decimal::ZERO, |i| i.tick_size);
        let PlannedOrder { create, mut record } = plan::order(
            intent,
            side,
            qty,
            approval.reduce_only,
            tick,
            self.client.clock().now_ms(),
        );
        // Checked again at the last moment: approval and leverage may have taken long.
        if let Some(reply) = self.refuse_if_stale(intent) {
            return reply;
        }
        // An entry approved before a flatten began is not sent: the kill switch ends flat.
        // The guard counts it as being sent until the exchange has answered.
        let _sending = if approval.reduce_only {
            None
        } else {
            match self.gate.enter(asked_ms) {
                Ok(g) => Some(g),
                Err(stopped_ms) => {
                    return refused(
                        intent,
                        RefusalCode::Halted,
                        format!(
                            "approval asked at {asked_ms}, before the flatten of {stopped_ms} \
                             began: the kill switch stops every entry not yet sent"
                        ),
                    );
                }
            }
        };
        let (reply, sent) = self.send(intent, &create, &link, side, qty).await;
        if let RouterReply::Placed { order_id, .. } = &reply {
            record.order_id = order_id.clone();
            progress.order = Some(record);
            progress.stamps = sent.map(|(sent_ms, acked_ms)| RouterStamps {
                router_ms,
                approved_ms,
                sent_ms,
                acked_ms,
            });
        }
        reply
    }

    fn stale(&self, intent: &OrderIntent) -> Option<Refusal> {
        stale_entry(intent, shardbot_protocol::now_ms(), self.max_entry_age_ms)
    }

    /// A stale entry ([`stale_entry`]) is refused. No lookup is needed: this attempt has
    /// sent nothing yet, and an earlier attempt that may have was looked up first
    /// (`look_first`), as orders placed before a restart were read at start.
    fn refuse_if_stale(&self, intent: &OrderIntent) -> Option<RouterReply> {
        let refusal = self.stale(intent)?;
        tracing::warn!(intent_id = %intent.intent_id, symbol = %intent.symbol, reason = refusal.reason, "stale entry refused");
        Some(RouterReply::Refused {
            intent_id: intent.intent_id.clone(),
            refusal,
        })
    }

    /// Sends the order through the desk; with the reply, when it was sent and acknowledged
    /// if the exchange answered it placed (not found by a lookup).
    async fn send(
        &self,
        intent: &OrderIntent,
        order: &CreateOrder,
        link: &str,
        side: Side,
        qty: Decimal,
    ) -> (RouterReply, Option<(TimestampMs, TimestampMs)>) {
        let deadline = plan::entry_deadline(intent, self.max_entry_age_ms);
        let sent = match self.desk.place_before(order.clone(), deadline).await {
            DeskResult::Sent { result, sent_ms } => (result, sent_ms),
            DeskResult::Expired => {
                return (
                    self.refuse_if_stale(intent).unwrap_or_else(|| {
                        refused(
                            intent,
                            RefusalCode::Stale,
                            "the entry grew stale while it waited for the order budgets".into(),
                        )
                    }),
                    None,
                );
            }
        };
        let (result, sent_ms) = sent;
        let acked_ms = shardbot_protocol::now_ms();
        match plan::classify(result.as_ref().map(|id| id.order_id.clone())) {
            Sent::Placed(order_id) => {
                tracing::info!(intent_id = %intent.intent_id, order_link_id = link, order_id, symbol = %intent.symbol, %side, %qty, "order placed");
                (
                    placed(intent, link, order_id, false),
                    Some((sent_ms, acked_ms)),
                )
            }
            Sent::LookUp => {
                if let Err(e) = &result {
                    tracing::warn!(order_link_id = link, error = %e, "order outcome unknown or link id taken; looking it up");
                }
                (self.resolve(intent, link).await, None)
            }
            Sent::Refused(reason) => (refused(intent, RefusalCode::Exchange, reason), None),
        }
    }

    /// Finds an order by link id; `NotFound` after a few looks means it was not placed,
    /// and the caller may send the intent again (same link id: never doubled).
    async fn resolve(&self, intent: &OrderIntent, link: &str) -> RouterReply {
        for attempt in 1..=RESOLVE_TRIES {
            match self.client.find_order(intent.symbol.as_str(), link).await {
                Ok(OrderResolution::Placed(o)) => return placed(intent, link, o.order_id, true),
                Ok(OrderResolution::NotFound) => {}
                Err(e) => {
                    tracing::warn!(order_link_id = link, attempt, error = %e, "order lookup failed")
                }
            }
            tokio::time::sleep(RESOLVE_WAIT).await;
        }
        RouterReply::Error(ErrorReply {
            message: format!(
                "order {link}: outcome unknown and not found on the exchange; send the intent \
                 again (the same orderLinkId cannot be placed twice)"
            ),
        })
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mut symbols: Vec<Symbol> = self.instruments.keys().cloned().collect();
        symbols.sort();
        actix::spawn(leverage_everywhere(
            self.client.clone(),
            self.risk.clone(),
            symbols,
            ctx.address(),
        ));
    }
}

/// Sets the trading settings' leverage on every listed symbol at start-up, so that a bar
/// close's burst does not wait on a leverage call per symbol (Bybit allows 10 a second):
/// a symbol's first entry finds it set. A symbol whose call fails is set by its first
/// entry, as is a leverage changed later (approvals carry it). Symbols holding a position
/// at the start, or traded since, keep theirs. The pass leaves room for orders and
/// entries: a call waits while less than half of the router's IP share, or of the
/// leverage budget, is free.
async fn leverage_everywhere(
    client: BybitClient,
    risk: Requester,
    symbols: Vec<Symbol>,
    addr: actix::Addr<Router>,
) {
    let leverage = loop {
        match risk
            .request_async::<_, RiskReply>(RiskRequest::TradingSettings)
            .await
        {
            Ok(RiskReply::TradingSettings { json }) => {
                match serde_json::from_str::<shardbot_risk::TradingSettings>(&json) {
                    Ok(s) => break s.leverage,
                    Err(e) => {
                        tracing::warn!(error = %e, "the risk manager's trading settings do not read; leverage is set by each symbol's first entry");
                        return;
                    }
                }
            }
            // The risk manager not answering yet (starting beside us): asked again.
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    // A symbol holding a position keeps its leverage: changing it would change that
    // position's margin (opened by hand, or before a restart at another leverage).
    let held: std::collections::HashSet<String> = match client.positions().await {
        Ok(list) => list
            .into_iter()
            .filter(|p| !p.size.is_zero())
            .map(|p| p.symbol)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the positions; leverage is set by each symbol's first entry");
            return;
        }
    };
    let started = std::time::Instant::now();
    let mut set = 0usize;
    for symbol in symbols {
        if held.contains(symbol.as_str()) {
            continue;
        }
        let wait = client
            .limiter()
            .until_half_free("/v5/position/set-leverage");
        if !wait.is_zero() {
            tokio::time::sleep(wait).await; // the limiter's own figure: orders go first
        }
        // Traded since the start (an order, by hand too) or set by an entry: left alone.
        if !matches!(addr.send(LeverageUntouched(symbol.clone())).await, Ok(true)) {
            continue;
        }
        match client.set_leverage(symbol.as_str(), leverage).await {
            Ok(()) => {
                set += 1;
                addr.do_send(LeverageSet(symbol, leverage));
            }
            Err(e) => {
                tracing::debug!(%symbol, error = %e, "leverage not set at start; the first entry sets it")
            }
        }
    }
    tracing::info!(symbols = set, %leverage, seconds = started.elapsed().as_secs(), "leverage set at start");
}

/// Whether the start-up pass may set `.0`'s leverage: no order on it since the start, and
/// no leverage set on it by an entry.
struct LeverageUntouched(Symbol);

impl Message for LeverageUntouched {
    type Result = bool;
}

impl Handler<LeverageUntouched> for Router {
    type Result = bool;

    fn handle(&mut self, msg: LeverageUntouched, _ctx: &mut Context<Self>) -> bool {
        !self.ordered.contains(&msg.0) && self.ledger.leverage_set(&msg.0).is_none()
    }
}

/// The start-up pass set `.0`'s leverage to `.1`.
struct LeverageSet(Symbol, Decimal);

impl Message for LeverageSet {
    type Result = ();
}

impl Handler<LeverageSet> for Router {
    type Result = ();

    fn handle(&mut self, msg: LeverageSet, _ctx: &mut Context<Self>) {
        self.ledger.note_leverage(msg.0, msg.1);
    }
}

/// A worker's strategies and parameters, from the REP thread: journalled as in force from
/// now (the exchange's clock), for `shardbot drift`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Parameters {
    pub json: String,
    pub reply: ReplyTo<RouterReply>,
}

impl Handler<Parameters> for Router {
    type Result = ();

    fn handle(&mut self, msg: Parameters, _ctx: &mut Context<Self>) {
        let answer = if serde_json::from_str::<serde_json::Value>(&msg.json).is_err() {
            RouterReply::Error(ErrorReply {
                message: "the parameters are not JSON".into(),
            })
        } else {
            let set_at_ms = self.client.clock().now_ms();
            match self.journal.record_parameters(set_at_ms, &msg.json) {
                Ok(new) => {
                    if new {
                        tracing::info!(
                            set_at_ms,
                            bytes = msg.json.len(),
                            "a worker's parameters journalled as in force"
                        );
                    }
                    RouterReply::Recorded { new }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot journal a worker's parameters");
                    RouterReply::Error(ErrorReply {
                        message: format!("cannot journal the parameters: {e}"),
                    })
                }
            }
        };
        let _ = msg.reply.send(answer);
    }
}

/// An intent from the REP thread.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Submit {
    pub intent: OrderIntent,
    pub reply: ReplyTo<RouterReply>,
}

impl Handler<Submit> for Router {
    type Result = ();

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) {
        let link = msg.intent.intent_id.order_link_id();
        let journalled = if self.ledger.is_placed(&link) {
            None
        } else {
            self.journal.order_id(&link).ok().flatten()
        };
        let now_ms = shardbot_protocol::now_ms();
        let look_first = match self
            .ledger
            .admit(&msg.intent, msg.reply, journalled, now_ms)
        {
            Admission::Answer(reply, answer) => {
                let _ = reply.send(answer);
                return;
            }
            Admission::Stale {
                reply,
                answer,
                journal,
            } => {
                if let Some(refusal) = journal {
                    tracing::warn!(intent_id = %msg.intent.intent_id, symbol = %msg.intent.symbol, reason = refusal.reason, "stale entry refused");
                    if let Err(e) = self.journal.record_refusal(
                        &msg.intent,
                        &refusal,
                        self.client.clock().now_ms(),
                    ) {
                        tracing::error!(error = %e, order_link_id = link, "cannot journal a refusal");
                    }
                }
                let _ = reply.send(answer);
                return;
            }
            Admission::Joined => return,
            Admission::Start { look_first } => look_first,
        };
        let attempt = Attempt {
            client: self.order_client.clone(),
            desk: self.desk.clone(),
            approvals: self.approvals.clone(),
            instrument: self.instruments.get(&msg.intent.symbol).cloned(),
            leverage_set: self.ledger.leverage_set(&msg.intent.symbol),
            look_first,
            max_entry_age_ms: self.max_entry_age_ms,
            gate: Arc::clone(&self.gate),
            panic_after_approval: self.inject_panic_on.as_ref() == Some(&msg.intent.symbol),
        };
        let addr = ctx.address();
        let intent = msg.intent;
        self.orders.spawn(async move {
            let (outcome, stamps) = attempt.run(intent.clone(), now_ms).await;
            addr.do_send(Done {
                link,
                intent,
                outcome,
                stamps,
            });
        });
    }
}

struct Done {
    link: String,
    intent: OrderIntent,
    outcome: Outcome,
    /// The router's stamps of the order it placed.
    stamps: Option<RouterStamps>,
}

impl Message for Done {
    type Result = ();
}

impl Handler<Done> for Router {
    type Result = ();

    fn handle(&mut self, msg: Done, _ctx: &mut Context<Self>) {
        let finish = self.ledger.finish(&msg.link, &msg.intent, msg.outcome);
        if let Some(order) = &finish.journal_order
            && let Err(e) = self.journal.record_order(order, Some(&msg.intent.strategy))
        {
            tracing::error!(error = %e, order_link_id = msg.link, "cannot journal an order");
        }
        if let Some(stamps) = msg.stamps
            && let Err(e) = self
                .journal
                .record_stages(&IntentStages::of(&msg.intent, stamps))
        {
            tracing::error!(error = %e, order_link_id = msg.link, "cannot journal an intent's stages");
        }
        if let Some(req) = finish.tell_risk {
            let risk = self.risk.clone();
            actix::spawn(async move {
                if let Err(e) = risk.request_async::<_, RiskReply>(req).await {
                    tracing::warn!(error = %e, "cannot tell the risk manager an approved entry was not placed");
                }
            });
        }
        if finish.stopped_by_flatten
            && let Some(r) = self.flattens.values_mut().find(|r| !r.done())
        {
            r.entries_stopped += 1;
        }
        if let Some(refusal) = &finish.journal_refusal
            && let Err(e) =
                self.journal
                    .record_refusal(&msg.intent, refusal, self.client.clock().now_ms())
        {
            tracing::error!(error = %e, order_link_id = msg.link, "cannot journal a refusal");
        }
        for (tx, reply) in finish.replies {
            let _ = tx.send(reply);
        }
    }
}

/// A flatten to start, or to say where it stands (from the REP thread).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flatten {
    pub flatten_id: String,
    pub deadline_ms: TimestampMs,
    /// Only this position, closed by hand: entries go on.
    pub symbol: Option<Symbol>,
    pub reply: ReplyTo<RouterReply>,
}

impl Handler<Flatten> for Router {
    type Result = ();

    fn handle(&mut self, msg: Flatten, ctx: &mut Context<Self>) {
        if let Some(r) = self.flattens.get(&msg.flatten_id) {
            let _ = msg.reply.send(RouterReply::Flatten(Box::new(r.clone())));
            return;
        }
        let now = shardbot_protocol::now_ms();
        if msg.symbol.is_none() {
            self.gate.stop_entries(now);
        }
        let report = FlattenReport {
            flatten_id: msg.flatten_id.clone(),
            started_ms: now,
            deadline_ms: msg.deadline_ms,
            finished_ms: None,
            flat: false,
            rounds: 0,
            orders_placed: 0,
            entries_stopped: 0,
            left: Vec::new(),
            errors: Vec::new(),
            symbol: msg.symbol.clone(),
        };
        match &msg.symbol {
            None => tracing::warn!(
                flatten_id = msg.flatten_id,
                deadline_ms = msg.deadline_ms,
                "flatten: entries stopped; closing every position the exchange shows"
            ),
            Some(symbol) => tracing::warn!(
                flatten_id = msg.flatten_id,
                deadline_ms = msg.deadline_ms,
                %symbol,
                "close by hand: closing this position (entries go on)"
            ),
        }
        self.flattens.insert(msg.flatten_id, report.clone());
        let _ = msg
            .reply
            .send(RouterReply::Flatten(Box::new(report.clone())));
        let addr = ctx.address();
        let run = flatten::run(
            self.client.clone(),
            self.desk.clone(),
            Arc::new(self.instruments.clone()),
            Arc::clone(&self.gate),
            report,
            self.alerts.clone(),
            move |p| addr.do_send(FlattenProgress(p)),
        );
        actix::spawn(run);
    }
}

struct FlattenProgress(flatten::Progress);

impl Message for FlattenProgress {
    type Result = ();
}

impl Handler<FlattenProgress> for Router {
    type Result = ();

    fn handle(&mut self, msg: FlattenProgress, _ctx: &mut Context<Self>) {
        let flatten::Progress { report, orders } = msg.0;
        let strategy = flatten::strategy_of(&report);
        for o in &orders {
            if let Err(e) = self.journal.record_order(o, Some(strategy)) {
                tracing::error!(error = %e, order_link_id = o.order_link_id, "cannot journal a flatten order");
            }
            self.ledger
                .note_placed(o.order_link_id.clone(), o.order_id.clone());
        }
        let stopped = self
            .flattens
            .get(&report.flatten_id)
            .map_or(0, |r| r.entries_stopped);
        self.flattens.insert(
            report.flatten_id.clone(),
            FlattenReport {
                entries_stopped: stopped,
                ..report
            },
        );
    }
}

/// An event of the private stream.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Private {
    Order(Box<Order>),
    Execution(Box<Execution>),
    /// An execution the stream missed, read over REST.
    Missed(Box<Execution>),
    /// The stream is subscribed (again): catch up on what it may have missed.
    Subscribed,
}

impl Handler<Private> for Router {
    type Result = ();

    fn handle(&mut self, msg: Private, ctx: &mut Context<Self>) {
        match msg {
            Private::Order(o) => {
                if let Ok(symbol) = Symbol::new(&o.symbol) {
                    self.ordered.insert(symbol);
                }
                if o.order_link_id.starts_with(IntentId::LINK_PREFIX) {
                    self.ledger
                        .note_placed(o.order_link_id.clone(), o.order_id.clone());
                }
                self.publish_order(&o);
            }
            Private::Execution(e) => self.publish_fill(&e, true),
            Private::Missed(e) => self.publish_fill(&e, false),
            Private::Subscribed => self.catch_up(ctx),
        }
    }
}
