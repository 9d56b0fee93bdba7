//! In-order delivery of one symbol's closed bars, with gap refill.
//!
//! Both ends of the bar stream need the same rule: the gateway receives closed klines
//! from the exchange's WebSocket (which can drop messages or the whole connection) and
//! refills from REST; a worker receives them from the bus (which drops when a reader is
//! slow) and refills from the gateway's history. In both cases a bar may only be acted on
//! once every bar before it has been, so a [`BarSequencer`] holds bars that arrive after a
//! hole until the hole is filled, and says what to fetch.
//!
//! Contiguity is judged by open time (`open_time = previous open + interval`), which is
//! what the exchange guarantees, so a publisher restart (new sequence numbers) needs no
//! special case.

use std::collections::BTreeMap;

use crate::{Bar, TimestampMs};

/// What to do with a bar offered to the sequencer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Deliver these bars now, in this order.
    Ready(Vec<Bar>),
    /// Bars are missing before this one: fetch closed bars opening in
    /// `from_ms..=to_ms`, then call [`BarSequencer::complete_fill`]. The bar is held.
    Fill {
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    },
    /// A fill is already under way; the bar is held until it completes.
    Held,
    /// Already delivered (or older than what was): ignore it.
    Duplicate,
}

/// Bars delivered by a completed fill.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filled {
    /// In order: the fetched bars newer than what had been delivered, then the held ones.
    pub bars: Vec<Bar>,
    /// Open times the fetch did not supply and that had to be skipped (the source had no
    /// such bar). Empty when the fill closed the hole.
    pub skipped: Vec<TimestampMs>,
}

/// The delivery state of one symbol and interval.
#[derive(Debug, Clone)]
pub struct BarSequencer {
    step_ms: i64,
    last: Option<TimestampMs>,
    held: BTreeMap<TimestampMs, Bar>,
    filling: bool,
}

impl BarSequencer {
    /// A sequencer for bars `step_ms` apart that has delivered nothing yet. Until its first
    /// fill completes it holds every bar (it cannot know what came before), so callers
    /// start with [`begin_fill`](Self::begin_fill) or [`start_after`](Self::start_after).
    pub fn new(step_ms: i64) -> BarSequencer {
        BarSequencer {
            step_ms: step_ms.max(1),
            last: None,
            held: BTreeMap::new(),
            filling: false,
        }
    }

    /// Declares everything up to and including the bar opening at `open_ms` delivered.
    pub fn start_after(&mut self, open_ms: TimestampMs) {
        self.last = Some(self.last.map_or(open_ms, |l| l.max(open_ms)));
    }

    /// Open time of the newest delivered bar.
    pub fn last(&self) -> Option<TimestampMs> {
        self.last
    }

    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    pub fn is_filling(&self) -> bool {
        self.filling
    }

    /// Bars held back, waiting for a fill.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Offers a closed bar.
    pub fn offer(&mut self, bar: Bar) -> Offer {
        let open = bar.open_time_ms;
        if self.last.is_some_and(|l| open <= l) {
            return Offer::Duplicate;
        }
        if self.filling || self.last.is_none() {
            self.held.insert(open, bar);
            return Offer::Held;
        }
        let last = self.last.unwrap_or(open);
        if open == last + self.step_ms {
            self.last = Some(open);
            return Offer::Ready(vec![bar]);
        }
        self.held.insert(open, bar);
        self.filling = true;
        Offer::Fill {
            from_ms: last + self.step_ms,
            to_ms: open - self.step_ms,
        }
    }

    /// Starts a fill from outside the stream (start-up, a reconnect, a stale stream).
    /// Returns the open time to fetch from (`None` = everything: nothing delivered yet),
    /// or `Err(())` if a fill is already under way.
    #[allow(clippy::result_unit_err)]
    pub fn begin_fill(&mut self) -> Result<Option<TimestampMs>, ()> {
        if self.filling {
            return Err(());
        }
        self.filling = true;
        Ok(self.last.map(|l| l + self.step_ms))
    }

