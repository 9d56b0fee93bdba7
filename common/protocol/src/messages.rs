//! The typed messages that cross process boundaries.
//!
//! Published messages (PUB/SUB) implement [`Publish`], which names their topic. Request /
//! reply pairs are grouped per serving process: [`GatewayRequest`] → [`GatewayReply`]
//! (market-data), [`RouterRequest`] → [`RouterReply`] (order-router), [`RiskRequest`] →
//! [`RiskReply`] (risk-manager).
//!
//! Money, prices and quantities are `rust_decimal::Decimal` (encoded as strings, so they
//! cross the wire without loss); times are Unix milliseconds. Optional fields carry
//! `#[serde(default)]` so that a newer publisher and an older subscriber (or the reverse)
//! keep talking during a rolling restart.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    intent::{CloseProgress, IntentId, OrderIntent},
    topic::Topic,
    types::{BarStamps, Interval, Side, Symbol, TimestampMs},
};

/// A message that is published on the bus under a topic derived from its contents.
pub trait Publish: Serialize {
    fn topic(&self) -> Topic;
}

// ---------------------------------------------------------------------------------------
// Market data (published by market-data)
// ---------------------------------------------------------------------------------------

/// One closed kline. Prices as the exchange printed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar {
    pub symbol: Symbol,
    pub interval: Interval,
    pub open_time_ms: TimestampMs,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    /// Base-coin volume.
    pub volume: Decimal,
    /// Quote-coin turnover.
    #[serde(default)]
    pub turnover: Decimal,
    /// Exchange time at which the gateway first published the bar (`None` for history that
    /// was never published live, e.g. the gateway's start-up backfill). A bar published
    /// long after its close (a refill after an outage) is history, not a signal: workers
    /// decide whether to trade a bar from this stamp, so the decision is the same whether
    /// they receive the bar live or refill it after a bus drop.
    #[serde(default)]
    pub published_ms: Option<TimestampMs>,
    /// When this bar passed the exchange and the gateway, for the order path's stage
    /// breakdown (empty for history and tests).
    #[serde(default)]
    pub stamps: BarStamps,
}

impl Publish for Bar {
    fn topic(&self) -> Topic {
        Topic::Bar {
            symbol: self.symbol.clone(),
            interval: self.interval,
        }
    }
}

/// A full (snapshot and deltas merged) ticker, coalesced by the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticker {
    pub symbol: Symbol,
    pub last_price: Decimal,
    #[serde(default)]
    pub mark_price: Option<Decimal>,
    #[serde(default)]
    pub index_price: Option<Decimal>,
    #[serde(default)]
    pub bid1_price: Option<Decimal>,
    #[serde(default)]
    pub ask1_price: Option<Decimal>,
    #[serde(default)]
    pub funding_rate: Option<Decimal>,
    #[serde(default)]
    pub next_funding_time_ms: Option<TimestampMs>,
    #[serde(default)]
    pub volume_24h: Option<Decimal>,
    #[serde(default)]
    pub turnover_24h: Option<Decimal>,
    /// Exchange timestamp of the latest update merged in.
    pub ts_ms: TimestampMs,
}

impl Publish for Ticker {
    fn topic(&self) -> Topic {
        Topic::Ticker {
            symbol: self.symbol.clone(),
        }
    }
}

/// Trading rules of one instrument, from `/v5/market/instruments-info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrument {
    pub symbol: Symbol,
    pub tick_size: Decimal,
    pub qty_step: Decimal,
    pub min_order_qty: Decimal,
    pub max_market_order_qty: Decimal,
    pub min_notional: Decimal,
    pub max_leverage: Decimal,
    /// Minutes between funding settlements.
    pub funding_interval_min: u32,
}

// ---------------------------------------------------------------------------------------
// Risk decisions (the intents themselves are in `intent.rs`)
// ---------------------------------------------------------------------------------------

