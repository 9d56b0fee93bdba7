//! RSI + Bollinger mean reversion: fade the extremes, exit at the mean or by the stop.

use shardbot_indicators::{Bollinger, Rsi};

use crate::{
    Candle, Direction, Holding, ParamError, Params, Signal, Signals, Spec, Strategy, offset,
    params::Kind, signals,
};

/// Long when the close is below the lower band with RSI under `rsi_low`; short when above
/// the upper band with RSI over `rsi_high`. A long exits when the close reaches the middle
/// band (the mean), a short likewise; the exchange-side stop covers the rest.
#[derive(Debug, Clone)]
pub struct MeanReversion {
    rsi: Rsi,
    bb: Bollinger,
    rsi_low: f64,
    rsi_high: f64,
    sl_pct: f64,
    warmup: usize,
}

impl MeanReversion {
    pub const NAME: &'static str = "mean_reversion";
    pub const SCHEMA: &'static [Spec] = &[
        Spec {
            name: "rsi_period",
            kind: Kind::Int {
                min: 2,
                max: 100,
                default: 14,
            },
            help: "RSI period (bars)",
        },
        Spec {
            name: "rsi_low",
            kind: Kind::Float {
                min: 1.0,
                max: 50.0,
                default: 30.0,
            },
            help: "enter long below this RSI",
        },
        Spec {
            name: "rsi_high",
            kind: Kind::Float {
                min: 50.0,
                max: 99.0,
                default: 70.0,
            },
            help: "enter short above this RSI",
        },
        Spec {
            name: "bb_period",
            kind: Kind::Int {
                min: 2,
                max: 200,
                default: 20,
            },
            help: "Bollinger period (bars)",
        },
        Spec {
            name: "bb_k",
            kind: Kind::Float {
                min: 0.5,
                max: 5.0,
                default: 2.0,
            },
            help: "Bollinger width, standard deviations",
        },
        Spec {
            name: "sl_pct",
            kind: Kind::Float {
                min: 0.0,
                max: 50.0,
                default: 3.0,
            },
            help: "exchange-side stop-loss distance, % of entry (0 = none)",
        },
    ];

    pub fn new(params: &Params) -> Result<MeanReversion, ParamError> {
        params.validate(Self::NAME, Self::SCHEMA)?;
        let s = Self::SCHEMA;
        let (rsi_period, bb_period) = (
            params.int(s, "rsi_period") as usize,
            params.int(s, "bb_period") as usize,
        );
        Ok(MeanReversion {
            rsi: Rsi::new(rsi_period),
            bb: Bollinger::new(bb_period, params.float(s, "bb_k")),
            rsi_low: params.float(s, "rsi_low"),
            rsi_high: params.float(s, "rsi_high"),
            sl_pct: params.float(s, "sl_pct"),
            warmup: (rsi_period + 1).max(bb_period),
        })
    }
}

impl Strategy for MeanReversion {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn warmup_bars(&self) -> usize {
        self.warmup
    }

    fn on_bar(&mut self, c: &Candle, position: Holding) -> Signals {
        // Both indicators take every bar; their values are worked out only where the rules
        // read them: a position needs the middle band, a flat symbol the RSI first and a
        // band only at an extreme.
        let (rsi_ready, bb_ready) = (self.rsi.push(c.close), self.bb.push(c.close));
        if !(rsi_ready && bb_ready) {
            return Signals::new();
        }
        let beyond = || -> Option<Direction> {
            let r = self.rsi.value()?;
            if r < self.rsi_low {
                (c.close < self.bb.value()?.lower).then_some(Direction::Long)
            } else if r > self.rsi_high {
                (c.close > self.bb.value()?.upper).then_some(Direction::Short)
            } else {
                None
            }
        };
        let middle = || self.bb.middle();
        match position {
            Holding::Long if middle().is_some_and(|m| c.close >= m) => signals![Signal::Exit],
            Holding::Short if middle().is_some_and(|m| c.close <= m) => signals![Signal::Exit],
            Holding::Flat => match beyond() {
                Some(direction) => signals![Signal::Enter {
                    direction,
                    stop_loss: offset(c.close, self.sl_pct, direction == Direction::Short),
                    take_profit: None,
                }],
                None => Signals::new(),
            },
            _ => Signals::new(),
        }
    }

    fn reset(&mut self) {
        self.rsi.reset();
        self.bb.reset();
    }
}
