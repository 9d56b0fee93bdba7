//! Spikes the Activity badge and the notifications point at: a bar close with many more
//! refusals than the closes before it (a risk rule suddenly biting, a stale feed), and
//! errors in the services' logs in the last minutes. Pure: the collector feeds the
//! journal's counts and the log tails it read.

use std::collections::BTreeMap;

use serde::Serialize;
use shardbot_protocol::TimestampMs;

use crate::collect::LogTail;

/// A close's refusals are a spike from this many on...
pub const REFUSAL_SPIKE_MIN: u64 = 10;
/// ...and when they are this many times the usual (the median of the closes before it).
pub const REFUSAL_SPIKE_FACTOR: u64 = 3;
/// Refusals that are the user's own choice (trading stopped), not a rule biting: a Stop
/// refuses every entry of a close, which is no news.
const CHOSEN: &[&str] = &["halted"];
/// Errors count as recent for this long.
pub const ERROR_WINDOW_MS: i64 = 5 * 60_000;
/// This many errors within the window are a spike (notified); fewer still show on the badge.
pub const ERROR_SPIKE: u32 = 5;

/// The newest close's refusals against the usual.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RefusalSpike {
    /// The bar's open time.
    pub bar_open_ms: TimestampMs,
    pub refused: u64,
    /// The median of the closes before it (of those with refusals at all).
    pub usual: u64,
    /// The reason with most refusals at that close.
    pub top_reason: String,
}

