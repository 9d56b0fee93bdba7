//! A bar close's entries, held by the approval loop until none ranked before them can
//! still come and take their room. Pure (no I/O, no clock of its own): table-tested below.
//!
//! Each worker shard reports its progress through a close ([`CloseProgress`]: at its first
//! bar of the close and once every symbol it owns has had that bar, with the symbols that
//! may still bring an entry), and marks the entries it decides there
//! ([`OrderIntent::shard`]). The risk rules judge a close's entries by symbol
//! (`shardbot_risk::judging_rank`, as the backtest does), so an entry can only be cut in
//! favour of one ranked before it. The approval loop asks for a held entry when either
//! - the room the limits leave (`shardbot_risk::room`) holds it, the held entries ranked
//!   before it and every entry ranked before it that may still come: no order of arrival
//!   can change its fate, so it is judged at once (the risk manager checks the room again,
//!   `unless_room_short_of`). With room for a few hundred entries, the first entries of a
//!   close by symbol go at once, and a close with room for all its symbols goes whole; or
//! - nothing can come any more (every shard decided the close and its entries arrived):
//!   the rest of the close is judged together, in the rules' order; or
//! - `router.close_wait_ms` passed since the first was held (a shard that stopped, or a
//!   bar lost on the bus): what has arrived is judged, in the rules' order.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use shardbot_protocol::{CloseProgress, Interval, OrderIntent, Symbol, TimestampMs};

/// One bar close: its interval and the open time of the bar that closed.
pub type CloseKey = (Interval, TimestampMs);

/// The key of the close `intent` was decided at.
pub fn key_of(intent: &OrderIntent) -> CloseKey {
    (intent.interval, intent.bar_open_time_ms)
}

#[derive(Debug)]
struct Close<T> {
    /// The shard count the reports name; `None` until one arrives.
    shards: Option<u16>,
    /// Reports naming different shard counts (workers rescaled mid-close): nothing can
    /// be known, the wait decides.
    rescaled: bool,
    /// Per shard, the symbols that may still bring an entry: what every report of it
    /// allows (reports only shrink the set, whatever order they arrive in).
    pending: HashMap<u16, HashSet<Symbol>>,
    /// Symbols whose entry has arrived.
    arrived: HashSet<Symbol>,
    held: Vec<(OrderIntent, T)>,
    /// When the first of `held` was held.
    since: Option<Instant>,
    /// When this close was first heard of (closes are forgotten a while after).
    heard: Instant,
}

