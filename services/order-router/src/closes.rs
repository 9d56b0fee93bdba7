//! A bar close's entries, held by the approval loop until none ranked before them can
//! still come. Pure (no I/O, no clock of its own): table-tested below.
//!
//! Each worker shard reports its progress through a close ([`CloseProgress`]: at its first
//! bar of the close and once every symbol it owns has had that bar), and marks the intents
//! it decides there with its shard ([`OrderIntent::shard`]). From them the router knows an
//! upper bound of the close's entries still to come: the shards' undecided symbols plus
//! the entries they sent that have not arrived. The approval loop asks for a close's held
//! entries when either
//! - the room the limits leave holds them and every entry still to come
//!   (`shardbot_risk::fits`, checked again by the risk manager): no order can cut one of
//!   them, so they are judged at once, the usual case and the fast one; or
//! - nothing can come any more (every shard decided the close and its entries arrived):
//!   then the whole close is judged together, in the rules' order, and a limit cuts it as
//!   the backtest does; or
//! - `router.close_wait_ms` passed since the first was held (a shard that stopped, or a
//!   bar lost on the bus): what has arrived is judged, in the rules' order.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use shardbot_protocol::{CloseProgress, IntentAction, Interval, OrderIntent, Symbol, TimestampMs};

/// One bar close: its interval and the open time of the bar that closed.
pub type CloseKey = (Interval, TimestampMs);

/// The key of the close `intent` was decided at.
pub fn key_of(intent: &OrderIntent) -> CloseKey {
    (intent.interval, intent.bar_open_time_ms)
}

/// Whether the loop holds `intent` with its close: an entry a shard decided on its bar's
/// arrival. Exits never wait (they are approved whatever the order), nor do intents from a
/// refill or a tool.
pub fn held_with_close(intent: &OrderIntent) -> bool {
    intent.shard.is_some() && intent.action != IntentAction::Exit
}

/// A shard's newest progress: the fewest undecided symbols and the most entries reported
/// (both only move one way, whatever order the reports arrive in).
#[derive(Debug, Clone, Copy)]
struct Reported {
    undecided: u32,
    entries: u32,
}

#[derive(Debug)]
struct Close<T> {
    /// The shard count the reports name; `None` until one arrives.
    shards: Option<u16>,
    /// Reports naming different shard counts (workers rescaled mid-close): nothing can
    /// be known, the wait decides.
    rescaled: bool,
    reports: HashMap<u16, Reported>,
    /// Symbols each shard's entries arrived for.
    arrived: HashMap<u16, HashSet<Symbol>>,
    held: Vec<(OrderIntent, T)>,
    /// When the first of `held` was held.
    since: Option<Instant>,
    /// When this close was first heard of (reports alone are forgotten after a while).
    heard: Instant,
}

impl<T> Close<T> {
    fn new(now: Instant) -> Close<T> {
        Close {
            shards: None,
            rescaled: false,
            reports: HashMap::new(),
            arrived: HashMap::new(),
            held: Vec::new(),
            since: None,
            heard: now,
        }
    }

    fn shard_count(&mut self, count: u16) {
        match self.shards {
            None => self.shards = Some(count),
            Some(c) if c != count => self.rescaled = true,
            Some(_) => {}
        }
    }

    /// Entries of the close that can still arrive, at most; `None` while a shard has not
    /// reported.
    fn to_come(&self) -> Option<u32> {
        let shards = self.shards?;
        if self.rescaled || self.reports.len() < usize::from(shards) {
            return None;
        }
        let mut n: u32 = 0;
        for (shard, r) in &self.reports {
            let arrived = self
                .arrived
                .get(shard)
                .map_or(0, |a| u32::try_from(a.len()).unwrap_or(u32::MAX));
            n = n
                .saturating_add(r.undecided)
                .saturating_add(r.entries.saturating_sub(arrived));
        }
        Some(n)
    }
}

/// Why held entries are asked for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The room may hold them and the `to_come` entries still possible: the risk manager
    /// judges them only if it does (`unless_room_short_of`).
    Room { to_come: u32 },
    /// Every entry of the close has arrived: judged together, in the rules' order.
    Complete,
    /// `close_wait_ms` passed with the close incomplete (`to_come`: `None`, a shard never
    /// reported).
    Waited { to_come: Option<u32> },
}

/// Held entries let go to be judged.
#[derive(Debug)]
pub struct Release<T> {
    pub key: CloseKey,
    pub asks: Vec<(OrderIntent, T)>,
    pub why: Why,
    /// When the first of them was held.
    pub since: Instant,
}

/// Every close with entries held or reports heard.
#[derive(Debug)]
pub struct Closes<T> {
    closes: HashMap<CloseKey, Close<T>>,
    wait: Duration,
}

/// How long a close is remembered after it was first heard of (a report after its entries
/// were judged finds it, so a late entry of it is still counted against `to_come`).
const REMEMBERED: Duration = Duration::from_secs(600);

impl<T> Closes<T> {
    pub fn new(wait: Duration) -> Closes<T> {
        Closes {
            closes: HashMap::new(),
            wait,
        }
    }

