//! The router's decisions, pure (no REST, no journal, no bus), as the strategy worker's
//! `engine.rs` is: which intent starts an attempt, joins one in flight, is answered from
//! what is known or refused as stale ([`OrderLedger::admit`], [`stale_entry`]);
//! how an approval becomes an order on the instrument's grid ([`sized`], [`order`]); what
//! an exchange answer to an order means ([`classify`]); and what an attempt's end
//! changes and who hears what ([`OrderLedger::finish`]). The actor (`router.rs`) carries the
//! steps out.

use std::collections::{HashMap, HashSet, VecDeque};

use rust_decimal::Decimal;
use shardbot_bybit::{ApiCode, BybitError, rest::CreateOrder};
use shardbot_protocol::{
    Instrument, IntentAction, OrderEvent, OrderIntent, OrderStatus, OrderType, Refusal,
    RefusalCode, RiskDecision, RiskRequest, RouterReply, Side, Symbol, TimestampMs,
};
use shardbot_risk::round_qty;

/// A refusal of `intent`.
pub fn refused(intent: &OrderIntent, code: RefusalCode, reason: String) -> RouterReply {
    RouterReply::Refused {
        intent_id: intent.intent_id.clone(),
        refusal: Refusal { code, reason },
    }
}

/// The answer that an order with this link id exists.
pub fn placed(intent: &OrderIntent, link: &str, order_id: String, duplicate: bool) -> RouterReply {
    RouterReply::Placed {
        intent_id: intent.intent_id.clone(),
        order_link_id: link.to_owned(),
        order_id,
        duplicate,
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

/// The last moment an entry may still be sent ([`stale_entry`] after it); exits have none.
pub fn entry_deadline(intent: &OrderIntent, max_age_ms: u64) -> Option<TimestampMs> {
    (intent.action != IntentAction::Exit).then(|| {
        intent
            .created_ms
            .saturating_add(i64::try_from(max_age_ms).unwrap_or(i64::MAX))
    })
}

/// What the risk manager approved, as the order path uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    pub qty: Decimal,
    pub leverage: Decimal,
    pub reduce_only: bool,
    /// The order's side (an exit's is the opposite of the position the risk manager holds).
    pub side: Side,
}

/// The approval in a decision, or the refusal to answer with. An entry approved on the
/// other side than its own is refused (a risk manager out of step with this router's
/// protocol: nothing is sent on a side nobody decided).
pub fn approval(intent: &OrderIntent, decision: RiskDecision) -> Result<Approval, RouterReply> {
    match decision {
        RiskDecision::Refused { refusal, .. } => Err(RouterReply::Refused {
            intent_id: intent.intent_id.clone(),
            refusal,
        }),
        RiskDecision::Approved {
            qty,
            leverage,
            reduce_only,
            side,
            ..
        } => match intent.action {
            IntentAction::Enter { side: own } if own != side => Err(refused(
                intent,
                RefusalCode::RiskUnavailable,
                format!("the risk manager approved a {side} order for a {own} entry"),
            )),
            _ => Ok(Approval {
                qty,
                leverage,
                reduce_only,
                side,
            }),
        },
    }
}

/// The approved quantity on the instrument's grid, or the refusal (unknown symbol, below
/// the minimum quantity or notional).
pub fn sized(
    intent: &OrderIntent,
    qty: Decimal,
    instrument: Option<&Instrument>,
) -> Result<Decimal, RouterReply> {
    let Some(inst) = instrument else {
        return Err(refused(
            intent,
            RefusalCode::UnknownSymbol,
            format!("{} is not a listed USDT perpetual", intent.symbol),
        ));
    };
    round_qty(qty, intent.reference_price, inst).map_err(|refusal| RouterReply::Refused {
        intent_id: intent.intent_id.clone(),
        refusal,
    })
}

/// Whether the symbol's leverage must be set before this order: an entry whose approved
/// leverage is not the one last set (a leverage changed in the trading settings reaches
/// symbols already traded). Exits never set it.
pub fn needs_leverage(approval: &Approval, last_set: Option<Decimal>) -> bool {
    !approval.reduce_only && last_set != Some(approval.leverage)
}

/// A price level on the tick grid (to the nearest tick); `None` for none or not positive.
pub fn on_tick(p: Option<Decimal>, tick: Decimal) -> Option<Decimal> {
    p.filter(|p| *p > Decimal::ZERO).map(|p| {
        if tick > Decimal::ZERO {
            ((p / tick).round() * tick).normalize()
        } else {
            p
        }
    })
}

/// The order to send and the journal's record of it (its order id filled in once placed).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOrder {
    pub create: CreateOrder,
    pub record: OrderEvent,
}

