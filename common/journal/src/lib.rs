//! The trade journal: one SQLite file per account stack, in WAL mode so readers (the
//! dashboard, `shardbot`) never block the writers. Each table has one owning service that
//! writes it; everyone else reads.
//!
//! | table | written by | what |
//! |---|---|---|
//! | `schema_version` | whoever opens the file first | migrations applied |
//! | `orders` | order-router | every order the router placed or found, by orderLinkId |
//! | `fills` | order-router | every execution, by exec id |
//! | `refusals` | order-router | every intent refused (by the risk manager or the router), with its reason |
//! | `trades` | reconciler | round trips (entry → flat): our calculated numbers (`calc_*`) and the exchange's (`ex_*`), verified time, discrepancy, flags |
//! | `discrepancies` | reconciler | every difference found between the journal and the exchange, both values |
//! | `balance_snapshots` | reconciler | expected balance (baseline + trades) against the wallet, with the difference |
//! | `reconciliation_runs` | reconciler | every sweep: what it checked, verified, imported and found |
//! | `intent_stages` | order-router | every placed intent's stages, from its bar's close to its first fill (and `early_fills`, a fill heard before them) |
//! | `simulated_balances` | risk-manager | every simulated balance set, when, and its offset from the exchange's |
//!
//! A trade's PnL (`calc_pnl`, `ex_pnl`) is Bybit's closed PnL: gross PnL minus the opening
//! and closing fees and the funding paid while the position was open (Bybit's help centre:
//! "Closed P&L … after deducting trading fees and funding fees"). It is exactly what the
//! trade did to the wallet. Fees and funding (positive = paid) have their own columns too.
//!
//! Money is stored as TEXT in the exchange's decimal notation, so nothing is rounded.
//! Migrations are numbered and applied in order inside a transaction; a newer binary opens
//! an older journal by applying the missing ones, an older binary refuses a newer journal.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;
use shardbot_protocol::{Fill, OrderEvent, OrderIntent, Refusal, TimestampMs};

mod balances;
mod export;
mod in_force;
mod stages;
mod trades;
pub use balances::{EquitySample, Period, SimulatedBalance, period_at, periods};
pub use export::{TRADE_CSV_HEADER, write_trades_csv};
pub use stages::{
    IntentStages, RouterStamps, SPANS, SpanSummary, StageSummary, first_acknowledged_per_close,
};
pub use trades::{
    BalanceSnapshot, Discrepancy, ExchangeNumbers, JournalFill, ReconciliationRun, TradeRecord,
    TradeView,
};

