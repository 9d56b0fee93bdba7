//! actix adapters: a process's publisher is an actor that owns the socket and the sequence
//! numbers; subscriptions and replies are bridged from their blocking nng threads into
//! actors by messages.

use std::thread::JoinHandle;

use actix::{Actor, Context, Handler, Message, Recipient};
use shardbot_protocol::{Publish, Received};

use crate::{BusError, Publisher, Subscriber, pubsub::SocketCloser};

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
/// see the missing sequence number). Stops when the subscriber is closed through the
/// returned closer or the recipient is gone.
pub fn forward_subscription(
    subscriber: Subscriber,
    to: Recipient<Inbound>,
) -> std::io::Result<(SocketCloser, JoinHandle<()>)> {
    let closer = subscriber.closer();
    let handle = std::thread::Builder::new()
        .name("bus-sub".into())
        .spawn(move || {
            loop {
                match subscriber.recv(None) {
                    Ok(Some(received)) => {
                        if !to.connected() {
                            return;
                        }
                        // `do_send`, not `try_send`: an actor's mailbox holds 16 messages
                        // by default and `try_send` fails when it is full, which would drop
                        // most of a bar-close burst. The socket's receive buffer bounds
                        // what can pile up here anyway.
                        to.do_send(Inbound(received));
                    }
                    Ok(None) => {}
                    Err(BusError::Closed) => return,
                    Err(e) => tracing::warn!(error = %e, "dropping an unreadable frame"),
                }
            }
        })?;
    Ok((closer, handle))
}
