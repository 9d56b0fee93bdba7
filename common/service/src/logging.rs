//! `tracing` to one file per process and to stderr.

use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::LogSettings;

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot create the log folder {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the log file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid log filter `{filter}`: {message}")]
    Filter { filter: String, message: String },
    #[error("a global logger is already installed in this process")]
    AlreadySet,
}

/// The background log writer's guard: dropping it flushes the file. Kept here rather than
/// in [`LogGuard`] alone so that the panic hook, which ends the process without running
/// destructors, can flush the panic's own log line first ([`flush`]).
static WRITER: std::sync::Mutex<Option<WorkerGuard>> = std::sync::Mutex::new(None);

/// Keeps the background log writer alive; dropping it flushes the file.
#[derive(Debug)]
pub struct LogGuard {
    pub path: PathBuf,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush();
    }
}

/// Flushes the log file and stops its writer (later lines go to stderr only).
pub fn flush() {
    let guard = match WRITER.lock() {
        Ok(mut g) => g.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    drop(guard);
}

/// The log file of one process: `<dir>/<service>.log`, or `<dir>/<service>-<instance>.log`
/// when there are several instances.
pub fn log_file(dir: &Path, service: &str, instance: &str) -> PathBuf {
    if instance == crate::SINGLE_INSTANCE {
        dir.join(format!("{service}.log"))
    } else {
        dir.join(format!("{service}-{instance}.log"))
    }
}

/// Installs the global subscriber: text to stderr, text or JSON lines to the log file (in
/// append mode, written by a background thread so logging never blocks an actor). The
/// filter is `RUST_LOG` if set, else `log.level`.
pub fn init(
    service: &str,
    instance: &str,
    settings: &LogSettings,
) -> Result<LogGuard, LoggingError> {
    let filter = |spec: &str| {
        EnvFilter::try_new(spec).map_err(|e| LoggingError::Filter {
            filter: spec.to_owned(),
            message: e.to_string(),
        })
    };
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.level.clone());
    // Logs name accounts, orders and balances: the owner's only (a new folder 0700, a new
    // file 0600).
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&settings.dir)
            .map_err(|source| LoggingError::Dir {
                dir: settings.dir.clone(),
                source,
            })?;
    }
    let path = log_file(&settings.dir, service, instance);
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
    }
    .map_err(|source| LoggingError::File {
        path: path.clone(),
        source,
    })?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let file_layer = if settings.json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(writer)
            .with_filter(filter(&spec)?)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer)
            .with_filter(filter(&spec)?)
            .boxed()
    };
    // Colours only on a terminal: under a supervisor stderr is a file.
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter(&spec)?);
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|_| LoggingError::AlreadySet)?;
    match WRITER.lock() {
        Ok(mut g) => *g = Some(guard),
        Err(poisoned) => *poisoned.into_inner() = Some(guard),
    }
    Ok(LogGuard { path })
}
