//! WebSocket: the public stream (klines, tickers, trades) and the private stream (order,
//! execution, position, wallet), each kept alive and resubscribed after reconnects.

mod conn;
mod private;
mod public;

pub use conn::{WsConfig, WsHandle, ws_reconnects};
pub use private::{PRIVATE_TOPICS, PrivateEvent, spawn_private};
pub use public::{
    MAX_ARGS_CHARS, PublicEvent, kline_topic, plan_connections, spawn_public, ticker_topic,
};
