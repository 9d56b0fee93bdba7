//! Turning an HTTP reply into a typed result or a typed error.

use serde::de::DeserializeOwned;

use crate::{
    error::{ApiCode, BybitError},
    models::Envelope,
};

fn excerpt(body: &str) -> String {
    body.chars().take(200).collect()
}

/// Parses a 200 reply: the envelope, then, if `retCode` is 0, `result` as `T`.
pub fn parse_envelope<T: DeserializeOwned>(endpoint: &str, body: &str) -> Result<T, BybitError> {
    let decode = |source| BybitError::Decode {
        endpoint: endpoint.to_owned(),
        excerpt: excerpt(body),
        source,
    };
    let env: Envelope<'_> = serde_json::from_str(body).map_err(decode)?;
    if env.ret_code != 0 {
        return Err(BybitError::Api {
            endpoint: endpoint.to_owned(),
            ret_code: env.ret_code,
            code: ApiCode::from_ret_code(env.ret_code),
            message: env.ret_msg,
        });
    }
    let result = env.result.map(|r| r.get()).unwrap_or("{}");
    serde_json::from_str(result).map_err(decode)
}

/// Parses a bare `result` object (some fixtures hold only that).
pub fn parse_result<T: DeserializeOwned>(endpoint: &str, body: &str) -> Result<T, BybitError> {
    serde_json::from_str(body).map_err(|source| BybitError::Decode {
        endpoint: endpoint.to_owned(),
        excerpt: excerpt(body),
        source,
    })
}
