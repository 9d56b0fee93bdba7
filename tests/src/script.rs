//! The whole stack as a user runs it: `scripts/stack` over supervisord, in a private
//! folder (generated configuration, state, logs, bus endpoints, bybit-sim's port), so a
//! test never touches the checkout's own `var/` or `deploy/generated/`.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use shardbot_bybit::{Credentials, rest::BybitClient};

use crate::{bin, free_port, sim_admin_get, sim_admin_post, sim_client};

/// The sim's ready-made demo account (deploy/config/default.toml).
pub const SIM_KEY: &str = "sim-demo-key";
pub const SIM_SECRET: &str = "sim-demo-secret";

/// A stack run by `scripts/stack` in its own folder; `down` when dropped.
#[derive(Debug)]
pub struct ScriptStack {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The first account stack's dashboard port (`SHARDBOT_DASHBOARD_PORT`).
    pub dashboard_port: u16,
    pub config: PathBuf,
}

/// The checkout's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the checkout")
        .to_owned()
}

impl ScriptStack {
    /// A folder with `config.toml` = `config` (`{dir}` becomes the folder's path).
    pub fn new(config: &str) -> ScriptStack {
        let dir = tempfile::Builder::new()
            .prefix("sb-stack")
            .tempdir()
            .unwrap();
        let path = dir.path().join("config.toml");
        fs::write(
            &path,
            config.replace("{dir}", &dir.path().display().to_string()),
        )
        .unwrap();
        ScriptStack {
            port: free_port(),
            dashboard_port: free_port(),
            config: path,
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let bin_dir = bin("shardbot")
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        vec![
            (
                "SHARDBOT_STACK_CONF",
                self.path("conf").display().to_string(),
            ),
            ("SHARDBOT_STACK_RUN", self.path("run").display().to_string()),
            ("SHARDBOT_STACK_IPC", self.path("ipc").display().to_string()),
            ("SHARDBOT_SIM_PORT", self.port.to_string()),
            ("SHARDBOT_DASHBOARD_PORT", self.dashboard_port.to_string()),
            ("SHARDBOT_BIN_DIR", bin_dir.display().to_string()),
        ]
    }

    /// Runs `scripts/stack ARGS` in the stack's folder; its exit status and output.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        Command::new(root().join("scripts/stack"))
            .args(args)
            .envs(self.env())
            .env_remove("SHARDBOT_CONFIG")
            .output()
            .unwrap()
    }

