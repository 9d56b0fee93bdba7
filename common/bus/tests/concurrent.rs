//! A bar close's burst of requests, as a worker sends its intents and the order router
//! serves them, with no thread per request on either side: `Requester::request_async`
//! keeps a burst in flight at once; `Replier::serve_async` holds a burst in its handlers
//! at once, a slow answer holds only its own slot, a bad frame gets an answer, and `close`
//! ends the serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{
    sync::{Arc, Mutex},
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

/// A replier serving without a thread per request (`serve_async`), answering each `Ask`
/// once `gather` requests are in handlers together (a barrier per size), or at once; the
/// receiver hears the `n` of each request that enters a gathering handler.
type Served = (
    tempfile::TempDir,
    String,
    Replier,
    thread::JoinHandle<()>,
    std::sync::mpsc::Receiver<u64>,
);

fn serve_async(slots: usize) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("ipc://{}/svc.rep", dir.path().display());
    let rep = Replier::bind(&url, &BusOptions::default()).unwrap();
    let server = rep.clone();
    let (entered, entries) = std::sync::mpsc::channel();
    let serving =
        thread::spawn(move || {
            let barriers: Arc<Mutex<std::collections::HashMap<usize, Arc<tokio::sync::Barrier>>>> =
                Arc::default();
            server
                .serve_async(
                    slots,
                    |a: Ask| {
                        let barrier =
                            (a.gather > 0).then(|| {
                                let _ = entered.send(a.n); // heard by the tests that listen
                                Arc::clone(barriers.lock().unwrap().entry(a.gather).or_insert_with(
                                    || Arc::new(tokio::sync::Barrier::new(a.gather)),
                                ))
                            });
                        async move {
                            let together = match barrier {
                                None => true,
                                Some(b) => tokio::time::timeout(Duration::from_secs(10), b.wait())
                                    .await
                                    .is_ok(),
                            };
                            Answer { n: a.n, together }
                        }
                    },
                    |_| Answer {
                        n: u64::MAX,
                        together: false,
                    },
                )
                .unwrap();
        });
    (dir, url, rep, serving, entries)
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
/// on the exchange. 200 async requests, each held in `serve_async`'s handlers until all
/// 200 are in handlers together, from a runtime of one thread: only requests in flight
/// without a thread each can meet (one at a time, the first would wait 10 s in vain and
/// answer `together: false`), and only a replier holding them all at once can gather them.
#[test]
fn a_burst_of_requests_is_in_flight_and_in_handlers_at_once_without_a_thread_each() {
    const N: u64 = 200;
    let (_dir, url, rep, serving, _) = serve_async(N as usize);
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
    let (_dir, url, rep, serving, _) = serve_async(4);
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

/// While one request waits in its handler, twenty others are answered by the other
/// slots, in turn many times over each slot; then its partner releases it.
#[test]
fn a_replier_without_threads_holds_a_slow_answer_in_its_slot_only() {
    let (_dir, url, rep, serving, _) = serve_async(3);
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

/// A frame that is not a request gets `on_bad_request`'s answer (not a timeout), and the
/// slot serves on; `close` ends the serving even with a handler still waiting.
#[test]
fn a_replier_without_threads_answers_a_bad_frame_and_stops_on_close() {
    let (_dir, url, rep, serving, entries) = serve_async(2);
    let req = Requester::dial(&url, &BusOptions::default()).unwrap();
    let reply = req
        .request_bytes(b"\xc1 not msgpack", Duration::from_secs(5))
        .unwrap();
    let bad: Answer = rmp_serde::from_slice(&reply).unwrap();
    assert_eq!(
        bad,
        Answer {
            n: u64::MAX,
            together: false
        }
    );
    let a: Answer = req
        .request_within(&Ask { n: 5, gather: 0 }, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        a,
        Answer {
            n: 5,
            together: true
        }
    );
    // Held in its handler (no partner comes) when the replier closes.
    let held = {
        let req = req.clone();
        thread::spawn(move || {
            req.request_within::<_, Answer>(&Ask { n: 6, gather: 2 }, Duration::from_millis(1500))
        })
    };
    assert_eq!(entries.recv_timeout(Duration::from_secs(5)), Ok(6));
    rep.close();
    serving.join().unwrap();
    assert!(held.join().unwrap().is_err(), "no answer after close");
}
