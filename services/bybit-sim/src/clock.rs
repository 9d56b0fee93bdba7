//! The sim clock: real time or accelerated, used by REST, WebSocket and funding alike.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct SimClock {
    origin: Instant,
    origin_ms: i64,
    speed: f64,
}

impl SimClock {
    /// Starts at `start_ms` (Unix ms) and runs `speed` sim seconds per real second.
    pub fn new(start_ms: i64, speed: f64) -> SimClock {
        SimClock {
            origin: Instant::now(),
            origin_ms: start_ms,
            speed,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.origin_ms + (self.origin.elapsed().as_secs_f64() * 1000.0 * self.speed) as i64
    }

    pub fn now_ns(&self) -> i128 {
        i128::from(self.origin_ms) * 1_000_000
            + (self.origin.elapsed().as_secs_f64() * 1e9 * self.speed) as i128
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }
}
