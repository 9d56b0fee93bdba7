//! REQ/REP with timeouts and resend.
//!
//! A [`Requester`] can be shared by many threads: each request runs in its own nng context,
//! so replies are matched to their requests. A request is resent every
//! `request_resend_ms` until answered, and at once when the connection to the replier
//! drops; so a request that was in flight when a replier crashed is answered by the
//! restarted replier. Handlers must therefore be idempotent (intent ids make the router's
//! so). With nobody answering, the request fails after `request_timeout_ms`.

use std::{sync::mpsc, time::Duration};

use nng::{Aio, AioResult, Context, Protocol, Socket, options::protocol::reqrep::ResendTime};
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

    /// Raw request/reply round trip.
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
        aio.set_timeout(Some(timeout))
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
        aio.set_timeout(Some(left.max(Duration::from_millis(1))))
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

/// The replying end. Answers one request at a time, in arrival order.
#[derive(Debug, Clone)]
pub struct Replier {
    socket: Socket,
    url: String,
}

impl Replier {
    pub fn bind(url: &str, _opts: &BusOptions) -> Result<Replier, BusError> {
        let s = socket::open(Protocol::Rep0)?;
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
                Err(nng::Error::Closed) => return Ok(()),
                Err(e) => return Err(io("receive request")(e)),
            };
            let reply = match decode::<Q>("request", msg.as_slice()) {
                Ok(req) => handler(req),
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, "undecodable request");
                    on_bad_request(e.to_string())
                }
            };
            let bytes = encode("reply", &reply)?;
            match self.socket.send(bytes.as_slice()) {
                Ok(()) => {}
                Err((_, nng::Error::Closed)) => return Ok(()),
                // The requester went away; it will resend if it still cares.
                Err((_, e)) => tracing::debug!(url = %self.url, error = %e, "reply not sent"),
            }
        }
    }

    /// Stops [`serve`](Self::serve).
    pub fn close(&self) {
        self.socket.close();
    }
}