impl<T> Close<T> {
    fn new(now: Instant) -> Close<T> {
        Close {
            shards: None,
            rescaled: false,
            pending: HashMap::new(),
            arrived: HashSet::new(),
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

    /// The symbols whose entry may still come, sorted by rank; `None` while a shard has not
    /// reported.
    fn to_come(&self) -> Option<Vec<&Symbol>> {
        let shards = self.shards?;
        if self.rescaled || self.pending.len() < usize::from(shards) {
            return None;
        }
        let mut v: Vec<&Symbol> = self
            .pending
            .values()
            .flatten()
            .filter(|s| !self.arrived.contains(*s))
            .collect();
        v.sort_unstable();
        v.dedup();
        Some(v)
    }
}

/// Why held entries are asked for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The room may hold them, the held entries ranked before them and the `before`
    /// entries ranked before the last of them that may still come: the risk manager judges
    /// them only if it does (`unless_room_short_of`).
    Room { before: u32 },
    /// Every entry of the close has arrived: judged together, in the rules' order.
    Complete,
    /// `close_wait_ms` passed with the close incomplete (`to_come`: how many entries may
    /// still come; `None`, a shard never reported).
    Waited { to_come: Option<u32> },
}

/// Held entries let go to be judged, in the rules' order.
#[derive(Debug)]
pub struct Release<T> {
    pub key: CloseKey,
    pub asks: Vec<(OrderIntent, T)>,
    pub why: Why,
    /// When the first of the close's held entries was held.
    pub since: Instant,
}

/// Every close with entries held or reports heard.
#[derive(Debug)]
pub struct Closes<T> {
    closes: HashMap<CloseKey, Close<T>>,
    wait: Duration,
}

/// How long a close is remembered after it was first heard of (a late entry of it still
/// finds its reports).
const REMEMBERED: Duration = Duration::from_secs(600);

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

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
        let reported: HashSet<Symbol> = p.pending.iter().cloned().collect();
        c.pending
            .entry(p.shard.index())
            .and_modify(|was| was.retain(|s| reported.contains(s)))
            .or_insert(reported);
    }

    /// Holds an entry that [waits for its close](OrderIntent::waits_for_its_close) until [`Closes::release`] lets it go.
    pub fn hold(&mut self, intent: OrderIntent, with: T, now: Instant) {
        let c = self.close(key_of(&intent), now);
        if let Some(shard) = intent.shard {
            c.shard_count(shard.count());
        }
        c.arrived.insert(intent.symbol.clone());
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

    /// The next close's held entries to ask for, given the `room` the risk manager last
    /// reported (`None`: not known yet, ask). Forgets closes long past.
    pub fn release(&mut self, now: Instant, room: Option<u32>) -> Option<Release<T>> {
        self.closes
            .retain(|_, c| !c.held.is_empty() || now.duration_since(c.heard) < REMEMBERED);
        let wait = self.wait;
        let mut keys: Vec<CloseKey> = self
            .closes
            .iter()
            .filter(|(_, c)| !c.held.is_empty())
            .map(|(k, _)| *k)
            .collect();
        // The oldest close first.
        keys.sort_unstable();
        for key in keys {
            let c = self.closes.get_mut(&key)?;
            let since = c.since?;
            c.held.sort_by(|a, b| {
                shardbot_risk::judging_rank(&a.0).cmp(&shardbot_risk::judging_rank(&b.0))
            });
            let to_come = c.to_come();
            let (take, why) = match &to_come {
                Some(v) if v.is_empty() => (c.held.len(), Why::Complete),
                _ if now.duration_since(since) >= wait => (
                    c.held.len(),
                    Why::Waited {
                        to_come: to_come.as_ref().map(|v| count(v.len())),
                    },
                ),
                Some(v) => {
                    // The longest run of held entries, by rank, each of which the room
                    // holds with everything ranked before it.
                    let mut take = 0;
                    let mut before = 0;
                    for (k, (intent, _)) in c.held.iter().enumerate() {
                        let earlier = count(v.partition_point(|s| *s < &intent.symbol));
                        let need = count(k + 1).saturating_add(earlier);
                        if !room.is_none_or(|r| shardbot_risk::fits(Some(r), need)) {
                            break;
                        }
                        take = k + 1;
                        before = earlier;
                    }
                    (take, Why::Room { before })
                }
                None => (0, Why::Complete),
            };
            if take == 0 {
                continue;
            }
            let asks: Vec<(OrderIntent, T)> = c.held.drain(..take).collect();
            c.since = if c.held.is_empty() { None } else { Some(since) };
            return Some(Release {
                key,
                asks,
                why,
                since,
            });
        }
        None
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
    use shardbot_protocol::{IntentAction, Shard, Side};

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

    fn progress(of: &str, undecided: u32, pending: &[&str]) -> CloseProgress {
        CloseProgress {
            shard: shard(of),
            interval: Interval::M5,
            bar_open_time_ms: BAR,
            undecided,
            pending: pending.iter().map(|s| Symbol::new(*s).unwrap()).collect(),
        }
    }

    enum Ev {
        Report(&'static str, u32, &'static [&'static str]),
        Entry(&'static str, &'static str),
    }
    use Ev::{Entry, Report};

    const ABCD: &[&str] = &["AUSDT", "BUSDT", "CUSDT", "DUSDT"];

    /// Reports and entries in arrival order, the room last reported, and how long since
    /// the first was held: what is let go (in the rules' order) and why.
    #[rstest]
    #[case::room_for_everything_ranked_before(
        vec![Report("0/2", 3, &["AUSDT", "BUSDT", "CUSDT"]), Report("1/2", 2, &["DUSDT", "EUSDT"]),
             Entry("1/2", "EUSDT")],
        Some(40), 0, Some((Why::Room { before: 4 }, vec!["EUSDT"])))]
    #[case::room_not_known_yet_asks(
        vec![Report("0/1", 4, ABCD), Entry("0/1", "DUSDT")],
        None, 0, Some((Why::Room { before: 3 }, vec!["DUSDT"])))]
    #[case::too_little_room_for_what_ranks_before(
        vec![Report("0/1", 4, ABCD), Entry("0/1", "DUSDT")],
        Some(2), 0, None)]
    #[case::the_first_by_rank_goes_at_once(
        vec![Report("0/1", 4, ABCD), Entry("0/1", "AUSDT")],
        Some(1), 0, Some((Why::Room { before: 0 }, vec!["AUSDT"])))]
    #[case::the_run_stops_at_the_first_the_room_cannot_promise(
        vec![Report("0/1", 4, ABCD), Entry("0/1", "DUSDT"), Entry("0/1", "BUSDT")],
        Some(2), 0, Some((Why::Room { before: 1 }, vec!["BUSDT"])))]
    #[case::a_shard_not_heard_holds(
        vec![Report("0/2", 0, &["BUSDT"]), Entry("0/2", "BUSDT")],
        Some(400), 0, None)]
    #[case::no_room_at_all_judges_now(
        vec![Report("0/1", 4, ABCD), Entry("0/1", "DUSDT"), Entry("0/1", "CUSDT")],
        Some(0), 0, Some((Why::Room { before: 2 }, vec!["CUSDT", "DUSDT"])))]
    #[case::every_entry_arrived(
        vec![Report("0/2", 0, &["EUSDT", "AUSDT"]), Report("1/2", 0, &["XUSDT"]), Entry("1/2", "XUSDT"),
             Entry("0/2", "EUSDT"), Entry("0/2", "AUSDT")],
        Some(1), 0, Some((Why::Complete, vec!["AUSDT", "EUSDT", "XUSDT"])))]
    #[case::an_entry_ranked_before_still_on_its_way(
        vec![Report("0/1", 0, &["EUSDT", "AUSDT"]), Entry("0/1", "EUSDT")],
        Some(1), 0, None)]
    #[case::entries_before_their_report(
        vec![Entry("0/1", "EUSDT"), Entry("0/1", "AUSDT"), Report("0/1", 0, &["AUSDT", "EUSDT"])],
        Some(1), 0, Some((Why::Complete, vec!["AUSDT", "EUSDT"])))]
    #[case::an_older_report_arriving_late_does_not_widen(
        vec![Report("0/1", 0, &["EUSDT"]), Report("0/1", 5, &["AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT"]),
             Entry("0/1", "EUSDT")],
        Some(1), 0, Some((Why::Complete, vec!["EUSDT"])))]
    #[case::a_silent_shard_waited_for(
        vec![Report("0/2", 0, &["BUSDT"]), Entry("0/2", "BUSDT")],
        Some(0), 3000, Some((Why::Waited { to_come: None }, vec!["BUSDT"])))]
    #[case::not_yet_waited_long_enough(
        vec![Report("0/2", 0, &["BUSDT"]), Entry("0/2", "BUSDT")],
        Some(3), 2999, None)]
    #[case::rescaled_mid_close(
        vec![Report("0/2", 0, &[]), Report("1/2", 0, &[]), Report("0/4", 0, &["BUSDT"]), Entry("0/4", "BUSDT")],
        Some(3), 0, None)]
    fn a_close_is_let_go(
        #[case] events: Vec<Ev>,
        #[case] room: Option<u32>,
        #[case] after_ms: u64,
        #[case] want: Option<(Why, Vec<&str>)>,
    ) {
        let t0 = Instant::now();
        let mut closes: Closes<()> = Closes::new(Duration::from_millis(3000));
        for e in events {
            match e {
                Report(s, undecided, pending) => {
                    closes.report(&progress(s, undecided, pending), t0);
                }
                Entry(s, symbol) => closes.hold(entry(symbol, Some(s)), (), t0),
            }
        }
        let got = closes.release(t0 + Duration::from_millis(after_ms), room);
        let got_view = got.as_ref().map(|r| {
            let symbols: Vec<&str> = r.asks.iter().map(|(i, _)| i.symbol.as_str()).collect();
            (r.why, symbols)
        });
        assert_eq!(got_view, want);
        match got {
            Some(r) => {
                assert_eq!((r.key, r.since), ((Interval::M5, BAR), t0));
                // Let go once; what stays held still waits from the first hold.
                let again = closes.release(t0, room);
                assert!(
                    again.is_none()
                        || again.is_some_and(|a| !a
                            .asks
                            .iter()
                            .any(|(i, _)| r.asks.iter().any(|(j, _)| i.intent_id == j.intent_id)))
                );
            }
            None => assert_eq!(closes.deadline(), Some(t0 + Duration::from_millis(3000))),
        }
    }

    #[test]
    fn entries_put_back_keep_their_wait_and_go_when_the_close_completes() {
        let t0 = Instant::now();
        let mut closes: Closes<()> = Closes::new(Duration::from_millis(3000));
        closes.report(&progress("0/1", 3, &["AUSDT", "CUSDT", "EUSDT"]), t0);
        closes.hold(entry("EUSDT", Some("0/1")), (), t0);
        let r = closes.release(t0, None).unwrap();
        assert_eq!(r.why, Why::Room { before: 2 });
        // The risk manager: room for 2 only, the release needed 3.
        closes.put_back(r);
        assert!(closes.release(t0, Some(2)).is_none());
        assert_eq!(closes.deadline(), Some(t0 + Duration::from_millis(3000)));
        closes.hold(entry("AUSDT", Some("0/1")), (), t0);
        // AUSDT ranks first: room for it, whatever comes.
        let r = closes.release(t0, Some(2)).unwrap();
        assert_eq!(r.why, Why::Room { before: 0 });
        assert_eq!(r.asks.len(), 1);
        assert_eq!(r.asks[0].0.symbol.as_str(), "AUSDT");
        closes.report(&progress("0/1", 0, &["AUSDT", "EUSDT"]), t0);
        let r = closes.release(t0, Some(1)).unwrap();
        assert_eq!(r.why, Why::Complete);
        assert_eq!(r.asks[0].0.symbol.as_str(), "EUSDT");
        assert_eq!(closes.deadline(), None);
    }

    #[test]
    fn only_a_shards_entries_wait_for_their_close() {
        assert!(entry("BTCUSDT", Some("0/1")).waits_for_its_close());
        assert!(!entry("BTCUSDT", None).waits_for_its_close());
        let mut exit = entry("BTCUSDT", Some("0/1"));
        exit.action = IntentAction::Exit;
        assert!(!exit.waits_for_its_close());
    }
}
