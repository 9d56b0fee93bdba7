// shardbot dashboard: renders the view the server pushes (server-sent events on
// /api/events), and sends the user's commands. Everything is written with textContent:
// nothing from the server is ever parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let view = null;
let charts = {};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof Node) { const td = el("td"); td.appendChild(c); tr.appendChild(td); }
    else tr.appendChild(el("td", c));
  }
  return tr;
}

function fill(tbodyId, rows) {
  const tb = $(tbodyId);
  tb.replaceChildren(...rows);
}

function num(x, dp) {
  if (x === null || x === undefined || x === "") return "–";
  const n = Number(x);
  if (!isFinite(n)) return String(x);
  return n.toLocaleString("en-US", { minimumFractionDigits: dp ?? 2, maximumFractionDigits: dp ?? 2 });
}

// A symbol's price and quantity at its instrument's own decimals (tick and step; the
// view's precision), or 6 and 4 until the exchange's instruments are read.
function price(x, sym) {
  const p = view && view.precision[sym];
  return num(x, p ? p[0] : 6);
}

function qty(x, sym) {
  const p = view && view.precision[sym];
  return num(x, p ? p[1] : 4);
}

function signed(x, dp) {
  const s = el("span", num(x, dp));
  const n = Number(x);
  if (n > 0) s.className = "pos"; else if (n < 0) s.className = "neg";
  return s;
}

function time(ms) {
  if (ms === null || ms === undefined) return "open";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

function dur(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// The section the address names; an unknown one (or none) is the stack's trading tab.
function tab() {
  const want = (location.hash || "").replace("#", "");
  const known = [...document.querySelectorAll("section[data-tabs]")]
    .some((s) => s.dataset.tabs.split(" ").includes(want));
  return known ? want : (view && view.account.live ? "live" : "paper");
}

function showTab() {
  const t = tab();
  for (const s of document.querySelectorAll("section[data-tabs]")) {
    s.hidden = !s.dataset.tabs.split(" ").includes(t);
  }
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === "#" + t);
  }
  if (view) renderTrading(view);
}

function renderHeader(v) {
  const env = v.account.environment;
  $("env-badge").textContent = v.account.live ? "LIVE · real money" : env + " · paper";
  $("env-badge").className = "badge " + env;
  document.body.classList.toggle("live", v.account.live);
  const sel = $("account-select");
  const want = v.accounts.map((a) => a.name + "|" + a.environment).join(",");
  if (sel.dataset.list !== want) {
    sel.replaceChildren(...v.accounts.map((a) => {
      const o = el("option", a.name + " (" + a.environment + ")");
      o.value = a.name;
      o.selected = a.current;
      return o;
    }));
    sel.dataset.list = want;
  }
  const mode = v.risk ? v.risk.mode : "unknown";
  $("mode").textContent = mode;
  const p = $("problems");
  p.hidden = v.problems.length === 0;
  p.replaceChildren(...v.problems.map((x) => el("div", x)));
}

