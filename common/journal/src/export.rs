//! The journal's trades as others read them: as analytics' [`TradeResult`]s, and as the
//! CSV file `shardbot trades --csv` writes and the dashboard exports (one format, one
//! place).

use std::io::Write;

use rust_decimal::Decimal;
use shardbot_analytics::TradeResult;
use shardbot_protocol::Side;

use crate::{SimulatedBalance, TradeView, period_at};

impl TradeView {
    /// The closed trade as analytics sees it (`None` while it is open). A trade of no
    /// strategy is grouped under its source, e.g. `(external)`.
    pub fn result(&self) -> Option<TradeResult> {
        Some(TradeResult {
            symbol: self.calc.symbol.clone(),
            strategy: self.strategy_label(),
            entry_time_ms: self.calc.entry_time_ms,
            exit_time_ms: self.calc.exit_time_ms?,
            net: self.net()?,
            fees: self.fees(),
            verified: self.verified(),
        })
    }

    /// The strategy, or the source in parentheses for trades no strategy placed.
    pub fn strategy_label(&self) -> String {
        self.calc
            .strategy
            .clone()
            .unwrap_or_else(|| format!("({})", self.calc.source))
    }
}

/// The CSV columns, in order.
pub const TRADE_CSV_HEADER: [&str; 26] = [
    "trade_key",
    "symbol",
    "side",
    "strategy",
    "source",
    "qty",
    "entry_time_ms",
    "entry_time",
    "exit_time_ms",
    "exit_time",
    "entry_price",
    "exit_price",
    "exit_reason",
    "fees",
    "funding",
    "pnl",
    "net",
    "verified",
    "verified_ms",
    "verified_at",
    "calc_pnl",
    "exchange_pnl",
    "discrepancy",
    "flags",
    "balance_before",
    "return_pct",
];

/// An exchange time in ISO 8601, UTC, to the millisecond (`2026-12-05T04:47:23.120Z`):
/// the CSV's readable time beside each epoch-millisecond one.
fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    })
}

/// Writes `trades` as CSV (a header, then one row per trade). Amounts are written exactly
/// as stored (no rounding); times as epoch milliseconds and, beside them, ISO 8601 UTC;
/// `verified` is `verified` or `calculated`; `exit_reason` says how it closed
/// (`stop_loss`, `take_profit`, `signal`, ...: [`crate::TradeRecord::exit_reason`]). `balance_before` is
/// the simulated balance a closed trade was traded on (the balance set for its period,
/// `balances`, plus the net of that period's trades closed before it) and `return_pct`
/// its net in percent of that; both empty for an open trade or without a balance.
pub fn write_trades_csv<W: Write>(
    trades: &[TradeView],
    balances: &[SimulatedBalance],
    out: W,
) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(TRADE_CSV_HEADER)?;
    let s = |d: Option<Decimal>| d.map(|d| d.normalize().to_string()).unwrap_or_default();
    let before = balances_before(trades, balances);
    for (t, before) in trades.iter().zip(before) {
        let ret = before
            .zip(t.net())
            .filter(|(b, _)| *b > Decimal::ZERO)
            .map(|(b, n)| (n / b * Decimal::ONE_HUNDRED).round_dp(4));
        w.write_record([
            t.calc.trade_key.clone(),
            t.calc.symbol.clone(),
            if t.calc.side == Side::Buy {
                "long"
            } else {
                "short"
            }
            .into(),
            t.calc.strategy.clone().unwrap_or_default(),
            t.calc.source.clone(),
            s(Some(t.qty())),
            t.calc.entry_time_ms.to_string(),
            iso(t.calc.entry_time_ms),
            t.calc
                .exit_time_ms
                .map(|x| x.to_string())
                .unwrap_or_default(),
            t.calc.exit_time_ms.map(iso).unwrap_or_default(),
            s(Some(t.entry_price())),
            s(t.exit_price()),
            t.calc.exit_reason.clone().unwrap_or_default(),
            s(Some(t.fees())),
            s(Some(t.funding())),
            s(t.pnl()),
            s(t.net()),
            if t.verified() {
                "verified"
            } else {
                "calculated"
            }
            .into(),
            t.verified_ms.map(|x| x.to_string()).unwrap_or_default(),
            t.verified_ms.map(iso).unwrap_or_default(),
            s(t.calc.pnl),
            s(t.exchange.map(|e| e.pnl)),
            t.discrepancy.clone().unwrap_or_default(),
            t.flags.clone(),
            s(before),
            s(ret),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Each trade's simulated balance before it closed (see [`write_trades_csv`]).
fn balances_before(trades: &[TradeView], balances: &[SimulatedBalance]) -> Vec<Option<Decimal>> {
    let mut closed: Vec<(usize, i64, Decimal)> = trades
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((i, t.calc.exit_time_ms?, t.net()?)))
        .collect();
    closed.sort_by_key(|&(i, exit, _)| (exit, i));
    let mut out = vec![None; trades.len()];
    let mut running: Option<(i64, Decimal)> = None;
    for (i, exit, net) in closed {
        let Some(b) = period_at(balances, exit) else {
            continue;
        };
        let balance = match running {
            Some((set, bal)) if set == b.set_at_ms => bal,
            _ => b.simulated_balance,
        };
        out[i] = Some(balance);
        running = Some((b.set_at_ms, balance + net));
    }
    out
}
