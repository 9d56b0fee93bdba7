//! The order router (see DESIGN.md §2): the only process that places orders. It takes
//! intents over REQ/REP, has the risk manager approve and size each one, rounds the
//! quantity to the instrument's grid (refusing below min qty / min notional), sets each
//! symbol's leverage once, and places a market order with exchange-side SL/TP (exits
//! reduce-only) whose orderLinkId derives from the intent id, so no intent is ever placed
//! twice. It owns the private stream and publishes order and fill events. At start it
//! re-reads recent orders and executions so repeats sent across a restart are recognised.

mod approvals;
mod closes;
mod desk;
mod flatten;
mod plan;
mod router;

use std::collections::HashMap;

use actix::Actor;
use serde::Deserialize;
use shardbot_bus::{Publisher, Replier, Requester};
use shardbot_bybit::{
    Environment, ExchangeSettings,
    ws::{PrivateEvent, spawn_private},
};
use shardbot_protocol::{
    ErrorReply, Instrument, IntentId, RouterReply, RouterRequest, ServiceState, Symbol,
};
use shardbot_service::{ServiceContext, SetState, StartError};

pub use flatten::{EntryGate, close_orders, split_qty};
pub use router::{Flatten, Pacing, Parameters, Private, Router, Submit};

/// `[router]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// The router's share of Bybit's IP limit (requests / 5 s).
    pub ip_requests_per_5s: u32,
    /// How far back executions are re-read at start (Bybit allows up to 7 days).
    pub reread_hours: u32,
    /// An entry decided longer ago than this (ms) is refused as stale; exits never are.
    pub max_entry_age_ms: u64,
    /// Fault injection, `sim` only (refused in demo and live): an order attempt for this
    /// symbol panics after its approval, to test that a panic ends the router (crash-only)
    /// and that the restarted one goes on placing. "" = never. A plain setting rather than a
    /// failpoint crate: it needs to be refused outside the sim like any bad setting, and it
    /// is one comparison.
    #[serde(default)]
    pub inject_panic_on_symbol: String,
    /// The longest (ms) a worker shard's entries wait for the rest of their bar close when
    /// the limits' room may not hold it all (see `closes.rs`): the bound for a shard that
    /// went silent mid-close.
    pub close_wait_ms: u64,
}

/// The longest one intent may take the router: risk approval, leverage (retried), the
/// order (10 s) and its lookups when the outcome is unknown; beyond it it counts as stuck.
const REPLY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
/// Requests served at once: a bar close's burst of intents is judged and placed side by
/// side (the exchange's budgets, owned by the client's limiter, pace the orders), and an
/// order waiting on a slow exchange holds only its own request. With 64, the 150-intent
/// burst of `bench burst` kept 86 intents waiting at the socket for up to 6 s, behind
/// orders queued for the budgets. 128: the orders of a close go out at Bybit's 20 a second,
/// so intents beyond 128 wait only until the first orders are acknowledged (tens of ms).
/// 256: a bar close's entries held for the rest of their close (`closes.rs`: at most about
/// as many as the limits' room) keep their requests open, and the rest of the close must
/// still get in. Each is a slot of `Replier::serve_async` (an NNG context and aio, no
/// thread: the thread a request each cost ~8 kB and a wake-up per request and step).
const INTENTS_AT_ONCE: usize = 256;
/// The most entries held for their closes at once: beyond, the oldest close's are judged
/// as they stand, so the close's other entries and its workers' reports still find a
/// request slot.
const HELD_AT_MOST: usize = INTENTS_AT_ONCE - 32;

