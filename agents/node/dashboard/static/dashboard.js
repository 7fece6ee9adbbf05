// Warren node dashboard: polls /api/overview and draws it; three controls post JSON.
// The earnings chart is drawn by Chartist (chartist.umd.js beside this file: no CDN, works offline).
"use strict";

const POLL_MS = 2000;
const WEI = 10n ** 18n;
const previous = new Map(); // session key -> [bytes, seconds]: the rate column
let policyEdited = false;

function $(id) { return document.getElementById(id); }

function tokens(wei) {
  const w = BigInt(wei);
  const whole = w / WEI, frac = (w % WEI).toString().padStart(18, "0").slice(0, 6);
  return `${whole}.${frac}`;
}

function setWei(id, wei) {
  const el = $(id);
  el.dataset.wei = wei;
  el.textContent = `${tokens(wei)} tokens`;
  el.title = `${wei} token wei`;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function when(seconds) { return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) : ""; }

function show(text, ok) {
  const el = $("message");
  el.textContent = text;
  el.className = ok ? "ok" : "error";
}

function renderChain(c) {
  $("node-id").textContent = c.node_id;
  $("registered").textContent = c.registered ? (c.active ? "yes, active" : "yes, not active") : "no";
  $("operator").textContent = c.operator;
  $("region").textContent = c.region;
  setWei("price", c.price_per_gib);
  setWei("stake", c.stake);
  setWei("balance", c.operator_balance);
  $("unbonding").textContent = c.unbond_at ? `withdrawable from ${when(c.unbond_at)} UTC` : "no";
  $("score").textContent = `${(c.score_bps / 100).toFixed(2)} % after ${c.reports} reports`;
  $("score").dataset.bps = c.score_bps;
  $("revoked").textContent = c.revoked ? "REVOKED" : "no";
}

function renderSessions(live, now) {
  const body = $("sessions");
  body.replaceChildren();
  $("session-count").textContent = live.sessions.length;
  $("pending").textContent = live.pending ? `(${live.pending} in quarantine)` : "";
  for (const s of live.sessions) {
    const key = s.client + s.channel_id, total = s.rx_bytes + s.tx_bytes;
    const before = previous.get(key);
    const rate = before && now > before[1] ? (total - before[0]) * 8 / (now - before[1]) / 1e6 : null;
    previous.set(key, [total, now]);
    const row = body.insertRow();
    row.dataset.channel = s.channel_id;
    cell(row, s.client, "mono");
    cell(row, s.channel_id.slice(0, 16), "mono");
    cell(row, bytes(s.rx_bytes)).dataset.bytes = s.rx_bytes;
    cell(row, bytes(s.tx_bytes)).dataset.bytes = s.tx_bytes;
    cell(row, rate === null ? "…" : `${rate.toFixed(2)} Mbit/s`, "rate");
    cell(row, bytes(s.billed_bytes)).dataset.bytes = s.billed_bytes;
    cell(row, s.paid_amount, "paid").dataset.wei = s.paid_amount;
  }
}

// The chart library is Chartist, served from this package (agents/node/dashboard/vendor.py says why).
const SERIES = ["settled", "unsettled", "fee"];
const DAYS_SHOWN = 14;
let charts = null, chartData = "";

function tokenValue(wei) { return Number(BigInt(wei) / 10n ** 12n) / 1e6; } // tokens, 6 decimals

