//! `strata generate`: the seeds' traffic generators, retrying failures
//! with exponential backoff and full jitter.
//!
//! - `--shape watch` (seed 000): video-watch events to `POST /ingest` (or
//!   SET over RESP) at a steady rate, with a share of hot keys.
//! - `--shape metric` (seed 004): agents on `--servers` servers, each
//!   reporting `--metrics` metrics every `--batch-interval` seconds, in
//!   batches of up to `--batch-size` events to `POST /v1/metrics`; with
//!   `--batch-interval 0` as fast as the server takes them. `--late-ratio`
//!   and `--bad-ratio` stamp some events late or break them, to exercise
//!   the watermark and the schema checks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::client::{encode_command, encode_http, Conn};

/// The kind of event to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// `{user_id, video_id, ts, watch_time}` keyed by `feature:user:<id>`.
    Watch,
    /// `{tenant, server_id, metric, value, ts}` keyed by tenant/server/metric.
    Metric,
}

/// Options of `strata generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Base URL of the HTTP API.
    #[arg(long, env = "INGESTOR_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Send over RESP to this host:port instead of HTTP (SET key value EX ttl).
    #[arg(long, value_name = "HOST:PORT")]
    pub resp: Option<String>,
    /// Events per second.
    #[arg(long, env = "RPS", default_value_t = 200.0)]
    pub rps: f64,
    /// Fraction of events that use one of the hot keys.
    #[arg(long, env = "HOTKEY_RATIO", default_value_t = 0.2)]
    pub hotkey_ratio: f64,
    /// Number of hot keys.
    #[arg(long, default_value_t = 100)]
    pub hot_keys: u64,
    /// Number of cold keys to draw from.
    #[arg(long, default_value_t = 1_000_000)]
    pub keyspace: u64,
    /// Event shape.
    #[arg(long, value_enum, default_value_t = Shape::Watch)]
    pub shape: Shape,
    /// TTL of stored events, seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_sec: u64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Retries per event before it counts as failed.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// First backoff, milliseconds (doubles per retry, capped at 5 s, full jitter).
    #[arg(long, default_value_t = 100)]
    pub backoff_ms: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Print the final report as one JSON object (the last line of output).
    #[arg(long)]
    pub json: bool,
    /// Metric shape: servers with an agent each.
    #[arg(long, default_value_t = 100)]
    pub servers: u64,
    /// Metric shape: metrics each server reports.
    #[arg(long, default_value_t = 20)]
    pub metrics: u64,
    /// Metric shape: tenants the servers are spread over.
    #[arg(long, default_value_t = 1)]
    pub tenants: u64,
    /// Metric shape: seconds between an agent's reports (0: full speed).
    #[arg(long, default_value_t = 15.0)]
    pub batch_interval: f64,
    /// Metric shape: most events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Metric shape: share of events stamped behind the watermark.
    #[arg(long, default_value_t = 0.0)]
    pub late_ratio: f64,
    /// Metric shape: share of events that break the schema.
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,
}

impl GenerateArgs {
    /// Checks the options; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rps > 0.0 && self.rps.is_finite() && self.rps <= 1e7) {
            return Err(format!(
                "--rps (RPS) must be in (0, 10000000], got {}",
                self.rps
            ));
        }
        if !(0.0..=1.0).contains(&self.hotkey_ratio) {
            return Err(format!(
                "--hotkey-ratio (HOTKEY_RATIO) must be in [0, 1], got {}",
                self.hotkey_ratio
            ));
        }
        if self.hot_keys == 0 || self.keyspace == 0 {
            return Err("--hot-keys and --keyspace must be at least 1".into());
        }
        if self.connections == 0 || self.connections > 1024 {
            return Err(format!(
                "--connections must be in 1..=1024, got {}",
                self.connections
            ));
        }
        if let Some(d) = self.duration {
            if !(d > 0.0 && d.is_finite()) {
                return Err(format!(
                    "--duration must be a positive number of seconds, got {d}"
                ));
            }
        }
        if self.resp.is_none() {
            self.http_addr()?;
        }
        if self.shape == Shape::Metric {
            if self.resp.is_some() {
                return Err("--shape metric sends to the HTTP API; drop --resp".into());
            }
            if self.servers == 0 || self.metrics == 0 || self.tenants == 0 {
                return Err("--servers, --metrics and --tenants must be at least 1".into());
            }
            if !(1..=100_000).contains(&self.batch_size) {
                return Err(format!(
                    "--batch-size must be in 1..=100000, got {}",
                    self.batch_size
                ));
            }
            if !(self.batch_interval >= 0.0 && self.batch_interval.is_finite()) {
                return Err(format!(
                    "--batch-interval must be 0 or more seconds, got {}",
                    self.batch_interval
                ));
            }
            for (name, r) in [
                ("--late-ratio", self.late_ratio),
                ("--bad-ratio", self.bad_ratio),
            ] {
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("{name} must be in [0, 1], got {r}"));
                }
            }
        }
        Ok(())
    }

    /// host:port of `--url`.
    fn http_addr(&self) -> Result<String, String> {
        let rest = self.url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "--url (INGESTOR_URL) must start with http://, got {:?}",
                self.url
            )
        })?;
        let hostport = rest.split('/').next().unwrap_or_default();
        if hostport.is_empty() {
            return Err(format!("--url (INGESTOR_URL) has no host: {:?}", self.url));
        }
        Ok(if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        })
    }
}