/// The market order of an approved intent: reduce-only for an exit; an entry carries its
/// stop-loss and take-profit on the tick grid. `now_ms` is the exchange's clock.
pub fn order(
    intent: &OrderIntent,
    side: Side,
    qty: Decimal,
    reduce_only: bool,
    tick: Decimal,
    now_ms: TimestampMs,
) -> PlannedOrder {
    let link = intent.intent_id.order_link_id();
    let mut create = CreateOrder::market(intent.symbol.as_str(), side, qty, &link);
    if reduce_only {
        create.reduce_only = Some(true);
    } else {
        create = create.with_tp_sl(
            on_tick(intent.take_profit, tick),
            on_tick(intent.stop_loss, tick),
        );
    }
    let record = OrderEvent {
        order_id: String::new(),
        order_link_id: link,
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
        take_profit: create.take_profit,
        stop_loss: create.stop_loss,
        reject_reason: None,
        stop_order_type: None,
        updated_ms: now_ms,
    };
    PlannedOrder { create, record }
}

/// What an answer of the exchange to an order means.
#[derive(Debug, PartialEq)]
pub enum Sent {
    /// Placed: its order id.
    Placed(String),
    /// It may exist (outcome unknown: timeout, 10006, 5xx), or does (110072, a link id
    /// already used): look it up before anything else.
    LookUp,
    /// Refused by the exchange: the reason.
    Refused(String),
}

/// The meaning of `place_order`'s result.
pub fn classify(result: Result<String, &BybitError>) -> Sent {
    match result {
        Ok(order_id) => Sent::Placed(order_id),
        Err(e) if e.api_code() == Some(ApiCode::DuplicateOrderLinkId) => Sent::LookUp,
        Err(BybitError::UnknownOutcome { .. }) => Sent::LookUp,
        Err(e) => Sent::Refused(format!("the exchange refused the order: {e}")),
    }
}

/// Where a burst's orders stand in line at the order desk: exits (reduce-only) first,
/// then entries by symbol name; orders equal in rank keep their arrival order. So when the
/// exchange's budgets make a burst wait, closing positions never waits behind opening
/// them, and which entries go first does not depend on the order the workers' messages
/// happened to arrive in.
pub fn burst_rank(order: &CreateOrder) -> (bool, &str) {
    shardbot_risk::burst_rank(order.reduce_only == Some(true), order.symbol.as_str())
}

/// How the desk sends the head of its queue, in the order to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v5/order/create-batch` with the first `n` orders.
    Batch(usize),
    /// `/v5/order/create` with the first order.
    Single,
}

/// The ways to send the head of a queue of `queued` orders, best first, given the room
/// left in each budget (orders that may start now). Both budgets are used at once: two or
/// more orders go as a batch while the batch budget has room for two, the rest one by
/// one while create's has room; one order goes alone, or as a batch of one when create's
/// budget is spent. Empty: both are spent, wait.
pub fn routes(queued: usize, single_room: u32, batch_room: u32) -> Vec<Route> {
    let batch_room = usize::try_from(batch_room).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if queued == 0 {
        return out;
    }
    let batch = queued
        .min(batch_room)
        .min(shardbot_bybit::rest::MAX_BATCH_ORDERS);
    if batch >= 2 {
        out.push(Route::Batch(batch));
    }
    if single_room >= 1 {
        out.push(Route::Single);
    }
    if batch == 1 {
        out.push(Route::Batch(1));
    }
    out
}

