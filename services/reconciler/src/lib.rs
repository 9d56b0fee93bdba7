//! The reconciler (see DESIGN.md §2): every closed trade verified against the exchange's
//! own records.
//!
//! It rebuilds round-trip trades from the journal's fills (the router's), fetches the
//! exchange's closed-PnL records and executions, matches them to each closed trade by
//! order ids, compares quantity, average prices, fees, funding and closed PnL, keeps the
//! exchange's numbers as the record's, marks the trade verified and records every
//! discrepancy with both values. A closed-PnL record no journal trade explains (an order
//! placed by hand, a liquidation, lost fills) is imported and flagged. After each sweep the
//! expected balance (baseline + Σ net of the trades since) is compared with the wallet.
//!
//! Sweeps run at start (a full pass), after every fill that closes a position (retried
//! until the exchange has reported it), every `reconciler.sweep_interval_s`, a full pass
//! every `reconciler.full_pass_interval_s`, and on request (`shardbot reconcile`). A
//! closed trade still unverified `alert_unverified_after_h` after its exit turns the
//! heartbeat degraded: Bybit demo keeps its records 7 days.

pub mod roundtrip;
pub mod sweep;
pub mod verify;

use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;
use shardbot_bus::{Replier, Subscriber};
use shardbot_bybit::{ExchangeSettings, rest::BybitClient};
use shardbot_journal::{Journal, JournalSettings};
use shardbot_protocol::{
    ErrorReply, Event, ReconcileReply, ReconcileRequest, ServiceState, SweepSummary,
};
use shardbot_service::{HeartbeatActor, ServiceContext, SetState, StartError};
use tokio::sync::mpsc;

pub use sweep::{SweepConfig, SweepOutcome, sweep};

/// `[reconciler]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcilerSettings {
    pub ip_requests_per_5s: u32,
    pub sweep_interval_s: u64,
    pub full_pass_interval_s: u64,
    pub tolerance: Decimal,
    pub alert_unverified_after_h: u64,
    pub close_retry_ms: u64,
    pub close_retries: u32,
}

impl ReconcilerSettings {
    fn validate(&self) -> Result<(), String> {
        if self.sweep_interval_s == 0 || self.full_pass_interval_s == 0 {
            return Err(
                "reconciler.sweep_interval_s and full_pass_interval_s must be greater than 0"
                    .into(),
            );
        }
        if self.tolerance < Decimal::ZERO {
            return Err("reconciler.tolerance must not be negative".into());
        }
        if self.close_retry_ms == 0 {
            return Err("reconciler.close_retry_ms must be greater than 0".into());
        }
        Ok(())
    }
}

/// The longest a sweep asked for by `shardbot reconcile` may take (a full sweep reads the
/// account's whole history, a week per request); beyond it the reconciler counts as stuck.
const REPLY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

enum Trigger {
    /// A fill closed (part of) a position.
    Close,
    /// `shardbot reconcile`.
    Manual {
        full: bool,
        reply: shardbot_bus::ReplyTo<ReconcileReply>,
    },
}

pub fn start(ctx: &ServiceContext) -> Result<(), StartError> {
    let rs: ReconcilerSettings = ctx.settings.section("reconciler")?;
    rs.validate()?;
    let js: JournalSettings = ctx.settings.section("journal")?;
    let journal = Journal::open(&js.file)?;
    let mut exchange: ExchangeSettings = ctx.settings.section("exchange")?;
    // Real money only when the configuration names the live account to trade.
    exchange.check_live_confirmed()?;
    exchange.ip_requests_per_5s = rs.ip_requests_per_5s;
    let sim_account = ctx
        .settings
        .sim_account(&exchange.account)
        .map(|(_, k, s)| (k, s));
    let client = exchange
        .client(Some(exchange.credentials(sim_account)?))
        .map_err(|e| format!("reconciler.ip_requests_per_5s / [exchange]: {e}"))?;
    let limiter = client.limiter().clone();
    ctx.metrics.gauge("ratelimit_ip_headroom", move || {
        i64::from(limiter.ip_headroom())
    });
    let ep = &ctx.common.endpoints;
    let replier = Replier::bind(&ep.reconciler_rep, &ctx.common.bus)?;
    let fills = Subscriber::dial(&[&ep.order_router_pub], &ctx.common.bus)?;
    fills.subscribe("fill.")?;
    let (tx, rx) = mpsc::unbounded_channel();
    tracing::info!(journal = %js.file.display(), "reconciler starting");

    // Fills that close a position ask for a sweep.
    let close_tx = tx.clone();
    std::thread::Builder::new()
        .name("reconciler-fills".into())
        .spawn(move || {
            loop {
                match fills.recv(None) {
                    Ok(Some(r)) => {
                        if let Event::Fill(f) = r.event
                            && f.closed_size > Decimal::ZERO
                            && close_tx.send(Trigger::Close).is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "fill subscription failed");
                        return;
                    }
                }
            }
        })?;

    let shutdown = ctx.shutdown.clone();
    std::thread::Builder::new()
        .name("reconciler-rep".into())
        .spawn(move || {
            let served = replier.serve(
                |request: ReconcileRequest| {
                    let ReconcileRequest::Sweep { full } = request;
                    let asked = shutdown.ask_actor("reconciler", REPLY_DEADLINE, |reply| {
                        tx.send(Trigger::Manual { full, reply }).is_ok()
                    });
                    asked.unwrap_or_else(|e| match e {
                        shardbot_bus::Unanswered::Stopping => stopping(),
                        shardbot_bus::Unanswered::Deadline(_) => {
                            ReconcileReply::Error(ErrorReply {
                                message: format!("the reconciler cannot answer: {e}"),
                            })
                        }
                    })
                },
                |message| ReconcileReply::Error(ErrorReply { message }),
            );
            if let Err(e) = served {
                shutdown.fatal(format!("reconciler replier failed: {e}"));
            }
        })?;

    let cfg = SweepConfig {
        tolerance: rs.tolerance,
        alert_unverified_after_ms: i64::try_from(rs.alert_unverified_after_h)
            .unwrap_or(i64::MAX / 3_600_001)
            * 3_600_000,
        // Fills reach the journal within a second of the exchange's private stream.
        import_grace: Duration::from_secs(10),
        in_flight_since: std::sync::Mutex::default(),
        unexplained: std::sync::Mutex::default(),
    };
    actix::spawn(run_loop(
        client,
        journal,
        rs,
        cfg,
        rx,
        ctx.heartbeat.clone(),
    ));
    Ok(())
}

