//! Wallet, account info, fee rates.

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::de;

/// One coin of the UNIFIED wallet.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoinBalance {
    pub coin: String,
    #[serde(deserialize_with = "de::decimal")]
    pub equity: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub wallet_balance: Decimal,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub usd_value: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub unrealised_pnl: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub cum_realised_pnl: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_position_im: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_order_im: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub locked: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub available_to_withdraw: Option<Decimal>,
}

/// One account of `/v5/account/wallet-balance`. Account-level totals are in USD.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletAccount {
    pub account_type: String,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_equity: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_wallet_balance: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_margin_balance: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_available_balance: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_perp_upl: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_initial_margin: Option<Decimal>,
    #[serde(default, deserialize_with = "de::opt_decimal")]
    pub total_maintenance_margin: Option<Decimal>,
    pub coin: Vec<CoinBalance>,
}

impl WalletAccount {
    pub fn coin(&self, coin: &str) -> Option<&CoinBalance> {
        self.coin.iter().find(|c| c.coin == coin)
    }
}

/// `/v5/account/wallet-balance` result.
#[derive(Debug, Clone, Deserialize)]
pub struct WalletBalance {
    pub list: Vec<WalletAccount>,
}

/// `/v5/account/info`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    pub unified_margin_status: i64,
    pub margin_mode: String,
    #[serde(default, deserialize_with = "de::opt_int")]
    pub updated_time: Option<i64>,
    #[serde(default)]
    pub is_master_trader: bool,
    #[serde(default)]
    pub spot_hedging_status: String,
}

/// One row of `/v5/account/fee-rate` (not available on demo: 10001).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeeRate {
    #[serde(default)]
    pub symbol: String,
    #[serde(deserialize_with = "de::decimal")]
    pub taker_fee_rate: Decimal,
    #[serde(deserialize_with = "de::decimal")]
    pub maker_fee_rate: Decimal,
}
