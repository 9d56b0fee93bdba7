//! The journal's trades as others read them: as analytics' [`TradeResult`]s, and as the
//! CSV file `shardbot trades --csv` writes and the dashboard exports (one format, one
//! place).

use std::io::Write;

use rust_decimal::Decimal;
use shardbot_analytics::TradeResult;
use shardbot_protocol::Side;

use crate::TradeView;

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
pub const TRADE_CSV_HEADER: [&str; 20] = [
    "trade_key",
    "symbol",
    "side",
    "strategy",
    "source",
    "qty",
    "entry_time_ms",
    "exit_time_ms",
    "entry_price",
    "exit_price",
    "fees",
    "funding",
    "pnl",
    "net",
    "verified",
    "verified_ms",
    "calc_pnl",
    "exchange_pnl",
    "discrepancy",
    "flags",
];

/// Writes `trades` as CSV (a header, then one row per trade). Amounts are written exactly
/// as stored (no rounding); `verified` is `verified` or `calculated`.
pub fn write_trades_csv<W: Write>(trades: &[TradeView], out: W) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(TRADE_CSV_HEADER)?;
    let s = |d: Option<Decimal>| d.map(|d| d.normalize().to_string()).unwrap_or_default();
    for t in trades {
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
            t.calc
                .exit_time_ms
                .map(|x| x.to_string())
                .unwrap_or_default(),
            s(Some(t.entry_price())),
            s(t.exit_price()),
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
            s(t.calc.pnl),
            s(t.exchange.map(|e| e.pnl)),
            t.discrepancy.clone().unwrap_or_default(),
            t.flags.clone(),
        ])?;
    }
    w.flush()?;
    Ok(())
}
