//! REQ/REP with timeouts and resend.
//!
//! A [`Requester`] can be shared by many threads: each request runs in its own nng context,
//! so replies are matched to their requests. A request is resent every
//! `request_resend_ms` until answered, and at once when the connection to the replier
//! drops; so a request that was in flight when a replier crashed is answered by the
//! restarted replier. Handlers must therefore be idempotent (intent ids make the router's
//! so). With nobody answering, the request fails after `request_timeout_ms`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use nng::{
    Aio, AioResult, Context, Protocol, Socket,
    options::{RecvTimeout, protocol::reqrep::ResendTime},
};
use serde::{Serialize, de::DeserializeOwned};
use shardbot_protocol::{decode, encode};

use crate::{BusError, BusOptions, error::io, socket};

/// The requesting end.
#[derive(Debug, Clone)]
pub struct Requester {
    socket: Socket,
    url: String,
    timeout: Duration,
}

impl Requester {
    pub fn dial(url: &str, opts: &BusOptions) -> Result<Requester, BusError> {
        let s = socket::open(Protocol::Req0)?;
        socket::set_opt!(
            &s,
            ResendTime,
            "request resend time",
            Some(opts.request_resend())
        )?;
        socket::dial(&s, url, opts)?;
        Ok(Requester {
            socket: s,
            url: url.to_owned(),
            timeout: opts.request_timeout(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `request` and waits for the reply, with the configured timeout. Blocking.
    pub fn request<Q: Serialize, R: DeserializeOwned>(&self, request: &Q) -> Result<R, BusError> {
        self.request_within(request, self.timeout)
    }

    /// Same as [`request`](Self::request) with an explicit timeout.
    pub fn request_within<Q: Serialize, R: DeserializeOwned>(
        &self,
        request: &Q,
        timeout: Duration,
    ) -> Result<R, BusError> {
        let body = encode("request", request)?;
        let reply = self.request_bytes(&body, timeout)?;
        Ok(decode("reply", &reply)?)
    }

    /// Raw request/reply round trip. Fails with [`BusError::Timeout`] when no reply came
    /// within `timeout` (never earlier; at most [`NNG_CLOCK_SLACK`] later).
    pub fn request_bytes(&self, body: &[u8], timeout: Duration) -> Result<Vec<u8>, BusError> {
        let ctx = Context::new(&self.socket).map_err(io("open request context"))?;
        let (tx, rx) = mpsc::sync_channel::<AioResult>(2);
        let aio = Aio::new(move |_aio, res| {
            // The receiver lives until both operations completed; a failed send can only
            // mean it gave up, and then nobody needs the result.
            let _ = tx.send(res);
        })
        .map_err(io("allocate request aio"))?;
        let deadline = std::time::Instant::now() + timeout;
        aio.set_timeout(Some(timeout + NNG_CLOCK_SLACK))
            .map_err(io("set request timeout"))?;
        ctx.send(&aio, body)
            .map_err(|(_, e)| io("send request")(e))?;
        match completion(&aio, &rx) {
            Ok(AioResult::Send(Ok(()))) => {}
            Ok(AioResult::Send(Err((_, nng::Error::TimedOut)))) => {
                return Err(self.timed_out(timeout));
            }
            Ok(AioResult::Send(Err((_, e)))) => return Err(io("send request")(e)),
            Ok(_) | Err(_) => return Err(BusError::Closed),
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        aio.set_timeout(Some(left.max(Duration::from_millis(1)) + NNG_CLOCK_SLACK))
            .map_err(io("set request timeout"))?;
        ctx.recv(&aio).map_err(io("receive reply"))?;
        match completion(&aio, &rx) {
            Ok(AioResult::Recv(Ok(msg))) => Ok(msg.as_slice().to_vec()),
            Ok(AioResult::Recv(Err(nng::Error::TimedOut))) => Err(self.timed_out(timeout)),
            Ok(AioResult::Recv(Err(e))) => Err(io("receive reply")(e)),
            Ok(_) | Err(_) => Err(BusError::Closed),
        }
    }

    /// Async wrapper for actors: runs the blocking request on tokio's blocking pool.
    pub async fn request_async<Q, R>(&self, request: Q) -> Result<R, BusError>
    where
        Q: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.request(&request))
            .await
            .map_err(|_| BusError::Closed)?
    }

    fn timed_out(&self, after: Duration) -> BusError {
        BusError::Timeout {
            url: self.url.clone(),
            after,
        }
    }
}

/// nng's timers run on a clock of whole milliseconds and fired up to 1.3 ms before a
/// timeout was due by `std::time::Instant` (measured: 298.7-298.97 ms for 300 ms, in 11 of 40
/// runs). Each aio timeout is lengthened by this much so a request never fails early.
pub const NNG_CLOCK_SLACK: Duration = Duration::from_millis(2);

/// Waits for the result of the operation running on `aio`.
///
/// The callback hands its result over the channel *before* it returns, and it holds a
/// clone of the `Aio`. If the requester dropped its own handle first, the callback's clone
/// would be the last one and would free the aio from inside its own callback, which
/// deadlocks in nng. `Aio::wait` returns only once the callback has completed, so the
/// requester's handle is always the last.
fn completion(aio: &Aio, rx: &mpsc::Receiver<AioResult>) -> Result<AioResult, mpsc::RecvError> {
    let result = rx.recv();
    aio.wait();
    result
}

/// The frame of a replier's own liveness probe; answered without the handler. (Not a
/// valid msgpack request of any type, so it can never be confused with one.)
const PROBE: &[u8] = b"\xc1shardbot-replier-probe";
/// An idle replier probes itself this often.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A probe unanswered for this long means the socket has stopped reading.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the serving thread waits for a request before looking at the watchdog.
const RECV_POLL: Duration = Duration::from_millis(500);
/// How long a concurrent worker waits for its reply to leave (a requester gone: dropped).
const REPLY_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The replying end. [`serve`](Replier::serve) answers one request at a time, in arrival
/// order; [`serve_concurrent`](Replier::serve_concurrent) several at once.
///
/// A watchdog keeps it alive: with Debian's nng 1.5.2 a REP socket can stop serving new
/// connections for good when requesters are killed while connecting or mid-exchange
/// (their requests sit unread in the kernel; seen after a few hundred `kill -9`s of
/// clients, and in a stack start-up where the router died while connecting). While idle,
/// the replier sends itself a probe over a new connection every [`PROBE_EVERY`]; a probe
/// left unanswered for [`PROBE_TIMEOUT`] makes the serving thread close the socket and
/// listen afresh. Requesters reconnect by
/// themselves and resend what was in flight, so nothing is lost; the handlers are
/// idempotent already (see the module documentation).
#[derive(Debug, Clone)]
pub struct Replier {
    socket: Arc<Mutex<Socket>>,
    url: String,
    closed: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
}

impl Replier {
    pub fn bind(url: &str, _opts: &BusOptions) -> Result<Replier, BusError> {
        Ok(Replier {
            socket: Arc::new(Mutex::new(Self::listen(url)?)),
            url: url.to_owned(),
            closed: Arc::new(AtomicBool::new(false)),
            restarts: Arc::new(AtomicU64::new(0)),
        })
    }

    fn listen(url: &str) -> Result<Socket, BusError> {
        let s = socket::open(Protocol::Rep0)?;
        socket::set_opt!(&s, RecvTimeout, "reply receive timeout", Some(RECV_POLL))?;
        socket::listen(&s, url)?;
        Ok(s)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many times the watchdog has re-opened the socket.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    fn current(&self) -> Socket {
        self.socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves requests until the socket is closed: decodes each as `Q`, calls `handler`,
    /// sends back its reply. A request that does not decode is answered by `on_bad_request`
    /// (so the requester gets an error instead of a timeout). Blocking: run it on its own
    /// thread.
    pub fn serve<Q, R, F, B>(&self, mut handler: F, on_bad_request: B) -> Result<(), BusError>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: FnMut(Q) -> R,
        B: Fn(String) -> R,
    {
        let watchdog = Watchdog::start(&self.url, self.closed.clone(), 1);
        let mut sock = self.current();
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return Ok(());
            }
            if watchdog.stalled.swap(false, Ordering::Relaxed) {
                sock = self.listen_afresh(sock);
                if self.closed.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            let msg = match sock.recv() {
                Ok(m) => m,
                Err(nng::Error::TimedOut) => continue,
                Err(nng::Error::Closed) if self.closed.load(Ordering::Relaxed) => return Ok(()),
                Err(nng::Error::Closed) => continue,
                Err(e) => return Err(io("receive request")(e)),
            };
            watchdog.busy.fetch_add(1, Ordering::Relaxed);
            let sent = match self.answer(msg.as_slice(), &mut handler, &on_bad_request) {
                Ok(bytes) => sock.send(bytes.as_slice()),
                Err(e) => {
                    watchdog.busy.fetch_sub(1, Ordering::Relaxed);
                    return Err(e);
                }
            };
            watchdog.busy.fetch_sub(1, Ordering::Relaxed);
            match sent {
                Ok(()) => {}
                Err((_, nng::Error::Closed)) if self.closed.load(Ordering::Relaxed) => {
                    return Ok(());
                }
                // The requester went away; it will resend if it still cares.
                Err((_, e)) => tracing::debug!(url = %self.url, error = %e, "reply not sent"),
            }
        }
    }

    /// Serves like [`serve`](Self::serve), but up to `workers` requests at once, each on
    /// its own nng context and thread: a slow answer holds only its own worker, and the
    /// requests of a burst are handled side by side. `handler` must be callable from
    /// several threads at once. Blocking: run it on its own thread.
    pub fn serve_concurrent<Q, R, F, B>(
        &self,
        workers: usize,
        handler: F,
        on_bad_request: B,
    ) -> Result<(), BusError>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(Q) -> R + Send + Sync,
        B: Fn(String) -> R + Send + Sync,
    {
        let workers = workers.max(1);
        let watchdog = Watchdog::start(&self.url, self.closed.clone(), workers);
        let failed: Mutex<Option<BusError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for n in 0..workers {
                // A worker only decodes, waits for its answer and encodes: a small stack
                // lets a service serve hundreds at once.
                let spawned = std::thread::Builder::new()
                    .name(format!("bus-rep-{n}"))
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, || {
                        if let Err(e) = self.context_worker(&watchdog, &handler, &on_bad_request) {
                            *failed
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                            self.closed.store(true, Ordering::Relaxed);
                        }
                    });
                if let Err(e) = spawned {
                    *failed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(io("start a replier thread")(nng::Error::Internal));
                    tracing::error!(url = %self.url, error = %e, "cannot start a replier thread");
                    self.closed.store(true, Ordering::Relaxed);
                }
            }
            // This thread listens afresh when the watchdog finds the socket stalled; the
            // workers move to the new socket within RECV_POLL.
            while !self.closed.load(Ordering::Relaxed) {
                if watchdog.stalled.swap(false, Ordering::Relaxed) {
                    let _ = self.listen_afresh(self.current());
                }
                std::thread::sleep(RECV_POLL); // a poll period, as the workers' receive timeout
            }
        });
        match failed
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One worker of [`serve_concurrent`](Self::serve_concurrent): a context on the
    /// current socket (a new one after a re-listen), receiving and answering in turn.
    fn context_worker<Q, R, F, B>(
        &self,
        watchdog: &Watchdog,
        handler: &F,
        on_bad_request: &B,
    ) -> Result<(), BusError>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(Q) -> R,
        B: Fn(String) -> R,
    {
        let (tx, rx) = mpsc::sync_channel::<AioResult>(2);
        let aio = Aio::new(move |_aio, res| {
            let _ = tx.send(res);
        })
        .map_err(io("allocate reply aio"))?;
        while !self.closed.load(Ordering::Relaxed) {
            let generation = self.restarts.load(Ordering::Relaxed);
            let ctx = Context::new(&self.current()).map_err(io("open reply context"))?;
            while !self.closed.load(Ordering::Relaxed)
                && self.restarts.load(Ordering::Relaxed) == generation
            {
                aio.set_timeout(Some(RECV_POLL))
                    .map_err(io("set reply receive timeout"))?;
                ctx.recv(&aio).map_err(io("receive request"))?;
                let msg = match completion(&aio, &rx) {
                    Ok(AioResult::Recv(Ok(m))) => m,
                    Ok(AioResult::Recv(Err(nng::Error::TimedOut))) => continue,
                    Ok(AioResult::Recv(Err(e))) if e != nng::Error::Closed => {
                        return Err(io("receive request")(e));
                    }
                    _ => {
                        if self.closed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        break; // the socket was replaced: a context on the new one
                    }
                };
                watchdog.busy.fetch_add(1, Ordering::Relaxed);
                let bytes = self.answer(msg.as_slice(), handler, on_bad_request);
                let sent = match bytes {
                    Ok(b) => {
                        aio.set_timeout(Some(REPLY_SEND_TIMEOUT))
                            .map_err(io("set reply send timeout"))?;
                        match ctx.send(&aio, b.as_slice()) {
                            Ok(()) => match completion(&aio, &rx) {
                                Ok(AioResult::Send(Ok(()))) => Ok(()),
                                Ok(AioResult::Send(Err((_, e)))) => Err(e),
                                _ => Err(nng::Error::Closed),
                            },
                            Err((_, e)) => Err(e),
                        }
                    }
                    Err(e) => {
                        watchdog.busy.fetch_sub(1, Ordering::Relaxed);
                        return Err(e);
                    }
                };
                watchdog.busy.fetch_sub(1, Ordering::Relaxed);
                if let Err(e) = sent {
                    // The requester went away; it will resend if it still cares.
                    tracing::debug!(url = %self.url, error = %e, "reply not sent");
                }
            }
        }
        Ok(())
    }

    /// The reply to one request frame, encoded: the probe's echo, or `handler`'s answer
    /// (`on_bad_request`'s for a frame that does not decode).
    fn answer<Q, R>(
        &self,
        frame: &[u8],
        handler: impl FnOnce(Q) -> R,
        on_bad_request: impl FnOnce(String) -> R,
    ) -> Result<Vec<u8>, BusError>
    where
        Q: DeserializeOwned,
        R: Serialize,
    {
        if frame == PROBE {
            return Ok(PROBE.to_vec());
        }
        let reply = match decode::<Q>("request", frame) {
            Ok(req) => handler(req),
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "undecodable request");
                on_bad_request(e.to_string())
            }
        };
        Ok(encode("reply", &reply)?)
    }

