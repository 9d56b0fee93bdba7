//! Intents: what a strategy decided on a closed bar ([`OrderIntent`], [`IntentAction`]),
//! and their deterministic ids.
//!
//! The same bar, strategy, symbol and action always produce the same id, in every process
//! and build, so a resent or replayed intent is recognised by the router instead of opening
//! a second order. The order link id sent to Bybit derives from it.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    shard::Shard,
    types::{BarStamps, Interval, Side, Symbol, TimestampMs},
};

/// What a strategy wants done with a symbol's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IntentAction {
    /// Open (or add to nothing: one position per symbol) a position on `side`.
    Enter { side: Side },
    /// Close the whole position, reduce-only.
    Exit,
}

impl IntentAction {
    /// Stable spelling used in intent-id derivation. Never change it.
    pub fn id_tag(self) -> &'static str {
        match self {
            IntentAction::Enter { side: Side::Buy } => "enter-buy",
            IntentAction::Enter { side: Side::Sell } => "enter-sell",
            IntentAction::Exit => "exit",
        }
    }
}

/// A strategy's decision on a closed bar, sent from a worker to the router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderIntent {
    pub intent_id: IntentId,
    pub strategy: String,
    pub symbol: Symbol,
    pub interval: Interval,
    /// Open time of the bar whose close produced the intent.
    pub bar_open_time_ms: TimestampMs,
    pub action: IntentAction,
    /// The bar's close: the price sizing and SL/TP distances refer to.
    pub reference_price: Decimal,
    #[serde(default)]
    pub stop_loss: Option<Decimal>,
    #[serde(default)]
    pub take_profit: Option<Decimal>,
    /// The worker's decision (its local clock).
    pub created_ms: TimestampMs,
    /// The bar's way to the worker ([`BarStamps`]): with `created_ms` and the router's own
    /// stamps, the intent's stages from the exchange's close to its fill.
    #[serde(default)]
    pub bar_stamps: BarStamps,
    /// The worker shard that decided it on its bar's arrival (a live close), which reports
    /// the close's progress ([`CloseProgress`]): the router holds such an entry until no
    /// entry ranked before it can still come, so a limit cuts a close the way the backtest
    /// does. `None` (a refill, a tool): judged as it arrives.
    #[serde(default)]
    pub shard: Option<Shard>,
}

/// A worker shard's progress through one bar close, sent to the router at its first bar of
/// the close and when every symbol it owns has had that bar: with them, the router knows
/// which of the close's entries can still come ([`OrderIntent::shard`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseProgress {
    pub shard: Shard,
    pub interval: Interval,
    /// Open time of the bar that closed.
    pub bar_open_time_ms: TimestampMs,
    /// How many of the shard's symbols have not had this bar yet (0: the close is decided).
    pub undecided: u32,
    /// The symbols that may still bring the router an entry of this close: those not
    /// decided yet and those an entry was sent for. Only ever shrinks from one report of a
    /// close to the next.
    pub pending: Vec<Symbol>,
}

impl OrderIntent {
    /// Builds an intent whose id is derived from its identity fields.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        strategy: impl Into<String>,
        symbol: Symbol,
        interval: Interval,
        bar_open_time_ms: TimestampMs,
        action: IntentAction,
        reference_price: Decimal,
        stop_loss: Option<Decimal>,
        take_profit: Option<Decimal>,
        created_ms: TimestampMs,
    ) -> OrderIntent {
        let strategy = strategy.into();
        let intent_id = IntentId::derive(&strategy, &symbol, interval, bar_open_time_ms, action);
        OrderIntent {
            intent_id,
            strategy,
            symbol,
            interval,
            bar_open_time_ms,
            action,
            reference_price,
            stop_loss,
            take_profit,
            created_ms,
            bar_stamps: BarStamps::default(),
            shard: None,
        }
    }

    /// This intent, with the stamps of the bar it was decided on.
    #[must_use]
    pub fn with_bar_stamps(mut self, stamps: BarStamps) -> OrderIntent {
        self.bar_stamps = stamps;
        self
    }

    /// Whether the router holds it with its bar close: an entry a worker shard decided on
    /// its bar's arrival ([`OrderIntent::shard`]). Exits never wait (they are approved
    /// whatever the order), nor do intents of a refill or a tool.
    pub fn waits_for_its_close(&self) -> bool {
        self.shard.is_some() && self.action != IntentAction::Exit
    }

    /// This intent, decided by `shard` on its bar's arrival ([`OrderIntent::shard`]).
    #[must_use]
    pub fn of_shard(mut self, shard: Shard) -> OrderIntent {
        self.shard = Some(shard);
        self
    }
}

