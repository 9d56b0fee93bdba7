//! The matching and account engine: orders, one-way positions, margin, fees, exchange-side
//! take-profit / stop-loss, funding, executions, closed PnL and the wallet of one account.
//!
//! Pure logic with no HTTP: the REST handlers translate requests into these calls and the
//! results into Bybit's JSON. Time only moves forward through [`AccountBook::advance`], which
//! walks the symbol's price path grid point by grid point since the last call, so resting
//! limit orders, SL/TP triggers and funding happen at the sim time they would have, however
//! rarely the account is looked at.
//!
//! Money: the wallet moves by exactly realised PnL − fees ± funding; each closed-PnL record
//! is the gross PnL of the closed quantity minus its share of the opening fees, the
//! closing fee and its share of the funding paid while the position was open, as Bybit
//! reports it ("Closed P&L … after deducting trading fees and funding fees", Bybit help
//! centre, article 900005391263), so their sum over a round trip equals the wallet's
//! change.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;

use crate::market::{Instrument, Universe};

/// Bybit's standard fees.
pub const TAKER_FEE: Decimal = Decimal::from_parts(55, 0, 0, false, 5); // 0.00055
pub const MAKER_FEE: Decimal = Decimal::from_parts(2, 0, 0, false, 4); // 0.0002
/// Funding rate charged at every settlement (longs pay shorts when positive).
const DEFAULT_LEVERAGE: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "Buy" => Some(Side::Buy),
            "Sell" => Some(Side::Sell),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "Buy",
            Side::Sell => "Sell",
        }
    }

    fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }

    fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// A refusal with Bybit's retCode and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: i64,
    pub msg: String,
}

