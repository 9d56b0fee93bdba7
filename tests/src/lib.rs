//! The end-to-end harness: a private folder per test with its own configuration, bus
//! endpoints and logs; the real service binaries started as processes; bybit-sim on a free
//! port; helpers to watch the bus and to drive the sim's fault injection.
//!
//! The binaries are the release builds (`scripts/test` builds them first).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: failing loudly is the point

use std::{
    fs,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub mod books;
pub mod script;
pub mod webdriver;

pub use books::{Books, poll_or};
pub use script::{ScriptStack, replay_config, replay_config_with};

use shardbot_bus::{BusOptions, Requester, Subscriber};
use shardbot_bybit::{Environment, ExchangeSettings, rest::BybitClient};
use shardbot_protocol::{Event, GatewayReply, GatewayRequest, Heartbeat, Topic};

/// Path of a workspace binary: the release build in the same target folder as the running
/// test (`SHARDBOT_BIN_DIR` overrides). Release, because these tests run the stack at an
/// accelerated clock with 600 symbols, as users run it; debug builds are 10-50× slower and
/// would measure the build profile, not the stack.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SHARDBOT_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .expect("target/<profile>/deps")
                .join("release")
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first (scripts/test does: cargo build --release \
         --workspace --bins)",
        path.display()
    );
    path
}

/// The qty of a market order worth about `usdt` at `price` on `inst`: rounded up to its
/// qty step, at least its minimum order qty.
pub fn qty_worth(
    inst: &shardbot_bybit::models::market::InstrumentInfo,
    price: rust_decimal::Decimal,
    usdt: u32,
) -> rust_decimal::Decimal {
    let step = inst.lot_size_filter.qty_step;
    (((rust_decimal::Decimal::from(usdt) / price) / step).ceil() * step)
        .max(inst.lot_size_filter.min_order_qty)
}

/// The last traded price of `symbol` on the exchange `client` talks to.
pub fn last_price(
    rt: &tokio::runtime::Runtime,
    client: &BybitClient,
    symbol: &str,
) -> rust_decimal::Decimal {
    rt.block_on(client.tickers())
        .unwrap()
        .into_iter()
        .find(|t| t.symbol == symbol)
        .unwrap_or_else(|| panic!("{symbol}: no ticker"))
        .last_price
}

/// A free TCP port on 127.0.0.1 for a service a test starts, below the kernel's ephemeral
/// range. A port the kernel hands out for `:0` comes from that range, which is also where
/// every outgoing connection (the tests' and the services' HTTP clients) takes its local
/// port: between this check and the service's bind, one of them could take it, and the
/// service would fail with "address in use" (bybit-sim ended once with status 2, a start
/// error, in the risk tests; its output was gone with the test's folder, and this is the
/// cause that fits). Candidates are spread by process and call so parallel tests differ.
/// The sim's USDT perpetuals and each one's last price.
pub fn sim_market(
    rt: &tokio::runtime::Runtime,
    sim: &BybitClient,
) -> (
    Vec<shardbot_bybit::models::market::InstrumentInfo>,
    std::collections::HashMap<String, rust_decimal::Decimal>,
) {
    let instruments = rt.block_on(sim.usdt_perpetuals()).unwrap();
    let prices = rt
        .block_on(sim.tickers())
        .unwrap()
        .into_iter()
        .map(|t| (t.symbol, t.last_price))
        .collect();
    (instruments, prices)
}

/// A finished command's success and its output, standard output then standard error.
pub fn outcome(out: &std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(12_000, 65_535);
    let span = low - 10_000;
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503))
        .wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        );
    for i in 0..span {
        let port = 10_000 + (seed.wrapping_add(i.wrapping_mul(7_919))) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 10000 and {low}");
}

/// Short moving averages, so that prices cross often and every few bars bring intents.
pub const FAST_PARAMS: &str = r#"{
  "trend_following": {"optimized_at": "2026-11-22T00:00:00Z", "objective": "test",
                      "params": {"fast": 2, "slow": 5}},
  "mean_reversion": {"optimized_at": "2026-11-22T00:00:00Z", "objective": "test",
                     "params": {"rsi_period": 5, "bb_period": 10}}
}"#;

