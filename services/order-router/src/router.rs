//! The router actor. Every intent becomes at most one exchange order: its orderLinkId is
//! derived from the intent id, a repeat of an intent already placed (or being placed) is
//! answered from what the first attempt did, an order whose outcome is unknown (timeout,
//! 10006, 5xx) is looked up by its orderLinkId before anything else happens, and the
//! exchange's own uniqueness of orderLinkIds (110072) covers a router restarted between
//! sending an order and hearing back.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use actix::{Actor, AsyncContext, Context, Handler, Message};
use rust_decimal::Decimal;
use shardbot_bus::ReplyTo;
use shardbot_bus::{Publisher, Requester};
use shardbot_bybit::{
    ApiCode, BybitError,
    models::order::{Execution, Order},
    rest::{BybitClient, CreateOrder, OrderResolution},
};
use shardbot_journal::Journal;
use shardbot_protocol::{
    ErrorReply, FlattenReport, Instrument, IntentAction, IntentId, OrderEvent, OrderIntent,
    OrderStatus, OrderType, Refusal, RefusalCode, RiskDecision, RiskReply, RiskRequest,
    RouterReply, Side, Symbol, TimestampMs,
};
use shardbot_risk::round_qty;
use shardbot_service::alert::Alerts;

use crate::flatten::{self, EntryGate};

/// Lookups of an order with an unknown outcome before the router says it was not placed.
const RESOLVE_TRIES: u32 = 3;
const RESOLVE_WAIT: Duration = Duration::from_millis(700);
/// The furthest back a catch-up of missed fills reads (in 7-day windows): an account idle
/// for longer does not cost a year of empty reads at every reconnect.
const CATCH_UP_MAX_MS: i64 = 90 * 86_400_000;

#[derive(Debug)]
pub struct Router {
    client: BybitClient,
    risk: Requester,
    publisher: Publisher,
    instruments: HashMap<Symbol, Instrument>,
    /// The leverage last set on each symbol: set again when the approval's differs (a
    /// leverage changed in the trading settings reaches symbols already traded).
    leverage_set: HashMap<Symbol, Decimal>,
    /// orderLinkId → orderId of orders known to exist.
    placed: HashMap<String, String>,
    /// orderLinkId → repliers waiting for the attempt in flight.
    in_flight: HashMap<String, Vec<ReplyTo<RouterReply>>>,
    /// Orders and fills, written before they are acknowledged or published.
    journal: Journal,
    /// Exchange time of the newest execution published.
    newest_exec_ms: i64,
    /// Intents whose last attempt ended with the order's existence unknown.
    unresolved: HashSet<String>,
    max_entry_age_ms: u64,
    /// Shared with every entry attempt: a flatten stops the entries approved before it.
    gate: Arc<EntryGate>,
    /// The flattens of this router's lifetime, by id: running or their last report.
    flattens: HashMap<String, FlattenReport>,
    /// `router.inject_panic_on_symbol` (sim only).
    inject_panic_on: Option<Symbol>,
    /// `[alerts]`: every flatten's end is sent to the webhook.
    alerts: Alerts,
}

fn refused(intent: &OrderIntent, code: RefusalCode, reason: String) -> RouterReply {
    RouterReply::Refused {
        intent_id: intent.intent_id.clone(),
        refusal: Refusal { code, reason },
    }
}

/// The refusal of an entry decided (`created_ms`, the worker's clock) more than
/// `max_age_ms` before `now_ms`. Exits are never refused for their age: a position must
/// be closable whatever happened before.
pub fn stale_entry(intent: &OrderIntent, now_ms: i64, max_age_ms: u64) -> Option<Refusal> {
    if intent.action == IntentAction::Exit {
        return None;
    }
    let age = now_ms.saturating_sub(intent.created_ms);
    (age > i64::try_from(max_age_ms).unwrap_or(i64::MAX)).then(|| Refusal {
        code: RefusalCode::Stale,
        reason: format!(
            "the entry on {} was decided {age} ms ago, more than router.max_entry_age_ms = \
             {max_age_ms}: the bar of {} it was decided on is history",
            intent.symbol, intent.bar_open_time_ms
        ),
    })
}