function renderTrading(v) {
  const t = tab();
  const kind = v.account.live ? "live" : "paper";
  $("trading-title").textContent = t === "live" ? "Live Trading" : "Paper Trading";
  const wrong = $("wrong-kind");
  // Live and paper are separate worlds: the other kind's tab shows how to reach it, and
  // none of this stack's data or controls.
  const other = (t === "live" || t === "paper") && t !== kind;
  $("trading-body").hidden = other;
  if (other) {
    wrong.hidden = false;
    wrong.textContent = t === "live"
      ? "This stack trades the " + v.account.environment + " account “" + v.account.name + "” (no real money). Live trading runs in its own stack: scripts/stack up --account NAME --confirm-live."
      : "This stack trades the LIVE account “" + v.account.name + "” with real money. Paper trading runs in its own stack on a demo or sim account.";
  } else {
    wrong.hidden = true;
  }
  const b = v.balance;
  $("sim-equity").textContent = b ? num(b.simulated_equity) + " USDT" : "–";
  $("sim-balance-now").textContent = b ? num(b.simulated_balance) : "–";
  $("upnl").replaceChildren(signed(v.unrealised_pnl));
  const r = v.risk;
  $("mode-2").textContent = r ? r.mode : "unknown";
  // The buttons show the mode in force: the one that is on is marked and cannot be pressed.
  const mode = r ? r.mode : null;
  const start = $("start"), stop = $("stop");
  start.disabled = mode === "normal";
  start.textContent = mode === "normal" ? "Trading ✓" : "Start";
  start.classList.toggle("go", mode !== null && mode !== "normal");
  stop.disabled = mode === "halted";
  stop.textContent = mode === "halted" ? "Stopped ✓ (no new entries)" : "Stop (no new entries)";
  // A new simulated balance is taken only while the account is flat.
  const open = r ? r.open_positions : 0;
  $("save-balance").disabled = open > 0;
  $("save-balance").title = open > 0 ? "the account must be flat: " + open + " position(s) open" : "";
  $("open-count").textContent = r ? r.open_positions : "–";
  $("max-open").textContent = r ? r.max_open_positions : "–";
  $("daily-pnl").replaceChildren(signed(r ? r.daily_pnl : null));
  $("daily-limit").textContent = r ? num(r.daily_loss_limit) : "–";
  $("margin-use").textContent = r ? num(r.margin_use_pct) : "–";
  $("max-margin-now").textContent = r ? num(r.max_margin_use_pct) : "–";
  fill("strategies", v.strategies.map((s) =>
    row([s.name, el("span", s.label, s.optimized ? "mark verified" : "muted")])));
  // When each position was opened: its open trade's entry (the journal's).
  const opened = {};
  for (const t of v.trades) if (t.exit_time_ms === null) opened[t.symbol] = t.entry_time_ms;
  fill("positions", v.positions.map((p) => {
    const s = p.symbol;
    const value = Number(p.size) * Number(p.mark_price ?? p.avg_price);
    const margin = Number(p.size) * Number(p.avg_price) / Number(p.leverage);
    const tr = row([s, p.side === "Buy" ? "long" : "short", qty(p.size, s), price(p.avg_price, s),
      price(p.mark_price, s), signed(p.unrealised_pnl, 4), price(p.stop_loss, s), price(p.take_profit, s),
      p.strategy || "(by hand)", num(value, 2), num(margin, 2),
      margin > 0 ? signed(Number(p.unrealised_pnl) / margin * 100, 2) : "–",
      opened[s] === undefined ? "–" : time(opened[s])]);
    tr.dataset.symbol = p.symbol;
    return tr;
  }));
  $("trade-counts").textContent = v.closed_trades + " closed trades, " + v.verified_trades + " verified.";
  // Re-drawn only when a trade changed: a table re-built every second cannot be selected
  // or copied from.
  const sig = JSON.stringify([v.trades, v.precision]);
  if ($("trades").dataset.sig === sig) return;
  $("trades").dataset.sig = sig;
  fill("trades", v.trades.map((t) => {
    // An open trade is not waiting for verification: it has nothing to verify yet.
    const open = t.exit_time_ms === null || t.exit_time_ms === undefined;
    const mark = open ? el("span", "open", "mark open")
      : t.verified ? el("span", "✓", "mark verified") : el("span", "≈", "mark calculated");
    mark.title = open ? "open: also under Open positions; verified once it closes"
      : t.verified ? "verified against the exchange" : "calculated, not verified yet";
    const value = Number(t.qty) * Number(t.entry_price);
    const pct = t.pnl === null || !(value > 0) ? null : Number(t.pnl) / value * 100;
    const held = open ? "" : dur(t.exit_time_ms - t.entry_time_ms);
    const tr = row([mark, t.symbol, t.side, t.strategy, qty(t.qty, t.symbol), time(t.entry_time_ms), time(t.exit_time_ms),
      price(t.entry_price, t.symbol), price(t.exit_price, t.symbol), num(t.fees, 4), signed(t.pnl, 4),
      pct === null ? "–" : signed(pct, 2), held]);
    tr.dataset.key = t.trade_key;
    tr.dataset.verified = t.verified ? "1" : "0";
    if (t.discrepancy) tr.title = "discrepancy: " + t.discrepancy;
    return tr;
  }));
}

