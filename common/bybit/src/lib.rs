//! The one place shardbot talks to Bybit (v5 API).
//!
//! - [`env`]: the environments (`sim`, `demo`, `live`, `testnet`) and their URLs.
//! - [`auth`]: credentials whose secret never prints, HMAC-SHA256 signing.
//! - [`models`]: typed responses and WebSocket messages, lossless decimals.
//! - [`error`]: every documented retCode as a typed error.
//! - [`ratelimit`]: the process's rate-limit budgets.
//! - [`rest`]: the raw client named after endpoints and the domain client over it.
//! - [`ws`]: the public and private streams.

pub mod accounts;
pub mod auth;
pub mod convert;
mod de;
pub mod env;
pub mod error;
pub mod models;
pub mod ratelimit;
pub mod rest;
pub mod settings;
pub mod ws;

pub use accounts::{Account, AccountName, AccountsError, AccountsFile};
pub use auth::{Credentials, Secret, masked_key};
pub use env::{Environment, Urls, resolve_urls};
pub use error::{ApiCode, BybitError};
pub use settings::ExchangeSettings;
