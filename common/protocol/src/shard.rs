//! Shard ownership: `--shard i/n` → the slots a worker owns.
//!
//! Slots are dealt round-robin (`slot % n == i`), so shards differ in size by at most one
//! slot and rescaling is a restart with a new `i/n`, never a code change. Indices are
//! 0-based: a stack of 4 workers runs `0/4`, `1/4`, `2/4`, `3/4`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::slot::{SLOT_COUNT, Slot};

/// One shard of `count`, 0-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    index: u16,
    count: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("shard `{0}` is not of the form i/n (for example 0/4)")]
    Syntax(String),
    #[error("shard count must be between 1 and {SLOT_COUNT}, got {0}")]
    Count(u16),
    #[error("shard index {index} is out of range for {count} shards (indices are 0..{count})")]
    Index { index: u16, count: u16 },
}

impl Shard {
    pub fn new(index: u16, count: u16) -> Result<Shard, ShardError> {
        if count == 0 || count > SLOT_COUNT {
            return Err(ShardError::Count(count));
        }
        if index >= count {
            return Err(ShardError::Index { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The single shard that owns everything.
    pub fn whole() -> Shard {
        Shard { index: 0, count: 1 }
    }

    pub fn index(self) -> u16 {
        self.index
    }

    pub fn count(self) -> u16 {
        self.count
    }

    pub fn owns(self, slot: Slot) -> bool {
        slot.get() % self.count == self.index
    }

    pub fn owns_symbol(self, symbol: &str) -> bool {
        self.owns(Slot::of(symbol))
    }

    /// The slots this shard owns, ascending.
    pub fn slots(self) -> impl Iterator<Item = Slot> {
        Slot::all().filter(move |s| self.owns(*s))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(s.to_owned());
        // "i/n", or "i-n" (the instance name the worker's heartbeat and log file carry,
        // and what a systemd template instance can hold)
        let (i, n) = s
            .split_once('/')
            .or_else(|| s.split_once('-'))
            .ok_or_else(syntax)?;
        let index = i.trim().parse::<u16>().map_err(|_| syntax())?;
        let count = n.trim().parse::<u16>().map_err(|_| syntax())?;
        Shard::new(index, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case("0/1", Ok((0, 1)))]
    #[case("3/4", Ok((3, 4)))]
    #[case(" 1 / 2 ", Ok((1, 2)))]
    #[case("2-4", Ok((2, 4)))]
    #[case("4/4", Err(ShardError::Index { index: 4, count: 4 }))]
    #[case("0/0", Err(ShardError::Count(0)))]
    #[case("0/257", Err(ShardError::Count(257)))]
    #[case("1", Err(ShardError::Syntax("1".into())))]
    #[case("a/b", Err(ShardError::Syntax("a/b".into())))]
    #[case("-1/2", Err(ShardError::Syntax("-1/2".into())))]
    fn parses_i_of_n(#[case] input: &str, #[case] expected: Result<(u16, u16), ShardError>) {
        let got = input.parse::<Shard>().map(|s| (s.index(), s.count()));
        assert_eq!(got, expected);
    }

    #[test]
    fn display_round_trips() {
        let s = Shard::new(2, 7).unwrap();
        assert_eq!(s.to_string().parse::<Shard>().unwrap(), s);
    }

    #[test]
    fn slot_7_belongs_to_shard_3_of_4() {
        let shard = "3/4".parse::<Shard>().unwrap();
        assert!(shard.owns(Slot::new(7).unwrap()));
        assert!(!shard.owns(Slot::new(8).unwrap()));
        assert_eq!(shard.slots().count(), 64);
    }

    proptest! {
        /// For any n, the n shards partition the 256 slots: each slot has exactly one owner,
        /// and shard sizes differ by at most one.
        #[test]
        fn shards_partition_the_slots(n in 1u16..=256) {
            let shards: Vec<Shard> = (0..n).map(|i| Shard::new(i, n).unwrap()).collect();
            for slot in Slot::all() {
                prop_assert_eq!(shards.iter().filter(|s| s.owns(slot)).count(), 1);
            }
            let sizes: Vec<usize> = shards.iter().map(|s| s.slots().count()).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1);
            prop_assert_eq!(sizes.iter().sum::<usize>(), usize::from(SLOT_COUNT));
        }

        /// Any symbol is owned by exactly one shard of any n.
        #[test]
        fn every_symbol_has_one_owner(symbol in "[A-Z0-9]{2,20}", n in 1u16..=64) {
            let owners = (0..n).filter(|&i| Shard::new(i, n).unwrap().owns_symbol(&symbol)).count();
            prop_assert_eq!(owners, 1);
        }
    }
}
