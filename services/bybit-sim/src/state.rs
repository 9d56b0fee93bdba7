//! The exchange's state, shared by every request handler.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use crate::{
    clock::SimClock,
    limits::Limits,
    market::Universe,
    settings::{Profile, SimSettings},
};

/// One account (one UID) and its keys.
#[derive(Debug)]
pub struct Account {
    pub uid: u64,
    pub name: String,
    pub api_key: String,
    pub api_secret: String,
    pub book: Mutex<AccountBook>,
    /// Every change of the book, in Bybit's push order, for the private WebSocket.
    pub feed: tokio::sync::broadcast::Sender<crate::engine::Change>,
}

pub use crate::engine::AccountBook;

#[derive(Debug)]
pub struct Exchange {
    pub market: Universe,
    pub clock: SimClock,
    pub profile: Profile,
    pub accounts: HashMap<String, Account>,
    pub limits: Mutex<Limits>,
    /// Market orders fill this many ticks through the last price (the half spread).
    pub spread_ticks: u32,
    pub faults: crate::faults::Faults,
    /// Instrument statuses other than `Trading`, set through `/admin/instruments/status`
    /// to list (`PreLaunch` → `Trading`) and delist (`Closed`) symbols at run time.
    pub statuses: Mutex<HashMap<String, String>>,
}

impl Exchange {
    /// The instrument's status as instruments-info reports it.
    pub fn status_of(&self, symbol: &str) -> String {
        self.statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(symbol)
            .cloned()
            .unwrap_or_else(|| "Trading".to_owned())
    }
}

impl Exchange {
    pub fn new(settings: &SimSettings) -> Result<Exchange, String> {
        settings.validate()?;
        let market = if !settings.replay_dir.trim().is_empty() {
            Universe::from_replay(
                std::path::Path::new(&settings.replay_dir),
                settings.seed,
                settings.replay_hold_ms,
            )?
        } else {
            // Optional sources of real names: missing ones are skipped with a warning, so
            // the sim also runs where a configured file is not.
            let existing = |path: &str, what: &str| {
                let p = std::path::Path::new(path);
                match path.trim() {
                    "" => None,
                    _ if p.exists() => Some(p.to_owned()),
                    _ => {
                        tracing::warn!(path, "{what} not found: skipped");
                        None
                    }
                }
            };
            let file = existing(&settings.universe_file, "sim.universe_file");
            let prices = existing(&settings.universe_price_dir, "sim.universe_price_dir");
            Universe::with_price_levels(
                settings.seed,
                settings.symbols,
                file.as_deref(),
                prices.as_deref(),
            )?
        };
        let mut market = market;
        market.funding_rate = settings.funding_rate;
        let start = match (settings.start_time_ms, market.replay_start()) {
            (t, _) if t > 0 => t,
            (_, Some((first, len))) => first + settings.replay_warmup_bars.max(0) * len,
            _ => shardbot_now_ms(),
        };
        // The clock starts the moment its start time is read, before the (slower) rest.
        let clock = SimClock::new(start, settings.clock_speed);
        let accounts = settings
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let acct = Account {
                    uid: 100_000 + i as u64,
                    name: a.name.clone(),
                    api_key: a.api_key.clone(),
                    api_secret: a.api_secret.clone(),
                    book: Mutex::new(AccountBook::new(a.usdt, start)),
                    feed: tokio::sync::broadcast::channel(16_384).0,
                };
                (a.api_key.clone(), acct)
            })
            .collect();
        Ok(Exchange {
            market,
            clock,
            profile: settings.profile,
            accounts,
            limits: Mutex::new(Limits::new(
                settings.ip_limit_per_5s,
                Duration::from_secs(settings.ip_ban_secs),
                settings.uid_limit_scale,
            )),
            spread_ticks: settings.spread_ticks,
            faults: crate::faults::Faults::default(),
            statuses: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> std::sync::MutexGuard<'_, Limits> {
        // Every update of the limits is a single push or assignment: a poisoned lock still
        // holds consistent windows.
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn shardbot_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Account {
    pub fn book(&self) -> std::sync::MutexGuard<'_, AccountBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the book's pending changes to the private streams (none listening is fine).
    pub fn publish(&self, book: &mut AccountBook) {
        for c in book.changes.drain(..) {
            let _ = self.feed.send(c);
        }
    }
}

impl Exchange {
    /// Applies the price path up to now to every account (triggers, resting orders,
    /// funding) and publishes what changed. Run periodically so stops fire on time even
    /// when nobody calls.
    pub fn advance_all(&self) {
        let now = self.clock.now_ms();
        for a in self.accounts.values() {
            let mut book = a.book();
            book.advance(&self.market, now, self.spread_ticks);
            a.publish(&mut book);
        }
    }
}
