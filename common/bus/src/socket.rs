//! Opening nng sockets on configured endpoints.

use std::time::Duration;

use nng::{
    Protocol, Socket,
    options::{ReconnectMaxTime, ReconnectMinTime},
};

use crate::{BusError, BusOptions, validate_url};

pub(crate) fn open(proto: Protocol) -> Result<Socket, BusError> {
    Socket::new(proto).map_err(|source| BusError::Io {
        op: "open socket",
        source,
    })
}

/// Sets an nng option, naming it in the error. (A macro because nng's option traits are
/// sealed and cannot bound a generic function.)
macro_rules! set_opt {
    ($socket:expr, $opt:ty, $what:expr, $value:expr) => {{
        use nng::options::Options as _;
        $socket
            .set_opt::<$opt>($value)
            .map_err(|source| $crate::BusError::Option {
                what: $what,
                source,
            })
    }};
}
pub(crate) use set_opt;

/// Creates the directory an `ipc://` socket file lives in (nng does not).
fn ensure_ipc_dir(url: &str) -> Result<(), BusError> {
    if let Some(dir) = url
        .strip_prefix("ipc://")
        .and_then(|p| std::path::Path::new(p).parent())
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| BusError::IpcDir {
            url: url.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Listens on `url`. A stale `ipc://` file left by a killed process is reclaimed by nng.
pub(crate) fn listen(socket: &Socket, url: &str) -> Result<(), BusError> {
    validate_url(url).map_err(BusError::Endpoint)?;
    ensure_ipc_dir(url)?;
    socket.listen(url).map_err(|source| BusError::Listen {
        url: url.to_owned(),
        source,
    })
}

/// Dials `url` in the background: succeeds even if nobody listens yet, and keeps redialling
/// with backoff (`reconnect_min_ms`..`reconnect_max_ms`) whenever the connection is lost.
pub(crate) fn dial(socket: &Socket, url: &str, opts: &BusOptions) -> Result<(), BusError> {
    validate_url(url).map_err(BusError::Endpoint)?;
    set_opt!(
        socket,
        ReconnectMinTime,
        "reconnect min time",
        Some(Duration::from_millis(opts.reconnect_min_ms))
    )?;
    set_opt!(
        socket,
        ReconnectMaxTime,
        "reconnect max time",
        Some(Duration::from_millis(opts.reconnect_max_ms))
    )?;
    socket.dial_async(url).map_err(|source| BusError::Dial {
        url: url.to_owned(),
        source,
    })
}
