use std::time::Duration;

use shardbot_protocol::FrameError;

use crate::nng::NngError;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus: cannot listen on {url}: {source}")]
    Listen {
        url: String,
        #[source]
        source: NngError,
    },
    #[error("bus: cannot dial {url}: {source}")]
    Dial {
        url: String,
        #[source]
        source: NngError,
    },
    #[error("bus: invalid endpoint: {0}")]
    Endpoint(String),
    #[error("bus: cannot create the directory of {url}: {source}")]
    IpcDir {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The folder of an `ipc://` endpoint could be used by someone else to put a socket of
    /// theirs in the place of a shardbot service's.
    #[error(
        "bus: the folder {dir} of {url} {why}; a socket there could be replaced by another \
         user's: fix it (chown/chmod go-w) or choose another folder"
    )]
    IpcDirUnsafe {
        url: String,
        dir: String,
        why: String,
    },
    #[error("bus: cannot set {what}: {source}")]
    Option {
        what: &'static str,
        #[source]
        source: NngError,
    },
    #[error("bus: {op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: NngError,
    },
    #[error("bus: no reply from {url} within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("bus: socket closed")]
    Closed,
    #[error("bus: cannot start a thread: {0}")]
    Thread(String),
    #[error("bus: {0}")]
    Frame(#[from] FrameError),
}

pub(crate) fn io(op: &'static str) -> impl FnOnce(NngError) -> BusError {
    move |source| match source {
        NngError::CLOSED => BusError::Closed,
        source => BusError::Io { op, source },
    }
}
