//! One closed trade against the exchange's records: its closed-PnL records (matched by the
//! trade's exit order ids) give quantity, average prices, fees and closed PnL; its
//! executions (matched by the trade's order ids and exec ids) show which fill differs;
//! funding executions of the symbol while it was open give funding.

use rust_decimal::Decimal;
use shardbot_bybit::models::{order::Execution, position::ClosedPnl};
use shardbot_journal::{ExchangeNumbers, TradeRecord};
use shardbot_protocol::Fill;

/// A difference, both values as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    pub journal: String,
    pub exchange: String,
}

/// What the exchange says about a trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The exchange's records cover the whole trade.
    Complete {
        numbers: ExchangeNumbers,
        differences: Vec<Difference>,
    },
    /// The exchange has not (yet) reported all of it: closed quantity so far.
    Incomplete { closed_qty: Decimal },
}

/// The exchange's numbers for a trade from its closed-PnL records; `None` without any.
/// Fees are the records' opening and closing fees; older records without them (Bybit
/// added `openFee`/`closeFee` later) take the fees of the trade's `executions`.
pub fn numbers(
    closed: &[&ClosedPnl],
    executions: &[&Execution],
    funding: Decimal,
) -> Option<ExchangeNumbers> {
    let qty: Decimal = closed.iter().map(|c| c.closed_size).sum();
    if qty.is_zero() {
        return None;
    }
    let entry: Decimal = closed.iter().map(|c| c.cum_entry_value).sum();
    let exit: Decimal = closed.iter().map(|c| c.cum_exit_value).sum();
    Some(ExchangeNumbers {
        qty,
        entry_price: (entry / qty).normalize(),
        exit_price: (exit / qty).normalize(),
        fees: if closed
            .iter()
            .all(|c| c.open_fee.is_some() && c.close_fee.is_some())
        {
            closed
                .iter()
                .map(|c| c.open_fee.unwrap_or_default() + c.close_fee.unwrap_or_default())
                .sum()
        } else {
            executions.iter().map(|e| e.exec_fee).sum()
        },
        funding,
        pnl: closed.iter().map(|c| c.closed_pnl).sum(),
    })
}

/// Compares `trade` (built from `fills`) with the exchange's `closed` records of its exit
/// orders, the `executions` of its orders and the `funding` paid while it was open.
/// Money differing by less than `tolerance` is rounding, not a difference.
pub fn verify(
    trade: &TradeRecord,
    fills: &[Fill],
    closed: &[&ClosedPnl],
    executions: &[&Execution],
    funding: Decimal,
    tolerance: Decimal,
) -> Verdict {
    let Some(ex) = numbers(closed, executions, funding) else {
        return Verdict::Incomplete {
            closed_qty: Decimal::ZERO,
        };
    };
    if ex.qty < trade.qty {
        return Verdict::Incomplete { closed_qty: ex.qty };
    }
    let mut d = Vec::new();
    let mut money = |field: &str, ours: Decimal, theirs: Decimal| {
        if (ours - theirs).abs() >= tolerance {
            d.push(Difference {
                field: field.into(),
                journal: ours.normalize().to_string(),
                exchange: theirs.normalize().to_string(),
            });
        }
    };
    // Prices are compared by what they are worth on the trade's quantity.
    money(
        "entry_value",
        trade.entry_price * trade.qty,
        ex.entry_price * ex.qty,
    );
    money(
        "exit_value",
        trade.exit_price.unwrap_or_default() * trade.qty,
        ex.exit_price * ex.qty,
    );
    money("fees", trade.fees, ex.fees);
    money("pnl", trade.pnl.unwrap_or_default(), ex.pnl);
    money("funding", trade.funding, ex.funding);
    for e in executions {
        match fills.iter().find(|f| f.exec_id == e.exec_id) {
            None => money_missing(&mut d, e),
            Some(f) => {
                if (f.exec_fee - e.exec_fee).abs() >= tolerance {
                    d.push(diff(
                        format!("fill {} fee", e.exec_id),
                        f.exec_fee,
                        e.exec_fee,
                    ));
                }
                if f.exec_qty != e.exec_qty {
                    d.push(diff(
                        format!("fill {} qty", e.exec_id),
                        f.exec_qty,
                        e.exec_qty,
                    ));
                }
                if f.exec_price != e.exec_price {
                    d.push(diff(
                        format!("fill {} price", e.exec_id),
                        f.exec_price,
                        e.exec_price,
                    ));
                }
            }
        }
    }
    if ex.qty != trade.qty {
        d.insert(0, diff("qty".into(), trade.qty, ex.qty));
    }
    Verdict::Complete {
        numbers: ex,
        differences: d,
    }
}

