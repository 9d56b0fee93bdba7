//! Handing a request from a replier to the actor (or task) that answers it, and waiting
//! for the answer with a deadline: a replier never waits forever for an actor that
//! stopped answering (it would leave the service alive but deaf). The four services that
//! answer requests share this instead of each writing its own bridge: [`ask_actor`] for a
//! REP thread, [`ask_actor_async`] for a replier that serves without a thread per request
//! ([`Replier::serve_async`](crate::Replier::serve_async)).

use std::{
    sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    time::Duration,
};

/// Where the actor sends its answer to one request.
pub struct ReplyTo<R>(Waiting<R>);

/// Who waits for the answer: a thread, or a task.
enum Waiting<R> {
    Thread(SyncSender<R>),
    Task(tokio::sync::oneshot::Sender<R>),
}

impl<R> ReplyTo<R> {
    /// Sends the answer; `Err` gives it back when nobody waits any more (the deadline
    /// passed, or the replier is gone).
    pub fn send(self, reply: R) -> Result<(), R> {
        match self.0 {
            Waiting::Thread(tx) => tx.try_send(reply).map_err(|e| match e {
                TrySendError::Full(r) | TrySendError::Disconnected(r) => r,
            }),
            Waiting::Task(tx) => tx.send(reply),
        }
    }
}

impl<R> std::fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyTo")
    }
}

/// Why a request handed over got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    /// The actor dropped the request unanswered, or could not take it: it is stopping.
    #[error("the service is stopping")]
    Stopping,
    /// No answer within the deadline: the actor is stuck or far behind.
    #[error("no answer from the service within {0:?}")]
    Deadline(Duration),
}

/// Calls `hand` with a [`ReplyTo`] (it passes the request and the `ReplyTo` to the actor,
/// and says whether that worked), then waits for the answer, at most `deadline`.
pub fn ask_actor<R>(
    deadline: Duration,
    hand: impl FnOnce(ReplyTo<R>) -> bool,
) -> Result<R, Unanswered> {
    let (tx, rx) = mpsc::sync_channel(1);
    if !hand(ReplyTo(Waiting::Thread(tx))) {
        return Err(Unanswered::Stopping);
    }
    match rx.recv_timeout(deadline) {
        Ok(r) => Ok(r),
        Err(RecvTimeoutError::Timeout) => Err(Unanswered::Deadline(deadline)),
        Err(RecvTimeoutError::Disconnected) => Err(Unanswered::Stopping),
    }
}

/// [`ask_actor`] for async code: the wait holds no thread.
pub async fn ask_actor_async<R>(
    deadline: Duration,
    hand: impl FnOnce(ReplyTo<R>) -> bool,
) -> Result<R, Unanswered> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !hand(ReplyTo(Waiting::Task(tx))) {
        return Err(Unanswered::Stopping);
    }
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(Unanswered::Stopping),
        Err(_) => Err(Unanswered::Deadline(deadline)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_answer_comes_back() {
        let r = ask_actor(Duration::from_secs(5), |reply| {
            std::thread::spawn(move || reply.send(7).unwrap());
            true
        });
        assert_eq!(r, Ok(7));
    }

    #[test]
    fn a_request_dropped_unanswered_is_stopping() {
        let r = ask_actor::<u8>(Duration::from_secs(5), |reply| {
            drop(reply);
            true
        });
        assert_eq!(r, Err(Unanswered::Stopping));
        assert_eq!(
            ask_actor::<u8>(Duration::from_secs(5), |_| false),
            Err(Unanswered::Stopping)
        );
    }

    #[test]
    fn an_actor_that_never_answers_meets_the_deadline_and_a_late_answer_is_given_back() {
        let (keep, kept) = mpsc::channel();
        let r = ask_actor::<u8>(Duration::from_millis(50), |reply| {
            keep.send(reply).unwrap();
            true
        });
        assert_eq!(r, Err(Unanswered::Deadline(Duration::from_millis(50))));
        let late = kept.recv().unwrap();
        assert_eq!(late.send(9), Err(9));
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn asked_from_a_task_the_answer_comes_back_or_the_deadline_or_stopping() {
        let rt = runtime();
        let r = rt.block_on(ask_actor_async(Duration::from_secs(5), |reply| {
            std::thread::spawn(move || reply.send(7).unwrap());
            true
        }));
        assert_eq!(r, Ok(7));
        let r = rt.block_on(ask_actor_async::<u8>(Duration::from_secs(5), |reply| {
            drop(reply);
            true
        }));
        assert_eq!(r, Err(Unanswered::Stopping));
        assert_eq!(
            rt.block_on(ask_actor_async::<u8>(Duration::from_secs(5), |_| false)),
            Err(Unanswered::Stopping)
        );
        let (keep, kept) = mpsc::channel();
        let r = rt.block_on(ask_actor_async::<u8>(Duration::from_millis(50), |reply| {
            keep.send(reply).unwrap();
            true
        }));
        assert_eq!(r, Err(Unanswered::Deadline(Duration::from_millis(50))));
        let late = kept.recv().unwrap();
        assert_eq!(late.send(9), Err(9));
    }
}
