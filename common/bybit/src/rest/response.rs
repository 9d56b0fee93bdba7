//! Turning an HTTP reply into a typed result or a typed error.

use serde::de::DeserializeOwned;

use serde::Deserialize;

use crate::{
    error::{ApiCode, BybitError},
    models::{
        Envelope,
        order::{BatchCreated, BatchItemCode, BatchReply},
    },
};

fn excerpt(body: &str) -> String {
    body.chars().take(200).collect()
}

fn decode_error(endpoint: &str, body: &str, source: serde_json::Error) -> BybitError {
    BybitError::Decode {
        endpoint: endpoint.to_owned(),
        excerpt: excerpt(body),
        source,
    }
}

/// The envelope of a 200 reply whose `retCode` is 0, else the error it carries.
fn successful<'a>(endpoint: &str, body: &'a str) -> Result<Envelope<'a>, BybitError> {
    let env: Envelope<'_> =
        serde_json::from_str(body).map_err(|e| decode_error(endpoint, body, e))?;
    if env.ret_code != 0 {
        return Err(BybitError::Api {
            endpoint: endpoint.to_owned(),
            ret_code: env.ret_code,
            code: ApiCode::from_ret_code(env.ret_code),
            message: env.ret_msg,
        });
    }
    Ok(env)
}

/// Parses a 200 reply: the envelope, then, if `retCode` is 0, `result` as `T`.
pub fn parse_envelope<T: DeserializeOwned>(endpoint: &str, body: &str) -> Result<T, BybitError> {
    let decode = |source| decode_error(endpoint, body, source);
    let env = successful(endpoint, body)?;
    let result = env.result.map(|r| r.get()).unwrap_or("{}");
    serde_json::from_str(result).map_err(decode)
}

/// Parses a batch endpoint's 200 reply: the envelope, then, if `retCode` is 0,
/// `result.list` and `retExtInfo.list` (one entry per order, in the request's order).
pub fn parse_batch_envelope(endpoint: &str, body: &str) -> Result<BatchReply, BybitError> {
    #[derive(Deserialize)]
    struct List<T> {
        #[serde(default = "Vec::new")]
        list: Vec<T>,
    }
    let decode = |source| decode_error(endpoint, body, source);
    let env = successful(endpoint, body)?;
    let created: List<BatchCreated> =
        serde_json::from_str(env.result.map(|r| r.get()).unwrap_or("{}")).map_err(decode)?;
    let codes: List<BatchItemCode> =
        serde_json::from_str(env.ret_ext_info.map(|r| r.get()).unwrap_or("{}")).map_err(decode)?;
    Ok(BatchReply {
        created: created.list,
        codes: codes.list,
    })
}

/// Parses a bare `result` object (some fixtures hold only that).
pub fn parse_result<T: DeserializeOwned>(endpoint: &str, body: &str) -> Result<T, BybitError> {
    serde_json::from_str(body).map_err(|source| decode_error(endpoint, body, source))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Shaped as the "Batch Place Order" page's response example (two lists, index for
    /// index; a refused order has empty ids and its own code); not a captured reply.
    const BATCH: &str = r#"{"retCode":0,"retMsg":"OK","result":{"list":[{"category":"linear","symbol":"BTCUSDT","orderId":"1666800494330512128","orderLinkId":"sb-a","createAt":"1713434102752"},{"category":"linear","symbol":"ETHUSDT","orderId":"","orderLinkId":"","createAt":""}]},"retExtInfo":{"list":[{"code":0,"msg":"OK"},{"code":110007,"msg":"Insufficient available balance"}]},"time":1713434102753}"#;

    #[test]
    fn a_batch_reply_keeps_each_orders_code() {
        let r = parse_batch_envelope("/v5/order/create-batch", BATCH).unwrap();
        assert_eq!(r.created.len(), 2);
        assert_eq!(r.created[0].order_id, "1666800494330512128");
        assert_eq!(r.created[0].order_link_id, "sb-a");
        assert_eq!(r.created[1].order_id, "");
        assert_eq!(
            r.codes,
            vec![
                BatchItemCode {
                    code: 0,
                    msg: "OK".into()
                },
                BatchItemCode {
                    code: 110007,
                    msg: "Insufficient available balance".into()
                }
            ]
        );
    }

    #[test]
    fn a_refused_batch_is_the_envelopes_error() {
        let body =
            r#"{"retCode":10006,"retMsg":"Too many visits!","result":{},"retExtInfo":{},"time":1}"#;
        let e = parse_batch_envelope("/v5/order/create-batch", body).unwrap_err();
        assert_eq!(e.api_code(), Some(ApiCode::TooManyVisits));
    }
}
