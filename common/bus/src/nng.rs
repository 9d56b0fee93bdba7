//! The one module of the workspace with `unsafe`: a small safe layer over NNG 1.11's C API
//! (the `nng-sys` crate of the nanomsg/nng-rs project, which builds the vendored NNG
//! sources with cmake and links them statically).
//!
//! Only what the bus uses: sockets of the four protocols, their options, listeners and
//! non-blocking dialers, whole-message send and receive, REQ/REP contexts driven by an
//! aio that is waited on, a request's round trip and a replier's slots driven by aio
//! callbacks ([`exchange`], [`ReplySlot`]: no thread waits for them), and pipe events that
//! tell a socket whether it is connected.
//!
//! Why hand-written: the `nng` crate (1.0.1, 2021) wraps NNG 1.4 and has no release for
//! 1.11; `nng-sys` is raw FFI only (see `docs/architecture.md`, "The bus's NNG").
//!
//! The invariants every block below relies on:
//! - Sockets, dialers, listeners, contexts and pipes are NNG *handles* (ids), not pointers:
//!   using one after it was closed returns `NNG_ECLOSED` and touches no freed memory, so
//!   handles may be copied and closed from any thread.
//! - An aio is a pointer, owned by exactly one [`Aio`] and freed once, in its `Drop`; an
//!   operation started on it is waited for (`nng_aio_wait`) before the function that
//!   started it returns, so no operation outlives the borrow of what it reads.
//! - The aio of an [`exchange`] is the exception: it and its context belong to a boxed
//!   `Exchange`, the callback's argument, which only the callback touches once the first
//!   operation is started (NNG runs an aio's callback once per operation, and the
//!   callback starts the next operation as its last act); the last callback closes the
//!   context, hands the aio to NNG's reaper (`nng_aio_reap`, the way to free an aio from
//!   its own callback) and frees the box.
//! - A [`ReplySlot`]'s aio and context are the slot's, freed when it drops. Its operations
//!   alternate between the callback and the slot's owner: the callback reports a request
//!   received (or the end) on the slot's channel as its last act, and the owner touches
//!   the aio only after reading that report, to start the reply's send; the send's
//!   callback starts the next receive as its last act. So the aio is never used by both
//!   at once, and when the owner drops the slot no operation is pending, or it ends with
//!   the socket (`nng_aio_free` stops and waits for it).
//! - A message handed to an aio for sending belongs to NNG once the send succeeds; when it
//!   fails it is still ours and is freed here. A message received belongs to us and is
//!   freed after its body is copied out.
//! - Option names are NUL-terminated constants of `nng-sys`.
//! - The pipe-event callback's argument is an `Arc`'s pointer kept alive by the [`Socket`]
//!   until the callbacks are removed and the socket is closed (NNG calls no callback of a
//!   closed socket after `nng_close` returns).
#![allow(unsafe_code)]

use std::{
    ffi::{CStr, CString, c_char, c_int, c_void},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use nng_sys as sys;

/// An error code of NNG.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NngError(c_int);

impl NngError {
    pub const TIMED_OUT: NngError = NngError(sys::NNG_ETIMEDOUT as c_int);
    pub const CLOSED: NngError = NngError(sys::NNG_ECLOSED as c_int);
    pub const INVALID: NngError = NngError(sys::NNG_EINVAL as c_int);

    fn check(rv: c_int) -> Result<(), NngError> {
        if rv == 0 { Ok(()) } else { Err(NngError(rv)) }
    }

    pub fn code(self) -> i32 {
        self.0
    }
}

impl fmt::Display for NngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: nng_strerror returns a pointer to a static, NUL-terminated string for any
        // code (unknown codes included), never null.
        let text = unsafe { CStr::from_ptr(sys::nng_strerror(self.0)) };
        write!(f, "{} (nng error {})", text.to_string_lossy(), self.0)
    }
}

impl fmt::Debug for NngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NngError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pub,
    Sub,
    Req,
    Rep,
}

/// An option name of `nng-sys` (NUL-terminated bytes).
fn opt(name: &'static [u8]) -> *const c_char {
    debug_assert_eq!(name.last(), Some(&0));
    name.as_ptr().cast()
}

fn ms(d: Option<Duration>) -> sys::nng_duration {
    match d {
        None => sys::NNG_DURATION_INFINITE,
        Some(d) => d.as_millis().min(i32::MAX as u128) as sys::nng_duration,
    }
}

