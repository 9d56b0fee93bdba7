//! The reconciler's tables: round-trip trades, discrepancies, balance snapshots and
//! reconciliation runs; and the fill reads the reconciler builds trades from.

use std::str::FromStr;

use rusqlite::{OptionalExtension, Row, params};
use rust_decimal::Decimal;
use shardbot_protocol::{Fill, Side, Symbol, TimestampMs};

use crate::{Journal, JournalError};

/// A fill as journalled, with its row id (the order it was written in) and the strategy
/// of the order it belongs to, when the router knew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalFill {
    pub rowid: i64,
    pub fill: Fill,
    pub strategy: Option<String>,
}

/// A round trip as calculated from fills (ours) or from the exchange's executions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRecord {
    /// The exec id of the fill that opened it: stable however often it is rebuilt.
    pub trade_key: String,
    pub symbol: String,
    /// The position's side: `Buy` = long, `Sell` = short.
    pub side: Side,
    pub strategy: Option<String>,
    /// `shardbot` (placed by the router), `external` (an order shardbot did not place:
    /// by hand, a liquidation), `exchange` (imported from the exchange's records because
    /// the journal had no fills for it).
    pub source: String,
    pub entry_time_ms: TimestampMs,
    /// `None` while the position is open.
    pub exit_time_ms: Option<TimestampMs>,
    pub entry_order_ids: Vec<String>,
    pub exit_order_ids: Vec<String>,
    /// The newest fill row it was built from.
    pub last_fill_rowid: i64,
    pub qty: Decimal,
    pub entry_price: Decimal,
    pub exit_price: Option<Decimal>,
    /// Opening and closing fees.
    pub fees: Decimal,
    /// Funding paid while open (negative = received).
    pub funding: Decimal,
    /// Closed PnL as Bybit defines it: gross − fees − funding, once closed.
    pub pnl: Option<Decimal>,
    /// How it closed, once closed: `signal`, `stop_loss`, `take_profit`, `trailing_stop`,
    /// `kill_switch`, `manual_close` (the dashboard's Close, `shardbot risk close`),
    /// `liquidation`, `auto_deleverage` or `by_hand` (an order placed outside shardbot; the backtest's
    /// words where they mean the same). `None` while open, and for a trade imported from
    /// the exchange's closed-PnL records or closed before the journal kept it.
    pub exit_reason: Option<String>,
}

/// The exchange's numbers for a closed trade (closed-PnL records and executions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeNumbers {
    pub qty: Decimal,
    pub entry_price: Decimal,
    pub exit_price: Decimal,
    pub fees: Decimal,
    pub funding: Decimal,
    pub pnl: Decimal,
}

/// A trade as stored: our calculation, the exchange's numbers once verified, and what
/// the reconciler found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeView {
    pub id: i64,
    pub calc: TradeRecord,
    pub exchange: Option<ExchangeNumbers>,
    pub verified_ms: Option<TimestampMs>,
    pub discrepancy: Option<String>,
    /// Space-separated: `restored`, `imported`, `external`.
    pub flags: String,
}

impl TradeView {
    pub fn verified(&self) -> bool {
        self.verified_ms.is_some() && self.exchange.is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.calc.exit_time_ms.is_some()
    }

    /// The record's numbers: the exchange's once verified, ours before.
    pub fn qty(&self) -> Decimal {
        self.exchange.map_or(self.calc.qty, |e| e.qty)
    }
    pub fn entry_price(&self) -> Decimal {
        self.exchange
            .map_or(self.calc.entry_price, |e| e.entry_price)
    }
    pub fn exit_price(&self) -> Option<Decimal> {
        self.exchange.map(|e| e.exit_price).or(self.calc.exit_price)
    }
    pub fn fees(&self) -> Decimal {
        self.exchange.map_or(self.calc.fees, |e| e.fees)
    }
    pub fn funding(&self) -> Decimal {
        self.exchange.map_or(self.calc.funding, |e| e.funding)
    }
    pub fn pnl(&self) -> Option<Decimal> {
        self.exchange.map(|e| e.pnl).or(self.calc.pnl)
    }
    /// What the trade did to the wallet (closed trades): its closed PnL, which has fees
    /// and funding deducted.
    pub fn net(&self) -> Option<Decimal> {
        self.pnl()
    }
}

/// A difference between the journal and the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    pub trade_key: String,
    /// What differs: `qty`, `entry_price`, `exit_price`, `fees`, `pnl`, `funding`,
    /// `fill <exec id> fee`, `missing fills`, `trade`, ...
    pub field: String,
    pub journal_value: String,
    pub exchange_value: String,
    pub at_ms: TimestampMs,
}