function statsRows(map) {
  return Object.entries(map).map(([k, s]) => row([k, s.trades, num(s.win_rate * 100, 1) + "%",
    signed(s.total_pnl, 4), num(s.avg_pnl, 4), s.verified + "/" + s.trades]));
}

function chart(id, title, xs, ys, color) {
  const target = $(id);
  const data = [xs.map((x) => x / 1000), ys];
  if (typeof uPlot === "undefined") return;
  if (!charts[id]) {
    const width = Math.max(250, target.clientWidth || 800);
    charts[id] = new uPlot({
      width, height: 220, legend: { show: false },
      // Times in UTC, as everywhere on the page (not the browser's zone and format).
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      axes: [{ label: "UTC", values: (u, splits) => splits.map((ts) =>
        new Date(ts * 1e3).toISOString().slice(5, 16).replace("T", " ")) }, { size: 80 }],
      series: [{}, { label: title, stroke: color, width: 1.5 }],
    }, data, target);
  } else {
    charts[id].setData(data);
  }
}

function renderPerformance(v) {
  const p = v.performance;
  const stats = $("perf-stats");
  if (!p) { stats.replaceChildren(el("dt", "no figures"), el("dd", "the trading settings are not read yet")); return; }
  const r = p.report, o = r.overall;
  $("perf-basis").textContent = o.trades === 0 ? "No closed trades yet." :
    o.verified + " of " + o.trades + " closed trades verified against the exchange; the rest are our calculation.";
  const items = [
    ["starting balance", num(r.starting_balance) + " USDT"],
    ["total return", num(r.total_return_pct) + " %"],
    ["total PnL", num(o.total_pnl, 4) + " USDT"],
    ["trades", o.trades],
    ["win rate", num(o.win_rate * 100, 1) + " %"],
    ["max drawdown", num(r.max_drawdown, 4) + " USDT (" + num(r.max_drawdown_pct) + " %)"],
    ["Sharpe", r.sharpe === null ? "– (needs two days)" : num(r.sharpe)],
    ["Sortino", r.sortino === null ? "– (needs two days and a losing one)" : num(r.sortino)],
    ["expectancy", num(o.avg_pnl, 4) + " USDT a trade"],
    ["best / worst trade", o.trades ? num(o.best, 4) + " / " + num(o.worst, 4) + " USDT" : "–"],
    ["fees paid", num(o.fees, 4) + " USDT"],
    ["time in the market", num(r.exposure_pct, 1) + " %"],
    ["profit factor", o.profit_factor === null ? "∞" : num(o.profit_factor)],
    ["best symbol", p.best_symbol || "–"],
    ["most active symbol", mostActive(p)],
  ];
  stats.replaceChildren(...items.flatMap(([k, x]) => {
    const dd = el("dd", x); dd.dataset.stat = k; return [el("dt", k), dd];
  }));
  if (!$("sec-performance").hidden) {
    chart("equity-chart", "equity", p.equity.map((e) => e[0]), p.equity.map((e) => e[1]), "#1565c0");
    chart("drawdown-chart", "drawdown %", p.drawdown.map((e) => e[0]), p.drawdown.map((e) => e[1]), "#c62828");
  }
  fill("daily", p.daily.map((d) => row([time(d.day_ms).slice(0, 10), d.trades, d.wins, signed(d.net, 4),
    num(d.fees, 4), num(d.balance, 2), d.return_pct === null ? "–" : signed(d.return_pct, 2)])));
  fill("by-symbol", statsRows(r.by_symbol));
  fill("by-strategy", statsRows(r.by_strategy));
  renderDrift(v);
}

