//! The kill switch's "close everything", owned by the router because every order goes
//! through it. A flatten stops the entries whose approval was asked for before it began
//! (the risk manager halts before it starts a flatten, so any later request is refused
//! there; these are refused at the last moment before sending, see [`EntryGate`]), then
//! reads the positions from the exchange and closes every one with reduce-only market
//! orders, as many per position as the symbol's largest market order needs
//! ([`close_orders`]), reads again and repeats until the exchange shows no position (and no
//! entry is being sent) or the deadline passes. Reduce-only orders can never open or flip a
//! position (the exchange cuts them to the position and cancels them once it is gone), so a
//! repeated or doubled close is harmless: each read of the account is the truth the next
//! round acts on.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU32, Ordering},
    },
    time::Duration,
};

use rust_decimal::Decimal;
use shardbot_bybit::{
    models::position::PositionInfo,
    rest::{BybitClient, CreateOrder},
};
use shardbot_protocol::{
    FlattenReport, Instrument, IntentAction, IntentId, Interval, OpenPosition, OrderEvent,
    OrderStatus, OrderType, Side, Symbol, now_ms,
};
use shardbot_service::alert::Alerts;

use crate::desk::Desk;

/// Pause between a round's orders and the next read of the account: the fills of market
/// orders reach the position list within it (a retry interval, not a race cover: a position
/// still open at the next read is simply closed again).
pub const ROUND_WAIT: Duration = Duration::from_millis(300);
/// An entry sent less than this before a read may not be in that read's positions yet: the
/// account is called flat only by a read that starts at least this long after the last entry
/// went out.
pub const SETTLE_MS: i64 = 1_000;
/// Orders per position per round, at most (a position many times the largest market order
/// is closed over several rounds).
pub const MAX_PARTS: usize = 20;
/// Errors kept in a report.
const MAX_ERRORS: usize = 10;
/// The strategy name of the flatten's orders in the journal.
pub const STRATEGY: &str = IntentId::KILL_SWITCH;

/// The strategy name of a flatten's orders: the kill switch's, or a close by hand's.
pub fn strategy_of(report: &FlattenReport) -> &'static str {
    if report.symbol.is_some() {
        IntentId::MANUAL_CLOSE
    } else {
        STRATEGY
    }
}

/// What the router's entry attempts and its flattens share: when the newest flatten began,
/// how many entries are between that check and the exchange's answer, and when the last
/// one went out.
#[derive(Debug, Default)]
pub struct EntryGate {
    stopped_at_ms: AtomicI64,
    sending: AtomicU32,
    last_sent_ms: AtomicI64,
}

/// An entry on its way to the exchange, counted until dropped.
#[derive(Debug)]
pub struct Sending(Arc<EntryGate>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.last_sent_ms.store(now_ms(), Ordering::SeqCst);
        self.0.sending.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EntryGate {
    /// A flatten begins now: entries approved until now are not sent any more.
    pub fn stop_entries(&self, now_ms: i64) {
        self.stopped_at_ms.fetch_max(now_ms, Ordering::SeqCst);
    }

    /// The last check before an entry whose approval was asked for at `asked_ms` is sent:
    /// `Err` with the flatten's start when it began at or after that, else a guard that
    /// counts the entry as being sent until it is dropped (after the exchange answered).
    /// The count is raised before the check, so a flatten that reads no entry being sent
    /// knows that any later one sees its stop.
    pub fn enter(self: &Arc<Self>, asked_ms: i64) -> Result<Sending, i64> {
        self.sending.fetch_add(1, Ordering::SeqCst);
        let guard = Sending(Arc::clone(self));
        let stopped = self.stopped_at_ms.load(Ordering::SeqCst);
        if stopped > 0 && asked_ms <= stopped {
            return Err(stopped);
        }
        Ok(guard)
    }

    /// Whether a read of the account that starts at `now_ms` can call it flat: no entry is
    /// being sent and the last one went out long enough before.
    pub fn quiet(&self, now_ms: i64) -> bool {
        self.sending.load(Ordering::SeqCst) == 0
            && now_ms.saturating_sub(self.last_sent_ms.load(Ordering::SeqCst)) >= SETTLE_MS
    }
}

/// One reduce-only market order of a flatten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseOrder {
    pub intent_id: IntentId,
    pub symbol: Symbol,
    pub side: Side,
    pub qty: Decimal,
}

