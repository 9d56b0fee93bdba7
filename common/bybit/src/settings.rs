//! The `[exchange]` configuration section and building clients from it.

use std::{path::Path, sync::Arc, time::Duration};

use serde::Deserialize;

use crate::{
    accounts::{AccountsError, AccountsFile},
    auth::Credentials,
    env::{Environment, Urls, resolve_urls},
    error::BybitError,
    ratelimit::{IP_LIMIT, RateLimiter},
    rest::{BybitClient, RawClient, RestConfig},
    ws::WsConfig,
};

/// `[exchange]`: which Bybit to talk to and how hard.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSettings {
    pub environment: Environment,
    /// Where bybit-sim listens in `sim` mode.
    pub sim_base_url: String,
    /// Overrides of the environment's URLs ("" = the environment's own).
    #[serde(default)]
    pub rest_url: String,
    #[serde(default)]
    pub public_ws_url: String,
    #[serde(default)]
    pub private_ws_url: String,
    pub recv_window_ms: u64,
    pub request_timeout_ms: u64,
    /// This process's share of Bybit's 600 requests / 5 s IP limit. The shares of every
    /// process on the host must sum to less than 600.
    pub ip_requests_per_5s: u32,
    pub ws_ping_interval_ms: u64,
    pub ws_dead_after_ms: u64,
    /// The account whose keys this stack uses, by name in `accounts_file`; "" = keys from
    /// `SHARDBOT_API_KEY` / `SHARDBOT_API_SECRET` (or, in `sim`, the sim's demo account).
    #[serde(default)]
    pub account: String,
    /// The accounts file (`api_accounts.json`, owner-only).
    #[serde(default)]
    pub accounts_file: String,
    /// Live trading (real money) starts only when this names the account traded
    /// (`exchange.account`): the services refuse a live account without it, whoever starts
    /// them (`scripts/stack up --confirm-live NAME` sets it).
    #[serde(default)]
    pub confirm_live: String,
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.trim().is_empty()).then_some(s)
}

impl ExchangeSettings {
    /// The URLs to use: overrides, else the environment's, else (sim) `sim_base_url`.
    pub fn urls(&self) -> Result<Urls, BybitError> {
        let sim = (self.environment == Environment::Sim)
            .then(|| Environment::sim_urls(&self.sim_base_url));
        resolve_urls(
            self.environment,
            non_empty(&self.rest_url).or(sim.as_ref().map(|u| u.rest.as_str())),
            non_empty(&self.public_ws_url).or(sim.as_ref().map(|u| u.public_ws.as_str())),
            non_empty(&self.private_ws_url).or(sim.as_ref().map(|u| u.private_ws.as_str())),
        )
        .map_err(BybitError::Config)
    }

    pub fn validate(&self) -> Result<(), BybitError> {
        let bad = |m: String| Err(BybitError::Config(m));
        if self.ip_requests_per_5s == 0 || self.ip_requests_per_5s >= IP_LIMIT {
            return bad(format!(
                "exchange.ip_requests_per_5s = {}: must be between 1 and {} (Bybit's whole limit \
                 is {IP_LIMIT} per 5 s for every process on this IP)",
                self.ip_requests_per_5s,
                IP_LIMIT - 1
            ));
        }
        if self.recv_window_ms == 0 || self.request_timeout_ms == 0 {
            return bad(
                "exchange.recv_window_ms and exchange.request_timeout_ms must be > 0".into(),
            );
        }
        if self.ws_ping_interval_ms == 0 {
            // tokio's interval panics on a zero period: the WebSocket task would die.
            return bad(
                "exchange.ws_ping_interval_ms = 0: must be > 0 (Bybit recommends 20000)".into(),
            );
        }
        if self.ws_dead_after_ms <= self.ws_ping_interval_ms {
            return bad(format!(
                "exchange.ws_dead_after_ms ({}) must be longer than exchange.ws_ping_interval_ms ({})",
                self.ws_dead_after_ms, self.ws_ping_interval_ms
            ));
        }
        self.urls().map(|_| ())
    }

