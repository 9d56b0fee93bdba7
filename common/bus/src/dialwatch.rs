//! Watched dialers: a dialer that has had no connection for `redial_after_ms` is closed
//! and replaced by a fresh one.
//!
//! Why: nng 1.5.2 (Debian's libnng, the one linked here) has a dialer that can stop
//! redialing for good when its peer goes away during the connection handshake. nng issue
//! #1518 ("Disconnect during negotiation breaks listener", fixed after 1.5.2) is the
//! listener side of the same flaw. It was seen in the stack: a service that died just as
//! it started (its heartbeat publisher bound, the dashboard connecting) was never heard
//! again after the supervisor restarted it, and `tests/processes.rs` reproduces it in
//! about one run in twenty without this watch. For a peer that is really down, replacing
//! the dialer only restarts its redial loop; for a stuck dialer it is the cure.
//!
//! One thread per process checks every watched socket; a socket is dropped from the watch
//! when its owner ([`Subscriber`](crate::Subscriber) or [`Requester`](crate::Requester))
//! is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::{Duration, Instant},
};

use nng::{Dialer, Pipe, PipeEvent, Socket};

use crate::BusError;

/// The dialers of one socket and the connections each has.
#[derive(Debug)]
pub(crate) struct DialWatch {
    watched: Arc<Watched>,
}

#[derive(Debug)]
struct Watched {
    socket: Socket,
    /// Shared with the socket's pipe callback (which must not hold the socket: that
    /// would be a cycle keeping the socket open forever).
    links: Arc<Mutex<Links>>,
    redial_after: Duration,
}

#[derive(Debug, Default)]
struct Links {
    list: Vec<Link>,
    /// Every open connection and the dialer that made it (filled by the pipe callback,
    /// which can run before a new dialer is recorded in `list`).
    pipes: HashMap<Pipe, Dialer>,
    /// How many times a dialer was replaced, for tests and logs.
    replaced: u64,
}

#[derive(Debug)]
struct Link {
    url: String,
    dialer: Option<Dialer>,
    /// Since when the dialer has had no connection (or since it was created).
    idle_since: Instant,
}

impl Links {
    fn connected(&self, d: Dialer) -> bool {
        self.pipes.values().any(|p| *p == d)
    }
}

fn lock(links: &Mutex<Links>) -> std::sync::MutexGuard<'_, Links> {
    links.lock().unwrap_or_else(|p| p.into_inner())
}

impl DialWatch {
    /// Watches `socket` (before any dial: it installs the socket's pipe callback).
    pub(crate) fn new(socket: &Socket, redial_after: Duration) -> Result<DialWatch, BusError> {
        let links = Arc::new(Mutex::new(Links::default()));
        let cb_links = links.clone();
        socket
            .pipe_notify(move |pipe, event| {
                let mut l = lock(&cb_links);
                match event {
                    PipeEvent::AddPost => {
                        if let Some(d) = pipe.dialer() {
                            l.pipes.insert(pipe, d);
                        }
                    }
                    PipeEvent::RemovePost => {
                        if let Some(d) = l.pipes.remove(&pipe)
                            && !l.connected(d)
                            && let Some(link) = l.list.iter_mut().find(|k| k.dialer == Some(d))
                        {
                            link.idle_since = Instant::now();
                        }
                    }
                    _ => {}
                }
            })
            .map_err(|source| BusError::Io {
                op: "watch connections",
                source,
            })?;
        let watched = Arc::new(Watched {
            socket: socket.clone(),
            links,
            redial_after,
        });
        register(&watched);
        Ok(DialWatch { watched })
    }

    /// Dials `url` in the background (nng redials with backoff whenever the connection is
    /// lost), watched.
    pub(crate) fn dial(&self, url: &str) -> Result<(), BusError> {
        let dialer =
            Dialer::new(&self.watched.socket, url, true).map_err(|source| BusError::Dial {
                url: url.to_owned(),
                source,
            })?;
        lock(&self.watched.links).list.push(Link {
            url: url.to_owned(),
            dialer: Some(dialer),
            idle_since: Instant::now(),
        });
        Ok(())
    }

