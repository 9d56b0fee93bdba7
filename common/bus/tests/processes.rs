//! Bus behaviour across real processes. The test binary re-executes itself as the child
//! (`child_process_entry` with `BUS_TEST_ROLE` set), so both ends are separate OS processes
//! talking over `ipc://`, as services do.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shardbot_bus::{BusError, BusOptions, Publisher, Replier, Requester, Subscriber};
use shardbot_protocol::{
    Bar, Event, GapDetector, Heartbeat, Interval, SeqCheck, ServiceState, Slot, Symbol, Topic,
};

const ROLE: &str = "BUS_TEST_ROLE";
const URL: &str = "BUS_TEST_URL";

// ---------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug)]
struct Ask {
    n: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Answer {
    n: u64,
    pid: u32,
}

/// Entry point of the child processes; a no-op when run as an ordinary test.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let url = std::env::var(URL).unwrap();
    let opts = BusOptions::default();
    match role.as_str() {
        // Subscribes to slot 7 and to heartbeats; reports "@connected" on the first
        // heartbeat, then every bar topic and sequence number, and stops at the END bar.
        "sub-slot-7" => {
            let sub = Subscriber::dial(&[url.as_str()], &opts).unwrap();
            sub.subscribe(Topic::bar_slot_prefix(Slot::new(7).unwrap()))
                .unwrap();
            sub.subscribe(Topic::HEARTBEAT_PREFIX).unwrap();
            let mut connected = false;
            loop {
                let r = sub
                    .recv(Some(Duration::from_secs(20)))
                    .unwrap()
                    .expect("stream stalled");
                match r.event {
                    Event::Heartbeat(_) if !connected => {
                        connected = true;
                        println!("@connected");
                    }
                    Event::Heartbeat(_) => {}
                    Event::Bar(bar) => {
                        println!("@bar {} {}", r.topic, r.seq);
                        if bar.open_time_ms == END_MARK {
                            println!("@end");
                            return;
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        // Answers requests with its pid.
        "rep" => {
            let rep = Replier::bind(&url, &opts).unwrap();
            println!("@listening");
            rep.serve(
                |a: Ask| Answer {
                    n: a.n,
                    pid: std::process::id(),
                },
                |_| Answer {
                    n: u64::MAX,
                    pid: 0,
                },
            )
            .unwrap();
        }
        // Takes one request and dies without answering (a crash mid-request).
        "rep-crash" => {
            let rep = Replier::bind(&url, &opts).unwrap();
            println!("@listening");
            rep.serve(
                |_: Ask| -> Answer {
                    println!("@got-request");
                    std::process::exit(3)
                },
                |_| Answer {
                    n: u64::MAX,
                    pid: 0,
                },
            )
            .unwrap();
        }
        // Sends requests one after another until killed.
        "req-loop" => {
            let req = Requester::dial(&url, &opts).unwrap();
            println!("@dialed");
            for n in 0.. {
                let _ = req.request_within::<_, Answer>(&Ask { n }, Duration::from_secs(5));
            }
        }
        // Publishes a heartbeat naming its pid every 20 ms until killed.
        "pub-hb" => {
            let mut publisher = Publisher::bind(&url, &opts).unwrap();
            println!("@listening");
            let mut hb = heartbeat();
            hb.pid = std::process::id();
            loop {
                publisher.publish(&hb).unwrap();
                thread::sleep(Duration::from_millis(20)); // the publishing pace
            }
        }
        // Binds and exits at once, leaving its ipc file behind (a service that dies on
        // start, before its restart).
        "pub-die" => {
            let _publisher = Publisher::bind(&url, &opts).unwrap();
            println!("@listening");
            std::process::exit(1)
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Parent side helpers
// ---------------------------------------------------------------------------------------

const END_MARK: i64 = -1;

struct ChildProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProc {
    fn spawn(role: &str, url: &str) -> ChildProc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(URL, url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest prints its own banner on the same line as the first marker.
                if let Some((_, l)) = line.split_once('@')
                    && tx.send(l.to_owned()).is_err()
                {
                    return;
                }
            }
        });
        ChildProc { child, lines }
    }

    fn expect_line(&self, want: &str) {
        let got = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("child went silent");
        assert_eq!(got, want);
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ipc_url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("ipc://{}", dir.path().join(name).display())
}

fn bar(symbol: &str, t: i64) -> Bar {
    Bar {
        symbol: Symbol::new(symbol).unwrap(),
        interval: Interval::M1,
        open_time_ms: t,
        open: Decimal::ONE,
        high: Decimal::ONE,
        low: Decimal::ONE,
        close: Decimal::ONE,
        volume: Decimal::ONE,
        turnover: Decimal::ONE,
        published_ms: None,
        stamps: Default::default(),
    }
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        service: "test".into(),
        instance: "parent".into(),
        pid: std::process::id(),
        version: "0".into(),
        started_ms: 0,
        now_ms: 0,
        state: ServiceState::Running,
        metrics: Default::default(),
        links: Vec::new(),
    }
}

/// Symbols named `S<n>USDT` whose slot is (or is not) `slot`.
fn symbols(in_slot: bool, slot: u16, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("S{i}USDT"))
        .filter(|s| (Slot::of(s).get() == slot) == in_slot)
        .take(n)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn a_subscriber_to_slot_7_receives_slot_7_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let url = ipc_url(&dir, "md.pub");
    let mut publisher = Publisher::bind(&url, &BusOptions::default()).unwrap();
    let child = ChildProc::spawn("sub-slot-7", &url);

    // Handshake: heartbeat until the child says its subscription is live.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publisher.publish(&heartbeat()).unwrap();
        match child.lines.recv_timeout(Duration::from_millis(20)) {
            Ok(l) if l == "connected" => break,
            Ok(l) => panic!("unexpected {l}"),
            Err(_) => assert!(Instant::now() < deadline, "child never connected"),
        }
    }

    let mine = symbols(true, 7, 5);
    let others = symbols(false, 7, 20);
    // Interleave slot-7 bars with bars of other slots, including slots 70..79 whose
    // prefix `bar.7x.` starts with the same characters.
    let tricky: Vec<String> = (70..80).flat_map(|s| symbols(true, s, 1)).collect();
    let mut expected = Vec::new();
    for t in 0..20 {
        for s in others.iter().chain(&tricky) {
            publisher.publish(&bar(s, t)).unwrap();
        }
        for s in &mine {
            let b = bar(s, t);
            let seq = publisher.publish(&b).unwrap();
            expected.push(format!(
                "bar {} {seq}",
                Topic::Bar {
                    symbol: b.symbol,
                    interval: b.interval
                }
            ));
        }
    }
    let end = bar(&mine[0], END_MARK);
    let seq = publisher.publish(&end).unwrap();
    expected.push(format!("bar {} {seq}", end.topic_string()));
    expected.push("end".into());

    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("end") {
        got.push(
            child
                .lines
                .recv_timeout(Duration::from_secs(20))
                .expect("child went silent"),
        );
    }
    // 100+1 slot-7 frames, in order, every one; none of the 600 others.
    assert_eq!(got, expected);
}

trait TopicString {
    fn topic_string(&self) -> String;
}

impl TopicString for Bar {
    fn topic_string(&self) -> String {
        shardbot_protocol::Publish::topic(self).to_string()
    }
}

#[test]
fn drops_by_a_full_queue_are_reported_as_gaps() {
    // Tiny queues and a subscriber that does not read while the publisher bursts: nng
    // drops silently, and the sequence numbers are the only way to know.
    let dir = tempfile::tempdir().unwrap();
    let url = ipc_url(&dir, "burst.pub");
    let opts = BusOptions {
        pub_send_buffer: 2,
        sub_recv_buffer: 2,
        ..BusOptions::default()
    };
    let mut publisher = Publisher::bind(&url, &opts).unwrap();
    let sub = Subscriber::dial(&[url.as_str()], &opts).unwrap();
    sub.subscribe("").unwrap();
    // Handshake: publish until the subscriber sees something.
    let first = loop {
        publisher.publish(&bar("BTCUSDT", 0)).unwrap();
        if let Some(r) = sub.recv(Some(Duration::from_millis(10))).unwrap() {
            break r;
        }
    };
    let mut det = GapDetector::new();
    let topic = first.topic.to_string();
    det.observe(&topic, first.epoch, first.seq);

    const BURST: i64 = 20_000;
    for t in 1..=BURST {
        publisher.publish(&bar("BTCUSDT", t)).unwrap();
    }
    let last_seq = publisher.last_seq(&topic).unwrap();
    let (mut received, mut lost) = (0u64, 0u64);
    let mut seen_last = false;
    while !seen_last {
        // Drained queue without the last frame would be a bug: fail instead of hanging.
        let Some(r) = sub.recv(Some(Duration::from_secs(10))).unwrap() else {
            panic!("stream ended before seq {last_seq}");
        };
        match det.observe(&topic, r.epoch, r.seq) {
            SeqCheck::InOrder => received += 1,
            SeqCheck::Gap { from, to } => {
                received += 1;
                lost += to - from + 1;
            }
            other => panic!("unexpected {other:?}"),
        }
        seen_last = r.seq == last_seq;
    }
    assert!(lost > 0, "a 20k burst into 2-slot queues must drop");
    assert_eq!(
        received + lost,
        last_seq - first.seq,
        "every frame is received or reported lost"
    );
}

#[test]
fn a_request_with_nobody_answering_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let url = ipc_url(&dir, "nobody.rep");
    let req = Requester::dial(&url, &BusOptions::default()).unwrap();
    let start = Instant::now();
    let err = req
        .request_within::<_, Answer>(&Ask { n: 1 }, Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "timed out after {took:?}, before the 300 ms it was given"
    );
    assert!(
        err.to_string().contains("nobody.rep"),
        "names the endpoint: {err}"
    );
}

#[test]
fn a_request_in_flight_when_the_replier_crashes_is_answered_by_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = ipc_url(&dir, "svc.rep");
    let opts = BusOptions {
        request_resend_ms: 200,
        ..BusOptions::default()
    };
    let req = Requester::dial(&url, &opts).unwrap();

    let mut first = ChildProc::spawn("rep-crash", &url);
    first.expect_line("listening");
    let in_flight = {
        let req = req.clone();
        thread::spawn(move || {
            req.request_within::<_, Answer>(&Ask { n: 42 }, Duration::from_secs(20))
        })
    };
    first.expect_line("got-request");
    let status = first.child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the first replier died mid-request");

    // Same endpoint, new process (nng reclaims the stale ipc file).
    let second = ChildProc::spawn("rep", &url);
    second.expect_line("listening");
    let answer = in_flight.join().unwrap().unwrap();
    assert_eq!(
        answer,
        Answer {
            n: 42,
            pid: second.pid()
        }
    );

    // kill -9 the replier: requests time out meanwhile, and work again after a restart.
    drop(second);
    let err = req
        .request_within::<_, Answer>(&Ask { n: 1 }, Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    let third = ChildProc::spawn("rep", &url);
    third.expect_line("listening");
    let answer: Answer = req
        .request_within(&Ask { n: 2 }, Duration::from_secs(20))
        .unwrap();
    assert_eq!(
        answer,
        Answer {
            n: 2,
            pid: third.pid()
        }
    );
}

/// The pid of the next heartbeat `sub` receives from a process other than `not`.
fn next_heartbeat_pid(sub: &Subscriber, not: Option<u32>, within: Duration, what: &str) -> u32 {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no heartbeat from {what} within {within:?}"
        );
        if let Some(r) = sub.recv(Some(left)).unwrap()
            && let Event::Heartbeat(h) = r.event
            && Some(h.pid) != not
        {
            return h.pid;
        }
    }
}