/// What an attempt did.
#[derive(Debug)]
pub struct Outcome {
    pub reply: RouterReply,
    pub leverage_set_for: Option<(Symbol, Decimal)>,
    /// The risk manager approved this entry (it counts as open there until placed).
    pub approved_entry: bool,
    /// The order as placed, to journal before the reply goes out.
    pub order: Option<OrderEvent>,
}

/// What becomes of an intent that arrives.
#[derive(Debug, PartialEq)]
pub enum Admission<R> {
    /// Its order is known: answer at once (a repeat).
    Answer(R, RouterReply),
    /// A stale entry ([`stale_entry`]), refused at once with no exchange call: no earlier
    /// attempt of it left an order whose existence is unknown, so none can exist (orders
    /// placed before a restart are read from the exchange at start). `journal`: the
    /// refusal to journal, the first time only (a repeat is answered alike, not journalled
    /// again).
    Stale {
        reply: R,
        answer: RouterReply,
        journal: Option<Refusal>,
    },
    /// An attempt for it is under way: the replier waits for that attempt's answer.
    Joined,
    /// Start an attempt. `look_first`: an earlier attempt ended without knowing whether
    /// the order exists, so look it up before anything else.
    Start { look_first: bool },
}

/// What the actor does when an attempt ends, in this order: journal the order, then the
/// refusal, tell the risk manager, then answer every replier that waited.
#[derive(Debug, PartialEq)]
pub struct Finish<R> {
    pub journal_order: Option<OrderEvent>,
    pub journal_refusal: Option<Refusal>,
    /// An approved entry refused here: the risk manager stops counting it at once.
    pub tell_risk: Option<RiskRequest>,
    /// An approved entry stopped by a running flatten (its report counts it).
    pub stopped_by_flatten: bool,
    pub replies: Vec<(R, RouterReply)>,
}

/// The router's memory of orders: which exist, which are being placed (and who waits for
/// them), which ended unknown, and the leverage last set per symbol. `R` is whatever
/// answers a replier (the actor's `ReplyTo`; a number in tests).
#[derive(Debug)]
pub struct OrderLedger<R> {
    /// orderLinkId → orderId of orders known to exist.
    placed: HashMap<String, String>,
    /// orderLinkId → the repliers waiting for the attempt in flight.
    in_flight: HashMap<String, Vec<R>>,
    /// Intents whose last attempt ended with the order's existence unknown.
    unresolved: HashSet<String>,
    /// The leverage last set on each symbol.
    leverage_set: HashMap<Symbol, Decimal>,
    /// `router.max_entry_age_ms`.
    max_entry_age_ms: u64,
    /// Stale entries already refused (and journalled), the newest [`STALE_REMEMBERED`].
    stale_refused: HashSet<String>,
    stale_order: VecDeque<String>,
}

/// How many stale refusals the ledger remembers so that repeats are not journalled again.
/// Repeats come within a worker's retries (seconds); this covers thousands of intents.
pub const STALE_REMEMBERED: usize = 4096;

impl<R> OrderLedger<R> {
    /// `placed`: the orders read from the exchange at start (orderLinkId → orderId);
    /// `max_entry_age_ms`: entries older than this are stale ([`stale_entry`]).
    pub fn new(placed: HashMap<String, String>, max_entry_age_ms: u64) -> OrderLedger<R> {
        OrderLedger {
            placed,
            in_flight: HashMap::new(),
            unresolved: HashSet::new(),
            leverage_set: HashMap::new(),
            max_entry_age_ms,
            stale_refused: HashSet::new(),
            stale_order: VecDeque::new(),
        }
    }

    pub fn is_placed(&self, link: &str) -> bool {
        self.placed.contains_key(link)
    }

    /// An order known to exist (from the exchange's stream or a flatten).
    pub fn note_placed(&mut self, link: String, order_id: String) {
        self.placed.insert(link, order_id);
    }

    /// The leverage `symbol` was set to (by the start-up pass, or an attempt).
    pub fn note_leverage(&mut self, symbol: Symbol, leverage: Decimal) {
        self.leverage_set.insert(symbol, leverage);
    }

