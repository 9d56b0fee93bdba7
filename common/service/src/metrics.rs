//! A process's own figures, published in its heartbeat (and from there exported by the
//! dashboard). A service registers gauges once at start, each a function read at every
//! beat; nothing is collected between beats but what the functions read.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

type Read = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The gauges of one process. Cheap to clone; every clone is the same registry.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<BTreeMap<String, Read>>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_tuple("Metrics").field(&names).finish()
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Read>> {
        // Registering or reading cannot leave the map half-changed: a poisoned lock is usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers (or replaces) the gauge `name` (snake_case; `_total` for counters).
    pub fn gauge(&self, name: &str, read: impl Fn() -> i64 + Send + Sync + 'static) {
        self.lock().insert(name.to_owned(), Arc::new(read));
    }

    /// Every gauge's value now.
    pub fn read(&self) -> BTreeMap<String, i64> {
        let gauges: Vec<(String, Read)> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Read outside the lock: a gauge may take locks of its own.
        gauges.into_iter().map(|(k, f)| (k, f())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[test]
    fn gauges_are_read_at_each_call() {
        let m = Metrics::default();
        let n = Arc::new(AtomicI64::new(1));
        let n2 = n.clone();
        m.clone()
            .gauge("ws_reconnects_total", move || n2.load(Ordering::Relaxed));
        assert_eq!(m.read()["ws_reconnects_total"], 1);
        n.store(5, Ordering::Relaxed);
        assert_eq!(m.read()["ws_reconnects_total"], 5);
    }
}
