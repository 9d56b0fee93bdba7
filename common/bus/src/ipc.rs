//! Which `ipc://` endpoints have a process listening, read from the kernel's table of unix
//! sockets (`/proc/net/unix`) rather than by connecting: a socket file left by a killed
//! process has no listener, and a bare connection that closes before the bus's handshake
//! made libnng 1.5.2's REP socket stop reading. Used to find the running stacks (the CLI)
//! and to dial only the heartbeat endpoints that exist (the dashboard: a dialer of an
//! endpoint nobody listens on redials several times a second, for ever).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

/// The paths of the listening unix sockets on this machine; `None` where the kernel's
/// table cannot be read (not Linux).
pub fn listening() -> Option<HashSet<PathBuf>> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    Some(listeners(&table).map(PathBuf::from).collect())
}

/// The path of an `ipc://` URL.
pub fn path_of(url: &str) -> Option<&Path> {
    url.strip_prefix("ipc://").map(Path::new)
}

/// Whether `url` may have a listener: an `ipc://` one whose path is in `listening` (or
/// any, when the table could not be read); every other URL (`tcp://`) may.
pub fn may_listen(url: &str, listening: Option<&HashSet<PathBuf>>) -> bool {
    match (path_of(url), listening) {
        (Some(path), Some(set)) => set.contains(path),
        (Some(path), None) => path.exists(),
        (None, _) => true,
    }
}

/// The paths of the listening sockets of a `/proc/net/unix` table (flag `__SO_ACCEPTCON`,
/// 0x10000).
pub fn listeners(table: &str) -> impl Iterator<Item = &str> {
    table.lines().skip(1).filter_map(|line| {
        // Seven fields, then the path (which may hold spaces).
        let mut rest = line;
        let mut flags = None;
        for i in 0..7 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace)?;
            if i == 3 {
                flags = u32::from_str_radix(&rest[..end], 16).ok();
            }
            rest = &rest[end..];
        }
        let path = rest.trim();
        (flags? & 0x10000 != 0 && !path.is_empty()).then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_read_from_the_kernel_table() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
000000004a8c3cac: 00000003 00000000 00000000 0001 03   310
000000001bff36d8: 00000002 00000000 00010000 0001 01 629644 /tmp/sb/sim/risk-manager.rep
000000001bff36d9: 00000003 00000000 00000000 0001 03 629645 /tmp/sb/sim/risk-manager.rep
000000001bff36da: 00000002 00000000 00000000 0001 01 629646 /tmp/sb/old/risk-manager.rep
000000001bff36db: 00000002 00000000 00010000 0001 01 629647 /tmp/my stacks/demo/risk-manager.rep
000000001bff36dc: 00000002 00000000 00010000 0001 01 629648
";
        assert_eq!(
            listeners(table).collect::<Vec<_>>(),
            [
                "/tmp/sb/sim/risk-manager.rep",
                "/tmp/my stacks/demo/risk-manager.rep"
            ]
        );
    }

    #[test]
    fn only_a_listened_ipc_endpoint_may_listen() {
        let set: HashSet<PathBuf> = [PathBuf::from("/tmp/sb/hb-a.pub")].into();
        assert!(may_listen("ipc:///tmp/sb/hb-a.pub", Some(&set)));
        assert!(!may_listen("ipc:///tmp/sb/hb-b.pub", Some(&set)));
        assert!(may_listen("tcp://10.0.0.2:5555", Some(&set)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_listening_socket_is_seen_and_a_stale_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.rep");
        let stale = dir.path().join("stale.rep");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let set = listening().unwrap();
        assert!(set.contains(&live));
        assert!(!set.contains(&stale) && stale.exists());
    }
}