/// Counts of a generator run.
#[derive(Debug, Default, Serialize, Clone)]
pub struct GenerateReport {
    /// Events sent (first attempts).
    pub sent: u64,
    /// Events stored.
    pub ok: u64,
    /// Events that failed after every retry.
    pub failed: u64,
    /// Retries made.
    pub retried: u64,
    /// Events that used a hot key.
    pub hot: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// Metric shape: events the server refused (`--bad-ratio` ones).
    pub rejected: u64,
    /// Metric shape: events stamped late on purpose.
    pub late: u64,
    /// Metric shape: requests sent.
    pub batches: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    hot: AtomicU64,
}

/// One event: its key and JSON value.
fn make_event(
    shape: Shape,
    rng: &mut impl Rng,
    hot: bool,
    hot_keys: u64,
    keyspace: u64,
) -> (String, serde_json::Value) {
    let idx = if hot {
        rng.random_range(0..hot_keys)
    } else {
        hot_keys + rng.random_range(0..keyspace)
    };
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    match shape {
        Shape::Watch => (
            format!("feature:user:{idx}"),
            json!({"user_id": idx, "video_id": rng.random_range(0..100_000u32), "ts": ts, "watch_time": (rng.random_range(0.0..120.0f64) * 10.0).round() / 10.0}),
        ),
        Shape::Metric => unreachable!("metric events come from agents (see `metric_batches`)"),
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The metric names agents report: seed 004's usual ones, then numbered.
fn metric_name(i: u64) -> String {
    const NAMES: [&str; 6] = ["cpu", "mem", "disk_io", "net_in", "net_out", "latency_ms"];
    NAMES
        .get(i as usize)
        .map_or_else(|| format!("metric_{i}"), |n| (*n).to_string())
}

/// One report: every metric of servers `from..to`, stamped now (some late
/// or broken, as asked), as JSON bodies of up to `--batch-size` events.
/// Returns the bodies with their event counts, and how many were late.
fn metric_batches(
    args: &GenerateArgs,
    rng: &mut impl Rng,
    from: u64,
    to: u64,
) -> (Vec<(String, u64)>, u64) {
    let ts = now_secs();
    let mut out = Vec::new();
    let mut late = 0;
    let mut body = String::from("[");
    let mut n = 0u64;
    for server in from..to {
        let tenant = format!("tenant-{}", server % args.tenants);
        let server_id = format!("srv-{server}");
        for m in 0..args.metrics {
            let mut ev = json!({
                "tenant": tenant,
                "server_id": server_id,
                "metric": metric_name(m),
                "value": (rng.random_range(0.0..100.0f64) * 100.0).round() / 100.0,
                "ts": ts,
            });
            if args.late_ratio > 0.0 && rng.random_bool(args.late_ratio) {
                // Two to three minutes back: behind any watermark of a
                // partition that is receiving current events.
                ev["ts"] = json!(ts - rng.random_range(120.0..180.0));
                late += 1;
            }
            if args.bad_ratio > 0.0 && rng.random_bool(args.bad_ratio) {
                match rng.random_range(0..3) {
                    0 => ev["value"] = json!("n/a"),
                    1 => {
                        ev.as_object_mut().map(|o| o.remove("server_id"));
                    }
                    _ => ev["ts"] = json!(-1),
                }
            }
            if n > 0 {
                body.push(',');
            }
            body.push_str(&ev.to_string());
            n += 1;
            if n as usize == args.batch_size {
                body.push(']');
                out.push((std::mem::replace(&mut body, String::from("[")), n));
                n = 0;
            }
        }
    }
    if n > 0 {
        body.push(']');
        out.push((body, n));
    }
    (out, late)
}

#[derive(Default)]
struct MetricCounters {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    batches: AtomicU64,
}

/// Posts batches from `rx` to `/v1/metrics`, retrying a batch the server
/// could not take (connection lost, 429, 5xx) with backoff. A batch the
/// server answered is never sent again, so no event is counted twice.
async fn metric_sender(
    args: Arc<GenerateArgs>,
    mut rx: mpsc::Receiver<(String, u64)>,
    c: Arc<MetricCounters>,
) {
    let addr = args.http_addr().unwrap_or_default();
    let mut conn: Option<Conn> = None;
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut out = Vec::with_capacity(256 * 1024);
    while let Some((body, n)) = rx.recv().await {
        out.clear();
        encode_http(
            &mut out,
            "POST",
            &addr,
            "/v1/metrics",
            Some(body.as_bytes()),
        );
        c.sent.fetch_add(n, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            let result = async {
                if conn.is_none() {
                    conn = Some(Conn::connect(&addr, true).await?);
                }
                match conn.as_mut() {
                    Some(cn) => cn.round_trip(&out, 1).await,
                    None => Err(std::io::Error::other("no connection")),
                }
            }
            .await;
            let status = match &result {
                Ok(r) => r.last_status,
                Err(_) => {
                    conn = None;
                    0
                }
            };
            if status == 200 || status == 400 {
                let answer: serde_json::Value = conn
                    .as_ref()
                    .and_then(|cn| serde_json::from_slice(cn.last_body()).ok())
                    .unwrap_or_default();
                let count = |f: &str| {
                    answer
                        .get(f)
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0)
                };
                c.accepted.fetch_add(count("accepted"), Ordering::Relaxed);
                c.rejected.fetch_add(count("rejected"), Ordering::Relaxed);
                break;
            }
            if attempt >= args.max_retries {
                c.failed.fetch_add(n, Ordering::Relaxed);
                break;
            }
            c.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(args.backoff_ms, attempt, &mut rng)).await;
            attempt += 1;
        }
    }
}

