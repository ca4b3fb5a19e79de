// The status page: renders the worker's `snapshot` events (server-sent, one per second).
"use strict";

const MAX_POINTS = 900;
const history = {};          // symbol -> [[t, bid, ask], ...]
const decimals = {};         // symbol -> price decimals seen (chart price scale)
let selected = localStorage.getItem("status.symbol") || null;
let chart = null, bidSeries = null, askSeries = null, chartSymbol = null, chartPrecision = null;

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => (
  { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (v, digits) => (v === null || v === undefined ? "–"
  : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits ?? 2 }));
const clock = (unixS) => (unixS ? new Date(unixS * 1000).toISOString().slice(11, 19) + "Z" : "–");
const ago = (seconds) => {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
};
const levelOf = (status) => ({ connected: "ok", healthy: "ok", ok: "ok", disabled: "off",
  idle: "off" }[status] || "down");
const body = (id, rows, cols, emptyText) => {
  $(id).querySelector("tbody").innerHTML = rows.length ? rows.join("")
    : `<tr><td colspan="${cols}" class="empty">${esc(emptyText)}</td></tr>`;
};

function renderHeader(s) {
  $("service").textContent = `${s.service} ${s.version}`;
  const st = $("status");
  st.textContent = s.status;
  st.dataset.status = s.status;
  st.className = "pill " + (s.status === "healthy" ? "ok" : "down");
  const w = s.worker;
  $("worker").textContent = w.partitions.length
    ? `this worker: partitions ${w.partitions.join(", ")} of ${w.partitions_total} (${w.topic})`
    : `this worker: no partitions of ${w.topic} assigned`;
  $("worker").dataset.partitions = w.partitions.join(",");
  $("updated").textContent = `updated ${clock(s.time)}`
    + (s.build_ms === undefined ? "" : ` · built in ${num(s.build_ms, 1)} ms for ${s.pages} page(s)`);
  const problems = Object.entries(s.problems || {});
  $("problems").hidden = problems.length === 0;
  $("problem-list").innerHTML = problems.map(([name, msg]) =>
    `<li data-problem="${esc(name)}"><b>${esc(name)}</b>: ${esc(msg)}</li>`).join("");
}

function renderBrokers(s) {
  const rows = Object.entries(s.brokers).map(([name, b]) => {
    const since = b.connected_since ? `${clock(b.connected_since)}` : "–";
    return `<tr class="${b.level}" data-broker="${esc(name)}" data-status="${esc(b.status)}"
        data-level="${b.level}">
      <td><b>${esc(name)}</b></td><td>${esc(b.kind || "")}</td>
      <td><span class="pill ${b.level}">${esc(b.status === "connected" && b.level === "down"
        ? "silent" : b.status)}</span></td>
      <td>${since}</td><td>${ago(b.seconds_since_last_message)}</td>
      <td class="num">${num(b.ticks_per_s, 1)}</td><td class="num">${num(b.latency_ms, 1)}</td>
      <td class="num" data-field="ticks_total">${num(b.ticks_total, 0)}</td>
      <td class="num">${num(b.reconnects, 0)}</td>
      <td class="err">${esc(b.last_error || "")}</td></tr>`;
  });
  body("brokers", rows, 10, "no brokers configured");
}

function renderBest(s) {
  const symbols = Object.keys(s.best);
  if (!selected || !symbols.includes(selected)) selected = symbols[0] || null;
  const rows = Object.entries(s.best).map(([sym, b]) => `
    <tr data-symbol="${esc(sym)}" data-source="${esc(b.source)}"
        class="${sym === selected ? "selected" : ""}">
      <td><b>${esc(sym)}</b></td><td>${esc(b.source)}</td>
      <td class="num" data-field="bid">${esc(b.bid)}</td>
      <td class="num" data-field="ask">${esc(b.ask)}</td>
      <td class="num">${num(b.spread_pips, 2)}</td>
      <td class="num">${esc(b.best_bid)}<small class="by">${esc(b.best_bid_source)}</small></td>
      <td class="num">${esc(b.best_ask)}<small class="by">${esc(b.best_ask_source)}</small></td></tr>`);
  for (const [sym, b] of Object.entries(s.best)) {
    decimals[sym] = Math.max((b.bid.split(".")[1] || "").length, (b.ask.split(".")[1] || "").length);
  }
  body("best", rows, 7, "no best price yet on this worker's partitions");
  const sel = $("symbol");
  const options = symbols.map((x) => `<option${x === selected ? " selected" : ""}>${esc(x)}</option>`).join("");
  if (sel.dataset.options !== symbols.join(",")) {
    sel.innerHTML = options;
    sel.dataset.options = symbols.join(",");
  }
  if (selected) sel.value = selected;
}

