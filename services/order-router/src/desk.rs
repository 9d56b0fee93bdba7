//! The order desk: every order the router places goes out through it, over both of
//! Bybit's order budgets at once (`/v5/order/create`, 10 orders/s, and
//! `/v5/order/create-batch`, 10 orders/s counted per order: reference §4). Orders that
//! arrive while others are being sent wait in one queue, exits first then entries by
//! symbol ([`plan::burst_rank`]); the head goes out as a batch or alone as the budgets'
//! room allows ([`plan::routes`]), budget reserved from the client's limiter before each
//! call, so the limiter stays the one owner of the budgets and nothing waits inside a
//! call. Each order's own result goes back to the attempt that sent it: an order of a
//! batch can be refused while the others are placed, and a batch call whose outcome is
//! unknown makes every one of its orders unknown (each is then looked up by its
//! orderLinkId, as a single order would be). An entry still queued when it grows stale
//! (`router.max_entry_age_ms`) is not sent: the queue can be long at a large bar close.

use shardbot_bybit::{
    BybitError,
    models::order::OrderId,
    rest::{BybitClient, CreateOrder},
};
use shardbot_protocol::{TimestampMs, now_ms};
use tokio::sync::{mpsc, oneshot};

use crate::plan::{self, Route};

const CREATE: &str = "/v5/order/create";
const BATCH: &str = "/v5/order/create-batch";

/// One order waiting for the desk, and where its result goes.
#[derive(Debug)]
struct Pending {
    order: CreateOrder,
    /// Not sent after this (local clock): a queued entry that grew stale.
    not_after_ms: Option<TimestampMs>,
    reply: oneshot::Sender<DeskResult>,
}

/// What became of an order given to the desk.
#[derive(Debug)]
pub enum DeskResult {
    /// Sent at `sent_ms` (local clock, once its budget was reserved): the exchange's answer.
    Sent {
        result: Result<OrderId, BybitError>,
        sent_ms: TimestampMs,
    },
    /// Not sent: its deadline passed while it waited for the budgets.
    Expired,
}

/// The handle attempts send orders through (cheap to clone).
#[derive(Debug, Clone)]
pub struct Desk {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Desk {
    /// Starts the desk's loop on `runtime` (the order path's).
    pub fn start(client: BybitClient, runtime: &tokio::runtime::Handle) -> Desk {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(client, rx));
        Desk { tx }
    }

    /// Places `order` (never re-sent here): its ids, or its error as `place_order` gives it
    /// (an unsure outcome is [`BybitError::UnknownOutcome`]).
    pub async fn place(&self, order: CreateOrder) -> Result<OrderId, BybitError> {
        let link = order.order_link_id.clone();
        match self.place_before(order, None).await {
            DeskResult::Sent { result, .. } => result,
            DeskResult::Expired => Err(BybitError::Config(format!(
                "order {link}: expired in the desk without a deadline"
            ))),
        }
    }

    /// Places `order` as [`Desk::place`] does, unless it is still queued after
    /// `not_after_ms` (local clock); says when it was sent.
    pub async fn place_before(
        &self,
        order: CreateOrder,
        not_after_ms: Option<TimestampMs>,
    ) -> DeskResult {
        let link = order.order_link_id.clone();
        let (reply, answer) = oneshot::channel();
        let gone = || DeskResult::Sent {
            result: Err(BybitError::Config(format!(
                "order {link}: the order desk has stopped"
            ))),
            sent_ms: now_ms(),
        };
        if self
            .tx
            .send(Pending {
                order,
                not_after_ms,
                reply,
            })
            .is_err()
        {
            return gone();
        }
        answer.await.unwrap_or_else(|_| gone())
    }
}

