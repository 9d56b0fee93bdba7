//! The private stream: order, execution, position and wallet pushes of one account.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::conn::{self, Flow, Handler, WsConfig, WsHandle};
use crate::{
    auth::Credentials,
    models::{
        account::WalletAccount,
        order::{Execution, Order},
        position::PositionInfo,
        ws::{OpRequest, WsFrame},
    },
    rest::ServerClock,
};

/// The all-in-one private topics (categorised and all-in-one may not be mixed).
pub const PRIVATE_TOPICS: [&str; 4] = ["order", "execution", "position", "wallet"];
/// How far ahead of Bybit's clock the auth `expires` is set.
const AUTH_EXPIRES_MS: i64 = 5_000;

#[derive(Debug, Clone)]
pub enum PrivateEvent {
    Connected {
        conn: usize,
    },
    /// Auth accepted; the topics are being requested.
    Authenticated,
    /// The subscription was acknowledged: pushes flow from here on. Anything that changed
    /// before this moment must be read over REST.
    Subscribed,
    /// Bybit refused the auth (wrong key or secret, key of another environment, clock).
    /// The stream keeps retrying with backoff; the caller decides whether to give up.
    AuthFailed {
        message: String,
    },
    SubscribeFailed {
        message: String,
    },
    /// The connection dropped: re-read orders, executions and positions over REST.
    Disconnected {
        conn: usize,
        reason: String,
        /// When the next connection is tried (the backoff grows while connections keep
        /// failing, and resets once one lasts).
        retry_in: std::time::Duration,
    },
    Order(Box<Order>),
    Execution(Box<Execution>),
    Position(Box<PositionInfo>),
    Wallet(Box<WalletAccount>),
}

struct PrivateHandler {
    credentials: Credentials,
    clock: Arc<ServerClock>,
}

impl Handler for PrivateHandler {
    type Event = PrivateEvent;

    fn on_open(&mut self, out: &mut Vec<String>) {
        let expires = self.clock.after_ms(AUTH_EXPIRES_MS);
        let req = OpRequest {
            req_id: Some("auth".into()),
            op: "auth".into(),
            args: vec![
                self.credentials.api_key.clone().into(),
                expires.into(),
                self.credentials.sign_ws(expires).into(),
            ],
        };
        if let Ok(text) = serde_json::to_string(&req) {
            out.push(text);
        }
    }

    fn on_text(
        &mut self,
        text: &str,
        out: &mut Vec<String>,
        events: &mut Vec<PrivateEvent>,
    ) -> Flow {
        match WsFrame::parse(text) {
            Ok(WsFrame::Op(op)) if op.op == "auth" => {
                if op.success == Some(true) {
                    // Subscribing before the auth reply yields "Request not authorized".
                    let req = OpRequest {
                        req_id: Some("private".into()),
                        op: "subscribe".into(),
                        args: PRIVATE_TOPICS.iter().map(|t| (*t).into()).collect(),
                    };
                    if let Ok(text) = serde_json::to_string(&req) {
                        out.push(text);
                    }
                    events.push(PrivateEvent::Authenticated);
                } else {
                    events.push(PrivateEvent::AuthFailed {
                        message: op.ret_msg.clone(),
                    });
                    return Flow::Reconnect(format!("auth refused: {}", op.ret_msg));
                }
            }
            Ok(WsFrame::Op(op)) if op.op == "subscribe" => {
                if op.failed() {
                    // Without its subscriptions the private stream hears no order or fill:
                    // an error, retried on a new connection (with backoff).
                    tracing::error!(message = op.ret_msg, "private subscription refused");
                    let why = format!("subscription refused: {}", op.ret_msg);
                    events.push(PrivateEvent::SubscribeFailed {
                        message: op.ret_msg,
                    });
                    return Flow::Reconnect(why);
                }
                events.push(PrivateEvent::Subscribed);
            }
            Ok(WsFrame::Order(m)) => {
                events.extend(m.data.into_iter().map(|o| PrivateEvent::Order(Box::new(o))))
            }
            Ok(WsFrame::Execution(m)) => {
                events.extend(
                    m.data
                        .into_iter()
                        .map(|e| PrivateEvent::Execution(Box::new(e))),
                );
            }
            Ok(WsFrame::Position(m)) => {
                events.extend(
                    m.data
                        .into_iter()
                        .map(|p| PrivateEvent::Position(Box::new(p))),
                );
            }
            Ok(WsFrame::Wallet(m)) => events.extend(
                m.data
                    .into_iter()
                    .map(|w| PrivateEvent::Wallet(Box::new(w))),
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable private frame"),
        }
        Flow::Continue
    }

    fn connected(&self, conn: usize) -> PrivateEvent {
        PrivateEvent::Connected { conn }
    }

    fn disconnected(
        &self,
        conn: usize,
        reason: String,
        retry_in: std::time::Duration,
    ) -> PrivateEvent {
        PrivateEvent::Disconnected {
            conn,
            reason,
            retry_in,
        }
    }
}

/// Connects the private stream: auth, subscribe order / execution / position / wallet, and
/// after every reconnect auth and subscribe again. `clock` is the REST client's, so the auth
/// `expires` is in Bybit's time.
pub fn spawn_private(
    url: &str,
    credentials: Credentials,
    clock: Arc<ServerClock>,
    cfg: WsConfig,
) -> (WsHandle, mpsc::Receiver<PrivateEvent>) {
    let (tx, rx) = mpsc::channel(16_384);
    let (stop, stop_rx) = watch::channel(false);
    let handler = PrivateHandler { credentials, clock };
    let task = tokio::spawn(conn::run(0, url.to_owned(), cfg, handler, tx, stop_rx));
    (WsHandle::new(stop, vec![task]), rx)
}