/// Why the risk manager (or the router) refused an intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    Halted,
    ReduceOnly,
    DailyLossLimit,
    MaxOpenPositions,
    MaxMarginUse,
    PositionExists,
    NoPosition,
    Cooldown,
    BelowMinQty,
    BelowMinNotional,
    UnknownSymbol,
    RiskUnavailable,
    Exchange,
    /// A quantity, price or balance so large (or small) that the sizing arithmetic would
    /// leave `Decimal`'s range: refused rather than computed wrong.
    OutOfRange,
    /// An entry decided longer ago than `router.max_entry_age_ms` (it waited behind other
    /// work): the market has moved on from the bar it was decided on. Exits never are.
    Stale,
    /// An exit from a strategy that does not own the symbol's position (another strategy
    /// opened it, or it was opened by hand): one strategy's exit never closes another's.
    NotOwner,
}

/// A refusal with a human-readable reason that the journal and the dashboard show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub reason: String,
}

/// The risk manager's answer to an intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum RiskDecision {
    Approved {
        intent_id: IntentId,
        /// Order quantity in base coin, before rounding to the qty step by the router.
        qty: Decimal,
        leverage: Decimal,
        /// Exit intents are sent reduce-only.
        reduce_only: bool,
        /// The order's side: an entry's own; an exit's the opposite of the position the
        /// risk manager holds (so the router needs no second question to learn it).
        side: Side,
    },
    Refused {
        intent_id: IntentId,
        refusal: Refusal,
    },
}

// ---------------------------------------------------------------------------------------
// Orders and fills (published by order-router)
// ---------------------------------------------------------------------------------------

/// Bybit order status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Untriggered,
    Rejected,
    PartiallyFilledCanceled,
    Filled,
    Cancelled,
    Triggered,
    Deactivated,
}

impl OrderStatus {
    /// No further fills can happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Rejected
                | OrderStatus::PartiallyFilledCanceled
                | OrderStatus::Filled
                | OrderStatus::Cancelled
                | OrderStatus::Deactivated
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderType {
    Market,
    Limit,
}

/// The state of one exchange order after a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub order_id: String,
    pub order_link_id: String,
    #[serde(default)]
    pub intent_id: Option<IntentId>,
    pub symbol: Symbol,
    pub side: Side,
    pub order_type: OrderType,
    pub status: OrderStatus,
    pub qty: Decimal,
    #[serde(default)]
    pub price: Option<Decimal>,
    #[serde(default)]
    pub avg_price: Option<Decimal>,
    pub cum_exec_qty: Decimal,
    pub cum_exec_fee: Decimal,
    pub reduce_only: bool,
    #[serde(default)]
    pub take_profit: Option<Decimal>,
    #[serde(default)]
    pub stop_loss: Option<Decimal>,
    #[serde(default)]
    pub reject_reason: Option<String>,
    /// Bybit's `stopOrderType` for orders the exchange created from a position's
    /// stop-loss / take-profit (`StopLoss`, `TakeProfit`, ...); `None` for plain orders.
    #[serde(default)]
    pub stop_order_type: Option<String>,
    pub updated_ms: TimestampMs,
}

impl Publish for OrderEvent {
    fn topic(&self) -> Topic {
        Topic::Order {
            symbol: self.symbol.clone(),
        }
    }
}

/// One execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub exec_id: String,
    pub order_id: String,
    pub order_link_id: String,
    pub symbol: Symbol,
    pub side: Side,
    pub exec_qty: Decimal,
    pub exec_price: Decimal,
    pub exec_value: Decimal,
    pub exec_fee: Decimal,
    #[serde(default)]
    pub fee_rate: Option<Decimal>,
    pub is_maker: bool,
    /// Quantity of this execution that closed an existing position.
    #[serde(default)]
    pub closed_size: Decimal,
    pub exec_time_ms: TimestampMs,
    /// Bybit's execType: `Trade` for a fill of an order, `Funding` for a funding payment
    /// (then `exec_fee` is the payment, positive when paid), `AdlTrade`, `BustTrade`, ...
    #[serde(default = "trade_exec_type")]
    pub exec_type: String,
    /// Bybit's stopOrderType of the order filled: `StopLoss`, `TakeProfit`, `TrailingStop`,
    /// ... when the exchange made it from a position's stop; `None` for a plain order.
    #[serde(default)]
    pub stop_order_type: Option<String>,
}

