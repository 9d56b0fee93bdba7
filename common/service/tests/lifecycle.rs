//! A service process from start to stop: heartbeat on the bus, clean shutdown on SIGTERM
//! and SIGINT, exit codes, log file, and bad configuration refused before anything starts.
//! The test binary re-executes itself as the service (`service_process_entry`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use rstest::rstest;
use shardbot_bus::{BusOptions, Subscriber};
use shardbot_protocol::{Event, Heartbeat, ServiceState, Topic};
use shardbot_service::{ServiceArgs, ServiceError, run};

const ROLE: &str = "LIFECYCLE_ROLE";

#[derive(Parser)]
struct ProbeArgs {
    #[command(flatten)]
    service: ServiceArgs,
}

/// The child process: a service named `probe`, instance `t1`, configured through
/// SHARDBOT_CONFIG and SHARDBOT__* like any real service.
#[test]
fn service_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let args = ProbeArgs::parse_from(["probe"]);
    let result = run("probe", "t1", &args.service, |ctx| {
        tracing::info!(role, "probe started");
        match role.as_str() {
            // Fails when the parent says so on stdin, i.e. once it has seen it running.
            "fatal" => {
                let shutdown = ctx.shutdown.clone();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                    shutdown.fatal("boom: exchange unreachable for 60 s");
                });
            }
            "start-fails" => return Err("cannot reach the gateway".into()),
            // A panic in an actix task, or in a thread of the service, once the parent has
            // seen it running (a line on stdin).
            "panic-in-task" => {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                    let _ = tx.send(());
                });
                actix::spawn(async move {
                    let _ = rx.await;
                    let v: Vec<u8> = Vec::new();
                    let _ = v[3]; // index out of bounds: a bug in an actor
                });
            }
            // Dials the endpoint LINK_URL (a requester kept for the process's life).
            "dials" => {
                let url = std::env::var("LINK_URL").unwrap();
                let req = shardbot_bus::Requester::dial(&url, &BusOptions::default()).unwrap();
                std::mem::forget(req); // held to the end, as a service holds its requesters
            }
            "panic-in-thread" => {
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                    panic!("boom in a worker thread");
                });
            }
            _ => {}
        }
        Ok(())
    });
    // The same mapping a service's main uses (`exit_code`), as a raw status.
    std::process::exit(match result {
        Ok(()) => 0,
        Err(ServiceError::Fatal(_)) => {
            eprintln!("probe: {}", result.unwrap_err());
            1
        }
        Err(e) => {
            eprintln!("probe: {e}");
            2
        }
    });
}

struct Stack {
    dir: tempfile::TempDir,
}

impl Stack {
    fn new(extra_toml: &str) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[log]\ndir = \"{log}\"\n[heartbeat]\ninterval_ms = 50\n[endpoints]\nheartbeat = \"ipc://{hb}/hb-{{service}}-{{instance}}.pub\"\n{extra_toml}",
            log = dir.path().join("log").display(),
            hb = dir.path().display(),
        );
        std::fs::write(dir.path().join("local.toml"), toml).unwrap();
        Stack { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("local.toml")
    }

    fn hb_url(&self) -> String {
        format!("ipc://{}/hb-probe-t1.pub", self.dir.path().display())
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("log").join("probe-t1.log")
    }

    fn spawn(&self, role: &str, env: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "service_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env("SHARDBOT_CONFIG", self.config())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    fn watch(&self) -> Subscriber {
        let sub = Subscriber::dial(&[self.hb_url()], &BusOptions::default()).unwrap();
        sub.subscribe(Topic::HEARTBEAT_PREFIX).unwrap();
        sub
    }
}

fn next_heartbeat(sub: &Subscriber, deadline: Instant) -> Heartbeat {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no heartbeat before the deadline");
        if let Some(r) = sub.recv(Some(left)).unwrap() {
            let Event::Heartbeat(hb) = r.event else {
                panic!("not a heartbeat: {r:?}")
            };
            return hb;
        }
    }
}

fn wait_for_state(sub: &Subscriber, want: &ServiceState) -> Heartbeat {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hb = next_heartbeat(sub, deadline);
        if &hb.state == want {
            return hb;
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[rstest]
#[case::sigterm("-TERM", "SIGTERM")]
#[case::sigint("-INT", "SIGINT")]
fn heartbeats_while_running_and_stops_cleanly_on_a_signal(#[case] sig: &str, #[case] name: &str) {
    let stack = Stack::new("");
    let sub = stack.watch();
    let child = stack.spawn("ok", &[]);

    let hb = wait_for_state(&sub, &ServiceState::Running);
    assert_eq!(
        (hb.service.as_str(), hb.instance.as_str(), hb.pid),
        ("probe", "t1", child.id())
    );
    // It keeps beating at the configured interval (50 ms): two more arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    let a = next_heartbeat(&sub, deadline);
    let b = next_heartbeat(&sub, deadline);
    assert!(b.now_ms >= a.now_ms);

    signal(&child, sig);
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The final heartbeat is best effort on the wire (nng may discard a queued message when
    // the socket closes); that it was sent shows in the log.
    let log = read(&stack.log_file());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&stack.log_file()),
            0o600,
            "the log is the owner's only"
        );
        assert_eq!(mode(stack.log_file().parent().unwrap()), 0o700);
    }
    for needle in [
        "starting",
        "probe started",
        "running",
        "shutting down",
        name,
        "Stopping",
        "stopped",
    ] {
        assert!(log.contains(needle), "log lacks `{needle}`:\n{log}");
    }
}

