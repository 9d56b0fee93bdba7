//! actix adapters: a process's publisher is an actor that owns the socket and the sequence
//! numbers; subscriptions and replies are bridged from their blocking nng threads into
//! actors by messages.

use std::thread::JoinHandle;

use actix::{Actor, Context, Handler, Message, Recipient};
use shardbot_protocol::{Publish, Received};

use crate::{BusError, Publisher, Subscriber, pubsub::SubscriberCloser};

/// Owns a [`Publisher`]. Send it [`PublishMsg`] from any actor.
#[derive(Debug)]
pub struct PublisherActor {
    publisher: Publisher,
}

impl PublisherActor {
    pub fn new(publisher: Publisher) -> PublisherActor {
        PublisherActor { publisher }
    }
}

impl Actor for PublisherActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.publisher.close();
    }
}

/// Publish `0` under its own topic; answers with the sequence number it carried.
#[derive(Debug)]
pub struct PublishMsg<T>(pub T);

impl<T> Message for PublishMsg<T> {
    type Result = Result<u64, BusError>;
}

impl<T: Publish + 'static> Handler<PublishMsg<T>> for PublisherActor {
    type Result = Result<u64, BusError>;

    fn handle(&mut self, msg: PublishMsg<T>, _ctx: &mut Self::Context) -> Self::Result {
        let r = self.publisher.publish(&msg.0);
        if let Err(e) = &r {
            tracing::warn!(error = %e, url = self.publisher.url(), "publish failed");
        }
        r
    }
}

/// A decoded frame delivered to an actor by [`forward_subscription`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Inbound(pub Received);

/// Runs `subscriber`'s receive loop on its own thread and delivers every decoded frame to
/// `to`. Frames that do not decode are logged and skipped (a gap detector downstream will
/// see the missing sequence number). Stops when [`Forwarder::stop`] is called, or at the
/// first frame after the recipient is gone.
///
/// The thread waits on its socket without a timeout, and [`Forwarder::stop`] wakes it by
/// closing the socket. (It used to look up every 100 ms: with NNG 1.11 each timeout that
/// fires costs its timer thread up to a millisecond of spinning, since a timer is only
/// due once the millisecond clock has passed it; ten a second were 0.7 % of a core per
/// idle worker.)
pub fn forward_subscription(
    subscriber: Subscriber,
    to: Recipient<Inbound>,
) -> std::io::Result<Forwarder> {
    let closer = subscriber.closer();
    let thread = std::thread::Builder::new()
        .name("bus-sub".into())
        .spawn(move || {
            while to.connected() {
                match subscriber.recv(None) {
                    // `do_send`, not `try_send`: an actor's mailbox holds 16 messages by
                    // default and `try_send` fails when it is full, which would drop most
                    // of a bar-close burst. The socket's receive buffer bounds what can
                    // pile up here anyway.
                    Ok(Some(received)) => to.do_send(Inbound(received)),
                    Ok(None) => {}
                    Err(BusError::Closed) => return,
                    Err(e) => tracing::warn!(error = %e, "dropping an unreadable frame"),
                }
            }
            subscriber.close();
        })?;
    Ok(Forwarder { closer, thread })
}

/// The thread of a [`forward_subscription`]. Dropping it lets the thread run on (for the
/// life of the process); [`stop`](Forwarder::stop) ends it.
#[derive(Debug)]
pub struct Forwarder {
    closer: SubscriberCloser,
    thread: JoinHandle<()>,
}

impl Forwarder {
    /// Stops forwarding: closes the socket, which wakes the thread, and waits for it
    /// (at most the delivery of the frame in hand).
    pub fn stop(self) {
        self.closer.close();
        if self.thread.join().is_err() {
            tracing::warn!("the bus forwarding thread panicked");
        }
    }
}
