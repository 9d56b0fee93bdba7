//! Rate limits as budgets owned by one place (reference §4).
//!
//! - The IP budget: Bybit allows 600 requests per 5 s per IP, across every process and
//!   account stack on the host, and answers a breach with HTTP 403 and a ban of at least
//!   10 minutes. Each process is configured with its share (`ip_requests_per_5s`); the
//!   shares must sum to less than 600.
//! - Per-endpoint budgets: per UID, a rolling 1 s window per endpoint, from the reference's
//!   table, then corrected live by `X-Bapi-Limit` (limit) / `X-Bapi-Limit-Status`
//!   (remaining) / `X-Bapi-Limit-Reset-Timestamp` (when it resets).
//! - `retCode 10006` blocks that endpoint until the reset timestamp; HTTP 403 blocks
//!   everything for 10 minutes and calls fail at once instead of hammering.
//!
//! A caller `acquire`s before each request: it waits while the budget is spent (that wait
//! is the budget, not a guess), or fails with `IpBanned` during a ban.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use tokio::time::Instant;

use crate::error::BybitError;

/// The IP window.
pub const IP_WINDOW: Duration = Duration::from_secs(5);
/// Bybit's IP limit per window, shared by everything on the host.
pub const IP_LIMIT: u32 = 600;
/// How long a 403 stops all requests.
pub const IP_BAN: Duration = Duration::from_secs(10 * 60);
/// Bybit's per-endpoint window is a rolling second, counted when the exchange takes the
/// request in: some moment between our send and its answer. A call counts here from its
/// send while it is on the way, and from its answer once answered ([`RateLimiter::answered`]),
/// the latest moment the exchange can have counted it. Counted from the send alone, a
/// request taken in late (delayed on the way, or queued behind others at the exchange)
/// and one sent a window after it were counted in the same second by the exchange:
/// measured with `shardbot bench burst` at Bybit's limits, one 150-order burst in 30 met
/// 10006 on 6-7 orders at once, their exchange-side count 65 ms behind their send (a 50 ms
/// margin on the send-time window did not cover it). The 10 ms left is for an exchange
/// that counts whole milliseconds.
const ENDPOINT_WINDOW: Duration = Duration::from_millis(1010);
/// The longest an exchange-given reset time blocks an endpoint. Bybit's per-endpoint
/// windows are 1 s; a reset further out is a skewed clock or a damaged header, and taken
/// at its word it would stop orders for as long as it says.
pub const MAX_RESET_WAIT: Duration = Duration::from_secs(10);

/// The documented per-UID limit of an endpoint (requests per second), `None` for the
/// public market endpoints that only the IP limit governs.
pub fn documented_limit(path: &str) -> Option<u32> {
    Some(match path {
        "/v5/order/create" | "/v5/order/amend" | "/v5/order/cancel" | "/v5/order/cancel-all" => 10,
        // Orders per second, consumed per order of a batch (1-10 per request), a budget
        // of their own beside the single-order endpoints' (reference §4).
        "/v5/order/create-batch" | "/v5/order/amend-batch" | "/v5/order/cancel-batch" => 10,
        "/v5/order/realtime" | "/v5/order/history" | "/v5/execution/list" => 50,
        "/v5/position/list" | "/v5/position/closed-pnl" => 50,
        "/v5/position/set-leverage" | "/v5/position/switch-mode" | "/v5/position/trading-stop" => {
            10
        }
        "/v5/account/wallet-balance" | "/v5/account/info" => 50,
        "/v5/account/fee-rate" => 5,
        // 1 per minute: modelled as a 1 s window with the minute enforced by the block.
        "/v5/account/demo-apply-money" => 1,
        _ => return None,
    })
}

