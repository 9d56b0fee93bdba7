//! What was in force when, for a backtest of a past window (`shardbot drift`): the
//! trading settings (`trading_settings_history`, written by the risk manager at its start
//! and at every change) and the strategies with their parameters
//! (`parameters_history`, written by the order router when a worker announces the set it
//! loaded at its start). Each is kept as its JSON, one row per change.

use rusqlite::{OptionalExtension, params};
use shardbot_protocol::TimestampMs;

use crate::{Journal, JournalError};

/// The tables of things in force from a time, each `(id, set_at_ms, json)`.
#[derive(Debug, Clone, Copy)]
enum History {
    TradingSettings,
    Parameters,
}

impl History {
    fn table(self) -> &'static str {
        match self {
            History::TradingSettings => "trading_settings_history",
            History::Parameters => "parameters_history",
        }
    }
}

impl Journal {
    /// Records the trading settings in force from `set_at_ms` (their JSON), unless they
    /// are the ones in force already. Returns whether a row was written.
    pub fn record_trading_settings(
        &self,
        set_at_ms: TimestampMs,
        json: &str,
    ) -> Result<bool, JournalError> {
        self.record_in_force(History::TradingSettings, set_at_ms, json)
    }

    /// The trading settings in force at `at_ms` (their JSON): the newest recorded at or
    /// before it; `None` when none was recorded by then.
    pub fn trading_settings_at(&self, at_ms: TimestampMs) -> Result<Option<String>, JournalError> {
        self.in_force_at(History::TradingSettings, at_ms)
    }

    /// Records the strategies and parameters a worker trades with from `set_at_ms` (their
    /// JSON, `shardbot_strategy::ParametersInForce`), unless they are those in force at
    /// that time already (every worker of a stack announces the same set). Returns whether
    /// a row was written.
    pub fn record_parameters(
        &self,
        set_at_ms: TimestampMs,
        json: &str,
    ) -> Result<bool, JournalError> {
        self.record_in_force(History::Parameters, set_at_ms, json)
    }

    /// The strategies and parameters in force at `at_ms` (their JSON): the newest recorded
    /// at or before it; `None` when none was recorded by then.
    pub fn parameters_at(&self, at_ms: TimestampMs) -> Result<Option<String>, JournalError> {
        self.in_force_at(History::Parameters, at_ms)
    }

