//! A bar close's entries, held by the approval loop until what is still to come of the
//! close cannot change their decision. Pure (no I/O, no clock of its own): table-tested.
//!
//! Each worker shard reports its progress through a close ([`CloseProgress`]: at its first
//! bar of the close and once every symbol it owns has had that bar, with the symbols that
//! may still bring an entry), and marks the entries it decides there
//! ([`OrderIntent::shard`]). The risk rules judge a close's entries by symbol
//! (`shardbot_risk::judging_rank`, as the backtest does), so an entry can only be cut in
//! favour of one ranked before it. Whenever a close's entries or reports arrive, its held
//! entries are asked for with, for each, how many entries ranked before it may still come
//! ([`Why::Partial`]): the risk manager decides those whose decision nothing still to come
//! can change (an approval the room holds whatever comes before it; a refusal the entries
//! already arrived make certain) and leaves the others held. With room for a few hundred
//! entries, a close's first entries by symbol are approved at once even when the room is
//! short of the whole universe, and when it is short, the entries it cuts are refused as
//! soon as enough of those ranked before them have arrived. What is left is judged
//! - when nothing can come any more (every shard decided the close and its entries
//!   arrived): together, in the rules' order ([`Why::Complete`]); or
//! - when `router.close_wait_ms` passed since the first was held (a shard that stopped,
//!   or a bar lost on the bus): what has arrived, in the rules' order ([`Why::Waited`]).

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
    /// Something arrived since its held entries were last asked for.
    news: bool,
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
            news: false,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Something of the close arrived and every shard has reported: for each entry (index
    /// for index), how many of the close's entries ranked before it may still come. Only
    /// what that cannot change is decided.
    Partial { before: Vec<u32> },
    /// Every entry of the close has arrived: judged together, in the rules' order.
    Complete,
    /// `close_wait_ms` passed with the close incomplete (`to_come`: how many entries may
    /// still come; `None`, a shard never reported).
    Waited { to_come: Option<u32> },
    /// More entries are held than the router can keep waiting (each holds a request
    /// open): the oldest close's are judged as they stand.
    Full,
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
    /// The most entries held at once.
    held_at_most: usize,
}