// The symbol with the most closed trades and how many; a tie says so instead of picking one.
function mostActive(p) {
  const n = p.most_active_trades, syms = p.most_active;
  if (!syms.length) return "–";
  const trades = n + (n === 1 ? " trade" : " trades");
  if (syms.length === 1) return syms[0] + " (" + trades + ")";
  if (syms.length <= 3) return syms.join(", ") + " (a tie, " + trades + " each)";
  return "a tie of " + syms.length + " symbols at " + trades;
}

// The journal's closed trades of the last dashboard.drift_days against a backtest of the
// same bars (shardbot drift): counts, the gap by cause, and each trade.
function renderDrift(v) {
  const d = v.drift;
  if (!d) {
    $("drift-basis").textContent = "Not worked out (dashboard.drift_days = 0, no history store, or see the problems above).";
    $("drift-stats").replaceChildren();
    fill("drift-causes", []);
    fill("drift-rows", []);
    return;
  }
  $("drift-basis").textContent = "Closed trades from " + time(d.from_ms) + " to " + time(d.to_ms) +
    " UTC against a backtest of the same bars, run with " + d.basis +
    (d.unverified ? "; " + d.unverified + " paper trade(s) not verified yet" : "") + ".";
  const items = [
    ["matched", d.matched], ["only in paper", d.only_paper], ["only in the backtest", d.only_backtest],
    ["paper PnL", num(d.paper_pnl, 4) + " USDT"], ["backtest PnL", num(d.backtest_pnl, 4) + " USDT"],
    ["gap", num(d.gap, 4) + " USDT"], ["of it, unmatched trades", num(d.unmatched_gap, 4) + " USDT"],
  ];
  $("drift-stats").replaceChildren(...items.flatMap(([k, x]) => {
    const dd = el("dd", x); dd.dataset.drift = k; return [el("dt", k), dd];
  }));
  fill("drift-causes", d.causes.map((c) => row([c.cause, signed(c.usdt, 4)])));
  const ticks = (t) => t ? (t[0] ?? "–") + " / " + (t[1] ?? "–") : "";
  fill("drift-rows", d.rows.map((r) => {
    const tr = row([r.kind.replace("_", " "), r.symbol, r.side, time(r.entry_time_ms), signed(r.usdt, 4),
      ticks(r.entry_ticks), r.entry_delay_ms === null ? "" : (Math.abs(r.entry_delay_ms) < 1000 ? r.entry_delay_ms + " ms" : dur(r.entry_delay_ms)), r.why]);
    tr.dataset.kind = r.kind;
    return tr;
  }));
}

function renderRiskForm(v, force) {
  const s = v.settings;
  if (!s) return;
  const form = $("risk-form");
  if (form.dataset.loaded && !force) return; // do not overwrite what the user is typing
  form.dataset.loaded = "1";
  const kind = s.sizing.percent !== undefined ? "percent" : "fixed";
  $("sizing-kind").value = kind;
  $("sizing-value").value = s.sizing[kind];
  $("leverage").value = s.leverage;
  $("daily-loss-limit").value = s.daily_loss_limit;
  $("max-positions").value = s.max_open_positions;
  $("max-margin").value = s.max_margin_use_pct;
  $("cooldown").value = s.cooldown_after_stop_min;
  if (!$("sim-balance").value) $("sim-balance").value = s.simulated_balance;
  renderImplied();
}

// What the limits imply together, in words: how many positions the margin cap allows at
// this sizing, which of it and max open positions refuses entries first, and the daily
// loss limit in percent of the balance.
function implied(s) {
  const balance = Number(s.simulated_balance), cap = Number(s.max_margin_use_pct);
  const lev = Number(s.leverage), max = Number(s.max_open_positions);
  const per = s.sizing.percent !== undefined ? Number(s.sizing.percent)
    : Number(s.sizing.fixed) / balance * 100; // margin per entry, % of the balance
  if (!(per > 0) || !(cap > 0) || !(balance > 0) || !(lev > 0)) return "";
  const fit = Math.floor(cap / per + 1e-9);
  let text = "Each entry takes " + num(per) + " % of the simulated balance as margin (a position worth " +
    num(per * lev) + " % of it at " + lev + "x); the " + cap + " % margin cap allows about " + fit +
    (fit === 1 ? " position" : " positions") + " at once";
  if (fit < max) {
    text += ": max open positions (" + max + ") can never be reached, the margin cap refuses entries first (max_margin_use).";
  } else if (fit > max) {
    text += "; max open positions (" + max + ") refuses entries first.";
  } else {
    text += ", as many as max open positions.";
  }
  const loss = Number(s.daily_loss_limit);
  if (loss > 0) text += " New entries stop for the day once the day's loss reaches " + loss + " USDT (" + num(loss / balance * 100) + " % of the balance).";
  return text;
}