    /// How many dialers were replaced so far.
    #[cfg(test)]
    pub(crate) fn replaced(&self) -> u64 {
        lock(&self.watched.links).replaced
    }
}

impl Watched {
    /// Replaces every dialer idle for `redial_after`. Returns false once the socket is
    /// closed (nothing left to watch).
    fn check(&self) -> bool {
        let due: Vec<(usize, Dialer, String)> = {
            let mut l = lock(&self.links);
            let now = Instant::now();
            let mut due = Vec::new();
            for i in 0..l.list.len() {
                let Some(d) = l.list[i].dialer else { continue };
                if !l.connected(d) && now.duration_since(l.list[i].idle_since) >= self.redial_after
                {
                    l.list[i].dialer = None;
                    due.push((i, d, l.list[i].url.clone()));
                }
            }
            due
        };
        for (i, old, url) in due {
            // Closed outside the lock: closing waits for the dialer's pipes, whose removal
            // runs the pipe callback, which takes the lock.
            old.close();
            match Dialer::new(&self.socket, &url, true) {
                Ok(d) => {
                    let mut l = lock(&self.links);
                    l.replaced += 1;
                    l.list[i].dialer = Some(d);
                    l.list[i].idle_since = Instant::now();
                    tracing::debug!(url, "bus: a dialer without a connection was replaced");
                }
                Err(nng::Error::Closed) => return false,
                Err(e) => {
                    // Tried again at the next check.
                    tracing::warn!(url, error = %e, "bus: cannot redial");
                    let mut l = lock(&self.links);
                    l.list[i].idle_since = Instant::now();
                }
            }
        }
        true
    }
}

/// Every watched socket of the process.
static WATCHED: Mutex<Vec<Weak<Watched>>> = Mutex::new(Vec::new());

/// How often the watch thread looks at the sockets.
const CHECK_EVERY: Duration = Duration::from_millis(250);

fn register(w: &Arc<Watched>) {
    WATCHED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(w));
    static THREAD: OnceLock<()> = OnceLock::new();
    THREAD.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("bus-dialwatch".into())
            .spawn(|| {
                loop {
                    // A periodic check, not a wait for an event: a stuck dialer makes none.
                    std::thread::sleep(CHECK_EVERY);
                    let alive: Vec<Arc<Watched>> = {
                        let mut all = WATCHED.lock().unwrap_or_else(|p| p.into_inner());
                        all.retain(|w| w.strong_count() > 0);
                        all.iter().filter_map(Weak::upgrade).collect()
                    };
                    for w in alive {
                        if !w.check() {
                            lock(&w.links).list.clear();
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "bus: cannot start the dialer watch; a stuck dialer stays stuck");
        }
    });
}

#[cfg(test)]
mod tests {
    use nng::Protocol;

    use super::*;
    use crate::{BusOptions, Publisher};

    #[test]
    fn a_dialer_without_a_connection_is_replaced_and_a_connected_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("ipc://{}", dir.path().join("w.pub").display());
        let socket = Socket::new(Protocol::Sub0).unwrap();
        let watch = DialWatch::new(&socket, Duration::from_millis(300)).unwrap();
        watch.dial(&url).unwrap();
        // Nobody listens: replaced again and again.
        let t0 = Instant::now();
        while watch.replaced() < 2 {
            assert!(t0.elapsed() < Duration::from_secs(10), "never replaced");
            std::thread::sleep(Duration::from_millis(50)); // polling the counter
        }
        // Once connected, left alone.
        let _publisher = Publisher::bind(&url, &BusOptions::default()).unwrap();
        let t0 = Instant::now();
        while !{
            let l = lock(&watch.watched.links);
            l.list[0].dialer.is_some_and(|d| l.connected(d))
        } {
            assert!(t0.elapsed() < Duration::from_secs(10), "never connected");
            std::thread::sleep(Duration::from_millis(50)); // polling the state
        }
        let before = watch.replaced();
        std::thread::sleep(Duration::from_millis(1200)); // four watch periods connected
        assert_eq!(watch.replaced(), before, "a connected dialer is kept");
    }
}
