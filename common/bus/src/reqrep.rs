//! REQ/REP with timeouts and resend.
//!
//! A [`Requester`] can be shared by many threads: each request runs in its own nng context,
//! so replies are matched to their requests. A request is resent every
//! `request_resend_ms` until answered, and at once when the connection to the replier
//! drops; so a request that was in flight when a replier crashed is answered by the
//! restarted replier. Handlers must therefore be idempotent (intent ids make the router's
//! so). With nobody answering, the request fails after `request_timeout_ms`.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use shardbot_protocol::{decode, encode};

use crate::{
    BusError, BusOptions,
    error::io,
    nng::{Aio, Context, NngError, Protocol, ReplySlot, Socket, opts},
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
    pub async fn request_async<Q: Serialize, R: DeserializeOwned>(
        &self,
        request: Q,
    ) -> Result<R, BusError> {
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
/// order; [`serve_async`](Replier::serve_async) several at once.
#[derive(Debug, Clone)]
pub struct Replier {
    socket: Socket,
    url: String,
}

impl Replier {
    pub fn bind(url: &str, _opts: &BusOptions) -> Result<Replier, BusError> {
        let s = socket::open(Protocol::Rep)?;
        socket::listen(&s, url)?;
        Ok(Replier {
            socket: s,
            url: url.to_owned(),
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
            let reply = match self.request_of(&msg, &on_bad_request) {
                Ok(req) => handler(req),
                Err(bad) => bad,
            };
            let bytes = encode("reply", &reply)?;
            match self.socket.send(&bytes) {
                Ok(()) => {}
                Err(NngError::CLOSED) => return Ok(()),
                // The requester went away; it will resend if it still cares.
                Err(e) => tracing::debug!(url = %self.url, error = %e, "reply not sent"),
            }
        }
    }

    /// Serves up to `slots` requests at once, without a thread per request: each slot is an
    /// NNG context driven by callbacks ([`ReplySlot`]), each request's answer a task
    /// (`handler`'s future) on a runtime of one thread that this call runs. So a burst of requests wakes no thread each, and a
    /// slow answer still holds only its own slot. Blocking: run it on its own thread; it
    /// returns once the socket is closed ([`close`](Self::close)), dropping the answers
    /// still awaited (their requesters resend to whoever serves next).
    pub fn serve_async<Q, R, F, Fut, B>(
        &self,
        slots: usize,
        handler: F,
        on_bad_request: B,
    ) -> Result<(), BusError>
    where
        Q: DeserializeOwned,
        R: Serialize + Send + 'static,
        F: Fn(Q) -> Fut,
        Fut: std::future::Future<Output = R> + Send + 'static,
        B: Fn(String) -> R,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| BusError::Thread(format!("the replier's runtime: {e}")))?;
        let (reports, mut reported) = tokio::sync::mpsc::unbounded_channel();
        let slots = (0..slots.max(1))
            .map(|n| ReplySlot::open(&self.socket, n, reports.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io("open reply context"))?;
        drop(reports);
        slots.iter().for_each(ReplySlot::start);
        // Per slot: an operation is pending on it (a receive, or a reply's send).
        let mut pending = vec![true; slots.len()];
        let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel::<(usize, R)>();
        let served = runtime.block_on(async {
            let mut closed = false;
            loop {
                if closed && !pending.contains(&true) {
                    return Ok(());
                }
                tokio::select! {
                    Some((n, got)) = reported.recv() => match got {
                        Ok(frame) => {
                            pending[n] = false;
                            match self.request_of(&frame, &on_bad_request) {
                                Ok(req) => {
                                    let answer = handler(req);
                                    let answers = answers.clone();
                                    tokio::spawn(async move {
                                        let _ = answers.send((n, answer.await));
                                    });
                                }
                                Err(bad) => {
                                    let bytes = encode("reply", &bad)?;
                                    pending[n] = true;
                                    slots[n].reply(&bytes);
                                }
                            }
                        }
                        Err(NngError::CLOSED) => {
                            pending[n] = false;
                            closed = true;
                        }
                        Err(e) => return Err(io("receive request")(e)),
                    },
                    Some((n, answer)) = answered.recv() => {
                        let bytes = encode("reply", &answer)?;
                        pending[n] = true;
                        slots[n].reply(&bytes);
                    }
                    else => return Ok(()),
                }
            }
        });
        if served.is_err() {
            // Nothing is served any more: requesters fail over to a restart, not wait.
            self.close();
        }
        served
    }

    /// The request a frame holds, or, for a frame that does not decode, `on_bad_request`'s
    /// answer to it (so the requester gets an error instead of a timeout).
    fn request_of<Q: DeserializeOwned, R>(
        &self,
        frame: &[u8],
        on_bad_request: impl FnOnce(String) -> R,
    ) -> Result<Q, R> {
        decode::<Q>("request", frame).map_err(|e| {
            tracing::warn!(url = %self.url, error = %e, "undecodable request");
            on_bad_request(e.to_string())
        })
    }

    /// Stops serving: requests being received end, the serving threads return.
    pub fn close(&self) {
        self.socket.close();
    }
}
