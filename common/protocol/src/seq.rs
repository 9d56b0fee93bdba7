//! Sequence stamping (publisher side) and gap detection (subscriber side).
//!
//! PUB/SUB drops silently when a reader is slow, so every published frame carries a
//! per-topic sequence number and the publisher's epoch. A subscriber feeds each frame to a
//! [`GapDetector`], which says whether it is in order, a repeat, or follows a gap (and which
//! sequence numbers are missing), so the subscriber can refill over REQ/REP.

use std::collections::HashMap;

/// Publisher side: the next sequence number of each topic. Starts at 1.
#[derive(Debug, Default)]
pub struct SeqStamper {
    next: HashMap<String, u64>,
}

impl SeqStamper {
    pub fn new() -> SeqStamper {
        SeqStamper::default()
    }

    /// The sequence number to stamp on the next frame of `topic`.
    pub fn next(&mut self, topic: &str) -> u64 {
        if let Some(n) = self.next.get_mut(topic) {
            *n += 1;
            *n
        } else {
            self.next.insert(topic.to_owned(), 1);
            1
        }
    }

    /// The last sequence number stamped on `topic`, if any.
    pub fn last(&self, topic: &str) -> Option<u64> {
        self.next.get(topic).copied()
    }
}

/// What a frame's sequence number says about the stream it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// The first frame seen on this topic. Whatever came before it was not seen; the
    /// subscriber warms up from history rather than treating this as a gap.
    First { seq: u64 },
    /// Exactly the next one.
    InOrder,
    /// Frames `from..=to` were lost.
    Gap { from: u64, to: u64 },
    /// Already seen (or older than what was seen): ignore it.
    Duplicate,
    /// The publisher restarted (new epoch). Frames at the end of the old epoch may have been
    /// lost and the new epoch is followed from `seq`; the subscriber resyncs from history.
    Restarted { seq: u64 },
}

impl SeqCheck {
    /// Whether the subscriber should refill from the publisher's history.
    pub fn needs_refill(self) -> bool {
        matches!(self, SeqCheck::Gap { .. } | SeqCheck::Restarted { .. })
    }
}

/// Subscriber side: last (epoch, seq) seen per topic.
#[derive(Debug, Default)]
pub struct GapDetector {
    last: HashMap<String, (u64, u64)>,
}

impl GapDetector {
    pub fn new() -> GapDetector {
        GapDetector::default()
    }

    /// Records a frame and classifies it.
    pub fn observe(&mut self, topic: &str, epoch: u64, seq: u64) -> SeqCheck {
        let Some(entry) = self.last.get_mut(topic) else {
            self.last.insert(topic.to_owned(), (epoch, seq));
            return SeqCheck::First { seq };
        };
        let (last_epoch, last_seq) = *entry;
        if epoch < last_epoch {
            // A straggler from a publisher run that has since been replaced.
            return SeqCheck::Duplicate;
        }
        if epoch > last_epoch {
            *entry = (epoch, seq);
            return SeqCheck::Restarted { seq };
        }
        if seq <= last_seq {
            return SeqCheck::Duplicate;
        }
        entry.1 = seq;
        if seq == last_seq + 1 {
            SeqCheck::InOrder
        } else {
            SeqCheck::Gap {
                from: last_seq + 1,
                to: seq - 1,
            }
        }
    }

    /// Declares that everything up to `seq` of `epoch` on `topic` is known (e.g. after a
    /// history refill answered with `last_seq`), so the next live frame is checked against it.
    pub fn resume_at(&mut self, topic: &str, epoch: u64, seq: u64) {
        match self.last.get_mut(topic) {
            Some(e) if (epoch, seq) <= *e => {}
            Some(e) => *e = (epoch, seq),
            None => {
                self.last.insert(topic.to_owned(), (epoch, seq));
            }
        }
    }

    /// Forgets a topic (e.g. when the symbol leaves this shard).
    pub fn forget(&mut self, topic: &str) {
        self.last.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stamper_counts_per_topic_from_one() {
        let mut s = SeqStamper::new();
        assert_eq!(s.last("a"), None);
        assert_eq!(s.next("a"), 1);
        assert_eq!(s.next("a"), 2);
        assert_eq!(s.next("b"), 1);
        assert_eq!(s.next("a"), 3);
        assert_eq!(s.last("a"), Some(3));
    }

    #[test]
    fn classifies_a_stream() {
        let mut g = GapDetector::new();
        assert_eq!(g.observe("t", 10, 5), SeqCheck::First { seq: 5 });
        assert_eq!(g.observe("t", 10, 6), SeqCheck::InOrder);
        assert_eq!(g.observe("t", 10, 9), SeqCheck::Gap { from: 7, to: 8 });
        assert_eq!(g.observe("t", 10, 8), SeqCheck::Duplicate);
        assert_eq!(g.observe("t", 10, 9), SeqCheck::Duplicate);
        assert_eq!(g.observe("t", 10, 10), SeqCheck::InOrder);
        // other topics are independent
        assert_eq!(g.observe("u", 10, 1), SeqCheck::First { seq: 1 });
        // publisher restart
        assert_eq!(g.observe("t", 11, 1), SeqCheck::Restarted { seq: 1 });
        assert_eq!(g.observe("t", 10, 11), SeqCheck::Duplicate);
        assert_eq!(g.observe("t", 11, 2), SeqCheck::InOrder);
        assert!(SeqCheck::Gap { from: 1, to: 1 }.needs_refill());
        assert!(!SeqCheck::InOrder.needs_refill());
    }

    #[test]
    fn resume_after_refill() {
        let mut g = GapDetector::new();
        g.observe("t", 1, 3);
        assert_eq!(g.observe("t", 1, 7), SeqCheck::Gap { from: 4, to: 6 });
        // a refill that returns older data must not move the cursor back
        g.resume_at("t", 1, 5);
        assert_eq!(g.observe("t", 1, 8), SeqCheck::InOrder);
        g.resume_at("t", 1, 20);
        assert_eq!(g.observe("t", 1, 21), SeqCheck::InOrder);
        g.forget("t");
        assert_eq!(g.observe("t", 1, 22), SeqCheck::First { seq: 22 });
    }

    proptest! {
        /// Whatever subset of a stream arrives (in order), the gaps reported plus the
        /// frames received account for every sequence number after the first one received.
        #[test]
        fn gaps_account_for_every_lost_frame(kept in proptest::collection::vec(any::<bool>(), 1..300)) {
            let mut stamper = SeqStamper::new();
            let mut det = GapDetector::new();
            let mut first = None;
            let mut last = 0;
            let mut accounted = 0u64;
            for keep in kept {
                let seq = stamper.next("t");
                if !keep { continue; }
                match det.observe("t", 1, seq) {
                    SeqCheck::First { seq } => first = Some(seq),
                    SeqCheck::InOrder => accounted += 1,
                    SeqCheck::Gap { from, to } => {
                        prop_assert_eq!(from, last + 1);
                        prop_assert_eq!(to, seq - 1);
                        accounted += 1 + (to - from + 1);
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
                last = seq;
            }
            if let Some(f) = first {
                prop_assert_eq!(accounted, last - f);
            }
        }
    }
}