    /// The strategies and parameters that decided a window's trades, with the time they
    /// were recorded: those in force at `from_ms`, else (none recorded by then) the first
    /// recorded before `to_ms`. A worker trades a close it missed by a bar or two late
    /// (`worker.late_bars`), so a stack that started just after a window's start decided
    /// its first trades with the set it announced at its start.
    pub fn parameters_for(
        &self,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> Result<Option<(TimestampMs, String)>, JournalError> {
        self.in_force_for(History::Parameters, from_ms, to_ms)
    }

    /// The trading settings that judged a window's intents, as [`Journal::parameters_for`]
    /// finds the parameters.
    pub fn trading_settings_for(
        &self,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> Result<Option<(TimestampMs, String)>, JournalError> {
        self.in_force_for(History::TradingSettings, from_ms, to_ms)
    }

    /// How many parameter sets were announced after `after_ms` and before `to_ms` that
    /// differed from the one in force then: a window backtested with one set while
    /// workers started with another meanwhile.
    pub fn parameter_changes(
        &self,
        after_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> Result<usize, JournalError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM parameters_history WHERE set_at_ms > ?1 AND set_at_ms < ?2",
                params![after_ms, to_ms],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn record_in_force(
        &self,
        h: History,
        set_at_ms: TimestampMs,
        json: &str,
    ) -> Result<bool, JournalError> {
        if self.in_force_at(h, set_at_ms)?.as_deref() == Some(json) {
            return Ok(false);
        }
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {} (set_at_ms, json) VALUES (?1, ?2)",
                    h.table()
                ),
                params![set_at_ms, json],
            )
            .map_err(|e| self.sql(e))?;
        Ok(true)
    }

    fn in_force_for(
        &self,
        h: History,
        from_ms: TimestampMs,
        to_ms: TimestampMs,
    ) -> Result<Option<(TimestampMs, String)>, JournalError> {
        let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
        let at = self
            .conn
            .query_row(
                &format!(
                    "SELECT set_at_ms, json FROM {} WHERE set_at_ms <= ?1
                     ORDER BY set_at_ms DESC, id DESC LIMIT 1",
                    h.table()
                ),
                [from_ms],
                row,
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        if at.is_some() {
            return Ok(at);
        }
        self.conn
            .query_row(
                &format!(
                    "SELECT set_at_ms, json FROM {} WHERE set_at_ms < ?1
                     ORDER BY set_at_ms, id LIMIT 1",
                    h.table()
                ),
                [to_ms],
                row,
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    fn in_force_at(&self, h: History, at_ms: TimestampMs) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT json FROM {} WHERE set_at_ms <= ?1 ORDER BY set_at_ms DESC, id DESC LIMIT 1",
                    h.table()
                ),
                [at_ms],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rstest::rstest;

    use super::*;

    type Record = fn(&Journal, TimestampMs, &str) -> Result<bool, JournalError>;
    type At = fn(&Journal, TimestampMs) -> Result<Option<String>, JournalError>;

    /// What is in force at a time is the newest recorded by then; the same again adds
    /// nothing; a set announced late (a worker that started earlier but reached the
    /// router later) takes its own place in time.
    #[rstest]
    #[case::trading_settings(Journal::record_trading_settings as Record, Journal::trading_settings_at as At)]
    #[case::parameters(Journal::record_parameters as Record, Journal::parameters_at as At)]
    fn in_force_at_a_time(#[case] record: Record, #[case] at: At) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
        let a = "{\"a\":1}";
        let b = "{\"a\":2}";
        assert_eq!(at(&j, 100).unwrap(), None);
        assert!(record(&j, 10, a).unwrap());
        assert!(!record(&j, 20, a).unwrap(), "unchanged");
        assert!(record(&j, 30, b).unwrap());
        assert_eq!(at(&j, 5).unwrap(), None);
        assert_eq!(at(&j, 10).unwrap().as_deref(), Some(a));
        assert_eq!(at(&j, 29).unwrap().as_deref(), Some(a));
        assert_eq!(at(&j, 30).unwrap().as_deref(), Some(b));
        assert!(!record(&j, 35, b).unwrap(), "unchanged");
        assert!(record(&j, 40, a).unwrap(), "back to the first");
        assert_eq!(at(&j, 99).unwrap().as_deref(), Some(a));
        // Late: in force at 25 was `a`, so `b` from 25 is a change; nothing later moves.
        assert!(record(&j, 25, b).unwrap());
        assert_eq!(at(&j, 27).unwrap().as_deref(), Some(b));
        assert_eq!(at(&j, 99).unwrap().as_deref(), Some(a));
        assert!(!record(&j, 26, b).unwrap(), "in force at 26 already");
    }

    type For = fn(
        &Journal,
        TimestampMs,
        TimestampMs,
    ) -> Result<Option<(TimestampMs, String)>, JournalError>;

    /// A window's settings or parameters: those in force at its start, else the first
    /// recorded in it.
    #[rstest]
    #[case::trading_settings(Journal::record_trading_settings as Record, Journal::trading_settings_for as For)]
    #[case::parameters(Journal::record_parameters as Record, Journal::parameters_for as For)]
    fn in_force_for_a_window(#[case] record: Record, #[case] find: For) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
        assert_eq!(find(&j, 0, 100).unwrap(), None);
        record(&j, 40, "x").unwrap();
        record(&j, 60, "y").unwrap();
        let got = |from, to| find(&j, from, to).unwrap();
        assert_eq!(
            got(10, 40),
            None,
            "nothing recorded before the window's end"
        );
        assert_eq!(got(10, 41), Some((40, "x".to_owned())));
        assert_eq!(got(10, 100), Some((40, "x".to_owned())));
        assert_eq!(got(50, 100), Some((40, "x".to_owned())));
        assert_eq!(got(60, 100), Some((60, "y".to_owned())));
    }

    #[test]
    fn parameter_changes_inside_a_window_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
        j.record_parameters(10, "x").unwrap();
        j.record_parameters(50, "y").unwrap();
        j.record_parameters(70, "x").unwrap();
        assert_eq!(j.parameter_changes(10, 50).unwrap(), 0);
        assert_eq!(j.parameter_changes(10, 51).unwrap(), 1);
        assert_eq!(j.parameter_changes(0, 100).unwrap(), 3);
        assert_eq!(j.parameter_changes(60, 100).unwrap(), 1);
    }
}