async fn run(client: BybitClient, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut queue: Vec<Pending> = Vec::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(p) => queue.push(p),
                None => return,
            }
        }
        while let Ok(p) = rx.try_recv() {
            queue.push(p);
        }
        let now = now_ms();
        for p in queue.extract_if(.., |p| p.not_after_ms.is_some_and(|t| now > t)) {
            let _ = p.reply.send(DeskResult::Expired);
        }
        if queue.is_empty() {
            continue;
        }
        queue.sort_by(|a, b| plan::burst_rank(&a.order).cmp(&plan::burst_rank(&b.order)));
        match send_head(&client, &mut queue) {
            Ok(None) => {}
            Ok(Some(wait)) => {
                // Both budgets spent: wait for room, or for an order that goes first.
                tokio::select! {
                    p = rx.recv() => match p {
                        Some(p) => queue.push(p),
                        None if queue.is_empty() => return,
                        None => {}
                    },
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                // The IP is banned: every queued order fails now, as a call would.
                tracing::error!(error = %e, orders = queue.len(), "orders not sent");
                for p in queue.drain(..) {
                    let _ = p.reply.send(DeskResult::Sent {
                        result: Err(BybitError::BatchFailed {
                            endpoint: CREATE.into(),
                            message: e.to_string(),
                            unknown: false,
                        }),
                        sent_ms: now,
                    });
                }
            }
        }
    }
}

/// Sends the head of the queue the first way whose budget can be reserved now; `Some`:
/// how long until one could.
fn send_head(
    client: &BybitClient,
    queue: &mut Vec<Pending>,
) -> Result<Option<std::time::Duration>, BybitError> {
    let limiter = client.limiter();
    let mut wait = std::time::Duration::MAX;
    for route in plan::routes(
        queue.len(),
        limiter.headroom(CREATE),
        limiter.headroom(BATCH),
    ) {
        let (endpoint, n) = match route {
            Route::Single => (CREATE, 1),
            Route::Batch(n) => (BATCH, n),
        };
        match limiter.reserve(endpoint, u32::try_from(n).unwrap_or(u32::MAX))? {
            Ok(reservation) => {
                let sent: Vec<Pending> = queue.drain(..n).collect();
                let client = client.clone();
                match route {
                    Route::Single => tokio::spawn(single(client, sent, reservation)),
                    Route::Batch(_) => tokio::spawn(batch(client, sent, reservation)),
                };
                return Ok(None);
            }
            Err(w) => wait = wait.min(w),
        }
    }
    if wait == std::time::Duration::MAX {
        // No route had room by the headroom read: the nearer of the two budgets' waits.
        wait = limiter
            .wait_for(CREATE, 1)?
            .min(limiter.wait_for(BATCH, 1)?);
    }
    Ok(Some(wait))
}

async fn single(
    client: BybitClient,
    sent: Vec<Pending>,
    reservation: shardbot_bybit::ratelimit::Reservation,
) {
    if let Some(p) = sent.into_iter().next() {
        let sent_ms = now_ms();
        let result = client.place_order_reserved(&p.order, reservation).await;
        let _ = p.reply.send(DeskResult::Sent { result, sent_ms });
    }
}

async fn batch(
    client: BybitClient,
    sent: Vec<Pending>,
    reservation: shardbot_bybit::ratelimit::Reservation,
) {
    let orders: Vec<CreateOrder> = sent.iter().map(|p| p.order.clone()).collect();
    tracing::info!(orders = orders.len(), "sending a batch");
    let sent_ms = now_ms();
    match client.place_orders_reserved(&orders, reservation).await {
        Ok(results) => {
            for (p, result) in sent.into_iter().zip(results) {
                let _ = p.reply.send(DeskResult::Sent { result, sent_ms });
            }
        }
        Err(e) => {
            let unknown = e.outcome_unknown();
            for p in sent {
                let failed = BybitError::BatchFailed {
                    endpoint: BATCH.into(),
                    message: e.to_string(),
                    unknown,
                };
                let result = Err(if unknown {
                    BybitError::UnknownOutcome {
                        endpoint: BATCH.into(),
                        order_link_id: p.order.order_link_id.clone(),
                        cause: Box::new(failed),
                    }
                } else {
                    failed
                });
                let _ = p.reply.send(DeskResult::Sent { result, sent_ms });
            }
        }
    }
}
