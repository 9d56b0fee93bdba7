//! REST: the raw client named after endpoints, the domain client over it, the request
//! types, and response parsing.

mod client;
mod raw;
mod requests;
mod response;

pub use client::{BybitClient, OrderResolution};
pub use raw::{RawClient, RestConfig, ServerClock};
pub use requests::{
    AmendOrder, CancelAll, CancelOrder, CreateBatch, CreateOrder, DemoApplyMoney, DemoCoin,
    MAX_BATCH_ORDERS, Query, SetLeverage, SwitchMode, TradingStop,
};
pub use response::{parse_batch_envelope, parse_envelope, parse_result};