fn stopping() -> ReconcileReply {
    ReconcileReply::Error(ErrorReply {
        message: "the reconciler is stopping".into(),
    })
}

async fn run_loop(
    client: BybitClient,
    journal: Journal,
    rs: ReconcilerSettings,
    cfg: SweepConfig,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    heartbeat: actix::Addr<HeartbeatActor>,
) {
    // Every window and the balance baseline are in the exchange's time (bybit-sim's may
    // be years off and faster than ours): measured before the first sweep, retried while
    // the exchange is unreachable.
    let mut wait = Duration::from_millis(500);
    while let Err(e) = client.sync_time().await {
        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot read the exchange's clock");
        heartbeat.do_send(SetState(ServiceState::Degraded {
            reason: format!("exchange unreachable: {e}"),
        }));
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
    let one = |kind: &'static str, full: bool| {
        let (client, journal, cfg, heartbeat) = (&client, &journal, &cfg, &heartbeat);
        async move {
            let result = sweep(client, journal, kind, full, cfg).await;
            report(kind, &result, heartbeat, journal, client);
            result
        }
    };
    let mut failed = Failed::default();
    failed.after(one("start", true).await.is_err(), true);
    let mut periodic = tokio::time::interval(Duration::from_secs(rs.sweep_interval_s));
    // The bus can drop a fill event (PUB/SUB), and a subscriber connects a moment after
    // its publisher: the journal, which the router writes before it publishes, is looked
    // at too, so a close is never missed for longer than this.
    let mut journal_poll =
        tokio::time::interval(Duration::from_millis(rs.close_retry_ms.max(250) * 2));
    let mut fills_seen = journal.max_fill_rowid().unwrap_or(0);
    let mut daily = tokio::time::interval(Duration::from_secs(rs.full_pass_interval_s));
    periodic.tick().await;
    daily.tick().await;
    let retry = Duration::from_millis(rs.close_retry_ms);
    let mut close_due: Option<tokio::time::Instant> = None;
    let mut close_left = 0u32;
    loop {
        let due = close_due;
        let retry_due = failed.due;
        tokio::select! {
            _ = periodic.tick() => { failed.after(one("periodic", false).await.is_err(), false); }
            _ = journal_poll.tick() => {
                let now = journal.max_fill_rowid().unwrap_or(fills_seen);
                if now > fills_seen {
                    fills_seen = now;
                    close_left = rs.close_retries;
                    close_due.get_or_insert_with(tokio::time::Instant::now);
                }
            }
            _ = daily.tick() => { failed.after(one("daily", true).await.is_err(), true); }
            _ = async { if let Some(d) = retry_due { tokio::time::sleep_until(d).await } else { std::future::pending::<()>().await } } => {
                let full = failed.full;
                failed.after(one("retry", full).await.is_err(), full);
            }
            _ = async { if let Some(d) = due { tokio::time::sleep_until(d).await } else { std::future::pending::<()>().await } } => {
                let r = one("close", false).await;
                failed.after(r.is_err(), false);
                let pending = r.map_or(1, |o| o.pending);
                if pending > 0 && close_left > 0 {
                    close_left -= 1;
                    close_due = Some(tokio::time::Instant::now() + retry);
                } else {
                    close_due = None;
                }
            }
            t = rx.recv() => match t {
                None => return,
                Some(Trigger::Close) => {
                    close_left = rs.close_retries;
                    // A burst of closes (a flatten) becomes one sweep.
                    close_due.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_millis(100));
                }
                Some(Trigger::Manual { full, reply }) => {
                    let r = one("manual", full).await;
                    failed.after(r.is_err(), full);
                    let _ = reply.send(match r {
                        Ok(o) => ReconcileReply::Swept(summary(&o)),
                        Err(e) => ReconcileReply::Error(ErrorReply { message: e.to_string() }),
                    });
                }
            }
        }
    }
}