#[test]
fn json_logs_are_one_json_object_per_line() {
    let stack = Stack::new("");
    let sub = stack.watch();
    let child = stack.spawn("ok", &[("SHARDBOT__LOG__JSON", "true")]);
    wait_for_state(&sub, &ServiceState::Running);
    signal(&child, "-TERM");
    assert_eq!(finish(child).status.code(), Some(0));
    let log = read(&stack.log_file());
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 4, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}

#[test]
fn a_fatal_error_stops_the_process_with_status_1() {
    let stack = Stack::new("");
    let sub = stack.watch();
    let mut child = stack.spawn("fatal", &[]);
    wait_for_state(&sub, &ServiceState::Running);
    writeln!(child.stdin.take().unwrap(), "fail").unwrap();
    let out = finish(child);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("probe: stopped on a fatal error: boom"),
        "{stderr}"
    );
}

#[test]
fn a_failing_start_exits_with_status_2_and_says_why() {
    let stack = Stack::new("");
    let out = finish(stack.spawn("start-fails", &[]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("start-up failed: cannot reach the gateway"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "a clean exit, no panic: {stderr}"
    );
}

#[rstest]
#[case::malformed_file("[bus\n", "local.toml")]
#[case::unknown_key("[bus]\npub_send_bufer = 5\n", "pub_send_bufer")]
fn bad_configuration_starts_nothing(#[case] extra: &str, #[case] names: &str) {
    let stack = Stack::new(extra);
    let out = finish(stack.spawn("ok", &[]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(names),
        "stderr should name `{names}`: {stderr}"
    );
    // Refused before logging or the bus were touched.
    assert!(!stack.log_file().exists());
    assert!(!Path::new(&stack.hb_url()["ipc://".len()..]).exists());
}

#[test]
fn a_missing_config_file_is_refused() {
    let stack = Stack::new("");
    std::fs::remove_file(stack.config()).unwrap();
    let out = finish(stack.spawn("ok", &[]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("local.toml"),
        "{stderr}"
    );
}

/// Crash-only: a panic in an actor's task or in any thread ends the process (SIGABRT, for
/// the supervisor to restart it), with the panic in the log file. Before, a panicking
/// actix task died alone and the process went on beating "running" without doing its work.
#[rstest]
#[case::task("panic-in-task", "index out of bounds")]
#[case::thread("panic-in-thread", "boom in a worker thread")]
fn a_panic_anywhere_ends_the_process(#[case] role: &str, #[case] message: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stack = Stack::new("");
    let sub = stack.watch();
    let mut child = stack.spawn(role, &[]);
    wait_for_state(&sub, &ServiceState::Running);
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    // A process that survives its panic is the bug: it fails here instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("still running 20 s after a panic: a silent zombie");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = finish(child);
    assert_eq!(
        out.status.signal(),
        Some(6),
        "aborted (SIGABRT): {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let log = read(&stack.log_file());
    assert!(
        log.contains("panic: the process ends so that its supervisor restarts it")
            && log.contains(message),
        "{log}"
    );
}

/// A process whose dialer cannot reach its peer for more than 5 s is shown degraded,
/// naming the endpoint (the heartbeat carries each dialer's state from its socket's pipe
/// events: `shardbot health`, `scripts/stack status` and the dashboard show it); once the
/// peer listens, it is running again.
#[test]
fn a_dialer_down_for_seconds_shows_the_process_degraded_naming_the_endpoint() {
    let stack = Stack::new("");
    let url = format!("ipc://{}/peer.rep", stack.dir.path().display());
    let sub = stack.watch();
    let child = stack.spawn("dials", &[("LINK_URL", &url)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let degraded = loop {
        let hb = next_heartbeat(&sub, deadline);
        let (state, detail) = hb.shown_state();
        if state == "degraded" {
            break detail;
        }
        assert!(matches!(state, "starting" | "running"), "{state}: {detail}");
    };
    assert!(
        degraded.starts_with(&format!("not connected to {url} (")),
        "{degraded}"
    );
    let peer = shardbot_bus::Replier::bind(&url, &BusOptions::default()).unwrap();
    loop {
        let hb = next_heartbeat(&sub, deadline);
        if hb.shown_state().0 == "running" {
            assert!(
                hb.links.iter().any(|l| l.url == url && l.connected),
                "{hb:?}"
            );
            break;
        }
    }
    peer.close();
    signal(&child, "-TERM");
    assert!(finish(child).status.success());
}