/// The open positions of an exchange read.
pub fn open_positions(list: &[PositionInfo]) -> Vec<OpenPosition> {
    list.iter()
        .filter_map(PositionInfo::to_open_position)
        .collect()
}

/// `size` in parts of at most the symbol's largest market order, at most [`MAX_PARTS`]
/// (the rest is closed by a later round). A last part below the minimum order quantity
/// takes what it lacks from the one before. Without the symbol's filters, one part: the
/// exchange says what is wrong with it.
pub fn split_qty(size: Decimal, inst: Option<&Instrument>) -> Vec<Decimal> {
    let Some(inst) = inst else {
        return vec![size];
    };
    let max = inst.max_market_order_qty;
    if max <= Decimal::ZERO || size <= max {
        return vec![size];
    }
    let mut parts = Vec::new();
    let mut left = size;
    while left > Decimal::ZERO && parts.len() < MAX_PARTS {
        let part = left.min(max);
        parts.push(part);
        left -= part;
    }
    if let [.., before, last] = parts.as_mut_slice()
        && *last < inst.min_order_qty
    {
        let lack = inst.min_order_qty - *last;
        if *before - lack >= inst.min_order_qty {
            *before -= lack;
            *last += lack;
        }
    }
    parts
}

/// The orders that close `open`, each with its own intent id (so its own orderLinkId),
/// derived from the flatten, the round, the symbol and the part: a round sent again after a
/// router restart is recognised by the exchange as the same orders.
pub fn close_orders(
    strategy: &str,
    flatten_id: &str,
    round: u32,
    open: &[OpenPosition],
    instruments: &std::collections::HashMap<Symbol, Instrument>,
) -> Vec<CloseOrder> {
    open.iter()
        .flat_map(|p| {
            split_qty(p.size, instruments.get(&p.symbol))
                .into_iter()
                .enumerate()
                .map(|(i, qty)| CloseOrder {
                    intent_id: IntentId::derive(
                        &format!("{strategy}:{flatten_id}:{round}:{i}"),
                        &p.symbol,
                        Interval::M1,
                        0,
                        IntentAction::Exit,
                    ),
                    symbol: p.symbol.clone(),
                    side: p.side.opposite(),
                    qty,
                })
        })
        .collect()
}

/// What a flatten tells the router actor as it goes: its report, and the orders it placed
/// (to journal).
#[derive(Debug)]
pub struct Progress {
    pub report: FlattenReport,
    pub orders: Vec<OrderEvent>,
}

fn note_error(report: &mut FlattenReport, e: String) {
    tracing::error!(flatten_id = report.flatten_id, error = e, "flatten");
    report.errors.push(e);
    if report.errors.len() > MAX_ERRORS {
        report.errors.remove(0);
    }
}

