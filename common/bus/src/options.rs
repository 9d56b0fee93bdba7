//! Socket tuning and endpoints, as read from the `[bus]` section of the configuration.

use std::time::Duration;

use serde::Deserialize;

/// Socket options. The defaults here are the ones `deploy/config/default.toml` documents
/// (a test in `shardbot-service` keeps the two equal).
///
/// Why these values (measured on the project's 2-core VM, see docs/performance.md):
/// - `pub_send_buffer`: nng's PUB keeps one queue per subscriber pipe and drops the
///   *oldest* message when it is full, silently. At the default of 16, 84-89 % of a burst is
///   lost; at 1024 a subscriber keeps up with 20-50k msg/s without loss. 1024 messages of a
///   ~120 B bar is ~120 KiB per subscriber: cheap.
/// - `sub_recv_buffer`: the subscriber's receive queue (default 128); 1024 absorbs the
///   bursts of a bar close across 600+ symbols while the application decodes.
/// - Both are capped by nng at 8192.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusOptions {
    pub pub_send_buffer: i32,
    pub sub_recv_buffer: i32,
    /// A request with no reply within this time fails with [`BusError::Timeout`](crate::BusError).
    pub request_timeout_ms: u64,
    /// A request with no reply within this time is sent again (also immediately when the
    /// replier's connection drops), so a restarted replier still answers it.
    pub request_resend_ms: u64,
    /// Redial backoff bounds after a lost connection.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            pub_send_buffer: 1024,
            sub_recv_buffer: 1024,
            request_timeout_ms: 5000,
            request_resend_ms: 1000,
            reconnect_min_ms: 20,
            reconnect_max_ms: 1000,
        }
    }
}

impl BusOptions {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn request_resend(&self) -> Duration {
        Duration::from_millis(self.request_resend_ms)
    }

    /// Checks ranges, with errors that name the setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("bus.pub_send_buffer", self.pub_send_buffer),
            ("bus.sub_recv_buffer", self.sub_recv_buffer),
        ] {
            if !(1..=8192).contains(&v) {
                return Err(format!(
                    "{name} = {v}: must be between 1 and 8192 (nng's limit)"
                ));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err("bus.request_timeout_ms must be greater than 0".into());
        }
        if self.request_resend_ms == 0 {
            return Err("bus.request_resend_ms must be greater than 0".into());
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err(format!(
                "bus.reconnect_min_ms ({}) must be > 0 and <= bus.reconnect_max_ms ({})",
                self.reconnect_min_ms, self.reconnect_max_ms
            ));
        }
        Ok(())
    }
}

/// Checks that `url` is an endpoint nng can use here: `ipc://`, `tcp://` or `inproc://`.
pub fn validate_url(url: &str) -> Result<(), String> {
    let ok = ["ipc://", "tcp://", "inproc://"]
        .iter()
        .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{url}` is not a bus endpoint: use ipc:///path/to/socket (one machine) or \
             tcp://host:port (several machines)"
        ))
    }
}
