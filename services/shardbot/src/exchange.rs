//! `shardbot exchange ...`: look at an exchange through the project's one Bybit client, so
//! a user can check a setup (URLs, clock, keys, balance) in one command.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use shardbot_bybit::{Credentials, Environment, ExchangeSettings, masked_key, rest::BybitClient};
use shardbot_protocol::Interval;
use shardbot_service::Settings;

/// Where the API keys come from for these commands.
const KEY_VAR: &str = "SHARDBOT_API_KEY";
const SECRET_VAR: &str = "SHARDBOT_API_SECRET";

#[derive(Args, Debug)]
#[command(
    after_help = "API keys, for the commands that need them, are read from the \
    SHARDBOT_API_KEY and SHARDBOT_API_SECRET environment variables. Demo keys are created on \
    bybit.com after switching to Demo Trading; they do not work on live or testnet (10003)."
)]
pub struct ExchangeArgs {
    /// Local configuration file (its [exchange] section), over the built-in defaults.
    #[arg(long, env = "SHARDBOT_CONFIG", value_name = "FILE", global = true)]
    config: Option<std::path::PathBuf>,
    /// Exchange to talk to: sim, demo, live or testnet (default: exchange.environment).
    #[arg(long, global = true)]
    env: Option<Environment>,
    /// REST base URL override (e.g. a bybit-sim elsewhere).
    #[arg(long, global = true, value_name = "URL")]
    rest_url: Option<String>,
    #[command(subcommand)]
    command: ExchangeCommand,
}

#[derive(Subcommand, Debug)]
enum ExchangeCommand {
    /// Everything at once: URL, clock offset, universe size, and with keys the account,
    /// wallet, positions and open orders. Exits non-zero with the reason if any step fails.
    Check,
    /// Bybit's clock and this machine's offset from it.
    Time,
    /// Trading USDT perpetuals (count; --list prints them with their filters).
    Instruments {
        #[arg(long)]
        list: bool,
    },
    /// Last, mark and funding of some symbols.
    Tickers {
        #[arg(required = true)]
        symbols: Vec<String>,
    },
    /// The most recent klines of a symbol, oldest first.
    Klines {
        symbol: String,
        /// 1,3,5,15,30,60,120,240,360,720,D,W,M
        #[arg(long, default_value = "5")]
        interval: Interval,
        #[arg(long, default_value_t = 10)]
        limit: i64,
    },
    /// The UNIFIED wallet (needs keys).
    Wallet,
    /// Open positions (needs keys).
    Positions,
    /// Open orders (needs keys).
    Orders,
}

fn credentials() -> anyhow::Result<Option<Credentials>> {
    match (std::env::var(KEY_VAR), std::env::var(SECRET_VAR)) {
        (Ok(k), Ok(s)) if !k.is_empty() && !s.is_empty() => Ok(Some(Credentials::new(k, s))),
        (Err(_), Err(_)) => Ok(None),
        _ => bail!("set both {KEY_VAR} and {SECRET_VAR}, or neither"),
    }
}

fn need_keys(client: &BybitClient) -> anyhow::Result<()> {
    if !client.has_credentials() {
        bail!("this command needs API keys: set {KEY_VAR} and {SECRET_VAR}");
    }
    Ok(())
}

