//! Environments and their URLs, exactly as ../shared/reference/bybit-v5.md §1 lists them.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Which exchange the stack talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// The project's own Bybit-compatible server (`bybit-sim`); URLs must be configured.
    Sim,
    /// Bybit Demo Trading: real matching, fake money.
    Demo,
    /// Real money.
    Live,
    /// Bybit testnet (a separate exchange with its own accounts and market data).
    Testnet,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Sim => "sim",
            Environment::Demo => "demo",
            Environment::Live => "live",
            Environment::Testnet => "testnet",
        }
    }

    /// The documented URLs; `None` for `sim`, whose server runs wherever it is configured.
    pub fn default_urls(self) -> Option<Urls> {
        let urls = |rest: &str, public: &str, private: &str| Urls {
            rest: rest.to_owned(),
            public_ws: public.to_owned(),
            private_ws: private.to_owned(),
        };
        match self {
            Environment::Sim => None,
            // Demo: REST on api-demo, private stream on stream-demo, and public market
            // data from the MAINNET public stream (stream-demo serves private topics only).
            Environment::Demo => Some(urls(
                "https://api-demo.bybit.com",
                "wss://stream.bybit.com/v5/public/linear",
                "wss://stream-demo.bybit.com/v5/private",
            )),
            Environment::Live => Some(urls(
                "https://api.bybit.com",
                "wss://stream.bybit.com/v5/public/linear",
                "wss://stream.bybit.com/v5/private",
            )),
            Environment::Testnet => Some(urls(
                "https://api-testnet.bybit.com",
                "wss://stream-testnet.bybit.com/v5/public/linear",
                "wss://stream-testnet.bybit.com/v5/private",
            )),
        }
    }

    /// `sim` URLs for a `bybit-sim` listening on `base` (e.g. `http://127.0.0.1:7700`).
    pub fn sim_urls(base: &str) -> Urls {
        let base = base.trim_end_matches('/');
        let ws = base.replacen("http", "ws", 1);
        Urls {
            rest: base.to_owned(),
            public_ws: format!("{ws}/v5/public/linear"),
            private_ws: format!("{ws}/v5/private"),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Environment, String> {
        match s {
            "sim" => Ok(Environment::Sim),
            "demo" => Ok(Environment::Demo),
            "live" => Ok(Environment::Live),
            "testnet" => Ok(Environment::Testnet),
            _ => Err(format!(
                "unknown environment `{s}`: expected sim, demo, live or testnet"
            )),
        }
    }
}

/// REST base and WebSocket URLs of one environment.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Urls {
    pub rest: String,
    pub public_ws: String,
    pub private_ws: String,
}

/// Resolves the URLs of `env`, each overridable (which is how `sim` points at bybit-sim).
pub fn resolve_urls(
    env: Environment,
    rest: Option<&str>,
    public_ws: Option<&str>,
    private_ws: Option<&str>,
) -> Result<Urls, String> {
    let defaults = env.default_urls();
    let pick = |over: Option<&str>, default: Option<&String>, what: &str| {
        over.map(str::to_owned)
            .or_else(|| default.cloned())
            .ok_or_else(|| {
                format!(
                    "environment `{env}` has no default {what} URL: set it in the configuration"
                )
            })
    };
    Ok(Urls {
        rest: pick(rest, defaults.as_ref().map(|u| &u.rest), "REST")?,
        public_ws: pick(
            public_ws,
            defaults.as_ref().map(|u| &u.public_ws),
            "public WebSocket",
        )?,
        private_ws: pick(
            private_ws,
            defaults.as_ref().map(|u| &u.private_ws),
            "private WebSocket",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        Environment::Demo,
        "https://api-demo.bybit.com",
        "wss://stream.bybit.com/v5/public/linear",
        "wss://stream-demo.bybit.com/v5/private"
    )]
    #[case(
        Environment::Live,
        "https://api.bybit.com",
        "wss://stream.bybit.com/v5/public/linear",
        "wss://stream.bybit.com/v5/private"
    )]
    #[case(
        Environment::Testnet,
        "https://api-testnet.bybit.com",
        "wss://stream-testnet.bybit.com/v5/public/linear",
        "wss://stream-testnet.bybit.com/v5/private"
    )]
    fn urls_are_the_documented_ones(
        #[case] env: Environment,
        #[case] rest: &str,
        #[case] public: &str,
        #[case] private: &str,
    ) {
        let u = resolve_urls(env, None, None, None).unwrap();
        assert_eq!(
            (u.rest.as_str(), u.public_ws.as_str(), u.private_ws.as_str()),
            (rest, public, private)
        );
    }

    #[test]
    fn demo_public_data_comes_from_mainnet_not_stream_demo() {
        let u = Environment::Demo.default_urls().unwrap();
        assert!(!u.public_ws.contains("stream-demo"));
    }

    #[test]
    fn sim_needs_urls_and_overrides_win() {
        let err = resolve_urls(Environment::Sim, None, None, None).unwrap_err();
        assert!(err.contains("sim") && err.contains("REST"), "{err}");
        let sim = Environment::sim_urls("http://127.0.0.1:7700/");
        assert_eq!(sim.public_ws, "ws://127.0.0.1:7700/v5/public/linear");
        assert_eq!(sim.private_ws, "ws://127.0.0.1:7700/v5/private");
        let u = resolve_urls(Environment::Demo, Some("http://127.0.0.1:1"), None, None).unwrap();
        assert_eq!(u.rest, "http://127.0.0.1:1");
        assert_eq!(u.private_ws, "wss://stream-demo.bybit.com/v5/private");
        assert_eq!("demo".parse::<Environment>(), Ok(Environment::Demo));
        assert!("mainnet".parse::<Environment>().is_err());
    }
}