    pub fn leverage_set(&self, symbol: &Symbol) -> Option<Decimal> {
        self.leverage_set.get(symbol).copied()
    }

    /// An intent arrives with its replier at `now_ms`. `journalled`: the order id the
    /// journal holds for its link id, when the ledger does not know it (a router restarted
    /// since).
    pub fn admit(
        &mut self,
        intent: &OrderIntent,
        reply: R,
        journalled: Option<String>,
        now_ms: TimestampMs,
    ) -> Admission<R> {
        let link = intent.intent_id.order_link_id();
        if let Some(order_id) = journalled {
            self.placed.entry(link.clone()).or_insert(order_id);
        }
        if let Some(order_id) = self.placed.get(&link) {
            let answer = placed(intent, &link, order_id.clone(), true);
            return Admission::Answer(reply, answer);
        }
        if let Some(waiting) = self.in_flight.get_mut(&link) {
            waiting.push(reply);
            return Admission::Joined;
        }
        let look_first = self.unresolved.contains(&link);
        if !look_first && let Some(refusal) = stale_entry(intent, now_ms, self.max_entry_age_ms) {
            let answer = RouterReply::Refused {
                intent_id: intent.intent_id.clone(),
                refusal: refusal.clone(),
            };
            let first = self.stale_refused.insert(link.clone());
            if first {
                self.stale_order.push_back(link);
                if self.stale_order.len() > STALE_REMEMBERED
                    && let Some(old) = self.stale_order.pop_front()
                {
                    self.stale_refused.remove(&old);
                }
            }
            return Admission::Stale {
                reply,
                answer,
                journal: first.then_some(refusal),
            };
        }
        self.in_flight.insert(link, vec![reply]);
        Admission::Start { look_first }
    }

