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

// Sortable, filterable, paged tables. A grid draws `items` into a tbody with `cols`, each
// { cell(item) → text or a Node, key(item) → a number or a string to sort by (none: the
// column does not sort) }. Above the table a filter box keeps the rows whose cells contain
// what was typed; a click on a header sorts by it (again: the other way); below it, pages
// of 5 (a phone) to 500 rows. `opts.sig`, when given, is the items' identity: the rows are re-built
// only when it or the user's choices changed (a table re-built every second cannot be
// selected or copied from). `opts.attrs(tr, item)` marks each row.
const grids = {};
const PAGE_SIZES = [5, 10, 25, 50, 100, 500];

function grid(tbodyId, items, cols, opts) {
  opts = opts || {};
  let g = grids[tbodyId];
  if (!g) g = grids[tbodyId] = gridSetUp(tbodyId, opts.size || 50);
  g.items = items;
  g.cols = cols;
  g.attrs = opts.attrs || null;
  g.sig = opts.sig === undefined ? null : opts.sig;
  // Held while the pointer is pressed on it (and a moment after): a row re-built between
  // the press and the release would lose the click (a Close button) or the selection.
  if (Date.now() < g.holdUntil) return;
  drawGrid(g);
}

function gridSetUp(id, size) {
  const tbody = $(id), table = tbody.closest("table");
  const g = { id, tbody, table, sort: null, desc: false, filter: "", page: 0, size, items: [], cols: [], holdUntil: 0 };
  tbody.addEventListener("pointerdown", () => { g.holdUntil = Date.now() + 1500; });
  tbody.addEventListener("pointerup", () => { g.holdUntil = Date.now() + 300; });
  const search = el("input", null, "grid-filter");
  search.type = "search";
  search.id = id + "-filter";
  search.placeholder = "filter (symbol, side, strategy, reason…)";
  search.setAttribute("aria-label", "filter the rows");
  // Typed, pasted, cleared (the box's ×, or a script's clear, which sends "change").
  const filter = () => { g.filter = search.value.trim().toLowerCase(); g.page = 0; drawGrid(g); };
  for (const e of ["input", "change", "search"]) search.addEventListener(e, filter);
  table.before(search);
  const pager = el("div", null, "grid-pager");
  const prev = el("button", "‹ previous"), next = el("button", "next ›"), info = el("span", "", "muted");
  prev.id = id + "-prev"; next.id = id + "-next"; info.id = id + "-pages";
  const sizes = el("select");
  sizes.id = id + "-size";
  sizes.setAttribute("aria-label", "rows per page");
  for (const n of PAGE_SIZES) { const o = el("option", n + " rows a page"); o.value = n; o.selected = n === size; sizes.appendChild(o); }
  prev.addEventListener("click", () => { g.page -= 1; drawGrid(g); });
  next.addEventListener("click", () => { g.page += 1; drawGrid(g); });
  sizes.addEventListener("change", () => { g.size = Number(sizes.value); g.page = 0; drawGrid(g); });
  pager.append(prev, info, next, sizes);
  table.after(pager);
  [...table.tHead.rows[0].cells].forEach((th, i) => th.addEventListener("click", () => {
    if (!g.cols[i] || !g.cols[i].key) return;
    if (g.sort === i) g.desc = !g.desc; else { g.sort = i; g.desc = false; }
    g.page = 0;
    drawGrid(g);
  }));
  return g;
}

function cellText(c) {
  return c instanceof Node ? c.textContent : (c === null || c === undefined ? "" : String(c));
}

function compareKeys(a, b) {
  const na = a === null || a === undefined || a === "" || (typeof a === "number" && !isFinite(a));
  const nb = b === null || b === undefined || b === "" || (typeof b === "number" && !isFinite(b));
  if (na || nb) return na === nb ? 0 : (na ? 1 : -1);
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b));
}

