//! `shardbot indicators --data <csv>`: every indicator series of a kline file, for checking
//! a strategy by eye and for comparing with TA-Lib reproducibly.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::PathBuf,
};

use anyhow::{Context, bail};
use clap::Args;
use shardbot_indicators::{Atr, Bollinger, Ema, Macd, Rsi, Sma};

const DEFAULT: &str =
    "sma_10,sma_20,sma_30,ema_10,ema_12,ema_20,ema_26,rsi_14,bb_20_2,atr_14,macd_12_26_9";

#[derive(Args, Debug)]
#[command(
    after_help = "Specs: sma_N, ema_N, rsi_N, atr_N, bb_N_K (columns bb_upper_N_K, \
    bb_middle_N_K, bb_lower_N_K), macd_F_S_G (columns macd_F_S_G, macd_signal_F_S_G, \
    macd_hist_F_S_G). A column name such as bb_upper_20_2 selects its whole indicator. \
    Values follow TA-Lib's conventions; cells are empty while an indicator warms up."
)]
pub struct IndicatorsArgs {
    /// Kline CSV: open_time_ms,open,high,low,close,volume (the format of common/testdata/klines).
    #[arg(long, value_name = "CSV")]
    data: PathBuf,
    /// Write here instead of standard output.
    #[arg(long, value_name = "CSV")]
    out: Option<PathBuf>,
    /// Comma-separated indicator specs (default: the 15 standard columns).
    #[arg(long, value_delimiter = ',', value_name = "SPECS")]
    only: Vec<String>,
}

/// One indicator and the columns it writes.
enum Series {
    Sma(Sma, String),
    Ema(Ema, String),
    Rsi(Rsi, String),
    Atr(Atr, String),
    Bb(Bollinger, [String; 3]),
    Macd(Macd, [String; 3]),
}

fn parse_spec(spec: &str) -> anyhow::Result<Series> {
    let parts: Vec<&str> = spec.trim().split('_').collect();
    let bad = || anyhow::anyhow!("unknown indicator spec `{spec}` (see --help for the forms)");
    let n = |s: &str| s.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(bad);
    Ok(match parts.as_slice() {
        ["sma", p] => Series::Sma(Sma::new(n(p)?), format!("sma_{p}")),
        ["ema", p] => Series::Ema(Ema::new(n(p)?), format!("ema_{p}")),
        ["rsi", p] => Series::Rsi(Rsi::new(n(p)?), format!("rsi_{p}")),
        ["atr", p] => Series::Atr(Atr::new(n(p)?), format!("atr_{p}")),
        ["bb", p, k] | ["bb", "upper" | "middle" | "lower", p, k] => {
            let width: f64 = k.parse().map_err(|_| bad())?;
            Series::Bb(
                Bollinger::new(n(p)?, width),
                ["upper", "middle", "lower"].map(|b| format!("bb_{b}_{p}_{k}")),
            )
        }
        ["macd", f, s, g] | ["macd", "signal" | "hist", f, s, g] => Series::Macd(
            Macd::new(n(f)?, n(s)?, n(g)?),
            [
                format!("macd_{f}_{s}_{g}"),
                format!("macd_signal_{f}_{s}_{g}"),
                format!("macd_hist_{f}_{s}_{g}"),
            ],
        ),
        _ => return Err(bad()),
    })
}

fn cell(v: Option<f64>) -> String {
    // Rust prints the shortest decimal that reads back as the same f64: full precision.
    v.map(|x| x.to_string()).unwrap_or_default()
}

pub fn run(args: IndicatorsArgs) -> anyhow::Result<()> {
    let specs: Vec<String> = if args.only.is_empty() {
        DEFAULT.split(',').map(str::to_owned).collect()
    } else {
        args.only.clone()
    };
    let mut series = Vec::new();
    let mut header = vec!["open_time_ms".to_owned()];
    for spec in &specs {
        let s = parse_spec(spec)?;
        let cols: Vec<String> = match &s {
            Series::Sma(_, c) | Series::Ema(_, c) | Series::Rsi(_, c) | Series::Atr(_, c) => {
                vec![c.clone()]
            }
            Series::Bb(_, c) | Series::Macd(_, c) => c.to_vec(),
        };
        if cols.iter().any(|c| header.contains(c)) {
            continue; // `bb_upper_20_2,bb_lower_20_2` is one indicator
        }
        header.extend(cols);
        series.push(s);
    }
    let input =
        File::open(&args.data).with_context(|| format!("cannot open {}", args.data.display()))?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    writeln!(out, "{}", header.join(","))?;
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", args.data.display()))?;
        if n == 0 && line.starts_with("open_time") {
            continue;
        }
        let where_ = || format!("{}:{}", args.data.display(), n + 1);
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() < 5 {
            bail!(
                "{}: expected open_time_ms,open,high,low,close,volume, got `{line}`",
                where_()
            );
        }
        let num = |i: usize| {
            f[i].parse::<f64>()
                .with_context(|| format!("{}: `{}` is not a number", where_(), f[i]))
        };
        let (t, h, l, c) = (f[0], num(2)?, num(3)?, num(4)?);
        let mut row = vec![t.to_owned()];
        for s in &mut series {
            match s {
                Series::Sma(x, _) => row.push(cell(x.update(c))),
                Series::Ema(x, _) => row.push(cell(x.update(c))),
                Series::Rsi(x, _) => row.push(cell(x.update(c))),
                Series::Atr(x, _) => row.push(cell(x.update(h, l, c))),
                Series::Bb(x, _) => {
                    let b = x.update(c);
                    row.extend(
                        [b.map(|b| b.upper), b.map(|b| b.middle), b.map(|b| b.lower)].map(cell),
                    );
                }
                Series::Macd(x, _) => {
                    let m = x.update(c);
                    row.extend(
                        [
                            m.map(|m| m.macd),
                            m.map(|m| m.signal),
                            m.map(|m| m.histogram),
                        ]
                        .map(cell),
                    );
                }
            }
        }
        writeln!(out, "{}", row.join(","))?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_expand_to_their_columns() {
        assert!(matches!(parse_spec("sma_50"), Ok(Series::Sma(_, c)) if c == "sma_50"));
        assert!(
            matches!(parse_spec("bb_upper_20_2.5"), Ok(Series::Bb(_, c)) if c[2] == "bb_lower_20_2.5")
        );
        assert!(
            matches!(parse_spec("macd_signal_8_21_5"), Ok(Series::Macd(_, c)) if c[0] == "macd_8_21_5")
        );
        for bad in ["sma", "sma_0", "wma_10", "bb_20", "macd_1_2"] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }
}