pub fn run(args: ExchangeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let mut ex: ExchangeSettings = settings.section("exchange")?;
    if let Some(env) = args.env {
        ex.environment = env;
    }
    if let Some(url) = args.rest_url {
        ex.rest_url = url;
    }
    let creds = credentials()?;
    let key = creds.as_ref().map(|c| masked_key(&c.api_key));
    let client = ex.client(creds)?;
    let urls = ex.urls()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match args.command {
            ExchangeCommand::Check => {
                println!("exchange:    {} ({})", ex.environment, urls.rest);
                let offset = client.sync_time().await?;
                println!("clock:       this machine is {:+} ms off Bybit's clock (requests are signed with Bybit's time)", -offset);
                let universe = client.usdt_perpetuals().await?;
                println!("instruments: {} trading USDT perpetuals", universe.len());
                let Some(key) = key else {
                    println!("keys:        none set ({KEY_VAR} / {SECRET_VAR}): public checks only");
                    return Ok(());
                };
                let info = client.account_info().await?;
                println!("account:     key {key} accepted; margin mode {}, unified status {}", info.margin_mode, info.unified_margin_status);
                print_wallet(&client).await?;
                let positions = client.positions().await?;
                println!("positions:   {} open", positions.len());
                let orders = client.open_orders().await?;
                println!("orders:      {} open", orders.len());
                Ok(())
            }
            ExchangeCommand::Time => {
                let offset = client.sync_time().await?;
                println!("Bybit time {} ms; this machine is {:+} ms off", client.clock().now_ms(), -offset);
                Ok(())
            }
            ExchangeCommand::Instruments { list } => {
                let universe = client.usdt_perpetuals().await?;
                if list {
                    println!("{:<20} {:>12} {:>12} {:>12} {:>10} {:>8}", "symbol", "tick", "qty step", "min qty", "min notl", "max lev");
                    for i in &universe {
                        println!(
                            "{:<20} {:>12} {:>12} {:>12} {:>10} {:>8}",
                            i.symbol,
                            i.price_filter.tick_size,
                            i.lot_size_filter.qty_step,
                            i.lot_size_filter.min_order_qty,
                            i.lot_size_filter.min_notional_value.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                            i.leverage_filter.max_leverage
                        );
                    }
                }
                println!("{} trading USDT perpetuals", universe.len());
                Ok(())
            }
            ExchangeCommand::Tickers { symbols } => {
                let all = client.tickers().await?;
                for s in &symbols {
                    let Some(t) = all.iter().find(|t| &t.symbol == s) else { bail!("no ticker for {s}") };
                    let show = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
                    println!("{s}: last {} mark {} funding {}", t.last_price, show(t.mark_price), show(t.funding_rate));
                }
                Ok(())
            }
            ExchangeCommand::Klines { symbol, interval, limit } => {
                let Some(len) = interval.duration_ms() else { bail!("monthly klines are not supported here") };
                let end = client.clock().now_ms();
                let bars = client.klines(&symbol, interval, end - len * limit, end).await?;
                println!("{:>14} {:>14} {:>14} {:>14} {:>14} {:>16}", "open_time_ms", "open", "high", "low", "close", "volume");
                for k in bars {
                    println!("{:>14} {:>14} {:>14} {:>14} {:>14} {:>16}", k.start_ms, k.open, k.high, k.low, k.close, k.volume);
                }
                Ok(())
            }
            ExchangeCommand::Wallet => {
                need_keys(&client)?;
                print_wallet(&client).await
            }
            ExchangeCommand::Positions => {
                need_keys(&client)?;
                let positions = client.positions().await?;
                for p in &positions {
                    let show = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<16} {:<4} size {} avg {} uPnL {} SL {} TP {}",
                        p.symbol, p.side, p.size, show(p.avg_price), show(p.unrealised_pnl), show(p.stop_loss), show(p.take_profit)
                    );
                }
                println!("{} open positions", positions.len());
                Ok(())
            }
            ExchangeCommand::Orders => {
                need_keys(&client)?;
                let orders = client.open_orders().await?;
                for o in &orders {
                    println!("{:<16} {:<4} {} {} qty {} status {} link {}", o.symbol, o.side, o.order_type, o.order_id, o.qty, o.order_status, o.order_link_id);
                }
                println!("{} open orders", orders.len());
                Ok(())
            }
        }
    })
}

async fn print_wallet(client: &BybitClient) -> anyhow::Result<()> {
    let w = client.wallet().await?;
    match w.coin("USDT") {
        Some(c) => println!(
            "wallet:      USDT balance {} equity {} (account equity {} USD)",
            c.wallet_balance,
            c.equity,
            w.total_equity
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into())
        ),
        None => println!(
            "wallet:      no USDT (account equity {} USD)",
            w.total_equity
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into())
        ),
    }
    Ok(())
}