function drawGrid(g) {
  const state = JSON.stringify([g.sig, g.sort, g.desc, g.filter, g.page, g.size]);
  if (g.sig !== null && g.tbody.dataset.sig === state) return;
  let rows = g.items.map((it, i) => ({ it, i, cells: g.cols.map((c) => c.cell(it)) }));
  if (g.filter) rows = rows.filter((r) => r.cells.some((c) => cellText(c).toLowerCase().includes(g.filter)));
  if (g.sort !== null && g.cols[g.sort] && g.cols[g.sort].key) {
    const key = g.cols[g.sort].key, dir = g.desc ? -1 : 1;
    const keyed = rows.map((r) => [key(r.it), r]);
    // Empty values last either way; equal ones in the server's order.
    keyed.sort(([ka, ra], [kb, rb]) => {
      const empty = compareKeys(ka, kb);
      const c = (ka === null || ka === undefined || ka === "" || kb === null || kb === undefined || kb === "") ? empty : empty * dir;
      return c || ra.i - rb.i;
    });
    rows = keyed.map(([, r]) => r);
  }
  const pages = Math.max(1, Math.ceil(rows.length / g.size));
  g.page = Math.min(Math.max(0, g.page), pages - 1);
  const shown = rows.slice(g.page * g.size, (g.page + 1) * g.size);
  g.tbody.replaceChildren(...shown.map((r) => {
    const tr = row(r.cells);
    if (g.attrs) g.attrs(tr, r.it);
    return tr;
  }));
  [...g.table.tHead.rows[0].cells].forEach((th, i) => {
    const sortable = !!(g.cols[i] && g.cols[i].key);
    th.classList.toggle("sortable", sortable);
    if (sortable) th.title = th.title || "sort";
    th.dataset.sort = g.sort === i ? (g.desc ? "desc" : "asc") : "";
    if (g.sort === i) th.setAttribute("aria-sort", g.desc ? "descending" : "ascending"); else th.removeAttribute("aria-sort");
  });
  const first = g.page * g.size + 1;
  $(g.id + "-pages").textContent = !rows.length ? (g.items.length ? "nothing matches the filter" : "no rows")
    : rows.length === g.items.length
    ? "rows " + first + "–" + (g.page * g.size + shown.length) + " of " + rows.length
    : "rows " + first + "–" + (g.page * g.size + shown.length) + " of " + rows.length + " matching (" + g.items.length + " in all)";
  $(g.id + "-prev").disabled = g.page === 0;
  $(g.id + "-next").disabled = g.page >= pages - 1;
  g.tbody.dataset.sig = state;
}