    /// Completes the fill with the bars fetched (any order; duplicates and bars already
    /// delivered are dropped) and releases the held bars behind them.
    pub fn complete_fill(&mut self, fetched: Vec<Bar>) -> Filled {
        self.filling = false;
        let mut merged: BTreeMap<TimestampMs, Bar> = std::mem::take(&mut self.held);
        for b in fetched {
            // A fetched bar is the source's record; it wins over a held copy.
            merged.insert(b.open_time_ms, b);
        }
        let mut out = Filled::default();
        for (open, bar) in merged {
            if self.last.is_some_and(|l| open <= l) {
                continue;
            }
            if let Some(l) = self.last {
                let mut t = l + self.step_ms;
                while t < open {
                    out.skipped.push(t);
                    t += self.step_ms;
                }
            }
            self.last = Some(open);
            out.bars.push(bar);
        }
        out
    }

    /// The open times that completing a fill with `fetched` would skip (holes between
    /// the last delivered bar, the fetched bars and the held ones), without changing
    /// anything: a caller can fetch again instead of accepting the holes.
    pub fn missing_with(&self, fetched: &[Bar]) -> Vec<TimestampMs> {
        let Some(mut last) = self.last else {
            return Vec::new();
        };
        let mut opens: Vec<TimestampMs> = fetched
            .iter()
            .map(|b| b.open_time_ms)
            .chain(self.held.keys().copied())
            .filter(|t| *t > last)
            .collect();
        opens.sort_unstable();
        opens.dedup();
        let mut missing = Vec::new();
        for open in opens {
            let mut t = last + self.step_ms;
            while t < open {
                missing.push(t);
                t += self.step_ms;
            }
            last = open;
        }
        missing
    }

    /// Open time of the oldest held bar.
    pub fn first_held(&self) -> Option<TimestampMs> {
        self.held.keys().next().copied()
    }

    /// A fill failed; it can be begun again. Held bars stay held.
    pub fn abort_fill(&mut self) {
        self.filling = false;
    }

