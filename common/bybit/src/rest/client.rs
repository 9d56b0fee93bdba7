//! The domain client: what the services ask for, in their terms, over the raw endpoints.
//! Pagination, kline paging, read retries after 10006, and the unknown-outcome rule for
//! orders live here.

use std::{future::Future, sync::Arc};

#[cfg(feature = "trade")]
use rust_decimal::Decimal;
use shardbot_protocol::{Instrument, Interval, Symbol};

#[cfg(feature = "trade")]
use super::requests::{CreateBatch, CreateOrder, MAX_BATCH_ORDERS, SetLeverage};
use super::{RawClient, ServerClock, requests::Query};
#[cfg(feature = "trade")]
use crate::models::order::OrderId;
use crate::{
    error::{ApiCode, BybitError},
    models::{
        Page,
        account::{AccountInfo, WalletAccount},
        market::{InstrumentInfo, Kline, Ticker, proven_closed},
        order::{Execution, Order},
        position::{ClosedPnl, PositionInfo},
    },
    ratelimit::RateLimiter,
};

/// What the exchange knows of an order whose placement had an unknown outcome.
#[derive(Debug, Clone)]
pub enum OrderResolution {
    /// It exists: the earlier attempt went through. Do not place it again.
    Placed(Box<Order>),
    /// No order with that link id: the earlier attempt did not go through.
    NotFound,
}

/// How many times a read is tried when Bybit answers `10006` (each try waits for the
/// endpoint's reset first).
const READ_ATTEMPTS: usize = 3;
/// A safety stop against a server that keeps returning the same cursor.
const MAX_PAGES: usize = 10_000;

/// The widest `[startTime, endTime]` Bybit accepts for executions and closed PnL.
pub const MAX_WINDOW_MS: i64 = 7 * 86_400_000;

/// `[start_ms, end_ms]` cut into windows of at most [`MAX_WINDOW_MS`] (both ends
/// inclusive, no millisecond read twice or skipped), oldest first; none when `end < start`.
pub fn windows(start_ms: i64, end_ms: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut from = start_ms;
    while from <= end_ms {
        let to = from.saturating_add(MAX_WINDOW_MS - 1).min(end_ms);
        out.push((from, to));
        if to == i64::MAX {
            break;
        }
        from = to + 1;
    }
    out
}

/// The query of a time-windowed history endpoint (executions, closed PnL): 100 a page.
fn time_window(symbol: Option<&str>, start_ms: i64, end_ms: i64) -> Query {
    Query::new()
        .with("category", "linear")
        .with_opt("symbol", symbol)
        .with("startTime", start_ms)
        .with("endTime", end_ms)
        .with("limit", 100)
}

#[derive(Debug, Clone)]
pub struct BybitClient {
    raw: RawClient,
}

impl BybitClient {
    pub fn new(raw: RawClient) -> BybitClient {
        BybitClient { raw }
    }

    pub fn raw(&self) -> &RawClient {
        &self.raw
    }

    /// This client with a connection pool of its own ([`RawClient::with_own_connections`]):
    /// the same keys, budgets and clock.
    pub fn with_own_connections(&self) -> Result<BybitClient, BybitError> {
        Ok(BybitClient {
            raw: self.raw.with_own_connections()?,
        })
    }

    /// The exchange's clock (set by [`sync_time`](Self::sync_time), replay-aware): the time
    /// a service judges by.
    pub fn clock(&self) -> &Arc<ServerClock> {
        self.raw.clock()
    }

