//! Frames: `topic bytes ‖ TOPIC_END ‖ MessagePack(Envelope)`.
//!
//! The body is MessagePack with named fields (`rmp_serde::to_vec_named`): about 2× the
//! decode cost of the positional form (≈150 ns vs ≈80 ns for a bar), which is nothing next
//! to a ~150 µs bus hop, and it lets fields be added with `#[serde(default)]` without
//! breaking a process that runs an older build during a rolling restart.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    messages::{
        BalanceSnapshot, Bar, Fill, Heartbeat, OrderEvent, PositionSnapshot, RiskStatus, Ticker,
    },
    topic::{TOPIC_END, Topic, TopicError, TopicKind},
};

/// The body of every published frame: the message plus the publisher's sequence stamp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Per-topic sequence number, starting at 1 for each topic in each publisher epoch.
    pub seq: u64,
    /// Identifies one run of the publisher (its start time in ns). A new epoch means the
    /// publisher restarted and its sequence numbers started again.
    pub epoch: u64,
    /// Unix time in ns when the frame was sent; subscribers use it to measure bus lag.
    pub sent_ns: u64,
    pub msg: T,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame has no topic terminator")]
    NoTopic,
    #[error("frame topic is not ASCII")]
    TopicNotAscii,
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: rmp_serde::encode::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: rmp_serde::decode::Error,
    },
}

/// Encodes any serialisable value as named MessagePack.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, FrameError> {
    rmp_serde::to_vec_named(value).map_err(|source| FrameError::Encode { what, source })
}

/// Decodes a MessagePack value.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(bytes).map_err(|source| FrameError::Decode { what, source })
}

/// Builds a frame from a topic string and an envelope.
pub fn encode_frame<T: Serialize>(topic: &str, env: &Envelope<T>) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(topic.len() + 1 + 128);
    out.extend_from_slice(topic.as_bytes());
    out.push(TOPIC_END);
    rmp_serde::encode::write_named(&mut out, env).map_err(|source| FrameError::Encode {
        what: "envelope",
        source,
    })?;
    Ok(out)
}

/// Splits a frame into its topic and its MessagePack body.
pub fn split_frame(frame: &[u8]) -> Result<(&str, &[u8]), FrameError> {
    let end = frame
        .iter()
        .position(|&b| b == TOPIC_END)
        .ok_or(FrameError::NoTopic)?;
    let topic = std::str::from_utf8(&frame[..end]).map_err(|_| FrameError::TopicNotAscii)?;
    if !topic.is_ascii() {
        return Err(FrameError::TopicNotAscii);
    }
    Ok((topic, &frame[end + 1..]))
}

/// Any published message, decoded according to its topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Bar(Bar),
    Ticker(Ticker),
    Order(OrderEvent),
    Fill(Fill),
    Positions(PositionSnapshot),
    Balance(BalanceSnapshot),
    Risk(RiskStatus),
    Heartbeat(Heartbeat),
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub topic: Topic,
    pub seq: u64,
    pub epoch: u64,
    pub sent_ns: u64,
    pub event: Event,
}

fn open<T: DeserializeOwned>(
    what: &'static str,
    body: &[u8],
    wrap: fn(T) -> Event,
) -> Result<(u64, u64, u64, Event), FrameError> {
    let env: Envelope<T> = decode(what, body)?;
    Ok((env.seq, env.epoch, env.sent_ns, wrap(env.msg)))
}

/// Decodes a whole frame: parses the topic, then the body as the message that topic carries.
pub fn decode_frame(frame: &[u8]) -> Result<Received, FrameError> {
    let (topic_str, body) = split_frame(frame)?;
    let topic = Topic::parse(topic_str)?;
    let (seq, epoch, sent_ns, event) = match topic.kind() {
        TopicKind::Bar => open("bar", body, Event::Bar)?,
        TopicKind::Ticker => open("ticker", body, Event::Ticker)?,
        TopicKind::Order => open("order event", body, Event::Order)?,
        TopicKind::Fill => open("fill", body, Event::Fill)?,
        TopicKind::Positions => open("position snapshot", body, Event::Positions)?,
        TopicKind::Balance => open("balance snapshot", body, Event::Balance)?,
        TopicKind::Risk => open("risk status", body, Event::Risk)?,
        TopicKind::Heartbeat => open("heartbeat", body, Event::Heartbeat)?,
    };
    Ok(Received {
        topic,
        seq,
        epoch,
        sent_ns,
        event,
    })
}