fn c_url(url: &str) -> Result<CString, NngError> {
    CString::new(url).map_err(|_| NngError::INVALID)
}

/// Which of a socket's dialers are connected, from NNG's pipe events: per dialer id, its
/// pipes up and when that last changed (Unix ms).
#[derive(Debug, Default)]
pub struct Connection {
    dialers: Mutex<std::collections::HashMap<i32, (usize, i64)>>,
}

impl Connection {
    /// Whether the dialer of id `dialer` is connected, and since when (Unix ms; `None`
    /// when it never was).
    pub fn dialer_state(&self, dialer: i32) -> (bool, Option<i64>) {
        let map = self.dialers.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&dialer) {
            Some((pipes, since)) => (*pipes > 0, Some(*since)),
            None => (false, None),
        }
    }

    fn event(&self, dialer: i32, added: bool) {
        if dialer < 0 {
            return; // a pipe of a listener
        }
        let now = shardbot_protocol::now_ms();
        let mut map = self.dialers.lock().unwrap_or_else(|p| p.into_inner());
        let (pipes, since) = map.entry(dialer).or_insert((0, now));
        let before = *pipes;
        *pipes = if added {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        if (before == 0) != (*pipes == 0) {
            *since = now;
        }
    }
}

extern "C" fn on_pipe(pipe: sys::nng_pipe, ev: sys::nng_pipe_ev, arg: *mut c_void) {
    // SAFETY: `arg` is the pointer of the `Arc<Connection>` the socket keeps alive until
    // it is closed (module invariants); `pipe` is a handle NNG passes for this event.
    let (conn, dialer) = unsafe {
        (
            &*(arg as *const Connection),
            sys::nng_dialer_id(sys::nng_pipe_dialer(pipe)),
        )
    };
    match ev {
        sys::NNG_PIPE_EV_ADD_POST => conn.event(dialer, true),
        sys::NNG_PIPE_EV_REM_POST => conn.event(dialer, false),
        _ => {}
    }
}

#[derive(Debug)]
struct SocketInner {
    raw: sys::nng_socket,
    connection: Arc<Connection>,
    closed: AtomicBool,
}

impl SocketInner {
    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // SAFETY: a handle (module invariants); closing it aborts every operation on
            // it (they end with NNG_ECLOSED) and no pipe callback runs after it returns.
            unsafe {
                sys::nng_close(self.raw);
            }
        }
    }
}

impl Drop for SocketInner {
    fn drop(&mut self) {
        self.close();
    }
}

/// An NNG socket; clones share it, and the last one closes it.
#[derive(Debug, Clone)]
pub struct Socket {
    inner: Arc<SocketInner>,
}

impl Socket {
    pub fn open(protocol: Protocol) -> Result<Socket, NngError> {
        let mut raw = sys::nng_socket::NNG_SOCKET_INITIALIZER;
        // SAFETY: `raw` is a valid place for the new handle.
        let rv = unsafe {
            match protocol {
                Protocol::Pub => sys::nng_pub0_open(&mut raw),
                Protocol::Sub => sys::nng_sub0_open(&mut raw),
                Protocol::Req => sys::nng_req0_open(&mut raw),
                Protocol::Rep => sys::nng_rep0_open(&mut raw),
            }
        };
        NngError::check(rv)?;
        let connection = Arc::new(Connection::default());
        let arg = Arc::as_ptr(&connection) as *mut c_void;
        for ev in [sys::NNG_PIPE_EV_ADD_POST, sys::NNG_PIPE_EV_REM_POST] {
            // SAFETY: `on_pipe` reads `arg` as a `Connection`, which `connection` keeps
            // alive for as long as the socket is open (it is dropped after `close`).
            let rv = unsafe { sys::nng_pipe_notify(raw, ev, Some(on_pipe), arg) };
            if let Err(e) = NngError::check(rv) {
                // SAFETY: the handle just opened.
                unsafe {
                    sys::nng_close(raw);
                }
                return Err(e);
            }
        }
        Ok(Socket {
            inner: Arc::new(SocketInner {
                raw,
                connection,
                closed: AtomicBool::new(false),
            }),
        })
    }

    fn raw(&self) -> sys::nng_socket {
        self.inner.raw
    }

