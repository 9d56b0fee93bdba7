//! The gateway's pure core: what the exchange's data means for the series it streams
//! (one symbol at one interval), as steps for the actor ([`crate::gateway`]) to carry
//! out. Nothing here touches the network, the bus or the store: the universe's changes,
//! a fetch's end (deliver, fetch a hole again, or retry), the window a fetch asks for,
//! the ring of newest bars kept in memory, and a history reply assembled from the store
//! and the ring. Table-tested below, as the strategy worker's engine is.

use std::collections::{BTreeMap, VecDeque};

use shardbot_protocol::{
    Bar, BarSequencer, HistoryRequest, Instrument, Interval, Offer, Symbol, TimestampMs,
};

/// Fetches of a hole before the gateway accepts that the exchange has no such bars.
pub(crate) const HOLE_RETRIES: u32 = 3;

/// Closed bars per series kept in memory when a history store holds them all: the newest,
/// with their publication stamps (a worker's refill after a bus drop asks for those);
/// a warm-up's older bars are read from the store. 600 series x 1,000 bars in memory held
/// ~110 MB.
pub(crate) const RING_WITH_STORE: usize = 64;

pub(crate) fn step_ms(i: Interval) -> i64 {
    // Months are not streamed by the gateway (checked at start-up).
    i.duration_ms().unwrap_or(30 * 86_400_000)
}

/// Symbols listed and delisted between two reads of the instrument list.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UniverseChange {
    pub(crate) added: Vec<Symbol>,
    pub(crate) removed: Vec<Symbol>,
}

