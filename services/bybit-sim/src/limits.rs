//! Bybit's rate limits as the exchange enforces them: per UID and endpoint in a rolling
//! 1 s window (10006, with `X-Bapi-Limit*` headers), and per IP 600 requests per 5 s
//! (HTTP 403 and a ban). Windows are real time, whatever the sim clock's speed.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

/// The per-UID limit of an endpoint, requests per second (reference §4); `None` when only
/// the IP limit applies.
pub fn endpoint_limit(path: &str) -> Option<u32> {
    Some(match path {
        "/v5/order/create" | "/v5/order/amend" | "/v5/order/cancel" | "/v5/order/cancel-all" => 10,
        // Orders per second, consumed per order of a batch; a budget apart from the
        // single-order endpoints'.
        "/v5/order/create-batch" | "/v5/order/amend-batch" | "/v5/order/cancel-batch" => 10,
        "/v5/order/realtime" | "/v5/order/history" | "/v5/execution/list" => 50,
        "/v5/position/list" | "/v5/position/closed-pnl" => 50,
        "/v5/position/set-leverage" | "/v5/position/switch-mode" | "/v5/position/trading-stop" => {
            10
        }
        "/v5/account/wallet-balance" | "/v5/account/info" => 50,
        "/v5/account/fee-rate" => 5,
        _ => return None,
    })
}

/// The verdict on one signed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Real time until the window has room again (zero if it has now).
    pub reset_in: Duration,
}

#[derive(Debug)]
pub struct Limits {
    ip_limit: u32,
    ip_window: VecDeque<Instant>,
    ip_ban: Duration,
    banned_until: Option<Instant>,
    per_uid: HashMap<(u64, String), VecDeque<Instant>>,
    /// demo-apply-money: once per minute per UID.
    last_apply: HashMap<u64, Instant>,
    uid_scale: f64,
}

const IP_WINDOW: Duration = Duration::from_secs(5);
const UID_WINDOW: Duration = Duration::from_secs(1);

impl Limits {
    pub fn new(ip_limit: u32, ip_ban: Duration, uid_scale: f64) -> Limits {
        Limits {
            ip_limit,
            ip_window: VecDeque::new(),
            ip_ban,
            banned_until: None,
            per_uid: HashMap::new(),
            last_apply: HashMap::new(),
            uid_scale,
        }
    }

    /// Counts one request against the IP limit; `false` means answer 403.
    pub fn ip_allows(&mut self) -> bool {
        let now = Instant::now();
        if self.banned_until.is_some_and(|u| u > now) {
            return false;
        }
        while self
            .ip_window
            .front()
            .is_some_and(|&t| now - t >= IP_WINDOW)
        {
            self.ip_window.pop_front();
        }
        if self.ip_window.len() as u32 >= self.ip_limit {
            self.banned_until = Some(now + self.ip_ban);
            tracing::warn!(
                ban_secs = self.ip_ban.as_secs(),
                "IP limit breached: answering 403 to everything"
            );
            return false;
        }
        self.ip_window.push_back(now);
        true
    }

    /// Counts one signed request of `uid` on `path`.
    pub fn uid_request(&mut self, uid: u64, path: &str) -> Option<Verdict> {
        self.uid_request_n(uid, path, 1)
    }

    /// Counts a signed request of `uid` on `path` that consumes `cost` of the window (a
    /// batch of `cost` orders). A batch the window has no room for as a whole is refused
    /// as a whole (the reference says batches count per order, not that a batch is ever
    /// cut: refusing it whole keeps every order's fate in one answer).
    pub fn uid_request_n(&mut self, uid: u64, path: &str, cost: u32) -> Option<Verdict> {
        let limit = (f64::from(endpoint_limit(path)?) * self.uid_scale) as u32;
        let now = Instant::now();
        let w = self.per_uid.entry((uid, path.to_owned())).or_default();
        while w.front().is_some_and(|&t| now - t >= UID_WINDOW) {
            w.pop_front();
        }
        let used = w.len() as u32;
        let cost = cost.max(1);
        if used + cost > limit {
            let reset_in = w.front().map_or(Duration::ZERO, |&t| {
                (t + UID_WINDOW).saturating_duration_since(now)
            });
            return Some(Verdict {
                allowed: false,
                limit,
                remaining: 0,
                reset_in,
            });
        }
        for _ in 0..cost {
            w.push_back(now);
        }
        let reset_in = w.front().map_or(Duration::ZERO, |&t| {
            (t + UID_WINDOW).saturating_duration_since(now)
        });
        Some(Verdict {
            allowed: true,
            limit,
            remaining: limit - used - cost,
            reset_in,
        })
    }

    /// demo-apply-money's 1 per minute.
    pub fn apply_money_allowed(&mut self, uid: u64) -> bool {
        let now = Instant::now();
        match self.last_apply.get(&uid) {
            Some(&t) if now - t < Duration::from_secs(60) => false,
            _ => {
                self.last_apply.insert(uid, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A batch consumes one unit per order from its own 10-a-second window: create's
    /// budget spent leaves it whole; 7 + 3 orders fit, 2 more are refused as a whole
    /// (nothing consumed), and the headers' remaining count follows.
    #[test]
    fn a_batch_consumes_its_own_budget_per_order() {
        let mut l = Limits::new(600, Duration::from_secs(600), 1.0);
        for _ in 0..10 {
            assert!(l.uid_request(1, "/v5/order/create").unwrap().allowed);
        }
        assert!(!l.uid_request(1, "/v5/order/create").unwrap().allowed);
        let v = l.uid_request_n(1, "/v5/order/create-batch", 7).unwrap();
        assert!(v.allowed);
        assert_eq!((v.limit, v.remaining), (10, 3));
        let v = l.uid_request_n(1, "/v5/order/create-batch", 3).unwrap();
        assert_eq!((v.allowed, v.remaining), (true, 0));
        let v = l.uid_request_n(1, "/v5/order/create-batch", 2).unwrap();
        assert_eq!((v.allowed, v.remaining), (false, 0));
        // Another UID's window is its own.
        assert!(
            l.uid_request_n(2, "/v5/order/create-batch", 10)
                .unwrap()
                .allowed
        );
    }
}