/// Seed 004's agents: every server reports all its metrics once per
/// `--batch-interval` (or back to back at 0), until `--duration` or
/// `--count` events or Ctrl-C.
async fn run_metric(args: Arc<GenerateArgs>) -> Result<GenerateReport, String> {
    let c = Arc::new(MetricCounters::default());
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (tx, rx) = mpsc::channel(4);
        senders.push(tx);
        tasks.push(tokio::spawn(metric_sender(args.clone(), rx, c.clone())));
    }
    let start = Instant::now();
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let (mut made, mut late, mut k) = (0u64, 0u64, 0usize);
    // A round reports every server in slices of this many, so a huge
    // fleet is not built in memory at once.
    let step = (args.batch_size as u64 * 16 / args.metrics).max(1);
    let mut next_server = 0u64;
    let mut last_report = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'run: loop {
        let round = Instant::now();
        let mut done = 0;
        while done < args.servers {
            let to = (next_server + step.min(args.servers - done)).min(args.servers);
            let (batches, l) = metric_batches(&args, &mut rng, next_server, to);
            done += to - next_server;
            next_server = if to == args.servers { 0 } else { to };
            late += l;
            for b in batches {
                if args.count.is_some_and(|cap| made >= cap)
                    || args
                        .duration
                        .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
                {
                    break 'run;
                }
                made += b.1;
                tokio::select! {
                    r = senders[k % senders.len()].send(b) => {
                        if r.is_err() {
                            return Err("a sender task stopped".into());
                        }
                    }
                    _ = &mut ctrl_c => break 'run,
                }
                k += 1;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                eprintln!(
                    "[generate] events sent={} accepted={} rejected={} failed={}",
                    c.sent.load(Ordering::Relaxed),
                    c.accepted.load(Ordering::Relaxed),
                    c.rejected.load(Ordering::Relaxed),
                    c.failed.load(Ordering::Relaxed)
                );
                last_report = Instant::now();
            }
        }
        if args.batch_interval > 0.0 {
            let wait = Duration::from_secs_f64(args.batch_interval).saturating_sub(round.elapsed());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = &mut ctrl_c => break 'run,
            }
            if args
                .duration
                .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
            {
                break;
            }
        }
    }
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    Ok(GenerateReport {
        sent: c.sent.load(Ordering::Relaxed),
        ok: c.accepted.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        retried: c.retried.load(Ordering::Relaxed),
        hot: 0,
        seconds: start.elapsed().as_secs_f64(),
        rejected: c.rejected.load(Ordering::Relaxed),
        late,
        batches: c.batches.load(Ordering::Relaxed),
    })
}

/// Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)].
pub fn backoff(base_ms: u64, attempt: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = base_ms.saturating_mul(1u64 << attempt.min(20)).min(5_000);
    Duration::from_millis(rng.random_range(0..=ceiling))
}

async fn worker(
    args: Arc<GenerateArgs>,
    mut rx: mpsc::Receiver<(String, serde_json::Value, bool)>,
    c: Arc<Counters>,
) {
    let (addr, http) = match &args.resp {
        Some(a) => (a.clone(), false),
        None => (args.http_addr().unwrap_or_default(), true),
    };
    let mut conn: Option<Conn> = None;
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut out = Vec::with_capacity(1024);
    while let Some((key, value, hot)) = rx.recv().await {
        out.clear();
        if http {
            let cache_hint = if hot { "hot_read" } else { "none" };
            let body = json!({"key": key, "value": value, "ttl_sec": args.ttl_sec, "cache_hint": cache_hint}).to_string();
            encode_http(&mut out, "POST", &addr, "/ingest", Some(body.as_bytes()));
        } else {
            let v = value.to_string();
            let ttl = args.ttl_sec.to_string();
            encode_command(
                &mut out,
                &[b"SET", key.as_bytes(), v.as_bytes(), b"EX", ttl.as_bytes()],
            );
        }
        c.sent.fetch_add(1, Ordering::Relaxed);
        if hot {
            c.hot.fetch_add(1, Ordering::Relaxed);
        }
        let mut attempt = 0;
        loop {
            let result = async {
                if conn.is_none() {
                    conn = Some(Conn::connect(&addr, http).await?);
                }
                match conn.as_mut() {
                    Some(cn) => cn.round_trip(&out, 1).await,
                    None => Err(std::io::Error::other("no connection")),
                }
            }
            .await;
            let ok = matches!(&result, Ok(r) if r.errors == 0 && r.misses == 0);
            if ok {
                c.ok.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if result.is_err() {
                conn = None;
            }
            if attempt >= args.max_retries {
                c.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            c.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(args.backoff_ms, attempt, &mut rng)).await;
            attempt += 1;
        }
    }
}

/// Runs the generator until `--duration`, `--count` or Ctrl-C.
pub async fn run(args: GenerateArgs) -> Result<GenerateReport, String> {
    args.validate()?;
    let args = Arc::new(args);
    if args.shape == Shape::Metric {
        return run_metric(args).await;
    }
    let c = Arc::new(Counters::default());
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (tx, rx) = mpsc::channel(1024);
        senders.push(tx);
        workers.push(tokio::spawn(worker(args.clone(), rx, c.clone())));
    }
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rps);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut n = 0u64;
    let mut last_report = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if args.count.is_some_and(|cap| n >= cap)
            || args
                .duration
                .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut ctrl_c => break,
        }
        let hot = rng.random_bool(args.hotkey_ratio);
        let (key, value) = make_event(args.shape, &mut rng, hot, args.hot_keys, args.keyspace);
        let w = (n as usize) % senders.len();
        if senders[w].send((key, value, hot)).await.is_err() {
            return Err("a sender task stopped".into());
        }
        n += 1;
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "[generate] sent={} ok={} failed={} retried={}",
                c.sent.load(Ordering::Relaxed),
                c.ok.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
                c.retried.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
    }
    drop(senders);
    for w in workers {
        let _ = w.await;
    }
    Ok(GenerateReport {
        sent: c.sent.load(Ordering::Relaxed),
        ok: c.ok.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        retried: c.retried.load(Ordering::Relaxed),
        hot: c.hot.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
        ..GenerateReport::default()
    })
}