/// The longest wait before a failed sweep is tried again.
const FAILED_SWEEP_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The first wait before a failed sweep is tried again; doubled after each failure.
const FAILED_SWEEP_BACKOFF_FIRST: Duration = Duration::from_secs(2);

/// When a failed sweep (the exchange unreachable, a timeout) is tried again: soon, with
/// a backoff up to a minute, not only at the next periodic sweep 15 minutes later, which
/// would leave the trades unverified and the service degraded that long.
#[derive(Debug, Default)]
struct Failed {
    due: Option<tokio::time::Instant>,
    backoff: Option<Duration>,
    /// Whether the sweep to try again is a full pass (any failed full one makes it so).
    full: bool,
}

impl Failed {
    /// Notes how the last sweep went.
    fn after(&mut self, failed: bool, full: bool) {
        if !failed {
            // A later successful sweep covers an earlier failed one, unless that was a
            // full pass and this one was not.
            if full || !self.full {
                *self = Self::default();
            }
            return;
        }
        let backoff = self.backoff.map_or(FAILED_SWEEP_BACKOFF_FIRST, |b| {
            (b * 2).min(FAILED_SWEEP_BACKOFF_MAX)
        });
        self.backoff = Some(backoff);
        self.full |= full;
        self.due = Some(tokio::time::Instant::now() + backoff);
        tracing::info!(
            retry_in_ms = backoff.as_millis() as u64,
            full = self.full,
            "the failed sweep is tried again"
        );
    }
}

pub fn summary(o: &SweepOutcome) -> SweepSummary {
    SweepSummary {
        kind: o.run.kind.clone(),
        checked: o.run.checked,
        verified: o.run.verified,
        discrepancies: o.run.discrepancies,
        imported: o.run.imported,
        restored: o.run.restored,
        unverified: o.run.unverified,
        balance_difference: o.snapshot.as_ref().map(|s| s.difference),
        error: o.run.error.clone(),
    }
}

fn report(
    kind: &str,
    result: &Result<SweepOutcome, sweep::SweepError>,
    heartbeat: &actix::Addr<HeartbeatActor>,
    journal: &Journal,
    client: &BybitClient,
) {
    match result {
        Ok(o) => {
            tracing::info!(
                kind,
                checked = o.run.checked,
                verified = o.run.verified,
                discrepancies = o.run.discrepancies,
                imported = o.run.imported,
                restored = o.run.restored,
                unverified = o.run.unverified,
                pending = o.pending,
                balance_expected = ?o.snapshot.as_ref().map(|s| s.expected),
                balance_actual = ?o.snapshot.as_ref().map(|s| s.actual),
                balance_status = ?o.snapshot.as_ref().map(|s| s.status.clone()),
                "sweep done"
            );
            match &o.alert {
                Some(a) => {
                    tracing::error!(
                        alert = a,
                        "trades close to the exchange's retention are unverified"
                    );
                    heartbeat.do_send(SetState(ServiceState::Degraded { reason: a.clone() }));
                }
                None => heartbeat.do_send(SetState(ServiceState::Running)),
            }
        }
        Err(e) => {
            tracing::warn!(kind, error = %e, "sweep failed; the next one tries again");
            let now = client.clock().now_ms();
            let _ = journal.record_run(&shardbot_journal::ReconciliationRun {
                kind: kind.into(),
                started_ms: now,
                finished_ms: now,
                error: Some(e.to_string()),
                ..Default::default()
            });
            heartbeat.do_send(SetState(ServiceState::Degraded {
                reason: format!("last sweep failed: {e}"),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_sweep_is_tried_again_with_a_growing_backoff_until_one_succeeds() {
        let mut f = Failed::default();
        f.after(false, false);
        assert!(f.due.is_none(), "nothing to try again after a good sweep");
        let mut waits = Vec::new();
        for _ in 0..8 {
            f.after(true, false);
            assert!(f.due.is_some());
            waits.push(f.backoff.unwrap().as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        f.after(false, false);
        assert!(f.due.is_none() && f.backoff.is_none());
    }

    #[tokio::test]
    async fn a_failed_full_pass_is_only_covered_by_a_full_one() {
        let mut f = Failed::default();
        f.after(true, true);
        f.after(true, false);
        assert!(f.full, "the retry stays a full pass");
        f.after(false, false);
        assert!(
            f.due.is_some(),
            "a partial sweep does not cover a failed full pass"
        );
        f.after(false, true);
        assert!(f.due.is_none());
    }
}