    /// Runs `shardbot ARGS` as an operator would next to this stack (its ipc folder, no
    /// configuration file): (success, stdout + stderr).
    pub fn shardbot(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin("shardbot"))
            .args(args)
            .envs(self.env())
            .env_remove("SHARDBOT_CONFIG")
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        crate::outcome(&out)
    }

    /// Runs `scripts/stack ARGS`: (success, stdout + stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        let out = self.output(args);
        crate::outcome(&out)
    }

    /// `scripts/stack up --no-build --config <the folder's config> ARGS`, which must work.
    pub fn up(&self, args: &[&str]) -> String {
        let config = self.config.display().to_string();
        let mut all = vec!["up", "--no-build", "--config", config.as_str()];
        all.extend_from_slice(args);
        let (ok, out) = self.run(&all);
        assert!(ok, "scripts/stack {all:?} failed:\n{out}");
        out
    }

    /// `scripts/stack up --no-build` with no configuration file and no other flag: the
    /// stack a new user starts (default configuration; only the folder layout and ports
    /// come from this test's environment, as [`ScriptStack::output`] sets them).
    pub fn up_plain(&self) -> String {
        let (ok, out) = self.run(&["up", "--no-build"]);
        assert!(ok, "scripts/stack up failed:\n{out}");
        out
    }

    /// The supervisor's view: program → (state, pid).
    pub fn supervisor(&self) -> HashMap<String, (String, Option<u32>)> {
        let out = Command::new("supervisorctl")
            .args([
                "-c",
                &self.path("conf/supervisord.conf").display().to_string(),
                "status",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let pid = (f.get(2) == Some(&"pid"))
                    .then(|| f.get(3)?.trim_end_matches(',').parse().ok())
                    .flatten();
                Some((f.first()?.to_string(), (f.get(1)?.to_string(), pid)))
            })
            .collect()
    }

    /// `supervisorctl ACTION PROGRAM` (`stop`, `start`): whether it succeeded.
    pub fn ctl(&self, action: &str, program: &str) -> bool {
        Command::new("supervisorctl")
            .args([
                "-c",
                &self.path("conf/supervisord.conf").display().to_string(),
                action,
                program,
            ])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The pid of a RUNNING program.
    pub fn pid(&self, program: &str) -> Option<u32> {
        match self.supervisor().get(program) {
            Some((state, pid)) if state == "RUNNING" => *pid,
            _ => None,
        }
    }

    /// kill -9 a program's process; waits until the supervisor runs a new one, returns
    /// its pid.
    pub fn kill9(&self, program: &str, within: Duration) -> u32 {
        let old = self
            .pid(program)
            .unwrap_or_else(|| panic!("{program} is not running: {:?}", self.supervisor()));
        let ok = Command::new("kill")
            .args(["-9", &old.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -9 {old} ({program})");
        self.wait(&format!("{program} restarted"), within, || {
            self.pid(program).filter(|p| *p != old)
        })
    }

    /// Polls `f` every 200 ms until it gives a value.
    pub fn wait<T>(&self, what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; supervisor: {:?}",
                self.supervisor()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls `f` every 200 ms until it gives a value, or `None` after `within`.
    pub fn wait_or<T>(&self, within: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
        crate::poll_or(within, f)
    }

    /// A log file of the stack (`log/<group>/<file>`).
    pub fn log(&self, rel: &str) -> String {
        fs::read_to_string(self.path(&format!("run/log/{rel}"))).unwrap_or_default()
    }

    fn sim_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A REST client for the stack's bybit-sim, signed with the sim's demo account.
    pub fn client(&self) -> BybitClient {
        sim_client(&self.sim_url(), Some(Credentials::new(SIM_KEY, SIM_SECRET)))
    }

    /// GETs one of bybit-sim's `/admin` endpoints as JSON.
    pub fn admin_get(&self, path: &str) -> serde_json::Value {
        sim_admin_get(&self.sim_url(), path)
    }

    /// GETs a path of the (first) account stack's dashboard with its token, as text.
    pub fn dashboard_get(&self, path: &str) -> String {
        let token = fs::read_to_string(self.path("run/sim/dashboard.token")).unwrap();
        let url = format!("http://127.0.0.1:{}{path}", self.dashboard_port);
        crate::block_on(async move {
            reqwest::Client::new()
                .get(&url)
                .bearer_auth(token.trim())
                .send()
                .await?
                .text()
                .await
        })
        .unwrap()
    }

    /// POSTs JSON to one of bybit-sim's `/admin` endpoints.
    pub fn admin(&self, path: &str, body: &str) {
        sim_admin_post(&self.sim_url(), path, body);
    }
}

impl Drop for ScriptStack {
    fn drop(&mut self) {
        let (ok, out) = self.run(&["down"]);
        if !ok {
            eprintln!("scripts/stack down failed:\n{out}");
        }
        if std::thread::panicking() {
            // A failed test keeps its folder (logs, journal, generated configuration).
            let kept = std::mem::replace(
                &mut self.dir,
                tempfile::Builder::new()
                    .prefix("sb-stack-empty")
                    .tempdir()
                    .unwrap(),
            )
            .keep();
            eprintln!("the stack's folder is kept for a look: {}", kept.display());
        }
    }
}

/// The configuration of a stack trading bybit-sim's replay of the eight real 5-minute
/// series of `../shared/data/klines/bybit_linear_5m` at 300× (a bar a second), with fast
/// syncs and `{dir}/optimized_parameters.json` (write [`crate::FAST_PARAMS`] there).
/// `risk_extra` goes into `[risk]`, `sections` after everything.
pub fn replay_config(risk_extra: &str, sections: &str) -> String {
    replay_config_with(300.0, "", "", risk_extra, sections)
}

/// [`replay_config`] at `clock_speed`, with `sim_extra` in `[sim]` and `strategy_extra`
/// in `[strategy]`.
pub fn replay_config_with(
    clock_speed: f64,
    sim_extra: &str,
    strategy_extra: &str,
    risk_extra: &str,
    sections: &str,
) -> String {
    let replay = shardbot_testdata::klines("bybit_linear_5m");
    format!(
        r#"[sim]
replay_dir = "{}"
replay_warmup_bars = 300
clock_speed = {clock_speed:?}
{sim_extra}

[strategy]
interval = "5"
parameters_file = "{{dir}}/optimized_parameters.json"
history_bars = 300
{strategy_extra}

[risk]
sync_interval_ms = 1000
{risk_extra}

[reconciler]
close_retry_ms = 500

{sections}
"#,
        replay.display()
    )
}