/// Expected balance against the wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceSnapshot {
    pub at_ms: TimestampMs,
    /// `baseline` (the first, expected = actual) or `check`.
    pub kind: String,
    pub expected: Decimal,
    pub actual: Decimal,
    pub difference: Decimal,
    /// `ok`, `explained` or `flagged`.
    pub status: String,
    pub note: String,
}

/// One sweep of the reconciler.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconciliationRun {
    /// `start`, `close`, `periodic`, `daily` or `manual`.
    pub kind: String,
    pub started_ms: TimestampMs,
    pub finished_ms: TimestampMs,
    /// Closed trades looked at.
    pub checked: u32,
    /// Of those, verified in this run.
    pub verified: u32,
    /// New discrepancies found.
    pub discrepancies: u32,
    /// Trades the exchange had and the journal lacked.
    pub imported: u32,
    /// Trades rebuilt from fills after they went missing from the trades table.
    pub restored: u32,
    /// Closed trades still unverified after the run.
    pub unverified: u32,
    pub oldest_unverified_exit_ms: Option<TimestampMs>,
    /// The newest fill row the run saw.
    pub fills_watermark: i64,
    pub error: Option<String>,
}

const TRADE_COLUMNS: &str = "id, trade_key, symbol, side, strategy, source, entry_time_ms,
    exit_time_ms, entry_order_ids, exit_order_ids, last_fill_rowid, calc_qty, calc_entry_price,
    calc_exit_price, calc_fees, calc_funding, calc_pnl, ex_qty, ex_entry_price, ex_exit_price,
    ex_fees, ex_funding, ex_pnl, verified_ms, discrepancy, flags, exit_reason";

fn ids(v: &[String]) -> String {
    v.join(" ")
}