function renderChart(days) {
  const shown = days.slice(-DAYS_SHOWN);
  const key = JSON.stringify(shown);
  if (key === chartData) return; // same numbers: keep the drawn chart (no redraw every poll)
  chartData = key;
  $("chart-empty").hidden = shown.length > 0;
  const labels = shown.map(d => d.day.slice(5));
  // meta: the exact figure (token wei, gas), kept on each bar as ct:meta for readers and tests.
  const money = {labels, series: SERIES.map(k => shown.map(d => ({value: tokenValue(d[k]), meta: `${d.day} ${k} ${d[k]}`})))};
  const gas = {labels, series: [shown.map(d => ({value: d.gas, meta: `${d.day} gas ${d.gas}`}))]};
  if (charts) {
    charts.money.update(money);
    charts.gas.update(gas);
    return;
  }
  charts = {
    money: new Chartist.BarChart("#chart", money, {stackBars: true, height: "220px", seriesBarDistance: 0,
                                                   axisY: {labelInterpolationFnc: v => v.toFixed(3)}}),
    gas: new Chartist.BarChart("#gas-chart", gas, {height: "120px", axisY: {onlyInteger: true}}),
  };
  for (const chart of Object.values(charts)) {
    chart.on("draw", (ctx) => { // a hover text per bar: the day, the series and its exact figure
      if (ctx.type !== "bar" || !ctx.meta) return;
      const [day, what, figure] = String(ctx.meta).split(" ");
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = what === "gas" ? `${day} gas used by settlements: ${figure}` : `${day} ${what}: ${tokens(figure)} tokens`;
      ctx.element.getNode().appendChild(title);
    });
  }
}

function renderEarnings(e) {
  for (const k of ["earned", "settled", "unsettled", "fee", "net"]) setWei(`total-${k}`, e.total[k]);
  renderChart(e.days);
}

function renderSettlements(rows) {
  const body = $("settlements");
  body.replaceChildren();
  for (const r of rows.slice(0, 50)) {
    const row = body.insertRow();
    cell(row, when(r.at));
    cell(row, r.channel_id.slice(0, 18), "mono");
    cell(row, r.amount).dataset.wei = r.amount;
    cell(row, r.gas ?? "");
    cell(row, r.reason ? `${r.status}: ${r.reason}` : r.status);
    cell(row, r.tx_hash || "", "mono tx");
  }
}

function renderReports(rows) {
  const body = $("reports");
  body.replaceChildren();
  for (const r of rows) {
    const row = body.insertRow();
    cell(row, r.block); cell(row, r.epoch); cell(row, r.challenger, "mono");
    cell(row, `${r.throughput_kbps} kbit/s`); cell(row, `${r.latency_ms} ms`);
    cell(row, r.passed ? "yes" : "NO"); cell(row, `${(r.score / 100).toFixed(2)} %`);
  }
  if (!rows.length) cell(body.insertRow(), "no reports on this node yet");
}

async function api(path, body) {
  const options = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(body)};
  const response = await fetch(path, options);
  let data;
  try { data = await response.json(); } catch (e) { data = {error: `${response.status} ${response.statusText}`}; }
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

async function refresh() {
  try {
    const o = await api("/api/overview");
    renderChain(o.chain);
    renderSessions(o.live, o.now);
    renderEarnings(o.earnings);
    renderSettlements(o.settlements);
    renderReports(o.reports);
    $("policy").textContent = JSON.stringify(o.policy, null, 1);
    if (!policyEdited) $("policy-input").value = JSON.stringify(o.policy);
    $("updated").textContent = when(o.now) + " UTC";
    document.body.dataset.loaded = "1";
    if (o.live.last_error) show(`settlement: ${o.live.last_error}`, false);
  } catch (e) {
    show(`could not read the node: ${e.message}`, false);
  }
}

async function control(question, path, body) {
  if (!window.confirm(question)) { show("not changed", false); return; }
  show("sending…", true);
  try {
    const done = await api(path, body);
    show(done.tx_hash ? `${done.message} (transaction ${done.tx_hash})` : done.message, true);
    policyEdited = false;
    await refresh();
  } catch (e) {
    show(e.message, false);
  }
}

$("price-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const wei = $("price-input").value.trim();
  control(`Change the price to ${wei} token wei per GiB? This sends a transaction.`, "/api/price", {price_per_gib: wei});
});
$("policy-input").addEventListener("input", () => { policyEdited = true; });
$("policy-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  let policy;
  try { policy = JSON.parse($("policy-input").value); } catch (e) { show(`the policy is not JSON: ${e.message}`, false); return; }
  control("Apply this exit policy to the running node?", "/api/policy", {policy});
});
$("unbond-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  control("Start unbonding? The node takes no new channels, and the stake can be withdrawn after the delay.",
          "/api/unbond", {confirm: true});
});

refresh();
setInterval(refresh, POLL_MS);
