//! The risk manager's approvals, asked for a burst's intents together: every intent that
//! needs an approval comes here, and whatever is ready goes to the risk manager in one
//! `ApproveMany` round trip, which judges them in the risk rules' order
//! (`shardbot_risk::judging_order`: exits first, then entries by symbol). One batch is in
//! flight at a time; the intents that arrive meanwhile make the next one.
//!
//! Exits, and intents no worker shard marked, are ready at once. A shard's entries are
//! held with their bar close ([`Closes`]) and decided as soon as what is still to come of
//! the close cannot change their decision, so that when a limit cuts a close, the entries
//! that win are the ones the backtest picks; `router.close_wait_ms` bounds the wait for a
//! shard that went silent.

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
    /// `router.close_wait_ms`, `held_at_most` the most entries held at once
    /// ([`Closes::new`]).
    pub fn start(
        risk: Requester,
        close_wait: Duration,
        held_at_most: usize,
        runtime: &tokio::runtime::Handle,
    ) -> Approvals {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(risk, Closes::new(close_wait, held_at_most), rx));
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

async fn run(
    risk: Requester,
    mut closes: Closes<oneshot::Sender<Answer>>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let close_wait = closes.wait();
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
        // Every close with news goes, each in its own round trip, the ready intents with
        // the first.
        loop {
            let release = closes.release(Instant::now());
            if ready.is_empty() && release.is_none() {
                break;
            }
            if let Some(r) = &release {
                log_release(r, close_wait);
            }
            ask(&risk, std::mem::take(&mut ready), release, &mut closes).await;
        }
    }
}

fn log_release<T>(r: &Release<T>, close_wait: Duration) {
    match r.why {
        Why::Waited { to_come } => tracing::warn!(
            interval = %r.key.0,
            bar_open_ms = r.key.1,
            entries = r.asks.len(),
            to_come = ?to_come,
            waited_ms = close_wait.as_millis(),
            "a bar close's entries judged before every shard decided it (a worker silent, or a bar lost): the order of its entries may not be the backtest's"
        ),
        Why::Full => tracing::warn!(
            interval = %r.key.0,
            bar_open_ms = r.key.1,
            entries = r.asks.len(),
            "a bar close's entries judged before it was complete: the router holds as many as it can (a close of more undecided entries than its request slots): the order of its entries may not be the backtest's"
        ),
        Why::Complete => tracing::info!(
            interval = %r.key.0,
            bar_open_ms = r.key.1,
            entries = r.asks.len(),
            waited_ms = r.since.elapsed().as_millis(),
            "a bar close's undecided entries judged together, every shard having decided it"
        ),
        Why::Partial { .. } => {}
    }
}

/// Asks the risk manager for `batch` and `release`'s entries in one round trip and hands
/// every answer on; the entries a partial judgement left undecided go back to their close.
async fn ask(
    risk: &Requester,
    batch: Vec<(OrderIntent, oneshot::Sender<Answer>)>,
    release: Option<Release<oneshot::Sender<Answer>>>,
    closes: &mut Closes<oneshot::Sender<Answer>>,
) {
    let mut intents: Vec<OrderIntent> = batch.iter().map(|(i, _)| i.clone()).collect();
    let mut to_come_before = None;
    if let Some(r) = &release {
        intents.extend(r.asks.iter().map(|(i, _)| i.clone()));
        if let Why::Partial { before } = &r.why {
            // The batch's intents do not wait for a close: their figure is not read.
            to_come_before = Some([vec![0; batch.len()], before.clone()].concat());
        }
    }
    let partial = to_come_before.is_some();
    let n = intents.len();
    let answered = match risk
        .request_async::<_, RiskReply>(RiskRequest::ApproveMany {
            intents,
            to_come_before,
        })
        .await
    {
        Ok(RiskReply::Decisions { decisions }) if decisions.len() == n => Ok(decisions),
        Ok(other) => Err(format!("unexpected answer to {n} approvals: {other:?}")),
        Err(e) => Err(e.to_string()),
    };
    let decisions = match answered {
        Ok(d) => d,
        Err(why) => {
            let held = release.into_iter().flat_map(|r| r.asks);
            for (_, reply) in batch.into_iter().chain(held) {
                let _ = reply.send(Err(why.clone()));
            }
            return;
        }
    };
    let mut decisions = decisions.into_iter();
    for ((intent, reply), decision) in batch.into_iter().zip(decisions.by_ref()) {
        hand_on(risk, intent, reply, decision);
    }
    if let Some(r) = release {
        let asked = r.asks.len();
        let mut undecided = Vec::new();
        for ((intent, reply), decision) in r.asks.into_iter().zip(decisions) {
            match decision {
                None if partial => undecided.push((intent, reply)),
                decision => hand_on(risk, intent, reply, decision),
            }
        }
        if partial {
            tracing::info!(
                interval = %r.key.0,
                bar_open_ms = r.key.1,
                decided = asked - undecided.len(),
                waiting = undecided.len(),
                "a bar close's entries judged as far as what may still come allows"
            );
        }
        closes.put_back(r.key, undecided, r.since);
    }
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