/// A sliding window: at most `limit` starts within `window`.
#[derive(Debug)]
struct Window {
    limit: u32,
    window: Duration,
    starts: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Window {
    fn new(limit: u32, window: Duration) -> Window {
        Window {
            limit: limit.max(1),
            window,
            starts: VecDeque::new(),
            blocked_until: None,
        }
    }

    /// How long until one more request may start (zero if now).
    fn wait(&mut self, now: Instant) -> Duration {
        self.wait_n(now, 1)
    }

    /// How long until `n` more may start at once (zero if now); `n` is at most the limit.
    fn wait_n(&mut self, now: Instant, n: u32) -> Duration {
        let n = n.clamp(1, self.limit);
        while self
            .starts
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.window)
        {
            self.starts.pop_front();
        }
        let blocked = self
            .blocked_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        // Room for n once the oldest (len + n - limit) starts have left the window.
        let over = (self.starts.len() as u32 + n).saturating_sub(self.limit) as usize;
        let full = match over.checked_sub(1).and_then(|i| self.starts.get(i)) {
            Some(&t) => (t + self.window).saturating_duration_since(now),
            None => Duration::ZERO,
        };
        blocked.max(full)
    }

    fn record(&mut self, now: Instant) {
        self.record_n(now, 1);
    }

    fn record_n(&mut self, now: Instant, n: u32) {
        for _ in 0..n {
            self.starts.push_back(now);
        }
    }

    /// Moves up to `n` starts recorded at `at` to `now`: a call taken at `at` has been
    /// answered. Starts stay in time order (each is recorded at the latest instant read
    /// under the limiter's lock). Starts already gone (out of the window, or moved by an
    /// earlier answer to the same call) are not counted again; moving another call's
    /// start of the same instant instead only counts it later, never less.
    fn answered(&mut self, at: Instant, n: u32, now: Instant) {
        let i = self.starts.partition_point(|&t| t < at);
        let mut moved = 0;
        while moved < n && self.starts.get(i).is_some_and(|&t| t == at) {
            self.starts.remove(i);
            moved += 1;
        }
        for _ in 0..moved {
            self.starts.push_back(now);
        }
    }

    /// Requests that may still start within the current window.
    fn headroom(&mut self, now: Instant) -> u32 {
        self.wait(now);
        if self.blocked_until.is_some_and(|u| u > now) {
            return 0;
        }
        self.limit.saturating_sub(self.starts.len() as u32)
    }

    fn block_until(&mut self, until: Instant) {
        let until = until.min(Instant::now() + MAX_RESET_WAIT);
        self.blocked_until = Some(self.blocked_until.map_or(until, |u| u.max(until)));
    }
}

#[derive(Debug)]
struct State {
    ip: Window,
    endpoints: HashMap<String, Window>,
    banned_until: Option<Instant>,
}

impl State {
    /// `endpoint`'s window, made at its documented limit the first time.
    fn endpoint(&mut self, endpoint: &str) -> &mut Window {
        self.endpoints
            .entry(endpoint.to_owned())
            .or_insert_with(|| {
                Window::new(
                    documented_limit(endpoint).unwrap_or(u32::MAX),
                    ENDPOINT_WINDOW,
                )
            })
    }
}

/// The budgets of one process. Share it (`Arc`) between every caller in the process.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

/// Budget taken for one call ([`RateLimiter::reserve`]): the call made with it takes
/// nothing more. Only the limiter makes one.
#[derive(Debug)]
#[must_use = "budget reserved for a call that is not made is wasted"]
pub struct Reservation {
    endpoint: &'static str,
    cost: u32,
    taken: Instant,
}

impl Reservation {
    /// When the budget was taken: [`RateLimiter::answered`] moves it to the call's answer.
    pub fn taken(&self) -> Instant {
        self.taken
    }

    pub fn endpoint(&self) -> &'static str {
        self.endpoint
    }

    /// How much of the endpoint's budget it holds (orders, for a batch).
    pub fn cost(&self) -> u32 {
        self.cost
    }
}

/// What the exchange said about an endpoint's budget in its reply headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitHeaders {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// Local instant of `X-Bapi-Limit-Reset-Timestamp` (already converted from server time).
    pub reset_at: Option<Instant>,
}

