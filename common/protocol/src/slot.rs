//! Symbol → slot mapping.
//!
//! Every process must map a symbol to the same slot, in every build, forever: the slot is
//! part of the topic (`bar.<slot>.<SYMBOL>...`), and a worker subscribes by slot. Rust's
//! `DefaultHasher` is explicitly unstable across releases, so the hash is spelled out here:
//! 64-bit FNV-1a over the symbol's bytes, reduced modulo [`SLOT_COUNT`].
//!
//! FNV-1a is written out rather than taken from a crate on purpose: the function is a wire
//! contract, five lines long, and a dependency upgrade must never be able to change it.
//! The reference vectors of the FNV specification and our own slot vectors pin it in tests.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Number of slots symbols are spread over. Shards own sets of slots.
pub const SLOT_COUNT: u16 = 256;

const FNV64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = FNV64_OFFSET_BASIS;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV64_PRIME);
    }
    hash
}

/// A slot in `0..SLOT_COUNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slot(u8);

impl Slot {
    /// The slot that owns `symbol`.
    pub fn of(symbol: &str) -> Slot {
        // SLOT_COUNT is 256, so the reduction is the low byte; written as a modulo for clarity.
        Slot((fnv1a64(symbol.as_bytes()) % u64::from(SLOT_COUNT)) as u8)
    }

    /// Slot number `n`; `None` when `n >= SLOT_COUNT`.
    pub fn new(n: u16) -> Option<Slot> {
        u8::try_from(n).ok().map(Slot)
    }

    pub fn get(self) -> u16 {
        u16::from(self.0)
    }

    /// Every slot, in order.
    pub fn all() -> impl Iterator<Item = Slot> {
        (0..=u8::MAX).map(Slot)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // Reference vectors from the FNV specification (draft-eastlake-fnv, test suite).
    #[rstest]
    #[case("", 0xcbf29ce484222325)]
    #[case("a", 0xaf63dc4c8601ec8c)]
    #[case("foobar", 0x85944171f73967e8)]
    fn fnv1a64_matches_the_specification(#[case] input: &str, #[case] expected: u64) {
        assert_eq!(fnv1a64(input.as_bytes()), expected);
    }

    // Pinned slots. These values are a wire contract between processes and builds: if this
    // test fails, the change breaks every running stack and every stored topic. Values were
    // computed independently with Python:
    //   h=0xcbf29ce484222325
    //   for b in s.encode(): h=((h^b)*0x100000001b3)%2**64
    //   h%256
    #[rstest]
    #[case("BTCUSDT", 44)]
    #[case("ETHUSDT", 240)]
    #[case("SOLUSDT", 125)]
    #[case("1000PEPEUSDT", 176)]
    #[case("XRPUSDT", 209)]
    #[case("DOGEUSDT", 24)]
    fn slot_vectors_are_pinned(#[case] symbol: &str, #[case] slot: u16) {
        assert_eq!(Slot::of(symbol).get(), slot, "{symbol}");
    }

    #[test]
    fn all_yields_every_slot_once() {
        let v: Vec<u16> = Slot::all().map(Slot::get).collect();
        assert_eq!(v.len(), usize::from(SLOT_COUNT));
        assert!(v.windows(2).all(|w| w[0] + 1 == w[1]));
        assert_eq!(Slot::new(256), None);
        assert_eq!(Slot::new(255).map(Slot::get), Some(255));
    }
}
