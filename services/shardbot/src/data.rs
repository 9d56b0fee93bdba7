//! `shardbot download` (klines from the exchange into the history store, through the
//! client's rate-limit budget, resumable, with a progress bar) and `shardbot import`
//! (kline CSV files into the store). Backtests read the store with
//! `--data store:<interval>[:SYM,SYM]`.

use std::{path::PathBuf, str::FromStr, sync::Arc};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use serde::Deserialize;
use shardbot_bybit::ExchangeSettings;
use shardbot_history::HistoryStore;
use shardbot_protocol::{Bar, Interval, Symbol};
use shardbot_service::Settings;

/// The store folder, `[market_data] store_dir` (the gateway writes the same store).
#[derive(Deserialize)]
struct StoreSection {
    store_dir: String,
}

fn store(config: Option<&std::path::Path>, over: Option<&PathBuf>) -> anyhow::Result<HistoryStore> {
    let dir = match over {
        Some(d) => d.clone(),
        None => {
            let s: StoreSection = Settings::load(config)?.section("market_data")?;
            let configured =
                config.is_some() || std::env::var_os("SHARDBOT__MARKET_DATA__STORE_DIR").is_some();
            let recorded =
                std::fs::read_to_string(crate::stacks::run_dir().join("market-store")).ok();
            store_dir(configured, recorded.as_deref(), &s.store_dir).ok_or_else(|| {
                anyhow::anyhow!(
                    "market_data.store_dir is empty (no history store); pass --store DIR"
                )
            })?
        }
    };
    Ok(HistoryStore::open(&dir)?)
}

/// The history store a command reads or writes: the configuration's when one is given (a
/// file, or `SHARDBOT__MARKET_DATA__STORE_DIR`); else the one the running stack's gateway
/// writes (`scripts/stack` records it in `$SHARDBOT_STACK_RUN/market-store`: `recorded`);
/// else the default configuration's. `None`: no store (an empty `store_dir`).
fn store_dir(configured: bool, recorded: Option<&str>, from_config: &str) -> Option<PathBuf> {
    let recorded = recorded.map(str::trim).filter(|r| !r.is_empty());
    match (configured, recorded) {
        (false, Some(r)) => Some(PathBuf::from(r)),
        _ if from_config.is_empty() => None,
        _ => Some(PathBuf::from(from_config)),
    }
}

/// `2025-01-31` (UTC midnight), `2025-01-31T08:30` (UTC) or Unix milliseconds.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M") {
        return Ok(t.and_utc().timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").with_context(|| {
        format!("`{s}` is not a time: write YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC) or Unix ms")
    })?;
    Ok(d.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis())
}

fn interval(s: &str) -> anyhow::Result<(Interval, i64)> {
    let i = Interval::from_str(s).map_err(|e| anyhow::anyhow!("--interval {s}: {e}"))?;
    let len = i
        .duration_ms()
        .with_context(|| format!("--interval {s}: monthly klines have no fixed length"))?;
    Ok((i, len))
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// Local configuration file (exchange and store; SHARDBOT_CONFIG works too).
    #[arg(long, env = "SHARDBOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Kline interval, as Bybit names it: 1 3 5 15 30 60 120 240 360 720 D W.
    #[arg(long)]
    interval: String,
    /// Symbols, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "all")]
    symbols: Vec<String>,
    /// Every USDT perpetual the exchange lists.
    #[arg(long, conflicts_with = "symbols")]
    all: bool,
    /// First bar: YYYY-MM-DD (UTC) or Unix ms.
    #[arg(long)]
    from: String,
    /// Last bar (default: now).
    #[arg(long)]
    to: Option<String>,
    /// The history store folder (default: market_data.store_dir).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// This command's share of Bybit's IP limit (requests / 5 s).
    #[arg(long, default_value = "100")]
    ip_requests_per_5s: u32,
    /// Symbols fetched at once.
    #[arg(long, default_value = "4")]
    concurrency: usize,
}

