#![recursion_limit = "256"]
//! bybit-sim: a local exchange that speaks Bybit's v5 protocol (reference §8), so the whole
//! stack runs with no keys and no network, with the same client code that talks to Bybit.
//!
//! Served: `/v5/market/{time,instruments-info,kline,tickers}`; signed and rate-limited like
//! Bybit: `/v5/order/{create,amend,cancel,cancel-all,realtime,history}`,
//! `/v5/execution/list`, `/v5/position/{list,set-leverage,switch-mode,trading-stop,
//! closed-pnl}`, `/v5/account/{wallet-balance,info,fee-rate,demo-apply-money}`.

pub mod api;
pub mod clock;
pub mod engine;
pub mod faults;
pub mod limits;
pub mod market;
pub mod path;
pub mod settings;
pub mod state;
pub mod trade;
pub mod ws;

use std::{net::TcpListener, sync::Arc};

use actix_web::{App, HttpServer, web};

pub use settings::SimSettings;
pub use state::Exchange;

/// The HTTP server on an already bound listener (so tests and callers can bind port 0).
pub fn server(
    exchange: Arc<Exchange>,
    listener: TcpListener,
    workers: usize,
) -> std::io::Result<actix_web::dev::Server> {
    // The engine moves on its own: stops, resting orders and funding happen on time and
    // are pushed even when no request comes in.
    let ticker = exchange.clone();
    actix_web::rt::spawn(async move {
        let mut every = tokio::time::interval(ws::PUBLIC_TICK);
        loop {
            every.tick().await;
            ticker.advance_all();
        }
    });
    let data = web::Data::new(exchange);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/v5/public/linear", web::get().to(ws::public))
            .route("/v5/private", web::get().to(ws::private))
            .route("/admin/faults", web::get().to(api::get_faults))
            .route("/admin/faults", web::post().to(api::set_faults))
            .route("/admin/faults/served", web::get().to(api::get_served))
            .route("/admin/ws/drop", web::post().to(api::drop_ws))
            .route("/admin/instruments/status", web::post().to(api::set_status))
            .default_service(web::to(api::v5))
    })
    .workers(workers.max(1))
    .disable_signals()
    .listen(listener)?
    .run())
}