fn on_tick(p: Option<Decimal>, tick: Decimal) -> Option<Decimal> {
    p.filter(|p| *p > Decimal::ZERO).map(|p| {
        if tick > Decimal::ZERO {
            ((p / tick).round() * tick).normalize()
        } else {
            p
        }
    })
}

impl Router {
    pub fn new(
        client: BybitClient,
        risk: Requester,
        publisher: Publisher,
        instruments: HashMap<Symbol, Instrument>,
        placed: HashMap<String, String>,
        journal: Journal,
        max_entry_age_ms: u64,
    ) -> Router {
        let newest_fill_ms = journal.newest_fill_ms().ok().flatten().unwrap_or(0);
        Router {
            client,
            risk,
            publisher,
            instruments,
            leverage_set: HashMap::new(),
            placed,
            in_flight: HashMap::new(),
            journal,
            // A restarted router catches up from the newest fill it journalled, however
            // long it was down.
            newest_exec_ms: newest_fill_ms,
            unresolved: HashSet::new(),
            max_entry_age_ms,
            gate: Arc::new(EntryGate::default()),
            flattens: HashMap::new(),
            inject_panic_on: None,
            alerts: Alerts::none(),
        }
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
                        addr.do_send(Private::Execution(Box::new(e)));
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
    /// from the stream or from a catch-up read.
    fn publish_fill(&mut self, e: &Execution) {
        let Some(f) = e.to_fill() else {
            return;
        };
        match self.journal.record_fill(&f) {
            Ok(false) => return, // already journalled and published
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
    risk: Requester,
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

/// What an attempt did.
struct Outcome {
    reply: RouterReply,
    leverage_set_for: Option<(Symbol, Decimal)>,
    /// The risk manager approved this entry (it counts as open there until placed).
    approved_entry: bool,
    /// The order as placed, to journal before the reply goes out.
    order: Option<OrderEvent>,
}

impl Attempt {
    async fn run(self, intent: OrderIntent) -> Outcome {
        let mut leverage_set_for = None;
        let mut order = None;
        let mut approved_entry = false;
        let reply = self
            .place(
                &intent,
                &mut leverage_set_for,
                &mut order,
                &mut approved_entry,
            )
            .await;
        Outcome {
            reply,
            leverage_set_for,
            approved_entry,
            order,
        }
    }

    async fn place(
        &self,
        intent: &OrderIntent,
        lev: &mut Option<(Symbol, Decimal)>,
        journal: &mut Option<OrderEvent>,
        approved_entry: &mut bool,
    ) -> RouterReply {
        let link = intent.intent_id.order_link_id();
        if self.look_first
            && let Ok(OrderResolution::Placed(o)) =
                self.client.find_order(intent.symbol.as_str(), &link).await
        {
            return RouterReply::Placed {
                intent_id: intent.intent_id.clone(),
                order_link_id: link,
                order_id: o.order_id,
                duplicate: true,
            };
        }
        if let Some(reply) = self.refuse_if_stale(intent, &link).await {
            return reply;
        }
        // When the approval was asked for: one asked before a flatten began may have been
        // given before the risk manager halted (it halts, then starts the flatten here), so
        // it is stopped below; one asked after meets the halt.
        let asked_ms = shardbot_protocol::now_ms();
        let decision = match self
            .risk
            .request_async::<_, RiskReply>(RiskRequest::Approve(intent.clone()))
            .await
        {
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
        let (qty, leverage, reduce_only) = match decision {
            RiskDecision::Refused { refusal, .. } => {
                return RouterReply::Refused {
                    intent_id: intent.intent_id.clone(),
                    refusal,
                };
            }
            RiskDecision::Approved {
                qty,
                leverage,
                reduce_only,
                ..
            } => (qty, leverage, reduce_only),
        };
        *approved_entry = !reduce_only;
        assert!(
            !self.panic_after_approval,
            "injected fault: router.inject_panic_on_symbol = {}",
            intent.symbol
        );
        let Some(inst) = &self.instrument else {
            return refused(
                intent,
                RefusalCode::UnknownSymbol,
                format!("{} is not a listed USDT perpetual", intent.symbol),
            );
        };
        let qty = match round_qty(qty, intent.reference_price, inst) {
            Ok(q) => q,
            Err(refusal) => {
                return RouterReply::Refused {
                    intent_id: intent.intent_id.clone(),
                    refusal,
                };
            }
        };
        let side = match intent.action {
            IntentAction::Enter { side } => side,
            IntentAction::Exit => match self.position_side(&intent.symbol).await {
                Some(s) => s.opposite(),
                None => {
                    return refused(
                        intent,
                        RefusalCode::NoPosition,
                        format!("no open {} position to exit", intent.symbol),
                    );
                }
            },
        };
        if !reduce_only && self.leverage_set != Some(leverage) {
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
            *lev = Some((intent.symbol.clone(), leverage));
        }
        let mut order = CreateOrder::market(intent.symbol.as_str(), side, qty, &link);
        if reduce_only {
            order.reduce_only = Some(true);
        } else {
            order = order.with_tp_sl(
                on_tick(intent.take_profit, inst.tick_size),
                on_tick(intent.stop_loss, inst.tick_size),
            );
        }
        let mut record = OrderEvent {
            order_id: String::new(),
            order_link_id: link.clone(),
            intent_id: Some(intent.intent_id.clone()),
            symbol: intent.symbol.clone(),
            side,
            order_type: OrderType::Market,
            status: OrderStatus::New,
            qty,
            price: None,
            avg_price: None,
            cum_exec_qty: Decimal::ZERO,
            cum_exec_fee: Decimal::ZERO,
            reduce_only,
            take_profit: order.take_profit,
            stop_loss: order.stop_loss,
            reject_reason: None,
            stop_order_type: None,
            updated_ms: self.client.clock().now_ms(),
        };
        // Checked again at the last moment: approval and leverage may have taken long.
        if let Some(reply) = self.refuse_if_stale(intent, &link).await {
            return reply;
        }
        // An entry approved before a flatten began is not sent: the kill switch ends flat.
        // The guard counts it as being sent until the exchange has answered.
        let _sending = if reduce_only {
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
        let reply = self.send(intent, &order, &link, side, qty).await;
        if let RouterReply::Placed { order_id, .. } = &reply {
            record.order_id = order_id.clone();
            *journal = Some(record);
        }
        reply
    }

    /// A stale entry ([`stale_entry`]) is refused, unless its order exists already (placed
    /// by an attempt before a restart, say): then that order is the answer, so a repeat is
    /// never refused for an order that went out.
    async fn refuse_if_stale(&self, intent: &OrderIntent, link: &str) -> Option<RouterReply> {
        let refusal = stale_entry(intent, shardbot_protocol::now_ms(), self.max_entry_age_ms)?;
        if let Ok(OrderResolution::Placed(o)) =
            self.client.find_order(intent.symbol.as_str(), link).await
        {
            return Some(RouterReply::Placed {
                intent_id: intent.intent_id.clone(),
                order_link_id: link.to_owned(),
                order_id: o.order_id,
                duplicate: true,
            });
        }
        tracing::warn!(intent_id = %intent.intent_id, symbol = %intent.symbol, reason = refusal.reason, "stale entry refused");
        Some(RouterReply::Refused {
            intent_id: intent.intent_id.clone(),
            refusal,
        })
    }

    async fn send(
        &self,
        intent: &OrderIntent,
        order: &CreateOrder,
        link: &str,
        side: Side,
        qty: Decimal,
    ) -> RouterReply {
        let link = link.to_owned();
        match self.client.place_order(order).await {
            Ok(id) => {
                tracing::info!(intent_id = %intent.intent_id, order_link_id = link, order_id = id.order_id, symbol = %intent.symbol, %side, %qty, "order placed");
                RouterReply::Placed {
                    intent_id: intent.intent_id.clone(),
                    order_link_id: link,
                    order_id: id.order_id,
                    duplicate: false,
                }
            }
            Err(e) if e.api_code() == Some(ApiCode::DuplicateOrderLinkId) => {
                tracing::info!(order_link_id = link, "the exchange already has this order");
                self.resolve(intent, &link).await
            }
            Err(e @ BybitError::UnknownOutcome { .. }) => {
                tracing::warn!(order_link_id = link, error = %e, "order outcome unknown; looking it up");
                self.resolve(intent, &link).await
            }
            Err(e) => refused(
                intent,
                RefusalCode::Exchange,
                format!("the exchange refused the order: {e}"),
            ),
        }
    }

    /// Finds an order by link id; `NotFound` after a few looks means it was not placed,
    /// and the caller may send the intent again (same link id: never doubled).
    async fn resolve(&self, intent: &OrderIntent, link: &str) -> RouterReply {
        for attempt in 1..=RESOLVE_TRIES {
            match self.client.find_order(intent.symbol.as_str(), link).await {
                Ok(OrderResolution::Placed(o)) => {
                    return RouterReply::Placed {
                        intent_id: intent.intent_id.clone(),
                        order_link_id: link.to_owned(),
                        order_id: o.order_id,
                        duplicate: true,
                    };
                }
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

    async fn position_side(&self, symbol: &Symbol) -> Option<Side> {
        match self
            .risk
            .request_async::<_, RiskReply>(RiskRequest::Positions)
            .await
        {
            Ok(RiskReply::Positions(p)) => p
                .positions
                .iter()
                .find(|p| &p.symbol == symbol && p.size > Decimal::ZERO)
                .map(|p| p.side),
            _ => None,
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;
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
        if !self.placed.contains_key(&link)
            && let Ok(Some(order_id)) = self.journal.order_id(&link)
        {
            self.placed.insert(link.clone(), order_id);
        }
        if let Some(order_id) = self.placed.get(&link) {
            let _ = msg.reply.send(RouterReply::Placed {
                intent_id: msg.intent.intent_id,
                order_link_id: link,
                order_id: order_id.clone(),
                duplicate: true,
            });
            return;
        }
        if let Some(waiting) = self.in_flight.get_mut(&link) {
            waiting.push(msg.reply);
            return;
        }
        self.in_flight.insert(link.clone(), vec![msg.reply]);
        let attempt = Attempt {
            client: self.client.clone(),
            risk: self.risk.clone(),
            instrument: self.instruments.get(&msg.intent.symbol).cloned(),
            leverage_set: self.leverage_set.get(&msg.intent.symbol).copied(),
            look_first: self.unresolved.contains(&link),
            max_entry_age_ms: self.max_entry_age_ms,
            gate: Arc::clone(&self.gate),
            panic_after_approval: self.inject_panic_on.as_ref() == Some(&msg.intent.symbol),
        };
        let addr = ctx.address();
        let intent = msg.intent;
        actix::spawn(async move {
            let outcome = attempt.run(intent.clone()).await;
            addr.do_send(Done {
                link,
                intent,
                outcome,
            });
        });
    }
}

struct Done {
    link: String,
    intent: OrderIntent,
    outcome: Outcome,
}

impl Message for Done {
    type Result = ();
}

impl Handler<Done> for Router {
    type Result = ();

    fn handle(&mut self, msg: Done, _ctx: &mut Context<Self>) {
        if let Some((s, l)) = msg.outcome.leverage_set_for {
            self.leverage_set.insert(s, l);
        }
        if let Some(order) = &msg.outcome.order
            && let Err(e) = self.journal.record_order(order, Some(&msg.intent.strategy))
        {
            tracing::error!(error = %e, order_link_id = msg.link, "cannot journal an order");
        }
        if let RouterReply::Placed { order_id, .. } = &msg.outcome.reply {
            self.placed.insert(msg.link.clone(), order_id.clone());
        }
        if matches!(msg.outcome.reply, RouterReply::Error(_)) {
            self.unresolved.insert(msg.link.clone());
        } else {
            self.unresolved.remove(&msg.link);
        }
        // An entry approved but refused here: the risk manager stops counting it now.
        if msg.outcome.approved_entry
            && let RouterReply::Refused { refusal, .. } = &msg.outcome.reply
        {
            let risk = self.risk.clone();
            let req = RiskRequest::Unplaced {
                intent_id: msg.intent.intent_id.clone(),
                symbol: msg.intent.symbol.clone(),
                reason: refusal.reason.clone(),
            };
            actix::spawn(async move {
                if let Err(e) = risk.request_async::<_, RiskReply>(req).await {
                    tracing::warn!(error = %e, "cannot tell the risk manager an approved entry was not placed");
                }
            });
        }
        if let RouterReply::Refused { refusal, .. } = &msg.outcome.reply
            && refusal.code == RefusalCode::Halted
            && msg.outcome.approved_entry
            && let Some(r) = self.flattens.values_mut().find(|r| !r.done())
        {
            r.entries_stopped += 1;
        }
        if let RouterReply::Refused { refusal, .. } = &msg.outcome.reply
            && let Err(e) =
                self.journal
                    .record_refusal(&msg.intent, refusal, self.client.clock().now_ms())
        {
            tracing::error!(error = %e, order_link_id = msg.link, "cannot journal a refusal");
        }
        let waiting = self.in_flight.remove(&msg.link).unwrap_or_default();
        for (i, tx) in waiting.into_iter().enumerate() {
            let mut reply = msg.outcome.reply.clone();
            if i > 0
                && let RouterReply::Placed { duplicate, .. } = &mut reply
            {
                *duplicate = true;
            }
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
    pub reply: ReplyTo<RouterReply>,
}

impl Handler<Flatten> for Router {
    type Result = ();

    fn handle(&mut self, msg: Flatten, ctx: &mut Context<Self>) {
        if let Some(r) = self.flattens.get(&msg.flatten_id) {
            let _ = msg.reply.send(RouterReply::Flatten(r.clone()));
            return;
        }
        let now = shardbot_protocol::now_ms();
        self.gate.stop_entries(now);
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
        };
        tracing::warn!(
            flatten_id = msg.flatten_id,
            deadline_ms = msg.deadline_ms,
            "flatten: entries stopped; closing every position the exchange shows"
        );
        self.flattens.insert(msg.flatten_id, report.clone());
        let _ = msg.reply.send(RouterReply::Flatten(report.clone()));
        let addr = ctx.address();
        let run = flatten::run(
            self.client.clone(),
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
        for o in &orders {
            if let Err(e) = self.journal.record_order(o, Some(flatten::STRATEGY)) {
                tracing::error!(error = %e, order_link_id = o.order_link_id, "cannot journal a flatten order");
            }
            self.placed
                .insert(o.order_link_id.clone(), o.order_id.clone());
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
    /// The stream is subscribed (again): catch up on what it may have missed.
    Subscribed,
}

impl Handler<Private> for Router {
    type Result = ();

    fn handle(&mut self, msg: Private, ctx: &mut Context<Self>) {
        match msg {
            Private::Order(o) => {
                if o.order_link_id.starts_with(IntentId::LINK_PREFIX) {
                    self.placed
                        .insert(o.order_link_id.clone(), o.order_id.clone());
                }
                self.publish_order(&o);
            }
            Private::Execution(e) => self.publish_fill(&e),
            Private::Subscribed => self.catch_up(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;
    use shardbot_protocol::Interval;

    fn intent(action: IntentAction, created_ms: i64) -> OrderIntent {
        OrderIntent::new(
            "trend_following",
            Symbol::new("BTCUSDT").unwrap(),
            Interval::M5,
            1_000_000,
            action,
            Decimal::from(100),
            None,
            None,
            created_ms,
        )
    }

    const BUY: IntentAction = IntentAction::Enter { side: Side::Buy };

    #[rstest]
    #[case::fresh(BUY, 10_000, 14_000, false)]
    #[case::at_the_limit(BUY, 10_000, 15_000, false)]
    #[case::a_ms_over(BUY, 10_000, 15_001, true)]
    #[case::queued_for_a_minute(BUY, 10_000, 70_000, true)]
    #[case::exit_never(IntentAction::Exit, 10_000, 1_000_000, false)]
    #[case::clock_behind(BUY, 20_000, 10_000, false)]
    fn entries_older_than_the_limit_are_stale(
        #[case] action: IntentAction,
        #[case] created: i64,
        #[case] now: i64,
        #[case] stale: bool,
    ) {
        let r = stale_entry(&intent(action, created), now, 5_000);
        assert_eq!(r.is_some(), stale, "{r:?}");
        if let Some(r) = r {
            assert_eq!(r.code, RefusalCode::Stale);
            assert!(r.reason.contains("max_entry_age_ms = 5000"), "{}", r.reason);
        }
    }
}
