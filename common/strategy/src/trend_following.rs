//! Moving-average crossover, long and short, with optional stop-and-reverse.

use shardbot_indicators::Sma;

use crate::{
    Candle, Direction, Holding, ParamError, Params, Signal, Signals, Spec, Strategy, offset,
    params::Kind, signals,
};

/// Fast SMA crossing above the slow SMA is bullish, below bearish. On a bullish cross a
/// short position is exited (and, with `stop_and_reverse`, a long one entered; without, a
/// long is entered only from flat); symmetrically for a bearish cross.
#[derive(Debug, Clone)]
pub struct TrendFollowing {
    fast: Sma,
    slow: Sma,
    /// Whether fast was above slow on the previous bar.
    above: Option<bool>,
    stop_and_reverse: bool,
    sl_pct: f64,
    tp_pct: f64,
    slow_period: usize,
}

impl TrendFollowing {
    pub const NAME: &'static str = "trend_following";
    pub const SCHEMA: &'static [Spec] = &[
        Spec {
            name: "fast",
            kind: Kind::Int {
                min: 2,
                max: 100,
                default: 10,
            },
            help: "fast SMA period (bars)",
        },
        Spec {
            name: "slow",
            kind: Kind::Int {
                min: 3,
                max: 400,
                default: 30,
            },
            help: "slow SMA period (bars); must exceed fast",
        },
        Spec {
            name: "stop_and_reverse",
            kind: Kind::Bool { default: true },
            help: "on an opposite cross, exit and enter the other way",
        },
        Spec {
            name: "sl_pct",
            kind: Kind::Float {
                min: 0.0,
                max: 50.0,
                default: 2.0,
            },
            help: "exchange-side stop-loss distance, % of entry (0 = none)",
        },
        Spec {
            name: "tp_pct",
            kind: Kind::Float {
                min: 0.0,
                max: 100.0,
                default: 4.0,
            },
            help: "exchange-side take-profit distance, % of entry (0 = none)",
        },
    ];

    pub fn new(params: &Params) -> Result<TrendFollowing, ParamError> {
        params.validate(Self::NAME, Self::SCHEMA)?;
        let s = Self::SCHEMA;
        let (fast, slow) = (params.int(s, "fast"), params.int(s, "slow"));
        if fast >= slow {
            return Err(ParamError::Invalid {
                strategy: Self::NAME,
                name: "fast",
                value: fast.to_string(),
                why: format!("must be less than slow ({slow})"),
            });
        }
        Ok(TrendFollowing {
            fast: Sma::new(fast as usize),
            slow: Sma::new(slow as usize),
            above: None,
            stop_and_reverse: params.bool(s, "stop_and_reverse"),
            sl_pct: params.float(s, "sl_pct"),
            tp_pct: params.float(s, "tp_pct"),
            slow_period: slow as usize,
        })
    }

    fn enter(&self, direction: Direction, price: f64) -> Signal {
        let long = direction == Direction::Long;
        Signal::Enter {
            direction,
            stop_loss: offset(price, self.sl_pct, !long),
            take_profit: offset(price, self.tp_pct, long),
        }
    }
}

impl Strategy for TrendFollowing {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn warmup_bars(&self) -> usize {
        // the slow average, plus one bar to see a cross
        self.slow_period + 1
    }

    fn on_bar(&mut self, c: &Candle, position: Holding) -> Signals {
        let (Some(f), Some(s)) = (self.fast.update(c.close), self.slow.update(c.close)) else {
            return Signals::new();
        };
        let above = f > s;
        let crossed = self.above.is_some_and(|was| was != above);
        self.above = Some(above);
        if !crossed {
            return Signals::new();
        }
        let (want, against) = if above {
            (Direction::Long, Holding::Short)
        } else {
            (Direction::Short, Holding::Long)
        };
        match position {
            p if p == against && self.stop_and_reverse => {
                signals![Signal::Exit, self.enter(want, c.close)]
            }
            p if p == against => signals![Signal::Exit],
            Holding::Flat => signals![self.enter(want, c.close)],
            _ => Signals::new(),
        }
    }

    fn reset(&mut self) {
        self.fast.reset();
        self.slow.reset();
        self.above = None;
    }
}
