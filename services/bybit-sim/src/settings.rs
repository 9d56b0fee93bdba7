//! The `[sim]` configuration section.

use rust_decimal::Decimal;
use serde::Deserialize;

/// What the sim pretends to be: demo refuses what Bybit demo refuses and serves
/// demo-apply-money; live serves the fee-rate endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Demo,
    Live,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimAccount {
    pub name: String,
    pub api_key: String,
    pub api_secret: String,
    /// Starting USDT wallet balance.
    pub usdt: Decimal,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSettings {
    pub listen: String,
    pub seed: u64,
    pub symbols: usize,
    /// A Bybit instruments-info JSON whose USDT perpetuals give real names and filters
    /// ("" = generated names only). Relative to the working directory.
    #[serde(default)]
    pub universe_file: String,
    /// A folder of daily kline files (`<SYMBOL>.csv`) lending real symbol names and price
    /// levels (the last close); "" = none. Relative to the working directory.
    #[serde(default)]
    pub universe_price_dir: String,
    /// A folder of recorded kline files (`<SYMBOL>.csv`, open_time_ms,open,high,low,close,
    /// volume) to replay instead of generating prices; "" = generate.
    #[serde(default)]
    pub replay_dir: String,
    /// In replay, the clock starts this many bars after the first recorded bar, so that
    /// much history is there to warm up on.
    #[serde(default = "warmup")]
    pub replay_warmup_bars: i64,
    /// In replay, the price stays this many sim ms at each bar's open and at its close
    /// (0 = it moves all bar long). What an order sent on a bar's close needs to fill at
    /// the next open, as a backtest assumes: at least the stack's reaction time times
    /// `clock_speed`.
    #[serde(default)]
    pub replay_hold_ms: i64,
    /// Funding rate charged at each settlement (longs pay a positive rate), and shown in
    /// tickers.
    #[serde(default = "funding_rate")]
    pub funding_rate: Decimal,
    /// Sim seconds per real second.
    pub clock_speed: f64,
    /// Sim time at start-up (Unix ms); 0 = now.
    #[serde(default)]
    pub start_time_ms: i64,
    pub profile: Profile,
    pub ip_limit_per_5s: u32,
    pub ip_ban_secs: u64,
    /// Market orders and triggered stops fill this many ticks through the last price.
    pub spread_ticks: u32,
    /// Multiplies Bybit's per-UID endpoint limits (1 = Bybit's). Only for measuring the
    /// sim's own capacity.
    #[serde(default = "one")]
    pub uid_limit_scale: f64,
    pub accounts: Vec<SimAccount>,
}

fn one() -> f64 {
    1.0
}

fn funding_rate() -> Decimal {
    Decimal::new(1, 4)
}

fn warmup() -> i64 {
    300
}

impl SimSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.symbols == 0 {
            return Err("sim.symbols must be at least 1".into());
        }
        if !(self.clock_speed > 0.0 && self.clock_speed.is_finite()) {
            return Err(format!(
                "sim.clock_speed = {}: must be a positive number",
                self.clock_speed
            ));
        }
        if !(self.uid_limit_scale >= 1.0 && self.uid_limit_scale.is_finite()) {
            return Err(format!(
                "sim.uid_limit_scale = {}: must be >= 1",
                self.uid_limit_scale
            ));
        }
        if self.funding_rate.abs() >= Decimal::new(1, 2) {
            return Err(format!(
                "sim.funding_rate = {}: a rate per settlement, under 0.01 (1 %) either way",
                self.funding_rate
            ));
        }
        if self.replay_hold_ms < 0 {
            return Err(format!(
                "sim.replay_hold_ms = {}: must be 0 or more",
                self.replay_hold_ms
            ));
        }
        if self.ip_limit_per_5s == 0 {
            return Err("sim.ip_limit_per_5s must be greater than 0".into());
        }
        if self.accounts.is_empty() {
            return Err("sim.accounts is empty: configure at least one [[sim.accounts]]".into());
        }
        let mut keys = std::collections::HashSet::new();
        for a in &self.accounts {
            if a.api_key.is_empty() || a.api_secret.is_empty() {
                return Err(format!(
                    "sim account `{}` needs api_key and api_secret",
                    a.name
                ));
            }
            if !keys.insert(&a.api_key) {
                return Err(format!("sim account `{}`: api_key used twice", a.name));
            }
        }
        Ok(())
    }
}