function renderQuality(s) {
  const rows = Object.entries(s.quality).map(([sym, q]) => `<tr data-symbol="${esc(sym)}">
    <td><b>${esc(sym)}</b></td><td>${q.ranking.map((b, i) =>
      `<span class="rank"><b>${i + 1}.</b> ${esc(b)} (${num(q.scores[b], 3)})</span>`).join("")}</td></tr>`);
  body("quality", rows, 2, "no quality data yet");
}

function renderRejects(s) {
  const recent = Object.entries(s.rejects.recent).filter(([, w]) => w["15m"] > 0)
    .sort((a, b) => b[1]["15m"] - a[1]["15m"]);
  const top = Math.max(1, ...recent.map(([, w]) => w["15m"]));
  const rows = recent.map(([reason, w]) => `<tr data-reason="${esc(reason)}"><td>${esc(reason)}</td>
      <td class="num">${num(w["1m"], 0)}</td><td class="num">${num(w["5m"], 0)}</td>
      <td class="num">${num(w["15m"], 0)}</td>
      <td class="barcell"><div class="bar" style="width:${(100 * w["15m"] / top).toFixed(1)}%"></div></td></tr>`);
  body("rejects", rows, 5, "no rejects in the last 15 minutes");
  const table = Object.entries(s.rejects.table_by_reason);
  $("reject-table").textContent = table.length
    ? "since the start (this worker's symbols): " + table.map(([r, n]) => `${r} ${n}`).join(", ")
    : "no rejects recorded in this worker's tables";
}

function kv(id, pairs) {
  $(id).querySelector("tbody").innerHTML = pairs.map(([k, v]) =>
    `<tr><th>${esc(k)}</th><td class="num" data-key="${esc(k)}">${esc(v)}</td></tr>`).join("");
}

function renderPipeline(s) {
  const p = s.pipeline || {};
  kv("pipeline", [
    ["symbols tracked", num(p.total_symbols_tracked, 0)],
    ["records processed", num(p.records_processed, 0)],
    ["raw messages processed", num(p.batches_processed, 0)],
    ["ms per raw message", num(p.batch_processing_ms, 3)],
    ["source → output latency ms", num(p.distribution_latency_ms, 2)],
  ]);
  const rows = Object.entries(s.lag).map(([topic, l]) => `<tr data-topic="${esc(topic)}">
    <td>${esc(topic)}</td><td class="num">${l.partitions}</td>
    <td class="num">${num(l.lag, 0)}</td><td class="num">${num(l.uncommitted, 0)}</td></tr>`);
  body("lag", rows, 4, "no partitions assigned");
}

function renderNats(s) {
  const n = s.nats_bridge;
  const st = $("nats-state");
  if (!n) { st.textContent = "not running"; st.className = "pill off"; kv("nats", []); return; }
  st.textContent = n.state;
  st.dataset.state = n.state;
  st.className = "pill " + levelOf(n.state);
  const pairs = [["lag (messages)", num(n.lag_messages, 0)], ["consumed", num(n.consumed, 0)],
    ["acked by NATS", num(n.acked, 0)], ["undecodable", num(n.undecodable, 0)]];
  for (const [k, v] of Object.entries(n)) {
    if (!["state", "lag_messages", "consumed", "acked", "undecodable", "offsets"].includes(k)
        && (typeof v !== "object" || v === null)) pairs.push([k, v ?? "–"]);
  }
  kv("nats", pairs);
}

