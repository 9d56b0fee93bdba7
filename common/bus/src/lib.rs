//! shardbot's message bus over NNG 1.11 (its safe layer: the `nng` module, the only
//! `unsafe` of the workspace): PUB/SUB for streams, REQ/REP for questions.
//!
//! Endpoints are URLs from configuration: `ipc:///path` on one machine, `tcp://host:port`
//! across machines. Publishers and repliers listen; subscribers and requesters dial and
//! redial with backoff, so processes can start and restart in any order.
//!
//! See [`pubsub`] for the drop behaviour of PUB/SUB and [`BusOptions`] for the socket
//! options set and why.

mod actors;
mod error;
mod handoff;
pub mod ipc;
mod links;
mod nng;
mod options;
pub mod pubsub;
pub mod reqrep;
mod socket;

pub use actors::{Forwarder, Inbound, PublishMsg, PublisherActor, forward_subscription};
pub use error::BusError;
pub use handoff::{ReplyTo, Unanswered, ask_actor, ask_actor_async};
pub use links::links;
pub use options::{BusOptions, validate_url};
pub use pubsub::{Publisher, Subscriber};
pub use reqrep::{Replier, Requester};
