//! Round trips from fills: a trade opens when a symbol's position leaves zero and closes
//! when it returns to zero (one-way mode, as shardbot trades). The exchange's `closedSize`
//! of each fill says how much of it closed the position, so a fill that reverses a
//! position closes one trade and opens the next, and a closing fill whose opening is
//! older than the fills looked at is skipped rather than mistaken for an entry.

use std::collections::HashMap;

use rust_decimal::Decimal;
use shardbot_journal::{JournalFill, TradeRecord};
use shardbot_protocol::{Fill, IntentId, Side};

/// A trade and the fills it was built from (funding payments included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub record: TradeRecord,
    pub fills: Vec<Fill>,
    entry_qty: Decimal,
    entry_value: Decimal,
    exit_qty: Decimal,
    exit_value: Decimal,
}

impl Built {
    fn open(f: &JournalFill, qty: Decimal, fee: Decimal) -> Built {
        let fill = &f.fill;
        Built {
            record: TradeRecord {
                trade_key: fill.exec_id.clone(),
                symbol: fill.symbol.as_str().to_owned(),
                side: fill.side,
                strategy: f.strategy.clone(),
                source: source_of(fill).to_owned(),
                entry_time_ms: fill.exec_time_ms,
                exit_time_ms: None,
                entry_order_ids: vec![fill.order_id.clone()],
                exit_order_ids: Vec::new(),
                last_fill_rowid: f.rowid,
                qty,
                entry_price: fill.exec_price,
                exit_price: None,
                fees: fee,
                funding: Decimal::ZERO,
                pnl: None,
                exit_reason: None,
            },
            fills: vec![fill.clone()],
            entry_qty: qty,
            entry_value: qty * fill.exec_price,
            exit_qty: Decimal::ZERO,
            exit_value: Decimal::ZERO,
        }
    }

    fn remaining(&self) -> Decimal {
        self.entry_qty - self.exit_qty
    }

    fn touch(&mut self, f: &JournalFill) {
        self.record.last_fill_rowid = self.record.last_fill_rowid.max(f.rowid);
        if !self.fills.iter().any(|x| x.exec_id == f.fill.exec_id) {
            self.fills.push(f.fill.clone());
        }
        if self.record.strategy.is_none() {
            self.record.strategy.clone_from(&f.strategy);
        }
    }

    fn add_entry(&mut self, f: &JournalFill, qty: Decimal, fee: Decimal) {
        self.entry_qty += qty;
        self.entry_value += qty * f.fill.exec_price;
        self.record.qty = self.entry_qty;
        self.record.entry_price = self.entry_value / self.entry_qty;
        self.record.fees += fee;
        push_once(&mut self.record.entry_order_ids, &f.fill.order_id);
        // Who opened the position: an entry added by an order shardbot did not place makes
        // the trade external. Its exits say nothing about it: the exchange's own
        // take-profit and stop-loss orders (attached to shardbot's entry) have no link id.
        if source_of(&f.fill) == "external" {
            self.record.source = "external".into();
        }
        self.touch(f);
    }

    fn add_exit(&mut self, f: &JournalFill, qty: Decimal, fee: Decimal) {
        self.exit_qty += qty;
        self.exit_value += qty * f.fill.exec_price;
        self.record.fees += fee;
        push_once(&mut self.record.exit_order_ids, &f.fill.order_id);
        self.touch(f);
        if self.remaining().is_zero() {
            let exit_price = self.exit_value / self.exit_qty;
            let gross = match self.record.side {
                Side::Buy => self.exit_value - self.entry_value,
                Side::Sell => self.entry_value - self.exit_value,
            };
            self.record.exit_time_ms = Some(f.fill.exec_time_ms);
            self.record.exit_price = Some(exit_price);
            // Bybit's closed PnL: fees and funding deducted.
            self.record.pnl = Some(gross - self.record.fees - self.record.funding);
            self.record.exit_reason = Some(exit_reason(f).to_owned());
        }
    }
}