    /// An attempt ended: what it changes here and the steps for the actor.
    pub fn finish(&mut self, link: &str, intent: &OrderIntent, outcome: Outcome) -> Finish<R> {
        if let Some((s, l)) = outcome.leverage_set_for {
            self.leverage_set.insert(s, l);
        }
        if let RouterReply::Placed { order_id, .. } = &outcome.reply {
            self.placed.insert(link.to_owned(), order_id.clone());
        }
        if matches!(outcome.reply, RouterReply::Error(_)) {
            self.unresolved.insert(link.to_owned());
        } else {
            self.unresolved.remove(link);
        }
        let refusal = match &outcome.reply {
            RouterReply::Refused { refusal, .. } => Some(refusal.clone()),
            _ => None,
        };
        let tell_risk = refusal
            .as_ref()
            .filter(|_| outcome.approved_entry)
            .map(|r| RiskRequest::Unplaced {
                intent_id: intent.intent_id.clone(),
                symbol: intent.symbol.clone(),
                reason: r.reason.clone(),
            });
        let stopped_by_flatten = outcome.approved_entry
            && refusal
                .as_ref()
                .is_some_and(|r| r.code == RefusalCode::Halted);
        let waiting = self.in_flight.remove(link).unwrap_or_default();
        let replies = waiting
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let mut reply = outcome.reply.clone();
                // Only the first replier hears of the placing; the others are repeats.
                if i > 0
                    && let RouterReply::Placed { duplicate, .. } = &mut reply
                {
                    *duplicate = true;
                }
                (r, reply)
            })
            .collect();
        Finish {
            journal_order: outcome.order,
            journal_refusal: refusal,
            tell_risk,
            stopped_by_flatten,
            replies,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;
    use shardbot_protocol::{ErrorReply, Interval};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn intent_on(symbol: &str, action: IntentAction, created_ms: i64) -> OrderIntent {
        OrderIntent::new(
            "trend_following",
            Symbol::new(symbol).unwrap(),
            Interval::M5,
            1_000_000,
            action,
            Decimal::from(100),
            Some(d("97.04")),
            Some(d("105.06")),
            created_ms,
        )
    }

    fn intent(action: IntentAction, created_ms: i64) -> OrderIntent {
        intent_on("BTCUSDT", action, created_ms)
    }

    const BUY: IntentAction = IntentAction::Enter { side: Side::Buy };
    const SELL: IntentAction = IntentAction::Enter { side: Side::Sell };

    fn inst() -> Instrument {
        Instrument {
            symbol: Symbol::new("BTCUSDT").unwrap(),
            tick_size: d("0.1"),
            qty_step: d("0.001"),
            min_order_qty: d("0.001"),
            max_market_order_qty: d("100"),
            min_notional: d("5"),
            max_leverage: d("100"),
            funding_interval_min: 480,
        }
    }

    fn code(r: &RouterReply) -> Option<RefusalCode> {
        match r {
            RouterReply::Refused { refusal, .. } => Some(refusal.code),
            _ => None,
        }
    }

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
        let i = intent(action, created);
        let r = stale_entry(&i, now, 5_000);
        assert_eq!(r.is_some(), stale, "{r:?}");
        // The desk's deadline for a queued order agrees with the rule.
        assert_eq!(
            entry_deadline(&i, 5_000).is_some_and(|t| now > t),
            stale,
            "deadline"
        );
        if let Some(r) = r {
            assert_eq!(r.code, RefusalCode::Stale);
            assert!(r.reason.contains("max_entry_age_ms = 5000"), "{}", r.reason);
        }
    }

    #[rstest]
    #[case::on_the_grid("0.0623456", true, Ok(d("0.062")))]
    #[case::below_the_minimum_notional("0.049", true, Err(RefusalCode::BelowMinNotional))]
    #[case::below_the_minimum("0.0004", true, Err(RefusalCode::BelowMinQty))]
    #[case::not_listed("1", false, Err(RefusalCode::UnknownSymbol))]
    fn an_approved_quantity_goes_on_the_grid(
        #[case] qty: &str,
        #[case] listed: bool,
        #[case] want: Result<Decimal, RefusalCode>,
    ) {
        let i = inst();
        let got = sized(&intent(BUY, 0), d(qty), listed.then_some(&i));
        assert_eq!(got.map_err(|r| code(&r).unwrap()), want);
    }

    /// The order's side is the approval's: an exit's the opposite of the position held,
    /// as the risk manager says; an entry approved on the wrong side is not sent.
    #[rstest]
    #[case::an_entry_its_own_side(SELL, Side::Sell, Ok(Side::Sell))]
    #[case::an_exit_of_a_long_sells(IntentAction::Exit, Side::Sell, Ok(Side::Sell))]
    #[case::an_exit_of_a_short_buys(IntentAction::Exit, Side::Buy, Ok(Side::Buy))]
    #[case::an_entry_approved_on_the_other_side(BUY, Side::Sell, Err(RefusalCode::RiskUnavailable))]
    fn the_side_of_the_order(
        #[case] action: IntentAction,
        #[case] approved: Side,
        #[case] want: Result<Side, RefusalCode>,
    ) {
        let i = intent(action, 0);
        let decision = RiskDecision::Approved {
            intent_id: i.intent_id.clone(),
            qty: d("1"),
            leverage: d("2"),
            reduce_only: action == IntentAction::Exit,
            side: approved,
        };
        let got = approval(&i, decision).map(|a| a.side);
        assert_eq!(got.map_err(|r| code(&r).unwrap()), want);
    }

    #[rstest]
    #[case::first_entry_on_the_symbol(false, "2", None, true)]
    #[case::same_leverage_again(false, "2", Some("2"), false)]
    #[case::leverage_changed_in_the_settings(false, "3", Some("2"), true)]
    #[case::an_exit_never(true, "3", None, false)]
    fn leverage_is_set_when_it_changes(
        #[case] reduce_only: bool,
        #[case] leverage: &str,
        #[case] last: Option<&str>,
        #[case] want: bool,
    ) {
        let a = Approval {
            qty: d("1"),
            leverage: d(leverage),
            reduce_only,
            side: Side::Buy,
        };
        assert_eq!(needs_leverage(&a, last.map(d)), want);
    }

    /// An entry carries SL/TP on the tick; an exit is reduce-only without them; the record
    /// is the order as sent, under the intent's link id.
    #[rstest]
    #[case::entry(false, Some(d("105.1")), Some(d("97")))]
    #[case::exit(true, None, None)]
    fn the_order_of_an_approval(
        #[case] reduce_only: bool,
        #[case] tp: Option<Decimal>,
        #[case] sl: Option<Decimal>,
    ) {
        let i = intent(BUY, 0);
        let p = order(&i, Side::Buy, d("0.012"), reduce_only, d("0.1"), 42);
        assert_eq!(p.create.order_link_id, i.intent_id.order_link_id());
        assert_eq!(p.create.reduce_only, reduce_only.then_some(true));
        assert_eq!((p.create.take_profit, p.create.stop_loss), (tp, sl));
        assert_eq!(p.create.qty, d("0.012"));
        assert_eq!(p.record.order_link_id, p.create.order_link_id);
        assert_eq!((p.record.take_profit, p.record.stop_loss), (tp, sl));
        assert_eq!(
            (p.record.reduce_only, p.record.updated_ms),
            (reduce_only, 42)
        );
        assert_eq!(p.record.order_id, "");
    }

    #[rstest]
    #[case(Some(d("64123.46")), d("0.5"), Some(d("64123.5")))]
    #[case(Some(d("0")), d("0.1"), None)]
    #[case(None, d("0.1"), None)]
    #[case(Some(d("1.23")), d("0"), Some(d("1.23")))]
    fn levels_go_on_the_tick(
        #[case] p: Option<Decimal>,
        #[case] tick: Decimal,
        #[case] want: Option<Decimal>,
    ) {
        assert_eq!(on_tick(p, tick), want);
    }

    #[test]
    fn what_an_answer_of_the_exchange_means() {
        assert_eq!(classify(Ok("o1".into())), Sent::Placed("o1".into()));
        let unknown = BybitError::UnknownOutcome {
            endpoint: "/v5/order/create".into(),
            order_link_id: "sb-x".into(),
            cause: Box::new(BybitError::Config("timeout".into())),
        };
        assert_eq!(classify(Err(&unknown)), Sent::LookUp);
        let refused = BybitError::Config("insufficient balance".into());
        assert!(matches!(classify(Err(&refused)), Sent::Refused(r) if r.contains("insufficient")));
    }

    fn outcome(reply: RouterReply, approved_entry: bool) -> Outcome {
        Outcome {
            reply,
            leverage_set_for: None,
            approved_entry,
            order: None,
        }
    }

    /// Three repliers for one intent: one attempt; the first hears "placed", the others
    /// that it is a repeat; an intent sent again later is answered from memory.
    #[test]
    fn one_attempt_per_intent_and_its_answer_to_every_replier() {
        let mut l: OrderLedger<u32> = OrderLedger::new(HashMap::new(), 10_000);
        let i = intent(BUY, 0);
        let link = i.intent_id.order_link_id();
        assert_eq!(
            l.admit(&i, 1, None, 0),
            Admission::Start { look_first: false }
        );
        assert_eq!(l.admit(&i, 2, None, 0), Admission::Joined);
        assert_eq!(l.admit(&i, 3, None, 0), Admission::Joined);
        let f = l.finish(
            &link,
            &i,
            outcome(placed(&i, &link, "o1".into(), false), true),
        );
        let dup: Vec<(u32, bool)> = f
            .replies
            .iter()
            .map(|(r, a)| {
                (
                    *r,
                    matches!(
                        a,
                        RouterReply::Placed {
                            duplicate: true,
                            ..
                        }
                    ),
                )
            })
            .collect();
        assert_eq!(dup, vec![(1, false), (2, true), (3, true)]);
        assert_eq!(f.tell_risk, None);
        match l.admit(&i, 4, None, 0) {
            Admission::Answer(
                4,
                RouterReply::Placed {
                    order_id,
                    duplicate: true,
                    ..
                },
            ) => {
                assert_eq!(order_id, "o1")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A stale entry is refused at admission, without an attempt (so without an exchange
    /// call): journalled once, its repeats answered alike. One whose earlier attempt ended
    /// unknown is not: its order may exist, so an attempt looks first. Exits never.
    #[test]
    fn a_stale_entry_is_refused_at_admission_and_journalled_once() {
        let mut l: OrderLedger<u32> = OrderLedger::new(HashMap::new(), 10_000);
        let old = intent(BUY, 0);
        for (reply, journalled) in [(1, true), (2, false), (3, false)] {
            match l.admit(&old, reply, None, 60_000) {
                Admission::Stale {
                    reply: r,
                    answer,
                    journal,
                } => {
                    assert_eq!(r, reply);
                    assert_eq!(code(&answer), Some(RefusalCode::Stale));
                    assert_eq!(journal.is_some(), journalled, "reply {reply}");
                }
                other => panic!("{other:?}"),
            }
        }
        let exit = intent(IntentAction::Exit, 0);
        assert_eq!(
            l.admit(&exit, 4, None, 60_000),
            Admission::Start { look_first: false }
        );

        let unknown = intent(SELL, 0);
        let link = unknown.intent_id.order_link_id();
        assert_eq!(
            l.admit(&unknown, 5, None, 1_000),
            Admission::Start { look_first: false }
        );
        let error = RouterReply::Error(ErrorReply {
            message: "outcome unknown".into(),
        });
        l.finish(&link, &unknown, outcome(error, true));
        assert_eq!(
            l.admit(&unknown, 6, None, 60_000),
            Admission::Start { look_first: true }
        );
    }

    /// The memory of stale refusals is bounded: the oldest is forgotten first.
    #[test]
    fn the_memory_of_stale_refusals_is_bounded() {
        let mut l: OrderLedger<u32> = OrderLedger::new(HashMap::new(), 10_000);
        let journalled =
            |l: &mut OrderLedger<u32>, i: &OrderIntent| match l.admit(i, 0, None, 60_000) {
                Admission::Stale { journal, .. } => journal.is_some(),
                other => panic!("{other:?}"),
            };
        let intents: Vec<OrderIntent> = (0..=STALE_REMEMBERED as i64)
            .map(|n| {
                let bar = n * 300_000;
                let btc = Symbol::new("BTCUSDT").unwrap();
                OrderIntent::new("t", btc, Interval::M5, bar, BUY, d("1"), None, None, 0)
            })
            .collect();
        for i in &intents {
            assert!(journalled(&mut l, i));
        }
        assert!(!journalled(&mut l, &intents[STALE_REMEMBERED]));
        assert!(journalled(&mut l, &intents[0]), "the oldest was forgotten");
        assert_eq!(l.stale_refused.len(), STALE_REMEMBERED);
    }

    /// The journal knows an order the ledger does not (a router restarted since).
    #[test]
    fn an_order_in_the_journal_answers_a_repeat() {
        let mut l: OrderLedger<u32> = OrderLedger::new(HashMap::new(), 10_000);
        let i = intent(BUY, 0);
        assert!(matches!(
            l.admit(&i, 1, Some("o9".into()), 0),
            Admission::Answer(
                1,
                RouterReply::Placed {
                    duplicate: true,
                    ..
                }
            )
        ));
    }

    /// An attempt that ended without knowing whether the order exists: the next one looks
    /// first; once resolved, no more.
    #[test]
    fn an_unknown_outcome_is_looked_up_by_the_next_attempt() {
        let mut l: OrderLedger<u32> = OrderLedger::new(HashMap::new(), 10_000);
        let i = intent(BUY, 0);
        let link = i.intent_id.order_link_id();
        l.admit(&i, 1, None, 0);
        let unknown = RouterReply::Error(ErrorReply {
            message: "outcome unknown".into(),
        });
        let f = l.finish(&link, &i, outcome(unknown, true));
        assert_eq!(
            f.tell_risk, None,
            "an unknown order may exist: still counted"
        );
        assert_eq!(
            l.admit(&i, 2, None, 0),
            Admission::Start { look_first: true }
        );
        let f = l.finish(
            &link,
            &i,
            outcome(refused(&i, RefusalCode::Exchange, "no".into()), true),
        );
        assert!(matches!(f.tell_risk, Some(RiskRequest::Unplaced { .. })));
        assert_eq!(
            l.admit(&i, 3, None, 0),
            Admission::Start { look_first: false }
        );
    }

    /// What an attempt's end sets off: the refusal journalled; the risk manager told only
    /// of an approved entry; a flatten counts only the approved entries it stopped.
    #[rstest]
    #[case::refused_by_risk(RefusalCode::MaxOpenPositions, false, false, false)]
    #[case::approved_then_below_min(RefusalCode::BelowMinQty, true, true, false)]
    #[case::approved_then_stopped_by_a_flatten(RefusalCode::Halted, true, true, true)]
    #[case::halted_at_the_risk_manager(RefusalCode::Halted, false, false, false)]
    fn the_steps_after_a_refusal(
        #[case] c: RefusalCode,
        #[case] approved_entry: bool,
        #[case] tell_risk: bool,
        #[case] stopped: bool,
    ) {
        let mut l: OrderLedger<u32> = OrderLedger::new(HashMap::new(), 10_000);
        let i = intent(BUY, 0);
        let link = i.intent_id.order_link_id();
        l.admit(&i, 1, None, 0);
        let f = l.finish(
            &link,
            &i,
            outcome(refused(&i, c, "why".into()), approved_entry),
        );
        assert_eq!(f.journal_refusal.map(|r| r.code), Some(c));
        assert_eq!(f.tell_risk.is_some(), tell_risk);
        assert_eq!(f.stopped_by_flatten, stopped);
        assert_eq!(f.replies.len(), 1);
    }

    #[rstest]
    #[case::one_order_alone_else_as_a_batch(1, 10, 10, vec![Route::Single, Route::Batch(1)])]
    #[case::one_order_as_a_batch_when_create_is_spent(1, 0, 10, vec![Route::Batch(1)])]
    #[case::a_burst_as_a_batch_then_singles(25, 10, 10, vec![Route::Batch(10), Route::Single])]
    #[case::the_batch_cut_to_its_room(25, 10, 4, vec![Route::Batch(4), Route::Single])]
    #[case::a_batch_room_of_one_after_create(5, 3, 1, vec![Route::Single, Route::Batch(1)])]
    #[case::both_spent(5, 0, 0, vec![])]
    #[case::nothing_queued(0, 10, 10, vec![])]
    fn a_queue_goes_out_over_both_budgets(
        #[case] queued: usize,
        #[case] single: u32,
        #[case] batch: u32,
        #[case] want: Vec<Route>,
    ) {
        assert_eq!(routes(queued, single, batch), want);
    }

    /// Exits first, then entries by symbol; equal ranks keep their arrival order.
    #[test]
    fn a_burst_lines_up_exits_first_then_entries_by_symbol() {
        let o = |sym: &str, link: &str, exit: bool| {
            let c = CreateOrder::market(sym, Side::Buy, d("1"), link);
            if exit { c.reduce_only() } else { c }
        };
        let mut burst = [
            o("SOLUSDT", "a", false),
            o("ETHUSDT", "b", true),
            o("ADAUSDT", "c", false),
            o("BTCUSDT", "d", true),
            o("ADAUSDT", "e", false),
        ];
        burst.sort_by(|x, y| burst_rank(x).cmp(&burst_rank(y)));
        let links: Vec<&str> = burst.iter().map(|c| c.order_link_id.as_str()).collect();
        assert_eq!(links, ["d", "b", "c", "e", "a"]);
    }

    #[test]
    fn the_leverage_set_is_remembered_per_symbol() {
        let mut l: OrderLedger<u32> = OrderLedger::new(HashMap::new(), 10_000);
        let i = intent_on("ETHUSDT", BUY, 0);
        let link = i.intent_id.order_link_id();
        l.admit(&i, 1, None, 0);
        let mut o = outcome(placed(&i, &link, "o1".into(), false), true);
        o.leverage_set_for = Some((i.symbol.clone(), d("3")));
        l.finish(&link, &i, o);
        assert_eq!(l.leverage_set(&i.symbol), Some(d("3")));
        assert_eq!(l.leverage_set(&Symbol::new("BTCUSDT").unwrap()), None);
    }
}