/// A REST client for the bybit-sim at `sim_url`, signed with `credentials` if given.
pub fn sim_client(sim_url: &str, credentials: Option<shardbot_bybit::Credentials>) -> BybitClient {
    ExchangeSettings {
        environment: Environment::Sim,
        sim_base_url: sim_url.to_owned(),
        rest_url: String::new(),
        public_ws_url: String::new(),
        private_ws_url: String::new(),
        recv_window_ms: 5000,
        request_timeout_ms: 10_000,
        ip_requests_per_5s: 50,
        ws_ping_interval_ms: 20_000,
        ws_dead_after_ms: 45_000,
        account: String::new(),
        accounts_file: String::new(),
        confirm_live: String::new(),
    }
    .client(credentials)
    .unwrap()
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    // The project's client installs the TLS provider reqwest needs.
    let _ = sim_client("http://127.0.0.1:1", None);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// POSTs JSON to one of bybit-sim's `/admin` endpoints.
pub fn sim_admin_post(sim_url: &str, path: &str, body: &str) {
    let (url, body) = (format!("{sim_url}{path}"), body.to_owned());
    let status = block_on(async move {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map(|r| r.status())
    })
    .unwrap();
    assert!(status.is_success(), "POST {path}: {status}");
}

/// GETs one of bybit-sim's `/admin` endpoints as JSON.
pub fn sim_admin_get(sim_url: &str, path: &str) -> serde_json::Value {
    let url = format!("{sim_url}{path}");
    block_on(async move { reqwest::get(&url).await?.json().await }).unwrap()
}

/// A stack's private folder: configuration, endpoints, logs, history.
#[derive(Debug)]
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub sim_url: String,
    pub config: PathBuf,
    children: Vec<(String, Child)>,
}

impl Stack {
    /// Writes `config.toml`: everything under the stack's folder, bybit-sim on a free port,
    /// plus `extra` TOML appended (its sections must not repeat the ones written here;
    /// `{sim_listen}` in it becomes the sim's address, for `[sim] listen`).
    pub fn new(extra: &str) -> Stack {
        Stack::with_endpoints(
            r#"market_data_pub = "ipc://{dir}/md.pub"
market_data_rep = "ipc://{dir}/md.rep"
order_router_pub = "ipc://{dir}/router.pub"
order_router_rep = "ipc://{dir}/router.rep"
risk_manager_pub = "ipc://{dir}/risk.pub"
risk_manager_rep = "ipc://{dir}/risk.rep"
reconciler_rep = "ipc://{dir}/reconciler.rep"
heartbeat = "ipc://{dir}/hb-{service}-{instance}.pub""#,
            extra,
        )
    }