fn push_once(v: &mut Vec<String>, id: &str) {
    if !v.iter().any(|x| x == id) {
        v.push(id.to_owned());
    }
}

/// How a trade closed, from the fill that closed it: the exchange's execType and
/// stopOrderType, else whose order it was (the router's link id and the strategy the
/// journal has for it). The backtest's words where they mean the same.
pub fn exit_reason(f: &JournalFill) -> &'static str {
    match f.fill.exec_type.as_str() {
        "BustTrade" => return "liquidation",
        "AdlTrade" => return "auto_deleverage",
        _ => {}
    }
    match f.fill.stop_order_type.as_deref() {
        Some("StopLoss" | "PartialStopLoss") => return "stop_loss",
        Some("TakeProfit" | "PartialTakeProfit") => return "take_profit",
        Some("TrailingStop") => return "trailing_stop",
        _ => {}
    }
    if source_of(&f.fill) == "external" {
        "by_hand"
    } else if f.strategy.as_deref() == Some(IntentId::KILL_SWITCH) {
        "kill_switch"
    } else if f.strategy.as_deref() == Some(IntentId::MANUAL_CLOSE) {
        "manual_close"
    } else {
        "signal"
    }
}

/// `shardbot` for an order the router placed (its link id), `external` otherwise.
fn source_of(f: &Fill) -> &'static str {
    if f.order_link_id.starts_with(IntentId::LINK_PREFIX) {
        "shardbot"
    } else {
        "external"
    }
}

