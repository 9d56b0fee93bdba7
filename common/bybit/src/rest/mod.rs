//! REST: response parsing (the raw client and the domain client build on it).

mod response;

pub use response::{parse_envelope, parse_result};