fn counted(m: &BTreeMap<String, u64>) -> u64 {
    m.iter()
        .filter(|(code, _)| !CHOSEN.contains(&code.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// A spike at the newest close of `by_close` (newest first: each close's refusals by
/// reason), or none.
pub fn refusal_spike(by_close: &[(TimestampMs, BTreeMap<String, u64>)]) -> Option<RefusalSpike> {
    let (bar, newest) = by_close.first()?;
    let refused = counted(newest);
    let mut before: Vec<u64> = by_close[1..].iter().map(|(_, m)| counted(m)).collect();
    before.sort_unstable();
    let usual = before.get(before.len() / 2).copied().unwrap_or(0);
    if refused < REFUSAL_SPIKE_MIN || refused < REFUSAL_SPIKE_FACTOR * usual.max(1) {
        return None;
    }
    let top_reason = newest
        .iter()
        .filter(|(code, _)| !CHOSEN.contains(&code.as_str()))
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(code, _)| code.clone())
        .unwrap_or_default();
    Some(RefusalSpike {
        bar_open_ms: *bar,
        refused,
        usual,
        top_reason,
    })
}

/// The errors of the services' logs within the window.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecentErrors {
    pub count: u32,
    /// The log files they are in, by name.
    pub files: Vec<String>,
    /// The newest one's line.
    pub newest: String,
}

/// Whether a log line (text or JSON) is an error.
fn is_error(line: &str) -> bool {
    line.contains(" ERROR ") || line.contains("\"level\":\"ERROR\"")
}

/// A log line's time: the RFC 3339 stamp a text line starts with, or a JSON line's
/// `timestamp` (tracing's formats).
pub fn line_time_ms(line: &str) -> Option<TimestampMs> {
    let stamp = if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v.get("timestamp")?.as_str()?.to_owned()
    } else {
        line.split_whitespace().next()?.to_owned()
    };
    chrono::DateTime::parse_from_rfc3339(&stamp)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The error lines of `logs` stamped within `ERROR_WINDOW_MS` before `now_ms` (a line
/// without a readable time is left out), or none.
pub fn recent_errors(logs: &[LogTail], now_ms: TimestampMs) -> Option<RecentErrors> {
    let mut count = 0;
    let mut files = Vec::new();
    let mut newest: Option<(TimestampMs, &str)> = None;
    for tail in logs {
        let mut in_file = false;
        for line in tail.lines.iter().filter(|l| is_error(l)) {
            let Some(t) = line_time_ms(line) else {
                continue;
            };
            if t < now_ms - ERROR_WINDOW_MS {
                continue;
            }
            count += 1;
            in_file = true;
            if newest.is_none_or(|(n, _)| t >= n) {
                newest = Some((t, line));
            }
        }
        if in_file {
            files.push(tail.file.clone());
        }
    }
    files.sort();
    newest.map(|(_, line)| RecentErrors {
        count,
        files,
        newest: line.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;

    fn close(bar: i64, counts: &[(&str, u64)]) -> (TimestampMs, BTreeMap<String, u64>) {
        (
            bar,
            counts.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
        )
    }

    #[rstest]
    #[case::no_refusals(vec![], None)]
    #[case::few_at_the_newest(vec![vec![("max_margin_use", 9)]], None)]
    #[case::many_with_nothing_before(vec![vec![("max_margin_use", 10)]], Some((10, 0, "max_margin_use")))]
    #[case::many_but_usual(
        vec![vec![("max_margin_use", 20)], vec![("max_margin_use", 8)], vec![("max_margin_use", 7)]],
        None
    )]
    #[case::three_times_the_median(
        vec![vec![("max_margin_use", 18), ("stale", 3)], vec![("max_margin_use", 7)],
             vec![("max_margin_use", 2)], vec![("max_margin_use", 50)]],
        Some((21, 7, "max_margin_use"))
    )]
    #[case::a_stop_is_no_spike(vec![vec![("halted", 400)], vec![("max_margin_use", 1)]], None)]
    #[case::a_stop_does_not_raise_the_usual(
        vec![vec![("stale", 12)], vec![("halted", 400)], vec![("halted", 300)]],
        Some((12, 0, "stale"))
    )]
    #[case::a_tie_names_the_first_by_name(vec![vec![("stale", 6), ("cooldown", 6)]], Some((12, 0, "cooldown")))]
    fn a_close_with_many_more_refusals_than_usual_is_a_spike(
        #[case] closes: Vec<Vec<(&str, u64)>>,
        #[case] want: Option<(u64, u64, &str)>,
    ) {
        let by_close: Vec<_> = closes
            .iter()
            .enumerate()
            .map(|(i, c)| close(1_000 - i as i64, c))
            .collect();
        let got = refusal_spike(&by_close);
        assert_eq!(
            got.as_ref()
                .map(|s| (s.refused, s.usual, s.top_reason.as_str())),
            want,
            "{got:?}"
        );
        if let Some(s) = got {
            assert_eq!(s.bar_open_ms, 1_000, "the newest close's");
        }
    }

    #[rstest]
    #[case::text(
        "2026-12-05T08:00:01.250000Z ERROR order_router: batch failed",
        Some(1_796_457_601_250)
    )]
    #[case::json(
        r#"{"timestamp":"2026-12-05T08:00:01.250Z","level":"ERROR","fields":{}}"#,
        Some(1_796_457_601_250)
    )]
    #[case::no_stamp("ERROR batch failed", None)]
    #[case::broken_json(r#"{"timestamp":"#, None)]
    fn a_log_lines_time(#[case] line: &str, #[case] want: Option<i64>) {
        assert_eq!(line_time_ms(line), want);
    }

    #[test]
    fn recent_errors_are_counted_across_files_and_old_ones_and_warnings_left_out() {
        let now = line_time_ms("2026-12-05T08:10:00Z").unwrap();
        let logs = vec![
            LogTail {
                file: "order-router.log".into(),
                lines: vec![
                    "2026-12-05T08:04:59Z ERROR order_router: too old".into(),
                    "2026-12-05T08:06:00Z  WARN order_router: a warning".into(),
                    "2026-12-05T08:07:00Z ERROR order_router: batch failed".into(),
                ],
            },
            LogTail {
                file: "market-data.log".into(),
                lines: vec![
                    r#"{"timestamp":"2026-12-05T08:09:00Z","level":"ERROR","fields":{"message":"feed lost"}}"#.into(),
                    "no time ERROR at all".into(),
                ],
            },
            LogTail {
                file: "quiet.log".into(),
                lines: vec![],
            },
        ];
        let got = recent_errors(&logs, now).unwrap();
        assert_eq!(got.count, 2);
        assert_eq!(got.files, ["market-data.log", "order-router.log"]);
        assert!(got.newest.contains("feed lost"), "{got:?}");
        assert_eq!(recent_errors(&logs[2..], now), None);
        assert_eq!(recent_errors(&logs, now + ERROR_WINDOW_MS), None);
    }
}