fn split_ids(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

impl Journal {
    fn side(&self, s: &str) -> Result<Side, JournalError> {
        s.parse().map_err(|_| JournalError::Corrupt {
            path: self.path.clone(),
            value: s.to_owned(),
        })
    }

    pub(crate) fn dec(&self, s: &str) -> Result<Decimal, JournalError> {
        Decimal::from_str(s).map_err(|_| JournalError::Corrupt {
            path: self.path.clone(),
            value: s.to_owned(),
        })
    }

    pub(crate) fn opt_dec(&self, s: Option<String>) -> Result<Option<Decimal>, JournalError> {
        s.as_deref().map(|s| self.dec(s)).transpose()
    }

    /// Every fill with `exec_time_ms >= from_ms`, in the order of the exchange's clock
    /// (then the order they were written), with the strategy of its order.
    pub fn fills_from(&self, from_ms: TimestampMs) -> Result<Vec<JournalFill>, JournalError> {
        self.query_fills(
            "WHERE f.exec_time_ms >= ?1 ORDER BY f.exec_time_ms, f.rowid",
            from_ms,
        )
    }

    /// The newest `limit` fills (funding included), newest first.
    pub fn recent_fills(&self, limit: u32) -> Result<Vec<JournalFill>, JournalError> {
        self.query_fills(
            "ORDER BY f.exec_time_ms DESC, f.rowid DESC LIMIT ?1",
            i64::from(limit),
        )
    }

    /// Fills selected by `tail` (its `WHERE`, `ORDER BY` and `LIMIT`, with one parameter).
    fn query_fills(&self, tail: &str, param: i64) -> Result<Vec<JournalFill>, JournalError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT f.rowid, f.exec_id, f.order_id, f.order_link_id, f.symbol, f.side,
                    f.exec_qty, f.exec_price, f.exec_value, f.exec_fee, f.fee_rate, f.is_maker,
                    f.closed_size, f.exec_time_ms, f.exec_type, o.strategy, f.stop_order_type
                 FROM fills f LEFT JOIN orders o ON o.order_link_id = f.order_link_id
                    AND f.order_link_id != ''
                 {tail}"
            ))
            .map_err(|e| self.sql(e))?;
        type Raw = (i64, [String; 5], [String; 4], Option<String>, bool, String);
        type Raw2 = (i64, String, Option<String>, Option<String>);
        let rows: Vec<(Raw, Raw2)> = st
            .query_map([param], |r| {
                Ok((
                    (
                        r.get(0)?,
                        [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
                        [r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?],
                        r.get(10)?,
                        r.get(11)?,
                        r.get(12)?,
                    ),
                    (r.get(13)?, r.get(14)?, r.get(15)?, r.get(16)?),
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(
                |(
                    (rowid, [exec_id, order_id, link, sym, side], m, fee_rate, is_maker, closed),
                    (t, exec_type, strategy, stop_order_type),
                )| {
                    Ok(JournalFill {
                        rowid,
                        strategy,
                        fill: Fill {
                            exec_id,
                            order_id,
                            order_link_id: link,
                            symbol: Symbol::new(&sym).map_err(|_| JournalError::Corrupt {
                                path: self.path.clone(),
                                value: sym.clone(),
                            })?,
                            side: self.side(&side)?,
                            exec_qty: self.dec(&m[0])?,
                            exec_price: self.dec(&m[1])?,
                            exec_value: self.dec(&m[2])?,
                            exec_fee: self.dec(&m[3])?,
                            fee_rate: self.opt_dec(fee_rate)?,
                            is_maker,
                            closed_size: self.dec(&closed)?,
                            exec_time_ms: t,
                            exec_type,
                            stop_order_type,
                        },
                    })
                },
            )
            .collect()
    }

    /// The newest fill row id (0 with no fills).
    pub fn max_fill_rowid(&self) -> Result<i64, JournalError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(rowid), 0) FROM fills", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.sql(e))
    }

    fn trade_from_row(&self, r: &Row<'_>) -> rusqlite::Result<TradeRow> {
        Ok(TradeRow {
            id: r.get(0)?,
            text: [
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(5)?,
                r.get(8)?,
                r.get(9)?,
                r.get(11)?,
                r.get(12)?,
                r.get(14)?,
                r.get(15)?,
                r.get(25)?,
            ],
            strategy: r.get(4)?,
            entry_time_ms: r.get(6)?,
            exit_time_ms: r.get(7)?,
            last_fill_rowid: r.get(10)?,
            opt: [
                r.get(13)?,
                r.get(16)?,
                r.get(17)?,
                r.get(18)?,
                r.get(19)?,
                r.get(20)?,
                r.get(21)?,
                r.get(22)?,
            ],
            verified_ms: r.get(23)?,
            discrepancy: r.get(24)?,
            exit_reason: r.get(26)?,
        })
    }

    fn view(&self, t: TradeRow) -> Result<TradeView, JournalError> {
        let [
            key,
            symbol,
            side,
            source,
            entry_ids,
            exit_ids,
            qty,
            entry,
            fees,
            funding,
            flags,
        ] = t.text;
        let [
            calc_exit,
            calc_pnl,
            ex_qty,
            ex_entry,
            ex_exit,
            ex_fees,
            ex_funding,
            ex_pnl,
        ] = t.opt;
        let exchange = match (ex_qty, ex_entry, ex_exit, ex_fees, ex_funding, ex_pnl) {
            (Some(q), Some(en), Some(ex), Some(f), Some(fu), Some(p)) => Some(ExchangeNumbers {
                qty: self.dec(&q)?,
                entry_price: self.dec(&en)?,
                exit_price: self.dec(&ex)?,
                fees: self.dec(&f)?,
                funding: self.dec(&fu)?,
                pnl: self.dec(&p)?,
            }),
            _ => None,
        };
        Ok(TradeView {
            id: t.id,
            calc: TradeRecord {
                trade_key: key,
                symbol,
                side: self.side(&side)?,
                strategy: t.strategy,
                source,
                entry_time_ms: t.entry_time_ms,
                exit_time_ms: t.exit_time_ms,
                entry_order_ids: split_ids(&entry_ids),
                exit_order_ids: split_ids(&exit_ids),
                last_fill_rowid: t.last_fill_rowid,
                qty: self.dec(&qty)?,
                entry_price: self.dec(&entry)?,
                exit_price: self.opt_dec(calc_exit)?,
                fees: self.dec(&fees)?,
                funding: self.dec(&funding)?,
                pnl: self.opt_dec(calc_pnl)?,
                exit_reason: t.exit_reason,
            },
            exchange,
            verified_ms: t.verified_ms,
            discrepancy: t.discrepancy,
            flags,
        })
    }

    fn query_trades(
        &self,
        where_clause: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<TradeView>, JournalError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {TRADE_COLUMNS} FROM trades {where_clause} ORDER BY entry_time_ms, id"
            ))
            .map_err(|e| self.sql(e))?;
        let rows: Vec<TradeRow> = st
            .query_map(p, |r| self.trade_from_row(r))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter().map(|t| self.view(t)).collect()
    }

    /// Every trade, oldest entry first.
    pub fn trades(&self) -> Result<Vec<TradeView>, JournalError> {
        self.query_trades("", [])
    }

    /// Trades still open, or closed at or after `from_ms`.
    pub fn trades_since(&self, from_ms: TimestampMs) -> Result<Vec<TradeView>, JournalError> {
        self.query_trades(
            "WHERE exit_time_ms IS NULL OR exit_time_ms >= ?1",
            [from_ms],
        )
    }

    pub fn trade(&self, trade_key: &str) -> Result<Option<TradeView>, JournalError> {
        Ok(self
            .query_trades("WHERE trade_key = ?1", [trade_key])?
            .into_iter()
            .next())
    }

    /// Writes our calculation of a trade: a new trade, or the numbers of a known one
    /// (verification and flags are kept). Returns whether the trade was new.
    pub fn upsert_trade(&self, t: &TradeRecord, flags: &str) -> Result<bool, JournalError> {
        let existed = self
            .conn
            .query_row(
                "SELECT 1 FROM trades WHERE trade_key = ?1",
                [&t.trade_key],
                |_| Ok(()),
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .is_some();
        self.conn
            .execute(
                "INSERT INTO trades (trade_key, symbol, side, strategy, source, entry_time_ms,
                    exit_time_ms, entry_order_ids, exit_order_ids, last_fill_rowid, calc_qty,
                    calc_entry_price, calc_exit_price, calc_fees, calc_funding, calc_pnl, flags,
                    exit_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                    ?18)
                 ON CONFLICT(trade_key) DO UPDATE SET
                    strategy = COALESCE(excluded.strategy, trades.strategy),
                    exit_time_ms = excluded.exit_time_ms,
                    entry_order_ids = excluded.entry_order_ids,
                    exit_order_ids = excluded.exit_order_ids,
                    last_fill_rowid = excluded.last_fill_rowid,
                    calc_qty = excluded.calc_qty,
                    calc_entry_price = excluded.calc_entry_price,
                    calc_exit_price = excluded.calc_exit_price,
                    calc_fees = excluded.calc_fees,
                    calc_funding = excluded.calc_funding,
                    calc_pnl = excluded.calc_pnl,
                    exit_reason = COALESCE(excluded.exit_reason, trades.exit_reason)",
                params![
                    t.trade_key,
                    t.symbol,
                    t.side.as_str(),
                    t.strategy,
                    t.source,
                    t.entry_time_ms,
                    t.exit_time_ms,
                    ids(&t.entry_order_ids),
                    ids(&t.exit_order_ids),
                    t.last_fill_rowid,
                    t.qty.to_string(),
                    t.entry_price.to_string(),
                    t.exit_price.map(|d| d.to_string()),
                    t.fees.to_string(),
                    t.funding.to_string(),
                    t.pnl.map(|d| d.to_string()),
                    flags,
                    t.exit_reason,
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(!existed)
    }

    /// Marks a trade verified with the exchange's numbers (which become the record's),
    /// and what differed, if anything (`None` clears an earlier discrepancy).
    pub fn mark_verified(
        &self,
        trade_key: &str,
        ex: &ExchangeNumbers,
        at_ms: TimestampMs,
        discrepancy: Option<&str>,
    ) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE trades SET ex_qty = ?2, ex_entry_price = ?3, ex_exit_price = ?4,
                    ex_fees = ?5, ex_funding = ?6, ex_pnl = ?7,
                    verified_ms = COALESCE(verified_ms, ?8), discrepancy = ?9
                 WHERE trade_key = ?1",
                params![
                    trade_key,
                    ex.qty.to_string(),
                    ex.entry_price.to_string(),
                    ex.exit_price.to_string(),
                    ex.fees.to_string(),
                    ex.funding.to_string(),
                    ex.pnl.to_string(),
                    at_ms,
                    discrepancy,
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Removes a trade from the trades table (its discrepancies stay, as history).
    /// Returns whether there was one.
    pub fn remove_trade(&self, trade_key: &str) -> Result<bool, JournalError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM trades WHERE trade_key = ?1",
                params![trade_key],
            )
            .map_err(|e| self.sql(e))?;
        Ok(n > 0)
    }

    /// Adds a flag to a trade (once).
    pub fn add_flag(&self, trade_key: &str, flag: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE trades SET flags = TRIM(flags || ' ' || ?2)
                 WHERE trade_key = ?1 AND (' ' || flags || ' ') NOT LIKE ('% ' || ?2 || ' %')",
                params![trade_key, flag],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Records a discrepancy unless the same one (same trade, field and both values) is
    /// already recorded. Returns whether it was new.
    pub fn record_discrepancy(&self, d: &Discrepancy) -> Result<bool, JournalError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO discrepancies (trade_key, field, journal_value,
                    exchange_value, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    d.trade_key,
                    d.field,
                    d.journal_value,
                    d.exchange_value,
                    d.at_ms
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(n == 1)
    }

    /// Every discrepancy recorded, oldest first.
    pub fn discrepancies(&self) -> Result<Vec<Discrepancy>, JournalError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT trade_key, field, journal_value, exchange_value, at_ms
                 FROM discrepancies ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        st.query_map([], |r| {
            Ok(Discrepancy {
                trade_key: r.get(0)?,
                field: r.get(1)?,
                journal_value: r.get(2)?,
                exchange_value: r.get(3)?,
                at_ms: r.get(4)?,
            })
        })
        .map_err(|e| self.sql(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| self.sql(e))
    }

    pub fn record_snapshot(&self, s: &BalanceSnapshot) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT INTO balance_snapshots (at_ms, kind, expected, actual, difference,
                    status, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    s.at_ms,
                    s.kind,
                    s.expected.to_string(),
                    s.actual.to_string(),
                    s.difference.to_string(),
                    s.status,
                    s.note
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    fn query_snapshots(&self, sql: &str) -> Result<Vec<BalanceSnapshot>, JournalError> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let rows: Vec<(i64, String, [String; 3], String, String)> = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    [r.get(2)?, r.get(3)?, r.get(4)?],
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(at_ms, kind, [e, a, d], status, note)| {
                Ok(BalanceSnapshot {
                    at_ms,
                    kind,
                    expected: self.dec(&e)?,
                    actual: self.dec(&a)?,
                    difference: self.dec(&d)?,
                    status,
                    note,
                })
            })
            .collect()
    }

    /// The first snapshot of kind `baseline`: where expected balance starts.
    pub fn baseline(&self) -> Result<Option<BalanceSnapshot>, JournalError> {
        Ok(self
            .query_snapshots(
                "SELECT at_ms, kind, expected, actual, difference, status, note
                 FROM balance_snapshots WHERE kind = 'baseline' ORDER BY id LIMIT 1",
            )?
            .into_iter()
            .next())
    }

    /// The newest `limit` snapshots, oldest first.
    pub fn snapshots(&self, limit: u32) -> Result<Vec<BalanceSnapshot>, JournalError> {
        let mut v = self.query_snapshots(&format!(
            "SELECT at_ms, kind, expected, actual, difference, status, note
             FROM balance_snapshots ORDER BY id DESC LIMIT {limit}"
        ))?;
        v.reverse();
        Ok(v)
    }

    pub fn record_run(&self, r: &ReconciliationRun) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT INTO reconciliation_runs (kind, started_ms, finished_ms, checked,
                    verified, discrepancies, imported, restored, unverified,
                    oldest_unverified_exit_ms, fills_watermark, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    r.kind,
                    r.started_ms,
                    r.finished_ms,
                    r.checked,
                    r.verified,
                    r.discrepancies,
                    r.imported,
                    r.restored,
                    r.unverified,
                    r.oldest_unverified_exit_ms,
                    r.fills_watermark,
                    r.error
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The newest `limit` runs, newest first.
    pub fn runs(&self, limit: u32) -> Result<Vec<ReconciliationRun>, JournalError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT kind, started_ms, finished_ms, checked, verified, discrepancies,
                    imported, restored, unverified, oldest_unverified_exit_ms, fills_watermark,
                    error FROM reconciliation_runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.sql(e))?;
        st.query_map([limit], |r| {
            Ok(ReconciliationRun {
                kind: r.get(0)?,
                started_ms: r.get(1)?,
                finished_ms: r.get(2)?,
                checked: r.get(3)?,
                verified: r.get(4)?,
                discrepancies: r.get(5)?,
                imported: r.get(6)?,
                restored: r.get(7)?,
                unverified: r.get(8)?,
                oldest_unverified_exit_ms: r.get(9)?,
                fills_watermark: r.get(10)?,
                error: r.get(11)?,
            })
        })
        .map_err(|e| self.sql(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| self.sql(e))
    }

    /// Runs arbitrary SQL on the journal: for tests that tamper with it on purpose and
    /// for repairs by hand. Not for services.
    pub fn execute_unchecked(&self, sql: &str) -> Result<usize, JournalError> {
        self.conn.execute(sql, []).map_err(|e| self.sql(e))
    }
}

struct TradeRow {
    id: i64,
    text: [String; 11],
    strategy: Option<String>,
    entry_time_ms: i64,
    exit_time_ms: Option<i64>,
    last_fill_rowid: i64,
    opt: [Option<String>; 8],
    verified_ms: Option<i64>,
    discrepancy: Option<String>,
    exit_reason: Option<String>,
}
