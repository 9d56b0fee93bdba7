//! The built-in strategies on constructed and real bars, their parameters, and the
//! optimized-parameters file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use rstest::rstest;
use shardbot_strategy::{
    BuildError, Candle, Direction, Holding, MeanReversion, OptimizedFile, ParamError, ParamStatus,
    Params, Signal, Strategy, TrendFollowing, Value, build,
};

fn candle(i: usize, close: f64) -> Candle {
    Candle {
        open_time_ms: i as i64 * 300_000,
        open: close,
        high: close * 1.001,
        low: close * 0.999,
        close,
        volume: 1.0,
    }
}

/// Falls for 40 bars, then rises for 40: one bullish cross.
fn v_shape() -> Vec<Candle> {
    (0..80)
        .map(|i| {
            candle(
                i,
                if i < 40 {
                    200.0 - i as f64
                } else {
                    160.0 + 2.0 * (i - 40) as f64
                },
            )
        })
        .collect()
}

fn signals(s: &mut dyn Strategy, bars: &[Candle], position: Holding) -> Vec<(usize, Vec<Signal>)> {
    bars.iter()
        .enumerate()
        .map(|(i, c)| (i, s.on_bar(c, position).to_vec()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

#[test]
fn trend_following_enters_on_the_cross_with_its_stops() {
    let mut tf = TrendFollowing::new(&Params::new()).unwrap();
    let got = signals(&mut tf, &v_shape(), Holding::Flat);
    assert_eq!(got.len(), 1, "{got:?}");
    let (i, sig) = &got[0];
    assert!(*i > 40 && *i < 60);
    let close = v_shape()[*i].close;
    match sig[0] {
        Signal::Enter {
            direction: Direction::Long,
            stop_loss: Some(sl),
            take_profit: Some(tp),
        } => {
            assert!((sl - close * 0.98).abs() < 1e-9 && (tp - close * 1.04).abs() < 1e-9);
        }
        other => panic!("{other:?}"),
    }
}

#[rstest]
#[case(true, Holding::Short, 2)]
#[case(false, Holding::Short, 1)]
#[case(true, Holding::Long, 0)]
fn an_opposite_cross_exits_and_reverses_if_asked(
    #[case] sar: bool,
    #[case] held: Holding,
    #[case] n: usize,
) {
    let mut tf =
        TrendFollowing::new(&Params::new().with("stop_and_reverse", Value::Bool(sar))).unwrap();
    let got = signals(&mut tf, &v_shape(), held);
    let all: Vec<Signal> = got.into_iter().flat_map(|(_, v)| v).collect();
    assert_eq!(all.len(), n, "{all:?}");
    if n >= 1 {
        assert_eq!(all[0], Signal::Exit, "the exit comes first");
    }
    if n == 2 {
        assert!(matches!(
            all[1],
            Signal::Enter {
                direction: Direction::Long,
                ..
            }
        ));
    }
}

#[test]
fn mean_reversion_fades_a_drop_and_exits_at_the_mean() {
    // Calm around 100, a sharp drop, then a return.
    let mut closes: Vec<f64> = (0..40)
        .map(|i| 100.0 + if i % 2 == 0 { 0.3 } else { -0.3 })
        .collect();
    closes.extend([97.0, 94.0, 91.0, 95.0, 99.0, 101.0, 101.0]);
    let bars: Vec<Candle> = closes
        .iter()
        .enumerate()
        .map(|(i, c)| candle(i, *c))
        .collect();
    let mut mr = MeanReversion::new(&Params::new()).unwrap();
    let mut position = Holding::Flat;
    let mut log = Vec::new();
    for (i, c) in bars.iter().enumerate() {
        for s in mr.on_bar(c, position) {
            log.push((i, s));
            position = position.after(&s);
        }
    }
    assert!(
        matches!(
            log[0],
            (
                40..=42,
                Signal::Enter {
                    direction: Direction::Long,
                    stop_loss: Some(_),
                    take_profit: None
                }
            )
        ),
        "{log:?}"
    );
    assert!(matches!(log[1], (43..=46, Signal::Exit)), "{log:?}");
}

#[test]
fn the_same_bars_give_the_same_signals_and_reset_starts_over() {
    let data = real_bars(3000);
    for name in ["trend_following", "mean_reversion"] {
        let mut a = build(name, &Params::new()).unwrap();
        let first = trade(a.as_mut(), &data);
        assert!(
            first.len() > 5,
            "{name} trades on real data: {}",
            first.len()
        );
        a.reset();
        assert_eq!(trade(a.as_mut(), &data), first, "{name} after reset");
        let mut b = build(name, &Params::new()).unwrap();
        assert_eq!(
            trade(b.as_mut(), &data),
            first,
            "{name} in another instance"
        );
        // nothing before the warm-up
        assert!(
            first.iter().all(|(i, _)| *i >= b.warmup_bars() - 1),
            "{name}"
        );
    }
}

/// Runs a strategy with the position its own signals imply; returns (bar, signal).
fn trade(s: &mut dyn Strategy, bars: &[Candle]) -> Vec<(usize, Signal)> {
    let mut position = Holding::Flat;
    let mut out = Vec::new();
    for (i, c) in bars.iter().enumerate() {
        for sig in s.on_bar(c, position) {
            position = position.after(&sig);
            out.push((i, sig));
        }
    }
    out
}

fn real_bars(n: usize) -> Vec<Candle> {
    let path = shardbot_testdata::klines("bybit_linear_5m/ETHUSDT.csv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .take(n)
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            Candle {
                open_time_ms: f[0] as i64,
                open: f[1],
                high: f[2],
                low: f[3],
                close: f[4],
                volume: f[5],
            }
        })
        .collect()
}

#[rstest]
#[case("fast=7", Ok(("fast", Value::Int(7))))]
#[case("sl_pct=1.5", Ok(("sl_pct", Value::Float(1.5))))]
#[case("stop_and_reverse=false", Ok(("stop_and_reverse", Value::Bool(false))))]
#[case("fast=seven", Err("must be a whole number"))]
#[case("speed=3", Err("has no parameter `speed`"))]
fn command_line_assignments_are_typed_by_the_schema(
    #[case] text: &str,
    #[case] want: Result<(&str, Value), &str>,
) {
    let got = Params::parse_assignment(TrendFollowing::NAME, TrendFollowing::SCHEMA, text);
    match (got, want) {
        (Ok((n, v)), Ok((wn, wv))) => assert_eq!((n.as_str(), v), (wn, wv)),
        (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e}"),
        (g, w) => panic!("{g:?} vs {w:?}"),
    }
}

#[test]
fn bad_parameters_are_refused_with_the_reason() {
    let e = TrendFollowing::new(&Params::new().with("fast", Value::Int(40))).unwrap_err();
    assert!(e.to_string().contains("must be less than slow (30)"), "{e}");
    let e = TrendFollowing::new(&Params::new().with("slow", Value::Int(1000))).unwrap_err();
    assert!(matches!(e, ParamError::Invalid { name: "slow", .. }), "{e}");
    let e = MeanReversion::new(&Params::new().with("rsi_low", Value::Bool(true))).unwrap_err();
    assert!(e.to_string().contains("must be a number"), "{e}");
    assert!(matches!(
        build("scalper", &Params::new()),
        Err(BuildError::Unknown(_))
    ));
}

#[test]
fn the_parameters_file_gives_per_symbol_values_and_says_where_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimized_parameters.json");
    std::fs::write(
        &path,
        r#"{"trend_following": {"optimized_at": "2026-11-20T12:00:00Z", "objective": "sharpe",
            "data_range": {"interval": "5"}, "metrics": {"sharpe": 1.4},
            "params": {"fast": 8, "slow": 34}, "symbols": {"BTCUSDT": {"fast": 12}}}}"#,
    )
    .unwrap();
    let file = OptimizedFile::load(&path).unwrap();
    let (p, status) = file.params_for("trend_following", "BTCUSDT");
    assert_eq!(
        (
            p.int(TrendFollowing::SCHEMA, "fast"),
            p.int(TrendFollowing::SCHEMA, "slow")
        ),
        (12, 34)
    );
    assert_eq!(
        status.to_string(),
        "optimized ✓ 2026-11-20T12:00:00Z (sharpe, per symbol)"
    );
    let (p, status) = file.params_for("trend_following", "ETHUSDT");
    assert_eq!(p.int(TrendFollowing::SCHEMA, "fast"), 8);
    assert!(matches!(
        status,
        ParamStatus::Optimized {
            per_symbol: false,
            ..
        }
    ));
    let (p, status) = file.params_for("mean_reversion", "ETHUSDT");
    assert_eq!(
        (p, status.to_string()),
        (Params::new(), "defaults (not optimized)".to_owned())
    );
    // a missing file: everything on defaults
    let none = OptimizedFile::load(&dir.path().join("absent.json")).unwrap();
    assert_eq!(
        none.params_for("trend_following", "BTCUSDT").1,
        ParamStatus::Defaults
    );
}

#[rstest]
#[case(
    r#"{"trend_following": {"optimized_at": "x", "objective": "sharpe", "params": {"fast": 0}}}"#,
    "trend_following.fast"
)]
#[case(
    r#"{"scalper": {"optimized_at": "x", "objective": "sharpe", "params": {}}}"#,
    "unknown strategy `scalper`"
)]
#[case(
    r#"{"trend_following": {"objective": "sharpe", "params": {}}}"#,
    "optimized_at"
)]
#[case("not json", "not a valid parameters file")]
fn a_bad_parameters_file_names_what_is_wrong(#[case] content: &str, #[case] names: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimized_parameters.json");
    std::fs::write(&path, content).unwrap();
    let e = OptimizedFile::load(&path).unwrap_err().to_string();
    assert!(
        e.contains(names) && e.contains("optimized_parameters.json"),
        "{e}"
    );
}