    /// Which of the socket's dialers are connected, from its pipe events.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.inner.connection
    }

    pub fn set_ms(&self, name: &'static [u8], d: Option<Duration>) -> Result<(), NngError> {
        // SAFETY: a handle and a NUL-terminated option name (module invariants).
        NngError::check(unsafe { sys::nng_socket_set_ms(self.raw(), opt(name), ms(d)) })
    }

    pub fn set_int(&self, name: &'static [u8], n: i32) -> Result<(), NngError> {
        // SAFETY: as `set_ms`.
        NngError::check(unsafe { sys::nng_socket_set_int(self.raw(), opt(name), n) })
    }

    pub fn subscribe(&self, prefix: &[u8]) -> Result<(), NngError> {
        // SAFETY: `prefix` is valid for its length; NNG copies it.
        NngError::check(unsafe {
            sys::nng_sub0_socket_subscribe(self.raw(), prefix.as_ptr().cast(), prefix.len())
        })
    }

    pub fn unsubscribe(&self, prefix: &[u8]) -> Result<(), NngError> {
        // SAFETY: as `subscribe`.
        NngError::check(unsafe {
            sys::nng_sub0_socket_unsubscribe(self.raw(), prefix.as_ptr().cast(), prefix.len())
        })
    }

    pub fn listen(&self, url: &str) -> Result<(), NngError> {
        let url = c_url(url)?;
        // SAFETY: a handle and a NUL-terminated URL NNG copies; no listener handle asked.
        NngError::check(unsafe {
            sys::nng_listen(self.raw(), url.as_ptr(), std::ptr::null_mut(), 0)
        })
    }

    /// Dials in the background: succeeds whether or not anybody listens yet, and redials
    /// with the socket's reconnect times whenever the connection is lost.
    pub fn dial(&self, url: &str) -> Result<Dialer, NngError> {
        let url = c_url(url)?;
        let mut raw = sys::nng_dialer::NNG_DIALER_INITIALIZER;
        // SAFETY: a handle, a NUL-terminated URL NNG copies, a valid place for the dialer.
        NngError::check(unsafe {
            sys::nng_dial(
                self.raw(),
                url.as_ptr(),
                &mut raw,
                sys::NNG_FLAG_NONBLOCK as c_int,
            )
        })?;
        // SAFETY: a handle (module invariants).
        let id = unsafe { sys::nng_dialer_id(raw) };
        Ok(Dialer { raw, id })
    }

    /// Sends one message (a copy of `body`); blocks only where the protocol does.
    pub fn send(&self, body: &[u8]) -> Result<(), NngError> {
        // SAFETY: without NNG_FLAG_ALLOC NNG copies `body` (valid for its length) and never
        // writes to it, whatever the pointer's mutability says.
        NngError::check(unsafe {
            sys::nng_send(self.raw(), body.as_ptr() as *mut c_void, body.len(), 0)
        })
    }

    /// Receives one message, waiting at most the socket's receive timeout.
    pub fn recv(&self) -> Result<Vec<u8>, NngError> {
        let mut buf: *mut c_void = std::ptr::null_mut();
        let mut len: usize = 0;
        // SAFETY: with NNG_FLAG_ALLOC, NNG stores a buffer it allocated, and its length, in
        // `buf`/`len`; it is ours to free with nng_free (below, after copying it).
        unsafe {
            NngError::check(sys::nng_recv(
                self.raw(),
                (&mut buf as *mut *mut c_void).cast(),
                &mut len,
                sys::NNG_FLAG_ALLOC as c_int,
            ))?;
            let out = std::slice::from_raw_parts(buf as *const u8, len).to_vec();
            sys::nng_free(buf, len);
            Ok(out)
        }
    }

    /// Closes the socket now (for every clone): operations under way end with
    /// [`NngError::CLOSED`].
    pub fn close(&self) {
        self.inner.close();
    }
}

/// A dialer of a socket.
#[derive(Debug)]
pub struct Dialer {
    raw: sys::nng_dialer,
    id: i32,
}

impl Dialer {
    pub fn id(&self) -> i32 {
        self.id
    }

    /// Stops dialling and drops its connection.
    pub fn close(&self) {
        // SAFETY: a handle (module invariants).
        unsafe {
            sys::nng_dialer_close(self.raw);
        }
    }
}

/// A context of a REQ or REP socket: one exchange at a time, independent of the others.
#[derive(Debug)]
pub struct Context {
    raw: sys::nng_ctx,
}

