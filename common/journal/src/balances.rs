//! The `simulated_balances` table (written by the risk manager): every simulated balance
//! the account stack traded with, from when, and the offset that made it (`simulated =
//! exchange balance − offset`). Every balance and percentage a user sees is of the
//! simulated balance in force when it was earned: [`periods`] splits the closed trades by
//! the balance they were traded on, so a balance set afresh mid-run leaves the figures of
//! before and after each on its own base.

use rusqlite::params;
use rust_decimal::Decimal;
use shardbot_analytics::TradeResult;
use shardbot_protocol::TimestampMs;

use crate::{Journal, JournalError};

/// A simulated balance set by the risk manager (at the first start of an account stack,
/// and whenever the user sets another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedBalance {
    pub set_at_ms: TimestampMs,
    /// The balance the user set.
    pub simulated_balance: Decimal,
    /// The exchange's wallet balance then.
    pub exchange_balance: Decimal,
    /// `exchange_balance − simulated_balance`.
    pub offset: Decimal,
}

/// The simulated balance and equity (open positions marked to market) at one moment, as
/// the risk manager samples them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EquitySample {
    /// Exchange time.
    pub at_ms: TimestampMs,
    pub balance: Decimal,
    pub equity: Decimal,
}

impl SimulatedBalance {
    /// An exchange amount (a wallet balance, an expected balance) as the simulated one.
    pub fn simulated(&self, exchange: Decimal) -> Decimal {
        exchange - self.offset
    }
}

/// The closed trades traded on one simulated balance.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub balance: SimulatedBalance,
    /// When the next balance was set (None: the one in force now).
    pub until_ms: Option<TimestampMs>,
    /// By exit time, within `[balance.set_at_ms, until_ms)`.
    pub trades: Vec<TradeResult>,
}

/// `trades` split by the simulated balance in force at their exits (a balance can only be
/// set with no position open, so a trade never spans two). Trades that closed before the
/// first recorded balance count in the first period. Empty without any balance.
pub fn periods(balances: &[SimulatedBalance], trades: &[TradeResult]) -> Vec<Period> {
    let mut sorted = balances.to_vec();
    sorted.sort_by_key(|b| b.set_at_ms);
    let mut out: Vec<Period> = sorted
        .iter()
        .enumerate()
        .map(|(i, b)| Period {
            balance: b.clone(),
            until_ms: sorted.get(i + 1).map(|n| n.set_at_ms),
            trades: Vec::new(),
        })
        .collect();
    for t in trades {
        let i = out
            .iter()
            .rposition(|p| t.exit_time_ms >= p.balance.set_at_ms)
            .unwrap_or(0);
        if let Some(p) = out.get_mut(i) {
            p.trades.push(t.clone());
        }
    }
    out
}

/// The period in force at `at_ms` (the first one for earlier times).
pub fn period_at(balances: &[SimulatedBalance], at_ms: TimestampMs) -> Option<&SimulatedBalance> {
    balances
        .iter()
        .filter(|b| b.set_at_ms <= at_ms)
        .max_by_key(|b| b.set_at_ms)
        .or_else(|| balances.iter().min_by_key(|b| b.set_at_ms))
}

impl Journal {
    /// Records a simulated balance; recording the same one again (same time and offset)
    /// changes nothing.
    pub fn record_simulated_balance(&self, b: &SimulatedBalance) -> Result<bool, JournalError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO simulated_balances (set_at_ms, simulated_balance,
                    exchange_balance, offset) VALUES (?1, ?2, ?3, ?4)",
                params![
                    b.set_at_ms,
                    b.simulated_balance.to_string(),
                    b.exchange_balance.to_string(),
                    b.offset.to_string()
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(n == 1)
    }

