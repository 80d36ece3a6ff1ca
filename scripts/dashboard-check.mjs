// The dashboard in a real browser: loads /dashboard in headless Chromium
// (puppeteer-core) against a strata node that has data, enters the API
// key when the page asks for it, waits for live updates over SSE, and
// checks that each panel shows the node's real values (compared with
// /api/dashboard read directly). Saves a screenshot.
//
//   node dashboard-check.mjs HTTP_PORT RESP_PORT API_KEY CHROMIUM SCREENSHOT
import fs from "node:fs";
import net from "node:net";
import puppeteer from "puppeteer-core";

const [, , httpPort, respPort, apiKey, chromium, shot] = process.argv;
const base = `http://127.0.0.1:${httpPort}`;
const failures = [];

function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
}

// Sends RESP commands on one connection, then QUIT; resolves when the
// server has answered them all and closed.
function redis(commands) {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ host: "127.0.0.1", port: Number(respPort) });
    const parts = [];
    for (const args of [...commands, ["QUIT"]]) {
      parts.push(`*${args.length}\r\n`);
      for (const a of args) parts.push(`$${Buffer.byteLength(String(a))}\r\n${a}\r\n`);
    }
    s.on("error", reject);
    s.on("data", () => {});
    s.on("end", resolve);
    s.write(parts.join(""));
  });
}

async function api(path) {
  const r = await fetch(`${base}${path}`, { headers: { "X-API-Key": apiKey } });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Data: enough keys to fill the small memory tier past 80%, one key read
// often enough to be hot, and metric events whose windows close.
const value = "v".repeat(100);
for (let batch = 0; batch < 6; batch++) {
  const cmds = [];
  for (let i = 0; i < 5000; i++) cmds.push(["SET", `key:${batch * 5000 + i}`, value]);
  await redis(cmds);
}
await redis([["SET", "hot:item", "x"], ...Array.from({ length: 3000 }, () => ["GET", "hot:item"])]);
const now = Date.now() / 1000;
const events = [];
for (let i = 0; i < 600; i++) {
  events.push({ tenant: "acme", server_id: `web-${i % 3}`, metric: "cpu", value: i % 100, ts: now - 300 + i * 0.5 });
}
const posted = await fetch(`${base}/v1/metrics`, {
  method: "POST",
  headers: { "content-type": "application/json", "X-API-Key": apiKey },
  body: JSON.stringify(events),
});
check(posted.ok, `POST /v1/metrics accepted the events (${posted.status})`);

// Wait for the monitor to see it all: the alert, closed windows.
let truth = null;
for (let i = 0; i < 60; i++) {
  truth = await api("/api/dashboard");
  if (truth.alerts.firing.includes("high_memory") && truth.pipeline.windows > 0 && truth.samples.length >= 3) break;
  await sleep(500);
}
check(truth.alerts.firing.includes("high_memory"), "the high_memory alert fired on the node");

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1800 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${base}/dashboard`, { waitUntil: "domcontentloaded" });

  // No key yet: the page asks for one; a wrong one is refused.
  await page.waitForSelector("#key-form:not([hidden])", { timeout: 10000 });
  check(true, "the page asks for the API key");
  await page.type("#key-input", "wrong-key");
  await page.click("#key-form button");
  await page.waitForFunction(() => document.querySelector("#key-error").textContent.includes("refused"), { timeout: 10000 });
  check(true, "a wrong key is refused");
  await page.$eval("#key-input", (el) => { el.value = ""; });
  await page.type("#key-input", apiKey);
  await page.click("#key-form button");

  // Live over SSE: the badge says so, and the snapshot time moves on.
  await page.waitForSelector("#live.live", { timeout: 15000 });
  const first = await page.$eval("body", (b) => Number(b.dataset.updated));
  await page.waitForFunction((t) => Number(document.body.dataset.updated) > t, { timeout: 15000 }, first);
  check(true, "the page updates live over server-sent events");

  const dom = await page.evaluate(() => {
    const t = (id) => document.getElementById(id).textContent;
    const cells = (sel) => [...document.querySelectorAll(sel)].map((r) => [...r.cells].map((c) => c.textContent));
    return {
      score: t("health-score"),
      status: t("health-status"),
      components: cells("#health-components tbody tr").length,
      memory: t("tier-memory"),
      disk: t("tier-disk"),
      hits: t("hit-ratio"),
      alerts: cells("#alerts tbody tr"),
      firing: t("alerts-firing"),
      hot: cells("#hotkeys tbody tr"),
      nodes: cells("#topology-nodes tbody tr"),
      shards: cells("#topology-shards tbody tr"),
      workers: cells("#workers tbody tr"),
      workersSummary: t("workers-summary"),
      charts: document.querySelectorAll(".chart canvas").length,
      seriesInfo: t("series-info"),
      seriesChart: document.querySelectorAll("#chart-series canvas").length,
    };
  });
  const now2 = await api("/api/dashboard");
  check(/^\d+$/.test(dom.score) && Math.abs(Number(dom.score) - now2.health.health_score) <= 10,
    `health score shown (${dom.score}) is the node's (${now2.health.health_score})`);
  check(dom.status === now2.health.health_status || ["healthy", "warning", "critical"].includes(dom.status),
    `health band shown: ${dom.status}`);
  check(dom.components === now2.health.health_components.length, `${dom.components} health components listed`);
  const keysShown = Number((dom.memory.match(/(\d+) keys/) || [])[1]) + Number((dom.disk.match(/(\d+) keys/) || [])[1]);
  check(keysShown >= 30000, `tiers show the keys written (${dom.memory} | ${dom.disk})`);
  check(/memory \d/.test(dom.hits), `hit ratio per tier shown: ${dom.hits}`);
  check(dom.charts >= 3, `${dom.charts} charts drawn`);
  check(dom.alerts.some((r) => r.join(" ").includes("High memory usage")), "the high memory alert is listed");
  check(dom.firing.includes("high_memory"), `firing rules shown: ${dom.firing}`);
  check(dom.hot.some((r) => r[0] === "hot:item" && Number(r[2]) >= 100), `hot key listed: ${JSON.stringify(dom.hot.slice(0, 3))}`);
  check(dom.nodes.length >= 1 && dom.nodes[0][2] === "UP", `topology lists the node (${JSON.stringify(dom.nodes[0])})`);
  check(dom.shards.length >= 1 && dom.shards[0][1].includes("0-16383"), `topology lists the shards (${JSON.stringify(dom.shards[0])})`);
  check(dom.workers.length === now2.workers.partitions.length && dom.workers.length > 0, `${dom.workers.length} partitions with their lag`);
  check(/pool \d+/.test(dom.workersSummary) && /windows stored [1-9]/.test(dom.workersSummary), `workers: ${dom.workersSummary}`);
  check(/acme \/ web-\d \/ cpu: [1-9]\d* one-minute points/.test(dom.seriesInfo), `series: ${dom.seriesInfo}`);
  check(dom.seriesChart === 1, "the series chart is drawn");
  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
  await page.screenshot({ path: shot, fullPage: true });
  check(fs.statSync(shot).size > 10000, `screenshot saved to ${shot}`);
} finally {
  await browser.close();
}
if (failures.length) {
  console.log(`dashboard-check: ${failures.length} checks failed`);
  process.exit(1);
}
console.log("dashboard-check: all checks passed");
