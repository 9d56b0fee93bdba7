//! A replier serving several requests at once (`Replier::serve_concurrent`), as the order
//! router serves a bar close's burst of intents: requests held in their handlers at the
//! same time all complete, a slow answer holds only its own worker, and `close` ends the
//! serving. And the requesting side of such a burst: `Requester::request_async` holds no
//! thread per request in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{
    sync::{Arc, Condvar, Mutex},
    thread,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use shardbot_bus::{BusOptions, Replier, Requester};

#[derive(Serialize, Deserialize, Debug)]
struct Ask {
    n: u64,
    /// Wait in the handler until this many requests are in handlers at once (0: answer
    /// at once).
    gather: usize,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Answer {
    n: u64,
    /// The gathering happened (false: it gave up after 10 s).
    together: bool,
}

/// Requests that have entered a gathering handler so far, and a condition variable to
/// wait for more.
#[derive(Default)]
struct Gathering {
    arrived: Mutex<usize>,
    more: Condvar,
}

impl Gathering {
    fn wait_for(&self, n: usize) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.more.notify_all();
        let (_arrived, timeout) = self
            .more
            .wait_timeout_while(arrived, Duration::from_secs(10), |a| *a < n)
            .unwrap();
        !timeout.timed_out()
    }
}

fn serve(workers: usize) -> (tempfile::TempDir, String, Replier, thread::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ipc://{}/svc.rep", dir.path().display());
    let rep = Replier::bind(&url, &BusOptions::default()).unwrap();
    let server = rep.clone();
    let gathering = Arc::new(Gathering::default());
    let serving = thread::spawn(move || {
        server
            .serve_concurrent(
                workers,
                |a: Ask| Answer {
                    n: a.n,
                    together: a.gather == 0 || gathering.wait_for(a.gather),
                },
                |_| Answer {
                    n: u64::MAX,
                    together: false,
                },
            )
            .unwrap();
    });
    (dir, url, rep, serving)
}

/// Eight requests each held in its handler until all eight are inside: only a replier
/// that serves them at once can answer (one at a time, the first would wait in vain).
#[test]
fn requests_held_in_their_handlers_at_the_same_time_all_complete() {
    let (_dir, url, rep, serving) = serve(8);
    let req = Requester::dial(&url, &BusOptions::default()).unwrap();
    let asks: Vec<_> = (0..8)
        .map(|n| {
            let req = req.clone();
            thread::spawn(move || {
                req.request_within::<_, Answer>(&Ask { n, gather: 8 }, Duration::from_secs(20))
                    .unwrap()
            })
        })
        .collect();
    for (n, t) in asks.into_iter().enumerate() {
        assert_eq!(
            t.join().unwrap(),
            Answer {
                n: n as u64,
                together: true
            }
        );
    }
    rep.close();
    serving.join().unwrap();
}

/// While one request waits in its handler, twenty others are answered by the other
/// workers; then the waiting one is released by a second slow one and both answer.
#[test]
fn a_request_waiting_in_its_handler_holds_only_its_own_worker() {
    let (_dir, url, rep, serving) = serve(4);
    let req = Requester::dial(&url, &BusOptions::default()).unwrap();
    let first = {
        let req = req.clone();
        thread::spawn(move || {
            req.request_within::<_, Answer>(&Ask { n: 1, gather: 2 }, Duration::from_secs(20))
                .unwrap()
        })
    };
    for n in 100..120 {
        let a: Answer = req
            .request_within(&Ask { n, gather: 0 }, Duration::from_secs(5))
            .unwrap();
        assert_eq!(a, Answer { n, together: true });
    }
    assert!(
        !first.is_finished(),
        "the first is still waiting for its partner"
    );
    let second: Answer = req
        .request_within(&Ask { n: 2, gather: 2 }, Duration::from_secs(20))
        .unwrap();
    assert_eq!(
        second,
        Answer {
            n: 2,
            together: true
        }
    );
    assert_eq!(
        first.join().unwrap(),
        Answer {
            n: 1,
            together: true
        }
    );
    rep.close();
    serving.join().unwrap();
}

/// A runtime with one thread and one blocking thread: requests that each needed a thread
/// of their own (tokio's blocking pool) would go one at a time.
fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A worker's bar close sends its intents at once, each answered only once its order is
/// on the exchange. 200 async requests, each held in its handler until all 200 are in
/// handlers together, from a runtime of one thread: only requests in flight without a
/// thread each can meet (one at a time, the first would wait 10 s in vain and answer
/// `together: false`).
#[test]
fn a_burst_of_async_requests_is_in_flight_at_once_without_a_thread_each() {
    const N: u64 = 200;
    let (_dir, url, rep, serving) = serve(N as usize);
    let opts = BusOptions {
        request_timeout_ms: 30_000,
        ..BusOptions::default()
    };
    let req = Requester::dial(&url, &opts).unwrap();
    one_thread().block_on(async {
        let mut asks = tokio::task::JoinSet::new();
        for n in 0..N {
            let req = req.clone();
            asks.spawn(async move {
                let gather = N as usize;
                (n, req.request_async::<_, Answer>(Ask { n, gather }).await)
            });
        }
        let mut answered = 0;
        while let Some(done) = asks.join_next().await {
            let (n, answer) = done.unwrap();
            assert_eq!(answer.unwrap(), Answer { n, together: true });
            answered += 1;
        }
        assert_eq!(answered, N);
    });
    rep.close();
    serving.join().unwrap();
}

/// With nobody answering, an async request fails with a timeout naming the endpoint, not
/// before its timeout.
#[test]
fn an_async_request_with_nobody_answering_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ipc://{}/nobody.rep", dir.path().display());
    let opts = BusOptions {
        request_timeout_ms: 300,
        ..BusOptions::default()
    };
    let req = Requester::dial(&url, &opts).unwrap();
    let start = std::time::Instant::now();
    let err = one_thread()
        .block_on(req.request_async::<_, Answer>(Ask { n: 1, gather: 0 }))
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, shardbot_bus::BusError::Timeout { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nobody.rep"), "{err}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "timed out after {took:?} (given 300 ms)"
    );
}

/// An async request given up while in flight (its future dropped, as a task is aborted)
/// finishes on its own: its reply still reaches its handler's partner, and the requester
/// goes on serving other requests.
#[test]
fn an_async_request_given_up_in_flight_leaves_the_requester_working() {
    let (_dir, url, rep, serving) = serve(4);
    let req = Requester::dial(&url, &BusOptions::default()).unwrap();
    one_thread().block_on(async {
        let held = tokio::time::timeout(
            Duration::from_millis(100),
            req.request_async::<_, Answer>(Ask { n: 1, gather: 2 }),
        )
        .await;
        assert!(held.is_err(), "held in its handler until a partner comes");
        let partner = req
            .request_async::<_, Answer>(Ask { n: 2, gather: 2 })
            .await
            .unwrap();
        assert_eq!(
            partner,
            Answer {
                n: 2,
                together: true
            }
        );
        for n in 10..20 {
            let a = req
                .request_async::<_, Answer>(Ask { n, gather: 0 })
                .await
                .unwrap();
            assert_eq!(a, Answer { n, together: true });
        }
    });
    rep.close();
    serving.join().unwrap();
}