function renderImplied() {
  if (!view || !view.settings) return;
  $("risk-implied").textContent = implied(settingsFromForm(view.settings));
}

function renderBacktests(v) {
  const recs = v.optimizations || {};
  fill("optimizations", Object.entries(recs).map(([name, r]) => row([
    name, r.optimized_at, r.objective, JSON.stringify(r.data_range), JSON.stringify(r.metrics),
    JSON.stringify(r.params), Object.keys(r.symbols || {}).length + " symbols"])));
  if (Object.keys(recs).length === 0) {
    fill("optimizations", [row(["no optimization yet: every strategy runs on its defaults (shardbot optimize)", "", "", "", "", "", ""])]);
  }
}

function renderBacktestRuns(v) {
  const runs = v.backtests || [];
  if (runs.length === 0) {
    fill("backtests", [row(["no backtest runs yet (shardbot backtest --out backtests/NAME)", "", "", "", "", "", "", "", "", ""])]);
    return;
  }
  fill("backtests", runs.map((r) => {
    const s = r.summary || {};
    const tr = row([r.folder, s.strategy, s.symbols, time(s.first_bar_ms) + " → " + time(s.last_bar_ms), s.trades,
      num((s.win_rate || 0) * 100, 1) + "%", signed(s.total_return) , num(s.max_drawdown) + "%",
      s.sharpe === null || s.sharpe === undefined ? "–" : num(s.sharpe), s.profit_factor === null || s.profit_factor === undefined ? "–" : num(s.profit_factor)]);
    tr.dataset.folder = r.folder;
    return tr;
  }));
}

// A process's heartbeat figure in words with its unit (docs/metrics.md), or its raw name.
function figure(name, x) {
  switch (name) {
    case "bus_lag_max_us": return "bus lag (max) " + num(x / 1000, 1) + " ms";
    case "ratelimit_ip_headroom": return "IP rate-limit headroom " + x + " requests / 5 s";
    case "ws_reconnects_total": return "WebSocket reconnects " + x;
    default: return name + " " + x;
  }
}

function renderHealth(v) {
  fill("health", v.health.map((h) => {
    const tr = row([h.service, h.instance, el("span", h.state, "state-" + h.state), dur(h.heartbeat_age_ms) + " ago",
      dur(h.uptime_ms), h.restarts, h.pid,
      // A worker's close figures are in its detail, in words.
      Object.entries(h.metrics || {}).filter(([k]) => !/^(last|next)_close_/.test(k))
        .map(([k, x]) => figure(k, x)).join(", "), h.detail]);
    tr.dataset.process = h.service + "/" + h.instance;
    return tr;
  }));
}