impl RateLimiter {
    /// `ip_share`: this process's requests per 5 s (at most [`IP_LIMIT`]).
    pub fn new(ip_share: u32) -> RateLimiter {
        RateLimiter {
            state: Mutex::new(State {
                ip: Window::new(ip_share.min(IP_LIMIT), IP_WINDOW),
                endpoints: HashMap::new(),
                banned_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the windows inconsistent (every
        // update is a single push or assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until both the IP budget and `endpoint`'s budget allow one request, then
    /// takes it and says when (for [`answered`](Self::answered)). Fails at once while the
    /// IP is banned.
    pub async fn acquire(&self, endpoint: &str) -> Result<Instant, BybitError> {
        self.acquire_n(endpoint, 1).await
    }

    /// Waits until one request that consumes `cost` of `endpoint`'s budget may start (a
    /// batch of `cost` orders: Bybit counts batch endpoints per order), then records it:
    /// `cost` against the endpoint, one request against the IP share. A cost above the
    /// endpoint's limit waits for a whole window and counts as the limit. Returns when
    /// the budget was taken.
    pub async fn acquire_n(&self, endpoint: &str, cost: u32) -> Result<Instant, BybitError> {
        loop {
            let (wait, now) = self.take(endpoint, cost)?;
            if wait.is_zero() {
                return Ok(now);
            }
            tracing::debug!(
                endpoint,
                wait_ms = wait.as_millis() as u64,
                "rate-limit budget spent; waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `cost` of `endpoint`'s budget now if both it and the IP share allow, for a
    /// call made with the [`Reservation`] (which then takes nothing more); otherwise says
    /// how long until they would. For a caller that chooses between endpoints by their
    /// room (the order router's burst: single orders or a batch), without waiting in one.
    pub fn reserve(
        &self,
        endpoint: &'static str,
        cost: u32,
    ) -> Result<Result<Reservation, Duration>, BybitError> {
        let (wait, taken) = self.take(endpoint, cost)?;
        Ok(if wait.is_zero() {
            Ok(Reservation {
                endpoint,
                cost: cost.max(1),
                taken,
            })
        } else {
            Err(wait)
        })
    }

    /// How long until a call costing `cost` of `endpoint` could start (zero: now); takes
    /// nothing.
    pub fn wait_for(&self, endpoint: &str, cost: u32) -> Result<Duration, BybitError> {
        Ok(self.take_or_wait(endpoint, cost, false)?.0)
    }

    /// How much of `endpoint`'s budget a call could take now (0 while the IP share is
    /// spent or the IP banned).
    pub fn headroom(&self, endpoint: &str) -> u32 {
        let mut s = self.lock();
        let now = Instant::now();
        if s.banned_until.is_some_and(|u| u > now) || s.ip.headroom(now) == 0 {
            return 0;
        }
        s.endpoint(endpoint).headroom(now)
    }

    /// Records `cost` of `endpoint` and one IP request if both allow now (zero returned),
    /// else how long until they would; with the instant read.
    fn take(&self, endpoint: &str, cost: u32) -> Result<(Duration, Instant), BybitError> {
        self.take_or_wait(endpoint, cost, true)
    }

    /// How long until `cost` of `endpoint` and one IP request are allowed (zero: now), and
    /// records them when they are and `record` says so; with the instant read (that of
    /// the record).
    fn take_or_wait(
        &self,
        endpoint: &str,
        cost: u32,
        record: bool,
    ) -> Result<(Duration, Instant), BybitError> {
        let mut s = self.lock();
        let now = Instant::now();
        if let Some(until) = s.banned_until.filter(|&u| u > now) {
            return Err(BybitError::IpBanned {
                endpoint: endpoint.to_owned(),
                resume_in: until - now,
            });
        }
        let ip_wait = s.ip.wait(now);
        let ep = s.endpoint(endpoint);
        let cost = cost.clamp(1, ep.limit);
        let wait = ip_wait.max(ep.wait_n(now, cost));
        if wait.is_zero() && record {
            ep.record_n(now, cost);
            s.ip.record(now);
        }
        Ok((wait, now))
    }

    /// A call whose budget was taken at `taken` ([`acquire_n`](Self::acquire_n)'s
    /// instant, [`Reservation::taken`]) has its answer, or has failed on the way: from now
    /// on its `cost` of `endpoint` and its IP request count from this moment, the latest
    /// at which the exchange can have counted it ([`ENDPOINT_WINDOW`]).
    pub fn answered(&self, endpoint: &str, cost: u32, taken: Instant) {
        let mut s = self.lock();
        let now = Instant::now();
        s.ip.answered(taken, 1, now);
        let ep = s.endpoint(endpoint);
        let cost = cost.clamp(1, ep.limit);
        ep.answered(taken, cost, now);
    }

    /// Applies the `X-Bapi-Limit*` headers of a reply.
    pub fn observe(&self, endpoint: &str, h: LimitHeaders) {
        let mut s = self.lock();
        let ep = s.endpoint(endpoint);
        if let Some(limit) = h.limit.filter(|&l| l > 0) {
            ep.limit = limit;
        }
        if h.remaining == Some(0)
            && let Some(reset) = h.reset_at
        {
            ep.block_until(reset);
        }
    }

    /// `retCode 10006`: nothing more on `endpoint` until `reset_at` (or a full window).
    pub fn too_many_visits(&self, endpoint: &str, reset_at: Option<Instant>) {
        let mut s = self.lock();
        let until = reset_at.unwrap_or_else(|| Instant::now() + ENDPOINT_WINDOW);
        s.endpoint(endpoint).block_until(until);
    }

    /// Of this process's IP share, the requests that may still start in the current 5 s
    /// window (0 while banned): the heartbeat reports it as `ratelimit_ip_headroom`.
    pub fn ip_headroom(&self) -> u32 {
        let mut s = self.lock();
        let now = Instant::now();
        if s.banned_until.is_some_and(|u| u > now) {
            return 0;
        }
        s.ip.headroom(now)
    }

    /// How long until at least half of this process's IP share and half of `endpoint`'s
    /// budget are free again (zero: now), for work that can wait and must leave room for
    /// what cannot (the router's start-up leverage beside its orders and entries).
    pub fn until_half_free(&self, endpoint: &str) -> Duration {
        let mut s = self.lock();
        let now = Instant::now();
        if let Some(until) = s.banned_until.filter(|&u| u > now) {
            return until - now;
        }
        let half = (s.ip.limit / 2).max(1);
        let ip = s.ip.wait_n(now, half);
        let ep = s.endpoint(endpoint);
        let half = (ep.limit / 2).max(1);
        ip.max(ep.wait_n(now, half))
    }

    /// HTTP 403: every request stops for [`IP_BAN`]. Returns how long.
    pub fn ip_banned(&self) -> Duration {
        let mut s = self.lock();
        s.banned_until = Some(Instant::now() + IP_BAN);
        IP_BAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn headroom_is_what_the_window_has_left() {
        let rl = RateLimiter::new(10);
        assert_eq!(rl.ip_headroom(), 10);
        for _ in 0..4 {
            rl.acquire("/v5/market/kline").await.unwrap();
        }
        assert_eq!(rl.ip_headroom(), 6);
        tokio::time::advance(IP_WINDOW).await;
        assert_eq!(rl.ip_headroom(), 10);
        rl.ip_banned();
        assert_eq!(rl.ip_headroom(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ip_share_is_a_sliding_window() {
        let rl = RateLimiter::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            rl.acquire("/v5/market/kline").await.unwrap();
        }
        assert_eq!(
            Instant::now(),
            start,
            "ten fit in the share without waiting"
        );
        rl.acquire("/v5/market/kline").await.unwrap();
        assert_eq!(
            Instant::now() - start,
            IP_WINDOW,
            "the eleventh waits for the window"
        );
    }

    /// create-batch: 10 orders a second counted per order, a budget apart from
    /// create's. A full create budget does not hold a batch back; 7 + 3 orders fit in a
    /// second, a further batch of 2 waits for the window.
    #[tokio::test(start_paused = true)]
    async fn a_batch_costs_its_orders_from_a_budget_of_its_own() {
        let rl = RateLimiter::new(IP_LIMIT);
        let start = Instant::now();
        for _ in 0..10 {
            rl.acquire("/v5/order/create").await.unwrap();
        }
        rl.acquire_n("/v5/order/create-batch", 7).await.unwrap();
        rl.acquire_n("/v5/order/create-batch", 3).await.unwrap();
        assert_eq!(Instant::now(), start, "create's budget is not the batch's");
        rl.acquire_n("/v5/order/create-batch", 2).await.unwrap();
        assert_eq!(Instant::now() - start, ENDPOINT_WINDOW);
        // After that window, 8 of the 10 are free again (the 2 just sent are not).
        rl.acquire_n("/v5/order/create-batch", 8).await.unwrap();
        assert_eq!(Instant::now() - start, ENDPOINT_WINDOW);
        rl.acquire_n("/v5/order/create-batch", 1).await.unwrap();
        assert_eq!(Instant::now() - start, ENDPOINT_WINDOW * 2);
    }

    /// A reservation takes the budget at once or says how long until it could; headroom
    /// is what is left.
    #[tokio::test(start_paused = true)]
    async fn a_reservation_takes_budget_now_or_says_how_long_to_wait() {
        let rl = RateLimiter::new(IP_LIMIT);
        assert_eq!(rl.headroom("/v5/order/create-batch"), 10);
        let r = rl.reserve("/v5/order/create-batch", 8).unwrap().unwrap();
        assert_eq!((r.endpoint(), r.cost()), ("/v5/order/create-batch", 8));
        assert_eq!(rl.headroom("/v5/order/create-batch"), 2);
        assert_eq!(
            rl.reserve("/v5/order/create-batch", 3)
                .unwrap()
                .unwrap_err(),
            ENDPOINT_WINDOW
        );
        assert_eq!(
            rl.headroom("/v5/order/create-batch"),
            2,
            "a refusal takes nothing"
        );
        assert_eq!(rl.headroom("/v5/order/create"), 10);
        tokio::time::advance(ENDPOINT_WINDOW).await;
        assert_eq!(rl.headroom("/v5/order/create-batch"), 10);
    }

    /// Work that can wait starts only while half the IP share is free.
    #[tokio::test(start_paused = true)]
    async fn half_the_ip_share_free_is_waited_for() {
        let lev = "/v5/position/set-leverage";
        let rl = RateLimiter::new(10);
        assert_eq!(rl.until_half_free(lev), Duration::ZERO);
        for _ in 0..5 {
            rl.acquire("/v5/market/kline").await.unwrap();
        }
        assert_eq!(rl.until_half_free(lev), Duration::ZERO, "5 of 10 free");
        rl.acquire("/v5/market/kline").await.unwrap();
        assert_eq!(
            rl.until_half_free(lev),
            IP_WINDOW,
            "4 free: the oldest must leave"
        );
        // And half of the endpoint's own budget (10 a second).
        let rl = RateLimiter::new(IP_LIMIT);
        for _ in 0..6 {
            rl.acquire(lev).await.unwrap();
        }
        assert_eq!(rl.until_half_free(lev), ENDPOINT_WINDOW);
    }

    /// A call counts in its window from its answer, the latest moment the exchange can
    /// have counted it: ten orders sent at once and answered 65 ms later (the exchange
    /// took them in late) leave room for the next ten only a window after the answers,
    /// not after the send.
    #[tokio::test(start_paused = true)]
    async fn a_call_counts_from_its_answer() {
        let create = "/v5/order/create";
        let rl = RateLimiter::new(IP_LIMIT);
        let start = Instant::now();
        let mut taken = Vec::new();
        for _ in 0..10 {
            taken.push(rl.acquire(create).await.unwrap());
        }
        assert_eq!(rl.wait_for(create, 1).unwrap(), ENDPOINT_WINDOW);
        tokio::time::advance(Duration::from_millis(65)).await;
        for &t in &taken[..6] {
            rl.answered(create, 1, t);
        }
        // The 4 unanswered still count from their send, the 6 from their answer.
        tokio::time::advance(ENDPOINT_WINDOW - Duration::from_millis(65)).await;
        assert_eq!(rl.headroom(create), 4);
        let r = rl.reserve(create, 1).unwrap().unwrap();
        assert_eq!(r.taken(), Instant::now());
        assert_eq!(
            rl.wait_for(create, 4).unwrap(),
            Duration::from_millis(65),
            "the answered 6 leave a window after their answer"
        );
        rl.acquire_n(create, 4).await.unwrap();
        assert_eq!(
            Instant::now() - start,
            ENDPOINT_WINDOW + Duration::from_millis(65)
        );
        // A batch's answer moves its whole cost.
        let batch = "/v5/order/create-batch";
        let t = rl.acquire_n(batch, 10).await.unwrap();
        tokio::time::advance(Duration::from_millis(30)).await;
        rl.answered(batch, 10, t);
        assert_eq!(
            rl.wait_for(batch, 1).unwrap(),
            ENDPOINT_WINDOW,
            "a window from the answer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_budgets_follow_the_reference_table() {
        let rl = RateLimiter::new(IP_LIMIT);
        let start = Instant::now();
        for _ in 0..10 {
            rl.acquire("/v5/order/create").await.unwrap();
        }
        // a different endpoint is not held back by the order budget
        rl.acquire("/v5/position/list").await.unwrap();
        assert_eq!(Instant::now(), start);
        rl.acquire("/v5/order/create").await.unwrap();
        assert_eq!(Instant::now() - start, ENDPOINT_WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn headers_correct_the_budget_and_10006_blocks_until_reset() {
        let rl = RateLimiter::new(IP_LIMIT);
        let start = Instant::now();
        rl.acquire("/v5/order/realtime").await.unwrap();
        // The exchange says: limit 2, none left, resets in 300 ms.
        rl.observe(
            "/v5/order/realtime",
            LimitHeaders {
                limit: Some(2),
                remaining: Some(0),
                reset_at: Some(start + Duration::from_millis(300)),
            },
        );
        rl.acquire("/v5/order/realtime").await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_millis(300));
        // Blocked past the window's own room (its first start leaves at 1050 ms).
        rl.too_many_visits(
            "/v5/order/realtime",
            Some(Instant::now() + Duration::from_millis(900)),
        );
        rl.acquire("/v5/order/realtime").await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_millis(1200));
    }

    /// A reset time an hour away (a skewed clock, a damaged header) blocks the endpoint
    /// for MAX_RESET_WAIT, not for the hour.
    #[tokio::test(start_paused = true)]
    async fn an_exchange_given_reset_is_capped() {
        let rl = RateLimiter::new(IP_LIMIT);
        let start = Instant::now();
        rl.too_many_visits("/v5/order/create", Some(start + Duration::from_secs(3600)));
        rl.acquire("/v5/order/create").await.unwrap();
        assert_eq!(Instant::now() - start, MAX_RESET_WAIT);
        rl.observe(
            "/v5/order/create",
            LimitHeaders {
                limit: Some(10),
                remaining: Some(0),
                reset_at: Some(Instant::now() + Duration::from_secs(7200)),
            },
        );
        rl.acquire("/v5/order/create").await.unwrap();
        assert_eq!(Instant::now() - start, MAX_RESET_WAIT * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_403_ban_fails_every_call_at_once_for_ten_minutes() {
        let rl = RateLimiter::new(IP_LIMIT);
        assert_eq!(rl.ip_banned(), IP_BAN);
        let err = rl.acquire("/v5/market/time").await.unwrap_err();
        assert!(matches!(err, BybitError::IpBanned { .. }), "{err}");
        tokio::time::advance(IP_BAN).await;
        rl.acquire("/v5/market/time").await.unwrap();
    }
}