impl Context {
    pub fn open(socket: &Socket) -> Result<Context, NngError> {
        let mut raw = sys::nng_ctx::NNG_CTX_INITIALIZER;
        // SAFETY: a socket handle and a valid place for the context's.
        NngError::check(unsafe { sys::nng_ctx_open(&mut raw, socket.raw()) })?;
        Ok(Context { raw })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: a handle (module invariants).
        unsafe {
            sys::nng_ctx_close(self.raw);
        }
    }
}

/// An aio without callback: each operation is started and waited for in one call.
#[derive(Debug)]
pub struct Aio {
    ptr: *mut sys::nng_aio,
}

// SAFETY: NNG's aio functions may be called from any thread, and the pointer is freed once,
// by the owner. Not `Sync`: an aio runs one operation at a time, which `&self` from one
// thread guarantees since every operation is waited for before its method returns.
unsafe impl Send for Aio {}

impl Aio {
    pub fn new() -> Result<Aio, NngError> {
        let mut ptr: *mut sys::nng_aio = std::ptr::null_mut();
        // SAFETY: a valid place for the new aio; no callback, so no argument.
        NngError::check(unsafe { sys::nng_aio_alloc(&mut ptr, None, std::ptr::null_mut()) })?;
        Ok(Aio { ptr })
    }

    /// Sends `body` on `ctx`, waiting at most `timeout` (`None`: for ever).
    pub fn send(
        &self,
        ctx: &Context,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<(), NngError> {
        // SAFETY: the message is allocated here and either handed to NNG by a successful
        // send or freed here when the send failed (module invariants); the aio is ours and
        // idle (not `Sync`, each operation waited for), and the operation is waited for before returning.
        unsafe {
            let msg = new_message(body)?;
            sys::nng_aio_set_timeout(self.ptr, ms(timeout));
            sys::nng_aio_set_msg(self.ptr, msg);
            sys::nng_ctx_send(ctx.raw, self.ptr);
            sys::nng_aio_wait(self.ptr);
            let rv = sys::nng_aio_result(self.ptr);
            if rv != 0 {
                sys::nng_msg_free(msg);
            }
            sys::nng_aio_set_msg(self.ptr, std::ptr::null_mut());
            NngError::check(rv)
        }
    }

    /// Receives one message on `ctx`, waiting at most `timeout` (`None`: for ever).
    pub fn recv(&self, ctx: &Context, timeout: Option<Duration>) -> Result<Vec<u8>, NngError> {
        // SAFETY: the aio is ours and idle (not `Sync`, each operation waited for); the operation is waited for before
        // returning; a message received is ours, copied out and freed (module invariants).
        unsafe {
            sys::nng_aio_set_timeout(self.ptr, ms(timeout));
            sys::nng_ctx_recv(ctx.raw, self.ptr);
            sys::nng_aio_wait(self.ptr);
            NngError::check(sys::nng_aio_result(self.ptr))?;
            take_message(self.ptr)
        }
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        // SAFETY: the pointer was allocated by `new` and is freed once, here; nng_aio_free
        // stops any operation first (none is running: each is waited for).
        unsafe {
            sys::nng_aio_free(self.ptr);
        }
    }
}

/// What an [`exchange`] ends with: the reply's body, or why there is none.
pub type Exchanged = Result<Vec<u8>, NngError>;

/// A request's round trip on a context of its own, driven by NNG's callbacks: `body` is
/// sent (within `send_timeout`), then the reply is received (by `deadline`), and the
/// outcome arrives on the returned channel. No thread waits while it is in flight, so a
/// burst of requests costs no thread each (the blocking [`Aio`] way woke one per request
/// and step). Dropping the receiver abandons nothing: the exchange runs to its end or its
/// deadline and its reply is dropped.
pub fn exchange(
    socket: &Socket,
    body: &[u8],
    send_timeout: Duration,
    deadline: std::time::Instant,
) -> Result<tokio::sync::oneshot::Receiver<Exchanged>, NngError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ctx = Context::open(socket)?;
    let ex = Box::into_raw(Box::new(Exchange {
        aio: std::ptr::null_mut(),
        ctx: ctx.raw,
        receiving: false,
        deadline,
        done: tx,
    }));
    let mut aio: *mut sys::nng_aio = std::ptr::null_mut();
    // SAFETY: `ex` is a live box whose only other user is the callback, which runs once an
    // operation is started; until then it is ours alone, and on every failure before the
    // send it is freed here with whatever was allocated (module invariants). Once
    // `nng_ctx_send` is called, `ex`, the aio, the context and the message belong to the
    // callback and are not touched here.
    unsafe {
        let started = NngError::check(sys::nng_aio_alloc(
            &mut aio,
            Some(on_exchange),
            ex.cast::<c_void>(),
        ))
        .and_then(|()| new_message(body));
        let msg = match started {
            Ok(msg) => msg,
            Err(e) => {
                if !aio.is_null() {
                    sys::nng_aio_free(aio);
                }
                drop(Box::from_raw(ex));
                return Err(e); // `ctx` closes as it drops
            }
        };
        (*ex).aio = aio;
        // The context now belongs to the exchange (closed by its last callback).
        std::mem::forget(ctx);
        sys::nng_aio_set_timeout(aio, ms(Some(send_timeout)));
        sys::nng_aio_set_msg(aio, msg);
        sys::nng_ctx_send((*ex).ctx, aio);
    }
    Ok(rx)
}