/// The round trips of `fills` (in exchange-time order), closed ones and the still-open
/// ones, ordered by entry time.
pub fn build(fills: &[JournalFill]) -> Vec<Built> {
    let mut open: HashMap<String, Built> = HashMap::new();
    let mut done: Vec<Built> = Vec::new();
    for f in fills {
        let fill = &f.fill;
        let sym = fill.symbol.as_str();
        if fill.is_funding() {
            if let Some(t) = open.get_mut(sym) {
                t.record.funding += fill.exec_fee;
                t.touch(f);
            }
            continue;
        }
        if fill.exec_qty <= Decimal::ZERO {
            continue;
        }
        let closing = fill.closed_size.clamp(Decimal::ZERO, fill.exec_qty);
        let opening = fill.exec_qty - closing;
        let fee_share = |q: Decimal| fill.exec_fee * q / fill.exec_qty;
        if !closing.is_zero()
            && let Some(t) = open.get_mut(sym)
            && t.record.side != fill.side
        {
            let q = closing.min(t.remaining());
            t.add_exit(f, q, fee_share(q));
            if t.remaining().is_zero()
                && let Some(t) = open.remove(sym)
            {
                done.push(t);
            }
        }
        if opening.is_zero() {
            continue;
        }
        match open.get_mut(sym) {
            Some(t) if t.record.side == fill.side => t.add_entry(f, opening, fee_share(opening)),
            // Opening against an open position cannot happen in one-way mode: the
            // journal lacks the fills between; the newer position wins.
            _ => {
                open.insert(sym.to_owned(), Built::open(f, opening, fee_share(opening)));
            }
        }
    }
    done.extend(open.into_values());
    done.sort_by(|a, b| {
        (a.record.entry_time_ms, &a.record.trade_key)
            .cmp(&(b.record.entry_time_ms, &b.record.trade_key))
    });
    done
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;
    use shardbot_protocol::Symbol;

    struct F {
        rowid: i64,
        fill: Fill,
    }

    #[allow(clippy::too_many_arguments)]
    fn f(
        rowid: i64,
        id: &str,
        order: &str,
        side: Side,
        qty: Decimal,
        price: Decimal,
        closed: Decimal,
        t: i64,
    ) -> F {
        F {
            rowid,
            fill: Fill {
                exec_id: id.into(),
                order_id: order.into(),
                order_link_id: format!("sb-{order}"),
                symbol: Symbol::new("BTCUSDT").unwrap(),
                side,
                exec_qty: qty,
                exec_price: price,
                exec_value: qty * price,
                exec_fee: (qty * price * dec!(0.00055)).round_dp(8),
                fee_rate: Some(dec!(0.00055)),
                is_maker: false,
                closed_size: closed,
                exec_time_ms: t,
                exec_type: "Trade".into(),
                stop_order_type: None,
            },
        }
    }

    fn jf(v: Vec<F>) -> Vec<JournalFill> {
        v.into_iter()
            .map(|x| JournalFill {
                rowid: x.rowid,
                fill: x.fill,
                strategy: Some("trend_following".into()),
            })
            .collect()
    }

    #[test]
    fn a_long_round_trip_with_two_entries_and_funding() {
        let mut funding = f(
            3,
            "fu1",
            "",
            Side::Buy,
            dec!(0.002),
            dec!(100500),
            dec!(0),
            25,
        );
        funding.fill.exec_type = "Funding".into();
        funding.fill.exec_fee = dec!(0.0201);
        funding.fill.order_link_id = String::new();
        let fills = jf(vec![
            f(
                1,
                "e1",
                "o1",
                Side::Buy,
                dec!(0.001),
                dec!(100000),
                dec!(0),
                10,
            ),
            f(
                2,
                "e2",
                "o2",
                Side::Buy,
                dec!(0.001),
                dec!(101000),
                dec!(0),
                20,
            ),
            funding,
            f(
                4,
                "e3",
                "o3",
                Side::Sell,
                dec!(0.002),
                dec!(102000),
                dec!(0.002),
                30,
            ),
        ]);
        let b = build(&fills);
        assert_eq!(b.len(), 1);
        let r = &b[0].record;
        assert_eq!(r.trade_key, "e1");
        assert_eq!((r.side, r.qty), (Side::Buy, dec!(0.002)));
        assert_eq!(r.entry_price, dec!(100500));
        assert_eq!(r.exit_price, Some(dec!(102000)));
        // Fees: 0.055 + 0.05555 + 0.1122.
        assert_eq!(r.fees, dec!(0.22275));
        assert_eq!(r.funding, dec!(0.0201));
        // Gross (102000 − 100500) × 0.002 = 3; pnl = 3 − fees − funding.
        assert_eq!(r.pnl, Some(dec!(2.75715)));
        assert_eq!(r.entry_order_ids, vec!["o1", "o2"]);
        assert_eq!(r.exit_order_ids, vec!["o3"]);
        assert_eq!((r.exit_time_ms, r.last_fill_rowid), (Some(30), 4));
        assert_eq!(r.source, "shardbot");
        assert_eq!(b[0].fills.len(), 4);
    }

    #[test]
    fn a_reversal_closes_one_trade_and_opens_the_next_with_the_fee_split() {
        let fills = jf(vec![
            f(1, "e1", "o1", Side::Sell, dec!(1), dec!(200), dec!(0), 10),
            // Buys 3: closes the short of 1, opens a long of 2.
            f(2, "e2", "o2", Side::Buy, dec!(3), dec!(190), dec!(1), 20),
        ]);
        let b = build(&fills);
        assert_eq!(b.len(), 2);
        let (short, long) = (&b[0].record, &b[1].record);
        assert_eq!(short.pnl, Some(dec!(10) - dec!(0.11) - dec!(0.1045)));
        assert_eq!(short.exit_time_ms, Some(20));
        assert_eq!(
            (long.side, long.qty, long.exit_time_ms),
            (Side::Buy, dec!(2), None)
        );
        assert_eq!(long.fees, dec!(0.209), "two thirds of the fill's fee");
        assert_eq!(long.trade_key, "e2");
    }

    #[test]
    fn a_close_whose_entry_is_older_than_the_window_is_not_an_entry() {
        let mut manual = f(2, "e2", "m1", Side::Buy, dec!(1), dec!(50), dec!(0), 20);
        manual.fill.order_link_id = "by-hand".into();
        let fills = jf(vec![
            f(1, "e1", "o1", Side::Sell, dec!(1), dec!(200), dec!(1), 10),
            manual,
            f(3, "e3", "o3", Side::Sell, dec!(1), dec!(55), dec!(1), 30),
        ]);
        let b = build(&fills);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].record.trade_key, "e2");
        assert_eq!(
            b[0].record.source, "external",
            "its entry was not shardbot's"
        );
        assert_eq!(b[0].record.exit_time_ms, Some(30));
    }

    /// A round trip built in one pass from shardbot's entry and the exchange's take-profit
    /// (no link id: the exchange placed it) is shardbot's: it was marked external, and
    /// `shardbot drift` left it out of the paper side (found by its end-to-end test).
    #[test]
    fn an_exchange_side_exit_leaves_the_trade_shardbots() {
        let mut exit = f(2, "e2", "tp", Side::Buy, dec!(1), dec!(90), dec!(1), 20);
        exit.fill.order_link_id = String::new();
        let b = build(&jf(vec![
            f(1, "e1", "o1", Side::Sell, dec!(1), dec!(100), dec!(0), 10),
            exit,
        ]));
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].record.exit_time_ms, Some(20));
        assert_eq!(b[0].record.source, "shardbot");
    }

    /// How a trade closed, told by the fill that closed it.
    #[rstest::rstest]
    #[case::a_strategys_exit("sb-o2", Some("trend_following"), None, "Trade", "signal")]
    #[case::the_kill_switch("sb-o2", Some("kill-switch"), None, "Trade", "kill_switch")]
    #[case::closed_by_hand_on_the_dashboard(
        "sb-o2",
        Some("manual-close"),
        None,
        "Trade",
        "manual_close"
    )]
    #[case::the_positions_stop("", None, Some("StopLoss"), "Trade", "stop_loss")]
    #[case::a_partial_stop("", None, Some("PartialStopLoss"), "Trade", "stop_loss")]
    #[case::the_positions_take_profit("", None, Some("TakeProfit"), "Trade", "take_profit")]
    #[case::a_trailing_stop("", None, Some("TrailingStop"), "Trade", "trailing_stop")]
    #[case::a_liquidation("", None, None, "BustTrade", "liquidation")]
    #[case::auto_deleveraged("", None, None, "AdlTrade", "auto_deleverage")]
    #[case::an_order_by_hand("", None, None, "Trade", "by_hand")]
    #[case::an_order_by_hand_with_its_own_link_id("mine-1", None, None, "Trade", "by_hand")]
    fn the_exit_reason_is_the_closing_fills(
        #[case] link: &str,
        #[case] strategy: Option<&str>,
        #[case] stop_type: Option<&str>,
        #[case] exec_type: &str,
        #[case] want: &str,
    ) {
        let mut exit = f(2, "e2", "o2", Side::Buy, dec!(1), dec!(90), dec!(1), 20);
        exit.fill.order_link_id = link.into();
        exit.fill.stop_order_type = stop_type.map(str::to_owned);
        exit.fill.exec_type = exec_type.into();
        let mut fills = jf(vec![
            f(1, "e1", "o1", Side::Sell, dec!(1), dec!(100), dec!(0), 10),
            exit,
        ]);
        fills[1].strategy = strategy.map(str::to_owned);
        let b = build(&fills);
        assert_eq!(b[0].record.exit_reason.as_deref(), Some(want));
    }

    #[test]
    fn an_open_trade_has_no_exit_reason_and_a_partial_exit_gives_none_yet() {
        let b = build(&jf(vec![
            f(1, "e1", "o1", Side::Sell, dec!(2), dec!(100), dec!(0), 10),
            f(2, "e2", "o2", Side::Buy, dec!(1), dec!(90), dec!(1), 20),
        ]));
        assert_eq!(b[0].record.exit_time_ms, None);
        assert_eq!(b[0].record.exit_reason, None);
    }
}