// Orders, fills and refusals, newest first; the refusals counted by reason and by bar
// close. The navigation's badge shows the newest close's refusals.
function renderActivity(v) {
  const a = v.activity;
  const total = a.refusals_by_reason.reduce((n, [, c]) => n + c, 0);
  $("refusal-summary").textContent = total === 0 ? "No intent refused." :
    total + " refused in all: " + a.refusals_by_reason.map(([code, n]) => code + " " + n).join(", ") + ".";
  const words = (m) => Object.entries(m).map(([code, n]) => code + " " + n).join(", ");
  fill("refusals-by-close", a.refusals_by_close.map(([bar, m]) => row([time(bar), words(m)])));
  fill("refusals", a.refusals.map((r) => {
    const tr = row([time(r.at_ms), r.symbol, r.strategy, r.action, time(r.bar_open_ms), r.code, r.reason]);
    tr.dataset.code = r.code;
    return tr;
  }));
  fill("orders", a.orders.map((o) => row([time(o.updated_ms), o.symbol, o.side, qty(o.qty, o.symbol),
    qty(o.cum_exec_qty, o.symbol), o.avg_price === null ? "–" : price(o.avg_price, o.symbol),
    o.reduce_only ? "yes" : "", o.status, o.strategy || "(by hand)", o.order_link_id])));
  fill("fills", a.fills.map((f) => row([time(f.exec_time_ms), f.symbol, f.side, qty(f.qty, f.symbol),
    price(f.price, f.symbol), num(f.fee, 6), f.exec_type, f.strategy || ""])));
  // Each process's newest warnings and errors (its log file's), filtered by what the
  // user typed (a file name or words of the line).
  const want = $("log-filter").value.trim().toLowerCase();
  const lines = a.logs.flatMap((t) => t.lines.map((l) => [t.file, l]))
    .filter(([f, l]) => !want || f.toLowerCase().includes(want) || l.toLowerCase().includes(want));
  fill("log-lines", lines.length ? lines.map(([f, l]) => {
    const tr = row([f, l]);
    tr.dataset.file = f;
    tr.className = / ERROR |"level":"ERROR"/.test(l) ? "error" : "";
    return tr;
  }) : [row([want ? "nothing matches" : "no warning or error in " + a.logs.length + " log files", ""])]);
  const newest = a.refusals_by_close[0];
  const n = newest ? Object.values(newest[1]).reduce((x, y) => x + y, 0) : 0;
  const badge = $("activity-badge");
  badge.hidden = n === 0;
  badge.textContent = n + " refused";
  badge.title = newest ? "refusals at the newest close with any (" + time(newest[0]) + " UTC): " + words(newest[1]) : "";
}

// The notifications, and a browser notification for each one newer than those already
// seen on this page (once the user allowed them).
let notesSeen = null;
function renderNotifications(v) {
  fill("notifications", v.notifications.map((n) => {
    const tr = row([time(n.at_ms), n.kind, n.text]);
    tr.dataset.kind = n.kind;
    return tr;
  }));
  const newest = v.notifications.length ? v.notifications[0].at_ms : 0;
  if (notesSeen !== null && "Notification" in window && Notification.permission === "granted") {
    for (const n of v.notifications.filter((n) => n.at_ms > notesSeen).reverse()) {
      new Notification("shardbot · " + v.account.name, { body: n.text, tag: n.kind + n.at_ms + n.text });
    }
  }
  notesSeen = Math.max(notesSeen ?? 0, newest);
}

function render(v) {
  view = v;
  if (!v) return;
  renderHeader(v);
  renderTrading(v);
  renderPerformance(v);
  renderRiskForm(v, false);
  renderBacktests(v);
  renderBacktestRuns(v);
  renderHealth(v);
  renderActivity(v);
  renderNotifications(v);
  document.body.dataset.generated = v.generated_ms;
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Shardbot": "1" },
    body: JSON.stringify(body),
  });
  let j = null;
  try { j = await r.json(); } catch (_) { j = null; }
  if (r.status === 401) { location.href = "/login"; }
  if (!r.ok) throw new Error((j && j.error) || ("HTTP " + r.status));
  return j;
}

function say(id, text, error) {
  const m = $(id);
  m.textContent = text;
  m.className = "message" + (error ? " error" : "");
}

// A command that stops or closes trading on a live account must be confirmed by typing
// the account's name; on paper accounts a confirm() is enough.
function confirmed(text) {
  if (!view || !view.account.live) return window.confirm(text);
  const name = view.account.name;
  const typed = window.prompt(text + "\n\nThis is the LIVE account “" + name + "” (real money). Type its name to go on:");
  return typed !== null && typed.trim() === name;
}