/// 128 bits of SHA-256 over the intent's identity, as 32 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IntentId(String);

impl IntentId {
    /// Prefix of every order link id shardbot generates, so orders placed by hand are told
    /// apart at a glance.
    pub const LINK_PREFIX: &'static str = "sb-";
    /// The strategy name the journal gives the kill switch's closing orders (the router's
    /// flatten), so a trade it closed is told from one a strategy's signal closed.
    pub const KILL_SWITCH: &'static str = "kill-switch";
    /// The strategy name the journal gives the orders of a position closed by hand (the
    /// dashboard's Close, `shardbot risk close`).
    pub const MANUAL_CLOSE: &'static str = "manual-close";

    pub fn derive(
        strategy: &str,
        symbol: &Symbol,
        interval: Interval,
        bar_open_time_ms: TimestampMs,
        action: IntentAction,
    ) -> IntentId {
        // Fields are separated by a byte that cannot appear in any of them (0x1f, unit
        // separator), so ("ab","c") and ("a","bc") never collide.
        let mut h = Sha256::new();
        for part in [
            strategy.as_bytes(),
            symbol.as_str().as_bytes(),
            interval.as_str().as_bytes(),
            bar_open_time_ms.to_string().as_bytes(),
            action.id_tag().as_bytes(),
        ] {
            h.update(part);
            h.update([0x1f]);
        }
        let digest = h.finalize();
        IntentId(hex::encode(&digest[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Bybit `orderLinkId` for this intent: `sb-` + 32 hex = 35 characters, within Bybit's
    /// 36-character limit and its `[0-9A-Za-z_-]` alphabet.
    pub fn order_link_id(&self) -> String {
        format!("{}{}", Self::LINK_PREFIX, self.0)
    }
}

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    #[test]
    fn same_inputs_same_id_and_pinned_value() {
        let a = IntentId::derive(
            "trend_following",
            &sym("BTCUSDT"),
            Interval::M5,
            1_700_000_000_000,
            IntentAction::Enter { side: Side::Buy },
        );
        let b = IntentId::derive(
            "trend_following",
            &sym("BTCUSDT"),
            Interval::M5,
            1_700_000_000_000,
            IntentAction::Enter { side: Side::Buy },
        );
        assert_eq!(a, b);
        // Pinned: computed independently with Python's hashlib:
        // sha256(b"trend_following\x1fBTCUSDT\x1f5\x1f1700000000000\x1fenter-buy\x1f")
        //   .hexdigest()[:32]
        assert_eq!(a.as_str(), "9a15dd1f8c77a19a738e9aa28a2232fb");
    }

    #[test]
    fn any_field_changes_the_id() {
        let base = || {
            (
                "trend_following",
                sym("BTCUSDT"),
                Interval::M5,
                1_700_000_000_000i64,
                IntentAction::Enter { side: Side::Buy },
            )
        };
        let id = |t: (&str, Symbol, Interval, i64, IntentAction)| {
            IntentId::derive(t.0, &t.1, t.2, t.3, t.4)
        };
        let reference = id(base());
        let mut variants = vec![];
        let mut v = base();
        v.0 = "mean_reversion";
        variants.push(v);
        let mut v = base();
        v.1 = sym("ETHUSDT");
        variants.push(v);
        let mut v = base();
        v.2 = Interval::M15;
        variants.push(v);
        let mut v = base();
        v.3 += 300_000;
        variants.push(v);
        let mut v = base();
        v.4 = IntentAction::Enter { side: Side::Sell };
        variants.push(v);
        let mut v = base();
        v.4 = IntentAction::Exit;
        variants.push(v);
        for v in variants {
            assert_ne!(id(v), reference);
        }
    }

    #[test]
    fn order_link_id_fits_bybit_rules() {
        let id = IntentId::derive("x", &sym("BTCUSDT"), Interval::M1, 0, IntentAction::Exit);
        let link = id.order_link_id();
        assert!(link.len() <= 36, "{link}");
        assert!(
            link.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