fn trade_exec_type() -> String {
    "Trade".into()
}

impl Fill {
    /// A funding payment rather than the fill of an order.
    pub fn is_funding(&self) -> bool {
        self.exec_type == "Funding"
    }
}

impl Publish for Fill {
    fn topic(&self) -> Topic {
        Topic::Fill {
            symbol: self.symbol.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Positions, balance, risk state (published by risk-manager)
// ---------------------------------------------------------------------------------------

/// One open position (one-way mode: at most one per symbol).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub symbol: Symbol,
    pub side: Side,
    pub size: Decimal,
    pub avg_price: Decimal,
    #[serde(default)]
    pub mark_price: Option<Decimal>,
    pub leverage: Decimal,
    pub unrealised_pnl: Decimal,
    /// The exchange's liquidation price of the position (Bybit's `liqPrice`, for the
    /// exchange account: not the simulated balance's); `None` when it gives none (outside
    /// the price limits) or the position was last booked from fills.
    #[serde(default)]
    pub liq_price: Option<Decimal>,
    #[serde(default)]
    pub stop_loss: Option<Decimal>,
    #[serde(default)]
    pub take_profit: Option<Decimal>,
    pub updated_ms: TimestampMs,
    /// The strategy whose entry opened it: its owner, the only one whose signals act on it
    /// (`shardbot_strategy::Holder`). `None`: opened by hand or by no strategy known here.
    #[serde(default)]
    pub strategy: Option<String>,
}

/// Every open position of the account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionSnapshot {
    pub positions: Vec<Position>,
    pub as_of_ms: TimestampMs,
}

impl Publish for PositionSnapshot {
    fn topic(&self) -> Topic {
        Topic::Positions
    }
}

/// Exchange balance and the simulated balance derived from it
/// (`simulated = exchange − offset`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceSnapshot {
    pub exchange_wallet_balance: Decimal,
    pub exchange_equity: Decimal,
    pub available_balance: Decimal,
    pub offset: Decimal,
    pub simulated_balance: Decimal,
    pub simulated_equity: Decimal,
    pub as_of_ms: TimestampMs,
}

impl Publish for BalanceSnapshot {
    fn topic(&self) -> Topic {
        Topic::Balance
    }
}

/// What the kill switch currently allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradingMode {
    #[default]
    Normal,
    /// No new entries; exits allowed.
    Halted,
    /// Only orders that reduce a position.
    ReduceOnly,
}

/// The risk manager's limits and how close the account is to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskStatus {
    pub mode: TradingMode,
    pub open_positions: u32,
    pub max_open_positions: u32,
    pub daily_pnl: Decimal,
    pub daily_loss_limit: Decimal,
    pub margin_use_pct: Decimal,
    pub max_margin_use_pct: Decimal,
    pub as_of_ms: TimestampMs,
}

impl Publish for RiskStatus {
    fn topic(&self) -> Topic {
        Topic::Risk
    }
}

// ---------------------------------------------------------------------------------------
// Service health and control
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServiceState {
    Starting,
    Running,
    Degraded { reason: String },
    Stopping,
}

/// Published by every service at a fixed interval, and once more when it stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Service name, e.g. `strategy-worker`.
    pub service: String,
    /// Distinguishes several processes of one service, e.g. the shard `0-4`.
    pub instance: String,
    pub pid: u32,
    pub version: String,
    pub started_ms: TimestampMs,
    pub now_ms: TimestampMs,
    pub state: ServiceState,
    /// The process's own figures at this beat, by name (integers: counts, µs, requests),
    /// e.g. `ws_reconnects_total`, `ratelimit_ip_headroom`, `bus_lag_max_us`; the
    /// dashboard exports them to Prometheus. Absent in older heartbeats.
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, i64>,
    /// Every bus endpoint the process dials, and whether it is connected. Absent in older
    /// heartbeats.
    #[serde(default)]
    pub links: Vec<LinkState>,
}