    /// [`Stack::new`] with the body of `[endpoints]` given (`{dir}` becomes the stack's
    /// folder), e.g. `tcp://` endpoints for a stack split over hosts. In `extra`,
    /// `{sim_listen}` is the sim's address and `{sim_port}` its port.
    pub fn with_endpoints(endpoints: &str, extra: &str) -> Stack {
        let dir = tempfile::Builder::new().prefix("sb-e2e").tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_port();
        let sim_url = format!("http://127.0.0.1:{port}");
        let config = dir.path().join("config.toml");
        let extra = extra
            .replace("{sim_listen}", &format!("127.0.0.1:{port}"))
            .replace("{sim_port}", &port.to_string())
            .replace("{dir}", &d);
        let endpoints = endpoints.replace("{dir}", &d);
        let text = format!(
            r#"[log]
dir = "{d}/log"
level = "info"

[endpoints]
{endpoints}

[exchange]
sim_base_url = "{sim_url}"

{extra}
"#
        );
        fs::write(&config, text).unwrap();
        Stack {
            dir,
            sim_url,
            config,
            children: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// An endpoint URL inside the stack's folder.
    pub fn ipc(&self, name: &str) -> String {
        format!("ipc://{}/{name}", self.dir.path().display())
    }

    /// Starts a binary with `--config` and extra arguments and environment; its output goes
    /// to `<dir>/<label>.out`. Returns its pid.
    pub fn spawn(&mut self, label: &str, binary: &str, args: &[&str], env: &[(&str, &str)]) -> u32 {
        self.spawn_command(label, Command::new(bin(binary)), args, env)
    }

    /// [`Stack::spawn`] inside the network namespace `netns` (`ip netns exec`, which
    /// becomes the binary: the pid is the service's).
    pub fn spawn_in(
        &mut self,
        netns: &str,
        label: &str,
        binary: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> u32 {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).arg(bin(binary));
        self.spawn_command(label, cmd, args, env)
    }

    fn spawn_command(
        &mut self,
        label: &str,
        mut cmd: Command,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> u32 {
        let out = fs::File::create(self.path(&format!("{label}.out"))).unwrap();
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .env_remove("RUST_LOG")
            .env_remove("SHARDBOT_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.children.push((label.to_owned(), child));
        pid
    }

    /// Starts bybit-sim and waits (up to 10 s) until it answers: a runtime and a client
    /// signed with the sim's demo account (the keys the services use in sim mode).
    pub fn start_sim(&mut self) -> (tokio::runtime::Runtime, BybitClient) {
        self.spawn("bybit-sim", "bybit-sim", &[], &[]);
        self.sim_answers()
    }

    /// [`Stack::start_sim`] inside the network namespace `netns`; the test reaches it at
    /// `sim_url` (set it to an address routed into the namespace first).
    pub fn start_sim_in(&mut self, netns: &str) -> (tokio::runtime::Runtime, BybitClient) {
        self.spawn_in(netns, "bybit-sim", "bybit-sim", &[], &[]);
        self.sim_answers()
    }

    fn sim_answers(&mut self) -> (tokio::runtime::Runtime, BybitClient) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sim = self.account_client("sim-demo-key", "sim-demo-secret");
        let deadline = Instant::now() + Duration::from_secs(10);
        while rt.block_on(sim.sync_time()).is_err() {
            assert!(Instant::now() < deadline, "{}", self.output("bybit-sim"));
            std::thread::sleep(Duration::from_millis(100));
        }
        (rt, sim)
    }

    /// Waits (up to `within`) until a process's output contains `text`, failing if any
    /// started process exits meanwhile.
    pub fn wait_output(&mut self, label: &str, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.output(label).contains(text) {
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "{label}: no `{text}` within {within:?}:\n{}",
                self.output(label)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `shardbot <args> --config <the stack's configuration>` in the stack's folder, as
    /// an operator would: whether it succeeded, and its standard output then error.
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin("shardbot"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        outcome(&out)
    }

    /// kill -9 of a process started with [`spawn`](Self::spawn).
    pub fn kill9(&mut self, label: &str) {
        let i = self
            .children
            .iter()
            .position(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no process {label}"));
        let (_, mut child) = self.children.remove(i);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits (up to `within`) for a process started with [`spawn`](Self::spawn) to end on
    /// its own, and gives its exit status (it is no longer tracked).
    pub fn wait_exit(&mut self, label: &str, within: Duration) -> std::process::ExitStatus {
        let i = self
            .children
            .iter()
            .position(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no process {label}"));
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.children[i].1.try_wait().unwrap() {
                self.children.remove(i);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{label} still runs after {within:?}:\n{}",
                self.output(label)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The output of a process so far (for failure messages).
    pub fn output(&self, label: &str) -> String {
        fs::read_to_string(self.path(&format!("{label}.out"))).unwrap_or_default()
    }

    /// Fails if a started process has exited.
    pub fn assert_alive(&mut self) {
        for (label, child) in &mut self.children {
            if let Some(status) = child.try_wait().unwrap() {
                let out = fs::read_to_string(self.dir.path().join(format!("{label}.out")))
                    .unwrap_or_default();
                panic!("{label} exited ({status}):\n{out}");
            }
        }
    }

    /// A REST client for the stack's bybit-sim (public endpoints).
    pub fn client(&self) -> BybitClient {
        self.client_with(None)
    }

    /// A REST client for the stack's bybit-sim signed with an account's keys.
    pub fn account_client(&self, api_key: &str, api_secret: &str) -> BybitClient {
        self.client_with(Some(shardbot_bybit::Credentials::new(api_key, api_secret)))
    }

    fn client_with(&self, credentials: Option<shardbot_bybit::Credentials>) -> BybitClient {
        sim_client(&self.sim_url, credentials)
    }

    /// POSTs JSON to one of bybit-sim's `/admin` endpoints.
    pub fn admin(&self, path: &str, body: &str) {
        sim_admin_post(&self.sim_url, path, body);
    }

    /// GETs one of bybit-sim's admin paths, as JSON.
    pub fn admin_get(&self, path: &str) -> serde_json::Value {
        sim_admin_get(&self.sim_url, path)
    }

    /// How many REST requests bybit-sim has met with the fault `kind` (`rest_10006`,
    /// `rest_5xx`, `slow`).
    pub fn faults_served(&self, kind: &str) -> u64 {
        self.admin_get("/admin/faults/served")[kind]
            .as_u64()
            .unwrap()
    }

    /// Waits (up to `within`) until bybit-sim has met more than `before` requests with the
    /// fault `kind` (a held-back answer: the request was carried out); fails with the
    /// output of `label`.
    pub fn wait_fault_served(&self, kind: &str, before: u64, within: Duration, label: &str) {
        let deadline = Instant::now() + within;
        while self.faults_served(kind) == before {
            assert!(
                Instant::now() < deadline,
                "no request met the {kind} fault within {within:?}\n{}",
                self.output(label)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the risk manager and the order router (on [`Stack::new`]'s endpoints) and
    /// waits until both can take an intent: the router ready, and the risk manager's first
    /// read of the account done (before it, it refuses every intent as `RiskUnavailable`:
    /// a test that submitted right after "router ready" failed so in a suite run).
    pub fn start_order_path(&mut self) {
        self.spawn("risk-manager", "risk-manager", &[], &[]);
        self.spawn("order-router", "order-router", &[], &[]);
        self.wait_output("order-router", "router ready", Duration::from_secs(30));
        let risk = shardbot_bus::Requester::dial(
            &self.ipc("risk.rep"),
            &shardbot_bus::BusOptions::default(),
        )
        .unwrap();
        self.wait_until(
            "the risk manager's first read of the account",
            Duration::from_secs(30),
            "risk-manager",
            |_| {
                matches!(
                    risk.request_within::<_, shardbot_protocol::RiskReply>(
                        &shardbot_protocol::RiskRequest::Balance,
                        Duration::from_secs(5),
                    ),
                    Ok(shardbot_protocol::RiskReply::Balance(_))
                )
            },
        );
    }

    /// Polls `ok` until it holds, every 50 ms, failing after `within` (or at once if a
    /// process of the stack died) with `what` and the output of `label`.
    pub fn wait_until(
        &mut self,
        what: &str,
        within: Duration,
        label: &str,
        mut ok: impl FnMut(&Stack) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !ok(self) {
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}\n--- {label}:\n{}",
                self.output(label)
            );
            std::thread::sleep(Duration::from_millis(50)); // polling the stack's state
        }
    }

    /// Waits until the gateway answers a universe request; returns the symbols.
    pub fn wait_for_universe(&mut self, within: Duration) -> Vec<String> {
        let req = Requester::dial(&self.ipc("md.rep"), &BusOptions::default()).unwrap();
        let deadline = Instant::now() + within;
        loop {
            self.assert_alive();
            if let Ok(GatewayReply::Universe(u)) = req.request_within::<_, GatewayReply>(
                &GatewayRequest::Universe,
                Duration::from_secs(2),
            ) {
                return u
                    .instruments
                    .into_iter()
                    .map(|i| i.symbol.to_string())
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "no universe from the gateway within {within:?}:\n{}",
                self.output("market-data")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until a process's heartbeat (on its endpoint `hb_url`) satisfies `ok`.
    pub fn wait_heartbeat(
        &mut self,
        hb_url: &str,
        within: Duration,
        mut ok: impl FnMut(&Heartbeat) -> bool,
    ) -> Heartbeat {
        let sub = Subscriber::dial(&[hb_url], &BusOptions::default()).unwrap();
        sub.subscribe(Topic::HEARTBEAT_PREFIX).unwrap();
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            self.assert_alive();
            if let Ok(Some(r)) = sub.recv(Some(Duration::from_millis(200)))
                && let Event::Heartbeat(hb) = r.event
            {
                if ok(&hb) {
                    return hb;
                }
                last = Some(hb);
            }
            assert!(
                Instant::now() < deadline,
                "heartbeat on {hb_url} not as expected within {within:?}; last: {last:?}"
            );
        }
    }

    /// Appends a line to a file in the stack's folder (e.g. a parameters file).
    pub fn write(&self, rel: &str, text: &str) {
        let mut f = fs::File::create(self.path(rel)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("SHARDBOT_KEEP_E2E").is_some() {
            let kept = self.dir.path().to_path_buf();
            eprintln!("keeping {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}

/// A webhook receiver on 127.0.0.1: its URL (with a token-like path, `T0KEN-SECRET`, that
/// must never show in a log) and every POST's JSON body, answered 200 and the connection
/// closed (one request per connection, so a client's pooled connection is never left
/// waiting on a second request).
pub fn webhook() -> (String, std::sync::mpsc::Receiver<serde_json::Value>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hooks/T0KEN-SECRET",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let Ok(v) = serde_json::from_slice(&body) else {
                continue;
            };
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    (url, rx)
}
