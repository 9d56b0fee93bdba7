//! Bybit's retCodes (reference §6) as a typed enum, and the client's error type.

use std::time::Duration;

/// The retCodes the reference documents, with Bybit's meaning. Anything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiCode {
    ParamError,
    TimestampOutsideRecvWindow,
    InvalidApiKey,
    InvalidSignature,
    PermissionDenied,
    TooManyVisits,
    UnmatchedIp,
    ServerError,
    RouteNotFound,
    OrderNotFound,
    PriceOutOfRange,
    InsufficientBalance(i64),
    AvailableBalanceInsufficient,
    OrderCompletedOrCancelled(i64),
    TooManyStopOrders,
    LeverageBlockedByRiskLimit,
    QtyTruncatedToZero,
    TooManyActiveOrders,
    PositionModeNotModified,
    LeverageNotModified,
    DuplicateOrderLinkId,
    PositionMayExceedMaxLimit,
    NotionalBelowMinimum,
    PreMarketNotAllowedInDemo,
    NotModified,
    Other(i64),
}

impl ApiCode {
    pub fn from_ret_code(code: i64) -> ApiCode {
        match code {
            10001 => ApiCode::ParamError,
            10002 => ApiCode::TimestampOutsideRecvWindow,
            10003 => ApiCode::InvalidApiKey,
            10004 => ApiCode::InvalidSignature,
            10005 => ApiCode::PermissionDenied,
            10006 => ApiCode::TooManyVisits,
            10010 => ApiCode::UnmatchedIp,
            10016 => ApiCode::ServerError,
            10017 => ApiCode::RouteNotFound,
            110001 => ApiCode::OrderNotFound,
            110003 => ApiCode::PriceOutOfRange,
            110004 | 110012 | 110044 | 110045 => ApiCode::InsufficientBalance(code),
            110007 => ApiCode::AvailableBalanceInsufficient,
            110008 | 110010 => ApiCode::OrderCompletedOrCancelled(code),
            110009 => ApiCode::TooManyStopOrders,
            110013 => ApiCode::LeverageBlockedByRiskLimit,
            110017 => ApiCode::QtyTruncatedToZero,
            110020 => ApiCode::TooManyActiveOrders,
            110025 => ApiCode::PositionModeNotModified,
            110043 => ApiCode::LeverageNotModified,
            110072 => ApiCode::DuplicateOrderLinkId,
            110090 => ApiCode::PositionMayExceedMaxLimit,
            110094 => ApiCode::NotionalBelowMinimum,
            110100 => ApiCode::PreMarketNotAllowedInDemo,
            34040 => ApiCode::NotModified,
            other => ApiCode::Other(other),
        }
    }

    /// Bybit's documented meaning, with what to do where the user can act.
    pub fn meaning(self) -> &'static str {
        match self {
            ApiCode::ParamError => "request parameter error",
            ApiCode::TimestampOutsideRecvWindow => {
                "request timestamp outside the recv window: check the machine's clock"
            }
            ApiCode::InvalidApiKey => {
                "API key is invalid (or belongs to another environment: mainnet, testnet and \
                 demo keys are separate)"
            }
            ApiCode::InvalidSignature => "signature error: check the API secret",
            ApiCode::PermissionDenied => "permission denied: the key lacks this permission",
            ApiCode::TooManyVisits => "too many visits: per-endpoint rate limit exceeded",
            ApiCode::UnmatchedIp => "unmatched IP: the key is bound to other IP addresses",
            ApiCode::ServerError => "exchange server error",
            ApiCode::RouteNotFound => "route not found",
            ApiCode::OrderNotFound => "order does not exist",
            ApiCode::PriceOutOfRange => "order price exceeds the allowable range",
            ApiCode::InsufficientBalance(_) => "wallet, available balance or margin insufficient",
            ApiCode::AvailableBalanceInsufficient => "available balance is insufficient",
            ApiCode::OrderCompletedOrCancelled(_) => "order already completed or cancelled",
            ApiCode::TooManyStopOrders => "number of stop orders exceeds the maximum",
            ApiCode::LeverageBlockedByRiskLimit => "cannot set leverage due to risk limit level",
            ApiCode::QtyTruncatedToZero => "order quantity is truncated to zero by the qty step",
            ApiCode::TooManyActiveOrders => "more than 500 active orders",
            ApiCode::PositionModeNotModified => "position mode has not been modified",
            ApiCode::LeverageNotModified => "leverage has not been modified (already set)",
            ApiCode::DuplicateOrderLinkId => "orderLinkId is a duplicate",
            ApiCode::PositionMayExceedMaxLimit => {
                "position may exceed the max limit: lower leverage"
            }
            ApiCode::NotionalBelowMinimum => "order notional value below the instrument's minimum",
            ApiCode::PreMarketNotAllowedInDemo => "pre-market perpetuals cannot be traded in demo",
            ApiCode::NotModified => "not modified",
            ApiCode::Other(_) => "unlisted error code",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BybitError {
    #[error("{endpoint}: Bybit retCode {ret_code} ({}): {message}", code.meaning())]
    Api {
        endpoint: String,
        ret_code: i64,
        code: ApiCode,
        message: String,
    },
    #[error(
        "{endpoint}: HTTP 403 from Bybit: the IP rate limit was breached (or the IP is \
         blocked); all requests stop until {resume_in:?} from now"
    )]
    IpBanned {
        endpoint: String,
        resume_in: Duration,
    },
    #[error("{endpoint}: HTTP 429: Bybit's system-level protection; retry later")]
    TooManyRequests { endpoint: String },
    #[error("{endpoint}: HTTP {status} from Bybit: {body}")]
    Http {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("{endpoint}: no answer within {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("{endpoint}: {source}")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{endpoint}: cannot read Bybit's reply: {source} (reply starts `{excerpt}`)")]
    Decode {
        endpoint: String,
        excerpt: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{endpoint}: the outcome of order {order_link_id} is unknown ({cause}); resolve it \
         with the order query by orderLinkId before any retry"
    )]
    UnknownOutcome {
        endpoint: String,
        order_link_id: String,
        cause: Box<BybitError>,
    },
    #[error(
        "{endpoint}: the reply lists {listed} orders and {codes} codes for the {sent} sent; \
         the outcome of each is unknown"
    )]
    BatchMismatch {
        endpoint: String,
        sent: usize,
        listed: usize,
        codes: usize,
    },
    /// One order's share of a batch call that failed as a whole (`message` says how);
    /// `unknown`: the call's outcome is unknown, so the order may exist.
    #[error("{endpoint}: the batch call failed: {message}")]
    BatchFailed {
        endpoint: String,
        message: String,
        unknown: bool,
    },
    #[error("Bybit client: {0}")]
    Config(String),
}

