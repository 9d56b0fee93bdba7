//! The skeleton every shardbot binary shares.
//!
//! A service binary is thin:
//!
//! ```no_run
//! use clap::Parser;
//! use shardbot_service::{ServiceArgs, ServiceContext, run, exit_code};
//!
//! /// One line that says what the service does.
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     service: ServiceArgs,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let args = Args::parse();
//!     exit_code("my-service", run("my-service", "main", &args.service, |ctx: &ServiceContext| {
//!         // start this service's actors here
//!         Ok(())
//!     }))
//! }
//! ```
//!
//! [`run`] loads the layered configuration, installs logging (`<log.dir>/<service>.log`
//! and stderr), starts the actix system with a [`HeartbeatActor`] publishing on the
//! process's heartbeat endpoint, calls the service's start function, and then runs until
//! SIGTERM or SIGINT (clean exit 0) or until the service reports a fatal error through its
//! [`ShutdownHandle`] (exit 1, so the supervisor restarts it). The last heartbeat says
//! `stopping`.
//!
//! **Crash-only.** A panic anywhere in a service process (an actor, a spawned task, a
//! thread) ends the process: it is logged with its location, the log flushed, and the
//! process aborted, so the supervisor restarts it. Without this, a panic in an actix task
//! killed only that task: a reply never sent, a thread waiting forever, and a heartbeat
//! still saying `running` over a process that no longer did its work.

pub mod alert;
mod heartbeat;
mod logging;
mod metrics;
mod settings;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use actix::{Actor, Addr};
use shardbot_bus::Publisher;
use shardbot_protocol::{ServiceState, Shard};
use tokio::sync::mpsc;

pub use heartbeat::{HeartbeatActor, SetState};
pub use logging::{LogGuard, LoggingError, log_file};
pub use metrics::Metrics;
pub use settings::{
    CommonSettings, DEFAULT_TOML, ENV_PREFIX, Endpoints, HeartbeatSettings, LogSettings, Settings,
    SettingsError, check_name,
};

/// Instance name of services that run as a single process.
pub const SINGLE_INSTANCE: &str = "main";

/// Arguments every service accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServiceArgs {
    /// Local configuration file, layered over the built-in defaults
    /// (deploy/config/default.toml) and under SHARDBOT__<SECTION>__<KEY> variables.
    #[arg(long, env = "SHARDBOT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write the log file as JSON lines (same as log.json = true).
    #[arg(long)]
    pub json_logs: bool,
}

/// `--shard i/n` for services that own a share of the symbols.
#[derive(clap::Args, Debug, Clone)]
pub struct ShardArgs {
    /// This process's shard: index/count, 0-based (0/4, 1/4, 2/4, 3/4 for four workers;
    /// 0-4 works too).
    /// It owns the symbol slots s with s % count == index.
    #[arg(long, default_value = "0/1", value_name = "I/N")]
    pub shard: Shard,
}

