//! Alerts to a webhook (`[alerts] webhook_url`): what a trader must hear about at once,
//! with no dashboard open and no one reading logs (today: how a flatten ended, loudly when
//! it did not end flat). Each alert is one JSON POST:
//! `{"text": "...", "event": "...", "service": "...", "account": "...", "details": {...}}`;
//! `text` is the field Slack, Mattermost and most chat webhooks display, the rest is for
//! machines. Delivery is tried [`ATTEMPTS`] times and never holds up the caller; a failure
//! is logged. The URL usually carries a token, so it is a [`WebhookUrl`], which prints its
//! scheme and host only.

use std::{fmt, time::Duration};

use serde::Deserialize;

/// Tries per alert (a chat service's brief outage is ridden out, a dead one is not waited
/// on forever).
pub const ATTEMPTS: u32 = 3;

/// `[alerts]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// "" = no webhook.
    #[serde(default)]
    pub webhook_url: WebhookUrl,
    /// How long one delivery attempt may take.
    pub timeout_ms: u64,
}

impl AlertSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout_ms == 0 {
            return Err("alerts.timeout_ms must be greater than 0".into());
        }
        if self.webhook_url.0.is_empty() {
            return Ok(());
        }
        match url::Url::parse(&self.webhook_url.0) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
            Ok(_) => Err(format!(
                "alerts.webhook_url = {} must be an http:// or https:// URL",
                self.webhook_url
            )),
            // The parser's message, not the URL: it may hold a token.
            Err(e) => Err(format!("alerts.webhook_url is not a URL: {e}")),
        }
    }
}

/// A webhook URL: `Debug` and `Display` show its scheme and host, never the path or query
/// where chat services put the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn new(url: impl Into<String>) -> WebhookUrl {
        WebhookUrl(url.into().trim().to_owned())
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WebhookUrl, D::Error> {
        String::deserialize(d).map(WebhookUrl::new)
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            _ if self.0.is_empty() => f.write_str("(none)"),
            Ok(u) => write!(
                f,
                "{}://{}/***",
                u.scheme(),
                u.host_str().unwrap_or_default()
            ),
            Err(_) => f.write_str("***"),
        }
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

/// Sends alerts; cheap to clone. Without a webhook every send is a no-op (the log line the
/// caller writes anyway is the alert).
#[derive(Clone, Debug)]
pub struct Alerts {
    target: Option<(reqwest::Client, WebhookUrl)>,
    service: String,
    account: String,
}

impl Alerts {
    /// `account` names the account stack in every alert (one webhook may serve several).
    pub fn new(settings: &AlertSettings, service: &str, account: &str) -> Result<Alerts, String> {
        settings.validate()?;
        let target = if settings.webhook_url.0.is_empty() {
            None
        } else {
            // The same TLS stack as the exchange client (ring; installing twice is a no-op).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.timeout_ms))
                .build()
                .map_err(|e| format!("cannot build the webhook client: {}", e.without_url()))?;
            Some((client, settings.webhook_url.clone()))
        };
        Ok(Alerts {
            target,
            service: service.to_owned(),
            account: account.to_owned(),
        })
    }

    /// No webhook.
    pub fn none() -> Alerts {
        Alerts {
            target: None,
            service: String::new(),
            account: String::new(),
        }
    }

    /// Whether a webhook is set (else every send is a no-op).
    pub fn is_on(&self) -> bool {
        self.target.is_some()
    }

    /// Sends an alert in the background (inside a tokio runtime, e.g. an actix system).
    pub fn send(&self, event: &str, text: &str, details: serde_json::Value) {
        let Some((client, url)) = self.target.clone() else {
            return;
        };
        let body = serde_json::json!({
            "text": text,
            "event": event,
            "service": self.service,
            "account": self.account,
            "details": details,
        });
        let event = event.to_owned();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            for attempt in 1..=ATTEMPTS {
                let sent = client.post(&url.0).json(&body).send().await;
                let failure = match sent {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(event, webhook = %url, "alert delivered");
                        return;
                    }
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.without_url().to_string(),
                };
                if attempt == ATTEMPTS {
                    tracing::error!(event, webhook = %url, error = failure, attempts = ATTEMPTS, "alert not delivered");
                    return;
                }
                tracing::warn!(event, webhook = %url, error = failure, attempt, "alert not delivered; trying again");
                // Backoff between deliveries of one alert: this task's own, nothing waits
                // on it.
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "https://hooks.slack.com/services/T0/B0/SECRET",
        "https://hooks.slack.com/***"
    )]
    #[case("http://127.0.0.1:9/hook?token=SECRET", "http://127.0.0.1/***")]
    #[case("not a url SECRET", "***")]
    #[case("", "(none)")]
    fn a_webhook_url_prints_without_its_token(#[case] url: &str, #[case] shown: &str) {
        let u = WebhookUrl::new(url);
        assert_eq!(u.to_string(), shown);
        assert!(!format!("{u:?}").contains("SECRET"));
    }

    #[rstest]
    #[case("", 5000, true)]
    #[case("https://example.com/x", 5000, true)]
    #[case("ftp://example.com/x", 5000, false)]
    #[case("example.com/SECRET", 5000, false)]
    #[case("https://example.com/x", 0, false)]
    fn validation(#[case] url: &str, #[case] timeout_ms: u64, #[case] ok: bool) {
        let s = AlertSettings {
            webhook_url: WebhookUrl::new(url),
            timeout_ms,
        };
        let r = s.validate();
        assert_eq!(r.is_ok(), ok, "{r:?}");
        if let Err(e) = r {
            assert!(!e.contains("SECRET"), "{e}");
        }
    }
}