fn reject(code: i64, msg: impl Into<String>) -> Reject {
    Reject {
        code,
        msg: msg.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: String,
    pub order_link_id: String,
    pub symbol: String,
    pub side: Side,
    pub market: bool,
    pub price: Option<Decimal>,
    pub qty: Decimal,
    pub cum_exec_qty: Decimal,
    pub cum_exec_value: Decimal,
    pub cum_exec_fee: Decimal,
    pub status: &'static str,
    pub time_in_force: &'static str,
    pub reduce_only: bool,
    pub close_on_trigger: bool,
    pub take_profit: Option<Decimal>,
    pub stop_loss: Option<Decimal>,
    pub create_type: &'static str,
    pub stop_order_type: &'static str,
    pub cancel_type: &'static str,
    pub reject_reason: &'static str,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Order {
    pub fn avg_price(&self) -> Option<Decimal> {
        (!self.cum_exec_qty.is_zero()).then(|| self.cum_exec_value / self.cum_exec_qty)
    }

    pub fn leaves_qty(&self) -> Decimal {
        if self.is_open() {
            self.qty - self.cum_exec_qty
        } else {
            Decimal::ZERO
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.status, "New" | "PartiallyFilled" | "Untriggered")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub exec_id: String,
    pub order_id: String,
    pub order_link_id: String,
    pub symbol: String,
    pub side: Side,
    pub order_type: &'static str,
    pub exec_type: &'static str,
    /// The order's createType and stopOrderType (`CreateByStopLoss` / `StopLoss` for the
    /// fill of a position's stop-loss; `CreateByUser` / `UNKNOWN` for a plain order).
    pub create_type: &'static str,
    pub stop_order_type: &'static str,
    pub price: Decimal,
    pub qty: Decimal,
    pub value: Decimal,
    pub fee: Decimal,
    pub fee_rate: Decimal,
    pub is_maker: bool,
    pub closed_size: Decimal,
    pub order_price: Decimal,
    pub order_qty: Decimal,
    pub leaves_qty: Decimal,
    pub time_ms: i64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub symbol: String,
    pub side: Side,
    pub size: Decimal,
    pub avg_price: Decimal,
    pub take_profit: Option<Decimal>,
    pub stop_loss: Option<Decimal>,
    /// Opening fees not yet attributed to a closed-PnL record.
    pub open_fees: Decimal,
    /// Funding paid (negative: received) not yet attributed to a closed-PnL record.
    pub funding: Decimal,
    /// Realised PnL since this position opened (fees and funding included).
    pub cur_realised: Decimal,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClosedPnl {
    pub symbol: String,
    pub order_id: String,
    /// Side of the closing order.
    pub side: Side,
    pub qty: Decimal,
    pub order_price: Decimal,
    pub order_type: &'static str,
    pub exec_type: &'static str,
    pub closed_size: Decimal,
    pub cum_entry_value: Decimal,
    pub avg_entry_price: Decimal,
    pub cum_exit_value: Decimal,
    pub avg_exit_price: Decimal,
    pub closed_pnl: Decimal,
    pub open_fee: Decimal,
    pub close_fee: Decimal,
    pub leverage: Decimal,
    pub fill_count: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What changed, in Bybit's push order (order → execution → position → wallet), for the
/// private WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Order(Order),
    Execution(Execution),
    Position { symbol: String },
    Wallet,
}

/// A new order as requested.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub symbol: String,
    pub side: Side,
    pub market: bool,
    pub qty: Decimal,
    pub price: Option<Decimal>,
    pub time_in_force: Option<&'static str>,
    pub order_link_id: String,
    pub reduce_only: bool,
    pub close_on_trigger: bool,
    pub take_profit: Option<Decimal>,
    pub stop_loss: Option<Decimal>,
}

/// Everything one account owns: its wallet, orders, positions and executions (the risk
/// rules' view of an account is `shardbot_risk::Book`).
#[derive(Debug, Default)]
pub struct AccountBook {
    pub usdt_wallet: Decimal,
    pub positions: HashMap<String, Position>,
    leverage: HashMap<String, Decimal>,
    pub orders: Vec<Order>,
    order_index: HashMap<String, usize>,
    /// Indices of the orders still open, so price events and margin look at those only,
    /// not at every order the account ever placed.
    open: std::collections::BTreeSet<usize>,
    link_ids: HashSet<String>,
    pub executions: Vec<Execution>,
    pub closed: Vec<ClosedPnl>,
    /// Sim time up to which triggers, resting orders and funding have been applied.
    pub advanced_to: i64,
    next_id: u64,
    /// Changes not yet pushed.
    pub changes: Vec<Change>,
}

fn is_link_id_valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 36
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AccountBook {
    pub fn new(usdt: Decimal, now_ms: i64) -> AccountBook {
        AccountBook {
            usdt_wallet: usdt,
            advanced_to: now_ms,
            ..AccountBook::default()
        }
    }

    fn id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        // Shaped like Bybit's UUIDs and, like Bybit's, unique across every account of the
        // exchange (two account stacks on one sim once shared execution ids) and across
        // restarts of the sim: the start time (ms, 40 bits) leads, the count follows (a
        // sim numbering from 1 at every start gave a new fill the id of the last run's,
        // which the journal then dropped).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let started = *STARTED.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        format!(
            "{kind:0>8}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (started >> 24) & 0xffff,
            (started >> 12) & 0xfff,
            started & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    pub fn leverage(&self, symbol: &str) -> Decimal {
        self.leverage
            .get(symbol)
            .copied()
            .unwrap_or(Decimal::from(DEFAULT_LEVERAGE))
    }

    /// `set-leverage`: 110043 when unchanged.
    pub fn set_leverage(&mut self, inst: &Instrument, leverage: Decimal) -> Result<(), Reject> {
        if leverage < Decimal::ONE || leverage > inst.max_leverage {
            return Err(reject(
                10001,
                format!("leverage must be in [1, {}]", inst.max_leverage),
            ));
        }
        if self.leverage(&inst.symbol) == leverage {
            return Err(reject(110043, "leverage not modified"));
        }
        self.leverage.insert(inst.symbol.clone(), leverage);
        if self.positions.contains_key(&inst.symbol) {
            self.changes.push(Change::Position {
                symbol: inst.symbol.clone(),
            });
        }
        Ok(())
    }

    pub fn order(&self, order_id: &str) -> Option<&Order> {
        self.order_index.get(order_id).map(|&i| &self.orders[i])
    }

    pub fn order_by_link(&self, link: &str) -> Option<&Order> {
        self.orders
            .iter()
            .rev()
            .find(|o| !link.is_empty() && o.order_link_id == link)
    }

    /// Cancels every open order of `symbol` (or of all symbols).
    pub fn cancel_all(&mut self, symbol: Option<&str>, now: i64) -> Vec<Order> {
        let open: Vec<usize> = self
            .open
            .iter()
            .copied()
            .filter(|&i| symbol.is_none_or(|s| self.orders[i].symbol == s))
            .collect();
        open.into_iter()
            .map(|i| {
                self.finish(i, "Cancelled", "CancelByUser", "EC_NoError", now);
                self.orders[i].clone()
            })
            .collect()
    }

    /// Unrealised PnL of every position at `now`.
    pub fn unrealised(&self, market: &Universe, now: i64) -> Decimal {
        self.positions
            .values()
            .filter_map(|p| {
                market
                    .get(&p.symbol)
                    .map(|i| p.side.sign() * (i.price_at(now) - p.avg_price) * p.size)
            })
            .sum()
    }

    /// Initial margin of positions and open orders.
    pub fn initial_margin(&self) -> Decimal {
        let pos: Decimal = self
            .positions
            .values()
            .map(|p| p.size * p.avg_price / self.leverage(&p.symbol))
            .sum();
        let ord: Decimal = self
            .open
            .iter()
            .map(|&i| &self.orders[i])
            .filter(|o| !o.reduce_only)
            .filter_map(|o| {
                o.price
                    .map(|p| o.leaves_qty() * p / self.leverage(&o.symbol))
            })
            .sum();
        pos + ord
    }

    pub fn equity(&self, market: &Universe, now: i64) -> Decimal {
        self.usdt_wallet + self.unrealised(market, now)
    }

    pub fn available(&self, market: &Universe, now: i64) -> Decimal {
        (self.equity(market, now) - self.initial_margin()).max(Decimal::ZERO)
    }

    /// Places an order: validates it as Bybit does, then fills (market, or a marketable
    /// limit) or rests it.
    pub fn place(
        &mut self,
        market: &Universe,
        req: NewOrder,
        now: i64,
        spread_ticks: u32,
    ) -> Result<Order, Reject> {
        let Some(inst) = market.get(&req.symbol) else {
            return Err(reject(10001, "symbol invalid"));
        };
        if !req.order_link_id.is_empty() && !is_link_id_valid(&req.order_link_id) {
            return Err(reject(
                10001,
                "orderLinkId must be 1-36 characters of [0-9A-Za-z_-]",
            ));
        }
        if !req.order_link_id.is_empty() && self.link_ids.contains(&req.order_link_id) {
            return Err(reject(110072, "OrderLinkedID is duplicate"));
        }
        if req.qty <= Decimal::ZERO {
            return Err(reject(10001, "params error: qty must be positive"));
        }
        // The maximum first: a huge qty divided by the step would overflow.
        let cap = if req.market {
            inst.max_mkt_qty
        } else {
            inst.max_qty
        };
        let too_big = || {
            reject(
                10001,
                format!("params error: qty exceeds the maximum {cap}"),
            )
        };
        if req.qty > cap {
            return Err(too_big());
        }
        let steps = req
            .qty
            .checked_div(inst.qty_step)
            .ok_or_else(too_big)?
            .floor();
        if steps.is_zero() || req.qty < inst.min_qty {
            return Err(reject(
                110017,
                format!(
                    "orderQty will be truncated to zero (qty step {}, min {})",
                    inst.qty_step, inst.min_qty
                ),
            ));
        }
        if steps * inst.qty_step != req.qty {
            return Err(reject(
                10001,
                format!(
                    "params error: qty must be a multiple of the qty step {}",
                    inst.qty_step
                ),
            ));
        }
        if let Some(p) = req.price.filter(|_| !req.market) {
            if p <= Decimal::ZERO || (p / inst.tick).fract() != Decimal::ZERO {
                return Err(reject(
                    10001,
                    format!(
                        "params error: price must be a positive multiple of the tick size {}",
                        inst.tick
                    ),
                ));
            }
        } else if !req.market {
            return Err(reject(10001, "params error: a limit order needs a price"));
        }
        self.advance(market, now, spread_ticks);
        let last = inst.price_at(now);
        let ref_price = req.price.filter(|_| !req.market).unwrap_or(last);
        if req.qty * ref_price < inst.min_notional && !req.reduce_only {
            return Err(reject(
                110094,
                format!(
                    "Order does not meet minimum order value {}USDT",
                    inst.min_notional
                ),
            ));
        }
        let position = self.positions.get(&req.symbol);
        if req.reduce_only {
            match position {
                Some(p) if p.side != req.side => {}
                _ => {
                    return Err(reject(
                        110017,
                        "current position is zero or on the same side, cannot fix reduce-only order qty",
                    ));
                }
            }
            if req.take_profit.is_some() || req.stop_loss.is_some() {
                return Err(reject(
                    10001,
                    "params error: TP/SL are not allowed on reduce-only orders",
                ));
            }
        }
        for (what, v) in [("takeProfit", req.take_profit), ("stopLoss", req.stop_loss)] {
            if let Some(v) = v {
                let (tp_ok, sl_ok) = match req.side {
                    Side::Buy => (v > last, v < last),
                    Side::Sell => (v < last, v > last),
                };
                let ok = if what == "takeProfit" { tp_ok } else { sl_ok };
                if !ok {
                    return Err(reject(
                        10001,
                        format!(
                            "params error: {what} {v} is on the wrong side of the last price {last}"
                        ),
                    ));
                }
            }
        }
        // Initial margin for what would open or add.
        let opening = match position {
            Some(p) if p.side != req.side => (req.qty - p.size).max(Decimal::ZERO),
            _ if req.reduce_only => Decimal::ZERO,
            _ => req.qty,
        };
        if !opening.is_zero() {
            let need =
                opening * ref_price / self.leverage(&req.symbol) + opening * ref_price * TAKER_FEE;
            if need > self.available(market, now) {
                return Err(reject(110007, "Insufficient available balance"));
            }
        }
        let order = Order {
            order_id: self.id("o"),
            order_link_id: req.order_link_id.clone(),
            symbol: req.symbol.clone(),
            side: req.side,
            market: req.market,
            price: req.price.filter(|_| !req.market),
            qty: req.qty,
            cum_exec_qty: Decimal::ZERO,
            cum_exec_value: Decimal::ZERO,
            cum_exec_fee: Decimal::ZERO,
            status: "New",
            time_in_force: if req.market {
                "IOC"
            } else {
                req.time_in_force.unwrap_or("GTC")
            },
            reduce_only: req.reduce_only,
            close_on_trigger: req.close_on_trigger,
            take_profit: req.take_profit,
            stop_loss: req.stop_loss,
            create_type: "CreateByUser",
            stop_order_type: "",
            cancel_type: "UNKNOWN",
            reject_reason: "EC_NoError",
            created_ms: now,
            updated_ms: now,
        };
        if !order.order_link_id.is_empty() {
            self.link_ids.insert(order.order_link_id.clone());
        }
        let idx = self.orders.len();
        self.order_index.insert(order.order_id.clone(), idx);
        self.orders.push(order);
        let spread = inst.tick * Decimal::from(spread_ticks);
        let (bid, ask) = ((last - spread).max(inst.tick), last + spread);
        let taker_price = match req.side {
            Side::Buy => ask,
            Side::Sell => bid,
        };
        let crosses = req.market
            || match (req.side, req.price) {
                (Side::Buy, Some(p)) => p >= ask,
                (Side::Sell, Some(p)) => p <= bid,
                _ => false,
            };
        if crosses && req.time_in_force == Some("PostOnly") {
            // A post-only order never takes liquidity: one that would is cancelled.
            self.finish(
                idx,
                "Cancelled",
                "CancelByUser",
                "EC_PostOnlyWillTakeLiquidity",
                now,
            );
        } else if crosses {
            let price = match (req.market, req.side, req.price) {
                (false, Side::Buy, Some(p)) => p.min(ask),
                (false, Side::Sell, Some(p)) => p.max(bid),
                _ => taker_price,
            };
            self.fill(idx, price, false, now, "Trade");
        } else if req.time_in_force == Some("IOC") || req.time_in_force == Some("FOK") {
            self.finish(
                idx,
                "Cancelled",
                "CancelByUser",
                "EC_NoImmediateQtyToFill",
                now,
            );
        } else {
            self.changes.push(Change::Order(self.orders[idx].clone()));
            self.track(idx);
        }
        Ok(self.orders[idx].clone())
    }

    fn finish(
        &mut self,
        idx: usize,
        status: &'static str,
        cancel_type: &'static str,
        reason: &'static str,
        now: i64,
    ) {
        let o = &mut self.orders[idx];
        o.status = status;
        o.cancel_type = cancel_type;
        o.reject_reason = reason;
        o.updated_ms = now;
        self.changes.push(Change::Order(o.clone()));
        self.track(idx);
    }

    /// Keeps the open-order index in step with order `idx`'s status.
    fn track(&mut self, idx: usize) {
        if self.orders[idx].is_open() {
            self.open.insert(idx);
        } else {
            self.open.remove(&idx);
        }
    }

    /// Fills the rest of order `idx` at `price`. A reduce-only order is cut to the position.
    fn fill(&mut self, idx: usize, price: Decimal, maker: bool, now: i64, exec_type: &'static str) {
        let (symbol, side, reduce_only) = {
            let o = &self.orders[idx];
            (o.symbol.clone(), o.side, o.reduce_only)
        };
        let mut qty = self.orders[idx].qty - self.orders[idx].cum_exec_qty;
        let pos = self.positions.get(&symbol).cloned();
        if reduce_only {
            qty = match &pos {
                Some(p) if p.side != side => qty.min(p.size),
                _ => Decimal::ZERO,
            };
            if qty.is_zero() {
                self.finish(idx, "Cancelled", "CancelByReduceOnly", "EC_NoError", now);
                return;
            }
        }
        let fee_rate = if maker { MAKER_FEE } else { TAKER_FEE };
        let value = qty * price;
        let fee = (value * fee_rate).round_dp(8);
        let leverage = self.leverage(&symbol);
        // Position arithmetic (one-way mode).
        let closed = match &pos {
            Some(p) if p.side != side => qty.min(p.size),
            _ => Decimal::ZERO,
        };
        let opened = qty - closed;
        let close_fee = if qty.is_zero() {
            Decimal::ZERO
        } else {
            (fee * closed / qty).round_dp(8)
        };
        let open_fee = fee - close_fee;
        self.usdt_wallet -= fee;
        if let Some(p) = pos.clone().filter(|_| !closed.is_zero()) {
            let gross = p.side.sign() * (price - p.avg_price) * closed;
            let open_fee_share = (p.open_fees * closed / p.size).round_dp(8);
            let funding_share = (p.funding * closed / p.size).round_dp(8);
            self.usdt_wallet += gross;
            let order = &self.orders[idx];
            let rec = ClosedPnl {
                symbol: symbol.clone(),
                order_id: order.order_id.clone(),
                side,
                qty: order.qty,
                order_price: order.price.unwrap_or(price),
                order_type: if order.market { "Market" } else { "Limit" },
                exec_type,
                closed_size: closed,
                cum_entry_value: p.avg_price * closed,
                avg_entry_price: p.avg_price,
                cum_exit_value: price * closed,
                avg_exit_price: price,
                closed_pnl: gross - open_fee_share - close_fee - funding_share,
                open_fee: open_fee_share,
                close_fee,
                leverage,
                fill_count: 1,
                created_ms: now,
                updated_ms: now,
            };
            self.closed.push(rec);
            let remaining = p.size - closed;
            if remaining.is_zero() {
                self.positions.remove(&symbol);
            } else if let Some(pm) = self.positions.get_mut(&symbol) {
                pm.size = remaining;
                pm.open_fees -= open_fee_share;
                pm.funding -= funding_share;
                pm.cur_realised += gross - close_fee;
                pm.updated_ms = now;
            }
        }
        if !opened.is_zero() {
            let (tp, sl) = (self.orders[idx].take_profit, self.orders[idx].stop_loss);
            match self.positions.get_mut(&symbol) {
                Some(p) => {
                    let new_size = p.size + opened;
                    p.avg_price = ((p.avg_price * p.size + price * opened) / new_size).round_dp(8);
                    p.size = new_size;
                    p.open_fees += open_fee;
                    p.cur_realised -= open_fee;
                    p.take_profit = tp.or(p.take_profit);
                    p.stop_loss = sl.or(p.stop_loss);
                    p.updated_ms = now;
                }
                None => {
                    self.positions.insert(
                        symbol.clone(),
                        Position {
                            symbol: symbol.clone(),
                            side,
                            size: opened,
                            avg_price: price,
                            take_profit: tp,
                            stop_loss: sl,
                            open_fees: open_fee,
                            funding: Decimal::ZERO,
                            cur_realised: -open_fee,
                            created_ms: now,
                            updated_ms: now,
                        },
                    );
                }
            }
        }
        let o = &mut self.orders[idx];
        o.cum_exec_qty += qty;
        o.cum_exec_value += value;
        o.cum_exec_fee += fee;
        o.status = if o.cum_exec_qty == o.qty {
            "Filled"
        } else {
            "PartiallyFilled"
        };
        if o.status != "Filled" && o.market {
            o.status = "PartiallyFilledCanceled";
        }
        o.updated_ms = now;
        let order = o.clone();
        self.track(idx);
        let exec = Execution {
            exec_id: self.id("e"),
            order_id: order.order_id.clone(),
            order_link_id: order.order_link_id.clone(),
            symbol: symbol.clone(),
            side,
            order_type: if order.market { "Market" } else { "Limit" },
            exec_type,
            create_type: order.create_type,
            // Bybit's executions say UNKNOWN where the order has no stop type.
            stop_order_type: if order.stop_order_type.is_empty() {
                "UNKNOWN"
            } else {
                order.stop_order_type
            },
            price,
            qty,
            value,
            fee,
            fee_rate,
            is_maker: maker,
            closed_size: closed,
            order_price: order.price.unwrap_or(price),
            order_qty: order.qty,
            leaves_qty: order.leaves_qty(),
            time_ms: now,
            seq: self.next_id,
        };
        self.executions.push(exec.clone());
        self.changes.push(Change::Order(order));
        self.changes.push(Change::Execution(exec));
        self.changes.push(Change::Position { symbol });
        self.changes.push(Change::Wallet);
    }

    /// Cancels an open order: 110001 if it does not exist or is already final.
    pub fn cancel(
        &mut self,
        order_id: Option<&str>,
        link: Option<&str>,
        now: i64,
    ) -> Result<Order, Reject> {
        let idx = order_id
            .and_then(|id| self.order_index.get(id).copied())
            .or_else(|| link.and_then(|l| self.orders.iter().rposition(|o| o.order_link_id == l)));
        match idx {
            Some(i) if self.orders[i].is_open() => {
                self.finish(i, "Cancelled", "CancelByUser", "EC_NoError", now);
                Ok(self.orders[i].clone())
            }
            _ => Err(reject(110001, "Order does not exist")),
        }
    }

    /// Amends an open limit order's qty or price.
    pub fn amend(
        &mut self,
        market: &Universe,
        order_id: Option<&str>,
        link: Option<&str>,
        qty: Option<Decimal>,
        price: Option<Decimal>,
        now: i64,
    ) -> Result<Order, Reject> {
        let idx = order_id
            .and_then(|id| self.order_index.get(id).copied())
            .or_else(|| link.and_then(|l| self.orders.iter().rposition(|o| o.order_link_id == l)));
        let Some(i) = idx.filter(|&i| self.orders[i].is_open()) else {
            return Err(reject(110001, "Order does not exist"));
        };
        let Some(inst) = market.get(&self.orders[i].symbol) else {
            return Err(reject(10001, "symbol invalid"));
        };
        if let Some(q) = qty {
            if q <= self.orders[i].cum_exec_qty || (q / inst.qty_step).fract() != Decimal::ZERO {
                return Err(reject(10001, "params error: qty"));
            }
            self.orders[i].qty = q;
        }
        if let Some(p) = price {
            if p <= Decimal::ZERO || (p / inst.tick).fract() != Decimal::ZERO {
                return Err(reject(10001, "params error: price"));
            }
            self.orders[i].price = Some(p);
        }
        if qty.is_none() && price.is_none() {
            return Err(reject(10001, "params error: nothing to amend"));
        }
        self.orders[i].updated_ms = now;
        self.changes.push(Change::Order(self.orders[i].clone()));
        Ok(self.orders[i].clone())
    }

    /// `trading-stop`: sets ("0" cancels) the position's take-profit and stop-loss.
    pub fn trading_stop(
        &mut self,
        symbol: &str,
        tp: Option<Decimal>,
        sl: Option<Decimal>,
        now: i64,
    ) -> Result<(), Reject> {
        let Some(p) = self.positions.get_mut(symbol) else {
            return Err(reject(10001, "can not set tp/sl/ts for zero position"));
        };
        if let Some(tp) = tp {
            p.take_profit = (!tp.is_zero()).then_some(tp);
        }
        if let Some(sl) = sl {
            p.stop_loss = (!sl.is_zero()).then_some(sl);
        }
        p.updated_ms = now;
        self.changes.push(Change::Position {
            symbol: symbol.to_owned(),
        });
        Ok(())
    }

    /// Applies everything that happened on the price paths since the last call, in time
    /// order: resting limit orders that were crossed, SL/TP triggers on last price, and
    /// funding at each settlement of an open position.
    pub fn advance(&mut self, market: &Universe, now: i64, spread_ticks: u32) {
        let from = self.advanced_to;
        if now <= from {
            return;
        }
        let mut symbols: Vec<String> = self.positions.keys().cloned().collect();
        symbols.extend(self.open.iter().map(|&i| self.orders[i].symbol.clone()));
        symbols.sort();
        symbols.dedup();
        // Events across symbols, in time order.
        let mut events: Vec<(i64, String, Decimal)> = Vec::new();
        for s in &symbols {
            if let Some(inst) = market.get(s) {
                // Stops and resting limits see the first moment the path reaches their
                // level, not only its corners.
                let levels = self.levels(s);
                events.extend(
                    inst.prices_through(from, now, &levels)
                        .into_iter()
                        .map(|(t, p)| (t, s.clone(), p)),
                );
                let funding = i64::from(inst.funding_interval_min) * 60_000;
                let mut f = crate::market::bar_start(from, funding, 0) + funding;
                while f <= now {
                    // A funding marker: price is taken at that time.
                    events.push((f, format!("{s}\u{0}funding"), inst.price_at(f)));
                    f += funding;
                }
            }
        }
        events.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        for (t, key, price) in events {
            if let Some(symbol) = key.strip_suffix("\u{0}funding") {
                self.settle_funding(symbol, price, market.funding_rate, t);
            } else {
                self.on_price(market, &key, price, t, spread_ticks);
            }
        }
        self.advanced_to = now;
    }

    /// The prices at which something happens on `symbol`: its position's stop-loss and
    /// take-profit, and its resting limit orders.
    fn levels(&self, symbol: &str) -> Vec<Decimal> {
        let mut out: Vec<Decimal> = self
            .positions
            .get(symbol)
            .map(|p| p.stop_loss.into_iter().chain(p.take_profit).collect())
            .unwrap_or_default();
        out.extend(
            self.open
                .iter()
                .map(|&i| &self.orders[i])
                .filter(|o| o.symbol == symbol && !o.market)
                .filter_map(|o| o.price),
        );
        out
    }

    fn settle_funding(&mut self, symbol: &str, mark: Decimal, rate: Decimal, t: i64) {
        if rate.is_zero() {
            return;
        }
        let exec_id = self.id("f");
        let Some(p) = self.positions.get_mut(symbol) else {
            return;
        };
        // Positive rate: longs pay, shorts receive.
        let value = p.size * mark;
        let payment = (value * rate).round_dp(8) * p.side.sign();
        p.cur_realised -= payment;
        p.funding += payment;
        p.updated_ms = t;
        let (side, size) = (p.side, p.size);
        self.usdt_wallet -= payment;
        let exec = Execution {
            exec_id,
            order_id: String::new(),
            order_link_id: String::new(),
            symbol: symbol.to_owned(),
            side,
            order_type: "UNKNOWN",
            exec_type: "Funding",
            create_type: "",
            stop_order_type: "UNKNOWN",
            price: mark,
            qty: size,
            value,
            fee: payment,
            fee_rate: rate,
            is_maker: false,
            closed_size: Decimal::ZERO,
            order_price: Decimal::ZERO,
            order_qty: Decimal::ZERO,
            leaves_qty: Decimal::ZERO,
            time_ms: t,
            seq: self.next_id,
        };
        self.executions.push(exec.clone());
        self.changes.push(Change::Execution(exec));
        self.changes.push(Change::Wallet);
    }

    fn on_price(
        &mut self,
        market: &Universe,
        symbol: &str,
        price: Decimal,
        t: i64,
        spread_ticks: u32,
    ) {
        // Resting limit orders crossed by the last price fill at their limit, as makers.
        let resting: Vec<usize> = self
            .open
            .iter()
            .copied()
            .filter(|&i| self.orders[i].symbol == symbol && !self.orders[i].market)
            .collect();
        for i in resting {
            let Some(limit) = self.orders[i].price else {
                continue;
            };
            let crossed = match self.orders[i].side {
                Side::Buy => price <= limit,
                Side::Sell => price >= limit,
            };
            if crossed {
                self.fill(i, limit, true, t, "Trade");
            }
        }
        // Exchange-side TP/SL on last price; the stop wins when both would trigger at once.
        let Some(p) = self.positions.get(symbol).cloned() else {
            return;
        };
        let hit_sl = p.stop_loss.is_some_and(|sl| match p.side {
            Side::Buy => price <= sl,
            Side::Sell => price >= sl,
        });
        let hit_tp = p.take_profit.is_some_and(|tp| match p.side {
            Side::Buy => price >= tp,
            Side::Sell => price <= tp,
        });
        let (create_type, stop_type) = if hit_sl {
            ("CreateByStopLoss", "StopLoss")
        } else if hit_tp {
            ("CreateByTakeProfit", "TakeProfit")
        } else {
            return;
        };
        let Some(inst) = market.get(symbol) else {
            return;
        };
        let spread = inst.tick * Decimal::from(spread_ticks);
        let fill_price = match p.side.opposite() {
            Side::Buy => price + spread,
            Side::Sell => (price - spread).max(inst.tick),
        };
        let order = Order {
            order_id: self.id("o"),
            order_link_id: String::new(),
            symbol: symbol.to_owned(),
            side: p.side.opposite(),
            market: true,
            price: None,
            qty: p.size,
            cum_exec_qty: Decimal::ZERO,
            cum_exec_value: Decimal::ZERO,
            cum_exec_fee: Decimal::ZERO,
            status: "New",
            time_in_force: "IOC",
            reduce_only: true,
            close_on_trigger: true,
            take_profit: None,
            stop_loss: None,
            create_type,
            stop_order_type: stop_type,
            cancel_type: "UNKNOWN",
            reject_reason: "EC_NoError",
            created_ms: t,
            updated_ms: t,
        };
        let idx = self.orders.len();
        self.order_index.insert(order.order_id.clone(), idx);
        self.orders.push(order);
        self.fill(idx, fill_price, false, t, "Trade");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn market() -> Universe {
        Universe::new(3, 50, None).unwrap()
    }

    fn order(symbol: &str, side: Side, qty: Decimal, link: &str) -> NewOrder {
        NewOrder {
            symbol: symbol.into(),
            side,
            market: true,
            qty,
            price: None,
            time_in_force: None,
            order_link_id: link.into(),
            reduce_only: false,
            close_on_trigger: false,
            take_profit: None,
            stop_loss: None,
        }
    }

    fn qty_for(inst: &Instrument, usdt: Decimal, now: i64) -> Decimal {
        ((usdt / inst.price_at(now)) / inst.qty_step).ceil() * inst.qty_step
    }

    const NOW: i64 = 1_780_000_000_000;

    #[test]
    fn a_round_trip_moves_the_wallet_by_exactly_the_closed_pnl() {
        let m = market();
        let inst = &m.instruments[5];
        let mut b = AccountBook::new(dec!(10000), NOW);
        let q = qty_for(inst, dec!(1000), NOW);
        let open = b
            .place(&m, order(&inst.symbol, Side::Buy, q, "a1"), NOW, 1)
            .unwrap();
        assert_eq!(open.status, "Filled");
        assert_eq!(b.positions[&inst.symbol].size, q);
        // Held across at least one funding settlement (every 8 h at most).
        let later = NOW + 9 * 3_600_000;
        b.advance(&m, later, 1);
        let close = NewOrder {
            reduce_only: true,
            ..order(&inst.symbol, Side::Sell, q, "a2")
        };
        let closed = b.place(&m, close, later, 1).unwrap();
        assert_eq!(closed.status, "Filled");
        assert!(b.positions.is_empty());
        let fees: Decimal = b
            .executions
            .iter()
            .filter(|e| e.exec_type == "Trade")
            .map(|e| e.fee)
            .sum();
        let funding: Decimal = b
            .executions
            .iter()
            .filter(|e| e.exec_type == "Funding")
            .map(|e| e.fee)
            .sum();
        let pnl: Decimal = b.closed.iter().map(|c| c.closed_pnl).sum();
        assert_eq!(b.closed.len(), 1);
        // closed PnL = gross − all fees − funding: exactly what the wallet moved by.
        assert_eq!(b.usdt_wallet, dec!(10000) + pnl, "fees {fees}");
        let gross = (closed.avg_price().unwrap() - open.avg_price().unwrap()) * q;
        assert_eq!(pnl, gross - fees - funding);
        assert!(!funding.is_zero(), "the round trip paid funding");
    }

    #[test]
    fn validation_speaks_bybits_codes() {
        let m = market();
        let inst = &m.instruments[0];
        let mut b = AccountBook::new(dec!(100), NOW);
        let code = |b: &mut AccountBook, o: NewOrder| b.place(&m, o, NOW, 1).unwrap_err().code;
        assert_eq!(
            code(&mut b, order("NOPEUSDT", Side::Buy, dec!(1), "x")),
            10001
        );
        assert_eq!(
            code(
                &mut b,
                order(&inst.symbol, Side::Buy, inst.qty_step / dec!(2), "x")
            ),
            110017
        );
        assert_eq!(
            code(
                &mut b,
                order(&inst.symbol, Side::Buy, inst.qty_step * dec!(1.5), "x")
            ),
            10001
        );
        // Below the minimum notional: the cheapest instrument's single qty step.
        let cheap = m
            .instruments
            .iter()
            .find(|i| i.qty_step * i.price_at(NOW) < i.min_notional)
            .unwrap();
        assert_eq!(
            code(&mut b, order(&cheap.symbol, Side::Buy, cheap.qty_step, "n")),
            110094
        );
        assert_eq!(
            code(
                &mut b,
                order(&inst.symbol, Side::Buy, qty_for(inst, dec!(5000), NOW), "m")
            ),
            110007
        );
        assert_eq!(
            code(
                &mut b,
                order(&inst.symbol, Side::Buy, dec!(1), &"l".repeat(37))
            ),
            10001
        );
        let mut rich = AccountBook::new(dec!(100000), NOW);
        let q = qty_for(inst, dec!(100), NOW);
        rich.place(&m, order(&inst.symbol, Side::Buy, q, "dup"), NOW, 1)
            .unwrap();
        assert_eq!(
            code(&mut rich, order(&inst.symbol, Side::Buy, q, "dup")),
            110072
        );
        let ro = NewOrder {
            reduce_only: true,
            ..order(&inst.symbol, Side::Buy, q, "ro")
        };
        assert_eq!(code(&mut rich, ro), 110017, "reduce-only on the same side");
        let filled = rich.orders[0].order_id.clone();
        assert_eq!(
            rich.cancel(Some(&filled), None, NOW).unwrap_err().code,
            110001
        );
        assert_eq!(rich.set_leverage(inst, dec!(10)).unwrap_err().code, 110043);
        rich.set_leverage(inst, dec!(5)).unwrap();
    }

    #[test]
    fn funding_follows_the_configured_rate_and_zero_turns_it_off() {
        for (rate, settlements) in [(dec!(0.0001), true), (Decimal::ZERO, false)] {
            let mut m = market();
            m.funding_rate = rate;
            let inst = &m.instruments[5];
            let mut b = AccountBook::new(dec!(10000), NOW);
            let q = qty_for(inst, dec!(1000), NOW);
            b.place(&m, order(&inst.symbol, Side::Buy, q, "f1"), NOW, 1)
                .unwrap();
            b.advance(&m, NOW + 9 * 3_600_000, 1);
            let funding: Vec<&Execution> = b
                .executions
                .iter()
                .filter(|e| e.exec_type == "Funding")
                .collect();
            assert_eq!(!funding.is_empty(), settlements, "rate {rate}");
            assert!(funding.iter().all(|e| e.fee_rate == rate));
        }
    }

    #[test]
    fn a_stop_loss_triggers_on_the_path_and_closes_the_position() {
        let m = market();
        let inst = &m.instruments[9];
        let mut b = AccountBook::new(dec!(100000), NOW);
        let last = inst.price_at(NOW);
        let q = qty_for(inst, dec!(1000), NOW);
        // A stop 0.2 % below and a take-profit 50 % above: over a week the stop is hit.
        let sl = ((last * dec!(0.998)) / inst.tick).floor() * inst.tick;
        let tp = ((last * dec!(1.5)) / inst.tick).floor() * inst.tick;
        let o = NewOrder {
            stop_loss: Some(sl),
            take_profit: Some(tp),
            ..order(&inst.symbol, Side::Buy, q, "sl1")
        };
        b.place(&m, o, NOW, 1).unwrap();
        let mut t = NOW;
        while !b.positions.is_empty() && t < NOW + 7 * 86_400_000 {
            t += 600_000;
            b.advance(&m, t, 1);
        }
        assert!(b.positions.is_empty(), "the stop was never hit");
        let exit = b.orders.last().unwrap();
        assert_eq!(
            (exit.create_type, exit.stop_order_type, exit.reduce_only),
            ("CreateByStopLoss", "StopLoss", true)
        );
        // Triggered where the path reached the stop, filled a spread (1 tick) through it.
        let rec = b.closed.last().unwrap();
        assert_eq!(rec.avg_exit_price, sl - inst.tick);
    }

    #[test]
    fn a_post_only_order_that_would_take_liquidity_is_cancelled_not_filled() {
        let m = market();
        let inst = &m.instruments[11];
        let mut b = AccountBook::new(dec!(100000), NOW);
        let last = inst.price_at(NOW);
        let q = qty_for(inst, dec!(500), NOW);
        let crossing = NewOrder {
            market: false,
            price: Some(last * dec!(2) / inst.tick * inst.tick),
            time_in_force: Some("PostOnly"),
            ..order(&inst.symbol, Side::Buy, q, "po1")
        };
        let o = b.place(&m, crossing, NOW, 1).unwrap();
        assert_eq!(
            (o.status, o.reject_reason, o.cum_exec_qty),
            ("Cancelled", "EC_PostOnlyWillTakeLiquidity", Decimal::ZERO)
        );
        assert!(b.positions.is_empty() && b.executions.is_empty());
        let resting_price = ((last * dec!(0.9)) / inst.tick).floor() * inst.tick;
        let resting = NewOrder {
            market: false,
            price: Some(resting_price),
            time_in_force: Some("PostOnly"),
            ..order(&inst.symbol, Side::Buy, q, "po2")
        };
        assert_eq!(
            b.place(&m, resting, NOW, 1).unwrap().status,
            "New",
            "a non-crossing post-only order rests"
        );
    }

    #[test]
    fn the_open_order_index_follows_every_status_change() {
        let m = market();
        let inst = &m.instruments[11];
        let mut b = AccountBook::new(dec!(100000), NOW);
        let last = inst.price_at(NOW);
        let q = qty_for(inst, dec!(200), NOW);
        let below = |pct: Decimal| ((last * pct) / inst.tick).floor() * inst.tick;
        let limit = |link: &str, p: Decimal| NewOrder {
            market: false,
            price: Some(p),
            ..order(&inst.symbol, Side::Buy, q, link)
        };
        let a = b.place(&m, limit("i1", below(dec!(0.5))), NOW, 1).unwrap();
        b.place(&m, limit("i2", below(dec!(0.6))), NOW, 1).unwrap();
        b.place(&m, order(&inst.symbol, Side::Buy, q, "i3"), NOW, 1)
            .unwrap(); // filled at once
        let open = |b: &AccountBook| {
            b.open
                .iter()
                .map(|&i| b.orders[i].order_link_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(open(&b), ["i1", "i2"]);
        b.cancel(Some(&a.order_id), None, NOW).unwrap();
        assert_eq!(open(&b), ["i2"]);
        assert!(b.initial_margin() > Decimal::ZERO);
        b.cancel_all(None, NOW);
        assert!(open(&b).is_empty());
        assert_eq!(b.orders.iter().filter(|o| o.is_open()).count(), 0);
    }

    #[test]
    fn a_resting_limit_order_fills_as_maker_when_crossed() {
        let m = market();
        let inst = &m.instruments[11];
        let mut b = AccountBook::new(dec!(100000), NOW);
        let last = inst.price_at(NOW);
        let limit = ((last * dec!(0.999)) / inst.tick).floor() * inst.tick;
        let q = qty_for(inst, dec!(500), NOW);
        let o = NewOrder {
            market: false,
            price: Some(limit),
            ..order(&inst.symbol, Side::Buy, q, "lim")
        };
        let placed = b.place(&m, o, NOW, 1).unwrap();
        assert_eq!(placed.status, "New");
        let mut t = NOW;
        while b.positions.is_empty() && t < NOW + 7 * 86_400_000 {
            t += 600_000;
            b.advance(&m, t, 1);
        }
        let e = b
            .executions
            .iter()
            .find(|e| e.exec_type == "Trade")
            .unwrap();
        assert!(e.is_maker);
        assert_eq!(e.price, limit);
        assert_eq!(e.fee, (e.value * MAKER_FEE).round_dp(8));
    }
}