/// An [`exchange`] in flight: the callback's argument.
struct Exchange {
    aio: *mut sys::nng_aio,
    ctx: sys::nng_ctx,
    /// The send is done and the reply is awaited.
    receiving: bool,
    deadline: std::time::Instant,
    done: tokio::sync::oneshot::Sender<Exchanged>,
}

/// An [`exchange`]'s aio finished an operation: after the send, starts the receive; after
/// the receive (or a failure), delivers the outcome and frees everything.
extern "C" fn on_exchange(arg: *mut c_void) {
    let ex = arg.cast::<Exchange>();
    // SAFETY: `arg` is the live box of this aio's exchange, touched by nothing but this
    // callback, which NNG runs once per operation (module invariants). Starting the
    // receive is the last use of it in that call: the receive's callback may run at once.
    unsafe {
        let (aio, ctx) = ((*ex).aio, (*ex).ctx);
        let rv = sys::nng_aio_result(aio);
        let outcome = if (*ex).receiving {
            match NngError::check(rv) {
                Ok(()) => take_message(aio),
                Err(e) => Err(e),
            }
        } else if rv != 0 {
            free_unsent(aio);
            Err(NngError(rv))
        } else {
            let left = (*ex)
                .deadline
                .saturating_duration_since(std::time::Instant::now());
            (*ex).receiving = true;
            sys::nng_aio_set_msg(aio, std::ptr::null_mut());
            sys::nng_aio_set_timeout(aio, ms(Some(left.max(Duration::from_millis(1)))));
            sys::nng_ctx_recv(ctx, aio);
            return;
        };
        let Exchange { done, .. } = *Box::from_raw(ex);
        sys::nng_ctx_close(ctx);
        sys::nng_aio_reap(aio);
        let _ = done.send(outcome);
    }
}

/// A new message holding `body`, to hand to an aio's send (freed by whoever holds it when
/// the send fails).
///
/// # Safety
/// None beyond FFI: the message is ours until handed on.
unsafe fn new_message(body: &[u8]) -> Result<*mut sys::nng_msg, NngError> {
    let mut msg: *mut sys::nng_msg = std::ptr::null_mut();
    // SAFETY: a valid place for the message; it is freed here if the append fails.
    unsafe {
        NngError::check(sys::nng_msg_alloc(&mut msg, 0))?;
        if let Err(e) = NngError::check(sys::nng_msg_append(msg, body.as_ptr().cast(), body.len()))
        {
            sys::nng_msg_free(msg);
            return Err(e);
        }
    }
    Ok(msg)
}

/// Frees the message of a send that failed (it is still ours) and clears it from the aio.
///
/// # Safety
/// `aio` is a live aio whose send just failed, no operation pending.
unsafe fn free_unsent(aio: *mut sys::nng_aio) {
    // SAFETY: the caller's contract (module invariants: a message not sent is ours).
    unsafe {
        let msg = sys::nng_aio_get_msg(aio);
        sys::nng_aio_set_msg(aio, std::ptr::null_mut());
        if !msg.is_null() {
            sys::nng_msg_free(msg);
        }
    }
}