impl ShardArgs {
    /// Instance name of this shard, e.g. `1-4`.
    pub fn instance(&self) -> String {
        format!("{}-{}", self.shard.index(), self.shard.count())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Logging(#[from] LoggingError),
    #[error(transparent)]
    Bus(#[from] shardbot_bus::BusError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("start-up failed: {0}")]
    Start(#[source] StartError),
    #[error("stopped on a fatal error: {0}")]
    Fatal(String),
}

/// Lets a service stop its process on an error it cannot recover from.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(mpsc::UnboundedSender<String>);

impl ShutdownHandle {
    /// Hands a request to the service's actor ([`shardbot_bus::ask_actor`]) and waits at
    /// most `deadline` for its answer. No answer by then means the actor is stuck: the
    /// service ends fatally (alive but deaf is worse than restarted by the supervisor),
    /// and the requester gets the error.
    pub fn ask_actor<R>(
        &self,
        service: &str,
        deadline: std::time::Duration,
        hand: impl FnOnce(shardbot_bus::ReplyTo<R>) -> bool,
    ) -> Result<R, shardbot_bus::Unanswered> {
        let asked = shardbot_bus::ask_actor(deadline, hand);
        self.fatal_if_stuck(service, &asked);
        asked
    }

    /// [`ask_actor`](Self::ask_actor) for async code (a replier serving without a thread
    /// per request): the same deadline, and the same end when it passes.
    pub async fn ask_actor_async<R>(
        &self,
        service: &str,
        deadline: std::time::Duration,
        hand: impl FnOnce(shardbot_bus::ReplyTo<R>) -> bool,
    ) -> Result<R, shardbot_bus::Unanswered> {
        let asked = shardbot_bus::ask_actor_async(deadline, hand).await;
        self.fatal_if_stuck(service, &asked);
        asked
    }

    /// No answer by the deadline: the actor is stuck, the service ends.
    fn fatal_if_stuck<R>(&self, service: &str, asked: &Result<R, shardbot_bus::Unanswered>) {
        if let Err(e @ shardbot_bus::Unanswered::Deadline(_)) = asked {
            self.fatal(format!("the {service}'s actor is stuck: {e}"));
        }
    }

    /// Stops the process with exit code 1 after the final heartbeat; the supervisor
    /// restarts it.
    pub fn fatal(&self, reason: impl Into<String>) {
        // If the receiver is gone the process is already stopping.
        let _ = self.0.send(reason.into());
    }
}

/// What a service's start function gets.
#[derive(Debug)]
pub struct ServiceContext {
    pub service: String,
    pub instance: String,
    /// Every configuration layer; read the service's own section with `settings.section`.
    pub settings: Settings,
    pub common: CommonSettings,
    pub heartbeat: Addr<HeartbeatActor>,
    /// Gauges published in every heartbeat (register them in the start function).
    pub metrics: Metrics,
    pub shutdown: ShutdownHandle,
    pub log_file: PathBuf,
    /// The webhook of `[alerts]` (a no-op without one).
    pub alerts: alert::Alerts,
}

/// The services of the market group, shared by every account stack (bybit-sim only in
/// sim mode); they publish their heartbeats where the stacks share them.
pub const MARKET_GROUP: [&str; 2] = ["market-data", "bybit-sim"];

/// Why a service's start function failed (bad configuration, an endpoint that cannot be
/// bound, ...): any error, named in one line and exit status 2.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a service process from start-up to shutdown. See the crate documentation.
pub fn run<F>(
    service: &str,
    instance: &str,
    args: &ServiceArgs,
    start: F,
) -> Result<(), ServiceError>
where
    F: FnOnce(&ServiceContext) -> Result<(), StartError>,
{
    check_name("service name", service)?;
    check_name("instance name", instance)?;
    let settings = Settings::load(args.config.as_deref())?;
    let mut common = settings.common()?;
    if args.json_logs {
        common.log.json = true;
    }
    let log = logging::init(service, instance, &common.log)?;
    crash_on_panic(service);
    let alerts = alert::Alerts::new(&common.alerts, service, &settings.account_label())
        .map_err(SettingsError::Invalid)?;
    tracing::info!(
        service,
        instance,
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        config = ?settings.source(),
        log_file = %log.path.display(),
        "starting"
    );

    let system = actix::System::new();
    let result = system.block_on(async {
        let hb_url = common.endpoints.heartbeat_of(service, instance);
        let publisher = Publisher::bind(&hb_url, &common.bus)?;
        let metrics = Metrics::default();
        let heartbeat = HeartbeatActor::new(
            publisher,
            service,
            instance,
            Duration::from_millis(common.heartbeat.interval_ms),
            metrics.clone(),
        )
        .start();
        let (tx, mut fatal) = mpsc::unbounded_channel();
        let ctx = ServiceContext {
            service: service.to_owned(),
            instance: instance.to_owned(),
            settings: settings.clone(),
            common: common.clone(),
            heartbeat: heartbeat.clone(),
            metrics,
            shutdown: ShutdownHandle(tx),
            log_file: log.path.clone(),
            alerts: alerts.clone(),
        };
        if let Err(e) = start(&ctx) {
            // The heartbeat actor must run once inside the runtime: dropped unstarted at
            // exit, it would start (and panic) outside it. Its last beat says "stopping".
            let _ = heartbeat.send(SetState(ServiceState::Stopping)).await;
            return Err(ServiceError::Start(e));
        }
        let _ = heartbeat.send(SetState(ServiceState::Running)).await;
        tracing::info!(heartbeat = %hb_url, "running");

        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(ServiceError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?;
        let outcome = tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
            Some(reason) = fatal.recv() => Err(reason),
        };
        match &outcome {
            Ok(signal) => tracing::info!(signal, "shutting down"),
            Err(reason) => tracing::error!(reason, "shutting down on a fatal error"),
        }
        // The final heartbeat tells watchers this stop was deliberate.
        let _ = heartbeat.send(SetState(ServiceState::Stopping)).await;
        outcome.map(|_| ()).map_err(ServiceError::Fatal)
    });
    match &result {
        Ok(()) => tracing::info!("stopped"),
        Err(e) => tracing::error!(error = %e, "stopped"),
    }
    drop(system);
    drop(log);
    result
}

/// Installs the crash-only panic hook (see the crate documentation): the panic is logged
/// (ERROR, with its location and thread), the log file flushed, and the process aborted
/// (SIGABRT), whatever thread panicked.
fn crash_on_panic(service: &str) {
    let service = service.to_owned();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(
            service,
            thread,
            panic = %info,
            "panic: the process ends so that its supervisor restarts it"
        );
        default(info);
        logging::flush();
        std::process::abort();
    }));
}

/// Turns a service's result into its exit code, printing a failure as one line on stderr:
/// 0 on a clean stop, 2 for bad configuration or start-up, 1 for a fatal error at run
/// time.
/// An error message on one line: parsers (TOML's, for one) draw multi-line pictures of
/// where the error is; the lines that carry words are kept, the drawing (`|`, `^`) goes.
pub fn single_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            let drawing = l
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            !l.is_empty() && !drawing.starts_with('|') && !drawing.starts_with('^')
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn exit_code(service: &str, result: Result<(), ServiceError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut line = format!("{service}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let text = s.to_string();
                if !line.contains(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
                source = s.source();
            }
            eprintln!("{}", single_line(&line));
            match e {
                ServiceError::Fatal(_) => ExitCode::from(1),
                _ => ExitCode::from(2),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parser_drawing_becomes_one_line() {
        let toml = "cannot read configuration: TOML parse error at line 1, column 6\n  |\n1 | [risk\n  |      ^\nunclosed table, expected `]`\n in x.toml";
        assert_eq!(
            super::single_line(toml),
            "cannot read configuration: TOML parse error at line 1, column 6 unclosed table, expected `]` in x.toml"
        );
        assert_eq!(super::single_line("plain"), "plain");
    }
}