/// The migrations, in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[&str] = &[
    // 1: orders and fills (order-router)
    "CREATE TABLE orders (
        order_link_id TEXT PRIMARY KEY,
        order_id      TEXT NOT NULL,
        intent_id     TEXT,
        symbol        TEXT NOT NULL,
        side          TEXT NOT NULL,
        qty           TEXT NOT NULL,
        reduce_only   INTEGER NOT NULL,
        take_profit   TEXT,
        stop_loss     TEXT,
        status        TEXT NOT NULL,
        cum_exec_qty  TEXT NOT NULL,
        avg_price     TEXT,
        updated_ms    INTEGER NOT NULL
     );
     CREATE TABLE fills (
        exec_id       TEXT PRIMARY KEY,
        order_id      TEXT NOT NULL,
        order_link_id TEXT NOT NULL,
        symbol        TEXT NOT NULL,
        side          TEXT NOT NULL,
        exec_qty      TEXT NOT NULL,
        exec_price    TEXT NOT NULL,
        exec_value    TEXT NOT NULL,
        exec_fee      TEXT NOT NULL,
        fee_rate      TEXT,
        is_maker      INTEGER NOT NULL,
        closed_size   TEXT NOT NULL,
        exec_time_ms  INTEGER NOT NULL
     );
     CREATE INDEX fills_by_link ON fills(order_link_id);
     CREATE INDEX fills_by_time ON fills(exec_time_ms);",
    // 2: refusals (order-router)
    "CREATE TABLE refusals (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        intent_id     TEXT NOT NULL,
        strategy      TEXT NOT NULL,
        symbol        TEXT NOT NULL,
        bar_open_ms   INTEGER NOT NULL,
        action        TEXT NOT NULL,
        code          TEXT NOT NULL,
        reason        TEXT NOT NULL,
        at_ms         INTEGER NOT NULL
     );
     CREATE INDEX refusals_by_time ON refusals(at_ms);",
    // 3: execution types and strategies (order-router); trades, discrepancies, balance
    // snapshots and reconciliation runs (reconciler)
    "ALTER TABLE fills ADD COLUMN exec_type TEXT NOT NULL DEFAULT 'Trade';
     ALTER TABLE orders ADD COLUMN strategy TEXT;
     CREATE TABLE trades (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        trade_key        TEXT NOT NULL UNIQUE,
        symbol           TEXT NOT NULL,
        side             TEXT NOT NULL,
        strategy         TEXT,
        source           TEXT NOT NULL,
        entry_time_ms    INTEGER NOT NULL,
        exit_time_ms     INTEGER,
        entry_order_ids  TEXT NOT NULL,
        exit_order_ids   TEXT NOT NULL,
        last_fill_rowid  INTEGER NOT NULL,
        calc_qty         TEXT NOT NULL,
        calc_entry_price TEXT NOT NULL,
        calc_exit_price  TEXT,
        calc_fees        TEXT NOT NULL,
        calc_funding     TEXT NOT NULL,
        calc_pnl         TEXT,
        ex_qty           TEXT,
        ex_entry_price   TEXT,
        ex_exit_price    TEXT,
        ex_fees          TEXT,
        ex_funding       TEXT,
        ex_pnl           TEXT,
        verified_ms      INTEGER,
        discrepancy      TEXT,
        flags            TEXT NOT NULL DEFAULT ''
     );
     CREATE INDEX trades_by_exit ON trades(exit_time_ms);
     CREATE TABLE discrepancies (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        trade_key      TEXT NOT NULL,
        field          TEXT NOT NULL,
        journal_value  TEXT NOT NULL,
        exchange_value TEXT NOT NULL,
        at_ms          INTEGER NOT NULL,
        UNIQUE (trade_key, field, journal_value, exchange_value)
     );
     CREATE TABLE balance_snapshots (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms       INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        expected    TEXT NOT NULL,
        actual      TEXT NOT NULL,
        difference  TEXT NOT NULL,
        status      TEXT NOT NULL,
        note        TEXT NOT NULL
     );
     CREATE TABLE reconciliation_runs (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        kind              TEXT NOT NULL,
        started_ms        INTEGER NOT NULL,
        finished_ms       INTEGER NOT NULL,
        checked           INTEGER NOT NULL,
        verified          INTEGER NOT NULL,
        discrepancies     INTEGER NOT NULL,
        imported          INTEGER NOT NULL,
        restored          INTEGER NOT NULL,
        unverified        INTEGER NOT NULL,
        oldest_unverified_exit_ms INTEGER,
        fills_watermark   INTEGER NOT NULL,
        error             TEXT
     );",
    // 4: the simulated balances the stack traded with (risk-manager)
    "CREATE TABLE simulated_balances (
        id                INTEGER PRIMARY KEY,
        set_at_ms         INTEGER NOT NULL,
        simulated_balance TEXT NOT NULL,
        exchange_balance  TEXT NOT NULL,
        offset            TEXT NOT NULL,
        UNIQUE (set_at_ms, offset)
     );",
    // 5: every placed intent's stages, from its bar's close to its first fill
    // (order-router), and fills heard before their intent's stages were written
    "CREATE TABLE intent_stages (
        intent_id     TEXT PRIMARY KEY,
        order_link_id TEXT NOT NULL,
        symbol        TEXT NOT NULL,
        action        TEXT NOT NULL,
        bar_close_ms  INTEGER NOT NULL,
        exchange_ms   INTEGER,
        received_ms   INTEGER,
        published_ms  INTEGER,
        decided_ms    INTEGER NOT NULL,
        router_ms     INTEGER NOT NULL,
        approved_ms   INTEGER NOT NULL,
        sent_ms       INTEGER NOT NULL,
        acked_ms      INTEGER NOT NULL,
        filled_ms     INTEGER
     );
     CREATE INDEX intent_stages_by_link ON intent_stages(order_link_id);
     CREATE INDEX intent_stages_by_time ON intent_stages(router_ms);
     CREATE TABLE early_fills (
        order_link_id TEXT PRIMARY KEY,
        at_ms         INTEGER NOT NULL
     );",
    // 6: the trading settings in force, from when (risk-manager): what `shardbot drift`
    // backtests a past window with
    "CREATE TABLE trading_settings_history (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        set_at_ms INTEGER NOT NULL,
        json      TEXT NOT NULL
     );",
    // 7: the strategies and parameters in force, from when (order-router, as workers
    // announce them): what `shardbot drift` backtests a past window with
    "CREATE TABLE parameters_history (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        set_at_ms INTEGER NOT NULL,
        json      TEXT NOT NULL
     );
     CREATE INDEX parameters_history_by_time ON parameters_history(set_at_ms);",
    // 8: how a trade closed (a stop-loss, a take-profit, a signal, the kill switch...),
    // from the stopOrderType of the exchange's fills
    "ALTER TABLE fills ADD COLUMN stop_order_type TEXT;
     ALTER TABLE trades ADD COLUMN exit_reason TEXT;",
    // 9: the simulated equity marked to market, sampled by the risk manager (the
    // dashboard's equity curve: open positions included, ending at the headline equity)
    "CREATE TABLE equity_samples (
        at_ms      INTEGER PRIMARY KEY,
        balance    TEXT NOT NULL,
        equity     TEXT NOT NULL
     );",
];

/// An order's status rank: 0 new, 1 part way, 2 final.
macro_rules! status_rank {
    ($col:literal) => {
        concat!(
            "(CASE ",
            $col,
            " WHEN 'Filled' THEN 2 WHEN 'Cancelled' THEN 2 WHEN 'Rejected' THEN 2",
            " WHEN 'PartiallyFilledCanceled' THEN 2 WHEN 'Deactivated' THEN 2",
            " WHEN 'PartiallyFilled' THEN 1 WHEN 'Triggered' THEN 1 ELSE 0 END)"
        )
    };
}

/// Whether the incoming order event is not behind the stored one.
macro_rules! not_behind {
    () => {
        concat!(
            status_rank!("excluded.status"),
            " >= ",
            status_rank!("orders.status")
        )
    };
}

