//! The risk manager's approvals, asked for a burst's intents together: every intent that
//! needs an approval waits here, and whatever has gathered goes to the risk manager in
//! one `ApproveMany` round trip, which judges them in the risk rules' order
//! (`shardbot_risk::judging_order`: exits first, then entries by symbol). One batch is in
//! flight at a time; the intents that arrive meanwhile make the next one.
//!
//! `router.approval_gather_ms` (default 0) holds a batch's first intent that long for the
//! rest of its close before asking. At 0 the first intent of a close is judged at once
//! (the fastest first order) and the rest of the close as they gather behind it; with a
//! gather longer than the time a close's intents take to reach the router (`shardbot
//! bench pipeline`), all of a close is judged at once in the rules' order, so when a limit
//! cuts a close's entries, the ones that win are those the backtest picks.

use std::time::Duration;

use shardbot_bus::Requester;
use shardbot_protocol::{OrderIntent, RiskReply, RiskRequest};
use tokio::sync::{mpsc, oneshot};

/// A risk manager's answer for one intent: its reply, or why there is none.
pub type Answer = Result<RiskReply, String>;

#[derive(Debug)]
struct Ask {
    intent: OrderIntent,
    reply: oneshot::Sender<Answer>,
}

/// The handle attempts ask approvals through (cheap to clone).
#[derive(Debug, Clone)]
pub struct Approvals {
    tx: mpsc::UnboundedSender<Ask>,
}

impl Approvals {
    /// Starts the loop on `runtime` (the order path's).
    pub fn start(risk: Requester, gather: Duration, runtime: &tokio::runtime::Handle) -> Approvals {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(risk, gather, rx));
        Approvals { tx }
    }

    /// The risk manager's decision on `intent` (`RiskReply::Decision`), or why it did not
    /// answer.
    pub async fn approve(&self, intent: OrderIntent) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Ask { intent, reply })
            .map_err(|_| "the router's approval loop has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the router's approval loop has stopped".to_owned())?
    }
}

async fn run(risk: Requester, gather: Duration, mut rx: mpsc::UnboundedReceiver<Ask>) {
    while let Some(first) = rx.recv().await {
        if !gather.is_zero() {
            tokio::time::sleep(gather).await;
        }
        let mut batch = vec![first];
        while let Ok(a) = rx.try_recv() {
            batch.push(a);
        }
        let intents: Vec<OrderIntent> = batch.iter().map(|a| a.intent.clone()).collect();
        let n = intents.len();
        let answered = match risk
            .request_async::<_, RiskReply>(RiskRequest::ApproveMany { intents })
            .await
        {
            Ok(RiskReply::Decisions { decisions }) if decisions.len() == n => Ok(decisions),
            Ok(other) => Err(format!("unexpected answer to {n} approvals: {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        match answered {
            Ok(decisions) => {
                for (ask, decision) in batch.into_iter().zip(decisions) {
                    match decision {
                        Some(d) => {
                            let _ = ask.reply.send(Ok(RiskReply::Decision(d)));
                        }
                        // Not judged yet (a reversal's entry waiting for its exit): asked
                        // alone, where the risk manager answers once it can.
                        None => {
                            let risk = risk.clone();
                            tokio::spawn(async move {
                                let answer = risk
                                    .request_async::<_, RiskReply>(RiskRequest::Approve(ask.intent))
                                    .await
                                    .map_err(|e| e.to_string());
                                let _ = ask.reply.send(answer);
                            });
                        }
                    }
                }
            }
            Err(why) => {
                for ask in batch {
                    let _ = ask.reply.send(Err(why.clone()));
                }
            }
        }
    }
}
