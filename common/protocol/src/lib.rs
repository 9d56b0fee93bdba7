//! Everything that crosses a shardbot process boundary: the typed messages, the topic
//! scheme, the stable symbol → slot hash, shard ownership, frames, and sequence-gap
//! detection. See `DESIGN.md` §2 and `docs/architecture.md`, "Wire format".

mod bars;
mod frame;
mod intent;
mod messages;
mod number;
mod seq;
mod shard;
mod slot;
mod topic;
mod types;

pub use bars::{BarSequencer, Filled, Offer};
pub use frame::{
    Envelope, Event, FrameError, Received, decode, decode_frame, encode, encode_frame, split_frame,
};
pub use intent::{CloseProgress, IntentAction, IntentId, OrderIntent};
pub use messages::*;
pub use number::{TickGrid, on_scale, price_on_tick, round_half_away, scaled_decimal};
pub use seq::{GapDetector, SeqCheck, SeqStamper};
pub use shard::{Shard, ShardError};
pub use slot::{SLOT_COUNT, Slot, fnv1a64};
pub use topic::{TOPIC_END, Topic, TopicError, TopicKind, valid_name};
pub use types::{BarStamps, Interval, IntervalError, Side, Symbol, SymbolError, TimestampMs};

/// Unix time in milliseconds, from the system clock (0 if the clock is before 1970).
pub fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix time in nanoseconds, from the system clock (0 if the clock is before 1970).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
