"""Bybit's official Python SDK (pybit) against bybit-sim, unchanged except for the base URL.

Run by tests/pybit.rs: python3 pybit_compat.py <http base url> <api key> <api secret>.
Exits non-zero with the reason on the first failure.
"""

import faulthandler
import os
import sys
import threading
import time
from decimal import Decimal, ROUND_UP

import pybit.unified_trading as ut
from pybit.unified_trading import HTTP, WebSocket

base, key, secret = sys.argv[1], sys.argv[2], sys.argv[3]


# A hang (once in CI, under load, with no output) must say where it is: every thread's
# stack is printed and the script exits before tests/pybit.rs gives up on it (180 s).
faulthandler.dump_traceback_later(150, exit=True)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr, flush=True)
        # os._exit: sys.exit would wait for pybit's WebSocket threads, which never end.
        os._exit(1)


def progress(what):
    print(f"step: {what}", file=sys.stderr, flush=True)


session = HTTP(testnet=False, api_key=key, api_secret=secret)
session.endpoint = base  # the only change: the base URL

# Instruments, every page.
progress("instruments")
symbols, cursor = [], ""
while True:
    r = session.get_instruments_info(category="linear", limit=200, cursor=cursor)
    check(r["retCode"] == 0, f"instruments: {r}")
    symbols += r["result"]["list"]
    cursor = r["result"]["nextPageCursor"]
    if not cursor:
        break
check(len(symbols) >= 600, f"{len(symbols)} instruments")

inst = next(i for i in symbols if Decimal(i["lotSizeFilter"]["qtyStep"]) <= Decimal("0.01"))
sym = inst["symbol"]
step = Decimal(inst["lotSizeFilter"]["qtyStep"])

k = session.get_kline(category="linear", symbol=sym, interval=5, limit=10)
check(k["retCode"] == 0 and len(k["result"]["list"]) == 10, f"kline: {k}")
starts = [int(row[0]) for row in k["result"]["list"]]
check(starts == sorted(starts, reverse=True), "klines newest first")

t = session.get_tickers(category="linear", symbol=sym)
last = Decimal(t["result"]["list"][0]["lastPrice"])
qty = ((Decimal(200) / last) / step).quantize(Decimal(1), rounding=ROUND_UP) * step

w0 = Decimal(session.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]["coin"][0]["walletBalance"])
progress("orders")
o = session.place_order(category="linear", symbol=sym, side="Buy", orderType="Market", qty=str(qty), orderLinkId="pybit-1")
check(o["retCode"] == 0 and o["result"]["orderLinkId"] == "pybit-1", f"place_order: {o}")
p = session.get_positions(category="linear", symbol=sym)["result"]["list"][0]
check(p["side"] == "Buy" and Decimal(p["size"]) == qty, f"position: {p}")
c = session.place_order(category="linear", symbol=sym, side="Sell", orderType="Market", qty=str(qty), reduceOnly=True)
check(c["retCode"] == 0, f"close: {c}")
pnl = session.get_closed_pnl(category="linear", symbol=sym)["result"]["list"]
check(len(pnl) == 1, f"closed pnl: {pnl}")
w1 = Decimal(session.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]["coin"][0]["walletBalance"])
check(w1 - w0 == Decimal(pnl[0]["closedPnl"]), f"wallet moved {w1 - w0}, closed pnl {pnl[0]['closedPnl']}")

# A batch as pybit builds it: each order's result and code at its index, one refused
# (its orderLinkId is taken) while the other is placed.
progress("batch")
b = session.place_batch_order(category="linear", request=[
    {"symbol": sym, "side": "Buy", "orderType": "Market", "qty": str(qty), "orderLinkId": "pybit-b1"},
    {"symbol": sym, "side": "Buy", "orderType": "Market", "qty": str(qty), "orderLinkId": "pybit-1"},
])
check(b["retCode"] == 0, f"batch: {b}")
lst, ext = b["result"]["list"], b["retExtInfo"]["list"]
check(len(lst) == 2 and len(ext) == 2, f"batch lists: {b}")
check(ext[0]["code"] == 0 and lst[0]["orderLinkId"] == "pybit-b1" and lst[0]["orderId"], f"batch order 1: {b}")
check(ext[1]["code"] == 110072 and lst[1]["orderId"] == "", f"batch order 2: {b}")
p = session.get_positions(category="linear", symbol=sym)["result"]["list"][0]
check(p["side"] == "Buy" and Decimal(p["size"]) == qty, f"position after the batch: {p}")
c = session.place_order(category="linear", symbol=sym, side="Sell", orderType="Market", qty=str(qty), reduceOnly=True)
check(c["retCode"] == 0, f"close after the batch: {c}")

