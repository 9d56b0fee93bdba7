//! Fault injection, driven through `/admin/faults` (never under `/v5`), so the stack's
//! recovery is tested against real failures: 10006 bursts, 5xx, slow replies, dropped
//! WebSocket connections, a paused public stream.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::path::{mix, uniform};

/// The faults in force. Shares are fractions of `/v5` REST requests, 0 to 1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Answer `retCode 10006` (the request is not carried out).
    pub rest_10006: f64,
    /// Answer HTTP 502 (the request is not carried out).
    pub rest_5xx: f64,
    /// Carry the request out, then answer after `slow_ms`: a client that times out meanwhile
    /// does not know the outcome.
    pub slow: f64,
    pub slow_ms: u64,
    /// Public WebSocket sessions send nothing, not even pongs.
    pub pause_public: bool,
    /// Only requests on this `/v5` path meet the REST faults above; "" = every path.
    pub only_path: String,
    /// New orders on this symbol are refused as Bybit refuses an order the account cannot
    /// afford (`110007`), alone or as one order of a batch whose others are placed; ""
    /// = none. Reduce-only orders are not refused.
    pub refuse_symbol: String,
}

impl FaultConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("rest_10006", self.rest_10006),
            ("rest_5xx", self.rest_5xx),
            ("slow", self.slow),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} = {v}: a share between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Normal,
    TooManyVisits,
    ServerError,
    Slow(u64),
}

#[derive(Debug, Default)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    counter: AtomicU64,
    /// Bumped to drop every WebSocket session open at that moment.
    drop_generation: AtomicU64,
    /// Faults served so far, by kind (for tests to see that a fault was really met):
    /// 10006, 5xx, slow, an order refused alone, an order of a batch refused.
    served: [AtomicU64; 5],
}

/// How many REST requests met each fault (`GET /admin/faults/served`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Served {
    pub rest_10006: u64,
    pub rest_5xx: u64,
    pub slow: u64,
    /// Orders refused for [`FaultConfig::refuse_symbol`] on `/v5/order/create`.
    pub refused_alone: u64,
    /// Orders refused for [`FaultConfig::refuse_symbol`] as one order of a
    /// `/v5/order/create-batch`.
    pub refused_in_batch: u64,
}

impl Faults {
    pub fn config(&self) -> FaultConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, c: FaultConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// Draws the fate of one REST request on `path`.
    pub fn roll(&self, path: &str) -> Verdict {
        let c = self.config();
        if !c.only_path.is_empty() && c.only_path != path {
            return Verdict::Normal;
        }
        let u = uniform(mix(self.counter.fetch_add(1, Ordering::Relaxed)) ^ 0xFA17);
        let (verdict, kind) = if u < c.rest_10006 {
            (Verdict::TooManyVisits, Some(0))
        } else if u < c.rest_10006 + c.rest_5xx {
            (Verdict::ServerError, Some(1))
        } else if u < c.rest_10006 + c.rest_5xx + c.slow {
            (Verdict::Slow(c.slow_ms), Some(2))
        } else {
            (Verdict::Normal, None)
        };
        if let Some(k) = kind {
            self.served[k].fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    pub fn served(&self) -> Served {
        let n = |k: usize| self.served[k].load(Ordering::Relaxed);
        Served {
            rest_10006: n(0),
            rest_5xx: n(1),
            slow: n(2),
            refused_alone: n(3),
            refused_in_batch: n(4),
        }
    }

    /// Whether a new order on `symbol` is refused ([`FaultConfig::refuse_symbol`]);
    /// a refusal is counted as served, alone or `in_batch`.
    pub fn refuses(&self, symbol: &str, reduce_only: bool, in_batch: bool) -> bool {
        let c = self.config();
        let refused = !reduce_only && !c.refuse_symbol.is_empty() && c.refuse_symbol == symbol;
        if refused {
            self.served[if in_batch { 4 } else { 3 }].fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    pub fn public_paused(&self) -> bool {
        self.config().pause_public
    }

    pub fn drop_all_ws(&self) -> u64 {
        self.drop_generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn ws_generation(&self) -> u64 {
        self.drop_generation.load(Ordering::SeqCst)
    }
}
