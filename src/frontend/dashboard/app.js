// strata's dashboard: renders /api/dashboard snapshots, live over SSE.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "strata-api-key";
const charts = {};
let source = null;
let lastWindows = -1;
let series = null;

function key() {
  return sessionStorage.getItem(KEY) || "";
}

function headers() {
  return key() ? { "X-API-Key": key() } : {};
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function pct(x) {
  return `${(100 * x).toFixed(1)}%`;
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

function text(tag, content, cls) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (cls) el.className = cls;
  return el;
}

function rows(tbody, items, cells, empty) {
  tbody.replaceChildren();
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = text("td", empty, "empty");
    td.colSpan = 9;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const item of items) {
    const tr = document.createElement("tr");
    for (const c of cells(item)) {
      tr.append(c instanceof Node ? wrap(c) : text("td", String(c)));
    }
    tbody.append(tr);
  }
}

function wrap(el) {
  const td = document.createElement("td");
  td.append(el);
  return td;
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("panels").hidden = true;
  $("key-error").textContent = message || "";
  $("live").textContent = "API key needed";
  $("live").className = "badge down";
}

async function getJSON(url) {
  const r = await fetch(url, { headers: headers() });
  if (r.status === 401) {
    askForKey(key() ? "That key was refused." : "");
    throw new Error("unauthorized");
  }
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

function chart(id, title, labels, colors, data) {
  const el = $(id);
  const width = Math.max(300, el.clientWidth || el.parentElement.clientWidth - 20);
  if (!charts[id]) {
    charts[id] = new uPlot({
      title,
      width,
      height: 160,
      series: [{}, ...labels.map((label, i) => ({ label, stroke: colors[i], width: 1.5 }))],
      axes: [{}, { size: 60 }],
    }, data, el);
  } else {
    charts[id].setData(data);
  }
}

// Per-second rates of a counter between samples.
function rate(samples, field) {
  const out = [];
  for (let i = 0; i < samples.length; i++) {
    if (i === 0) { out.push(null); continue; }
    const dt = (samples[i].timestamp - samples[i - 1].timestamp) / 1000;
    out.push(dt > 0 ? Math.max(0, samples[i][field] - samples[i - 1][field]) / dt : null);
  }
  return out;
}

function renderHealth(h) {
  $("health-score").textContent = h.health_score;
  $("health-status").textContent = h.health_status;
  $("health-status").className = `band ${h.health_status}`;
  $("health-score").className = h.health_status;
  rows($("health-components").tBodies[0], h.health_components,
    (c) => [c.name, `${c.score}/100 × ${c.weight}`, c.detail], "no components");
  const c = h.cluster_health;
  $("cluster-health").textContent = c
    ? `cluster ${c.score}/100 (${c.status}): ` + c.nodes.map((n) => `${n.id.slice(0, 8)} ${n.reachable ? n.score : "down"}`).join(", ")
    : "";
}

function renderTiers(t, samples) {
  $("tier-memory").textContent = `${bytes(t.memory.bytes)} of ${bytes(t.memory.cap)} (${pct(t.memory.bytes / Math.max(1, t.memory.cap))}), ${t.memory.keys} keys`;
  $("tier-disk").textContent = `${bytes(t.disk.bytes)}, ${t.disk.keys} keys`;
  const reads = t.memory.hits + t.disk.hits + t.misses;
  $("hit-ratio").textContent = reads
    ? `memory ${pct(t.memory.hits / reads)}, disk ${pct(t.disk.hits / reads)}, miss ${pct(t.misses / reads)}`
    : "no reads yet";
  $("tier-moves").textContent = `${t.spilled} / ${t.offloaded} / ${t.promotions}`;
  if (samples.length < 2) return;
  const xs = samples.map((s) => s.timestamp / 1000);
  chart("chart-memory", "Memory tier (MiB)", ["used", "cap"], ["#3366cc", "#999"],
    [xs, samples.map((s) => s.memory_bytes / 1048576), samples.map((s) => s.memory_cap / 1048576)]);
  chart("chart-hits", "Reads per second by tier", ["memory", "disk", "miss"], ["#1e8e3e", "#c98a00", "#c5221f"],
    [xs, rate(samples, "hits_memory"), rate(samples, "hits_disk"), rate(samples, "misses")]);
  chart("chart-moves", "Keys moved per second", ["spilled", "offloaded", "promoted"], ["#8e44ad", "#2c7fb8", "#1e8e3e"],
    [xs, rate(samples, "spilled"), rate(samples, "offloaded"), rate(samples, "promotions")]);
}

function renderAlerts(a) {
  $("alerts-firing").textContent = a.firing.length ? `firing: ${a.firing.join(", ")}` : "no rule firing";
  $("alerts-firing").className = a.firing.length ? "critical" : "healthy";
  rows($("alerts").tBodies[0], a.recent,
    (x) => [time(x.timestamp), x.title, text("span", x.severity, `sev-${x.severity}`), x.status, x.message],
    "no alerts yet");
}

function renderHotkeys(h) {
  $("hotkeys-threshold").textContent = `above ${h.threshold_per_min} a minute`;
  rows($("hotkeys").tBodies[0], h.keys, (k) => [k.key, k.db, k.per_min], "no hot keys");
}

function renderTopology(t) {
  const leads = {};
  for (const s of t.shards) if (s.leader) (leads[s.leader] ||= []).push(s.id);
  rows($("topology-nodes").tBodies[0], t.nodes, (n) => [
    n.id, n.address || "", text("span", n.status, n.status === "UP" ? "healthy" : "critical"),
    (n.shards || []).map((s) => `${s.shard}${s.role === "LEADER" ? "*" : ""}`).join(" ") || (leads[n.id] || []).join(" "),
  ], "no members");
  rows($("topology-shards").tBodies[0], t.shards, (s) => [
    s.id, s.slots.map((r) => `${r[0]}-${r[1]}`).join(", "), s.leader || "none", (s.replicas || []).join(", "),
  ], "no shards");
}

function renderWorkers(w, p) {
  $("workers-summary").textContent =
    `pool ${w.pool}, busy ${w.busy}, load factor ${w.load_factor.toFixed(2)}, waiting ${w.waiting}; ` +
    `events accepted ${p.accepted}, rejected ${p.rejected}, late ${p.late}, dead-lettered ${p.dead_lettered}, windows stored ${p.windows}`;
  rows($("workers").tBodies[0], w.partitions, (x) => [
    x.partition, x.length, x.lag, x.worker_here ? "yes" : "no", x.watermark_ms ? time(x.watermark_ms) : "–",
  ], "no partitions read yet");
  const pick = $("series-recent");
  const have = new Set([...pick.options].map((o) => o.value));
  for (const s of p.recent_series) {
    const v = JSON.stringify(s);
    if (!have.has(v)) pick.append(new Option(`${s.tenant} / ${s.server_id} / ${s.metric}`, v));
  }
  if (!series && p.recent_series.length) {
    series = p.recent_series[0];
    $("series-tenant").value = series.tenant;
    $("series-server").value = series.server_id;
    $("series-metric").value = series.metric;
  }
  if (series && p.windows !== lastWindows) {
    lastWindows = p.windows;
    loadSeries();
  }
}

async function loadSeries() {
  if (!series) return;
  const q = new URLSearchParams(series);
  try {
    const body = await getJSON(`/v1/series?${q}`);
    const pts = body.points || [];
    $("series-info").textContent = `${series.tenant} / ${series.server_id} / ${series.metric}: ${pts.length} one-minute points`;
    if (!pts.length) return;
    const xs = pts.map((p) => p.ts);
    chart("chart-series", "avg / min / max per minute", ["avg", "min", "max"], ["#3366cc", "#1e8e3e", "#c5221f"],
      [xs, pts.map((p) => p.avg), pts.map((p) => p.min), pts.map((p) => p.max)]);
  } catch (e) {
    $("series-info").textContent = String(e);
  }
}

function render(s) {
  $("node").textContent = `node ${s.health.node_id} · ${s.health.mode} · up ${s.health.uptime_secs}s`;
  renderHealth(s.health);
  renderTiers(s.tiers, s.samples);
  renderAlerts(s.alerts);
  renderHotkeys(s.hotkeys);
  renderTopology(s.topology);
  renderWorkers(s.workers, s.pipeline);
  document.body.dataset.updated = String(s.timestamp);
}

function connect() {
  if (source) source.close();
  const q = key() ? `?apiKey=${encodeURIComponent(key())}` : "";
  source = new EventSource(`/api/dashboard/stream${q}`);
  source.addEventListener("snapshot", (e) => {
    $("live").textContent = "live";
    $("live").className = "badge live";
    render(JSON.parse(e.data));
  });
  source.onerror = () => {
    $("live").textContent = "reconnecting";
    $("live").className = "badge down";
  };
}

async function start() {
  try {
    render(await getJSON("/api/dashboard"));
  } catch (e) {
    return;
  }
  $("key-form").hidden = true;
  $("panels").hidden = false;
  connect();
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("key-input").value);
  // A key in the address (`/dashboard?apiKey=K`) is kept for the session
// and taken out of the address bar.
const given = new URLSearchParams(location.search).get("apiKey");
if (given) {
  sessionStorage.setItem(KEY, given);
  history.replaceState(null, "", location.pathname);
}
start();
});

$("series-form").addEventListener("submit", (e) => {
  e.preventDefault();
  series = {
    tenant: $("series-tenant").value,
    server_id: $("series-server").value,
    metric: $("series-metric").value,
  };
  loadSeries();
});

$("series-recent").addEventListener("change", (e) => {
  if (!e.target.value) return;
  series = JSON.parse(e.target.value);
  $("series-tenant").value = series.tenant;
  $("series-server").value = series.server_id;
  $("series-metric").value = series.metric;
  loadSeries();
});

// A key in the address (`/dashboard?apiKey=K`) is kept for the session
// and taken out of the address bar.
const given = new URLSearchParams(location.search).get("apiKey");
if (given) {
  sessionStorage.setItem(KEY, given);
  history.replaceState(null, "", location.pathname);
}
start();