impl BybitError {
    /// A request that failed before any answer came back: the connection could not be
    /// made, or was closed as the request went out (hyper's "connection closed before
    /// message completed" on a pooled connection the server had just closed as idle).
    pub fn is_unsent(&self) -> bool {
        matches!(self, BybitError::Transport { source, .. }
            if source.is_connect() || (source.is_request() && !source.is_timeout()))
    }

    /// The API code, if Bybit answered with one.
    pub fn api_code(&self) -> Option<ApiCode> {
        match self {
            BybitError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a write that failed this way may still have been carried out by Bybit: it
    /// was sent and no definite answer came back (timeout, broken connection, 5xx), or it
    /// was rate-limited (treated as unknown, conservatively).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            BybitError::Timeout { .. } | BybitError::Transport { .. } => true,
            BybitError::Http { status, .. } => *status >= 500,
            BybitError::Api { code, .. } => {
                matches!(code, ApiCode::TooManyVisits | ApiCode::ServerError)
            }
            BybitError::TooManyRequests { .. } | BybitError::BatchMismatch { .. } => true,
            BybitError::BatchFailed { unknown, .. } => *unknown,
            _ => false,
        }
    }

    /// Whether the same request may well succeed later with nothing changed on our side:
    /// the exchange unreachable or slow, a 5xx, a rate limit or an IP ban that lifts.
    /// Bad keys, refused permissions and bad parameters are not.
    pub fn transient(&self) -> bool {
        self.outcome_unknown() || matches!(self, BybitError::IpBanned { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(10001, ApiCode::ParamError)]
    #[case(10002, ApiCode::TimestampOutsideRecvWindow)]
    #[case(10003, ApiCode::InvalidApiKey)]
    #[case(10004, ApiCode::InvalidSignature)]
    #[case(10005, ApiCode::PermissionDenied)]
    #[case(10006, ApiCode::TooManyVisits)]
    #[case(10010, ApiCode::UnmatchedIp)]
    #[case(10016, ApiCode::ServerError)]
    #[case(10017, ApiCode::RouteNotFound)]
    #[case(110001, ApiCode::OrderNotFound)]
    #[case(110003, ApiCode::PriceOutOfRange)]
    #[case(110004, ApiCode::InsufficientBalance(110004))]
    #[case(110012, ApiCode::InsufficientBalance(110012))]
    #[case(110044, ApiCode::InsufficientBalance(110044))]
    #[case(110045, ApiCode::InsufficientBalance(110045))]
    #[case(110007, ApiCode::AvailableBalanceInsufficient)]
    #[case(110008, ApiCode::OrderCompletedOrCancelled(110008))]
    #[case(110010, ApiCode::OrderCompletedOrCancelled(110010))]
    #[case(110009, ApiCode::TooManyStopOrders)]
    #[case(110013, ApiCode::LeverageBlockedByRiskLimit)]
    #[case(110017, ApiCode::QtyTruncatedToZero)]
    #[case(110020, ApiCode::TooManyActiveOrders)]
    #[case(110025, ApiCode::PositionModeNotModified)]
    #[case(110043, ApiCode::LeverageNotModified)]
    #[case(110072, ApiCode::DuplicateOrderLinkId)]
    #[case(110090, ApiCode::PositionMayExceedMaxLimit)]
    #[case(110094, ApiCode::NotionalBelowMinimum)]
    #[case(110100, ApiCode::PreMarketNotAllowedInDemo)]
    #[case(34040, ApiCode::NotModified)]
    #[case(99999, ApiCode::Other(99999))]
    fn every_documented_code_is_mapped(#[case] code: i64, #[case] expected: ApiCode) {
        assert_eq!(ApiCode::from_ret_code(code), expected);
        assert!(!expected.meaning().is_empty());
    }
}
