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
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};
use shardbot_protocol::{decode, encode};

use crate::{
    BusError, BusOptions,
    error::io,
    nng::{Aio, Context, NngError, Protocol, Socket, opts},
    socket::{self, option},
};

/// The requesting end.
#[derive(Debug, Clone)]
pub struct Requester {
    socket: Socket,
    url: String,
    timeout: Duration,
}

impl Requester {
    pub fn dial(url: &str, opts: &BusOptions) -> Result<Requester, BusError> {
        let s = socket::open(Protocol::Req)?;
        s.set_ms(opts::REQ_RESEND_TIME, Some(opts.request_resend()))
            .map_err(option("request resend time"))?;
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
        let ctx = Context::open(&self.socket).map_err(io("open request context"))?;
        let aio = Aio::new().map_err(io("allocate request aio"))?;
        let deadline = std::time::Instant::now() + timeout;
        match aio.send(&ctx, body, Some(timeout + NNG_CLOCK_SLACK)) {
            Ok(()) => {}
            Err(NngError::TIMED_OUT) => return Err(self.timed_out(timeout)),
            Err(e) => return Err(io("send request")(e)),
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match aio.recv(
            &ctx,
            Some(left.max(Duration::from_millis(1)) + NNG_CLOCK_SLACK),
        ) {
            Ok(reply) => Ok(reply),
            Err(NngError::TIMED_OUT) => Err(self.timed_out(timeout)),
            Err(e) => Err(io("receive reply")(e)),
        }
    }

    /// The request for async code (actors, the router's order path): driven by NNG's
    /// callbacks ([`exchange`](crate::nng::exchange)), so a burst of requests in flight
    /// holds no thread each; same timeout, resend and errors as [`request`](Self::request).
    pub async fn request_async<Q, R>(&self, request: Q) -> Result<R, BusError>
    where
        Q: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let body = encode("request", &request)?;
        let timeout = self.timeout;
        let deadline = std::time::Instant::now() + timeout;
        let exchanged = crate::nng::exchange(
            &self.socket,
            &body,
            timeout + NNG_CLOCK_SLACK,
            deadline + NNG_CLOCK_SLACK,
        )
        .map_err(io("start request"))?
        .await
        .map_err(|_| BusError::Closed)?;
        match exchanged {
            Ok(reply) => Ok(decode("reply", &reply)?),
            Err(NngError::TIMED_OUT) => Err(self.timed_out(timeout)),
            Err(e) => Err(io("request round trip")(e)),
        }
    }

    fn timed_out(&self, after: Duration) -> BusError {
        BusError::Timeout {
            url: self.url.clone(),
            after,
        }
    }
}

/// NNG's timers run on a clock of whole milliseconds and fired up to 1.3 ms before a
/// timeout was due by `std::time::Instant` (measured with NNG 1.5.2: 298.7-298.97 ms for
/// 300 ms, in 11 of 40 runs). Each aio timeout is lengthened by this much so a request
/// never fails early.
pub const NNG_CLOCK_SLACK: Duration = Duration::from_millis(2);

/// The replying end. [`serve`](Replier::serve) answers one request at a time, in arrival
/// order; [`serve_concurrent`](Replier::serve_concurrent) several at once.
#[derive(Debug, Clone)]
pub struct Replier {
    socket: Socket,
    url: String,
    closed: Arc<AtomicBool>,
}

impl Replier {
    pub fn bind(url: &str, _opts: &BusOptions) -> Result<Replier, BusError> {
        let s = socket::open(Protocol::Rep)?;
        socket::listen(&s, url)?;
        Ok(Replier {
            socket: s,
            url: url.to_owned(),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
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
        loop {
            let msg = match self.socket.recv() {
                Ok(m) => m,
                Err(NngError::CLOSED) => return Ok(()),
                Err(e) => return Err(io("receive request")(e)),
            };
            let bytes = self.answer(&msg, &mut handler, &on_bad_request)?;
            match self.socket.send(&bytes) {
                Ok(()) => {}
                Err(NngError::CLOSED) => return Ok(()),
                // The requester went away; it will resend if it still cares.
                Err(e) => tracing::debug!(url = %self.url, error = %e, "reply not sent"),
            }
        }
    }

    /// Serves like [`serve`](Self::serve), but up to `workers` requests at once, each on
    /// its own NNG context and thread: a slow answer holds only its own worker, and the
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
        let failed: Mutex<Option<BusError>> = Mutex::new(None);
        let fail = |e: BusError| {
            *failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
            // The other workers end with the socket.
            self.close();
        };
        std::thread::scope(|scope| {
            for n in 0..workers {
                // A worker only decodes, waits for its answer and encodes: a small stack
                // lets a service serve hundreds at once.
                let spawned = std::thread::Builder::new()
                    .name(format!("bus-rep-{n}"))
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, || {
                        if let Err(e) = self.context_worker(&handler, &on_bad_request) {
                            fail(e);
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(url = %self.url, error = %e, "cannot start a replier thread");
                    fail(BusError::Thread(e.to_string()));
                }
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

    /// One worker of [`serve_concurrent`](Self::serve_concurrent): a context of the
    /// socket, receiving and answering in turn until the socket is closed.
    fn context_worker<Q, R, F, B>(&self, handler: &F, on_bad_request: &B) -> Result<(), BusError>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(Q) -> R,
        B: Fn(String) -> R,
    {
        let ctx = match Context::open(&self.socket) {
            Ok(c) => c,
            Err(NngError::CLOSED) => return Ok(()),
            Err(e) => return Err(io("open reply context")(e)),
        };
        let aio = Aio::new().map_err(io("allocate reply aio"))?;
        loop {
            let msg = match aio.recv(&ctx, None) {
                Ok(m) => m,
                Err(NngError::CLOSED) => return Ok(()),
                Err(e) => return Err(io("receive request")(e)),
            };
            let bytes = self.answer(&msg, handler, on_bad_request)?;
            match aio.send(&ctx, &bytes, Some(REPLY_SEND_TIMEOUT)) {
                Ok(()) => {}
                Err(NngError::CLOSED) if self.closed.load(Ordering::Relaxed) => return Ok(()),
                // The requester went away; it will resend if it still cares.
                Err(e) => tracing::debug!(url = %self.url, error = %e, "reply not sent"),
            }
        }
    }

    /// The reply to one request frame, encoded: `handler`'s answer (`on_bad_request`'s for
    /// a frame that does not decode).
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
        let reply = match decode::<Q>("request", frame) {
            Ok(req) => handler(req),
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "undecodable request");
                on_bad_request(e.to_string())
            }
        };
        Ok(encode("reply", &reply)?)
    }

    /// Stops serving: requests being received end, the serving threads return.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.socket.close();
    }
}

/// How long a concurrent worker waits for its reply to leave (a requester gone: dropped).
const REPLY_SEND_TIMEOUT: Duration = Duration::from_secs(5);