// A sort key of a decimal string (null for none).
function numeric(x) {
  return x === null || x === undefined || x === "" ? null : Number(x);
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

// Times in UTC (the default) or in the browser's zone, as the header's switch says (kept
// in this browser); every label that names the zone follows it (class "tz").
function tzLocal() {
  try { return localStorage.getItem("shardbot.tz") === "local"; } catch (_) { return false; }
}

function tzName() {
  return tzLocal() ? (Intl.DateTimeFormat().resolvedOptions().timeZone || "local") : "UTC";
}

function stamp(d, local) {
  if (!local) return d.toISOString().replace("T", " ").slice(0, 19);
  const p = (x) => String(x).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
    p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
}

function time(ms) {
  if (ms === null || ms === undefined) return "open";
  return stamp(new Date(ms), tzLocal());
}

function renderTz() {
  const name = tzName();
  for (const e of document.querySelectorAll(".tz")) e.textContent = name;
  $("tz-select").value = tzLocal() ? "local" : "utc";
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
  const value = (p) => Number(p.size) * Number(p.mark_price ?? p.avg_price);
  const margin = (p) => Number(p.size) * Number(p.avg_price) / Number(p.leverage);
  const pnlPct = (p) => margin(p) > 0 ? Number(p.unrealised_pnl) / margin(p) * 100 : null;
  for (const sym of [...closeButtons.keys()]) {
    if (!v.positions.some((p) => p.symbol === sym)) closeButtons.delete(sym);
  }
  grid("positions", v.positions, [
    { cell: (p) => symbolLink(p.symbol), key: (p) => p.symbol },
    { cell: (p) => p.side === "Buy" ? "long" : "short", key: (p) => p.side },
    { cell: (p) => qty(p.size, p.symbol), key: (p) => numeric(p.size) },
    { cell: (p) => price(p.avg_price, p.symbol), key: (p) => numeric(p.avg_price) },
    { cell: (p) => price(p.mark_price, p.symbol), key: (p) => numeric(p.mark_price) },
    { cell: (p) => signed(p.unrealised_pnl, 4), key: (p) => numeric(p.unrealised_pnl) },
    { cell: (p) => price(p.stop_loss, p.symbol), key: (p) => numeric(p.stop_loss) },
    { cell: (p) => price(p.take_profit, p.symbol), key: (p) => numeric(p.take_profit) },
    { cell: (p) => p.strategy || "(by hand)", key: (p) => p.strategy || "" },
    { cell: (p) => num(value(p), 2), key: value },
    { cell: (p) => num(margin(p), 2), key: margin },
    { cell: (p) => pnlPct(p) === null ? "–" : signed(pnlPct(p), 2), key: pnlPct },
    { cell: (p) => opened[p.symbol] === undefined ? "–" : time(opened[p.symbol]), key: (p) => opened[p.symbol] ?? null },
    { cell: (p) => price(p.liq_price, p.symbol), key: (p) => numeric(p.liq_price) },
    { cell: (p) => closeButton(p.symbol) },
  ], { attrs: (tr, p) => { tr.dataset.symbol = p.symbol; } });
  $("trade-counts").textContent = v.closed_trades + " closed trades, " + v.verified_trades + " verified.";
  // An open trade is not waiting for verification: it has nothing to verify yet.
  const isOpen = (t) => t.exit_time_ms === null || t.exit_time_ms === undefined;
  const tradeValue = (t) => Number(t.qty) * Number(t.entry_price);
  const pct = (t) => t.pnl === null || !(tradeValue(t) > 0) ? null : Number(t.pnl) / tradeValue(t) * 100;
  const held = (t) => isOpen(t) ? null : t.exit_time_ms - t.entry_time_ms;
  grid("trades", v.trades, [
    { cell: (t) => {
      const open = isOpen(t);
      const mark = open ? el("span", "open", "mark open")
        : t.verified ? el("span", "✓", "mark verified") : el("span", "≈", "mark calculated");
      mark.title = open ? "open: also under Open positions; verified once it closes"
        : t.verified ? "verified against the exchange" : "calculated, not verified yet";
      return mark;
    }, key: (t) => isOpen(t) ? 0 : t.verified ? 2 : 1 },
    { cell: (t) => symbolLink(t.symbol), key: (t) => t.symbol },
    { cell: (t) => t.side, key: (t) => t.side },
    { cell: (t) => t.strategy, key: (t) => t.strategy },
    { cell: (t) => qty(t.qty, t.symbol), key: (t) => numeric(t.qty) },
    { cell: (t) => time(t.entry_time_ms), key: (t) => t.entry_time_ms },
    { cell: (t) => time(t.exit_time_ms), key: (t) => t.exit_time_ms },
    { cell: (t) => price(t.entry_price, t.symbol), key: (t) => numeric(t.entry_price) },
    { cell: (t) => price(t.exit_price, t.symbol), key: (t) => numeric(t.exit_price) },
    { cell: (t) => num(t.fees, 4), key: (t) => numeric(t.fees) },
    { cell: (t) => signed(t.pnl, 4), key: (t) => numeric(t.pnl) },
    { cell: (t) => pct(t) === null ? "–" : signed(pct(t), 2), key: pct },
    { cell: (t) => isOpen(t) ? "" : dur(held(t)), key: held },
    { cell: (t) => (t.exit_reason || "").replaceAll("_", " "), key: (t) => t.exit_reason || "" },
  ], {
    sig: JSON.stringify([v.trades, v.precision, tzName()]),
    attrs: (tr, t) => {
      tr.dataset.key = t.trade_key;
      tr.dataset.verified = t.verified ? "1" : "0";
      if (t.exit_reason) tr.dataset.exit = t.exit_reason;
      if (t.discrepancy) tr.title = "discrepancy: " + t.discrepancy;
    },
  });
}

function statsGrid(id, map) {
  grid(id, Object.entries(map), [
    { cell: ([k]) => k, key: ([k]) => k },
    { cell: ([, s]) => s.trades, key: ([, s]) => s.trades },
    { cell: ([, s]) => num(s.win_rate * 100, 1) + "%", key: ([, s]) => s.win_rate },
    { cell: ([, s]) => signed(s.total_pnl, 4), key: ([, s]) => Number(s.total_pnl) },
    { cell: ([, s]) => num(s.avg_pnl, 4), key: ([, s]) => Number(s.avg_pnl) },
    { cell: ([, s]) => s.verified + "/" + s.trades, key: ([, s]) => s.verified },
  ], { sig: JSON.stringify(map) });
}

function chart(id, title, xs, ys, color) {
  const target = $(id);
  const data = [xs.map((x) => x / 1000), ys];
  if (typeof uPlot === "undefined") return;
  if (!charts[id]) {
    const width = Math.max(250, target.clientWidth || 800);
    charts[id] = new uPlot({
      width, height: 220, legend: { show: false },
      // Times in the page's zone (UTC unless switched), labelled, in its format.
      tzDate: (ts) => tzLocal() ? new Date(ts * 1e3) : uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      axes: [{ label: tzName(), values: (u, splits) => splits.map((ts) =>
        stamp(new Date(ts * 1e3), tzLocal()).slice(5, 16)) }, { size: 80 }],
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
  // The equity marked to market (the risk manager's samples: open positions included),
  // or, before the first sample, the closed trades' curve.
  const marked = p.marked.length > 0;
  const eq = marked ? p.marked : p.equity, dd = marked ? p.marked_drawdown : p.drawdown;
  $("equity-basis").textContent = marked
    ? "Marked to market: the simulated equity with the open positions at their marks, sampled every " +
      "risk.equity_sample_ms; the last point, " + num(eq[eq.length - 1][1]) + " USDT at " + time(eq[eq.length - 1][0]) +
      " " + tzName() + ", is the newest sample."
    : "Closed trades only (no equity sample yet): each trade's net at its exit.";
  $("equity-basis").dataset.marked = marked ? "1" : "0";
  if (!$("sec-performance").hidden) {
    chart("equity-chart", "equity", eq.map((e) => e[0]), eq.map((e) => e[1]), "#1565c0");
    chart("drawdown-chart", "drawdown %", dd.map((e) => e[0]), dd.map((e) => e[1]), "#c62828");
  }
  // The days are UTC days whatever the page's zone (the report's).
  fill("daily", p.daily.map((d) => row([stamp(new Date(d.day_ms), false).slice(0, 10), d.trades, d.wins, signed(d.net, 4),
    num(d.fees, 4), num(d.balance, 2), d.return_pct === null ? "–" : signed(d.return_pct, 2)])));
  statsGrid("by-symbol", r.by_symbol);
  statsGrid("by-strategy", r.by_strategy);
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
    " " + tzName() + " against a backtest of the same bars, run with " + d.basis +
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
  const act = { size: 100, sig: JSON.stringify([a.refusals, a.orders, a.fills, v.precision, tzName()]) };
  grid("refusals", a.refusals, [
    { cell: (r) => time(r.at_ms), key: (r) => r.at_ms },
    { cell: (r) => r.symbol, key: (r) => r.symbol },
    { cell: (r) => r.strategy, key: (r) => r.strategy },
    { cell: (r) => r.action, key: (r) => r.action },
    { cell: (r) => time(r.bar_open_ms), key: (r) => r.bar_open_ms },
    { cell: (r) => r.code, key: (r) => r.code },
    { cell: (r) => r.reason },
  ], { ...act, attrs: (tr, r) => { tr.dataset.code = r.code; } });
  grid("orders", a.orders, [
    { cell: (o) => time(o.updated_ms), key: (o) => o.updated_ms },
    { cell: (o) => o.symbol, key: (o) => o.symbol },
    { cell: (o) => o.side, key: (o) => o.side },
    { cell: (o) => qty(o.qty, o.symbol), key: (o) => numeric(o.qty) },
    { cell: (o) => qty(o.cum_exec_qty, o.symbol), key: (o) => numeric(o.cum_exec_qty) },
    { cell: (o) => o.avg_price === null ? "–" : price(o.avg_price, o.symbol), key: (o) => numeric(o.avg_price) },
    { cell: (o) => o.reduce_only ? "yes" : "", key: (o) => o.reduce_only ? 1 : 0 },
    { cell: (o) => o.status, key: (o) => o.status },
    { cell: (o) => o.strategy || "(by hand)", key: (o) => o.strategy || "" },
    { cell: (o) => o.order_link_id, key: (o) => o.order_link_id },
  ], act);
  grid("fills", a.fills, [
    { cell: (f) => time(f.exec_time_ms), key: (f) => f.exec_time_ms },
    { cell: (f) => f.symbol, key: (f) => f.symbol },
    { cell: (f) => f.side, key: (f) => f.side },
    { cell: (f) => qty(f.qty, f.symbol), key: (f) => numeric(f.qty) },
    { cell: (f) => price(f.price, f.symbol), key: (f) => numeric(f.price) },
    { cell: (f) => num(f.fee, 6), key: (f) => numeric(f.fee) },
    { cell: (f) => f.exec_type, key: (f) => f.exec_type },
    { cell: (f) => f.strategy || "", key: (f) => f.strategy || "" },
  ], { ...act, attrs: (tr, f) => { tr.dataset.key = f.exec_id; } });
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
  const spike = a.refusal_spike;
  badge.hidden = n === 0;
  badge.textContent = n + " refused" + (spike ? " ⚠" : "");
  badge.classList.toggle("spike", !!spike);
  badge.title = newest ? "refusals at the newest close with any (" + time(newest[0]) + " " + tzName() + "): " + words(newest[1]) +
    (spike ? "; a spike: " + spike.refused + " against the usual " + spike.usual : "") : "";
  // The logs' errors of the last 5 minutes, and a refusal spike, said on the page too.
  const errs = a.recent_errors;
  const eb = $("errors-badge");
  eb.hidden = !errs;
  eb.textContent = errs ? errs.count + (errs.count === 1 ? " error" : " errors") : "";
  eb.title = errs ? "in the last 5 minutes, in " + errs.files.join(", ") + "; the newest: " + errs.newest : "";
  const alerts = [];
  if (spike) alerts.push("Refusals spiked at the close of the bar opened " + time(spike.bar_open_ms) + " " + tzName() + ": " +
    spike.refused + " refused (mostly " + spike.top_reason + "), the usual is " + spike.usual + ".");
  if (errs) alerts.push(errs.count + (errs.count === 1 ? " error" : " errors") + " in the last 5 minutes (" + errs.files.join(", ") + "): see below.");
  $("activity-alerts").hidden = alerts.length === 0;
  $("activity-alerts").replaceChildren(...alerts.map((t) => el("div", t)));
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
  renderTz();
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

// A symbol in a table: a click shows its price chart with the trades marked.
function symbolLink(symbol) {
  const b = el("button", symbol, "link");
  b.dataset.chart = symbol;
  b.title = "price chart of " + symbol + " with its trades";
  return b;
}

// The symbol's newest bars (the gateway's history, the strategies' interval) with each
// trade's entry (green) and exit (red) marked on the bar it filled in.
let chartSymbol = null;
async function openChart(symbol) {
  chartSymbol = symbol;
  const box = $("symbol-chart-box");
  box.hidden = false;
  $("symbol-chart-title").textContent = symbol;
  $("symbol-chart-basis").textContent = "reading the bars…";
  let d;
  try {
    const r = await fetch("/api/bars/" + encodeURIComponent(symbol) + "?limit=300", { credentials: "same-origin" });
    d = await r.json();
    if (!r.ok) throw new Error(d.error || r.statusText);
  } catch (e) {
    $("symbol-chart-basis").textContent = symbol + ": " + e.message;
    return;
  }
  if (chartSymbol !== symbol) return; // another was asked for meanwhile
  const bars = d.bars, step = d.interval_ms || 0;
  const trades = (view ? view.trades : []).filter((t) => t.symbol === symbol);
  const at = (ms) => bars.findIndex((b) => ms >= b[0] && ms < b[0] + step);
  const entries = bars.map(() => null), exits = bars.map(() => null);
  for (const t of trades) {
    const i = at(t.entry_time_ms);
    if (i >= 0) entries[i] = Number(t.entry_price);
    if (t.exit_time_ms !== null && t.exit_time_ms !== undefined) {
      const j = at(t.exit_time_ms);
      if (j >= 0) exits[j] = Number(t.exit_price);
    }
  }
  box.dataset.symbol = symbol;
  box.dataset.bars = bars.length;
  box.dataset.entries = entries.filter((x) => x !== null).length;
  box.dataset.exits = exits.filter((x) => x !== null).length;
  $("symbol-chart-basis").textContent = bars.length
    ? bars.length + " bars of " + d.interval + " min from " + time(bars[0][0]) + " to " + time(bars[bars.length - 1][0]) +
      " " + tzName() + " (closes); " + box.dataset.entries + " entries (green) and " + box.dataset.exits + " exits (red) of its trades marked."
    : "no bars of " + symbol + " in the market-data store yet.";
  if (charts["symbol-chart"]) { charts["symbol-chart"].destroy(); delete charts["symbol-chart"]; }
  if (typeof uPlot === "undefined" || !bars.length) return;
  const target = $("symbol-chart");
  const marker = (label, color) => ({ label, stroke: color, fill: color, paths: () => null,
    points: { show: true, size: 9, stroke: color, fill: color } });
  charts["symbol-chart"] = new uPlot({
    width: Math.max(250, target.clientWidth || 800), height: 260, legend: { show: true },
    tzDate: (ts) => tzLocal() ? new Date(ts * 1e3) : uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    axes: [{ label: tzName(), values: (u, splits) => splits.map((ts) =>
      stamp(new Date(ts * 1e3), tzLocal()).slice(5, 16)) }, { size: 80 }],
    series: [{}, { label: "close", stroke: "#1565c0", width: 1.5 },
      marker("entry", "#1b7f3b"), marker("exit", "#b3261e")],
  }, [bars.map((b) => b[0] / 1000), bars.map((b) => Number(b[4])), entries, exits], target);
}

// Each open position's Close button: one element per symbol for as long as it is open,
// moved into each new drawing of its row, so that a click (or a script holding the
// element) is never lost to the row being re-drawn with the next view.
const closeButtons = new Map();
function closeButton(symbol) {
  let b = closeButtons.get(symbol);
  if (!b) {
    b = el("button", "Close", "danger close");
    b.dataset.close = symbol;
    b.title = "close this position at market (reduce-only); trading goes on";
    b.addEventListener("click", () => {
      const p = view && view.positions.find((x) => x.symbol === symbol);
      if (p) closePosition(p); else say("close-message", symbol + ": no position open any more", true);
    });
    closeButtons.set(symbol, b);
  }
  return b;
}

// One position closed by hand: asked first (typed on a live account), then followed until
// the exchange shows it gone.
async function closePosition(p) {
  const side = p.side === "Buy" ? "long" : "short";
  if (!confirmed("Close the " + p.symbol + " " + side + " position (" + p.size + ") at market? " +
    "Trading goes on: its strategy may enter it again at a later close.")) return;
  try {
    const r = await post("/api/close", { symbol: p.symbol });
    say("close-message", r.message);
    followFlatten(r.flatten_id, "close-message");
  } catch (e) { say("close-message", "close " + p.symbol + ": " + e.message, true); }
}

// The kill switch's flatten (or a close), followed until it ends: FLAT, or NOT FLAT in red
// with what is still open.
async function followFlatten(id, msgId) {
  msgId = msgId || "control-message";
  for (;;) {
    await new Promise((done) => setTimeout(done, 500));
    let f;
    try {
      const r = await fetch("/api/flatten/" + encodeURIComponent(id), { credentials: "same-origin" });
      f = await r.json();
      if (!r.ok) throw new Error(f.error || r.statusText);
    } catch (e) { return say(msgId, "flatten " + id + ": " + e.message, true); }
    say(msgId, f.summary, f.done && !f.flat);
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
  renderTz();
  $("tz-select").addEventListener("change", (e) => {
    try { localStorage.setItem("shardbot.tz", e.target.value); } catch (_) { /* kept for this view only */ }
    // The charts are built with their zone: built again.
    for (const c of Object.values(charts)) c.destroy();
    charts = {};
    if (view) render(view);
    if (chartSymbol) openChart(chartSymbol);
  });
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
  // A symbol's button in any table opens its chart (one listener: the rows are re-drawn).
  document.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("button[data-chart]");
    if (b) openChart(b.dataset.chart);
  });
  $("symbol-chart-close").addEventListener("click", () => {
    chartSymbol = null;
    $("symbol-chart-box").hidden = true;
    if (charts["symbol-chart"]) { charts["symbol-chart"].destroy(); delete charts["symbol-chart"]; }
  });
  for (const e of ["input", "change", "search"]) $("log-filter").addEventListener(e, () => { if (view) renderActivity(view); });
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
