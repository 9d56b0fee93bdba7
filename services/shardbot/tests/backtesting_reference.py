"""The independent reference for the backtester's money: backtesting.py (PyPI `backtesting`,
kernc/backtesting.py, not written by this project) runs an SMA fast/slow stop-and-reverse,
all in, on a kline CSV, and prints its trades as JSON.

python3 backtesting_reference.py <kline csv> <rows> <fast> <slow> <cash> <commission>

The run is the plain one other backtesters make: `FractionalBacktest` (sizes in 1e-8 units
of the coin), `exclusive_orders=True` (an opposite signal closes the open trade first, then
enters with the whole margin available after that close), `trade_on_close=False` (market
orders fill at the next bar's open), no spread, commission on both fills. A trade still
open when the data ends is left out (backtesting.py's `finalize_trades` would close it at
the last bar's open, shardbot closes it at the last close).

The signal is written out here rather than with backtesting.lib.crossover, to be the one
trend_following states: "fast above slow" is `fast > slow`, and a cross is a change of it
from one bar to the next (the first bar with both averages only sets it).
"""

import json
import sys
import warnings

import numpy as np
import pandas as pd
from backtesting import Strategy
from backtesting.lib import FractionalBacktest

path, rows, fast, slow, cash, commission = sys.argv[1:7]
rows, fast, slow = int(rows), int(fast), int(slow)
cash, commission = float(cash), float(commission)

df = pd.read_csv(path, nrows=rows if rows > 0 else None)
times = df["open_time_ms"].to_numpy()
df.index = pd.to_datetime(df["open_time_ms"], unit="ms")
df = df.rename(
    columns={"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume"}
)[["Open", "High", "Low", "Close", "Volume"]]


def sma(values, n):
    return pd.Series(values).rolling(n).mean().to_numpy()


class SmaCross(Strategy):
    def init(self):
        self.fast = self.I(sma, self.data.Close, fast)
        self.slow = self.I(sma, self.data.Close, slow)
        self.above = None

    def next(self):
        # backtesting.py calls next() from the bar after the first with every indicator
        # defined: that first bar sets "above" here.
        if self.above is None and len(self.fast) >= 2:
            f0, s0 = self.fast[-2], self.slow[-2]
            if not (np.isnan(f0) or np.isnan(s0)):
                self.above = bool(f0 > s0)
        f, s = self.fast[-1], self.slow[-1]
        if np.isnan(f) or np.isnan(s):
            return
        above = bool(f > s)
        crossed = self.above is not None and self.above != above
        self.above = above
        if not crossed:
            return
        if above:
            self.buy()
        else:
            self.sell()


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    bt = FractionalBacktest(
        df,
        SmaCross,
        cash=cash,
        commission=commission,
        exclusive_orders=True,
        trade_on_close=False,
        finalize_trades=False,
    )
    stats = bt.run()

trades = []
for t in stats["_trades"].itertuples():
    trades.append(
        {
            "side": "Buy" if t.Size > 0 else "Sell",
            "qty": abs(float(t.Size)),
            "entry_time_ms": int(times[t.EntryBar]),
            "exit_time_ms": int(times[t.ExitBar]),
            "entry_price": float(t.EntryPrice),
            "exit_price": float(t.ExitPrice),
            "pnl": float(t.PnL),
            "commission": float(t.Commission),
        }
    )
print(json.dumps({"final_equity": float(stats["Equity Final [$]"]), "trades": trades}))
