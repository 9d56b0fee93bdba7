//! Layered configuration: the compiled-in `deploy/config/default.toml`, then a local file,
//! then `SHARDBOT__<SECTION>__<KEY>` environment variables.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, de::DeserializeOwned};
use shardbot_bus::{BusOptions, validate_url};
use shardbot_protocol::valid_name;

/// The defaults, compiled in so every binary has them wherever it runs.
pub const DEFAULT_TOML: &str = include_str!("../../../deploy/config/default.toml");

/// Prefix of configuration environment variables (`SHARDBOT__LOG__LEVEL=debug`).
pub const ENV_PREFIX: &str = "SHARDBOT";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("cannot read configuration: {0}")]
    Load(#[source] Box<config::ConfigError>),
    #[error("invalid [{section}] configuration: {source}")]
    Section {
        section: String,
        #[source]
        source: Box<config::ConfigError>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The loaded configuration of one process: every layer merged.
#[derive(Debug, Clone)]
pub struct Settings {
    config: config::Config,
    source: Option<PathBuf>,
}

impl Settings {
    /// Loads the layers from the real environment.
    pub fn load(local: Option<&Path>) -> Result<Settings, SettingsError> {
        Settings::load_with_env(local, None)
    }

    /// Loads the layers with `env` standing in for the process environment (tests).
    pub fn load_with_env(
        local: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = local {
            if !path.is_file() {
                return Err(SettingsError::MissingFile {
                    path: path.to_owned(),
                });
            }
            builder = builder
                .add_source(config::File::from(path.to_owned()).format(config::FileFormat::Toml));
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(env);
        let config = builder
            .add_source(environment)
            .build()
            .map_err(|e| SettingsError::Load(Box::new(e)))?;
        Ok(Settings {
            config,
            source: local.map(Path::to_owned),
        })
    }

    /// The local file, if one was given.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Deserialises one top-level section, e.g. `section::<LogSettings>("log")`.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, SettingsError> {
        self.config
            .get::<T>(name)
            .map_err(|e| SettingsError::Section {
                section: name.to_owned(),
                source: Box::new(e),
            })
    }

    /// The first of bybit-sim's accounts (`[[sim.accounts]]`) as (name, key, secret): the
    /// ready-made demo account services use in `sim` mode when no keys are given.
    pub fn sim_demo_account(&self) -> Option<(String, String, String)> {
        self.sim_account("")
    }

    /// bybit-sim's account called `name` (`[[sim.accounts]]`), or the first one when
    /// `name` is empty, as (name, key, secret).
    pub fn sim_account(&self, name: &str) -> Option<(String, String, String)> {
        #[derive(serde::Deserialize)]
        struct Account {
            name: String,
            api_key: String,
            api_secret: String,
        }
        let accounts: Vec<Account> = self.config.get("sim.accounts").ok()?;
        accounts
            .into_iter()
            .find(|a| name.trim().is_empty() || a.name == name.trim())
            .map(|a| (a.name, a.api_key, a.api_secret))
    }

    /// The account stack these settings run, as alerts name it: `exchange.account`, else
    /// the environment (`sim`, `demo`, `live`).
    pub fn account_label(&self) -> String {
        let get = |k: &str| {
            self.config
                .get_string(k)
                .ok()
                .filter(|s| !s.trim().is_empty())
        };
        get("exchange.account")
            .or_else(|| get("exchange.environment"))
            .unwrap_or_default()
    }

    /// The names of bybit-sim's accounts (`[[sim.accounts]]`), in order.
    pub fn sim_account_names(&self) -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct Account {
            name: String,
        }
        self.config
            .get::<Vec<Account>>("sim.accounts")
            .map(|v| v.into_iter().map(|a| a.name).collect())
            .unwrap_or_default()
    }

    /// Settings that no part of shardbot reads: every key of the merged configuration
    /// (file and `SHARDBOT__...` variables) that the built-in defaults do not have, as
    /// dotted paths (`risk.acount`). Services refuse unknown keys of their own sections;
    /// this sees every section at once, for `shardbot config check`.
    pub fn unknown_keys(&self) -> Result<Vec<String>, SettingsError> {
        fn table(c: &config::Config) -> Result<config::Map<String, config::Value>, SettingsError> {
            c.clone()
                .try_deserialize()
                .map_err(|e| SettingsError::Load(Box::new(e)))
        }
        fn walk(
            have: &config::Map<String, config::Value>,
            known: &config::Map<String, config::Value>,
            path: &str,
            out: &mut Vec<String>,
        ) {
            for (k, v) in have {
                let key = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match known.get(k) {
                    None => out.push(key),
                    Some(d) => {
                        if let (Ok(h), Ok(d)) = (v.clone().into_table(), d.clone().into_table()) {
                            walk(&h, &d, &key, out);
                        }
                    }
                }
            }
        }
        let defaults = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .map_err(|e| SettingsError::Load(Box::new(e)))?;
        let mut out = Vec::new();
        walk(&table(&self.config)?, &table(&defaults)?, "", &mut out);
        out.sort();
        Ok(out)
    }

    /// The sections every service reads, validated.
    pub fn common(&self) -> Result<CommonSettings, SettingsError> {
        // Deserialised from the root (not section by section) so that a type error names
        // the full key, e.g. `heartbeat.interval_ms`.
        let common: CommonSettings = self
            .config
            .clone()
            .try_deserialize()
            .map_err(|e| SettingsError::Load(Box::new(e)))?;
        common.validate()?;
        Ok(common)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub dir: PathBuf,
    pub level: String,
    pub json: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    pub interval_ms: u64,
}

/// Where each stream and service listens.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    pub market_data_pub: String,
    pub market_data_rep: String,
    pub order_router_pub: String,
    pub order_router_rep: String,
    pub risk_manager_pub: String,
    pub risk_manager_rep: String,
    pub reconciler_rep: String,
    /// Template with `{service}` and `{instance}`.
    pub heartbeat: String,
}

impl Endpoints {
    /// The heartbeat endpoint of one process.
    pub fn heartbeat_of(&self, service: &str, instance: &str) -> String {
        self.heartbeat
            .replace("{service}", service)
            .replace("{instance}", instance)
    }

    fn all(&self) -> [(&'static str, &str); 8] {
        [
            ("market_data_pub", &self.market_data_pub),
            ("market_data_rep", &self.market_data_rep),
            ("order_router_pub", &self.order_router_pub),
            ("order_router_rep", &self.order_router_rep),
            ("risk_manager_pub", &self.risk_manager_pub),
            ("risk_manager_rep", &self.risk_manager_rep),
            ("reconciler_rep", &self.reconciler_rep),
            ("heartbeat", &self.heartbeat),
        ]
    }
}

/// The sections every service reads (other top-level sections belong to the services).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CommonSettings {
    pub log: LogSettings,
    pub heartbeat: HeartbeatSettings,
    pub bus: BusOptions,
    pub alerts: crate::alert::AlertSettings,
    pub endpoints: Endpoints,
}

impl CommonSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |m: String| Err(SettingsError::Invalid(m));
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid(format!("log.level = \"{}\": {e}", self.log.level));
        }
        if self.heartbeat.interval_ms == 0 {
            return invalid("heartbeat.interval_ms must be greater than 0".into());
        }
        self.bus.validate().map_err(SettingsError::Invalid)?;
        self.alerts.validate().map_err(SettingsError::Invalid)?;
        for (name, url) in self.endpoints.all() {
            validate_url(url)
                .map_err(|e| SettingsError::Invalid(format!("endpoints.{name}: {e}")))?;
        }
        if !(self.endpoints.heartbeat.contains("{service}")
            && self.endpoints.heartbeat.contains("{instance}"))
        {
            return invalid(format!(
                "endpoints.heartbeat = \"{}\" must contain {{service}} and {{instance}} so that \
                 every process gets its own endpoint",
                self.endpoints.heartbeat
            ));
        }
        Ok(())
    }
}

/// Checks a service or instance name (they appear in topics, file names and endpoints).
pub fn check_name(what: &str, name: &str) -> Result<(), SettingsError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(SettingsError::Invalid(format!(
            "{what} `{name}`: use 1 to 40 ASCII letters, digits, '-' or '_'"
        )))
    }
}