impl UniverseChange {
    pub(crate) fn between(
        old: &BTreeMap<Symbol, Instrument>,
        fresh: &BTreeMap<Symbol, Instrument>,
    ) -> UniverseChange {
        UniverseChange {
            added: fresh
                .keys()
                .filter(|s| !old.contains_key(*s))
                .cloned()
                .collect(),
            removed: old
                .keys()
                .filter(|s| !fresh.contains_key(*s))
                .cloned()
                .collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The closed bars a fetch asks the exchange for: from `from` (`None`: the newest
/// `history` bars) to the last bar closed at the exchange's `now`, and at least to `until`
/// (bars the stream has already shown closed, whatever the estimate of the exchange's
/// clock says). `None`: nothing to fetch. Returns `(first open, last open)`.
pub(crate) fn fetch_window(
    now: TimestampMs,
    step: i64,
    from: Option<TimestampMs>,
    until: Option<TimestampMs>,
    history: usize,
) -> Option<(TimestampMs, TimestampMs)> {
    let last_closed_open = ((now / step) * step - step).max(until.unwrap_or(i64::MIN));
    let earliest = last_closed_open - (history as i64 - 1) * step;
    let start = from.map_or(earliest, |f| f.max(earliest));
    (start <= last_closed_open).then_some((start, last_closed_open))
}

/// What the end of a fetch asks of the actor.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterFetch {
    /// The fetch failed: begin it again later ([`Series::begin_fill`]).
    RetryLater,
    /// It left a hole the exchange may still fill (its REST can lag its stream): fetch
    /// again now, up to what the held bars prove closed.
    FetchAgain {
        from: Option<TimestampMs>,
        until: Option<TimestampMs>,
        attempt: u32,
        missing: usize,
    },
    /// Deliver these bars (store, ring, publish).
    Deliver(Delivery),
}

/// Bars to deliver, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) bars: Vec<Bar>,
    /// Open times the exchange has no bar for, skipped after [`HOLE_RETRIES`] fetches.
    pub(crate) skipped: Vec<TimestampMs>,
    /// Bars opening at or before this are history (the first fill, which workers read
    /// over REP): kept, not published. `None`: every bar is news.
    pub(crate) publish_after: Option<TimestampMs>,
    /// This completes the series' first fill (its backfill).
    pub(crate) initial: bool,
}

/// One series: its sequencer (in-order delivery, holes), the ring of delivered bars kept
/// in memory, and what is known of the history store.
#[derive(Debug)]
pub(crate) struct Series {
    seq: BarSequencer,
    ring: VecDeque<Bar>,
    /// The first fill (history backfill) has completed.
    ready: bool,
    /// The history store holds every bar delivered so far (each write succeeded and
    /// ended at the delivered bar): the ring may then forget older bars.
    store_holds: bool,
    /// Fetches repeated because they left a hole.
    hole_fetches: u32,
}

impl Series {
    /// A new series whose backfill begins now (fetch everything: nothing delivered yet).
    pub(crate) fn backfilling(interval: Interval) -> Series {
        let mut seq = BarSequencer::new(step_ms(interval));
        let _ = seq.begin_fill();
        Series {
            seq,
            ring: VecDeque::new(),
            ready: false,
            store_holds: true,
            hole_fetches: 0,
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Begins a fill from where the series stands: `Some(from)` to fetch (`from`: `None`
    /// = everything), `None` when a fill is already under way.
    pub(crate) fn begin_fill(&mut self) -> Option<Option<TimestampMs>> {
        self.seq.begin_fill().ok()
    }

    /// A bar closed on the stream.
    pub(crate) fn offer(&mut self, bar: Bar) -> Offer {
        self.seq.offer(bar)
    }

    /// Whether a bar that should have been delivered by `now` (plus `grace_ms`) was not.
    pub(crate) fn is_stale(&self, now: TimestampMs, grace_ms: i64) -> bool {
        self.seq.is_stale(now, grace_ms)
    }

    /// A fetch ended with `result`.
    pub(crate) fn fetched(&mut self, result: Result<Vec<Bar>, String>) -> AfterFetch {
        let Ok(fetched) = result else {
            self.seq.abort_fill();
            return AfterFetch::RetryLater;
        };
        let missing = self.seq.missing_with(&fetched);
        if !missing.is_empty() && self.hole_fetches < HOLE_RETRIES {
            self.hole_fetches += 1;
            self.seq.abort_fill();
            let until = self.seq.first_held().map(|h| h - self.seq.step_ms());
            if let Ok(from) = self.seq.begin_fill() {
                return AfterFetch::FetchAgain {
                    from,
                    until,
                    attempt: self.hole_fetches,
                    missing: missing.len(),
                };
            }
        }
        self.hole_fetches = 0;
        let initial = !self.ready;
        self.ready = true;
        let publish_after = initial.then(|| fetched.last().map_or(i64::MIN, |b| b.open_time_ms));
        let filled = self.seq.complete_fill(fetched);
        AfterFetch::Deliver(Delivery {
            bars: filled.bars,
            skipped: filled.skipped,
            publish_after,
            initial,
        })
    }

    /// Whether the store took the delivered bars up to the newest (`stored`). Returns
    /// true when the series just stopped being held by the store: from then on its whole
    /// history stays in memory.
    pub(crate) fn stored(&mut self, stored: bool) -> bool {
        let lost = !stored && self.store_holds;
        if lost {
            self.store_holds = false;
        }
        lost
    }

    /// Keeps a delivered bar in the ring: the newest [`RING_WITH_STORE`] while the store
    /// holds the series, else the newest `history_bars`.
    pub(crate) fn ring(&mut self, bar: Bar, history_bars: usize) {
        let keep = if self.store_holds {
            RING_WITH_STORE.min(history_bars)
        } else {
            history_bars
        };
        self.ring.push_back(bar);
        while self.ring.len() > keep {
            self.ring.pop_front();
        }
    }

    /// What a history request needs from the store (see [`store_part`]).
    pub(crate) fn store_part(
        &self,
        req: &HistoryRequest,
        history_bars: usize,
    ) -> Option<StorePart> {
        let in_ring = self.ring.iter().filter(|b| in_range(req, b)).count();
        store_part(
            req,
            self.ring.front().map(|b| b.open_time_ms),
            in_ring,
            self.store_holds.then_some(history_bars),
        )
    }

    /// The history reply: the bars read from the store (`older`), then the ring's, those
    /// in the request's range, the newest `limit` of them (0: all).
    pub(crate) fn history(&self, req: &HistoryRequest, older: Vec<Bar>) -> Vec<Bar> {
        let mut bars: Vec<Bar> = older.into_iter().filter(|b| in_range(req, b)).collect();
        bars.extend(self.ring.iter().filter(|b| in_range(req, b)).cloned());
        if req.limit > 0 && bars.len() > req.limit as usize {
            bars.drain(..bars.len() - req.limit as usize);
        }
        bars
    }
}

fn in_range(req: &HistoryRequest, b: &Bar) -> bool {
    req.start_ms.is_none_or(|s| b.open_time_ms >= s)
        && req.end_ms.is_none_or(|e| b.open_time_ms <= e)
}

/// The part of a history reply read from the store: the bars before the ring's first.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StorePart {
    pub(crate) start_ms: Option<i64>,
    pub(crate) end_ms: i64,
    /// The newest this many only.
    pub(crate) limit: Option<usize>,
}

/// What a history request needs from the store, given the ring's first bar and how many
/// of the ring's bars it takes: a range that starts before the ring; or, when the store
/// holds the series up to the ring (`holds`: `Some(history_bars)`), a count of newest bars
/// larger than the ring holds (no bound at all: `history_bars`, what the gateway keeps).
/// `None`: the ring answers alone.
fn store_part(
    req: &HistoryRequest,
    ring_front: Option<i64>,
    in_ring: usize,
    holds: Option<usize>,
) -> Option<StorePart> {
    let front = ring_front?;
    let end_ms = req.end_ms.map_or(front - 1, |e| e.min(front - 1));
    let limit = match (req.start_ms, req.limit as usize, holds) {
        (Some(start), _, _) if start < front => None,
        (Some(_), _, _) | (None, _, None) => return None,
        (None, 0, Some(history_bars)) => Some(history_bars.saturating_sub(in_ring)),
        (None, limit, Some(_)) if limit > in_ring => Some(limit - in_ring),
        (None, _, Some(_)) => return None,
    };
    Some(StorePart {
        start_ms: req.start_ms,
        end_ms,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use rust_decimal_macros::dec;
    use shardbot_protocol::BarStamps;

    const STEP: i64 = 300_000;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    fn req(start_ms: Option<i64>, end_ms: Option<i64>, limit: u32) -> HistoryRequest {
        HistoryRequest {
            symbol: sym("BTCUSDT"),
            interval: Interval::M5,
            start_ms,
            end_ms,
            limit,
        }
    }

    /// The bar opening at `k` steps.
    fn bar(k: i64) -> Bar {
        Bar {
            symbol: sym("BTCUSDT"),
            interval: Interval::M5,
            open_time_ms: k * STEP,
            open: dec!(1),
            high: dec!(1),
            low: dec!(1),
            close: dec!(1),
            volume: dec!(1),
            turnover: dec!(1),
            published_ms: None,
            stamps: BarStamps::default(),
        }
    }

    fn bars(ks: &[i64]) -> Vec<Bar> {
        ks.iter().map(|k| bar(*k)).collect()
    }

    fn opens(bars: &[Bar]) -> Vec<i64> {
        bars.iter().map(|b| b.open_time_ms / STEP).collect()
    }

    fn delivered(after: AfterFetch) -> Delivery {
        match after {
            AfterFetch::Deliver(d) => d,
            other => panic!("not a delivery: {other:?}"),
        }
    }

    /// A series whose backfill delivered bars 1..=k.
    fn ready(k: i64) -> Series {
        let mut s = Series::backfilling(Interval::M5);
        delivered(s.fetched(Ok(bars(&(1..=k).collect::<Vec<_>>()))));
        s
    }

    #[rstest]
    #[case::nothing_changed(&["A", "B"], &["A", "B"], &[], &[])]
    #[case::a_listing(&["A"], &["A", "B"], &["B"], &[])]
    #[case::a_delisting(&["A", "B"], &["B"], &[], &["A"])]
    #[case::both(&["A", "B"], &["B", "C"], &["C"], &["A"])]
    #[case::first_read(&[], &["A", "B"], &["A", "B"], &[])]
    fn the_universe_changes(
        #[case] old: &[&str],
        #[case] fresh: &[&str],
        #[case] added: &[&str],
        #[case] removed: &[&str],
    ) {
        let map = |names: &[&str]| -> BTreeMap<Symbol, Instrument> {
            names
                .iter()
                .map(|n| {
                    let s = sym(&format!("{n}USDT"));
                    let i = Instrument {
                        symbol: s.clone(),
                        tick_size: dec!(0.1),
                        qty_step: dec!(0.001),
                        min_order_qty: dec!(0.001),
                        max_market_order_qty: dec!(100),
                        min_notional: dec!(5),
                        max_leverage: dec!(100),
                        funding_interval_min: 480,
                    };
                    (s, i)
                })
                .collect()
        };
        let names = |names: &[&str]| -> Vec<Symbol> {
            names.iter().map(|n| sym(&format!("{n}USDT"))).collect()
        };
        let change = UniverseChange::between(&map(old), &map(fresh));
        assert_eq!(
            change,
            UniverseChange {
                added: names(added),
                removed: names(removed)
            }
        );
        assert_eq!(change.is_empty(), added.is_empty() && removed.is_empty());
    }

    /// now = 10 steps + 1 ms: the bar opening at 9 steps is the last closed.
    #[rstest]
    #[case::a_backfill(None, None, 5, Some((5, 9)))]
    #[case::a_refill_from_a_bar(Some(7), None, 5, Some((7, 9)))]
    #[case::a_refill_older_than_the_history_is_cut(Some(1), None, 5, Some((5, 9)))]
    #[case::the_stream_proved_a_later_bar_closed(Some(7), Some(11), 5, Some((7, 11)))]
    #[case::nothing_closed_since(Some(10), None, 5, None)]
    fn what_a_fetch_asks_for(
        #[case] from: Option<i64>,
        #[case] until: Option<i64>,
        #[case] history: usize,
        #[case] want: Option<(i64, i64)>,
    ) {
        let got = fetch_window(
            10 * STEP + 1,
            STEP,
            from.map(|k| k * STEP),
            until.map(|k| k * STEP),
            history,
        );
        assert_eq!(got, want.map(|(a, b)| (a * STEP, b * STEP)));
    }

    #[test]
    fn a_backfill_is_history_only_the_bars_streamed_meanwhile_are_published() {
        let mut s = Series::backfilling(Interval::M5);
        assert_eq!(s.offer(bar(6)), Offer::Held);
        assert!(!s.is_ready());
        let d = delivered(s.fetched(Ok(bars(&[1, 2, 3, 4, 5]))));
        assert_eq!(opens(&d.bars), [1, 2, 3, 4, 5, 6]);
        assert_eq!(d.publish_after, Some(5 * STEP), "bar 6 came live: news");
        assert!(d.initial && d.skipped.is_empty() && s.is_ready());
        // A later refill is all news.
        assert!(matches!(s.offer(bar(8)), Offer::Fill { .. }));
        let d = delivered(s.fetched(Ok(bars(&[7]))));
        assert_eq!(
            (opens(&d.bars), d.publish_after, d.initial),
            (vec![7, 8], None, false)
        );
    }

    #[test]
    fn a_failed_fetch_is_retried_from_where_it_stood() {
        let mut s = ready(3);
        assert_eq!(s.begin_fill(), Some(Some(4 * STEP)));
        assert_eq!(s.begin_fill(), None, "one fill at a time");
        assert_eq!(s.fetched(Err("timeout".into())), AfterFetch::RetryLater);
        assert_eq!(s.begin_fill(), Some(Some(4 * STEP)));
    }

    /// Bars 1..=3 delivered, 9 held from the stream; fetches that keep returning 4..=6
    /// leave 7 and 8 missing: fetched again up to 8 (what bar 9 proves closed), three
    /// times, then delivered with the hole skipped.
    #[test]
    fn a_hole_is_fetched_again_three_times_then_skipped() {
        let mut s = ready(3);
        assert_eq!(
            s.offer(bar(9)),
            Offer::Fill {
                from_ms: 4 * STEP,
                to_ms: 8 * STEP
            }
        );
        for attempt in 1..=HOLE_RETRIES {
            assert_eq!(
                s.fetched(Ok(bars(&[4, 5, 6]))),
                AfterFetch::FetchAgain {
                    from: Some(4 * STEP),
                    until: Some(8 * STEP),
                    attempt,
                    missing: 2
                }
            );
        }
        let d = delivered(s.fetched(Ok(bars(&[4, 5, 6]))));
        assert_eq!(opens(&d.bars), [4, 5, 6, 9]);
        assert_eq!(d.skipped, [7 * STEP, 8 * STEP]);
        // The count starts afresh for the next hole.
        assert!(matches!(s.offer(bar(11)), Offer::Fill { .. }));
        assert!(matches!(
            s.fetched(Ok(vec![])),
            AfterFetch::FetchAgain { attempt: 1, .. }
        ));
    }

    #[test]
    fn a_fetch_that_closes_the_hole_is_delivered_at_once() {
        let mut s = ready(3);
        let _ = s.offer(bar(6));
        let d = delivered(s.fetched(Ok(bars(&[4, 5]))));
        assert_eq!((opens(&d.bars), d.skipped.len()), (vec![4, 5, 6], 0));
    }

    /// The ring keeps the newest 64 bars while the store holds the series, the whole
    /// history once a write failed.
    #[rstest]
    #[case::the_store_holds_it(true, 100, 64)]
    #[case::a_write_failed(false, 100, 100)]
    #[case::a_short_history(true, 10, 10)]
    fn the_ring_keeps(#[case] store_ok: bool, #[case] history: usize, #[case] kept: usize) {
        let mut s = Series::backfilling(Interval::M5);
        let lost = s.stored(store_ok);
        assert_eq!(lost, !store_ok);
        assert!(!s.stored(store_ok), "said once");
        for k in 1..=150 {
            s.ring(bar(k), history);
        }
        assert_eq!(s.ring.len(), kept);
        assert_eq!(s.ring.back().map(|b| b.open_time_ms), Some(150 * STEP));
    }

    #[test]
    fn a_history_reply_joins_the_store_and_the_ring_and_keeps_the_newest() {
        let mut s = ready(0);
        for k in 10..=20 {
            s.ring(bar(k), 1000);
        }
        let r = req(None, None, 15);
        assert_eq!(
            s.store_part(&r, 1000),
            Some(StorePart {
                start_ms: None,
                end_ms: 10 * STEP - 1,
                limit: Some(4)
            })
        );
        assert_eq!(
            opens(&s.history(&r, bars(&[6, 7, 8, 9]))),
            (6..=20).collect::<Vec<_>>()
        );
        let r = req(Some(12 * STEP), Some(14 * STEP), 0);
        assert_eq!(s.store_part(&r, 1000), None);
        assert_eq!(opens(&s.history(&r, vec![])), [12, 13, 14]);
        let r = req(None, None, 3);
        assert_eq!(opens(&s.history(&r, vec![])), [18, 19, 20]);
    }

    /// The ring holds bars from 1,000 on; 64 of them match the request unless said.
    #[rstest]
    #[case::warm_up_of_1000(req(None, None, 1000), 64, Some((None, 999, Some(936))))]
    #[case::a_refill_inside_the_ring(req(Some(1200), None, 0), 10, None)]
    #[case::a_range_reaching_back(req(Some(500), Some(2000), 0), 64, Some((Some(500), 999, None)))]
    #[case::a_range_ending_before_the_ring(req(Some(100), Some(400), 0), 0, Some((Some(100), 400, None)))]
    #[case::few_newest(req(None, None, 20), 20, None)]
    #[case::no_bound(req(None, None, 0), 64, Some((None, 999, Some(936))))]
    fn what_comes_from_the_store(
        #[case] r: HistoryRequest,
        #[case] in_ring: usize,
        #[case] want: Option<(Option<i64>, i64, Option<usize>)>,
    ) {
        let got = store_part(&r, Some(1000), in_ring, Some(1000));
        assert_eq!(
            got,
            want.map(|(start_ms, end_ms, limit)| StorePart {
                start_ms,
                end_ms,
                limit
            })
        );
    }

    #[test]
    fn an_empty_ring_needs_nothing_from_the_store() {
        assert_eq!(
            store_part(&req(None, None, 1000), None, 0, Some(1000)),
            None
        );
    }

    /// A store that does not hold the series (a failed write, bars of a faster run's
    /// later time): the ring, which then keeps `history_bars`, answers counts alone.
    #[test]
    fn a_store_that_does_not_hold_the_series_serves_ranges_only() {
        assert_eq!(
            store_part(&req(None, None, 1000), Some(1000), 64, None),
            None
        );
        assert_eq!(
            store_part(&req(Some(10), None, 0), Some(1000), 64, None),
            Some(StorePart {
                start_ms: Some(10),
                end_ms: 999,
                limit: None
            })
        );
    }
}
