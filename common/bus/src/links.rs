//! The endpoints this process dials, and whether each is connected (from its socket's
//! pipe events): every heartbeat carries them, so `shardbot health`, `scripts/stack
//! status` and the dashboard can name a dialer that stays disconnected (a peer down, or a
//! stuck bus) instead of a process that looks healthy while hearing nothing.

use std::sync::{Arc, Mutex, Weak};

use shardbot_protocol::{LinkState, now_ms};

use crate::nng::{Connection, Dialer};

#[derive(Debug)]
struct Entry {
    url: String,
    dialer: i32,
    connection: Weak<Connection>,
    dialled_ms: i64,
}

static DIALS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Records a dialer (its socket's connection state is shared, not owned: a socket closed
/// and dropped leaves the list by itself).
pub(crate) fn register(url: &str, connection: &Arc<Connection>, dialer: &Dialer) {
    let mut dials = DIALS.lock().unwrap_or_else(|p| p.into_inner());
    dials.push(Entry {
        url: url.to_owned(),
        dialer: dialer.id(),
        connection: Arc::downgrade(connection),
        dialled_ms: now_ms(),
    });
}

/// Forgets a dialer that was closed.
pub(crate) fn forget(dialer: &Dialer) {
    let mut dials = DIALS.lock().unwrap_or_else(|p| p.into_inner());
    dials.retain(|e| e.dialer != dialer.id());
}

/// Every endpoint this process dials now, in the order dialled.
pub fn links() -> Vec<LinkState> {
    let mut dials = DIALS.lock().unwrap_or_else(|p| p.into_inner());
    dials.retain(|e| e.connection.strong_count() > 0);
    dials
        .iter()
        .filter_map(|e| {
            let conn = e.connection.upgrade()?;
            let (connected, since) = conn.dialer_state(e.dialer);
            Some(LinkState {
                url: e.url.clone(),
                connected,
                since_ms: since.unwrap_or(e.dialled_ms),
            })
        })
        .collect()
}