# WebSocket: tickers and klines on the public stream.
ut.PUBLIC_WSS = base.replace("http", "ws", 1) + "/v5/public/{CHANNEL_TYPE}"
got = {"ticker": threading.Event(), "kline": threading.Event()}
progress("public WebSocket")
ws = WebSocket(testnet=False, channel_type="linear")
progress(f"connected: {ws.is_connected()}")
# pybit's subscribe() sends the subscription and only then records it and registers its
# callback (pybit/_websocket_stream.py, subscribe(): self.ws.send(...) before
# self.subscriptions[req_id] = ... and self._set_callback(...)). What the exchange sends at
# once in answer (the subscription's reply, then a snapshot; on a loaded machine the main
# thread can be off the CPU that long) then meets no record: KeyError in pybit's socket
# thread, pybit closes the socket for good, and the next subscribe() waits forever for a
# connection (the hang seen in suite runs, reproduced by SUBSCRIBE_DELAY_S below). Both are
# taken as pybit would once it caught up: a reply to a request not recorded yet is dropped
# (pybit only logs a success), and so is a message of a topic without a callback yet (the
# next one of the topic reaches it). These are the only changes to pybit besides the base URL.
ws._get_callback = lambda topic: ws.callback_directory.get(topic, lambda message: None)
process_reply = ws._process_subscription_message


def reply(message):
    if message.get("req_id") and message["req_id"] not in ws.subscriptions:
        return
    process_reply(message)


ws._process_subscription_message = reply
# tests/pybit.rs runs this script with both races forced: the request recorded and the
# callback registered this long after the subscription went out.
delay = float(os.environ.get("SUBSCRIBE_DELAY_S", "0"))
if delay > 0:
    register = ws._set_callback

    def late(topic, callback):
        time.sleep(delay)
        register(topic, callback)

    ws._set_callback = late

    class Late(dict):
        """pybit's record of a sent subscription, stored `delay` late."""

        def __setitem__(self, key, value):
            time.sleep(delay)
            super().__setitem__(key, value)

    ws.subscriptions = Late(ws.subscriptions)
seen = {"ticker": 0, "kline": 0}


def on(kind, ok):
    seen[kind] += 1
    if ok:
        got[kind].set()


ws.ticker_stream(symbol=sym, callback=lambda m: on("ticker", m["data"]["symbol"] == sym))
ws.kline_stream(interval=1, symbol=sym, callback=lambda m: on("kline", m["data"][0]["interval"] == "1"))
progress("subscribed")
# The first tick after a subscription brings a snapshot (within a second when idle). The
# wait is long because once, in a CI run on a machine loaded by other builds, 20 s passed
# without one; the message then says whether anything arrived at all.
check(got["ticker"].wait(60), f"no ticker over pybit's WebSocket within 60 s ({seen['ticker']} ticker messages, connected: {ws.is_connected()})")
check(got["kline"].wait(60), f"no kline over pybit's WebSocket within 60 s ({seen['kline']} kline messages, connected: {ws.is_connected()})")
# pybit's exit() waits, unbounded, for websocket-client to drop its socket, which under
# load it sometimes never does (seen in CI with every check above passed): bounded here.
closer = threading.Thread(target=ws.exit, daemon=True)
closer.start()
closer.join(10)
if closer.is_alive():
    print("note: pybit's WebSocket exit() did not return within 10 s", file=sys.stderr)
print("pybit OK", flush=True)
# Not a normal exit: that would wait for pybit's WebSocket threads, which may never end.
os._exit(0)