/// One endpoint a process dials on the bus, as its socket's pipe events tell it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub url: String,
    pub connected: bool,
    /// Since when it is (dis)connected: its last change, or when it was dialled.
    pub since_ms: TimestampMs,
}

/// How long a dialer may stay disconnected before its process is shown degraded: a
/// restart of the peer takes about a second; longer means the peer is down or the bus is
/// stuck.
pub const LINK_DOWN_DEGRADED_MS: i64 = 5_000;

impl Heartbeat {
    /// The endpoints this process has been unable to reach for more than
    /// [`LINK_DOWN_DEGRADED_MS`] at the beat, e.g. `ipc:///tmp/shardbot/a/router.rep (12 s)`.
    pub fn links_down(&self) -> Vec<String> {
        self.links
            .iter()
            .filter(|l| !l.connected && self.now_ms - l.since_ms > LINK_DOWN_DEGRADED_MS)
            .map(|l| format!("{} ({} s)", l.url, (self.now_ms - l.since_ms) / 1000))
            .collect()
    }

    /// The process's state as users see it, and its detail: a running process with a
    /// dialer disconnected for more than [`LINK_DOWN_DEGRADED_MS`] is degraded, naming the
    /// endpoints; a running worker says when its next close is and what the last gave.
    /// The one rule of `shardbot health`, `scripts/stack status` and the dashboard.
    pub fn shown_state(&self) -> (&'static str, String) {
        let down = self.links_down();
        let not_connected = || format!("not connected to {}", down.join(", "));
        match &self.state {
            ServiceState::Starting => ("starting", String::new()),
            ServiceState::Running if !down.is_empty() => ("degraded", not_connected()),
            ServiceState::Running => ("running", self.close_summary().unwrap_or_default()),
            ServiceState::Degraded { reason } if !down.is_empty() => {
                ("degraded", format!("{reason}; {}", not_connected()))
            }
            ServiceState::Degraded { reason } => ("degraded", reason.clone()),
            ServiceState::Stopping => ("stopping", String::new()),
        }
    }

    /// A worker's newest bar close in a line, from its gauges (`last_close_ms`,
    /// `next_close_ms`, `last_close_signals`, `last_close_placed`, `last_close_refused`),
    /// e.g. `next close 10:15:00Z; last close 10:10:00Z: 4 signals, 3 placed, 1 refused`;
    /// `None` for a process without them. Times are the exchange's (bybit-sim's clock in
    /// sim mode), UTC.
    pub fn close_summary(&self) -> Option<String> {
        let m = |k: &str| self.metrics.get(k).copied();
        let hms = |ms: i64| {
            let s = ms.div_euclid(1000).rem_euclid(86_400);
            format!("{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
        };
        // 0: the worker has seen no bar yet.
        let last = m("last_close_ms").filter(|v| *v > 0)?;
        let next = m("next_close_ms")?;
        Some(format!(
            "next close {}; last close {}: {} signals, {} placed, {} refused",
            hms(next),
            hms(last),
            m("last_close_signals").unwrap_or(0),
            m("last_close_placed").unwrap_or(0),
            m("last_close_refused").unwrap_or(0),
        ))
    }
}

impl Publish for Heartbeat {
    fn topic(&self) -> Topic {
        Topic::Heartbeat {
            service: self.service.clone(),
            instance: self.instance.clone(),
        }
    }
}

/// Kill-switch and trading-state commands for the risk manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlCommand {
    /// No new entries.
    Halt,
    /// Only reduce-only orders.
    ReduceOnly,
    /// Back to normal trading.
    Resume,
    /// Close every position (sent through the router), then stay halted.
    FlattenAll,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    pub mode: TradingMode,
    pub message: String,
    /// For `FlattenAll`: the flatten started (or already running), to follow with
    /// `RiskRequest::Flatten`.
    #[serde(default)]
    pub flatten: Option<FlattenReport>,
}

