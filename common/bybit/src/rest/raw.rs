//! The raw REST client: one method per endpoint, named after it, returning Bybit's own
//! models. Signing, the server-clock offset, the rate-limit budgets and the mapping of
//! HTTP and retCode failures to [`BybitError`] all happen here, once.

use std::{sync::Arc, time::Duration};

use reqwest::{Method, header::HeaderMap};
use serde::{Serialize, de::DeserializeOwned};
use tokio::time::Instant;

#[cfg(feature = "trade")]
use super::parse_batch_envelope;
#[cfg(feature = "trade")]
use super::requests::{
    AmendOrder, CancelAll, CancelOrder, CreateBatch, CreateOrder, SetLeverage, SwitchMode,
    TradingStop,
};
use super::{
    parse_envelope,
    requests::{DemoApplyMoney, Query},
};
#[cfg(feature = "trade")]
use crate::models::{
    Empty,
    order::{BatchReply, OrderId},
};
#[cfg(feature = "trade")]
use crate::ratelimit::Reservation;
use crate::{
    auth::Credentials,
    error::{ApiCode, BybitError},
    models::{
        Page,
        account::{AccountInfo, FeeRate, WalletBalance},
        market::{InstrumentInfo, KlinePage, ServerTime, TickerList},
        order::{Execution, Order},
        position::{ClosedPnl, PositionInfo},
    },
    ratelimit::{LimitHeaders, RateLimiter},
};

/// How a call's reply is read, and how much of its endpoint's budget the call takes
/// (batch endpoints count per order).
struct Reading<T> {
    cost: u32,
    /// The budget was taken already, then ([`Reservation::taken`]): take none.
    reserved: Option<Instant>,
    parse: fn(&str, &str) -> Result<T, BybitError>,
}

impl<T> Clone for Reading<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Reading<T> {}

impl<T: DeserializeOwned> Reading<T> {
    /// One request, its envelope's `result` read as `T`.
    const ONE: Reading<T> = Reading {
        cost: 1,
        reserved: None,
        parse: parse_envelope::<T>,
    };
}

/// A reservation made for `path` (one for another endpoint is a caller's bug: refused).
#[cfg(feature = "trade")]
fn reserved_for(r: &Reservation, path: &str) -> Result<(), BybitError> {
    if r.endpoint() == path {
        Ok(())
    } else {
        Err(BybitError::Config(format!(
            "{path}: called on budget reserved for {}",
            r.endpoint()
        )))
    }
}

/// Settings of a REST client.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Base URL, e.g. `https://api-demo.bybit.com`.
    pub base_url: String,
    /// `X-BAPI-RECV-WINDOW` in ms (Bybit's default 5000).
    pub recv_window_ms: u64,
    /// A request with no reply within this time fails with `Timeout`.
    pub timeout: Duration,
}

/// The exchange's clock as seen from here, measured from `/v5/market/time`, so a skewed
/// local clock does not produce `10002`.
///
/// Bybit's clock runs at the speed of ours, only offset. bybit-sim's can run faster (an
/// accelerated replay) and says so in its time reply (`simClockSpeed`); the clock then
/// also carries that rate, so signatures, auth expiries and rate-limit resets stay right
/// for as long as the sim runs.
#[derive(Debug)]
pub struct ServerClock {
    /// (server ms, local ms) at the last measurement, and server ms per local ms.
    sample: std::sync::Mutex<(i64, i64, f64)>,
}

impl Default for ServerClock {
    fn default() -> ServerClock {
        let now = shardbot_protocol::now_ms();
        ServerClock {
            sample: std::sync::Mutex::new((now, now, 1.0)),
        }
    }
}