    /// For the services that trade or watch an account (router, risk manager,
    /// reconciler): a `live` environment needs `confirm_live` to name the account traded;
    /// keys from the environment variables (no account name) cannot be live.
    pub fn check_live_confirmed(&self) -> Result<(), BybitError> {
        if self.environment != Environment::Live {
            return Ok(());
        }
        let account = self.account.trim();
        if account.is_empty() {
            return Err(BybitError::Config(
                "exchange.environment = \"live\" (real money) needs a named account \
                 (exchange.account, from the accounts file) and exchange.confirm_live naming it; \
                 keys from SHARDBOT_API_KEY are not traded live"
                    .into(),
            ));
        }
        if self.confirm_live.trim() != account {
            return Err(BybitError::Config(format!(
                "account {account:?} is LIVE (real money): set exchange.confirm_live = \
                 {account:?} (SHARDBOT__EXCHANGE__CONFIRM_LIVE, or scripts/stack up \
                 --confirm-live {account}) to trade it; nothing started"
            )));
        }
        Ok(())
    }

    /// A REST client with its own budget owner. A process builds one and shares it.
    /// [`BybitClient::instrument_filters`] of this exchange, read without keys from
    /// synchronous code (a command, the dashboard's collector thread) on a runtime of its
    /// own.
    pub fn read_instrument_filters(
        &self,
    ) -> Result<
        std::collections::HashMap<shardbot_protocol::Symbol, shardbot_protocol::Instrument>,
        BybitError,
    > {
        let client = self.client(None)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BybitError::Config(format!("cannot start an async runtime: {e}")))?;
        rt.block_on(client.instrument_filters())
    }

    pub fn client(&self, credentials: Option<Credentials>) -> Result<BybitClient, BybitError> {
        self.validate()?;
        let urls = self.urls()?;
        let raw = RawClient::new(
            RestConfig {
                base_url: urls.rest.trim_end_matches('/').to_owned(),
                recv_window_ms: self.recv_window_ms,
                timeout: Duration::from_millis(self.request_timeout_ms),
            },
            credentials,
            Arc::new(RateLimiter::new(self.ip_requests_per_5s)),
        )?;
        Ok(BybitClient::new(raw))
    }

    /// The account's keys: of `exchange.account` in the accounts file (demo, live,
    /// testnet); else from the environment (`SHARDBOT_API_KEY` / `SHARDBOT_API_SECRET`);
    /// in `sim` mode without them, `sim_account` (the bybit-sim account the caller found
    /// for `exchange.account`, or its ready-made demo account).
    pub fn credentials(
        &self,
        sim_account: Option<(String, String)>,
    ) -> Result<Credentials, BybitError> {
        if let Some(name) = non_empty(&self.account) {
            if self.environment == Environment::Sim {
                // bybit-sim's own accounts ([[sim.accounts]]), looked up by the caller
                if sim_account.is_none() {
                    return Err(BybitError::Config(format!(
                        "exchange.account = {:?}: bybit-sim has no such account (its accounts \
                         are the [[sim.accounts]] of the configuration)",
                        name.trim()
                    )));
                }
            } else {
                return self.account_credentials(name.trim());
            }
        }
        let fallback = sim_account.filter(|_| self.environment == Environment::Sim);
        Credentials::from_env_or(fallback).map_err(BybitError::Config)
    }

    /// The keys of account `name` from the accounts file, refused unless the account is
    /// for this environment (demo keys do not sign in on live and vice versa: Bybit
    /// answers 10003, which says less).
    fn account_credentials(&self, name: &str) -> Result<Credentials, BybitError> {
        let path = Path::new(non_empty(&self.accounts_file).unwrap_or("api_accounts.json"));
        let config = |e: AccountsError| BybitError::Config(e.to_string());
        let file = AccountsFile::load(path).map_err(config)?;
        let account = file.account(name, path).map_err(config)?;
        if account.environment != self.environment {
            return Err(BybitError::Config(format!(
                "account {name:?} is a {} account but exchange.environment = {}: its keys work                  only on {} (set exchange.environment = \"{}\" or pick another account)",
                account.environment.as_str(),
                self.environment.as_str(),
                account.environment.as_str(),
                account.environment.as_str(),
            )));
        }
        account.credentials().map_err(config)
    }

    pub fn ws_config(&self) -> WsConfig {
        WsConfig {
            ping_interval: Duration::from_millis(self.ws_ping_interval_ms),
            dead_after: Duration::from_millis(self.ws_dead_after_ms),
            ..WsConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: Environment) -> ExchangeSettings {
        ExchangeSettings {
            environment: env,
            sim_base_url: "http://127.0.0.1:7700".into(),
            rest_url: String::new(),
            public_ws_url: String::new(),
            private_ws_url: String::new(),
            recv_window_ms: 5000,
            request_timeout_ms: 10_000,
            ip_requests_per_5s: 150,
            ws_ping_interval_ms: 20_000,
            ws_dead_after_ms: 45_000,
            account: String::new(),
            accounts_file: String::new(),
            confirm_live: String::new(),
        }
    }

    #[test]
    fn live_needs_the_account_named_to_confirm() {
        let live = |account: &str, confirm: &str| ExchangeSettings {
            account: account.into(),
            confirm_live: confirm.into(),
            ..settings(Environment::Live)
        };
        let e = live("", "").check_live_confirmed().unwrap_err().to_string();
        assert!(e.contains("needs a named account"), "{e}");
        let e = live("mylive", "")
            .check_live_confirmed()
            .unwrap_err()
            .to_string();
        assert!(e.contains("confirm_live = \"mylive\""), "{e}");
        assert!(live("mylive", "other").check_live_confirmed().is_err());
        live("mylive", "mylive").check_live_confirmed().unwrap();
        settings(Environment::Demo).check_live_confirmed().unwrap();
    }

    #[test]
    fn sim_points_at_bybit_sim_and_demo_at_bybit() {
        let sim = settings(Environment::Sim).urls().unwrap();
        assert_eq!(sim.rest, "http://127.0.0.1:7700");
        assert_eq!(sim.private_ws, "ws://127.0.0.1:7700/v5/private");
        let demo = settings(Environment::Demo).urls().unwrap();
        assert_eq!(demo.rest, "https://api-demo.bybit.com");
        let over = ExchangeSettings {
            rest_url: "http://10.0.0.9:1".into(),
            ..settings(Environment::Demo)
        };
        assert_eq!(over.urls().unwrap().rest, "http://10.0.0.9:1");
        assert_eq!(
            over.urls().unwrap().private_ws,
            "wss://stream-demo.bybit.com/v5/private"
        );
    }

    #[test]
    fn the_ip_share_must_leave_room_for_others() {
        for bad in [0, 600, 1000] {
            let e = ExchangeSettings {
                ip_requests_per_5s: bad,
                ..settings(Environment::Sim)
            }
            .validate()
            .unwrap_err();
            assert!(e.to_string().contains("ip_requests_per_5s"), "{e}");
        }
        let e = ExchangeSettings {
            ws_dead_after_ms: 1000,
            account: String::new(),
            accounts_file: String::new(),
            ..settings(Environment::Sim)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("ws_dead_after_ms"), "{e}");
        let e = ExchangeSettings {
            ws_ping_interval_ms: 0,
            ..settings(Environment::Sim)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("ws_ping_interval_ms = 0"), "{e}");
    }

    #[test]
    fn keys_of_a_named_account_and_only_on_its_own_exchange() {
        use crate::{Account, AccountsFile, Secret};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api_accounts.json");
        AccountsFile {
            accounts: vec![Account {
                name: "mydemo".into(),
                environment: Environment::Demo,
                api_key: "k".into(),
                api_secret: Some(Secret::new("s")),
                secret_file: None,
            }],
        }
        .save(&path)
        .unwrap();
        let with = |env, name: &str| ExchangeSettings {
            account: name.into(),
            accounts_file: path.display().to_string(),
            ..settings(env)
        };
        let c = with(Environment::Demo, "mydemo").credentials(None).unwrap();
        assert_eq!((c.api_key.as_str(), c.secret.expose()), ("k", "s"));
        let err = with(Environment::Live, "mydemo")
            .credentials(None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is a demo account but exchange.environment = live"),
            "{err}"
        );
        let err = with(Environment::Demo, "nope")
            .credentials(None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no account \"nope\""), "{err}");
    }
}
