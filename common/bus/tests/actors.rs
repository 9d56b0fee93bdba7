//! The actix adapters: an actor publishes through `PublisherActor`, another receives the
//! frames through `forward_subscription`, all inside one actix system.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use actix::{Actor, Context, Handler};
use shardbot_bus::{
    BusOptions, Inbound, PublishMsg, Publisher, PublisherActor, Subscriber, forward_subscription,
};
use shardbot_protocol::{Event, Heartbeat, ServiceState, Topic};
use tokio::sync::mpsc;

struct Collector {
    tx: mpsc::UnboundedSender<Inbound>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Inbound> for Collector {
    type Result = ();
    fn handle(&mut self, msg: Inbound, _: &mut Context<Self>) {
        self.tx.send(msg).unwrap();
    }
}

fn hb(instance: &str, state: ServiceState) -> Heartbeat {
    Heartbeat {
        service: "unit".into(),
        instance: instance.into(),
        pid: 1,
        version: "0".into(),
        started_ms: 0,
        now_ms: 0,
        state,
        metrics: Default::default(),
        links: Vec::new(),
    }
}

#[actix::test]
async fn actors_publish_and_receive_through_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ipc://{}/actors.pub", dir.path().display());
    let opts = BusOptions::default();
    let publisher = PublisherActor::new(Publisher::bind(&url, &opts).unwrap()).start();

    let sub = Subscriber::dial(&[url.as_str()], &opts).unwrap();
    // Only instance "a": the prefix filter applies through the adapter too.
    sub.subscribe(
        Topic::Heartbeat {
            service: "unit".into(),
            instance: "a".into(),
        }
        .exact_prefix(),
    )
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let collector = Collector { tx }.start();
    let forwarder = forward_subscription(sub, collector.recipient()).unwrap();

    // Handshake: publish until the first frame arrives (the subscription connects async).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never received a frame"
        );
        publisher
            .send(PublishMsg(hb("b", ServiceState::Running)))
            .await
            .unwrap()
            .unwrap();
        publisher
            .send(PublishMsg(hb("a", ServiceState::Starting)))
            .await
            .unwrap()
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
            break m.0;
        }
    };
    assert!(matches!(first.event, Event::Heartbeat(ref h) if h.instance == "a"));

    let seq = publisher
        .send(PublishMsg(hb("a", ServiceState::Stopping)))
        .await
        .unwrap()
        .unwrap();
    publisher
        .send(PublishMsg(hb("b", ServiceState::Stopping)))
        .await
        .unwrap()
        .unwrap();
    let last = loop {
        let m = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap()
            .0;
        let Event::Heartbeat(h) = &m.event else {
            panic!("{m:?}")
        };
        assert_eq!(h.instance, "a", "instance b was never subscribed");
        if h.state == ServiceState::Stopping {
            break m;
        }
    };
    assert_eq!(
        last.seq, seq,
        "the sequence number the publisher returned is the one received"
    );

    // Stops the forwarder: closing its socket wakes its thread, which ends.
    forwarder.stop();
}

/// A forwarder whose socket hears nothing (it waits without a timeout) still stops at once:
/// `stop` closes the socket under the waiting receive.
#[actix::test]
async fn a_forwarder_hearing_nothing_stops_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ipc://{}/nobody.pub", dir.path().display());
    let sub = Subscriber::dial(&[url.as_str()], &BusOptions::default()).unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let collector = Collector { tx }.start();
    let forwarder = forward_subscription(sub, collector.recipient()).unwrap();
    let (stopped, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        forwarder.stop();
        stopped.send(()).unwrap();
    });
    assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(()));
}