    /// Whether a bar that should have closed by `now_ms` has not been delivered:
    /// the bar after the last one closed at `last + 2 × step`, and `grace_ms` has passed.
    pub fn is_stale(&self, now_ms: TimestampMs, grace_ms: i64) -> bool {
        !self.filling
            && self
                .last
                .is_some_and(|l| now_ms >= l + 2 * self.step_ms + grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interval, Symbol};
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    const STEP: i64 = 60_000;

    fn bar(i: i64) -> Bar {
        Bar {
            symbol: Symbol::new("BTCUSDT").unwrap(),
            interval: Interval::M1,
            open_time_ms: i * STEP,
            open: Decimal::from(i),
            high: Decimal::from(i),
            low: Decimal::from(i),
            close: Decimal::from(i),
            volume: Decimal::ONE,
            turnover: Decimal::ONE,
            published_ms: None,
            stamps: Default::default(),
        }
    }

    fn opens(bars: &[Bar]) -> Vec<i64> {
        bars.iter().map(|b| b.open_time_ms / STEP).collect()
    }

    #[test]
    fn holds_everything_until_the_first_fill() {
        let mut s = BarSequencer::new(STEP);
        assert_eq!(s.begin_fill(), Ok(None));
        assert_eq!(s.offer(bar(10)), Offer::Held);
        assert_eq!(s.offer(bar(11)), Offer::Held);
        let f = s.complete_fill((5..=10).map(bar).collect());
        assert_eq!(opens(&f.bars), vec![5, 6, 7, 8, 9, 10, 11]);
        assert!(f.skipped.is_empty());
        assert_eq!(s.offer(bar(12)), Offer::Ready(vec![bar(12)]));
        assert_eq!(s.offer(bar(12)), Offer::Duplicate);
    }

    #[test]
    fn a_gap_asks_for_exactly_the_missing_bars_and_releases_in_order() {
        let mut s = BarSequencer::new(STEP);
        s.start_after(3 * STEP);
        assert_eq!(
            s.offer(bar(7)),
            Offer::Fill {
                from_ms: 4 * STEP,
                to_ms: 6 * STEP
            }
        );
        assert_eq!(s.offer(bar(8)), Offer::Held);
        assert_eq!(s.begin_fill(), Err(()));
        let f = s.complete_fill(vec![bar(6), bar(4), bar(5)]);
        assert_eq!(opens(&f.bars), vec![4, 5, 6, 7, 8]);
        assert_eq!(s.last(), Some(8 * STEP));
    }

    #[test]
    fn a_fill_that_cannot_close_the_hole_reports_what_was_skipped() {
        let mut s = BarSequencer::new(STEP);
        s.start_after(0);
        assert!(matches!(s.offer(bar(4)), Offer::Fill { .. }));
        let f = s.complete_fill(vec![bar(2)]);
        assert_eq!(opens(&f.bars), vec![2, 4]);
        assert_eq!(f.skipped, vec![STEP, 3 * STEP]);
    }

    #[test]
    fn missing_with_previews_the_holes_of_a_fill() {
        let mut s = BarSequencer::new(STEP);
        s.start_after(0);
        assert!(matches!(s.offer(bar(5)), Offer::Fill { .. }));
        assert_eq!(s.first_held(), Some(5 * STEP));
        assert_eq!(s.missing_with(&[bar(1), bar(2)]), vec![3 * STEP, 4 * STEP]);
        assert!(s.missing_with(&[bar(1), bar(2), bar(3), bar(4)]).is_empty());
        assert_eq!(s.held(), 1, "nothing changed");
        assert_eq!(
            s.complete_fill(vec![bar(1), bar(2)]).skipped,
            vec![3 * STEP, 4 * STEP]
        );
    }

    #[test]
    fn a_failed_fill_keeps_the_held_bars() {
        let mut s = BarSequencer::new(STEP);
        s.start_after(0);
        assert!(matches!(s.offer(bar(3)), Offer::Fill { .. }));
        s.abort_fill();
        assert_eq!(s.held(), 1);
        assert_eq!(s.begin_fill(), Ok(Some(STEP)));
        let f = s.complete_fill(vec![bar(1), bar(2)]);
        assert_eq!(opens(&f.bars), vec![1, 2, 3]);
    }

    #[test]
    fn staleness_waits_for_the_next_close_plus_grace() {
        let mut s = BarSequencer::new(STEP);
        assert!(
            !s.is_stale(1_000 * STEP, 0),
            "nothing delivered: not judged"
        );
        s.start_after(10 * STEP);
        assert!(!s.is_stale(12 * STEP - 1, 0));
        assert!(s.is_stale(12 * STEP, 0));
        assert!(!s.is_stale(12 * STEP, 5_000));
    }

    proptest! {
        /// Whatever bars are lost and however the rest is reordered within a fill, what is
        /// delivered is every bar exactly once, in order.
        #[test]
        fn delivers_every_bar_once_in_order(
            lost in proptest::collection::vec(any::<bool>(), 1..200),
        ) {
            let mut s = BarSequencer::new(STEP);
            s.start_after(0);
            let mut delivered = Vec::new();
            let n = lost.len() as i64;
            for (i, lose) in lost.iter().enumerate() {
                let i = i as i64 + 1;
                if *lose { continue; }
                match s.offer(bar(i)) {
                    Offer::Ready(b) => delivered.extend(b),
                    Offer::Fill { from_ms, to_ms } => {
                        let fetched = (from_ms / STEP..=to_ms / STEP).map(bar).collect();
                        delivered.extend(s.complete_fill(fetched).bars);
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            // The tail that was lost is found by a final fill (as a stale check would).
            if s.last() != Some(n * STEP) {
                let from = s.begin_fill().unwrap().unwrap();
                delivered.extend(s.complete_fill((from / STEP..=n).map(bar).collect()).bars);
            }
            prop_assert_eq!(opens(&delivered), (1..=n).collect::<Vec<_>>());
        }
    }
}