    /// Replaces a socket the watchdog found stalled by a new listener; returns the socket
    /// to serve from now on.
    fn listen_afresh(&self, stalled: Socket) -> Socket {
        tracing::warn!(url = %self.url, "the replier stopped receiving (nng); listening afresh");
        // The stalled socket is not closed: nng 1.5.2's nng_close can hang on it (seen in
        // CI). It is left open (one socket per stall) and an ipc path is freed for the new
        // listener; a tcp port cannot be, so there it stays.
        if let Some(path) = self.url.strip_prefix("ipc://") {
            let _ = std::fs::remove_file(path);
        }
        match Self::listen(&self.url) {
            Ok(fresh) => {
                *self
                    .socket
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
                std::mem::forget(stalled);
                self.restarts.fetch_add(1, Ordering::Relaxed);
                fresh
            }
            Err(e) => {
                tracing::error!(url = %self.url, error = %e, "cannot listen afresh; the replier may not take new connections");
                stalled
            }
        }
    }

    /// Stops [`serve`](Self::serve) (within [`RECV_POLL`]).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.current().close();
    }
}

/// The replier's self-probe, on its own thread.
struct Watchdog {
    /// Set by the probe when the replier did not answer; cleared by the serving thread.
    stalled: Arc<AtomicBool>,
    /// Handlers running: with every worker busy, a slow handler is not a stalled socket.
    busy: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    /// `workers`: how many requests the replier serves at once.
    fn start(url: &str, closed: Arc<AtomicBool>, workers: usize) -> Watchdog {
        let stalled = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (url, st, bz, sp) = (url.to_owned(), stalled.clone(), busy.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("bus-rep-watch".into())
            .spawn(move || {
                let opts = BusOptions::default();
                while !sp.load(Ordering::Relaxed) && !closed.load(Ordering::Relaxed) {
                    std::thread::sleep(PROBE_EVERY); // the probe's period, not a wait for a result
                    if bz.load(Ordering::Relaxed) >= workers || st.load(Ordering::Relaxed) {
                        continue;
                    }
                    // A new connection each time: the stall seen stops the listener from
                    // taking new connections, while old ones may still be served.
                    let Ok(probe) = Requester::dial(&url, &opts) else {
                        continue;
                    };
                    match probe.request_bytes(PROBE, PROBE_TIMEOUT) {
                        Err(BusError::Timeout { .. }) if bz.load(Ordering::Relaxed) < workers => {
                            st.store(true, Ordering::Relaxed);
                            // closing a socket connected to the stalled listener can hang
                            // in nng 1.5.2: left open
                            std::mem::forget(probe);
                        }
                        _ => {}
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no replier watchdog thread");
        }
        Watchdog {
            stalled,
            busy,
            stop,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