/// How long a close is remembered after it was first heard of (a late entry of it still
/// finds its reports).
const REMEMBERED: Duration = Duration::from_secs(600);

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<T> Closes<T> {
    /// `wait`: `router.close_wait_ms`; `held_at_most`: the most entries held at once.
    pub fn new(wait: Duration, held_at_most: usize) -> Closes<T> {
        Closes {
            closes: HashMap::new(),
            wait,
            held_at_most,
        }
    }

    pub fn wait(&self) -> Duration {
        self.wait
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
        c.news = true;
    }

    /// Holds an entry that [waits for its close](OrderIntent::waits_for_its_close) until
    /// [`Closes::release`] lets it go.
    pub fn hold(&mut self, intent: OrderIntent, with: T, now: Instant) {
        let c = self.close(key_of(&intent), now);
        if let Some(shard) = intent.shard {
            c.shard_count(shard.count());
        }
        c.arrived.insert(intent.symbol.clone());
        c.since.get_or_insert(now);
        c.news = true;
        c.held.push((intent, with));
    }

    /// Entries a partial judgement left undecided: back with their close, their wait
    /// still counted from when they were first held.
    pub fn put_back(&mut self, key: CloseKey, asks: Vec<(OrderIntent, T)>, since: Instant) {
        if asks.is_empty() {
            return;
        }
        let c = self.close(key, since);
        c.since = Some(c.since.map_or(since, |s| s.min(since)));
        c.held.extend(asks);
    }

    /// The next close's held entries to ask for: the oldest close that is complete, has
    /// waited `close_wait_ms`, or has news. Forgets closes long past.
    pub fn release(&mut self, now: Instant) -> Option<Release<T>> {
        self.closes
            .retain(|_, c| !c.held.is_empty() || now.duration_since(c.heard) < REMEMBERED);
        let wait = self.wait;
        let mut keys: Vec<CloseKey> = self
            .closes
            .iter()
            .filter(|(_, c)| !c.held.is_empty())
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        let full = self.closes.values().map(|c| c.held.len()).sum::<usize>() >= self.held_at_most;
        for key in keys {
            let c = self.closes.get_mut(&key)?;
            let since = c.since?;
            c.held.sort_by(|a, b| {
                shardbot_risk::judging_rank(&a.0).cmp(&shardbot_risk::judging_rank(&b.0))
            });
            let to_come = c.to_come();
            let why = match &to_come {
                Some(v) if v.is_empty() => Why::Complete,
                _ if full => Why::Full,
                _ if now.duration_since(since) >= wait => Why::Waited {
                    to_come: to_come.as_ref().map(|v| count(v.len())),
                },
                _ if !c.news => continue,
                Some(v) => Why::Partial {
                    before: c
                        .held
                        .iter()
                        .map(|(i, _)| count(v.partition_point(|s| *s < &i.symbol)))
                        .collect(),
                },
                // Nothing can be approved before every shard has said what it may still
                // send (its first report comes with its first bar): wait for the reports.
                None => continue,
            };
            c.news = false;
            c.since = None;
            return Some(Release {
                key,
                asks: std::mem::take(&mut c.held),
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

    /// Reports and entries in arrival order (`asked`: then asked for once, all left
    /// undecided), and how long after: what is let go (in the rules' order) and why.
    #[rstest]
    #[case::each_with_the_entries_ranked_before_it_still_to_come(
        vec![Report("0/2", 3, &["AUSDT", "BUSDT", "CUSDT"]), Report("1/2", 2, &["DUSDT", "EUSDT"]),
             Entry("1/2", "EUSDT"), Entry("0/2", "BUSDT")],
        false, 0, Some((Why::Partial { before: vec![1, 3] }, vec!["BUSDT", "EUSDT"])))]
    #[case::a_shard_not_heard_yet(
        vec![Report("0/2", 0, &["BUSDT"]), Entry("0/2", "BUSDT")],
        false, 0, None)]
    #[case::nothing_new_nothing_asked(
        vec![Report("0/1", 2, &["AUSDT", "BUSDT"]), Entry("0/1", "BUSDT")],
        true, 2999, None)]
    #[case::a_report_is_news(
        vec![Report("0/1", 2, &["AUSDT", "BUSDT"]), Entry("0/1", "BUSDT"), Report("0/1", 1, &["AUSDT", "BUSDT"])],
        true, 0, Some((Why::Partial { before: vec![1] }, vec!["BUSDT"])))]
    #[case::every_entry_arrived(
        vec![Report("0/2", 0, &["EUSDT", "AUSDT"]), Report("1/2", 0, &["XUSDT"]), Entry("1/2", "XUSDT"),
             Entry("0/2", "EUSDT"), Entry("0/2", "AUSDT")],
        false, 0, Some((Why::Complete, vec!["AUSDT", "EUSDT", "XUSDT"])))]
    #[case::complete_though_asked_before(
        vec![Report("0/1", 3, &["AUSDT", "CUSDT", "EUSDT"]), Entry("0/1", "EUSDT"), Entry("0/1", "AUSDT"),
             Report("0/1", 0, &["AUSDT", "EUSDT"])],
        true, 0, Some((Why::Complete, vec!["AUSDT", "EUSDT"])))]
    #[case::an_older_report_arriving_late_does_not_widen(
        vec![Report("0/1", 0, &["EUSDT"]), Report("0/1", 5, &["AUSDT", "BUSDT", "CUSDT", "DUSDT", "EUSDT"]),
             Entry("0/1", "EUSDT")],
        false, 0, Some((Why::Complete, vec!["EUSDT"])))]
    #[case::a_silent_shard_waited_for(
        vec![Report("0/2", 0, &["BUSDT"]), Entry("0/2", "BUSDT")],
        false, 3000, Some((Why::Waited { to_come: None }, vec!["BUSDT"])))]
    #[case::an_entry_still_to_come_waited_for(
        vec![Report("0/1", 0, &["AUSDT", "BUSDT"]), Entry("0/1", "BUSDT")],
        true, 3000, Some((Why::Waited { to_come: Some(1) }, vec!["BUSDT"])))]
    #[case::more_held_than_the_router_can_keep(
        vec![Report("0/1", 0, &["AUSDT", "BUSDT", "CUSDT", "DUSDT"]), Entry("0/1", "DUSDT"),
             Entry("0/1", "CUSDT"), Entry("0/1", "BUSDT")],
        false, 0, Some((Why::Full, vec!["BUSDT", "CUSDT", "DUSDT"])))]
    #[case::rescaled_mid_close(
        vec![Report("0/2", 0, &[]), Report("1/2", 0, &[]), Report("0/4", 0, &["BUSDT"]), Entry("0/4", "BUSDT")],
        false, 0, None)]
    fn a_close_is_let_go(
        #[case] events: Vec<Ev>,
        #[case] asked: bool,
        #[case] after_ms: u64,
        #[case] want: Option<(Why, Vec<&str>)>,
    ) {
        let t0 = Instant::now();
        // The router keeps at most 3 held here.
        let mut closes: Closes<()> = Closes::new(Duration::from_millis(3000), 3);
        // When `asked`: the events up to the last entry, a release put back undecided, then
        // the reports after it.
        let split = if asked {
            events
                .iter()
                .rposition(|e| matches!(e, Entry(..)))
                .map_or(0, |i| i + 1)
        } else {
            events.len()
        };
        let apply = |closes: &mut Closes<()>, e: &Ev| match *e {
            Report(s, undecided, pending) => closes.report(&progress(s, undecided, pending), t0),
            Entry(s, symbol) => closes.hold(entry(symbol, Some(s)), (), t0),
        };
        for e in &events[..split] {
            apply(&mut closes, e);
        }
        if asked {
            let r = closes.release(t0).unwrap();
            closes.put_back(r.key, r.asks, r.since);
        }
        for e in &events[split..] {
            apply(&mut closes, e);
        }
        let got = closes.release(t0 + Duration::from_millis(after_ms));
        let got_view = got.as_ref().map(|r| {
            let symbols: Vec<&str> = r.asks.iter().map(|(i, _)| i.symbol.as_str()).collect();
            (r.why.clone(), symbols)
        });
        assert_eq!(got_view, want);
        match got {
            Some(r) => {
                assert_eq!((r.key, r.since), ((Interval::M5, BAR), t0));
                assert!(closes.release(t0).is_none(), "let go once");
                assert_eq!(closes.deadline(), None);
            }
            None => assert_eq!(closes.deadline(), Some(t0 + Duration::from_millis(3000))),
        }
    }

    #[test]
    fn undecided_entries_put_back_keep_their_wait_and_go_when_the_close_completes() {
        let t0 = Instant::now();
        let mut closes: Closes<()> = Closes::new(Duration::from_millis(3000), 100);
        closes.report(&progress("0/1", 3, &["AUSDT", "CUSDT", "EUSDT"]), t0);
        closes.hold(entry("EUSDT", Some("0/1")), (), t0);
        let r = closes.release(t0).unwrap();
        assert_eq!(r.why, Why::Partial { before: vec![2] });
        closes.put_back(r.key, r.asks, r.since);
        assert!(closes.release(t0).is_none());
        assert_eq!(closes.deadline(), Some(t0 + Duration::from_millis(3000)));
        closes.hold(
            entry("AUSDT", Some("0/1")),
            (),
            t0 + Duration::from_millis(5),
        );
        let r = closes.release(t0).unwrap();
        assert_eq!(r.why, Why::Partial { before: vec![0, 1] });
        assert_eq!(r.since, t0);
        // The risk manager decided AUSDT, not EUSDT.
        let undecided: Vec<_> = r
            .asks
            .into_iter()
            .filter(|(i, _)| i.symbol.as_str() == "EUSDT")
            .collect();
        closes.put_back(r.key, undecided, r.since);
        closes.report(&progress("0/1", 0, &["AUSDT", "EUSDT"]), t0);
        let r = closes.release(t0).unwrap();
        assert_eq!(r.why, Why::Complete);
        assert_eq!(r.asks.len(), 1);
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