/// With Debian's NNG 1.5.2 this failed about 1 run in 20: a dialer stopped redialing for
/// good when its peer died during the handshake (the dialer-side twin of nng #1518).
#[test]
fn a_subscriber_hears_a_publisher_that_restarts_on_the_same_endpoint() {
    // The dashboard listens to every service's heartbeat: a service killed and restarted
    // by the supervisor (or one that died on start, leaving its ipc file) must be heard
    // again without anyone redialing.
    let dir = tempfile::tempdir().unwrap();
    let url = ipc_url(&dir, "svc-hb.pub");
    let opts = BusOptions::default();
    let died = ChildProc::spawn("pub-die", &url);
    died.expect_line("listening");
    let sub = Subscriber::dial(&[url.as_str()], &opts).unwrap();
    sub.subscribe(Topic::HEARTBEAT_PREFIX).unwrap();
    drop(died);

    let first = ChildProc::spawn("pub-hb", &url);
    first.expect_line("listening");
    assert_eq!(
        next_heartbeat_pid(&sub, None, Duration::from_secs(10), "the first publisher"),
        first.pid()
    );
    // kill -9, then a new process on the same endpoint, three times over.
    let mut current = first;
    for round in 1..=3 {
        let old = current.pid();
        drop(current);
        current = ChildProc::spawn("pub-hb", &url);
        current.expect_line("listening");
        assert_eq!(
            next_heartbeat_pid(
                &sub,
                Some(old),
                Duration::from_secs(10),
                &format!("restart {round}")
            ),
            current.pid(),
            "the restarted publisher is heard"
        );
    }
}