/// A position the exchange still showed when a flatten read the account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenPosition {
    pub symbol: Symbol,
    pub side: Side,
    pub size: Decimal,
}

/// Where a flatten (the kill switch's "close everything") stands. The router closes every
/// position the exchange shows with reduce-only market orders (split at the symbol's
/// largest market order), reads the account again and repeats until it shows no position
/// or the deadline passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlattenReport {
    pub flatten_id: String,
    pub started_ms: TimestampMs,
    pub deadline_ms: TimestampMs,
    /// Set once the flatten has ended, flat or not.
    pub finished_ms: Option<TimestampMs>,
    /// The exchange showed no position (and no entry was being sent) at the last read.
    pub flat: bool,
    /// Reads of the account so far.
    pub rounds: u32,
    /// Reduce-only orders the exchange accepted.
    pub orders_placed: u32,
    /// Entries refused because they were approved before the flatten began.
    pub entries_stopped: u32,
    /// The positions of the last read (empty when flat).
    pub left: Vec<OpenPosition>,
    /// The most recent errors (orders refused, reads failed), newest last.
    pub errors: Vec<String>,
    /// `Some`: the close of this one position asked by hand (the dashboard's Close,
    /// `shardbot risk close`); entries go on and nothing else is closed. `None`: the kill
    /// switch's flatten of every position.
    #[serde(default)]
    pub symbol: Option<Symbol>,
}

impl FlattenReport {
    pub fn done(&self) -> bool {
        self.finished_ms.is_some()
    }

    /// What it is, for its summary: `flatten ID` or `close SYMBOL (ID)`.
    fn what(&self) -> String {
        match &self.symbol {
            None => format!("flatten {}", self.flatten_id),
            Some(s) => format!("close {s} ({})", self.flatten_id),
        }
    }

