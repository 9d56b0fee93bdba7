//! The risk manager's persisted state: the simulated-balance offset and the kill-switch
//! mode, so both survive restarts.
//!
//! `offset = exchange balance at the first start − the simulated balance the user set`;
//! from then on `simulated = exchange balance − offset`, so the simulated balance moves
//! exactly as the exchange's does. Written atomically (temporary file, fsync, rename).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shardbot_protocol::{TimestampMs, TradingMode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskState {
    /// The account the offset belongs to (a state file of another account is refused).
    pub account: String,
    pub offset: Decimal,
    /// The simulated balance the offset was set for, and when.
    pub simulated_start: Decimal,
    pub set_at_ms: TimestampMs,
    #[serde(default)]
    pub mode: TradingMode,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("risk state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("risk state {path} is damaged ({source}); move it away to start over")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "risk state {path} belongs to account `{found}`, not `{expected}`; point risk.state_file \
         elsewhere"
    )]
    OtherAccount {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

impl RiskState {
    /// The simulated balance this state set, as the journal records it.
    pub fn simulated_balance(&self) -> shardbot_journal::SimulatedBalance {
        shardbot_journal::SimulatedBalance {
            set_at_ms: self.set_at_ms,
            simulated_balance: self.simulated_start,
            exchange_balance: self.simulated_start + self.offset,
            offset: self.offset,
        }
    }

    /// The state at `path`, if any.
    pub fn load(path: &Path, account: &str) -> Result<Option<RiskState>, StateError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let s: RiskState = serde_json::from_str(&text).map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if s.account != account {
            return Err(StateError::OtherAccount {
                path: path.to_owned(),
                found: s.account,
                expected: account.to_owned(),
            });
        }
        Ok(Some(s))
    }

    /// A first start: the offset that makes the exchange balance read as `simulated`.
    pub fn first(
        account: &str,
        exchange_balance: Decimal,
        simulated: Decimal,
        now_ms: TimestampMs,
    ) -> RiskState {
        RiskState {
            account: account.to_owned(),
            offset: exchange_balance - simulated,
            simulated_start: simulated,
            set_at_ms: now_ms,
            mode: TradingMode::Normal,
        }
    }

    pub fn simulated(&self, exchange_balance: Decimal) -> Decimal {
        exchange_balance - self.offset
    }

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| io(e.into()))?;
        // Owner-only (the account's name, offset and mode are nobody else's business), and
        // created so from the start: a leftover temporary file of another mode goes first.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?
        };
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn the_offset_survives_a_restart_and_tracks_the_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("risk/state.json");
        assert_eq!(RiskState::load(&path, "demo").unwrap(), None);
        let mut s = RiskState::first("demo", dec!(100523.17), dec!(1000), 1);
        assert_eq!(s.offset, dec!(99523.17));
        assert_eq!(s.simulated(dec!(100523.17)), dec!(1000));
        s.mode = TradingMode::Halted;
        s.save(&path).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "the risk state is owner-only");
        }
        let again = RiskState::load(&path, "demo").unwrap().unwrap();
        assert_eq!(again, s);
        // a winning trade of 12.5 USDT on the exchange is a winning trade here
        assert_eq!(again.simulated(dec!(100535.67)), dec!(1012.5));
        let e = RiskState::load(&path, "live").unwrap_err().to_string();
        assert!(e.contains("belongs to account `demo`"), "{e}");
        fs::write(&path, "{").unwrap();
        assert!(
            RiskState::load(&path, "demo")
                .unwrap_err()
                .to_string()
                .contains("damaged")
        );
    }
}