    /// The budget owner of this client's requests (for headroom gauges).
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        self.raw.limiter()
    }

    pub fn has_credentials(&self) -> bool {
        self.raw.has_credentials()
    }

    /// The account's settings (`/v5/account/info`): its margin mode, unified or not.
    pub async fn account_info(&self) -> Result<AccountInfo, BybitError> {
        self.read(|| self.raw.account_info()).await
    }

    /// Reads are idempotent: after `10006` the limiter has blocked the endpoint until its
    /// reset, so trying again waits exactly as long as Bybit asked.
    async fn read<T, F, Fut>(&self, mut f: F) -> Result<T, BybitError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BybitError>>,
    {
        let mut attempt = 1;
        loop {
            match f().await {
                Err(e)
                    if e.api_code() == Some(ApiCode::TooManyVisits) && attempt < READ_ATTEMPTS =>
                {
                    tracing::warn!(error = %e, attempt, "rate-limited read; retrying after the reset");
                    attempt += 1;
                }
                // A read that could not be sent (a pooled connection the server closed as
                // it was reused, a refused connection) is asked again: reading twice
                // changes nothing. (Orders never come here: theirs is the outcome-unknown
                // path.)
                Err(e) if e.is_unsent() && attempt < READ_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "a read could not be sent; asking again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn all_pages<T, F, Fut>(&self, what: &str, mut fetch: F) -> Result<Vec<T>, BybitError>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = Result<Page<T>, BybitError>>,
    {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = fetch(cursor.clone()).await?;
            let next = page.next().map(str::to_owned);
            out.extend(page.list);
            match next {
                Some(n) if Some(&n) == cursor.as_ref() => {
                    return Err(BybitError::Config(format!(
                        "{what}: the server repeated cursor `{n}`"
                    )));
                }
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
        Err(BybitError::Config(format!(
            "{what}: more than {MAX_PAGES} pages"
        )))
    }

    /// Measures Bybit's clock against ours and uses the offset for every signature from
    /// now on. Returns the offset in ms (server − local).
    pub async fn sync_time(&self) -> Result<i64, BybitError> {
        self.raw.sync_clock().await
    }

    /// Every linear instrument, all pages (1000 per page).
    pub async fn instruments(&self) -> Result<Vec<InstrumentInfo>, BybitError> {
        self.all_pages("instruments-info", |cursor| {
            let q = Query::new()
                .with("category", "linear")
                .with("limit", 1000)
                .with_opt("cursor", cursor);
            async move { self.read(|| self.raw.market_instruments_info(&q)).await }
        })
        .await
    }

    /// Every trading USDT-settled linear perpetual: the universe shardbot trades.
    pub async fn usdt_perpetuals(&self) -> Result<Vec<InstrumentInfo>, BybitError> {
        let mut v: Vec<InstrumentInfo> = self
            .instruments()
            .await?
            .into_iter()
            .filter(InstrumentInfo::is_trading_usdt_perpetual)
            .collect();
        v.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        Ok(v)
    }

    /// The order filters (tick, quantity step, minimums) of every trading USDT perpetual,
    /// by symbol: what the router sizes and rounds with, and a backtest of its trades must.
    pub async fn instrument_filters(
        &self,
    ) -> Result<std::collections::HashMap<Symbol, Instrument>, BybitError> {
        Ok(self
            .usdt_perpetuals()
            .await?
            .iter()
            .filter_map(InstrumentInfo::to_instrument)
            .map(|i| (i.symbol.clone(), i))
            .collect())
    }

    /// Klines of `symbol` whose start lies in `[start_ms, end_ms]`, oldest first, paging back
    /// from `end_ms` 1000 at a time. Bybit sends newest first; this normalises.
    pub async fn klines(
        &self,
        symbol: &str,
        interval: Interval,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Kline>, BybitError> {
        let mut out: Vec<Kline> = Vec::new();
        let mut end = end_ms;
        while end >= start_ms {
            let q = Query::new()
                .with("category", "linear")
                .with("symbol", symbol)
                .with("interval", interval.as_str())
                .with("start", start_ms)
                .with("end", end)
                .with("limit", 1000);
            let page = self.read(|| self.raw.market_kline(&q)).await?;
            let Some(oldest) = page.list.iter().map(|k| k.start_ms).min() else {
                break;
            };
            out.extend(
                page.list
                    .into_iter()
                    .filter(|k| k.start_ms >= start_ms && k.start_ms <= end_ms),
            );
            if oldest <= start_ms {
                break;
            }
            end = oldest - 1;
        }
        out.sort_by_key(|k| k.start_ms);
        out.dedup_by_key(|k| k.start_ms);
        Ok(out)
    }

    /// The klines of `symbol` whose start lies in `[start_ms, end_ms]` and that the exchange
    /// has shown to be closed, oldest first.
    ///
    /// Bybit's kline list holds the bar still open, and "closed by now" judged on our
    /// estimate of the exchange's clock is wrong whenever the estimate runs ahead of it (by
    /// up to a round trip; at bybit-sim's accelerated clock that is hundreds of ms of its
    /// time): the open bar would pass for closed, with the volume of its first moments.
    /// So the range is read one bar further, and a bar counts as closed only when the
    /// exchange has begun a later one ([`proven_closed`]). Intervals without a fixed length
    /// (monthly) are refused.
    pub async fn closed_klines(
        &self,
        symbol: &str,
        interval: Interval,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Kline>, BybitError> {
        let len = interval.duration_ms().ok_or_else(|| {
            BybitError::Config(format!(
                "closed klines of {symbol}: interval {} has no fixed length",
                interval.as_str()
            ))
        })?;
        let klines = self
            .klines(symbol, interval, start_ms, end_ms + len)
            .await?;
        Ok(proven_closed(klines, end_ms))
    }

    /// Tickers of every linear symbol (one request).
    pub async fn tickers(&self) -> Result<Vec<Ticker>, BybitError> {
        let q = Query::new().with("category", "linear");
        Ok(self.read(|| self.raw.market_tickers(&q)).await?.list)
    }

    /// Places an order. It is never re-sent here: if the outcome is unknown (timeout, broken
    /// connection, 5xx, rate-limited), the error is [`BybitError::UnknownOutcome`] and the
    /// caller resolves it with [`find_order`](Self::find_order) before deciding anything.
    #[cfg(feature = "trade")]
    pub async fn place_order(&self, order: &CreateOrder) -> Result<OrderId, BybitError> {
        unknown_if_unsure(order, self.raw.order_create(order).await)
    }

    /// [`place_order`](Self::place_order) on budget reserved from the limiter
    /// ([`RateLimiter::reserve`](crate::ratelimit::RateLimiter::reserve) on
    /// `/v5/order/create`).
    #[cfg(feature = "trade")]
    pub async fn place_order_reserved(
        &self,
        order: &CreateOrder,
        reservation: crate::ratelimit::Reservation,
    ) -> Result<OrderId, BybitError> {
        unknown_if_unsure(
            order,
            self.raw.order_create_reserved(order, reservation).await,
        )
    }

    /// Places up to [`MAX_BATCH_ORDERS`] orders in one `/v5/order/create-batch` request
    /// (its own budget of orders per second, beside `/v5/order/create`'s). Returns each
    /// order's own result in `orders`' order: its ids, or its error, one order failing
    /// while the others are placed; an order whose outcome is unknown (its own 10006,
    /// say) is [`BybitError::UnknownOutcome`], as in [`place_order`](Self::place_order).
    /// An `Err` for the whole call concerns every order: with `outcome_unknown()`
    /// (timeout, 5xx, 10006, a reply that does not list each order) any of them may have
    /// been placed, so each is looked up by its orderLinkId; otherwise none was.
    #[cfg(feature = "trade")]
    pub async fn place_orders(
        &self,
        orders: &[CreateOrder],
    ) -> Result<Vec<Result<OrderId, BybitError>>, BybitError> {
        batch_size(orders)?;
        let reply = self
            .raw
            .order_create_batch(&CreateBatch::new(orders))
            .await?;
        batch_results(orders, reply)
    }

    /// [`place_orders`](Self::place_orders) on budget reserved from the limiter for its
    /// orders (`/v5/order/create-batch`, cost = the number of orders).
    #[cfg(feature = "trade")]
    pub async fn place_orders_reserved(
        &self,
        orders: &[CreateOrder],
        reservation: crate::ratelimit::Reservation,
    ) -> Result<Vec<Result<OrderId, BybitError>>, BybitError> {
        batch_size(orders)?;
        let reply = self
            .raw
            .order_create_batch_reserved(&CreateBatch::new(orders), reservation)
            .await?;
        batch_results(orders, reply)
    }

    /// Looks an order up by its link id: open orders first, then history.
    pub async fn find_order(
        &self,
        symbol: &str,
        order_link_id: &str,
    ) -> Result<OrderResolution, BybitError> {
        let q = Query::new()
            .with("category", "linear")
            .with("symbol", symbol)
            .with("orderLinkId", order_link_id);
        let open = self.read(|| self.raw.order_realtime(&q)).await?;
        if let Some(o) = open
            .list
            .into_iter()
            .find(|o| o.order_link_id == order_link_id)
        {
            return Ok(OrderResolution::Placed(Box::new(o)));
        }
        let hist = self.read(|| self.raw.order_history(&q)).await?;
        Ok(
            match hist
                .list
                .into_iter()
                .find(|o| o.order_link_id == order_link_id)
            {
                Some(o) => OrderResolution::Placed(Box::new(o)),
                None => OrderResolution::NotFound,
            },
        )
    }

    /// Sets the leverage of a symbol; "not modified" (110043) means it already is, which
    /// is success.
    #[cfg(feature = "trade")]
    pub async fn set_leverage(&self, symbol: &str, leverage: Decimal) -> Result<(), BybitError> {
        let r = SetLeverage {
            category: "linear",
            symbol: symbol.to_owned(),
            buy_leverage: leverage,
            sell_leverage: leverage,
        };
        match self.raw.position_set_leverage(&r).await {
            Ok(_) => Ok(()),
            Err(e) if e.api_code() == Some(ApiCode::LeverageNotModified) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every open USDT-settled position.
    pub async fn positions(&self) -> Result<Vec<PositionInfo>, BybitError> {
        let all = self
            .all_pages("position list", |cursor| {
                let q = Query::new()
                    .with("category", "linear")
                    .with("settleCoin", "USDT")
                    .with("limit", 200)
                    .with_opt("cursor", cursor);
                async move { self.read(|| self.raw.position_list(&q)).await }
            })
            .await?;
        Ok(all.into_iter().filter(PositionInfo::is_open).collect())
    }

    /// Every open USDT-settled order.
    pub async fn open_orders(&self) -> Result<Vec<Order>, BybitError> {
        self.all_pages("open orders", |cursor| {
            let q = Query::new()
                .with("category", "linear")
                .with("settleCoin", "USDT")
                .with("limit", 50)
                .with_opt("cursor", cursor);
            async move { self.read(|| self.raw.order_realtime(&q)).await }
        })
        .await
    }

    /// `symbol`'s orders of Bybit's default window (the last 7 days), newest first, all
    /// pages, each page read as every read is (asked again after 10006 or when it could
    /// not be sent).
    pub async fn order_history(&self, symbol: &str) -> Result<Vec<Order>, BybitError> {
        self.all_pages("order history", |cursor| {
            let q = Query::new()
                .with("category", "linear")
                .with("symbol", symbol)
                .with("limit", 50)
                .with_opt("cursor", cursor);
            async move { self.read(|| self.raw.order_history(&q)).await }
        })
        .await
    }

    /// Executions in `[start_ms, end_ms]`, all pages, read in windows of at most 7 days
    /// (Bybit's limit), so any span can be asked for.
    pub async fn executions(
        &self,
        symbol: Option<&str>,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Execution>, BybitError> {
        let mut all = Vec::new();
        for (from, to) in windows(start_ms, end_ms) {
            let q = time_window(symbol, from, to);
            all.extend(
                self.all_pages("execution list", |cursor| {
                    let q = q.clone().with_opt("cursor", cursor);
                    async move { self.read(|| self.raw.execution_list(&q)).await }
                })
                .await?,
            );
        }
        Ok(all)
    }

    /// Closed-PnL records in `[start_ms, end_ms]`, all pages, in windows of at most 7 days.
    pub async fn closed_pnl(
        &self,
        symbol: Option<&str>,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<ClosedPnl>, BybitError> {
        let mut all = Vec::new();
        for (from, to) in windows(start_ms, end_ms) {
            let q = time_window(symbol, from, to);
            all.extend(
                self.all_pages("closed pnl", |cursor| {
                    let q = q.clone().with_opt("cursor", cursor);
                    async move { self.read(|| self.raw.position_closed_pnl(&q)).await }
                })
                .await?,
            );
        }
        Ok(all)
    }

    /// The UNIFIED account's wallet.
    pub async fn wallet(&self) -> Result<WalletAccount, BybitError> {
        let q = Query::new().with("accountType", "UNIFIED");
        let w = self.read(|| self.raw.account_wallet_balance(&q)).await?;
        w.list
            .into_iter()
            .find(|a| a.account_type == "UNIFIED")
            .ok_or_else(|| BybitError::Config("wallet-balance returned no UNIFIED account".into()))
    }
}

/// An order call's result, an unsure outcome (timeout, 5xx, 10006...) made
/// [`BybitError::UnknownOutcome`] for the order.
#[cfg(feature = "trade")]
fn unknown_if_unsure(
    order: &CreateOrder,
    result: Result<OrderId, BybitError>,
) -> Result<OrderId, BybitError> {
    match result {
        Err(e) if e.outcome_unknown() => Err(BybitError::UnknownOutcome {
            endpoint: "/v5/order/create".into(),
            order_link_id: order.order_link_id.clone(),
            cause: Box::new(e),
        }),
        other => other,
    }
}

#[cfg(feature = "trade")]
const BATCH_PATH: &str = "/v5/order/create-batch";

/// 1 to [`MAX_BATCH_ORDERS`] orders, or a clear error (nothing sent).
#[cfg(feature = "trade")]
fn batch_size(orders: &[CreateOrder]) -> Result<(), BybitError> {
    if orders.is_empty() || orders.len() > MAX_BATCH_ORDERS {
        return Err(BybitError::Config(format!(
            "{BATCH_PATH}: {} orders; a batch holds 1 to {MAX_BATCH_ORDERS}",
            orders.len()
        )));
    }
    Ok(())
}

/// Each order's own result from a batch reply, in the request's order.
#[cfg(feature = "trade")]
fn batch_results(
    orders: &[CreateOrder],
    reply: crate::models::order::BatchReply,
) -> Result<Vec<Result<OrderId, BybitError>>, BybitError> {
    if reply.created.len() != orders.len() || reply.codes.len() != orders.len() {
        return Err(BybitError::BatchMismatch {
            endpoint: BATCH_PATH.into(),
            sent: orders.len(),
            listed: reply.created.len(),
            codes: reply.codes.len(),
        });
    }
    Ok(orders
        .iter()
        .zip(reply.created)
        .zip(reply.codes)
        .map(|((order, created), code)| {
            if code.code == 0 {
                return Ok(OrderId {
                    order_id: created.order_id,
                    order_link_id: order.order_link_id.clone(),
                });
            }
            let e = BybitError::Api {
                endpoint: BATCH_PATH.into(),
                ret_code: code.code,
                code: ApiCode::from_ret_code(code.code),
                message: code.msg,
            };
            Err(if e.outcome_unknown() {
                BybitError::UnknownOutcome {
                    endpoint: BATCH_PATH.into(),
                    order_link_id: order.order_link_id.clone(),
                    cause: Box::new(e),
                }
            } else {
                e
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const DAY: i64 = 86_400_000;

    #[rstest]
    #[case::an_hour(0, 3_600_000, &[(0, 3_600_000)])]
    #[case::exactly_seven_days(0, MAX_WINDOW_MS - 1, &[(0, MAX_WINDOW_MS - 1)])]
    #[case::seven_days_and_a_ms(0, MAX_WINDOW_MS, &[(0, MAX_WINDOW_MS - 1), (MAX_WINDOW_MS, MAX_WINDOW_MS)])]
    #[case::ten_days(5, 5 + 10 * DAY, &[(5, 4 + 7 * DAY), (5 + 7 * DAY, 5 + 10 * DAY)])]
    #[case::one_ms(7, 7, &[(7, 7)])]
    #[case::backwards(10, 9, &[])]
    fn spans_are_read_in_windows_of_seven_days_at_most(
        #[case] start: i64,
        #[case] end: i64,
        #[case] want: &[(i64, i64)],
    ) {
        let got = windows(start, end);
        assert_eq!(got, want);
        for (a, b) in &got {
            assert!(b - a < MAX_WINDOW_MS);
        }
    }

    #[test]
    fn a_month_is_five_contiguous_windows() {
        let got = windows(0, 30 * DAY);
        assert_eq!(got.len(), 5);
        assert!(got.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{got:?}");
        assert_eq!(got.last().unwrap().1, 30 * DAY);
    }

    #[test]
    fn the_end_of_time_does_not_overflow() {
        assert_eq!(
            windows(i64::MAX - 5, i64::MAX),
            vec![(i64::MAX - 5, i64::MAX)]
        );
    }
}
