"""Reference values from TA-Lib itself for the indicator test.

python3 talib_reference.py <kline csv> <rows>  ->  JSON {series name: [value or null, ...]}
"""

import csv
import json
import math
import sys

import numpy as np
import talib

path, rows = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    data = list(csv.DictReader(f))[:rows]
o, h, l, c = (np.array([float(r[k]) for r in data]) for k in ("open", "high", "low", "close"))

out = {
    "sma_10": talib.SMA(c, 10),
    "sma_30": talib.SMA(c, 30),
    "ema_12": talib.EMA(c, 12),
    "ema_26": talib.EMA(c, 26),
    "rsi_14": talib.RSI(c, 14),
    "atr_14": talib.ATR(h, l, c, 14),
}
out["bb_upper_20_2"], out["bb_middle_20_2"], out["bb_lower_20_2"] = talib.BBANDS(c, 20, 2.0, 2.0, 0)
out["macd_12_26_9"], out["macd_signal_12_26_9"], out["macd_hist_12_26_9"] = talib.MACD(c, 12, 26, 9)
print(json.dumps({k: [None if math.isnan(x) else x for x in v.tolist()] for k, v in out.items()}))