pub fn start(ctx: &ServiceContext) -> Result<(), StartError> {
    let rs: RouterSettings = ctx.settings.section("router")?;
    if rs.max_entry_age_ms == 0 {
        return Err("router.max_entry_age_ms must be greater than 0".into());
    }
    let max_entry_age_ms = rs.max_entry_age_ms;
    if rs.close_wait_ms >= max_entry_age_ms {
        return Err(format!(
            "router.close_wait_ms = {} must be below router.max_entry_age_ms = {max_entry_age_ms}: \
             entries held that long would be refused as stale",
            rs.close_wait_ms
        )
        .into());
    }
    let mut exchange: ExchangeSettings = ctx.settings.section("exchange")?;
    let inject_panic_on =
        match rs.inject_panic_on_symbol.trim() {
            "" => None,
            s if exchange.environment == Environment::Sim => Some(Symbol::new(s).map_err(|e| {
                format!("router.inject_panic_on_symbol = {s:?} is not a symbol: {e}")
            })?),
            _ => {
                return Err(
                    "router.inject_panic_on_symbol is a fault injection for tests: it is refused \
                 outside exchange.environment = \"sim\""
                        .into(),
                );
            }
        };
    if let Some(s) = &inject_panic_on {
        tracing::warn!(symbol = %s, "fault injection: an order attempt for this symbol panics");
    }
    // Real money only when the configuration names the live account to trade.
    exchange.check_live_confirmed()?;
    exchange.ip_requests_per_5s = rs.ip_requests_per_5s;
    let sim_account = ctx
        .settings
        .sim_account(&exchange.account)
        .map(|(_, k, s)| (k, s));
    let credentials = exchange.credentials(sim_account)?;
    let client = exchange
        .client(Some(credentials.clone()))
        .map_err(|e| format!("router.ip_requests_per_5s / [exchange]: {e}"))?;
    let limiter = client.limiter().clone();
    ctx.metrics.gauge("ratelimit_ip_headroom", move || {
        i64::from(limiter.ip_headroom())
    });
    ctx.metrics.gauge("ws_reconnects_total", || {
        i64::try_from(shardbot_bybit::ws::ws_reconnects()).unwrap_or(i64::MAX)
    });
    let urls = exchange.urls()?;
    let ep = &ctx.common.endpoints;
    let publisher = Publisher::bind(&ep.order_router_pub, &ctx.common.bus)?;
    let replier = Replier::bind(&ep.order_router_rep, &ctx.common.bus)?;
    let risk = Requester::dial(&ep.risk_manager_rep, &ctx.common.bus)?;
    let js: shardbot_journal::JournalSettings = ctx.settings.section("journal")?;
    let journal = shardbot_journal::Journal::open(&js.file)?;
    let shutdown = ctx.shutdown.clone();
    let heartbeat = ctx.heartbeat.clone();
    let alerts = ctx.alerts.clone();
    let ws_cfg = exchange.ws_config();
    let reread_ms = i64::from(rs.reread_hours.clamp(1, 168)) * 3_600_000;
    // Start-up reads happen before the replier serves: an intent is never judged on a
    // half-read state.
    actix::spawn(async move {
        let init = || async {
            client.sync_time().await?;
            let instruments: HashMap<Symbol, Instrument> = client.instrument_filters().await?;
            let now = client.clock().now_ms();
            let mut placed = HashMap::new();
            for e in client.executions(None, now - reread_ms, now).await? {
                if e.order_link_id.starts_with(IntentId::LINK_PREFIX) {
                    placed.insert(e.order_link_id.clone(), e.order_id.clone());
                }
            }
            for o in client.open_orders().await? {
                if o.order_link_id.starts_with(IntentId::LINK_PREFIX) {
                    placed.insert(o.order_link_id.clone(), o.order_id.clone());
                }
            }
            Ok::<_, shardbot_bybit::BybitError>((instruments, placed))
        };
        // An exchange that is not up yet (bybit-sim starting beside us) or briefly
        // unreachable is waited for; bad keys or permissions stop the router at once.
        let mut wait = std::time::Duration::from_millis(500);
        let (instruments, placed) = loop {
            match init().await {
                Ok(v) => break v,
                Err(e) if e.transient() => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot read the account from the exchange yet; trying again");
                    heartbeat.do_send(SetState(ServiceState::Degraded {
                        reason: format!("exchange unreachable: {e}"),
                    }));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(10));
                }
                Err(e) => {
                    shutdown.fatal(format!("cannot read the account from the exchange: {e}"));
                    return;
                }
            }
        };
        heartbeat.do_send(SetState(ServiceState::Running));
        tracing::info!(
            instruments = instruments.len(),
            known_orders = placed.len(),
            "account read; connecting the private stream"
        );
        let clock = client.clock().clone();
        let router = Router::new(
            client,
            risk,
            publisher,
            instruments,
            placed,
            journal,
            Pacing {
                max_entry_age_ms,
                close_wait: std::time::Duration::from_millis(rs.close_wait_ms),
                held_at_most: HELD_AT_MOST,
            },
        );
        let router = match router {
            Ok(r) => r,
            Err(e) => {
                shutdown.fatal(format!("cannot start the order path: {e}"));
                return;
            }
        };
        let approvals = router.approvals();
        let addr = router
            .inject_panic_on(inject_panic_on)
            .with_alerts(alerts)
            .start();
        let (ws, mut rx) = spawn_private(&urls.private_ws, credentials, clock, ws_cfg);
        let events = addr.clone();
        // Intents are served only once the private stream is subscribed, so every order
        // the router places is seen by it.
        let (subscribed, first_subscribed) = tokio::sync::oneshot::channel::<()>();
        actix::spawn(async move {
            let _ws = ws;
            let mut subscribed = Some(subscribed);
            while let Some(ev) = rx.recv().await {
                match ev {
                    PrivateEvent::Order(o) => events.do_send(Private::Order(o)),
                    PrivateEvent::Execution(e) => events.do_send(Private::Execution(e)),
                    PrivateEvent::Subscribed => {
                        events.do_send(Private::Subscribed);
                        if let Some(tx) = subscribed.take() {
                            let _ = tx.send(());
                        }
                    }
                    PrivateEvent::AuthFailed { message } => {
                        tracing::error!(message, "the private stream refused the keys")
                    }
                    PrivateEvent::Disconnected { reason, .. } => {
                        tracing::warn!(reason, "private stream down; reconnecting")
                    }
                    _ => {}
                }
            }
        });
        if first_subscribed.await.is_err() {
            shutdown.fatal("the private stream ended before it subscribed");
            return;
        }
        tracing::info!("router ready");
        let shutdown2 = shutdown.clone();
        let spawned = std::thread::Builder::new()
            .name("router-rep".into())
            .spawn(move || {
                let served = replier.serve_async(
                    INTENTS_AT_ONCE,
                    |request: RouterRequest| {
                        let (approvals, addr, shutdown) =
                            (approvals.clone(), addr.clone(), shutdown2.clone());
                        async move {
                            // Taken in by the approval loop itself, off the actor.
                            let request = match request {
                                RouterRequest::CloseProgress(p) => {
                                    return match approvals.progress(p) {
                                        Ok(()) => RouterReply::Recorded { new: true },
                                        Err(message) => RouterReply::Error(ErrorReply { message }),
                                    };
                                }
                                other => other,
                            };
                            let asked = shutdown
                                .ask_actor_async("router", REPLY_DEADLINE, |reply| {
                                    match request {
                                        // do_send: the mailbox's capacity is for senders that
                                        // can wait.
                                        RouterRequest::Submit(intent) => {
                                            addr.do_send(Submit { intent, reply })
                                        }
                                        RouterRequest::Flatten {
                                            flatten_id,
                                            deadline_ms,
                                            symbol,
                                        } => addr.do_send(Flatten {
                                            flatten_id,
                                            deadline_ms,
                                            symbol,
                                            reply,
                                        }),
                                        RouterRequest::Parameters { json } => {
                                            addr.do_send(Parameters { json, reply })
                                        }
                                        RouterRequest::CloseProgress(_) => {}
                                    }
                                    addr.connected()
                                })
                                .await;
                            asked.unwrap_or_else(|e| {
                                RouterReply::Error(ErrorReply {
                                    message: format!("the router cannot answer: {e}"),
                                })
                            })
                        }
                    },
                    |message| RouterReply::Error(ErrorReply { message }),
                );
                if let Err(e) = served {
                    shutdown2.fatal(format!("router replier failed: {e}"));
                }
            });
        if let Err(e) = spawned {
            shutdown.fatal(format!("cannot start the replier thread: {e}"));
        }
    });
    Ok(())
}
