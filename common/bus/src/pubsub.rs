//! PUB/SUB: one publisher per process stream, any number of subscribers.
//!
//! Drop behaviour, which every subscriber must be written for:
//! - NNG's PUB never blocks and never reports loss. Each subscriber connection has its own
//!   send queue (`pub_send_buffer` messages); when it is full the oldest message is
//!   discarded. A slow subscriber loses messages; the others do not.
//! - Filtering by topic prefix happens in the subscriber's NNG, not the publisher: every
//!   frame travels to every subscriber, so a subscription saves decoding work only.
//! - A subscriber that connects (or reconnects) misses whatever was published meanwhile.
//!
//! Hence every frame carries a per-topic sequence number and the publisher's epoch
//! ([`GapDetector`](shardbot_protocol::GapDetector)), and nothing stateful may depend on
//! PUB/SUB being lossless: gaps are refilled over REQ/REP.

use std::time::Duration;

use serde::Serialize;
use shardbot_protocol::{
    Envelope, Publish, Received, SeqStamper, decode_frame, encode_frame, now_ns,
};

use crate::{
    BusError, BusOptions,
    error::io,
    nng::{Dialer, NngError, Protocol, Socket, opts},
    socket::{self, option},
};

/// The publishing end. Stamps each frame with the topic's next sequence number.
#[derive(Debug)]
pub struct Publisher {
    socket: Socket,
    url: String,
    epoch: u64,
    stamper: SeqStamper,
}

impl Publisher {
    /// Binds a publisher on `url`.
    pub fn bind(url: &str, opts: &BusOptions) -> Result<Publisher, BusError> {
        let s = socket::open(Protocol::Pub)?;
        s.set_int(opts::SEND_BUFFER, opts.pub_send_buffer)
            .map_err(option("PUB send buffer"))?;
        socket::listen(&s, url)?;
        Ok(Publisher {
            socket: s,
            url: url.to_owned(),
            epoch: now_ns(),
            stamper: SeqStamper::new(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// This run's epoch (its start time in ns); subscribers see a new one after a restart.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number last stamped on `topic`.
    pub fn last_seq(&self, topic: &str) -> Option<u64> {
        self.stamper.last(topic)
    }

    /// Publishes a message under its own topic; returns the sequence number it carried.
    pub fn publish<T: Publish>(&mut self, msg: &T) -> Result<u64, BusError> {
        self.publish_on(&msg.topic().to_string(), msg)
    }

    /// Publishes a value under an explicit topic (benchmarks, tests, raw tools).
    pub fn publish_on<T: Serialize>(&mut self, topic: &str, msg: &T) -> Result<u64, BusError> {
        let seq = self.stamper.next(topic);
        let env = Envelope {
            seq,
            epoch: self.epoch,
            sent_ns: now_ns(),
            msg,
        };
        let frame = encode_frame(topic, &env)?;
        self.socket.send(frame.as_slice()).map_err(io("publish"))?;
        Ok(seq)
    }

    /// Closes the socket; subscribers see the connection drop.
    pub fn close(&self) {
        self.socket.close();
    }
}

/// The subscribing end. Receives only frames whose topic starts with a subscribed prefix.
/// Meant for one receiving thread; [`Subscriber::closer`] stops it from another.
#[derive(Debug)]
pub struct Subscriber {
    socket: Socket,
    /// The dialers of [`Subscriber::dial_also`], by URL, so that they can hang up.
    extra: std::sync::Mutex<std::collections::HashMap<String, Dialer>>,
}

impl Subscriber {
    /// Dials every publisher in `urls`; frames from all of them arrive on this subscriber.
    pub fn dial<S: AsRef<str>>(urls: &[S], opts: &BusOptions) -> Result<Subscriber, BusError> {
        let s = socket::open(Protocol::Sub)?;
        s.set_int(opts::RECV_BUFFER, opts.sub_recv_buffer)
            .map_err(option("SUB receive buffer"))?;
        for url in urls {
            socket::dial(&s, url.as_ref(), opts)?;
        }
        Ok(Subscriber {
            socket: s,
            extra: Default::default(),
        })
    }

    /// Dials one more publisher (nothing if it is dialled already by this method), for a
    /// subscriber whose publishers come and go: see [`Subscriber::hang_up`].
    pub fn dial_also(&self, url: &str, opts: &BusOptions) -> Result<(), BusError> {
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        if !extra.contains_key(url) {
            extra.insert(url.to_owned(), socket::dialer(&self.socket, url, opts)?);
        }
        Ok(())
    }

    /// Stops dialling a publisher of [`Subscriber::dial_also`] (one that went away: its
    /// dialer would otherwise redial for ever).
    pub fn hang_up(&self, url: &str) {
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = extra.remove(url) {
            d.close();
            crate::links::forget(&d);
        }
    }

    /// The URLs dialled with [`Subscriber::dial_also`].
    pub fn dialled(&self) -> Vec<String> {
        let extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        extra.keys().cloned().collect()
    }

    /// Subscribes to every topic starting with `prefix` (`b""` subscribes to everything).
    pub fn subscribe(&self, prefix: impl AsRef<[u8]>) -> Result<(), BusError> {
        self.socket
            .subscribe(prefix.as_ref())
            .map_err(option("subscription"))
    }

    pub fn unsubscribe(&self, prefix: impl AsRef<[u8]>) -> Result<(), BusError> {
        self.socket
            .unsubscribe(prefix.as_ref())
            .map_err(option("unsubscription"))
    }

    /// Waits for the next raw frame; `Ok(None)` when `timeout` passes first.
    pub fn recv_frame(&self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>, BusError> {
        self.socket
            .set_ms(opts::RECV_TIMEOUT, timeout)
            .map_err(option("receive timeout"))?;
        match self.socket.recv() {
            Ok(msg) => Ok(Some(msg)),
            Err(NngError::TIMED_OUT) => Ok(None),
            Err(e) => Err(io("receive")(e)),
        }
    }

    /// Waits for the next frame and decodes it by its topic.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Option<Received>, BusError> {
        match self.recv_frame(timeout)? {
            Some(frame) => Ok(Some(decode_frame(&frame)?)),
            None => Ok(None),
        }
    }

    /// Closes the socket; a receive under way on another thread ends with
    /// [`BusError::Closed`].
    pub fn close(&self) {
        self.socket.close();
    }

    /// A handle that closes this subscriber's socket from another thread (a receive
    /// under way there ends with [`BusError::Closed`]).
    pub fn closer(&self) -> SubscriberCloser {
        SubscriberCloser(self.socket.clone())
    }
}

/// Closes a [`Subscriber`]'s socket from another thread ([`Subscriber::closer`]).
#[derive(Debug, Clone)]
pub struct SubscriberCloser(Socket);

impl SubscriberCloser {
    pub fn close(&self) {
        self.0.close();
    }
}