/// The message an aio received, copied out and freed.
///
/// # Safety
/// `aio` is a live aio whose receive just succeeded, its message not yet taken.
unsafe fn take_message(aio: *mut sys::nng_aio) -> Result<Vec<u8>, NngError> {
    // SAFETY: the caller's contract; a message received is ours, copied out and freed
    // (module invariants).
    unsafe {
        let msg = sys::nng_aio_get_msg(aio);
        sys::nng_aio_set_msg(aio, std::ptr::null_mut());
        if msg.is_null() {
            return Err(NngError::CLOSED);
        }
        let len = sys::nng_msg_len(msg);
        let body = sys::nng_msg_body(msg) as *const u8;
        let out = if len == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(body, len).to_vec()
        };
        sys::nng_msg_free(msg);
        Ok(out)
    }
}

/// What a [`ReplySlot`] reports on its channel: its index and a request's body, or why
/// it stopped receiving.
pub type SlotReport = (usize, Result<Vec<u8>, NngError>);

/// One request at a time of a REP socket, on a context of its own, driven by its aio's
/// callback: it receives a request and reports it on its channel; its owner answers with
/// [`reply`](ReplySlot::reply), after which it receives the next. No thread waits for it.
#[derive(Debug)]
pub struct ReplySlot {
    /// A leaked box, the callback's argument; freed in `Drop` after the aio.
    inner: *mut SlotInner,
}

#[derive(Debug)]
struct SlotInner {
    aio: *mut sys::nng_aio,
    ctx: sys::nng_ctx,
    index: usize,
    /// A reply's send is the operation in flight (else a receive).
    sending: AtomicBool,
    reports: tokio::sync::mpsc::UnboundedSender<SlotReport>,
}

// SAFETY: the slot's aio and context are used from the owner's thread and NNG's callback
// in turn, never at once (module invariants); the rest is `Send` + `Sync`.
unsafe impl Send for ReplySlot {}

impl ReplySlot {
    /// A slot of `socket` (REP) reporting on `reports` as `index`; it receives once
    /// [`start`](Self::start) is called.
    pub fn open(
        socket: &Socket,
        index: usize,
        reports: tokio::sync::mpsc::UnboundedSender<SlotReport>,
    ) -> Result<ReplySlot, NngError> {
        let ctx = Context::open(socket)?;
        let inner = Box::into_raw(Box::new(SlotInner {
            aio: std::ptr::null_mut(),
            ctx: ctx.raw,
            index,
            sending: AtomicBool::new(false),
            reports,
        }));
        let mut aio: *mut sys::nng_aio = std::ptr::null_mut();
        // SAFETY: `inner` is a live box, ours alone until an operation is started (none
        // before `start`), freed after the aio (in `Drop`, or here on failure).
        unsafe {
            if let Err(e) = NngError::check(sys::nng_aio_alloc(
                &mut aio,
                Some(on_slot),
                inner.cast::<c_void>(),
            )) {
                drop(Box::from_raw(inner));
                return Err(e); // `ctx` closes as it drops
            }
            (*inner).aio = aio;
        }
        std::mem::forget(ctx); // the slot's now: closed when it drops
        Ok(ReplySlot { inner })
    }

    fn inner(&self) -> &SlotInner {
        // SAFETY: the box lives as long as the slot; only shared references are made.
        unsafe { &*self.inner }
    }

    /// Starts receiving the first request.
    pub fn start(&self) {
        // SAFETY: a new slot has no operation pending (module invariants).
        unsafe { receive(self.inner()) }
    }

    /// Sends `body` as the answer to the request this slot reported last, then receives
    /// the next. Call once per request reported, never before.
    pub fn reply(&self, body: &[u8]) {
        let inner = self.inner();
        // SAFETY: the request was reported, so no operation is pending and the aio is
        // ours until the send is started; the message is handed to NNG, or freed by the
        // callback when its send fails (module invariants).
        unsafe {
            let msg = match new_message(body) {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(error = %e, "a reply could not be built; the requester will resend");
                    receive(inner);
                    return;
                }
            };
            inner.sending.store(true, Ordering::Release);
            sys::nng_aio_set_timeout(inner.aio, ms(Some(REPLY_SEND_TIMEOUT)));
            sys::nng_aio_set_msg(inner.aio, msg);
            sys::nng_ctx_send(inner.ctx, inner.aio);
        }
    }
}

/// How long a reply waits to leave (a requester gone: dropped; it resends if it still
/// cares).
pub(crate) const REPLY_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a slot's receive.
///
/// # Safety
/// No operation is pending on the slot's aio, and this is the caller's last use of it.
unsafe fn receive(inner: &SlotInner) {
    inner.sending.store(false, Ordering::Release);
    // SAFETY: the caller's contract.
    unsafe {
        sys::nng_aio_set_timeout(inner.aio, sys::NNG_DURATION_INFINITE);
        sys::nng_ctx_recv(inner.ctx, inner.aio);
    }
}