    fn close(&mut self, key: CloseKey, now: Instant) -> &mut Close<T> {
        self.closes.entry(key).or_insert_with(|| Close::new(now))
    }

    /// A shard's progress report.
    pub fn report(&mut self, p: &CloseProgress, now: Instant) {
        let c = self.close((p.interval, p.bar_open_time_ms), now);
        c.shard_count(p.shard.count());
        c.reports
            .entry(p.shard.index())
            .and_modify(|r| {
                r.undecided = r.undecided.min(p.undecided);
                r.entries = r.entries.max(p.entries);
            })
            .or_insert(Reported {
                undecided: p.undecided,
                entries: p.entries,
            });
    }

    /// Holds a [`held_with_close`] entry with its close until [`Closes::release`] lets it go.
    pub fn hold(&mut self, intent: OrderIntent, with: T, now: Instant) {
        let c = self.close(key_of(&intent), now);
        if let Some(shard) = intent.shard {
            c.shard_count(shard.count());
            c.arrived
                .entry(shard.index())
                .or_default()
                .insert(intent.symbol.clone());
        }
        c.since.get_or_insert(now);
        c.held.push((intent, with));
    }

    /// Entries answered `held` by the risk manager: back with their close, their wait
    /// still counted from when they were first held.
    pub fn put_back(&mut self, r: Release<T>) {
        let c = self.close(r.key, r.since);
        c.since = Some(c.since.map_or(r.since, |s| s.min(r.since)));
        c.held.extend(r.asks);
    }

    /// The next close whose held entries are to be asked for, given the `room` the risk
    /// manager last reported (`None`: not known yet, ask). Forgets closes long past.
    pub fn release(&mut self, now: Instant, room: Option<u32>) -> Option<Release<T>> {
        self.closes
            .retain(|_, c| !c.held.is_empty() || now.duration_since(c.heard) < REMEMBERED);
        let mut chosen: Option<(CloseKey, Why)> = None;
        for (key, c) in &self.closes {
            let Some(since) = c.since else { continue };
            if c.held.is_empty() {
                continue;
            }
            let to_come = c.to_come();
            let held = u32::try_from(c.held.len()).unwrap_or(u32::MAX);
            let why = match to_come {
                Some(0) => Why::Complete,
                _ if now.duration_since(since) >= self.wait => Why::Waited { to_come },
                Some(n)
                    if room
                        .is_none_or(|r| shardbot_risk::fits(Some(r), held.saturating_add(n))) =>
                {
                    Why::Room { to_come: n }
                }
                _ => continue,
            };
            // The oldest close first.
            if chosen.as_ref().is_none_or(|(k, _)| key < k) {
                chosen = Some((*key, why));
            }
        }
        let (key, why) = chosen?;
        let c = self.closes.get_mut(&key)?;
        let since = c.since.take()?;
        Some(Release {
            key,
            asks: std::mem::take(&mut c.held),
            why,
            since,
        })
    }