/// Runs the flatten of `report` until flat or its deadline, calling `progress` after every
/// round and once at the end.
pub async fn run(
    client: BybitClient,
    desk: Desk,
    instruments: Arc<std::collections::HashMap<Symbol, Instrument>>,
    gate: Arc<EntryGate>,
    mut report: FlattenReport,
    alerts: Alerts,
    progress: impl Fn(Progress),
) {
    loop {
        let read_at = now_ms();
        let quiet = gate.quiet(read_at);
        let mut orders = Vec::new();
        match client.positions().await {
            Err(e) => note_error(&mut report, format!("cannot read the positions: {e}")),
            Ok(list) => {
                report.rounds += 1;
                report.left = open_positions(&list);
                // A close by hand: that position only, whatever entries are being sent.
                let quiet = match &report.symbol {
                    Some(s) => {
                        report.left.retain(|p| &p.symbol == s);
                        true
                    }
                    None => quiet,
                };
                if report.left.is_empty() && quiet {
                    report.flat = true;
                    break;
                }
                if now_ms() >= report.deadline_ms {
                    break;
                }
                let closes = close_orders(
                    strategy_of(&report),
                    &report.flatten_id,
                    report.rounds,
                    &report.left,
                    &instruments,
                );
                // All of a round's closes at once: the desk sends them over both order
                // budgets, ahead of any entry.
                let placed = futures_util::future::join_all(closes.iter().map(|o| {
                    let link = o.intent_id.order_link_id();
                    let mut create = CreateOrder::market(o.symbol.as_str(), o.side, o.qty, &link);
                    create.reduce_only = Some(true);
                    desk.place(create)
                }))
                .await;
                for (o, result) in closes.into_iter().zip(placed) {
                    let link = o.intent_id.order_link_id();
                    match result {
                        Ok(id) => {
                            report.orders_placed += 1;
                            tracing::warn!(flatten_id = report.flatten_id, symbol = %o.symbol, side = %o.side, qty = %o.qty, order_id = id.order_id, "flatten: close order placed");
                            orders.push(OrderEvent {
                                order_id: id.order_id,
                                order_link_id: link,
                                intent_id: Some(o.intent_id),
                                symbol: o.symbol,
                                side: o.side,
                                order_type: OrderType::Market,
                                status: OrderStatus::New,
                                qty: o.qty,
                                price: None,
                                avg_price: None,
                                cum_exec_qty: Decimal::ZERO,
                                cum_exec_fee: Decimal::ZERO,
                                reduce_only: true,
                                take_profit: None,
                                stop_loss: None,
                                reject_reason: None,
                                stop_order_type: None,
                                updated_ms: now_ms(),
                            });
                        }
                        // Refused or unknown: the next read says whether the position is
                        // still there, and the next round closes it.
                        Err(e) => note_error(
                            &mut report,
                            format!("close {} {} {}: {e}", o.symbol, o.side, o.qty),
                        ),
                    }
                }
            }
        }
        if now_ms() >= report.deadline_ms && report.rounds > 0 && !orders.is_empty() {
            // The orders just sent get one more read to show they closed everything.
            report.deadline_ms = now_ms() + ROUND_WAIT.as_millis() as i64 * 2;
        }
        progress(Progress {
            report: report.clone(),
            orders,
        });
        if now_ms() >= report.deadline_ms {
            break;
        }
        tokio::time::sleep(ROUND_WAIT).await;
    }
    report.finished_ms = Some(now_ms());
    if report.flat {
        tracing::warn!(
            flatten_id = report.flatten_id,
            rounds = report.rounds,
            orders = report.orders_placed,
            "{}",
            report.summary()
        );
    } else {
        tracing::error!(
            flatten_id = report.flatten_id,
            rounds = report.rounds,
            left = report.left.len(),
            "{}",
            report.summary()
        );
    }
    alerts.send(
        if report.flat {
            "flatten_flat"
        } else {
            "flatten_not_flat"
        },
        &report.summary(),
        serde_json::to_value(&report).unwrap_or_default(),
    );
    progress(Progress {
        report,
        orders: Vec::new(),
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn inst(max: &str, min: &str) -> Instrument {
        Instrument {
            symbol: Symbol::new("BTCUSDT").unwrap(),
            tick_size: d("0.1"),
            qty_step: d("0.001"),
            min_order_qty: d(min),
            max_market_order_qty: d(max),
            min_notional: d("5"),
            max_leverage: d("100"),
            funding_interval_min: 480,
        }
    }

    #[rstest]
    #[case::under_the_max("0.5", "1", "0.001", &["0.5"])]
    #[case::at_the_max("1", "1", "0.001", &["1"])]
    #[case::two_and_a_half("2.5", "1", "0.001", &["1", "1", "0.5"])]
    #[case::remainder_below_min("2.05", "1", "0.1", &["1", "0.95", "0.1"])]
    #[case::exact_multiple("3", "1", "0.001", &["1", "1", "1"])]
    #[case::no_max_known("7", "0", "0.001", &["7"])]
    fn a_position_is_split_at_the_largest_market_order(
        #[case] size: &str,
        #[case] max: &str,
        #[case] min: &str,
        #[case] want: &[&str],
    ) {
        let got = split_qty(d(size), Some(&inst(max, min)));
        let want: Vec<Decimal> = want.iter().map(|s| d(s)).collect();
        assert_eq!(got, want);
        assert_eq!(got.iter().sum::<Decimal>(), d(size), "nothing left open");
    }

    #[test]
    fn a_huge_position_is_closed_over_several_rounds() {
        let got = split_qty(d("1000"), Some(&inst("1", "0.001")));
        assert_eq!(got.len(), MAX_PARTS);
        assert!(got.iter().all(|q| *q == Decimal::ONE));
    }

    #[test]
    fn unknown_symbol_is_one_order_of_the_whole_size() {
        assert_eq!(split_qty(d("3.3"), None), vec![d("3.3")]);
    }

    #[test]
    fn close_orders_are_opposite_reduce_and_distinct_per_round_and_part() {
        let btc = Symbol::new("BTCUSDT").unwrap();
        let eth = Symbol::new("ETHUSDT").unwrap();
        let open = vec![
            OpenPosition {
                symbol: btc.clone(),
                side: Side::Buy,
                size: d("2.5"),
            },
            OpenPosition {
                symbol: eth.clone(),
                side: Side::Sell,
                size: d("3"),
            },
        ];
        let instruments = [(btc.clone(), inst("1", "0.001"))].into_iter().collect();
        let r1 = close_orders(STRATEGY, "k1", 1, &open, &instruments);
        assert_eq!(r1.len(), 4);
        assert!(
            r1[..3]
                .iter()
                .all(|o| o.symbol == btc && o.side == Side::Sell)
        );
        assert_eq!((r1[3].side, r1[3].qty), (Side::Buy, d("3")));
        let r1_again = close_orders(STRATEGY, "k1", 1, &open, &instruments);
        assert_eq!(r1, r1_again, "a round sent again has the same orderLinkIds");
        let r2 = close_orders(STRATEGY, "k1", 2, &open, &instruments);
        // A close by hand of the same id and round is other orders.
        let by_hand = close_orders(IntentId::MANUAL_CLOSE, "k1", 1, &open, &instruments);
        let mut links: Vec<String> = r1
            .iter()
            .chain(&r2)
            .chain(&by_hand)
            .map(|o| o.intent_id.order_link_id())
            .collect();
        assert!(links.iter().all(|l| l.len() <= 36 && l.starts_with("sb-")));
        links.sort();
        links.dedup();
        assert_eq!(
            links.len(),
            12,
            "every order of every round its own link id"
        );
    }

    #[test]
    fn the_gate_stops_entries_approved_before_the_flatten() {
        let gate = Arc::new(EntryGate::default());
        let early = gate.enter(1_000).unwrap();
        assert!(!gate.quiet(now_ms()), "an entry is being sent");
        gate.stop_entries(2_000);
        assert_eq!(gate.enter(1_999).unwrap_err(), 2_000);
        assert_eq!(gate.enter(2_000).unwrap_err(), 2_000);
        let late = gate.enter(2_001).unwrap();
        drop(early);
        drop(late);
        assert!(!gate.quiet(now_ms()), "the last entry went out just now");
        assert!(gate.quiet(now_ms() + SETTLE_MS));
    }
}
