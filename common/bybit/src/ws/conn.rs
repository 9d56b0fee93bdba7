//! One WebSocket connection, kept alive: connect (with a timeout), let the stream's
//! handler subscribe, ping every `ping_interval`, treat `dead_after` of silence as a dead
//! connection, and reconnect with exponential backoff until shut down.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// Connections of this process that went down (and were reconnected), every stream:
/// a process-wide count, as the heartbeat reports it (`ws_reconnects_total`).
static RECONNECTS: AtomicU64 = AtomicU64::new(0);

/// How many WebSocket connections of this process went down since it started.
pub fn ws_reconnects() -> u64 {
    RECONNECTS.load(Ordering::Relaxed)
}

/// Keep-alive and reconnect settings.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Bybit recommends a ping every 20 s.
    pub ping_interval: Duration,
    /// No frame at all (data or pong) for this long: the connection is dead.
    pub dead_after: Duration,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            ping_interval: Duration::from_secs(20),
            dead_after: Duration::from_secs(45),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What a handler wants after seeing a frame.
#[derive(Debug)]
pub(crate) enum Flow {
    Continue,
    /// Drop this connection and reconnect (e.g. auth refused).
    Reconnect(String),
}

/// The part of a stream that differs between public and private.
pub(crate) trait Handler: Send + 'static {
    type Event: Send + 'static;
    /// A fresh connection is open: queue what to send first (subscribe, or auth).
    fn on_open(&mut self, out: &mut Vec<String>);
    /// A text frame arrived: queue replies and events.
    fn on_text(&mut self, text: &str, out: &mut Vec<String>, events: &mut Vec<Self::Event>)
    -> Flow;
    fn connected(&self, conn: usize) -> Self::Event;
    /// The connection ended for `reason`; the next attempt is in `retry_in`.
    fn disconnected(&self, conn: usize, reason: String, retry_in: Duration) -> Self::Event;
}

pub(crate) fn ping_frame() -> String {
    r#"{"op":"ping"}"#.to_owned()
}

/// Runs one connection until `shutdown` flips to true or the event receiver is dropped.
pub(crate) async fn run<H: Handler>(
    conn: usize,
    url: String,
    cfg: WsConfig,
    mut handler: H,
    events: mpsc::Sender<H::Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = cfg.backoff_min;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let reason = match tokio::time::timeout(
            cfg.connect_timeout,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        {
            Err(_) => format!("connect to {url} timed out after {:?}", cfg.connect_timeout),
            Ok(Err(e)) => format!("connect to {url} failed: {e}"),
            Ok(Ok((ws, _))) => {
                // The backoff is reset only by a connection that lasted (10 backoffs, 1 s at
                // least: below). One the exchange accepts and then refuses at once (a refused
                // login, a refused subscription) is retried ever more slowly, not twice a
                // second forever.
                let opened = tokio::time::Instant::now();
                if events.send(handler.connected(conn)).await.is_err() {
                    return;
                }
                tracing::info!(conn, url = %url, "WebSocket connected");
                let (mut sink, mut stream) = ws.split();
                let mut out = Vec::new();
                let mut evs = Vec::new();
                handler.on_open(&mut out);
                let mut ping = tokio::time::interval(cfg.ping_interval);
                ping.tick().await; // the first tick is immediate
                // Silence is measured from the last frame received, whatever else happens.
                let mut last_frame = tokio::time::Instant::now();
                let reason = 'conn: loop {
                    for text in out.drain(..) {
                        if let Err(e) = sink.send(Message::text(text)).await {
                            break 'conn format!("send failed: {e}");
                        }
                    }
                    for ev in evs.drain(..) {
                        if events.send(ev).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        _ = shutdown.changed() => {
                            let _ = sink.send(Message::Close(None)).await;
                            return;
                        }
                        _ = ping.tick() => out.push(ping_frame()),
                        _ = tokio::time::sleep_until(last_frame + cfg.dead_after) => {
                            break 'conn format!("no frame for {:?}: connection presumed dead", cfg.dead_after);
                        }
                        next = stream.next() => {
                            last_frame = tokio::time::Instant::now();
                            match next {
                                None => break 'conn "closed by the server".to_owned(),
                                Some(Err(e)) => break 'conn format!("read failed: {e}"),
                                Some(Ok(Message::Text(t))) => {
                                    if let Flow::Reconnect(why) = handler.on_text(t.as_str(), &mut out, &mut evs) {
                                        for ev in evs.drain(..) {
                                            let _ = events.send(ev).await;
                                        }
                                        break 'conn why;
                                    }
                                }
                                Some(Ok(Message::Ping(p))) => {
                                    if let Err(e) = sink.send(Message::Pong(p)).await {
                                        break 'conn format!("send failed: {e}");
                                    }
                                }
                                Some(Ok(Message::Close(frame))) => {
                                    break 'conn format!("closed by the server: {frame:?}");
                                }
                                Some(Ok(_)) => {}
                            }
                        }
                    }
                };
                if opened.elapsed() >= (cfg.backoff_min * 10).max(Duration::from_secs(1)) {
                    backoff = cfg.backoff_min;
                }
                reason
            }
        };
        RECONNECTS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(conn, url = %url, reason = %reason, retry_in_ms = backoff.as_millis() as u64, "WebSocket down; reconnecting");
        if events
            .send(handler.disconnected(conn, reason, backoff))
            .await
            .is_err()
        {
            return;
        }
        // Reconnect backoff (Bybit limits new connections to 500 per 5 minutes per domain).
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

/// Stops a stream's connections.
#[derive(Debug)]
pub struct WsHandle {
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WsHandle {
    pub(crate) fn new(
        shutdown: watch::Sender<bool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> WsHandle {
        WsHandle { shutdown, tasks }
    }

    /// Number of connections the stream uses.
    pub fn connections(&self) -> usize {
        self.tasks.len()
    }

    /// Closes every connection and waits for their tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for WsHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