    /// Records the simulated balance and equity (open positions marked to market) at
    /// `at_ms` (exchange time); a second sample at the same millisecond changes nothing.
    pub fn record_equity(&self, e: &EquitySample) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO equity_samples (at_ms, balance, equity) VALUES (?1, ?2, ?3)",
                params![e.at_ms, e.balance.to_string(), e.equity.to_string()],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The equity samples from `from_ms` on, oldest first, at most `max` of them: with
    /// more, the last of each of `max` equal spans of time (a chart's points).
    pub fn equity_since(
        &self,
        from_ms: i64,
        max: usize,
    ) -> Result<Vec<EquitySample>, JournalError> {
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT MIN(at_ms), MAX(at_ms) FROM equity_samples WHERE at_ms >= ?1",
                [from_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.sql(e))?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Vec::new());
        };
        let span = ((last - first) / i64::try_from(max.max(1)).unwrap_or(i64::MAX) + 1).max(1);
        let mut st = self
            .conn
            .prepare(
                "SELECT at_ms, balance, equity FROM equity_samples
                 WHERE at_ms IN (SELECT MAX(at_ms) FROM equity_samples WHERE at_ms >= ?1
                                 GROUP BY (at_ms - ?1) / ?2)
                 ORDER BY at_ms",
            )
            .map_err(|e| self.sql(e))?;
        let rows: Vec<(i64, String, String)> = st
            .query_map(params![first, span], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(at_ms, b, e)| {
                Ok(EquitySample {
                    at_ms,
                    balance: self.dec(&b)?,
                    equity: self.dec(&e)?,
                })
            })
            .collect()
    }

    /// Every simulated balance, oldest first.
    pub fn simulated_balances(&self) -> Result<Vec<SimulatedBalance>, JournalError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT set_at_ms, simulated_balance, exchange_balance, offset
                 FROM simulated_balances ORDER BY set_at_ms, id",
            )
            .map_err(|e| self.sql(e))?;
        let rows: Vec<(i64, String, String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(set_at_ms, s, e, o)| {
                Ok(SimulatedBalance {
                    set_at_ms,
                    simulated_balance: self.dec(&s)?,
                    exchange_balance: self.dec(&e)?,
                    offset: self.dec(&o)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;

    fn bal(at: i64, sim: Decimal, ex: Decimal) -> SimulatedBalance {
        SimulatedBalance {
            set_at_ms: at,
            simulated_balance: sim,
            exchange_balance: ex,
            offset: ex - sim,
        }
    }

    fn trade(exit: i64, net: Decimal) -> TradeResult {
        TradeResult {
            symbol: "BTCUSDT".into(),
            strategy: "s".into(),
            entry_time_ms: exit - 10,
            exit_time_ms: exit,
            net,
            fees: dec!(0),
            verified: true,
        }
    }

    #[test]
    fn equity_samples_are_kept_once_and_thinned_to_a_charts_points() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
        assert_eq!(j.equity_since(0, 10).unwrap(), []);
        let s = |at: i64, e: i64| EquitySample {
            at_ms: at,
            balance: dec!(1000),
            equity: Decimal::from(e),
        };
        for i in 0..100 {
            j.record_equity(&s(1_000 + i * 60_000, 1000 + i)).unwrap();
        }
        // The same millisecond again changes nothing.
        j.record_equity(&s(1_000, 5)).unwrap();
        let all = j.equity_since(0, 1000).unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[0], s(1_000, 1000));
        // From a time on.
        let late = j.equity_since(1_000 + 90 * 60_000, 1000).unwrap();
        assert_eq!(late.len(), 10);
        // Thinned: at most 10, each the last of its span, the newest sample kept.
        let thin = j.equity_since(0, 10).unwrap();
        assert!(thin.len() <= 10 && thin.len() >= 9, "{}", thin.len());
        assert_eq!(thin.last(), all.last());
        assert!(thin.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
    }

    #[test]
    fn recorded_once_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
        let a = bal(100, dec!(1000), dec!(100000));
        let b = bal(50, dec!(500), dec!(99000.5));
        assert!(j.record_simulated_balance(&a).unwrap());
        assert!(
            !j.record_simulated_balance(&a).unwrap(),
            "the same one twice"
        );
        assert!(j.record_simulated_balance(&b).unwrap());
        assert_eq!(j.simulated_balances().unwrap(), vec![b, a]);
    }

    #[test]
    fn trades_fall_in_the_period_of_their_exit() {
        let balances = [
            bal(1000, dec!(1000), dec!(100000)),
            bal(2000, dec!(500), dec!(100100)),
        ];
        let trades = [
            trade(900, dec!(1)),
            trade(1500, dec!(2)),
            trade(2000, dec!(3)),
            trade(2500, dec!(4)),
        ];
        let p = periods(&balances, &trades);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].until_ms, Some(2000));
        assert_eq!(p[1].until_ms, None);
        let nets = |p: &Period| p.trades.iter().map(|t| t.net).collect::<Vec<_>>();
        assert_eq!(nets(&p[0]), vec![dec!(1), dec!(2)]);
        assert_eq!(nets(&p[1]), vec![dec!(3), dec!(4)]);
        assert!(periods(&[], &trades).is_empty());
        assert_eq!(period_at(&balances, 1999).unwrap().offset, dec!(99000));
        assert_eq!(period_at(&balances, 2000).unwrap().offset, dec!(99600));
        assert_eq!(period_at(&balances, 10).unwrap().offset, dec!(99000));
        assert_eq!(
            period_at(&balances, 2500).unwrap().simulated(dec!(100150)),
            dec!(550)
        );
    }
}