extern "C" fn on_slot(arg: *mut c_void) {
    // SAFETY: `arg` is the slot's box, alive while its aio is (module invariants); NNG runs
    // the callback once per operation, and each branch's last act hands the aio on.
    unsafe {
        let inner = &*(arg as *const SlotInner);
        let rv = sys::nng_aio_result(inner.aio);
        if inner.sending.load(Ordering::Acquire) {
            if rv != 0 {
                free_unsent(inner.aio);
            }
            match NngError::check(rv) {
                Err(NngError::CLOSED) => {
                    let _ = inner.reports.send((inner.index, Err(NngError::CLOSED)));
                }
                // Sent; or the requester went away (it resends if it still cares).
                sent => {
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "reply not sent");
                    }
                    receive(inner);
                }
            }
            return;
        }
        let got = match NngError::check(rv) {
            Ok(()) => take_message(inner.aio),
            Err(e) => Err(e),
        };
        let _ = inner.reports.send((inner.index, got));
    }
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        // SAFETY: the aio and context are the slot's; `nng_aio_free` stops a pending
        // operation and waits for its callback before freeing, so the box (freed after)
        // is not used by it any more.
        unsafe {
            sys::nng_aio_free((*self.inner).aio);
            sys::nng_ctx_close((*self.inner).ctx);
            drop(Box::from_raw(self.inner));
        }
    }
}

/// Option names, NUL-terminated.
pub mod opts {
    use super::sys;
    pub const SEND_BUFFER: &[u8] = sys::NNG_OPT_SENDBUF;
    pub const RECV_BUFFER: &[u8] = sys::NNG_OPT_RECVBUF;
    pub const RECV_TIMEOUT: &[u8] = sys::NNG_OPT_RECVTIMEO;
    pub const RECONNECT_MIN: &[u8] = sys::NNG_OPT_RECONNMINT;
    pub const RECONNECT_MAX: &[u8] = sys::NNG_OPT_RECONNMAXT;
    pub const REQ_RESEND_TIME: &[u8] = sys::NNG_OPT_REQ_RESENDTIME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_themselves() {
        let e = NngError::TIMED_OUT.to_string();
        assert!(
            e.to_lowercase().contains("timed out") && e.contains("nng error 5"),
            "{e}"
        );
        assert!(NngError(9999).to_string().contains("9999"));
    }

    #[test]
    fn a_request_and_its_reply_over_inproc_with_contexts() {
        let url = "inproc://shardbot-bus-nng-test";
        let rep = Socket::open(Protocol::Rep).unwrap();
        rep.listen(url).unwrap();
        let req = Socket::open(Protocol::Req).unwrap();
        let d = req.dial(url).unwrap();
        let t = std::thread::spawn(move || {
            let ctx = Context::open(&rep).unwrap();
            let aio = Aio::new().unwrap();
            let got = aio.recv(&ctx, Some(Duration::from_secs(5))).unwrap();
            aio.send(&ctx, &[got.as_slice(), b"!"].concat(), None)
                .unwrap();
            rep
        });
        let ctx = Context::open(&req).unwrap();
        let aio = Aio::new().unwrap();
        aio.send(&ctx, b"ping", Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(
            aio.recv(&ctx, Some(Duration::from_secs(5))).unwrap(),
            b"ping!"
        );
        assert!(req.connection().dialer_state(d.id()).0, "its dialer is");
        let rep = t.join().unwrap();
        rep.close();
        // No replier: a request is not even sent within its timeout.
        assert_eq!(
            aio.send(&ctx, b"again", Some(Duration::from_millis(50)))
                .unwrap_err(),
            NngError::TIMED_OUT
        );
        req.close();
        assert_eq!(
            aio.send(&ctx, b"closed", None).unwrap_err(),
            NngError::CLOSED
        );
    }

    #[test]
    fn a_bad_option_value_is_an_error_not_a_crash() {
        let s = Socket::open(Protocol::Sub).unwrap();
        assert!(s.set_int(opts::RECV_BUFFER, 100_000).is_err());
        s.set_int(opts::RECV_BUFFER, 8192).unwrap();
        assert!(s.listen("nowhere://x").is_err());
        assert!(s.dial("tcp://bad\0url").is_err());
    }
}
