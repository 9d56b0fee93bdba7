//! `shardbot config check`: the layered configuration (built-in defaults, the local file,
//! SHARDBOT__... variables) is read as every process would read it, and refused with the
//! key to fix: a malformed file, a value of the wrong type, or a setting nothing reads (a
//! typo). `scripts/stack up --config FILE` runs it before starting anything.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use shardbot_bybit::ExchangeSettings;
use shardbot_service::Settings;

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Local configuration file (SHARDBOT_CONFIG works too).
    #[arg(long, env = "SHARDBOT_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Check the configuration; prints the first problem, naming the key.
    Check,
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let ConfigCommand::Check = args.command;
    let what = args.config.as_ref().map_or_else(
        || "the built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    let settings = Settings::load(args.config.as_deref())?;
    let unknown = settings.unknown_keys()?;
    if !unknown.is_empty() {
        bail!(
            "{what}: unknown setting{} {} (every setting is in deploy/config/default.toml)",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        );
    }
    settings.common().with_context(|| what.clone())?;
    let exchange: ExchangeSettings = settings.section("exchange").with_context(|| what.clone())?;
    exchange.validate().with_context(|| what.clone())?;
    println!("{what}: the configuration is valid");
    Ok(())
}