    /// One line for a log, a terminal or the dashboard.
    pub fn summary(&self) -> String {
        let what = self.what();
        let left = self
            .left
            .iter()
            .map(|p| format!("{} {} {}", p.symbol, p.side, p.size))
            .collect::<Vec<_>>()
            .join(", ");
        match (self.done(), self.flat) {
            (true, true) => format!(
                "{what}: FLAT after {} reads and {} orders",
                self.rounds, self.orders_placed
            ),
            (true, false) if self.rounds == 0 => format!(
                "{what}: NOT FLAT, OR NOT KNOWN: the positions could not be read before the \
                 deadline{}",
                self.errors
                    .last()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ),
            (true, false) => format!(
                "{what}: NOT FLAT at the deadline; still open: {left}{}",
                self.errors
                    .last()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ),
            (false, _) => format!(
                "{what}: closing ({} reads, {} orders so far; open: {})",
                self.rounds,
                self.orders_placed,
                if left.is_empty() { "-" } else { &left }
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request / reply
// ---------------------------------------------------------------------------------------

/// Closed bars of one symbol and interval, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub symbol: Symbol,
    pub interval: Interval,
    /// Only bars that opened at or after this time.
    #[serde(default)]
    pub start_ms: Option<TimestampMs>,
    /// Only bars that opened at or before this time.
    #[serde(default)]
    pub end_ms: Option<TimestampMs>,
    /// At most this many bars (the newest ones in the range).
    pub limit: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub symbol: Symbol,
    pub interval: Interval,
    /// Oldest first.
    pub bars: Vec<Bar>,
    /// The gateway's publisher epoch and the sequence number of the newest bar published
    /// on this topic, so a subscriber can resume gap detection where the history ends.
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub last_seq: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniverseResponse {
    pub instruments: Vec<Instrument>,
    pub as_of_ms: TimestampMs,
}

/// An error answered over REQ/REP instead of the expected reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub message: String,
}

/// Requests served by market-data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum GatewayRequest {
    History(HistoryRequest),
    Universe,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rep", rename_all = "snake_case")]
pub enum GatewayReply {
    History(HistoryResponse),
    Universe(UniverseResponse),
    Error(ErrorReply),
}

/// Requests served by the order-router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum RouterRequest {
    Submit(OrderIntent),
    /// Start the flatten `flatten_id` (entries approved before now are no longer sent,
    /// every position is closed until the exchange shows none or `deadline_ms` passes),
    /// or, when it exists already, say where it stands. Answered at once with
    /// `RouterReply::Flatten`; a router restarted meanwhile starts it again. With
    /// `symbol`, the close of that one position by hand: entries are not stopped and no
    /// other position is touched.
    Flatten {
        flatten_id: String,
        deadline_ms: TimestampMs,
        #[serde(default)]
        symbol: Option<Symbol>,
    },
    /// The strategies and parameters a worker loaded at its start (the JSON of
    /// `shardbot_strategy::ParametersInForce`), sent before it trades: the router journals
    /// them as in force from now (the exchange's clock, as every journal time), for
    /// `shardbot drift`. Answered with `RouterReply::Recorded`.
    Parameters {
        json: String,
    },
    /// A worker shard's progress through a bar close ([`CloseProgress`]). Answered with
    /// `RouterReply::Recorded` (`new`: the first report of this shard at this close).
    CloseProgress(CloseProgress),
}

/// What became of a submitted intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rep", rename_all = "snake_case")]
pub enum RouterReply {
    /// The order exists on the exchange (placed now, or found from an earlier attempt).
    Placed {
        intent_id: IntentId,
        order_link_id: String,
        order_id: String,
        duplicate: bool,
    },
    Refused {
        intent_id: IntentId,
        refusal: Refusal,
    },
    /// Boxed: the report is several times the size of the other replies.
    Flatten(Box<FlattenReport>),
    /// A worker's parameters are journalled (`new`: they were not in force at that time).
    Recorded {
        new: bool,
    },
    Error(ErrorReply),
}

/// Requests served by the risk-manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum RiskRequest {
    Approve(OrderIntent),
    /// The intents of a burst, judged in one round trip in the risk rules' order (exits
    /// first, then entries by symbol: `shardbot_risk::judging_order`), each against the
    /// book the ones before it left. Answered with `RiskReply::Decisions`, index for index.
    ApproveMany {
        intents: Vec<OrderIntent>,
        /// A bar close's partial judgement: for each intent (index for index), how many
        /// entries of its close may still come ranked before it (`u32::MAX`: not known).
        /// The intents that wait for their close (`OrderIntent::waits_for_its_close`) are
        /// then decided only where no entry still to come can change the decision (a
        /// refusal the entries already arrived make certain, an approval the room holds
        /// whatever comes before it), the others answered `None`, to be asked again.
        /// `None`: judge them all.
        #[serde(default)]
        to_come_before: Option<Vec<u32>>,
    },
    Positions,
    Balance,
    Status,
    Control(ControlCommand),
    /// The trading settings in force (`trading_settings.json`), as JSON.
    TradingSettings,
    /// Replace the trading settings: validated, written to `trading_settings.json` by the
    /// risk manager (the file's owner) and applied at once. A new simulated balance is
    /// accepted only while no position is open (the offset is set afresh).
    SetTradingSettings {
        json: String,
    },
    /// The router did not place an entry the risk manager approved (refused after the
    /// approval: below the minimums, stale, an exchange rejection...): the approval's
    /// provisional position ends at once instead of counting against the limits until it
    /// expires. Answered with the status.
    Unplaced {
        intent_id: IntentId,
        symbol: Symbol,
        reason: String,
    },
    /// Where the flatten `flatten_id` (from the `FlattenAll` reply, or `Close`'s) stands,
    /// asked of the router; answered with `RiskReply::Flatten`.
    Flatten {
        flatten_id: String,
    },
    /// Close one position by hand (the dashboard's Close, `shardbot risk close`): the
    /// router closes it with reduce-only market orders until the exchange shows it gone or
    /// the flatten deadline passes; the trading mode and every other position stay as they
    /// are. Answered with `RiskReply::Flatten` (its id to follow with `Flatten`).
    Close {
        symbol: Symbol,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rep", rename_all = "snake_case")]
pub enum RiskReply {
    Decision(RiskDecision),
    /// The decisions of an `ApproveMany`, in the order asked; `None` for an intent that
    /// cannot be judged yet: one of a close's partial judgement (`to_come_before`) that an
    /// entry still to come could change, or a reversal's entry waiting for its exit's fill
    /// to be booked (asked alone, `Approve`, it is answered once it can be judged).
    Decisions {
        decisions: Vec<Option<RiskDecision>>,
    },
    Positions(PositionSnapshot),
    Balance(BalanceSnapshot),
    Status(RiskStatus),
    Control(ControlReply),
    TradingSettings {
        json: String,
    },
    Flatten(FlattenReport),
    Error(ErrorReply),
}

/// Asks the reconciler for a sweep now (`shardbot reconcile`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum ReconcileRequest {
    /// `full`: re-check every trade within the exchange's retention, verified or not;
    /// otherwise only what is unverified or new.
    Sweep { full: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rep", rename_all = "snake_case")]
pub enum ReconcileReply {
    Swept(SweepSummary),
    Error(ErrorReply),
}

/// What one sweep did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSummary {
    pub kind: String,
    pub checked: u32,
    pub verified: u32,
    pub discrepancies: u32,
    pub imported: u32,
    pub restored: u32,
    pub unverified: u32,
    /// Expected − actual balance after the sweep, when a snapshot was taken.
    #[serde(default)]
    pub balance_difference: Option<Decimal>,
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::all_connected(&[(true, 0)], ServiceState::Running, "running", "")]
    #[case::down_briefly(&[(false, 97_000)], ServiceState::Running, "running", "")]
    #[case::down_long(&[(true, 0), (false, 88_000)], ServiceState::Running, "degraded", "not connected to ipc:///b (12 s)")]
    #[case::down_and_degraded(&[(false, 0)], ServiceState::Degraded { reason: "backfilling".into() }, "degraded", "backfilling; not connected to ipc:///a (100 s)")]
    #[case::starting(&[(false, 0)], ServiceState::Starting, "starting", "")]
    fn a_dialer_down_for_long_shows_degraded(
        #[case] links: &[(bool, i64)],
        #[case] state: ServiceState,
        #[case] shown: &str,
        #[case] detail: &str,
    ) {
        let mut h = beat(&[]);
        h.now_ms = 100_000;
        h.state = state;
        h.links = links
            .iter()
            .zip(["ipc:///a", "ipc:///b"])
            .map(|(&(connected, since_ms), url)| LinkState {
                url: url.into(),
                connected,
                since_ms,
            })
            .collect();
        assert_eq!(h.shown_state(), (shown, detail.to_owned()));
    }

    fn beat(metrics: &[(&str, i64)]) -> Heartbeat {
        Heartbeat {
            service: "strategy-worker".into(),
            instance: "0-2".into(),
            pid: 1,
            version: "0".into(),
            started_ms: 0,
            now_ms: 0,
            state: ServiceState::Running,
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            links: Vec::new(),
        }
    }

    #[test]
    fn a_workers_close_in_a_line() {
        let h = beat(&[
            ("last_close_ms", 1_764_842_700_000),
            ("next_close_ms", 1_764_843_000_000),
            ("last_close_signals", 4),
            ("last_close_placed", 3),
            ("last_close_refused", 1),
        ]);
        assert_eq!(
            h.close_summary().as_deref(),
            Some("next close 10:10:00Z; last close 10:05:00Z: 4 signals, 3 placed, 1 refused")
        );
        assert_eq!(
            beat(&[("last_close_ms", 0), ("next_close_ms", 0)]).close_summary(),
            None
        );
        assert_eq!(beat(&[("bus_lag_max_us", 5)]).close_summary(), None);
    }
}