pub fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let mut exchange: ExchangeSettings = settings.section("exchange")?;
    exchange.ip_requests_per_5s = args.ip_requests_per_5s;
    let client = exchange.client(None).context("the exchange client")?;
    let store = store(args.config.as_deref(), args.store.as_ref())?;
    let (iv, len) = interval(&args.interval)?;
    let from = parse_time(&args.from)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        client
            .sync_time()
            .await
            .context("cannot reach the exchange")?;
        let now = client.clock().now_ms();
        let to = args
            .to
            .as_deref()
            .map(parse_time)
            .transpose()?
            .unwrap_or(now);
        // The last bar that has closed by `to`.
        let to = (to.min(now) - len).div_euclid(len) * len;
        if to < from {
            bail!("nothing to download: --from is after the last closed bar");
        }
        let symbols: Vec<String> = if args.all {
            client
                .usdt_perpetuals()
                .await?
                .into_iter()
                .map(|i| i.symbol)
                .collect()
        } else {
            args.symbols.clone()
        };
        let symbols: Vec<Symbol> = symbols
            .iter()
            .map(|s| Symbol::new(s).map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<anyhow::Result<_>>()?;
        let per = ((to - from) / len + 1) as u64;
        let bar = ProgressBar::new(per * symbols.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} bars ({per_sec}, eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for sym in symbols {
            let (client, store, bar, sem) =
                (client.clone(), store.clone(), bar.clone(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire().await;
                let r = fetch_symbol(&client, &store, &sym, iv, len, from, to, &bar).await;
                (sym, r)
            });
        }
        let (mut written, mut failed) = (0usize, Vec::new());
        while let Some(j) = tasks.join_next().await {
            match j {
                Ok((_, Ok(n))) => written += n,
                Ok((sym, Err(e))) => {
                    bar.println(format!("{sym}: {e:#}"));
                    failed.push(sym.to_string());
                }
                Err(e) => failed.push(format!("a task: {e}")),
            }
        }
        bar.finish_with_message("done");
        println!(
            "{written} new bars in {} ({}); run it again to resume or extend",
            store.root().display(),
            iv.as_str()
        );
        if !failed.is_empty() {
            bail!("{} symbol(s) failed: {}", failed.len(), failed.join(", "));
        }
        Ok(())
    })
}

/// One symbol: the bars missing before the stored ones, then after them, in chunks of
/// 10,000 bars each written before the next is fetched (an interrupted download keeps
/// what it got).
#[allow(clippy::too_many_arguments)]
async fn fetch_symbol(
    client: &shardbot_bybit::rest::BybitClient,
    store: &HistoryStore,
    sym: &Symbol,
    iv: Interval,
    len: i64,
    from: i64,
    to: i64,
    bar: &ProgressBar,
) -> anyhow::Result<usize> {
    let stored = store.read(sym, iv, None, None, None)?;
    let (first, last) = (
        stored.first().map(|b| b.open_time_ms),
        stored.last().map(|b| b.open_time_ms),
    );
    let have = stored
        .iter()
        .filter(|b| b.open_time_ms >= from && b.open_time_ms <= to)
        .count() as u64;
    bar.inc(have);
    let mut gaps = Vec::new();
    match (first, last) {
        (Some(f), Some(l)) => {
            if from < f {
                gaps.push((from, (f - len).min(to)));
            }
            if to > l {
                gaps.push(((l + len).max(from), to));
            }
        }
        _ => gaps.push((from, to)),
    }
    let chunk = 10_000 * len;
    let mut written = 0;
    for (a, b) in gaps {
        let mut start = a;
        while start <= b {
            let end = (start + chunk - len).min(b);
            let klines = client
                .closed_klines(sym.as_str(), iv, start, end)
                .await
                .with_context(|| format!("klines {start}..{end}"))?;
            let bars: Vec<Bar> = klines.iter().map(|k| k.to_bar(sym, iv)).collect();
            written += store.merge(&bars)?;
            bar.inc(((end - start) / len + 1) as u64);
            start = end + len;
        }
    }
    Ok(written)
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Local configuration file (for the store folder).
    #[arg(long, env = "SHARDBOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The interval the files hold.
    #[arg(long)]
    interval: String,
    /// The history store folder (default: market_data.store_dir).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Kline CSV files (open_time_ms,open,high,low,close,volume; the symbol is the file
    /// name), or folders of them.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let store = store(args.config.as_deref(), args.store.as_ref())?;
    let (iv, len) = interval(&args.interval)?;
    let mut files = Vec::new();
    for f in &args.files {
        if f.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(f.clone());
        }
    }
    let mut total = 0;
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sym = Symbol::new(&stem).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let mut bars = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || (n == 0 && line.starts_with("open_time")) {
                continue;
            }
            let v: Vec<&str> = line.split(',').map(str::trim).collect();
            let bad = |what: &str| anyhow::anyhow!("{} line {}: {what}", f.display(), n + 1);
            if v.len() < 6 {
                return Err(bad("expected open_time_ms,open,high,low,close,volume"));
            }
            let t: i64 = v[0]
                .parse()
                .map_err(|_| bad("open_time_ms is not an integer"))?;
            if t.rem_euclid(len) != 0 {
                return Err(bad(&format!(
                    "open time {t} is not on the {} grid",
                    iv.as_str()
                )));
            }
            // Decimals straight from the text: nothing is rounded on the way in.
            let d = |i: usize| {
                Decimal::from_str(v[i])
                    .or_else(|_| Decimal::from_scientific(v[i]))
                    .map_err(|_| bad(&format!("`{}` is not a number", v[i])))
            };
            bars.push(Bar {
                symbol: sym.clone(),
                interval: iv,
                open_time_ms: t,
                open: d(1)?,
                high: d(2)?,
                low: d(3)?,
                close: d(4)?,
                volume: d(5)?,
                turnover: if v.len() > 6 { d(6)? } else { Decimal::ZERO },
                published_ms: None,
                stamps: Default::default(),
            });
        }
        let n = store.merge(&bars)?;
        println!("{}: {} bars, {n} new", f.display(), bars.len());
        total += n;
    }
    println!("{total} new bars in {}", store.root().display());
    Ok(())
}

