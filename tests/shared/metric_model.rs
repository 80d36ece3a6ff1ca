//! A metric-pipeline test kit shared by the single-node and cluster
//! tests: a deterministic event generator, an independent model of the
//! aggregates a correct pipeline produces, and HTTP helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn post(url: &str, body: &str) -> (u16, Value) {
    let mut r = agent()
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

pub fn put(url: &str, body: &str) -> (u16, Value) {
    let mut r = agent()
        .put(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

pub fn get(url: &str) -> (u16, Value) {
    let mut r = agent().get(url).call().unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

/// Partition 0's stream and dead-letter stream, as the topic names them.
pub fn first_partition(http: &str) -> (String, String) {
    let (_, topic) = get(&format!("{http}/v1/topics/metrics"));
    let name = |f: &str| topic["partition"][0][f].as_str().unwrap().to_string();
    (name("stream"), name("dead_letter_stream"))
}

/// A small deterministic generator (xorshift), so every run sends the
/// same events.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An event as sent.
#[derive(Clone)]
pub struct Ev {
    pub server: String,
    pub metric: String,
    pub value: f64,
    pub ts: f64,
}

impl Ev {
    pub fn json(&self, tenant: &str) -> Value {
        json!({"tenant": tenant, "server_id": self.server, "metric": self.metric, "value": self.value, "ts": self.ts})
    }
}

/// The aggregates a correct pipeline with one partition must produce:
/// the watermark is the newest event time minus the lateness, an event
/// whose window has ended at the watermark is dropped, and percentiles
/// are by nearest rank.
#[derive(Default)]
pub struct Model {
    pub max_ts: Option<f64>,
    pub windows: BTreeMap<(String, String, i64), Vec<f64>>,
    pub late: u64,
}

impl Model {
    pub fn offer(&mut self, e: &Ev) {
        let start = (e.ts / 60.0).floor() as i64 * 60;
        let wm = self.max_ts.map_or(f64::MIN, |m| m - 10.0);
        if (start + 60) as f64 <= wm {
            self.late += 1;
            return;
        }
        self.windows
            .entry((e.server.clone(), e.metric.clone(), start))
            .or_default()
            .push(e.value);
        self.max_ts = Some(self.max_ts.map_or(e.ts, |m| m.max(e.ts)));
    }

    pub fn point(values: &[f64], ts: i64) -> Value {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).max(1) - 1];
        let sum: f64 = values.iter().sum();
        json!({
            "ts": ts,
            "count": values.len(),
            "sum": sum,
            "min": sorted[0],
            "max": sorted[sorted.len() - 1],
            "avg": sum / values.len() as f64,
            "p50": rank(0.50),
            "p95": rank(0.95),
            "p99": rank(0.99),
        })
    }

    pub fn expected(&self, server: &str, metric: &str) -> Vec<Value> {
        self.windows
            .iter()
            .filter(|((s, m, _), _)| s == server && m == metric)
            .map(|((_, _, ts), v)| Model::point(v, *ts))
            .collect()
    }
}

/// Events for `servers` × `metrics` over `minutes` minutes from `base`,
/// out of order within a few seconds, with some stragglers within the
/// 10 s lateness and, with `late`, some far behind it. (Partitions keep
/// watermarks of their own, so the model, which keeps one, is exact for
/// far stragglers only with a single partition.)
pub fn events(
    seed: u64,
    base: i64,
    minutes: i64,
    servers: usize,
    metrics: usize,
    late: bool,
) -> Vec<Ev> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for step in 0..minutes * 12 {
        let t = base as f64 + step as f64 * 5.0;
        for s in 0..servers {
            for m in 0..metrics {
                let jitter = rng.below(4000) as f64 / 1000.0;
                let straggle = match rng.below(40) {
                    0 => 8.0,          // late, but inside the lateness
                    1 if late => 95.0, // behind the watermark: dropped
                    _ => 0.0,
                };
                out.push(Ev {
                    server: format!("srv-{s}"),
                    metric: format!("m{m}"),
                    value: (rng.below(10_000) as f64) / 100.0,
                    ts: (t + jitter - straggle).max(0.0),
                });
            }
        }
    }
    out
}

pub fn send(http: &str, tenant: &str, evs: &[Ev]) {
    for chunk in evs.chunks(50) {
        let body: Vec<Value> = chunk.iter().map(|e| e.json(tenant)).collect();
        let (status, r) = post(
            &format!("{http}/v1/metrics"),
            &Value::Array(body).to_string(),
        );
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["accepted"], chunk.len(), "{r}");
    }
}

/// Sends an event far ahead, from another tenant, so the watermark closes
/// every earlier window.
pub fn close_all(http: &str, base: i64) {
    let ev = json!([{"tenant": "clock", "server_id": "x", "metric": "tick", "value": 0, "ts": base + 3600}]);
    let (status, r) = post(&format!("{http}/v1/metrics"), &ev.to_string());
    assert_eq!(status, 200, "{r}");
}

/// Polls a series until it has `want` points (bounded).
pub fn series_with(
    http: &str,
    tenant: &str,
    server: &str,
    metric: &str,
    want: usize,
) -> Vec<Value> {
    let url = format!("{http}/v1/series?tenant={tenant}&server_id={server}&metric={metric}");
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = get(&url);
        assert_eq!(status, 200, "{body}");
        let points = body["points"].as_array().cloned().unwrap_or_default();
        if points.len() >= want {
            return points;
        }
        last = body;
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{server}/{metric} never reached {want} points: {last}");
}

pub fn assert_points(got: &[Value], want: &[Value]) {
    assert_eq!(got.len(), want.len(), "points: {got:?}\nwant: {want:?}");
    for (g, w) in got.iter().zip(want) {
        for f in ["ts", "count", "min", "max", "p50", "p95", "p99"] {
            assert_eq!(g[f].as_f64(), w[f].as_f64(), "{f} of {g} vs {w}");
        }
        for f in ["sum", "avg"] {
            let (a, b) = (g[f].as_f64().unwrap(), w[f].as_f64().unwrap());
            assert!((a - b).abs() < 1e-9 * b.abs().max(1.0), "{f} of {g} vs {w}");
        }
    }
}

/// A minute boundary comfortably in the past.
pub fn base() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now / 60) * 60 - 2 * 3600
}
