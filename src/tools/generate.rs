//! `strata generate`: the seed's traffic generator. Sends events to
//! `POST /ingest` (or over RESP) at a steady rate with a share of hot keys,
//! retrying failures with exponential backoff and full jitter.
//!
//! Event shapes are one enum: the video-watch events of the ingest seed,
//! and the metric events `{tenant, server_id, metric, value, ts}` that the
//! stream aggregation consumes.

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
        Shape::Metric => {
            const METRICS: [&str; 4] = ["cpu", "mem", "disk_io", "latency_ms"];
            let tenant = format!("tenant-{}", idx % 8);
            let server = format!("srv-{idx}");
            let metric = METRICS[rng.random_range(0..METRICS.len())];
            (
                format!("metric:{tenant}:{server}:{metric}"),
                json!({"tenant": tenant, "server_id": server, "metric": metric, "value": rng.random_range(0.0..100.0f64), "ts": ts}),
            )
        }
    }
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
    })
}
