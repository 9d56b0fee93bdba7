//! Opening NNG sockets on configured endpoints.

use std::time::Duration;

use crate::{
    BusError, BusOptions,
    nng::{Dialer, NngError, Protocol, Socket, opts},
    validate_url,
};

pub(crate) fn open(proto: Protocol) -> Result<Socket, BusError> {
    Socket::open(proto).map_err(|source| BusError::Io {
        op: "open socket",
        source,
    })
}

/// An option's setting, naming the option in the error.
pub(crate) fn option(what: &'static str) -> impl FnOnce(NngError) -> BusError {
    move |source| BusError::Option { what, source }
}

/// Creates the directory an `ipc://` socket file lives in (nng does not), owner-only when
/// new, and refuses one that another user owns or may write to: whoever can write there
/// can put a socket of theirs in the place of a service's (a fake risk manager approving
/// anything, a fake router swallowing intents).
fn ensure_ipc_dir(url: &str) -> Result<(), BusError> {
    if let Some(dir) = url
        .strip_prefix("ipc://")
        .and_then(|p| std::path::Path::new(p).parent())
        && !dir.as_os_str().is_empty()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|source| BusError::IpcDir {
            url: url.to_owned(),
            source,
        })?;
        check_ipc_dir(url, dir)?;
    }
    Ok(())
}

/// A dialer checks the folder too, when it exists already (it may dial before the
/// listener made it; the listener then checks it).
fn check_existing_ipc_dir(url: &str) -> Result<(), BusError> {
    if let Some(dir) = url
        .strip_prefix("ipc://")
        .and_then(|p| std::path::Path::new(p).parent())
        && !dir.as_os_str().is_empty()
        && dir.exists()
    {
        check_ipc_dir(url, dir)?;
    }
    Ok(())
}

#[cfg_attr(not(unix), allow(unused_variables))]
fn check_ipc_dir(url: &str, dir: &std::path::Path) -> Result<(), BusError> {
    #[cfg(unix)]
    {
        let io = |source| BusError::IpcDir {
            url: url.to_owned(),
            source,
        };
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(dir).map_err(io)?;
            let me = rustix::process::geteuid().as_raw();
            let why = ipc_dir_problem(meta.uid(), me, meta.mode());
            if let Some(why) = why {
                return Err(BusError::IpcDirUnsafe {
                    url: url.to_owned(),
                    dir: dir.display().to_string(),
                    why,
                });
            }
        }
    }
    Ok(())
}

/// Why a folder with this owner and mode is no place for our sockets, if it is not.
/// Root may use its users' folders (it can replace anything anyway).
fn ipc_dir_problem(owner: u32, me: u32, mode: u32) -> Option<String> {
    if owner != me && me != 0 {
        return Some(format!(
            "belongs to user id {owner}, not to this user ({me})"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "may be written by other users (mode {:o})",
            mode & 0o7777
        ));
    }
    None
}

/// Listens on `url`. A stale `ipc://` file left by a killed process is reclaimed by NNG.
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
    dialer(socket, url, opts).map(drop)
}

/// [`dial`], keeping the dialer so that it can be closed.
pub(crate) fn dialer(socket: &Socket, url: &str, opts: &BusOptions) -> Result<Dialer, BusError> {
    validate_url(url).map_err(BusError::Endpoint)?;
    check_existing_ipc_dir(url)?;
    socket
        .set_ms(
            opts::RECONNECT_MIN,
            Some(Duration::from_millis(opts.reconnect_min_ms)),
        )
        .map_err(option("reconnect min time"))?;
    socket
        .set_ms(
            opts::RECONNECT_MAX,
            Some(Duration::from_millis(opts.reconnect_max_ms)),
        )
        .map_err(option("reconnect max time"))?;
    let dialer = socket.dial(url).map_err(|source| BusError::Dial {
        url: url.to_owned(),
        source,
    })?;
    crate::links::register(url, socket.connection(), &dialer);
    Ok(dialer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::mine_owner_only(1000, 1000, 0o40700, None)]
    #[case::mine_readable(1000, 1000, 0o40755, None)]
    #[case::mine_group_writable(1000, 1000, 0o40775, Some("written by other users (mode 775)"))]
    #[case::mine_world_writable(1000, 1000, 0o41777, Some("mode 1777"))]
    #[case::someone_elses(1001, 1000, 0o40700, Some("belongs to user id 1001"))]
    #[case::root_uses_a_users(1000, 0, 0o40700, None)]
    #[case::root_world_writable(0, 0, 0o40777, Some("mode 777"))]
    fn an_ipc_folder_is_ours_and_not_writable_by_others(
        #[case] owner: u32,
        #[case] me: u32,
        #[case] mode: u32,
        #[case] problem: Option<&str>,
    ) {
        let got = ipc_dir_problem(owner, me, mode);
        match (problem, &got) {
            (None, None) => {}
            (Some(want), Some(why)) => assert!(why.contains(want), "{why}"),
            _ => panic!("{got:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_may_write_is_refused_by_listeners_and_dialers() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bus");
        let url = format!("ipc://{}/x.rep", dir.display());
        ensure_ipc_dir(&url).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "made owner-only");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        for r in [ensure_ipc_dir(&url), check_existing_ipc_dir(&url)] {
            match r {
                Err(BusError::IpcDirUnsafe { why, .. }) => assert!(why.contains("777"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        let missing = format!("ipc://{}/nowhere/x.rep", tmp.path().display());
        check_existing_ipc_dir(&missing).unwrap();
    }
}
