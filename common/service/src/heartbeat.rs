//! The heartbeat every process publishes on its own endpoint.

use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use shardbot_bus::Publisher;
use shardbot_protocol::{Heartbeat, ServiceState, now_ms};

use crate::Metrics;

/// Publishes a [`Heartbeat`] every interval; owns the process's heartbeat publisher.
#[derive(Debug)]
pub struct HeartbeatActor {
    publisher: Publisher,
    beat: Heartbeat,
    interval: Duration,
    metrics: Metrics,
}

impl HeartbeatActor {
    /// `metrics` are read at every beat and published with it.
    pub fn new(
        publisher: Publisher,
        service: &str,
        instance: &str,
        interval: Duration,
        metrics: Metrics,
    ) -> Self {
        let started_ms = now_ms();
        HeartbeatActor {
            publisher,
            beat: Heartbeat {
                service: service.to_owned(),
                instance: instance.to_owned(),
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_ms,
                now_ms: started_ms,
                state: ServiceState::Starting,
                metrics: Default::default(),
                links: Vec::new(),
            },
            interval,
            metrics,
        }
    }

    fn beat(&mut self) {
        self.beat.now_ms = now_ms();
        self.beat.metrics = self.metrics.read();
        self.beat.links = shardbot_bus::links();
        if let Err(e) = self.publisher.publish(&self.beat) {
            tracing::warn!(error = %e, "heartbeat not published");
        }
    }
}

impl Actor for HeartbeatActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.beat();
        ctx.run_interval(self.interval, |act, _| act.beat());
    }
}

/// Changes the state reported from the next beat on (published at once).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetState(pub ServiceState);

impl Handler<SetState> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: SetState, _ctx: &mut Context<Self>) {
        if self.beat.state != msg.0 {
            tracing::info!(state = ?msg.0, "service state");
        }
        self.beat.state = msg.0;
        self.beat();
    }
}