impl ServerClock {
    fn get(&self) -> (i64, i64, f64) {
        *self.sample.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the server read `server_ms` at local time `local_ms`, its clock running
    /// `rate` times as fast as ours.
    pub fn set_sample(&self, server_ms: i64, local_ms: i64, rate: f64) {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        *self.sample.lock().unwrap_or_else(|p| p.into_inner()) = (server_ms, local_ms, rate);
    }

    /// Server time minus local time, now.
    pub fn offset_ms(&self) -> i64 {
        self.now_ms() - shardbot_protocol::now_ms()
    }

    /// Sets a fixed offset at real-time speed.
    pub fn set_offset_ms(&self, offset: i64) {
        let now = shardbot_protocol::now_ms();
        self.set_sample(now + offset, now, 1.0);
    }

    /// Server ms per local ms (1 for Bybit).
    pub fn rate(&self) -> f64 {
        self.get().2
    }

    /// The exchange's current time in ms.
    pub fn now_ms(&self) -> i64 {
        let (server, local, rate) = self.get();
        server + ((shardbot_protocol::now_ms() - local) as f64 * rate) as i64
    }

    /// The exchange's time `real_ms` of our time from now (at least 1 ms ahead, even on
    /// a clock that all but stands still).
    pub fn after_ms(&self, real_ms: i64) -> i64 {
        self.now_ms() + ((real_ms as f64 * self.rate()) as i64).max(1)
    }

    /// The local instant at which the exchange's clock reads `server_ms`.
    pub fn local_instant(&self, server_ms: i64) -> Instant {
        let delta = ((server_ms - self.now_ms()) as f64 / self.rate()) as i64;
        if delta > 0 {
            Instant::now() + Duration::from_millis(delta as u64)
        } else {
            Instant::now()
        }
    }
}

fn http_client() -> Result<reqwest::Client, BybitError> {
    // rustls with the ring provider: install it once per process (a second install
    // attempt returns Err, which is fine).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("shardbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BybitError::Config(format!("cannot build the HTTP client: {e}")))
}

#[derive(Debug, Clone)]
pub struct RawClient {
    http: reqwest::Client,
    config: RestConfig,
    credentials: Option<Credentials>,
    limiter: Arc<RateLimiter>,
    clock: Arc<ServerClock>,
    clock_warned: Arc<std::sync::atomic::AtomicBool>,
}

fn header_num<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl RawClient {
    /// `credentials` may be `None` for market data only. `limiter` is the process's one
    /// budget owner; share it with every other client of the process.
    pub fn new(
        config: RestConfig,
        credentials: Option<Credentials>,
        limiter: Arc<RateLimiter>,
    ) -> Result<RawClient, BybitError> {
        Ok(RawClient {
            http: http_client()?,
            config,
            credentials,
            limiter,
            clock: Arc::new(ServerClock::default()),
            clock_warned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// The same client (keys, budgets, clock) with a connection pool of its own, for a
    /// tokio runtime of its own: a connection's I/O is driven by the runtime that opened
    /// it, so a client shared by two runtimes makes each wait on the other's thread.
    pub fn with_own_connections(&self) -> Result<RawClient, BybitError> {
        Ok(RawClient {
            http: http_client()?,
            ..self.clone()
        })
    }

    /// Bybit's clock as this client measured it (shared with the private stream's auth).
    pub fn clock(&self) -> &Arc<ServerClock> {
        &self.clock
    }

    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Measures the exchange's clock against ours (`/v5/market/time`) and signs with it
    /// from now on. Returns the offset in ms (server − local).
    pub async fn sync_clock(&self) -> Result<i64, BybitError> {
        let path = "/v5/market/time";
        // The budget first: a wait for it between the two readings of the local clock
        // would move the midpoint by half the wait (seconds, when the IP share is spent),
        // and every signed call after would be refused (10002).
        let taken = self.limiter.acquire_n(path, 1).await?;
        let before = shardbot_protocol::now_ms();
        let reading = Reading {
            reserved: Some(taken),
            ..Reading::ONE
        };
        let t: ServerTime = self
            .call_once(Method::GET, path, &Query::new(), None, false, reading)
            .await?;
        let after = shardbot_protocol::now_ms();
        let mid = (before + after) / 2;
        let offset = t.ms() - mid;
        let rate = t
            .sim_clock_speed
            .and_then(|s| s.to_string().parse::<f64>().ok())
            .unwrap_or(1.0);
        self.clock.set_sample(t.ms(), mid, rate);
        if offset.abs() > 1000 {
            // Said once per process; re-measurements (every few seconds in some services)
            // only at debug level.
            if self
                .clock_warned
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::debug!(offset_ms = offset, "clock offset to the exchange");
            } else {
                tracing::warn!(
                    offset_ms = offset,
                    "the local clock differs from the exchange's; signing with the exchange's time"
                );
            }
        }
        Ok(offset)
    }

    /// One call; a signed one that Bybit refuses with 10002 (timestamp outside the recv
    /// window: the clock was never measured, or drifted) is sent once more after the
    /// clock is measured again. Safe for orders too: a 10002 is refused at the gate,
    /// before the request is carried out. The reply is read, and the budget taken, as
    /// `reading` says.
    async fn call<T>(
        &self,
        method: Method,
        path: &'static str,
        query: &Query,
        body: Option<String>,
        signed: bool,
        reading: Reading<T>,
    ) -> Result<T, BybitError> {
        let first = self
            .call_once(method.clone(), path, query, body.clone(), signed, reading)
            .await;
        if signed
            && let Err(BybitError::Api {
                code: ApiCode::TimestampOutsideRecvWindow,
                ..
            }) = &first
        {
            tracing::warn!(
                endpoint = path,
                "Bybit refused the request's timestamp (10002): measuring its clock again and retrying once"
            );
            if let Err(e) = self.sync_clock().await {
                tracing::warn!(error = %e, "cannot read the exchange's clock");
                return first;
            }
            return self
                .call_once(method, path, query, body, signed, reading)
                .await;
        }
        first
    }

    async fn call_once<T>(
        &self,
        method: Method,
        path: &'static str,
        query: &Query,
        body: Option<String>,
        signed: bool,
        reading: Reading<T>,
    ) -> Result<T, BybitError> {
        let taken = match reading.reserved {
            Some(at) => at,
            None => self.limiter.acquire_n(path, reading.cost).await?,
        };
        let qs = query.encode();
        let url = if qs.is_empty() {
            format!("{}{path}", self.config.base_url)
        } else {
            format!("{}{path}?{qs}", self.config.base_url)
        };
        let mut req = self
            .http
            .request(method.clone(), &url)
            .timeout(self.config.timeout);
        if signed {
            let creds = self.credentials.as_ref().ok_or_else(|| {
                BybitError::Config(format!("{path} needs API keys and none are configured"))
            })?;
            let ts = self.clock.now_ms();
            let payload = body.as_deref().unwrap_or(&qs);
            let sign = creds.sign_rest(ts, self.config.recv_window_ms, payload);
            req = req
                .header("X-BAPI-API-KEY", &creds.api_key)
                .header("X-BAPI-TIMESTAMP", ts.to_string())
                .header("X-BAPI-SIGN", sign)
                .header("X-BAPI-RECV-WINDOW", self.config.recv_window_ms.to_string())
                .header("X-BAPI-SIGN-TYPE", "2");
        }
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let sent = req.send().await;
        // The exchange has counted the call by now, if it got it at all.
        self.limiter.answered(path, reading.cost, taken);
        let resp = sent.map_err(|e| self.transport(path, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.limiter.observe(
            path,
            LimitHeaders {
                limit: header_num(&headers, "X-Bapi-Limit"),
                remaining: header_num(&headers, "X-Bapi-Limit-Status"),
                reset_at: header_num::<i64>(&headers, "X-Bapi-Limit-Reset-Timestamp")
                    .map(|ms| self.clock.local_instant(ms)),
            },
        );
        let text = resp.text().await.map_err(|e| self.transport(path, e))?;
        match status {
            403 => {
                let resume_in = self.limiter.ip_banned();
                tracing::error!(
                    endpoint = path,
                    "HTTP 403 from Bybit: IP rate limit breached; all requests stop for 10 minutes"
                );
                return Err(BybitError::IpBanned {
                    endpoint: path.to_owned(),
                    resume_in,
                });
            }
            429 => {
                return Err(BybitError::TooManyRequests {
                    endpoint: path.to_owned(),
                });
            }
            200..=299 => {}
            _ => {
                return Err(BybitError::Http {
                    endpoint: path.to_owned(),
                    status,
                    body: text.chars().take(200).collect(),
                });
            }
        }
        let result = (reading.parse)(path, &text);
        if let Err(BybitError::Api {
            code: ApiCode::TooManyVisits,
            ..
        }) = &result
        {
            let reset = header_num::<i64>(&headers, "X-Bapi-Limit-Reset-Timestamp")
                .map(|ms| self.clock.local_instant(ms));
            self.limiter.too_many_visits(path, reset);
        }
        if let Err(e) = &result {
            tracing::debug!(endpoint = path, error = %e, "Bybit call failed");
        }
        result
    }

    fn transport(&self, path: &str, e: reqwest::Error) -> BybitError {
        if e.is_timeout() {
            BybitError::Timeout {
                endpoint: path.to_owned(),
                after: self.config.timeout,
            }
        } else {
            BybitError::Transport {
                endpoint: path.to_owned(),
                source: e,
            }
        }
    }

    async fn get_public<T: DeserializeOwned>(
        &self,
        path: &'static str,
        q: &Query,
    ) -> Result<T, BybitError> {
        self.call(Method::GET, path, q, None, false, Reading::ONE)
            .await
    }

    async fn get_signed<T: DeserializeOwned>(
        &self,
        path: &'static str,
        q: &Query,
    ) -> Result<T, BybitError> {
        self.call(Method::GET, path, q, None, true, Reading::ONE)
            .await
    }

    async fn post_signed<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &'static str,
        body: &B,
    ) -> Result<T, BybitError> {
        self.post_with(path, body, Reading::ONE).await
    }

    /// A signed POST of `body`, read and budgeted as `reading` says.
    async fn post_with<T, B: Serialize>(
        &self,
        path: &'static str,
        body: &B,
        reading: Reading<T>,
    ) -> Result<T, BybitError> {
        // The exact string signed is the exact body sent.
        let body = serde_json::to_string(body)
            .map_err(|e| BybitError::Config(format!("{path}: cannot encode the request: {e}")))?;
        self.call(Method::POST, path, &Query::new(), Some(body), true, reading)
            .await
    }

    // --- market (public) ------------------------------------------------------------

    pub async fn market_time(&self) -> Result<ServerTime, BybitError> {
        self.get_public("/v5/market/time", &Query::new()).await
    }

    pub async fn market_instruments_info(
        &self,
        q: &Query,
    ) -> Result<Page<InstrumentInfo>, BybitError> {
        self.get_public("/v5/market/instruments-info", q).await
    }

    pub async fn market_kline(&self, q: &Query) -> Result<KlinePage, BybitError> {
        self.get_public("/v5/market/kline", q).await
    }

    pub async fn market_tickers(&self, q: &Query) -> Result<TickerList, BybitError> {
        self.get_public("/v5/market/tickers", q).await
    }

    // --- orders -------------------------------------------------------------------

    /// Trading (feature `trade`: only the order router enables it).
    #[cfg(feature = "trade")]
    pub async fn order_create(&self, o: &CreateOrder) -> Result<OrderId, BybitError> {
        self.post_signed("/v5/order/create", o).await
    }

    /// [`order_create`](Self::order_create) on budget already taken (trading: feature
    /// `trade`).
    #[cfg(feature = "trade")]
    pub async fn order_create_reserved(
        &self,
        o: &CreateOrder,
        r: Reservation,
    ) -> Result<OrderId, BybitError> {
        let path = "/v5/order/create";
        reserved_for(&r, path)?;
        let reading = Reading {
            reserved: Some(r.taken()),
            ..Reading::ONE
        };
        self.post_with(path, o, reading).await
    }

    /// Several orders in one request, each consuming the batch budget (trading: feature
    /// `trade`). Each order's outcome is in the reply's lists, index for index.
    #[cfg(feature = "trade")]
    pub async fn order_create_batch(&self, b: &CreateBatch) -> Result<BatchReply, BybitError> {
        self.create_batch(b, None).await
    }

    /// [`order_create_batch`](Self::order_create_batch) on budget already taken for its
    /// orders (trading: feature `trade`).
    #[cfg(feature = "trade")]
    pub async fn order_create_batch_reserved(
        &self,
        b: &CreateBatch,
        r: Reservation,
    ) -> Result<BatchReply, BybitError> {
        reserved_for(&r, "/v5/order/create-batch")?;
        self.create_batch(b, Some(r)).await
    }

    #[cfg(feature = "trade")]
    async fn create_batch(
        &self,
        b: &CreateBatch,
        reserved: Option<Reservation>,
    ) -> Result<BatchReply, BybitError> {
        let path = "/v5/order/create-batch";
        let reading = Reading {
            cost: u32::try_from(b.request.len()).unwrap_or(u32::MAX),
            reserved: reserved.map(|r| r.taken()),
            parse: parse_batch_envelope,
        };
        self.post_with(path, b, reading).await
    }

    /// Trading (feature `trade`: only the order router enables it).
    #[cfg(feature = "trade")]
    pub async fn order_amend(&self, o: &AmendOrder) -> Result<OrderId, BybitError> {
        self.post_signed("/v5/order/amend", o).await
    }

    /// Trading (feature `trade`: only the order router enables it).
    #[cfg(feature = "trade")]
    pub async fn order_cancel(&self, o: &CancelOrder) -> Result<OrderId, BybitError> {
        self.post_signed("/v5/order/cancel", o).await
    }

    /// Trading (feature `trade`: only the order router enables it).
    #[cfg(feature = "trade")]
    pub async fn order_cancel_all(&self, o: &CancelAll) -> Result<serde_json::Value, BybitError> {
        self.post_signed("/v5/order/cancel-all", o).await
    }

    pub async fn order_realtime(&self, q: &Query) -> Result<Page<Order>, BybitError> {
        self.get_signed("/v5/order/realtime", q).await
    }

    pub async fn order_history(&self, q: &Query) -> Result<Page<Order>, BybitError> {
        self.get_signed("/v5/order/history", q).await
    }

    pub async fn execution_list(&self, q: &Query) -> Result<Page<Execution>, BybitError> {
        self.get_signed("/v5/execution/list", q).await
    }

    // --- positions ----------------------------------------------------------------

    pub async fn position_list(&self, q: &Query) -> Result<Page<PositionInfo>, BybitError> {
        self.get_signed("/v5/position/list", q).await
    }

    /// Trading (feature `trade`: only the order router enables it).
    #[cfg(feature = "trade")]
    pub async fn position_set_leverage(&self, r: &SetLeverage) -> Result<Empty, BybitError> {
        self.post_signed("/v5/position/set-leverage", r).await
    }

    /// Trading (feature `trade`: only the order router enables it).
    #[cfg(feature = "trade")]
    pub async fn position_switch_mode(&self, r: &SwitchMode) -> Result<Empty, BybitError> {
        self.post_signed("/v5/position/switch-mode", r).await
    }

    /// Trading (feature `trade`: only the order router enables it).
    #[cfg(feature = "trade")]
    pub async fn position_trading_stop(&self, r: &TradingStop) -> Result<Empty, BybitError> {
        self.post_signed("/v5/position/trading-stop", r).await
    }

    pub async fn position_closed_pnl(&self, q: &Query) -> Result<Page<ClosedPnl>, BybitError> {
        self.get_signed("/v5/position/closed-pnl", q).await
    }

    // --- account ------------------------------------------------------------------

    pub async fn account_wallet_balance(&self, q: &Query) -> Result<WalletBalance, BybitError> {
        self.get_signed("/v5/account/wallet-balance", q).await
    }

    pub async fn account_info(&self) -> Result<AccountInfo, BybitError> {
        self.get_signed("/v5/account/info", &Query::new()).await
    }

    pub async fn account_fee_rate(&self, q: &Query) -> Result<Page<FeeRate>, BybitError> {
        self.get_signed("/v5/account/fee-rate", q).await
    }

    pub async fn account_demo_apply_money(
        &self,
        r: &DemoApplyMoney,
    ) -> Result<serde_json::Value, BybitError> {
        self.post_signed("/v5/account/demo-apply-money", r).await
    }
}