fn diff(field: String, ours: Decimal, theirs: Decimal) -> Difference {
    Difference {
        field,
        journal: ours.normalize().to_string(),
        exchange: theirs.normalize().to_string(),
    }
}

fn money_missing(d: &mut Vec<Difference>, e: &Execution) {
    d.push(Difference {
        field: format!("fill {}", e.exec_id),
        journal: "missing".into(),
        exchange: format!(
            "{} {} @ {} fee {}",
            e.side,
            e.exec_qty.normalize(),
            e.exec_price.normalize(),
            e.exec_fee.normalize()
        ),
    });
}

/// One line for the trade's `discrepancy` column.
pub fn describe(differences: &[Difference]) -> Option<String> {
    (!differences.is_empty()).then(|| {
        differences
            .iter()
            .map(|d| {
                format!(
                    "{}: journal {} vs exchange {}",
                    d.field, d.journal, d.exchange
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;
    use rust_decimal_macros::dec;
    use shardbot_protocol::{Side, Symbol};

    fn closed(size: &str) -> ClosedPnl {
        serde_json::from_value(serde_json::json!({
            "symbol": "BTCUSDT", "orderId": "o2", "side": "Sell", "qty": "0.002",
            "orderPrice": "101000", "orderType": "Market", "execType": "Trade",
            "closedSize": size, "cumEntryValue": "200", "avgEntryPrice": "100000",
            "cumExitValue": "202", "avgExitPrice": "101000", "closedPnl": "1.7789",
            "openFee": "0.11", "closeFee": "0.1111", "fillCount": "1", "leverage": "2",
            "createdTime": "30", "updatedTime": "30"
        }))
        .unwrap()
    }

    fn exec(id: &str, order: &str, side: &str, price: &str, fee: &str, t: i64) -> Execution {
        serde_json::from_value(serde_json::json!({
            "symbol": "BTCUSDT", "orderId": order, "orderLinkId": format!("sb-{order}"),
            "side": side, "orderType": "Market", "execType": "Trade", "execPrice": price,
            "execQty": "0.002", "execValue": "200", "execFee": fee, "feeRate": "0.00055",
            "closedSize": "0", "leavesQty": "0", "isMaker": false, "execTime": t.to_string(),
            "execId": id
        }))
        .unwrap()
    }

    fn trade() -> (TradeRecord, Vec<Fill>) {
        let execs = [
            exec("e1", "o1", "Buy", "100000", "0.11", 10),
            exec("e2", "o2", "Sell", "101000", "0.1111", 30),
        ];
        let fills = execs.iter().map(|e| e.to_fill().unwrap()).collect();
        let t = TradeRecord {
            trade_key: "e1".into(),
            symbol: Symbol::new("BTCUSDT").unwrap().as_str().into(),
            side: Side::Buy,
            strategy: None,
            source: "shardbot".into(),
            entry_time_ms: 10,
            exit_time_ms: Some(30),
            entry_order_ids: vec!["o1".into()],
            exit_order_ids: vec!["o2".into()],
            last_fill_rowid: 2,
            qty: dec!(0.002),
            entry_price: dec!(100000),
            exit_price: Some(dec!(101000)),
            fees: dec!(0.2211),
            funding: Decimal::ZERO,
            pnl: Some(dec!(1.7789)),
            exit_reason: None,
        };
        (t, fills)
    }

    #[rstest]
    #[case::equal("", &[])]
    #[case::fee_changed_in_the_journal("fee", &["fees", "pnl", "fill e1 fee"])]
    #[case::rounding_below_a_cent("rounding", &[])]
    #[case::fill_missing_from_the_journal("missing", &["fill e2"])]
    #[case::price_differs("price", &["entry_value", "pnl", "fill e1 price"])]
    fn a_trade_against_the_exchange(#[case] damage: &str, #[case] fields: &[&str]) {
        let (mut t, mut fills) = trade();
        match damage {
            "fee" => {
                fills[0].exec_fee = dec!(9.99);
                t.fees = dec!(10.1011);
                t.pnl = Some(dec!(-8.1011));
            }
            "rounding" => t.pnl = Some(dec!(1.7749)),
            "missing" => {
                fills.pop();
            }
            "price" => {
                fills[0].exec_price = dec!(99000);
                t.entry_price = dec!(99000);
                t.pnl = Some(dec!(3.7789));
            }
            _ => {}
        }
        let rec = closed("0.002");
        let execs = [
            exec("e1", "o1", "Buy", "100000", "0.11", 10),
            exec("e2", "o2", "Sell", "101000", "0.1111", 30),
        ];
        let execs: Vec<&Execution> = execs.iter().collect();
        match verify(&t, &fills, &[&rec], &execs, Decimal::ZERO, dec!(0.01)) {
            Verdict::Complete {
                numbers,
                differences,
            } => {
                assert_eq!(
                    numbers,
                    ExchangeNumbers {
                        qty: dec!(0.002),
                        entry_price: dec!(100000),
                        exit_price: dec!(101000),
                        fees: dec!(0.2211),
                        funding: Decimal::ZERO,
                        pnl: dec!(1.7789),
                    },
                    "the exchange's numbers whatever the journal says"
                );
                let got: Vec<&str> = differences.iter().map(|d| d.field.as_str()).collect();
                assert_eq!(got, fields, "{differences:?}");
                if damage == "fee" {
                    assert_eq!(
                        describe(&differences[2..]).unwrap(),
                        "fill e1 fee: journal 9.99 vs exchange 0.11"
                    );
                }
            }
            v => panic!("{v:?}"),
        }
    }

    #[rstest]
    #[case::not_reported_yet(None)]
    #[case::partly_reported(Some("0.001"))]
    fn a_trade_the_exchange_has_not_fully_reported_waits(#[case] size: Option<&str>) {
        let (t, fills) = trade();
        let rec = size.map(closed);
        let recs: Vec<&ClosedPnl> = rec.iter().collect();
        assert!(matches!(
            verify(&t, &fills, &recs, &[], Decimal::ZERO, dec!(0.01)),
            Verdict::Incomplete { .. }
        ));
    }

    #[test]
    fn a_real_record_without_fee_fields_takes_the_executions_fees() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../common/bybit/test_data/rest/v5_position_closed_pnl.json"
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rec: ClosedPnl = serde_json::from_value(v["result"]["list"][0].clone()).unwrap();
        let e = exec("x", "5a373bfe", "Sell", "1180.59833333", "2.125077", 1);
        let n = numbers(&[&rec], &[&e], dec!(0.5)).unwrap();
        assert_eq!(n.qty, dec!(3));
        assert_eq!(n.pnl, dec!(-47.4065323));
        assert_eq!(n.entry_price, dec!(3584.9255) / dec!(3));
        assert_eq!(n.exit_price, dec!(1180.5983333333333333333333333));
        assert_eq!((n.fees, n.funding), (dec!(2.125077), dec!(0.5)));
    }
}