/// With Debian's NNG 1.5.2 some of these kills left the REP socket deaf to new
/// connections for good (about one run in ten), while connections it already had were
/// still served: nng issue #1518, "Disconnect during negotiation breaks listener", fixed
/// after 1.5.2. A self-probing watchdog re-listened then; with NNG 1.11 there is none.
#[test]
fn requesters_killed_mid_request_do_not_stall_the_replier() {
    let dir = tempfile::tempdir().unwrap();
    let url = ipc_url(&dir, "svc.rep");
    let rep = Replier::bind(&url, &BusOptions::default()).unwrap();
    // As in the services: the handler hands the request to another thread (an actor)
    // and waits for its answer.
    let (work_tx, work_rx) = mpsc::channel::<(Ask, mpsc::Sender<Answer>)>();
    thread::spawn(move || {
        for (a, back) in work_rx {
            thread::sleep(Duration::from_micros(300));
            let _ = back.send(Answer {
                n: a.n,
                pid: std::process::id(),
            });
        }
    });
    // Requesters that stay, asking all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let live = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..3 {
        let (url, stop, live) = (url.clone(), stop.clone(), live.clone());
        thread::spawn(move || {
            let req = Requester::dial(&url, &BusOptions::default()).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if req
                    .request_within::<_, Answer>(&Ask { n: 1 }, Duration::from_secs(5))
                    .is_ok()
                {
                    live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(5)); // a requester's pace, not a race
            }
        });
    }
    thread::spawn(move || {
        rep.serve(
            |a: Ask| {
                let (tx, rx) = mpsc::channel();
                work_tx.send((a, tx)).unwrap();
                rx.recv().unwrap()
            },
            |_| Answer {
                n: u64::MAX,
                pid: 0,
            },
        )
        .unwrap();
    });
    for i in 0..250u64 {
        let mut child = ChildProc::spawn("req-loop", &url);
        // kill -9 at a spread of moments: before it dials, mid-handshake, mid-request
        thread::sleep(Duration::from_micros((i * 7_919) % 30_000));
        child.child.kill().unwrap();
        child.child.wait().unwrap();
    }
    let req = Requester::dial(&url, &BusOptions::default()).unwrap();
    let before = live.load(std::sync::atomic::Ordering::Relaxed);
    let answer = req.request_within::<_, Answer>(&Ask { n: 7 }, Duration::from_secs(15));
    let served = live.load(std::sync::atomic::Ordering::Relaxed) - before;
    let answer = answer.unwrap_or_else(|e| {
        panic!("a new requester gets no answer ({e}) while the old ones got {served}")
    });
    assert_eq!(answer.n, 7);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn concurrent_requests_on_one_requester_get_their_own_replies() {
    let dir = tempfile::tempdir().unwrap();
    let url = ipc_url(&dir, "conc.rep");
    let rep = ChildProc::spawn("rep", &url);
    rep.expect_line("listening");
    let req = Requester::dial(&url, &BusOptions::default()).unwrap();
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let req = req.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    let n = t * 1000 + i;
                    let a: Answer = req.request(&Ask { n }).unwrap();
                    assert_eq!(a.n, n);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_bad_endpoint_is_a_clear_error() {
    let err = Publisher::bind("http://localhost:1", &BusOptions::default()).unwrap_err();
    assert!(err.to_string().contains("ipc://"), "{err}");
    let err = Subscriber::dial(&["nowhere"], &BusOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a bus endpoint"), "{err}");
}

/// 200 restarts by kill -9 of a replier and of a publisher, each on its own endpoint, while
/// requesters and a subscriber keep going: after each restart a request is answered by the
/// new replier within its timeout, and the subscriber hears the new publisher, without
/// anyone redialing by hand. (With Debian's NNG 1.5.2 a stuck dialer or a deaf listener
/// showed within a few dozen rounds.)
#[test]
fn two_hundred_kill_9s_of_a_replier_and_a_publisher_lose_no_requester_or_subscriber() {
    const ROUNDS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let rep_url = ipc_url(&dir, "loop.rep");
    let pub_url = ipc_url(&dir, "loop.pub");
    let opts = BusOptions::default();
    let req = Requester::dial(&rep_url, &opts).unwrap();
    let sub = Subscriber::dial(&[pub_url.as_str()], &opts).unwrap();
    sub.subscribe(Topic::HEARTBEAT_PREFIX).unwrap();
    // Requesters asking all along, so that requests are in flight at the kills; each of
    // their requests ends (answered, or failed by its timeout), none hangs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background: Vec<_> = (0..2)
        .map(|_| {
            let (url, stop) = (rep_url.clone(), stop.clone());
            thread::spawn(move || {
                let req = Requester::dial(&url, &BusOptions::default()).unwrap();
                let mut answered = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if req
                        .request_within::<_, Answer>(&Ask { n: 1 }, Duration::from_secs(5))
                        .is_ok()
                    {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let mut last_pub = None;
    for round in 0..ROUNDS {
        let rep = ChildProc::spawn("rep", &rep_url);
        let publisher = ChildProc::spawn("pub-hb", &pub_url);
        rep.expect_line("listening");
        publisher.expect_line("listening");
        let n = u64::from(round) + 10;
        let answer = req
            .request_within::<_, Answer>(&Ask { n }, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("round {round}: no answer from the new replier: {e}"));
        assert_eq!(answer, Answer { n, pid: rep.pid() }, "round {round}");
        let heard = next_heartbeat_pid(
            &sub,
            last_pub,
            Duration::from_secs(5),
            &format!("the publisher of round {round}"),
        );
        assert_eq!(heard, publisher.pid(), "round {round}");
        last_pub = Some(heard);
        // Kill -9 both (ChildProc's drop), the replier possibly mid-request.
        drop((rep, publisher));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // A last replier, so that the background requesters' last requests are answered.
    let rep = ChildProc::spawn("rep", &rep_url);
    rep.expect_line("listening");
    for b in background {
        assert!(
            b.join().unwrap() > 0,
            "a background requester was never answered"
        );
    }
}
