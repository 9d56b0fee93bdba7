//! The public stream: klines and tickers (and trades) for any number of symbols.

use std::collections::HashMap;

use shardbot_protocol::Interval;
use tokio::sync::{mpsc, watch};

use super::conn::{self, Flow, Handler, WsConfig, WsHandle};
use crate::models::ws::{OpRequest, TickerFields, WsFrame, WsKline, WsTrade};

/// Bybit's limit on the total length of the `args` of one public connection.
pub const MAX_ARGS_CHARS: usize = 21_000;
/// Topics per subscribe request (Bybit sets no count limit for linear; batches keep each
/// frame small, as bybit-api does with 500).
const TOPICS_PER_REQUEST: usize = 200;

pub fn kline_topic(interval: Interval, symbol: &str) -> String {
    format!("kline.{}.{symbol}", interval.as_str())
}

pub fn ticker_topic(symbol: &str) -> String {
    format!("tickers.{symbol}")
}

#[derive(Debug, Clone, PartialEq)]
pub enum PublicEvent {
    Connected {
        conn: usize,
    },
    /// The connection dropped; klines closed meanwhile must be fetched over REST.
    Disconnected {
        conn: usize,
        reason: String,
        /// When the next connection is tried (the backoff grows while connections keep
        /// failing, and resets once one lasts).
        retry_in: std::time::Duration,
    },
    SubscribeFailed {
        conn: usize,
        message: String,
    },
    /// A kline update; `kline.confirm` is true when the candle closed.
    Kline {
        symbol: String,
        kline: WsKline,
    },
    /// A full ticker: the last snapshot with every delta since merged in.
    Ticker {
        ts: i64,
        ticker: TickerFields,
    },
    Trade(WsTrade),
}

/// Splits topics over as few connections as the 21,000-character args limit allows.
pub fn plan_connections(topics: &[String], max_chars: usize) -> Vec<Vec<String>> {
    let mut plan: Vec<Vec<String>> = Vec::new();
    let mut chars = 0;
    for t in topics {
        if plan.is_empty() || chars + t.len() > max_chars {
            plan.push(Vec::new());
            chars = 0;
        }
        chars += t.len();
        if let Some(last) = plan.last_mut() {
            last.push(t.clone());
        }
    }
    plan
}

struct PublicHandler {
    topics: Vec<String>,
    conn: usize,
    tickers: HashMap<String, TickerFields>,
}

impl Handler for PublicHandler {
    type Event = PublicEvent;

    fn on_open(&mut self, out: &mut Vec<String>) {
        // A reconnect starts from fresh snapshots.
        self.tickers.clear();
        for (i, chunk) in self.topics.chunks(TOPICS_PER_REQUEST).enumerate() {
            let req = OpRequest {
                req_id: Some(format!("sub-{}-{i}", self.conn)),
                op: "subscribe".into(),
                args: chunk
                    .iter()
                    .map(|t| serde_json::Value::String(t.clone()))
                    .collect(),
            };
            if let Ok(text) = serde_json::to_string(&req) {
                out.push(text);
            }
        }
    }

    fn on_text(
        &mut self,
        text: &str,
        _out: &mut Vec<String>,
        events: &mut Vec<PublicEvent>,
    ) -> Flow {
        match WsFrame::parse(text) {
            Ok(WsFrame::Kline(m)) => {
                let symbol = m.topic.rsplit('.').next().unwrap_or_default().to_owned();
                events.extend(m.data.into_iter().map(|kline| PublicEvent::Kline {
                    symbol: symbol.clone(),
                    kline,
                }));
            }
            Ok(WsFrame::Ticker(m)) => {
                let symbol = m.data.symbol.clone();
                let ticker = if m.kind == "snapshot" {
                    self.tickers.insert(symbol, m.data.clone());
                    m.data
                } else if let Some(full) = self.tickers.get_mut(&symbol) {
                    full.merge(&m.data);
                    full.clone()
                } else {
                    // A delta before any snapshot cannot be completed: wait for the next one.
                    tracing::debug!(symbol, "ticker delta before its snapshot; skipped");
                    return Flow::Continue;
                };
                events.push(PublicEvent::Ticker { ts: m.ts, ticker });
            }
            Ok(WsFrame::Trade(m)) => events.extend(m.data.into_iter().map(PublicEvent::Trade)),
            Ok(WsFrame::Op(op)) if op.op == "subscribe" && op.failed() => {
                events.push(PublicEvent::SubscribeFailed {
                    conn: self.conn,
                    message: op.ret_msg,
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, frame = %text.chars().take(200).collect::<String>(), "unreadable public frame")
            }
        }
        Flow::Continue
    }

    fn connected(&self, conn: usize) -> PublicEvent {
        PublicEvent::Connected { conn }
    }

    fn disconnected(
        &self,
        conn: usize,
        reason: String,
        retry_in: std::time::Duration,
    ) -> PublicEvent {
        PublicEvent::Disconnected {
            conn,
            reason,
            retry_in,
        }
    }
}

/// Subscribes `topics` over as few connections as needed, each kept alive and resubscribed
/// after every reconnect. Events of all connections arrive on one channel.
pub fn spawn_public(
    url: &str,
    topics: Vec<String>,
    cfg: WsConfig,
) -> (WsHandle, mpsc::Receiver<PublicEvent>) {
    let (tx, rx) = mpsc::channel(65_536);
    let (stop, stop_rx) = watch::channel(false);
    let tasks = plan_connections(&topics, MAX_ARGS_CHARS)
        .into_iter()
        .enumerate()
        .map(|(conn, topics)| {
            let handler = PublicHandler {
                topics,
                conn,
                tickers: HashMap::new(),
            };
            tokio::spawn(conn::run(
                conn,
                url.to_owned(),
                cfg.clone(),
                handler,
                tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    (WsHandle::new(stop, tasks), rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_hundred_symbols_fit_in_two_connections_within_the_limit() {
        let topics: Vec<String> = (0..800)
            .flat_map(|i| {
                let s = format!("SYM{i}USDT");
                [kline_topic(Interval::M5, &s), ticker_topic(&s)]
            })
            .collect();
        let plan = plan_connections(&topics, MAX_ARGS_CHARS);
        assert_eq!(plan.len(), 2);
        for c in &plan {
            assert!(c.iter().map(String::len).sum::<usize>() <= MAX_ARGS_CHARS);
        }
        assert_eq!(plan.concat(), topics, "every topic once, in order");
    }
}
