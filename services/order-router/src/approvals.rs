//! The risk manager's approvals, asked for a burst's intents together: every intent that
//! needs an approval comes here, and whatever is ready goes to the risk manager in one
//! `ApproveMany` round trip, which judges them in the risk rules' order
//! (`shardbot_risk::judging_order`: exits first, then entries by symbol). One batch is in
//! flight at a time; the intents that arrive meanwhile make the next one.
//!
//! Exits, and intents no worker shard marked, are ready at once. A shard's entries wait
//! with their bar close ([`Closes`]) until no entry ranked before them can still come:
//! at once when the limits' room holds them and every entry the close may still bring
//! (the usual case), otherwise until the close's shards have decided it and their entries
//! have arrived, so that when a limit cuts a close, the entries that win are the ones the
//! backtest picks; `router.close_wait_ms` bounds the wait for a shard that went silent.

use std::time::{Duration, Instant};

use shardbot_bus::Requester;
use shardbot_protocol::{CloseProgress, OrderIntent, RiskReply, RiskRequest};
use tokio::sync::{mpsc, oneshot};

use crate::closes::{Closes, Release, Why};

/// A risk manager's answer for one intent: its reply, or why there is none.
pub type Answer = Result<RiskReply, String>;

#[derive(Debug)]
enum Msg {
    Ask(OrderIntent, oneshot::Sender<Answer>),
    Progress(CloseProgress),
}

/// The handle attempts ask approvals through (cheap to clone).
#[derive(Debug, Clone)]
pub struct Approvals {
    tx: mpsc::UnboundedSender<Msg>,
}

const STOPPED: &str = "the router's approval loop has stopped";

impl Approvals {
    /// Starts the loop on `runtime` (the order path's); `close_wait` is
    /// `router.close_wait_ms`.
    pub fn start(
        risk: Requester,
        close_wait: Duration,
        runtime: &tokio::runtime::Handle,
    ) -> Approvals {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(risk, close_wait, rx));
        Approvals { tx }
    }

    /// The risk manager's decision on `intent` (`RiskReply::Decision`), or why it did not
    /// answer.
    pub async fn approve(&self, intent: OrderIntent) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Ask(intent, reply))
            .map_err(|_| STOPPED.to_owned())?;
        answer.await.map_err(|_| STOPPED.to_owned())?
    }

    /// A worker shard's progress through a bar close.
    pub fn progress(&self, p: CloseProgress) -> Result<(), String> {
        self.tx
            .send(Msg::Progress(p))
            .map_err(|_| STOPPED.to_owned())
    }
}

async fn run(risk: Requester, close_wait: Duration, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut closes: Closes<oneshot::Sender<Answer>> = Closes::new(close_wait);
    // Entries the risk manager's limits still hold room for, as it last said (`None`: not
    // said yet, or beyond what it can count: ask).
    let mut room: Option<u32> = None;
    let mut ready: Vec<(OrderIntent, oneshot::Sender<Answer>)> = Vec::new();
    loop {
        let first = match closes.deadline() {
            Some(at) => tokio::select! {
                m = rx.recv() => m.map(Some),
                () = tokio::time::sleep_until(at.into()) => Some(None),
            },
            None => rx.recv().await.map(Some),
        };
        let Some(first) = first else { return };
        let mut take = |m: Msg, ready: &mut Vec<_>| match m {
            Msg::Ask(intent, reply) if intent.waits_for_its_close() => {
                closes.hold(intent, reply, Instant::now());
            }
            Msg::Ask(intent, reply) => ready.push((intent, reply)),
            Msg::Progress(p) => closes.report(&p, Instant::now()),
        };
        if let Some(m) = first {
            take(m, &mut ready);
        }
        while let Ok(m) = rx.try_recv() {
            take(m, &mut ready);
        }
        let release = closes.release(Instant::now(), room);
        if ready.is_empty() && release.is_none() {
            continue;
        }
        let batch = std::mem::take(&mut ready);
        if let Some(r) = &release {
            match r.why {
                Why::Waited { to_come } => tracing::warn!(
                    interval = %r.key.0,
                    bar_open_ms = r.key.1,
                    entries = r.asks.len(),
                    to_come = ?to_come,
                    waited_ms = close_wait.as_millis(),
                    "a bar close's entries judged before every shard decided it (a worker silent, or a bar lost): the order of its entries may not be the backtest's"
                ),
                Why::Complete => tracing::info!(
                    interval = %r.key.0,
                    bar_open_ms = r.key.1,
                    entries = r.asks.len(),
                    waited_ms = r.since.elapsed().as_millis(),
                    "a bar close's entries judged together, every shard having decided it"
                ),
                Why::Room { .. } => {}
            }
        }
        room = ask(&risk, batch, release, &mut closes).await.or(room);
    }
}

/// Asks the risk manager for `batch` and `release`'s entries in one round trip and hands
/// every answer on; entries the risk manager held go back to their close. Returns the
/// room the risk manager reported.
async fn ask(
    risk: &Requester,
    batch: Vec<(OrderIntent, oneshot::Sender<Answer>)>,
    release: Option<Release<oneshot::Sender<Answer>>>,
    closes: &mut Closes<oneshot::Sender<Answer>>,
) -> Option<u32> {
    let unless_room_short_of = match release.as_ref().map(|r| r.why) {
        Some(Why::Room { before }) => Some(before),
        _ => None,
    };
    let mut intents: Vec<OrderIntent> = batch.iter().map(|(i, _)| i.clone()).collect();
    if let Some(r) = &release {
        intents.extend(r.asks.iter().map(|(i, _)| i.clone()));
    }
    let n = intents.len();
    let answered = match risk
        .request_async::<_, RiskReply>(RiskRequest::ApproveMany {
            intents,
            unless_room_short_of,
        })
        .await
    {
        Ok(RiskReply::Decisions {
            decisions,
            room,
            held,
        }) if decisions.len() == n => Ok((decisions, room, held)),
        Ok(other) => Err(format!("unexpected answer to {n} approvals: {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    let (decisions, room, held) = match answered {
        Ok(a) => a,
        Err(why) => {
            let held = release.into_iter().flat_map(|r| r.asks);
            for (_, reply) in batch.into_iter().chain(held) {
                let _ = reply.send(Err(why.clone()));
            }
            return None;
        }
    };
    let mut decisions = decisions.into_iter();
    for ((intent, reply), decision) in batch.into_iter().zip(decisions.by_ref()) {
        hand_on(risk, intent, reply, decision);
    }
    if let Some(mut r) = release {
        if held {
            closes.put_back(r);
        } else {
            for ((intent, reply), decision) in
                std::mem::take(&mut r.asks).into_iter().zip(decisions)
            {
                hand_on(risk, intent, reply, decision);
            }
        }
    }
    room
}

fn hand_on(
    risk: &Requester,
    intent: OrderIntent,
    reply: oneshot::Sender<Answer>,
    decision: Option<shardbot_protocol::RiskDecision>,
) {
    match decision {
        Some(d) => {
            let _ = reply.send(Ok(RiskReply::Decision(d)));
        }
        // Not judged yet (a reversal's entry waiting for its exit): asked alone, where the
        // risk manager answers once it can.
        None => {
            let risk = risk.clone();
            tokio::spawn(async move {
                let answer = risk
                    .request_async::<_, RiskReply>(RiskRequest::Approve(intent))
                    .await
                    .map_err(|e| e.to_string());
                let _ = reply.send(answer);
            });
        }
    }
}