    /// When the longest-held entries reach `close_wait_ms`, if any are held.
    pub fn deadline(&self) -> Option<Instant> {
        self.closes
            .values()
            .filter(|c| !c.held.is_empty())
            .filter_map(|c| c.since)
            .min()
            .map(|s| s + self.wait)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rstest::rstest;
    use rust_decimal_macros::dec;
    use shardbot_protocol::{Shard, Side};

    use super::*;

    const BAR: TimestampMs = 1_700_000_000_000;

    fn shard(s: &str) -> Shard {
        s.parse().unwrap()
    }

    fn entry(symbol: &str, of: Option<&str>) -> OrderIntent {
        let i = OrderIntent::new(
            "trend_following",
            Symbol::new(symbol).unwrap(),
            Interval::M5,
            BAR,
            IntentAction::Enter { side: Side::Buy },
            dec!(1),
            None,
            None,
            0,
        );
        match of {
            Some(s) => i.of_shard(shard(s)),
            None => i,
        }
    }

    fn progress(of: &str, undecided: u32, entries: u32) -> CloseProgress {
        CloseProgress {
            shard: shard(of),
            interval: Interval::M5,
            bar_open_time_ms: BAR,
            undecided,
            entries,
        }
    }

    enum Ev {
        Report(&'static str, u32, u32),
        Entry(&'static str, &'static str),
    }

    /// Reports and entries in arrival order, the room last reported, and how long since
    /// the first was held: what is let go and why.
    #[rstest]
    #[case::room_for_everything_still_possible(
        vec![Ev::Report("0/2", 10, 0), Ev::Report("1/2", 10, 0), Ev::Entry("0/2", "BTCUSDT")],
        Some(40), 0, Some(Why::Room { to_come: 20 }))]
    #[case::room_not_known_yet_asks(
        vec![Ev::Report("0/1", 300, 0), Ev::Entry("0/1", "BTCUSDT")],
        None, 0, Some(Why::Room { to_come: 300 }))]
    #[case::too_little_room_holds(
        vec![Ev::Report("0/2", 10, 0), Ev::Report("1/2", 10, 0), Ev::Entry("0/2", "BTCUSDT")],
        Some(5), 0, None)]
    #[case::a_shard_not_heard_holds(
        vec![Ev::Report("0/2", 0, 1), Ev::Entry("0/2", "BTCUSDT")],
        Some(400), 0, None)]
    #[case::no_room_at_all_judges_now(
        vec![Ev::Report("0/1", 90, 0), Ev::Entry("0/1", "BTCUSDT")],
        Some(0), 0, Some(Why::Room { to_come: 90 }))]
    #[case::every_entry_arrived(
        vec![Ev::Report("0/2", 0, 2), Ev::Report("1/2", 0, 1), Ev::Entry("1/2", "XRPUSDT"),
             Ev::Entry("0/2", "ETHUSDT"), Ev::Entry("0/2", "ADAUSDT")],
        Some(1), 0, Some(Why::Complete))]
    #[case::an_entry_reported_not_arrived(
        vec![Ev::Report("0/1", 0, 2), Ev::Entry("0/1", "ETHUSDT")],
        Some(1), 0, None)]
    #[case::entries_before_their_report(
        vec![Ev::Entry("0/1", "ETHUSDT"), Ev::Entry("0/1", "ADAUSDT"), Ev::Report("0/1", 0, 2)],
        Some(1), 0, Some(Why::Complete))]
    #[case::a_stale_report_does_not_undo_a_newer_one(
        vec![Ev::Report("0/1", 0, 1), Ev::Report("0/1", 50, 0), Ev::Entry("0/1", "ETHUSDT")],
        Some(1), 0, Some(Why::Complete))]
    #[case::a_silent_shard_waited_for(
        vec![Ev::Report("0/2", 0, 1), Ev::Entry("0/2", "BTCUSDT")],
        Some(0), 3000, Some(Why::Waited { to_come: None }))]
    #[case::not_yet_waited_long_enough(
        vec![Ev::Report("0/2", 0, 1), Ev::Entry("0/2", "BTCUSDT")],
        Some(3), 2999, None)]
    #[case::rescaled_mid_close(
        vec![Ev::Report("0/2", 0, 0), Ev::Report("1/2", 0, 0), Ev::Report("0/4", 0, 1), Ev::Entry("0/4", "BTCUSDT")],
        Some(3), 0, None)]
    fn a_close_is_let_go(
        #[case] events: Vec<Ev>,
        #[case] room: Option<u32>,
        #[case] after_ms: u64,
        #[case] want: Option<Why>,
    ) {
        let t0 = Instant::now();
        let mut closes: Closes<u32> = Closes::new(Duration::from_millis(3000));
        for (n, e) in events.into_iter().enumerate() {
            match e {
                Ev::Report(s, undecided, entries) => {
                    closes.report(&progress(s, undecided, entries), t0);
                }
                Ev::Entry(s, symbol) => closes.hold(entry(symbol, Some(s)), n as u32, t0),
            }
        }
        let got = closes.release(t0 + Duration::from_millis(after_ms), room);
        assert_eq!(got.as_ref().map(|r| r.why), want);
        if let Some(r) = got {
            assert_eq!(r.key, (Interval::M5, BAR));
            assert!(!r.asks.is_empty());
            assert!(closes.release(t0, room).is_none(), "let go once");
        } else {
            assert_eq!(closes.deadline(), Some(t0 + Duration::from_millis(3000)));
        }
    }

    #[test]
    fn entries_put_back_keep_their_wait_and_go_when_the_close_completes() {
        let t0 = Instant::now();
        let mut closes: Closes<()> = Closes::new(Duration::from_millis(3000));
        closes.report(&progress("0/1", 5, 0), t0);
        closes.hold(entry("ETHUSDT", Some("0/1")), (), t0);
        let r = closes.release(t0, None).unwrap();
        assert_eq!(r.why, Why::Room { to_come: 5 });
        // The risk manager: room for 2 only.
        closes.put_back(r);
        assert!(closes.release(t0, Some(2)).is_none());
        assert_eq!(closes.deadline(), Some(t0 + Duration::from_millis(3000)));
        closes.hold(entry("ADAUSDT", Some("0/1")), (), t0);
        closes.report(&progress("0/1", 0, 2), t0);
        let r = closes.release(t0, Some(2)).unwrap();
        assert_eq!(r.why, Why::Complete);
        let mut symbols: Vec<&str> = r.asks.iter().map(|(i, _)| i.symbol.as_str()).collect();
        symbols.sort_unstable();
        assert_eq!(symbols, ["ADAUSDT", "ETHUSDT"]);
        assert_eq!(closes.deadline(), None);
    }

    #[test]
    fn only_a_shards_entries_wait_with_their_close() {
        assert!(held_with_close(&entry("BTCUSDT", Some("0/1"))));
        assert!(!held_with_close(&entry("BTCUSDT", None)));
        let mut exit = entry("BTCUSDT", Some("0/1"));
        exit.action = IntentAction::Exit;
        assert!(!held_with_close(&exit));
    }
}