/// The series of a `store:<interval>[:SYM,SYM]` query.
pub fn store_series(
    config: Option<&std::path::Path>,
    query: &str,
) -> anyhow::Result<Vec<shardbot_backtest::Series>> {
    let store = store(config, None)?;
    let (iv, syms) = query.split_once(':').unwrap_or((query, ""));
    let (iv, _) = interval(iv)?;
    let symbols: Vec<Symbol> = if syms.is_empty() {
        store.symbols(iv)?
    } else {
        syms.split(',')
            .map(|s| Symbol::new(s.trim()).map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<anyhow::Result<_>>()?
    };
    if symbols.is_empty() {
        bail!(
            "the history store {} has no {} klines (shardbot download / import first)",
            store.root().display(),
            iv.as_str()
        );
    }
    symbols
        .iter()
        .map(|s| {
            let bars = store.read(s, iv, None, None, None)?;
            if bars.is_empty() {
                bail!("the history store has no {} klines of {s}", iv.as_str());
            }
            Ok(shardbot_backtest::Series::from_bars(s.as_str(), &bars))
        })
        .collect()
}

#[cfg(test)]
mod time_tests {
    #![allow(clippy::unwrap_used)]
    use super::parse_time;

    #[test]
    fn times_parse_as_dates_minutes_or_milliseconds() {
        assert_eq!(parse_time("2026-12-01").unwrap(), 1_796_083_200_000);
        assert_eq!(parse_time("2026-12-01T00:05").unwrap(), 1_796_083_500_000);
        assert_eq!(parse_time("1796083200000").unwrap(), 1_796_083_200_000);
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .to_string()
                .contains("not a time")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::the_running_stacks(
        false,
        Some("/run/x/history\n"),
        "var/history",
        Some("/run/x/history")
    )]
    #[case::none_recorded(false, None, "var/history", Some("var/history"))]
    #[case::a_blank_record(false, Some(" \n"), "var/history", Some("var/history"))]
    #[case::configured_wins(true, Some("/run/x/history"), "/data/h", Some("/data/h"))]
    #[case::no_store(true, Some("/run/x/history"), "", None)]
    fn the_store_a_command_uses(
        #[case] configured: bool,
        #[case] recorded: Option<&str>,
        #[case] from_config: &str,
        #[case] want: Option<&str>,
    ) {
        assert_eq!(
            store_dir(configured, recorded, from_config),
            want.map(PathBuf::from)
        );
    }
}
