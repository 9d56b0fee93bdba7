//! Shared by bybit-sim's integration tests: a sim on a free port and the project's client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // not every test uses every helper

use std::{net::TcpListener, sync::Arc, time::Duration};

use bybit_sim::{
    Exchange, SimSettings,
    settings::{Profile, SimAccount},
};
use rust_decimal_macros::dec;
use shardbot_bybit::{
    Credentials,
    ratelimit::RateLimiter,
    rest::{BybitClient, RawClient, RestConfig},
};

pub const KEY: &str = "sim-key";
pub const SECRET: &str = "sim-secret";

pub fn settings() -> SimSettings {
    SimSettings {
        listen: "127.0.0.1:0".into(),
        seed: 7,
        symbols: 650,
        universe_file: String::new(),
        replay_dir: String::new(),
        replay_warmup_bars: 300,
        clock_speed: 1.0,
        start_time_ms: 0,
        profile: Profile::Demo,
        ip_limit_per_5s: 600,
        ip_ban_secs: 600,
        spread_ticks: 1,
        uid_limit_scale: 1.0,
        accounts: vec![
            SimAccount {
                name: "t".into(),
                api_key: KEY.into(),
                api_secret: SECRET.into(),
                usdt: dec!(100000),
            },
            // A second UID, for bursts that must not share the first one's window.
            SimAccount {
                name: "burst".into(),
                api_key: "burst-key".into(),
                api_secret: "burst-secret".into(),
                usdt: dec!(1),
            },
        ],
    }
}

/// Starts bybit-sim on a free port in its own thread and runtime; returns its base URL.
pub fn start(settings: SimSettings) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let exchange = Arc::new(Exchange::new(&settings).unwrap());
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            bybit_sim::server(exchange, listener, 1)
                .unwrap()
                .await
                .unwrap();
        })
    });
    url
}

pub fn client(url: &str, creds: Option<Credentials>) -> BybitClient {
    let raw = RawClient::new(
        RestConfig {
            base_url: url.to_owned(),
            recv_window_ms: 5000,
            timeout: Duration::from_secs(10),
        },
        creds,
        Arc::new(RateLimiter::new(599)),
    )
    .unwrap();
    BybitClient::new(raw)
}

pub fn creds() -> Option<Credentials> {
    Some(Credentials::new(KEY, SECRET))
}