/// Records or updates an order. Its status only moves forward (New → PartiallyFilled → a
/// final one): a `Filled` heard on the stream is not overwritten by the place call's `New`
/// answered after it (nor its executed quantity and price).
const UPSERT_ORDER: &str = concat!(
    "INSERT INTO orders (order_link_id, order_id, intent_id, symbol, side, qty,
        reduce_only, take_profit, stop_loss, status, cum_exec_qty, avg_price, updated_ms,
        strategy)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
     ON CONFLICT(order_link_id) DO UPDATE SET
        order_id = excluded.order_id,
        intent_id = COALESCE(excluded.intent_id, orders.intent_id),
        strategy = COALESCE(excluded.strategy, orders.strategy),
        status = CASE WHEN ",
    not_behind!(),
    " THEN excluded.status ELSE orders.status END,
        cum_exec_qty = CASE WHEN ",
    not_behind!(),
    "
            THEN excluded.cum_exec_qty ELSE orders.cum_exec_qty END,
        avg_price = CASE WHEN ",
    not_behind!(),
    "
            THEN COALESCE(excluded.avg_price, orders.avg_price) ELSE orders.avg_price END,
        updated_ms = MAX(orders.updated_ms, excluded.updated_ms)"
);

/// A refused intent as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusalRecord {
    pub intent_id: String,
    pub strategy: String,
    pub symbol: String,
    pub bar_open_ms: TimestampMs,
    pub action: String,
    /// The refusal code in snake_case, e.g. `daily_loss_limit`.
    pub code: String,
    pub reason: String,
    pub at_ms: TimestampMs,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "journal {path} is at schema version {found}, newer than this binary knows ({known}); \
         upgrade shardbot"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("journal {path}: a stored value `{value}` is not a decimal")]
    Corrupt { path: String, value: String },
    /// Two different rows under one id (an exchange that reused an id, say): neither is
    /// dropped silently.
    #[error(
        "journal {path}: {table} id {id} is already journalled as [{existing}], and now comes \
         as [{new}]: a different row under the same id, not recorded"
    )]
    Conflict {
        path: String,
        table: &'static str,
        id: String,
        existing: String,
        new: String,
    },
}

/// `[journal]`: where the account stack's journal lives. The router, the reconciler and
/// the CLI read the same setting, so they always open the same file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    pub file: std::path::PathBuf,
}

/// Counts of the journal's records (see [`Journal::counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalCounts {
    pub orders_by_status: Vec<(String, u64)>,
    pub fills: u64,
    pub refusals_by_code: Vec<(String, u64)>,
}

/// An order as the journal holds it (the router's record, moved forward by the exchange's
/// order events).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrderRecord {
    pub order_link_id: String,
    pub order_id: String,
    pub symbol: String,
    pub side: String,
    pub qty: Decimal,
    pub reduce_only: bool,
    pub status: String,
    pub cum_exec_qty: Decimal,
    pub avg_price: Option<Decimal>,
    pub updated_ms: TimestampMs,
    /// The strategy whose intent placed it (none for an order placed by hand).
    pub strategy: Option<String>,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    conn: Connection,
    path: String,
}

/// SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and applies missing migrations.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let p = path.display().to_string();
        let sql = |source| JournalError::Sql {
            path: p.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        // The journal (every order, fill and PnL of the account) is the owner's only: a
        // new file is created 0600, and SQLite creates its -wal and -shm files with the
        // database file's mode.
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
        }
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        // SQLite answers SQLITE_BUSY at once, without its busy handler, where waiting could
        // deadlock: two connections turning a new file to WAL together, or both upgrading
        // a read lock. Services open the journal together at start, so the set-up is
        // retried then, with a short growing pause, for up to 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_millis(5);
        let found = loop {
            match Self::set_up(&mut conn) {
                Ok(found) => break found,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause); // backoff before trying the set-up again
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(sql(e)),
            }
        };
        if let Some((found, known)) = found {
            return Err(JournalError::TooNew {
                path: p,
                found,
                known,
            });
        }
        Ok(Journal { conn, path: p })
    }

    /// WAL mode and the migrations. `Some((found, known))` when the journal was written by
    /// a newer binary.
    fn set_up(conn: &mut Connection) -> Result<Option<(i64, i64)>, rusqlite::Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Several services open the journal at start: the version is read and the missing
        // migrations applied under one write lock (BEGIN IMMEDIATE waits for the other
        // opener, up to the busy timeout), so each migration runs exactly once.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let found: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Ok(Some((found, known)));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(m)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as i64 + 1],
            )?;
        }
        tx.commit()?;
        Ok(None)
    }

    fn sql(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Records (or updates) an order. Durable when this returns (WAL, synchronous=FULL).
    /// `strategy` is the strategy whose intent placed it, when known.
    pub fn record_order(&self, o: &OrderEvent, strategy: Option<&str>) -> Result<(), JournalError> {
        self.conn
            .execute(
                UPSERT_ORDER,
                params![
                    o.order_link_id,
                    o.order_id,
                    o.intent_id.as_ref().map(|i| i.to_string()),
                    o.symbol.as_str(),
                    o.side.as_str(),
                    o.qty.to_string(),
                    o.reduce_only,
                    o.take_profit.map(|d| d.to_string()),
                    o.stop_loss.map(|d| d.to_string()),
                    format!("{:?}", o.status),
                    o.cum_exec_qty.to_string(),
                    o.avg_price.map(|d| d.to_string()),
                    o.updated_ms,
                    strategy,
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Records a fill once. Returns whether it was new: a repeat of an exec id (the stream
    /// and a catch-up read both bring it) is the same fill and changes nothing; a different
    /// fill under a known exec id is [`JournalError::Conflict`], naming both.
    pub fn record_fill(&self, f: &Fill) -> Result<bool, JournalError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO fills (exec_id, order_id, order_link_id, symbol, side,
                    exec_qty, exec_price, exec_value, exec_fee, fee_rate, is_maker, closed_size,
                    exec_time_ms, exec_type, stop_order_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    f.exec_id,
                    f.order_id,
                    f.order_link_id,
                    f.symbol.as_str(),
                    f.side.as_str(),
                    f.exec_qty.to_string(),
                    f.exec_price.to_string(),
                    f.exec_value.to_string(),
                    f.exec_fee.to_string(),
                    f.fee_rate.map(|d| d.to_string()),
                    f.is_maker,
                    f.closed_size.to_string(),
                    f.exec_time_ms,
                    f.exec_type,
                    f.stop_order_type,
                ],
            )
            .map_err(|e| self.sql(e))?;
        if n == 1 {
            return Ok(true);
        }
        let (order_id, symbol, side, qty, price, time): (
            String,
            String,
            String,
            String,
            String,
            i64,
        ) = self
            .conn
            .query_row(
                "SELECT order_id, symbol, side, exec_qty, exec_price, exec_time_ms
                     FROM fills WHERE exec_id = ?1",
                [&f.exec_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .map_err(|e| self.sql(e))?;
        let same = order_id == f.order_id
            && symbol == f.symbol.as_str()
            && side == f.side.as_str()
            && self.dec(&qty)? == f.exec_qty
            && self.dec(&price)? == f.exec_price
            && time == f.exec_time_ms;
        if same {
            return Ok(false);
        }
        Err(JournalError::Conflict {
            path: self.path.clone(),
            table: "fills",
            id: f.exec_id.clone(),
            existing: format!("order {order_id} {symbol} {side} {qty} @ {price} at {time}"),
            new: format!(
                "order {} {} {} {} @ {} at {}",
                f.order_id,
                f.symbol,
                f.side.as_str(),
                f.exec_qty,
                f.exec_price,
                f.exec_time_ms
            ),
        })
    }

    /// Records a refused intent with its reason.
    pub fn record_refusal(
        &self,
        intent: &OrderIntent,
        refusal: &Refusal,
        at_ms: TimestampMs,
    ) -> Result<(), JournalError> {
        let code = format!("{:?}", refusal.code);
        self.conn
            .execute(
                "INSERT INTO refusals (intent_id, strategy, symbol, bar_open_ms, action, code,
                    reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    intent.intent_id.to_string(),
                    intent.strategy,
                    intent.symbol.as_str(),
                    intent.bar_open_time_ms,
                    intent.action.id_tag(),
                    snake(&code),
                    refusal.reason,
                    at_ms,
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The newest `limit` refusals, newest first.
    pub fn refusals(&self, limit: u32) -> Result<Vec<RefusalRecord>, JournalError> {
        self.query_refusals("ORDER BY id DESC LIMIT ?1", i64::from(limit))
    }

    /// The newest `limit` orders by their last update, newest first.
    pub fn recent_orders(&self, limit: u32) -> Result<Vec<OrderRecord>, JournalError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT order_link_id, order_id, symbol, side, qty, reduce_only, status,
                    cum_exec_qty, avg_price, updated_ms, strategy
                 FROM orders ORDER BY updated_ms DESC, rowid DESC LIMIT ?1",
            )
            .map_err(|e| self.sql(e))?;
        type Raw = (
            [String; 5],
            bool,
            String,
            String,
            Option<String>,
            i64,
            Option<String>,
        );
        let rows: Vec<Raw> = st
            .query_map([i64::from(limit)], |r| {
                Ok((
                    [r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(
                |(
                    [order_link_id, order_id, symbol, side, qty],
                    reduce_only,
                    status,
                    cum,
                    avg,
                    updated_ms,
                    strategy,
                )| {
                    Ok(OrderRecord {
                        order_link_id,
                        order_id,
                        symbol,
                        side,
                        qty: self.dec(&qty)?,
                        reduce_only,
                        status,
                        cum_exec_qty: self.dec(&cum)?,
                        avg_price: self.opt_dec(avg)?,
                        updated_ms,
                        strategy,
                    })
                },
            )
            .collect()
    }

    /// The refusals recorded at or after `from_ms`, oldest first.
    pub fn refusals_since(&self, from_ms: TimestampMs) -> Result<Vec<RefusalRecord>, JournalError> {
        self.query_refusals("WHERE at_ms >= ?1 ORDER BY id", from_ms)
    }

    /// Refusals selected by `tail` (its `WHERE` and `ORDER BY`, with one parameter).
    fn query_refusals(&self, tail: &str, param: i64) -> Result<Vec<RefusalRecord>, JournalError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT intent_id, strategy, symbol, bar_open_ms, action, code, reason, at_ms
                 FROM refusals {tail}"
            ))
            .map_err(|e| self.sql(e))?;
        st.query_map([param], |r| {
            Ok(RefusalRecord {
                intent_id: r.get(0)?,
                strategy: r.get(1)?,
                symbol: r.get(2)?,
                bar_open_ms: r.get(3)?,
                action: r.get(4)?,
                code: r.get(5)?,
                reason: r.get(6)?,
                at_ms: r.get(7)?,
            })
        })
        .map_err(|e| self.sql(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| self.sql(e))
    }

    /// What the journal holds, counted for metrics: orders by status, executions of
    /// orders (not funding), and refusals by code.
    pub fn counts(&self) -> Result<JournalCounts, JournalError> {
        let group = |sql: &str| -> Result<Vec<(String, u64)>, JournalError> {
            let mut st = self.conn.prepare_cached(sql).map_err(|e| self.sql(e))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(|e| self.sql(e))?;
            rows.map(|r| {
                r.map(|(k, n)| (k, n.max(0) as u64))
                    .map_err(|e| self.sql(e))
            })
            .collect()
        };
        let fills: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM fills WHERE exec_type = 'Trade'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(JournalCounts {
            orders_by_status: group("SELECT status, COUNT(*) FROM orders GROUP BY status")?,
            fills: fills.max(0) as u64,
            refusals_by_code: group("SELECT code, COUNT(*) FROM refusals GROUP BY code")?,
        })
    }

    /// The orderId recorded for an orderLinkId. Asked by the router for every intent it
    /// takes in, so the statement is kept prepared.
    pub fn order_id(&self, order_link_id: &str) -> Result<Option<String>, JournalError> {
        self.conn
            .prepare_cached("SELECT order_id FROM orders WHERE order_link_id = ?1")
            .and_then(|mut st| st.query_row([order_link_id], |r| r.get(0)).optional())
            .map_err(|e| self.sql(e))
    }

    /// The strategy that owns `symbol`'s open position as the journal tells it, for a risk
    /// manager that starts with the position open: the strategy of the newest entry (not
    /// reduce-only) placed on the symbol, unless the fills journalled since that entry's
    /// first fill brought the position back to flat (or beyond): then the position open now
    /// was opened after it, by hand or by a strategy since disabled, and belongs to none.
    /// An entry with no fill journalled yet still owns (its fill may be on its way).
    pub fn position_owner(&self, symbol: &str) -> Result<Option<String>, JournalError> {
        let entry: Option<(String, String, String)> = self
            .conn
            .query_row(
                "SELECT strategy, order_link_id, side FROM orders WHERE symbol = ?1
                 AND reduce_only = 0 AND strategy IS NOT NULL ORDER BY rowid DESC LIMIT 1",
                [symbol],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        let Some((strategy, link, side)) = entry else {
            return Ok(None);
        };
        let first: Option<i64> = self
            .conn
            .query_row(
                "SELECT MIN(exec_time_ms) FROM fills WHERE order_link_id = ?1
                 AND exec_type = 'Trade'",
                [&link],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        let Some(first) = first else {
            return Ok(Some(strategy));
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT side, exec_qty FROM fills WHERE symbol = ?1 AND exec_type = 'Trade'
                 AND exec_time_ms >= ?2 ORDER BY exec_time_ms, rowid",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![symbol, first], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        // The position the entry opened, in its own direction.
        let mut net = Decimal::ZERO;
        for row in rows {
            let (fill_side, qty) = row.map_err(|e| self.sql(e))?;
            let qty = self.dec(&qty)?;
            net += if fill_side == side { qty } else { -qty };
            if net <= Decimal::ZERO {
                return Ok(None);
            }
        }
        Ok(Some(strategy))
    }

    /// Exchange time of the newest fill journalled, if any: where a catch-up of missed
    /// fills starts after a restart.
    pub fn newest_fill_ms(&self) -> Result<Option<TimestampMs>, JournalError> {
        self.conn
            .query_row("SELECT MAX(exec_time_ms) FROM fills", [], |r| r.get(0))
            .map_err(|e| self.sql(e))
    }

    /// Every fill since `from_ms`, oldest first.
    pub fn fills_since(&self, from_ms: TimestampMs) -> Result<Vec<Fill>, JournalError> {
        Ok(self
            .fills_from(from_ms)?
            .into_iter()
            .map(|f| f.fill)
            .collect())
    }
}

/// `DailyLossLimit` → `daily_loss_limit` (the spelling of the wire format).
fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;
    use shardbot_protocol::{OrderStatus, OrderType, Side, Symbol};

    fn fill(id: &str, t: i64) -> Fill {
        Fill {
            exec_id: id.into(),
            order_id: "o1".into(),
            order_link_id: "sb-1".into(),
            symbol: Symbol::new("BTCUSDT").unwrap(),
            side: Side::Sell,
            exec_qty: dec!(0.001),
            exec_price: dec!(97123.45),
            exec_value: dec!(97.12345),
            exec_fee: dec!(0.05341789750),
            fee_rate: Some(dec!(0.00055)),
            is_maker: false,
            closed_size: dec!(0),
            exec_time_ms: t,
            exec_type: "Trade".into(),
            stop_order_type: None,
        }
    }

    #[test]
    fn fills_once_losslessly_and_orders_upserted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        let j = Journal::open(&path).unwrap();
        assert!(j.record_fill(&fill("e1", 10)).unwrap());
        assert!(
            !j.record_fill(&fill("e1", 10)).unwrap(),
            "a repeat is ignored"
        );
        assert!(j.record_fill(&fill("e2", 20)).unwrap());
        assert_eq!(
            j.fills_since(0).unwrap(),
            vec![fill("e1", 10), fill("e2", 20)]
        );
        assert_eq!(j.fills_since(15).unwrap(), vec![fill("e2", 20)]);
        // The fill of the exchange's stop-loss order keeps its stop type (a trade's exit
        // reason).
        let mut stop = fill("e3", 30);
        stop.order_link_id = String::new();
        stop.stop_order_type = Some("StopLoss".into());
        assert!(j.record_fill(&stop).unwrap());
        assert_eq!(j.fills_since(25).unwrap(), vec![stop]);
        let mut o = OrderEvent {
            order_id: "o1".into(),
            order_link_id: "sb-1".into(),
            intent_id: None,
            symbol: Symbol::new("BTCUSDT").unwrap(),
            side: Side::Buy,
            order_type: OrderType::Market,
            status: OrderStatus::New,
            qty: dec!(0.001),
            price: None,
            avg_price: None,
            cum_exec_qty: dec!(0),
            cum_exec_fee: dec!(0),
            reduce_only: false,
            take_profit: None,
            stop_loss: Some(dec!(95000)),
            reject_reason: None,
            stop_order_type: None,
            updated_ms: 1,
        };
        j.record_order(&o, Some("trend_following")).unwrap();
        o.status = OrderStatus::Filled;
        o.cum_exec_qty = dec!(0.001);
        j.record_order(&o, Some("trend_following")).unwrap();
        assert_eq!(j.order_id("sb-1").unwrap().as_deref(), Some("o1"));
        assert_eq!(j.order_id("sb-2").unwrap(), None);
        // The newest orders and fills, newest first (the dashboard's Activity).
        let mut by_hand = o.clone();
        by_hand.order_id = "o2".into();
        by_hand.order_link_id = "mine".into();
        by_hand.avg_price = Some(dec!(97000.5));
        by_hand.updated_ms = 5;
        j.record_order(&by_hand, None).unwrap();
        let orders = j.recent_orders(10).unwrap();
        assert_eq!(
            orders
                .iter()
                .map(|o| (
                    o.order_link_id.as_str(),
                    o.status.as_str(),
                    o.strategy.as_deref()
                ))
                .collect::<Vec<_>>(),
            [
                ("mine", "Filled", None),
                ("sb-1", "Filled", Some("trend_following"))
            ]
        );
        assert_eq!(orders[0].avg_price, Some(dec!(97000.5)));
        assert_eq!(orders[1].cum_exec_qty, dec!(0.001));
        assert_eq!(j.recent_orders(1).unwrap().len(), 1);
        let fills: Vec<String> = j
            .recent_fills(10)
            .unwrap()
            .into_iter()
            .map(|f| f.fill.exec_id)
            .collect();
        assert_eq!(fills, ["e3", "e2", "e1"]);
        drop(j);
        // Reopened: the data and the schema version are there; nothing is migrated twice.
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.fills_since(0).unwrap().len(), 3);
    }

    /// A different fill under a known exec id (bybit-sim once restarted its ids at 1 while
    /// the journal kept the last run's) is an error naming both rows, never dropped
    /// silently; the same fill again is a repeat.
    #[test]
    fn a_new_journal_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/journal.sqlite");
        let j = Journal::open(&path).unwrap();
        j.record_fill(&fill("e1", 10)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        assert_eq!(mode(&dir.path().join("new/journal.sqlite-wal")), 0o600);
    }

    #[test]
    fn a_different_fill_under_a_known_id_is_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
        assert!(j.record_fill(&fill("e1", 10)).unwrap());
        let mut same = fill("e1", 10);
        same.exec_price = dec!(97123.4500); // the same price, written with more zeros
        assert!(!j.record_fill(&same).unwrap(), "the same fill again");
        let mut other = fill("e1", 99);
        other.order_id = "o9".into();
        other.exec_price = dec!(3000);
        let e = j.record_fill(&other).unwrap_err().to_string();
        assert!(
            e.contains("fills id e1")
                && e.contains("order o1 BTCUSDT Sell 0.001 @ 97123.45 at 10")
                && e.contains("order o9 BTCUSDT Sell 0.001 @ 3000 at 99"),
            "{e}"
        );
        assert_eq!(j.fills_since(0).unwrap(), vec![fill("e1", 10)]);
    }

    /// An order's status never goes backwards: the place call's `New`, answered after the
    /// stream's `Filled`, leaves it `Filled` with its executed quantity.
    #[test]
    fn an_order_status_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        let j = Journal::open(&path).unwrap();
        let mut o = OrderEvent {
            order_id: "o1".into(),
            order_link_id: "sb-1".into(),
            intent_id: None,
            symbol: Symbol::new("BTCUSDT").unwrap(),
            side: Side::Buy,
            order_type: OrderType::Market,
            status: OrderStatus::Filled,
            qty: dec!(0.001),
            price: None,
            avg_price: Some(dec!(97000)),
            cum_exec_qty: dec!(0.001),
            cum_exec_fee: dec!(0),
            reduce_only: false,
            take_profit: None,
            stop_loss: None,
            reject_reason: None,
            stop_order_type: None,
            updated_ms: 2,
        };
        j.record_order(&o, None).unwrap();
        o.status = OrderStatus::New;
        o.cum_exec_qty = dec!(0);
        o.avg_price = None;
        o.updated_ms = 1;
        j.record_order(&o, Some("trend_following")).unwrap();
        let conn = Connection::open(&path).unwrap();
        let row: (String, String, Option<String>, Option<String>) = conn
            .query_row(
                "SELECT status, cum_exec_qty, avg_price, strategy FROM orders",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            row,
            (
                "Filled".into(),
                "0.001".into(),
                Some("97000".into()),
                Some("trend_following".into())
            )
        );
        // Forward still moves: a partial fill becomes a final state.
        o.order_link_id = "sb-2".into();
        o.status = OrderStatus::PartiallyFilled;
        j.record_order(&o, None).unwrap();
        o.status = OrderStatus::PartiallyFilledCanceled;
        j.record_order(&o, None).unwrap();
        let status: String = conn
            .query_row(
                "SELECT status FROM orders WHERE order_link_id = 'sb-2'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(status, "PartiallyFilledCanceled");
    }

    #[test]
    fn refusals_keep_their_reason() {
        use shardbot_protocol::{IntentAction, Interval, RefusalCode};
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
        let intent = OrderIntent::new(
            "mean_reversion",
            Symbol::new("ETHUSDT").unwrap(),
            Interval::M5,
            300_000,
            IntentAction::Enter { side: Side::Sell },
            dec!(3000.5),
            None,
            None,
            0,
        );
        let refusal = Refusal {
            code: RefusalCode::DailyLossLimit,
            reason: "today's loss 51 USDT has reached the daily loss limit of 50 USDT".into(),
        };
        j.record_refusal(&intent, &refusal, 42).unwrap();
        let r = j.refusals(10).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, "daily_loss_limit");
        assert_eq!(r[0].reason, refusal.reason);
        assert_eq!(r[0].action, "enter-sell");
        assert_eq!(r[0].intent_id, intent.intent_id.to_string());
    }

    #[test]
    fn an_older_journal_is_migrated_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        // A journal written by a binary that knew migrations 1 and 2 only.
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .unwrap();
        for (i, m) in MIGRATIONS[..2].iter().enumerate() {
            c.execute_batch(m).unwrap();
            c.execute("INSERT INTO schema_version VALUES (?1)", [i as i64 + 1])
                .unwrap();
        }
        c.execute(
            "INSERT INTO fills VALUES ('e1','o1','sb-1','BTCUSDT','Sell','0.001','97123.45',
                '97.12345','0.05341789750','0.00055',0,'0',10)",
            [],
        )
        .unwrap();
        drop(c);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.fills_since(0).unwrap(), vec![fill("e1", 10)]);
        let f = j.fills_from(0).unwrap();
        assert_eq!((f[0].rowid, f[0].strategy.as_deref()), (1, None));
        assert!(j.trades().unwrap().is_empty(), "the new tables exist");
    }

    #[test]
    fn trades_keep_both_calculations_and_the_record_takes_the_exchanges() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
        let mut t = TradeRecord {
            trade_key: "e1".into(),
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            strategy: Some("trend_following".into()),
            source: "shardbot".into(),
            entry_time_ms: 10,
            exit_time_ms: None,
            entry_order_ids: vec!["o1".into()],
            exit_order_ids: vec![],
            last_fill_rowid: 1,
            qty: dec!(0.002),
            entry_price: dec!(100000),
            exit_price: None,
            fees: dec!(0.11),
            funding: Decimal::ZERO,
            pnl: None,
            exit_reason: None,
        };
        assert!(j.upsert_trade(&t, "").unwrap(), "new");
        t.exit_time_ms = Some(20);
        t.exit_order_ids = vec!["o2".into()];
        t.exit_price = Some(dec!(101000));
        t.fees = dec!(0.2211);
        t.pnl = Some(dec!(1.7789));
        t.exit_reason = Some("take_profit".into());
        assert!(!j.upsert_trade(&t, "").unwrap(), "known");
        let ex = ExchangeNumbers {
            qty: dec!(0.002),
            entry_price: dec!(100000),
            exit_price: dec!(101000),
            fees: dec!(0.2211),
            funding: dec!(0.02),
            pnl: dec!(1.7789),
        };
        j.mark_verified("e1", &ex, 30, None).unwrap();
        j.add_flag("e1", "external").unwrap();
        j.add_flag("e1", "external").unwrap();
        let v = j.trade("e1").unwrap().unwrap();
        assert_eq!(v.calc, t);
        assert!(v.verified());
        assert_eq!(v.flags, "external");
        assert_eq!(v.net(), Some(dec!(1.7789)), "the exchange's closed PnL");
        assert_eq!(j.trades_since(25).unwrap().len(), 0);
        assert_eq!(j.trades_since(20).unwrap().len(), 1);
        let d = Discrepancy {
            trade_key: "e1".into(),
            field: "fees".into(),
            journal_value: "0.3".into(),
            exchange_value: "0.2211".into(),
            at_ms: 30,
        };
        assert!(j.record_discrepancy(&d).unwrap());
        assert!(!j.record_discrepancy(&d).unwrap(), "the same one once");
        assert_eq!(j.discrepancies().unwrap(), vec![d]);
    }

    #[test]
    fn services_opening_a_new_journal_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..6).map(|_| s.spawn(|| Journal::open(&path))).collect();
            for h in hs {
                h.join().unwrap().unwrap();
            }
        });
        let c = Connection::open(&path).unwrap();
        let versions: i64 = c
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_journal_from_a_newer_binary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        drop(Journal::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute("INSERT INTO schema_version (version) VALUES (99)", [])
            .unwrap();
        drop(c);
        let e = Journal::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("schema version 99") && e.contains("upgrade"),
            "{e}"
        );
    }

    /// An order on ETHUSDT as the router journals it.
    fn order_on(
        link: &str,
        side: Side,
        reduce_only: bool,
        strategy: Option<&str>,
    ) -> (OrderEvent, Option<String>) {
        let o = OrderEvent {
            order_id: format!("id-{link}"),
            order_link_id: link.into(),
            intent_id: None,
            symbol: Symbol::new("ETHUSDT").unwrap(),
            side,
            order_type: OrderType::Market,
            status: OrderStatus::Filled,
            qty: dec!(1),
            price: None,
            avg_price: None,
            cum_exec_qty: dec!(1),
            cum_exec_fee: dec!(0),
            reduce_only,
            take_profit: None,
            stop_loss: None,
            reject_reason: None,
            stop_order_type: None,
            updated_ms: 1,
        };
        (o, strategy.map(str::to_owned))
    }

    fn fill_of(link: &str, side: Side, qty: Decimal, t: i64) -> Fill {
        Fill {
            exec_id: format!("x-{link}-{t}"),
            order_id: format!("id-{link}"),
            order_link_id: link.into(),
            symbol: Symbol::new("ETHUSDT").unwrap(),
            side,
            exec_qty: qty,
            exec_price: dec!(3000),
            exec_value: qty * dec!(3000),
            exec_fee: dec!(0),
            fee_rate: None,
            is_maker: false,
            closed_size: dec!(0),
            exec_time_ms: t,
            exec_type: "Trade".into(),
            stop_order_type: None,
        }
    }

    /// Who owns ETHUSDT's open position after a restart, from the orders and fills the
    /// router journalled. `B`/`S` = buy/sell; a link starting `sb-` is a strategy's.
    #[rstest::rstest]
    #[case::no_entry_no_owner(vec![], vec![("hand-1", Side::Buy, "1", 10)], None)]
    #[case::the_entry_still_open(
        vec![("sb-a", Side::Buy, false, Some("trend_following"))],
        vec![("sb-a", Side::Buy, "1", 10)],
        Some("trend_following"))]
    #[case::entered_not_filled_yet(
        vec![("sb-a", Side::Sell, false, Some("mean_reversion"))],
        vec![],
        Some("mean_reversion"))]
    #[case::partly_closed_by_hand_still_its(
        vec![("sb-a", Side::Buy, false, Some("trend_following"))],
        vec![("sb-a", Side::Buy, "2", 10), ("hand-1", Side::Sell, "1", 20)],
        Some("trend_following"))]
    #[case::closed_then_opened_by_hand(
        vec![("sb-a", Side::Buy, false, Some("trend_following")),
             ("sb-x", Side::Sell, true, Some("trend_following"))],
        vec![("sb-a", Side::Buy, "1", 10), ("sb-x", Side::Sell, "1", 20),
             ("hand-1", Side::Buy, "3", 30)],
        None)]
    #[case::stopped_out_then_a_hand_short(
        vec![("sb-a", Side::Buy, false, Some("trend_following"))],
        vec![("sb-a", Side::Buy, "0.5", 10), ("sb-a", Side::Buy, "0.5", 11),
             ("stop-1", Side::Sell, "1", 20), ("hand-1", Side::Sell, "1", 30)],
        None)]
    #[case::reversed_by_hand_in_one_order(
        vec![("sb-a", Side::Sell, false, Some("mean_reversion"))],
        vec![("sb-a", Side::Sell, "1", 10), ("hand-1", Side::Buy, "2", 20)],
        None)]
    #[case::the_newest_entry_decides(
        vec![("sb-a", Side::Buy, false, Some("trend_following")),
             ("sb-x", Side::Sell, true, Some("trend_following")),
             ("sb-b", Side::Sell, false, Some("mean_reversion"))],
        vec![("sb-a", Side::Buy, "1", 10), ("sb-x", Side::Sell, "1", 20),
             ("sb-b", Side::Sell, "1", 30)],
        Some("mean_reversion"))]
    fn the_owner_after_a_restart(
        #[case] orders: Vec<(&str, Side, bool, Option<&str>)>,
        #[case] fills: Vec<(&str, Side, &str, i64)>,
        #[case] owner: Option<&str>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
        for (link, side, reduce_only, strategy) in orders {
            let (o, s) = order_on(link, side, reduce_only, strategy);
            j.record_order(&o, s.as_deref()).unwrap();
        }
        for (link, side, qty, t) in fills {
            j.record_fill(&fill_of(link, side, qty.parse().unwrap(), t))
                .unwrap();
        }
        assert_eq!(j.position_owner("ETHUSDT").unwrap().as_deref(), owner);
        assert_eq!(j.position_owner("BTCUSDT").unwrap(), None);
    }
}