async function control(command, confirmText) {
  if (confirmText && !confirmed(confirmText)) return;
  try {
    const r = await post("/api/control", { command });
    say("control-message", r.message + " (mode: " + r.mode + ")");
    if (r.flatten_id) followFlatten(r.flatten_id);
  } catch (e) { say("control-message", e.message, true); }
}

// The kill switch's flatten, followed until it ends: FLAT, or NOT FLAT in red with what
// is still open.
async function followFlatten(id) {
  for (;;) {
    await new Promise((done) => setTimeout(done, 500));
    let f;
    try {
      const r = await fetch("/api/flatten/" + encodeURIComponent(id), { credentials: "same-origin" });
      f = await r.json();
      if (!r.ok) throw new Error(f.error || r.statusText);
    } catch (e) { return say("control-message", "flatten " + id + ": " + e.message, true); }
    say("control-message", f.summary, f.done && !f.flat);
    if (f.done) return;
  }
}

function settingsFromForm(base) {
  const s = JSON.parse(JSON.stringify(base));
  const kind = $("sizing-kind").value;
  s.sizing = {}; s.sizing[kind] = $("sizing-value").value;
  s.leverage = $("leverage").value;
  s.daily_loss_limit = $("daily-loss-limit").value;
  s.max_open_positions = Number($("max-positions").value);
  s.max_margin_use_pct = $("max-margin").value;
  s.cooldown_after_stop_min = Number($("cooldown").value);
  return s;
}

async function saveSettings(s, msgId) {
  try {
    await post("/api/settings", s);
    say(msgId, "saved and applied");
    return true;
  } catch (e) { say(msgId, e.message, true); return false; }
}

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("view", (e) => {
    $("link-state").textContent = "updates: connected";
    render(JSON.parse(e.data));
  });
  es.onerror = async () => {
    $("link-state").textContent = "updates: disconnected, retrying…";
    const r = await fetch("/api/state", { credentials: "same-origin" }).catch(() => null);
    if (r && r.status === 401) location.href = "/login";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", showTab);
  // Charts follow the window's width (a phone turned, a window narrowed).
  window.addEventListener("resize", () => {
    for (const [id, c] of Object.entries(charts)) {
      c.setSize({ width: Math.max(250, $(id).clientWidth || 250), height: 220 });
    }
  });
  showTab();
  $("start").addEventListener("click", () => control("start"));
  $("stop").addEventListener("click", () => control("stop",
    "Stop: no new entries? Open positions keep their stop-loss and take-profit, and exits still go out."));
  $("kill").addEventListener("click", () => control("kill",
    "Kill switch: halt trading and close every open position at market?"));
  $("save-balance").addEventListener("click", async () => {
    if (!view || !view.settings) return say("balance-message", "settings not read yet", true);
    const s = JSON.parse(JSON.stringify(view.settings));
    s.simulated_balance = $("sim-balance").value;
    await saveSettings(s, "balance-message");
  });
  $("risk-form").addEventListener("input", renderImplied);
  $("log-filter").addEventListener("input", () => { if (view) renderActivity(view); });
  $("allow-notifications").addEventListener("click", async () => {
    if (!("Notification" in window)) return say("notify-message", "this browser has no notifications", true);
    const p = await Notification.requestPermission();
    say("notify-message", p === "granted" ? "browser notifications on" : "browser notifications not allowed", p !== "granted");
  });
  $("notify-test").addEventListener("click", async () => {
    try { say("notify-message", (await post("/api/notify-test", {})).message); }
    catch (e) { say("notify-message", e.message, true); }
  });
  $("risk-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!view || !view.settings) return say("risk-message", "settings not read yet", true);
    await saveSettings(settingsFromForm(view.settings), "risk-message");
  });
  $("account-select").addEventListener("change", (e) => {
    const chosen = e.target.value;
    const cur = view && view.account.name;
    const note = $("account-note");
    if (chosen === cur) { note.hidden = true; return; }
    note.hidden = false;
    note.textContent = "Account “" + chosen + "” trades in its own stack: start it with scripts/stack up --account " +
      chosen + " (its dashboard gets its own port, printed by up).";
  });
  connect();
});