function renderCollectors(s) {
  const all = Object.entries(s.collectors);
  const off = all.filter(([, c]) => c.status === "disabled").map(([name]) => name);
  $("collectors-off").textContent = off.length ? `disabled: ${off.join(", ")}` : "";
  const rows = all.filter(([, c]) => c.status !== "disabled").map(([name, c]) => {
    const level = c.status === "disabled" ? "off" : (c.consecutive_failures || c.status === "missing_api_key") ? "down" : "ok";
    return `<tr class="${level}" data-collector="${esc(name)}"><td><b>${esc(name)}</b></td>
      <td>${esc(c.provider)}</td><td><span class="pill ${level}">${esc(c.status)}</span></td>
      <td class="num">${num(c.polls, 0)}</td><td>${esc(c.last_success || "–")}</td>
      <td class="err">${esc(c.last_error || "")}</td></tr>`;
  });
  body("collectors", rows, 6, "no collector enabled");
  const ctx = Object.entries(s.context).map(([key, c]) => `<tr><td>${esc(key)}</td>
    <td class="num">${esc(c.value)}</td>
    <td>${c.observation_time_ns ? new Date(c.observation_time_ns / 1e6).toISOString().slice(0, 16).replace("T", " ") : "–"}</td></tr>`);
  body("context", ctx, 3, "no context values on this worker's partitions");
}

function ensureChart() {
  if (chart || !window.LightweightCharts) return;
  const LC = window.LightweightCharts;
  chart = LC.createChart($("chart"), {
    autoSize: true,
    layout: { background: { color: "#ffffff" }, textColor: "#334" },
    grid: { vertLines: { color: "#f0f2f5" }, horzLines: { color: "#f0f2f5" } },
    timeScale: { timeVisible: true, secondsVisible: true },
    rightPriceScale: { borderVisible: false },
  });
  bidSeries = chart.addSeries(LC.LineSeries, { color: "#1f9d55", lineWidth: 2, title: "bid" });
  askSeries = chart.addSeries(LC.LineSeries, { color: "#d93025", lineWidth: 2, title: "ask" });
}

function drawChart(full) {
  ensureChart();
  if (!chart || !selected) return;
  const points = history[selected] || [];
  const precision = Math.max(decimals[selected] || 5, 2);
  if (precision !== chartPrecision) {
    const priceFormat = { type: "price", precision, minMove: 10 ** -precision };
    bidSeries.applyOptions({ priceFormat });
    askSeries.applyOptions({ priceFormat });
    chartPrecision = precision;
  }
  if (full || chartSymbol !== selected) {
    bidSeries.setData(points.map(([t, b]) => ({ time: t, value: b })));
    askSeries.setData(points.map(([t, , a]) => ({ time: t, value: a })));
    chartSymbol = selected;
    chart.timeScale().scrollToRealTime();
  } else if (points.length) {
    const [t, b, a] = points[points.length - 1];
    bidSeries.update({ time: t, value: b });
    askSeries.update({ time: t, value: a });
  }
  const last = points[points.length - 1];
  $("chart-legend").textContent = last ? `bid ${last[1]} · ask ${last[2]} (best price, 1 s samples)` : "";
}

function addPoint(symbol, point) {
  if (!point) return;
  const list = history[symbol] || (history[symbol] = []);
  if (list.length && list[list.length - 1][0] >= point[0]) return;
  list.push(point);
  if (list.length > MAX_POINTS) list.shift();
}

function onSnapshot(s) {
  for (const [sym, b] of Object.entries(s.best)) addPoint(sym, b.point);
  renderHeader(s); renderBrokers(s); renderBest(s); renderQuality(s);
  renderRejects(s); renderPipeline(s); renderNats(s); renderCollectors(s);
  drawChart(chartSymbol !== selected);
  document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
  document.body.dataset.snapshotTime = String(s.time);
}

function connect() {
  const source = new EventSource("/ui/events");
  source.addEventListener("open", () => { $("live").className = "dot ok"; });
  source.addEventListener("error", () => { $("live").className = "dot down"; });
  source.addEventListener("history", (e) => {
    const h = JSON.parse(e.data);
    for (const [sym, points] of Object.entries(h)) history[sym] = points.slice(-MAX_POINTS);
    drawChart(true);
  });
  source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
}

$("best").addEventListener("click", (e) => {
  const row = e.target.closest("tr[data-symbol]");
  if (!row) return;
  selected = row.dataset.symbol;
  localStorage.setItem("status.symbol", selected);
  document.querySelectorAll("#best tr.selected").forEach((r) => r.classList.remove("selected"));
  row.classList.add("selected");
  drawChart(true);
});
$("symbol").addEventListener("change", (e) => {
  selected = e.target.value;
  localStorage.setItem("status.symbol", selected);
  drawChart(true);
});
connect();
