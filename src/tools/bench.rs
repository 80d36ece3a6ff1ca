//! `strata bench`: load any Redis-protocol server (strata or Redis) or
//! strata's HTTP API, and report throughput and HdrHistogram latency.
//!
//! Closed loop by default (each connection sends its next batch when the
//! last one is answered, as redis-benchmark does). With `--rate` it is open
//! loop: batches are scheduled at fixed intervals and latency is measured
//! from when a batch *should* have been sent, so a stalled server shows up
//! in the percentiles instead of silently slowing the load down
//! (coordinated omission corrected).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::client::{encode_command, encode_http, Conn};
use super::keys::{KeyDist, KeyGen};

/// What the requests are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// GET / SET of strings (HTTP: GET /data/{key} / POST /data).
    GetSet,
    /// HGET / HSET of one field of a per-key hash (RESP only).
    HgetHset,
    /// The ingestor's GET /get/{key} / POST /ingest (HTTP only).
    IngestGet,
    /// The replicated store's GET /api/read/{key} / POST /api/write (HTTP only).
    ApiReadWrite,
    /// One transaction per request: MULTI, INCR, SET, GET, HSET, HGET of
    /// one key's hash tag, EXEC (RESP only).
    MultiExec,
}

impl Workload {
    /// Replies one request gets.
    fn replies(self) -> usize {
        match self {
            Workload::MultiExec => 7,
            _ => 1,
        }
    }
}

/// Which protocol to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The Redis protocol.
    Resp,
    /// strata's HTTP API.
    Http,
}

/// Options of `strata bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server port (the HTTP port with --target http).
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// Protocol to load.
    #[arg(long, value_enum, default_value_t = Target::Resp)]
    pub target: Target,
    /// Parallel connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub clients: usize,
    /// Requests in flight per connection (RESP pipelining; HTTP keep-alive pipelining).
    #[arg(short = 'P', long, default_value_t = 1)]
    pub pipeline: usize,
    /// Total requests to send (after warm-up).
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub requests: u64,
    /// Run for this many seconds instead of a request count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Open-loop rate in requests per second over all connections (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Key distribution: uniform, zipf[:theta], hotcold:ratio[:hot_keys].
    #[arg(long, default_value = "uniform")]
    pub dist: KeyDist,
    /// Value size in bytes for writes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Request mix.
    #[arg(long, value_enum, default_value_t = Workload::GetSet)]
    pub workload: Workload,
    /// Fraction of requests that are reads.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Print the result as one JSON object (the last line of output).
    #[arg(long)]
    pub json: bool,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    /// Checks the options; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > 10_000 {
            return Err(format!(
                "--clients must be in 1..=10000, got {}",
                self.clients
            ));
        }
        if self.pipeline == 0 || self.pipeline > 10_000 {
            return Err(format!(
                "--pipeline must be in 1..=10000, got {}",
                self.pipeline
            ));
        }
        if self.duration.is_none() && self.requests == 0 {
            return Err("--requests must be at least 1 (or give --duration)".into());
        }
        if let Some(d) = self.duration {
            if !(d > 0.0 && d.is_finite()) {
                return Err(format!(
                    "--duration must be a positive number of seconds, got {d}"
                ));
            }
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(format!("--rate must be >= 0, got {}", self.rate));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(format!(
                "--read-ratio must be in [0, 1], got {}",
                self.read_ratio
            ));
        }
        if !(self.warmup >= 0.0 && self.warmup.is_finite()) {
            return Err(format!("--warmup must be >= 0, got {}", self.warmup));
        }
        if self.value_size > 64 << 20 {
            return Err(format!(
                "--value-size must be at most 64 MiB, got {}",
                self.value_size
            ));
        }
        match (self.target, self.workload) {
            (Target::Http, Workload::HgetHset) => {
                Err("--workload hget-hset needs --target resp".into())
            }
            (Target::Http, Workload::MultiExec) => {
                Err("--workload multi-exec needs --target resp".into())
            }
            (Target::Resp, Workload::IngestGet) => {
                Err("--workload ingest-get needs --target http".into())
            }
            (Target::Resp, Workload::ApiReadWrite) => {
                Err("--workload api-read-write needs --target http".into())
            }
            _ => KeyGen::new(self.keyspace, self.dist.clone())
                .map(|_| ())
                .map_err(|e| format!("--keyspace/--dist: {e}")),
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// `resp` or `http`.
    pub target: String,
    /// Requests answered in the measured phase.
    pub requests: u64,
    /// Error replies.
    pub errors: u64,
    /// HTTP 404s.
    pub misses: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Whether latency is measured from the scheduled send time.
    pub open_loop: bool,
    /// CPU seconds this tool used.
    pub client_cpu_secs: f64,
}

fn cpu_secs() -> f64 {
    // utime + stime from /proc/self/stat, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

struct Shared {
    args: BenchArgs,
    host: String,
    keys: KeyGen,
    value: Vec<u8>,
    /// Requests still to send in the measured phase (count mode).
    remaining: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    misses: AtomicU64,
    stop: AtomicBool,
    measuring: AtomicBool,
}

fn build_batch(sh: &Shared, rng: &mut impl Rng, out: &mut Vec<u8>, n: usize) {
    let a = &sh.args;
    let host = &sh.host;
    let mut key = Vec::with_capacity(24);
    let mut field = Vec::with_capacity(4);
    for _ in 0..n {
        let (k, _) = sh.keys.next(rng);
        let read = rng.random_bool(a.read_ratio);
        key.clear();
        // Each workload has its own key prefix, so mixed runs never
        // collide on a key's type.
        key.extend_from_slice(match a.workload {
            Workload::GetSet | Workload::IngestGet => &b"key:"[..],
            Workload::HgetHset => &b"hash:"[..],
            Workload::ApiReadWrite => &b"record:"[..],
            Workload::MultiExec => &b"tx:{"[..],
        });
        super::client::push_num(&mut key, k);
        field.clear();
        field.push(b'f');
        super::client::push_num(&mut field, k % 16);
        let key = std::str::from_utf8(&key).unwrap_or_default();
        match (a.target, a.workload, read) {
            (Target::Resp, Workload::MultiExec, _) => {
                // `tx:{k}`: the hash tag keeps a transaction on one slot.
                let base = format!("{key}}}");
                let (n, v, h) = (
                    format!("{base}:n"),
                    format!("{base}:v"),
                    format!("{base}:h"),
                );
                encode_command(out, &[b"MULTI"]);
                encode_command(out, &[b"INCR", n.as_bytes()]);
                encode_command(out, &[b"SET", v.as_bytes(), &sh.value]);
                encode_command(out, &[b"GET", v.as_bytes()]);
                encode_command(out, &[b"HSET", h.as_bytes(), &field, &sh.value]);
                encode_command(out, &[b"HGET", h.as_bytes(), &field]);
                encode_command(out, &[b"EXEC"]);
            }
            (Target::Resp, Workload::GetSet, true) => {
                encode_command(out, &[b"GET", key.as_bytes()])
            }
            (Target::Resp, Workload::GetSet, false) => {
                encode_command(out, &[b"SET", key.as_bytes(), &sh.value])
            }
            (Target::Resp, _, true) => encode_command(out, &[b"HGET", key.as_bytes(), &field]),
            (Target::Resp, _, false) => {
                encode_command(out, &[b"HSET", key.as_bytes(), &field, &sh.value])
            }
            (Target::Http, Workload::IngestGet, true) => {
                encode_http(out, "GET", host, &format!("/get/{key}"), None)
            }
            (Target::Http, Workload::IngestGet, false) => {
                let body = serde_json::json!({
                    "key": key,
                    "value": {"user_id": k, "video_id": rng.random_range(0..100_000u32), "watch_time": rng.random_range(0.0..60.0f64), "pad": String::from_utf8_lossy(&sh.value)},
                    "ttl_sec": 3600,
                });
                encode_http(
                    out,
                    "POST",
                    host,
                    "/ingest",
                    Some(body.to_string().as_bytes()),
                );
            }
            (Target::Http, Workload::ApiReadWrite, true) => {
                encode_http(out, "GET", host, &format!("/api/read/{key}"), None)
            }
            (Target::Http, Workload::ApiReadWrite, false) => {
                let body =
                    serde_json::json!({"key": key, "content": String::from_utf8_lossy(&sh.value)});
                encode_http(
                    out,
                    "POST",
                    host,
                    "/api/write",
                    Some(body.to_string().as_bytes()),
                );
            }
            (Target::Http, _, true) => encode_http(out, "GET", host, &format!("/data/{key}"), None),
            (Target::Http, _, false) => {
                let body =
                    serde_json::json!({"key": key, "value": String::from_utf8_lossy(&sh.value)});
                encode_http(
                    out,
                    "POST",
                    host,
                    "/data",
                    Some(body.to_string().as_bytes()),
                );
            }
        }
    }
}

async fn client_task(sh: Arc<Shared>, id: usize, start: Instant) -> Result<Histogram<u64>, String> {
    let a = &sh.args;
    let addr = format!("{}:{}", a.host, a.port);
    let mut conn = Conn::connect(&addr, a.target == Target::Http)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut out = Vec::with_capacity(4096);
    // Open loop: this connection's share of the rate, in batches per second.
    let interval = (a.rate > 0.0)
        .then(|| Duration::from_secs_f64(a.pipeline as f64 * a.clients as f64 / a.rate));
    let mut next_send =
        start + interval.map_or(Duration::ZERO, |i| i.mul_f64(id as f64 / a.clients as f64));
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let measuring = sh.measuring.load(Ordering::Relaxed);
        let mut n = a.pipeline;
        if measuring && a.duration.is_none() {
            // Claim up to a batch of the remaining requests.
            let claimed = sh
                .remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                    Some(r.saturating_sub(n as u64))
                });
            let before = claimed.unwrap_or(0);
            if before == 0 {
                break;
            }
            n = n.min(before as usize);
        }
        let intended = match interval {
            Some(i) => {
                let now = Instant::now();
                if next_send > now {
                    tokio::time::sleep_until(next_send.into()).await;
                }
                let t = next_send;
                next_send += i;
                t
            }
            None => Instant::now(),
        };
        out.clear();
        build_batch(&sh, &mut rng, &mut out, n);
        let res = conn
            .round_trip(&out, n * a.workload.replies())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let us = intended.elapsed().as_micros().max(1) as u64;
        if measuring {
            hist.record_n(us, n as u64).map_err(|e| e.to_string())?;
            sh.done.fetch_add(n as u64, Ordering::Relaxed);
            sh.errors.fetch_add(res.errors as u64, Ordering::Relaxed);
            sh.misses.fetch_add(res.misses as u64, Ordering::Relaxed);
        }
    }
    Ok(hist)
}

/// Runs the benchmark described by `args`.
pub async fn run(args: BenchArgs) -> Result<BenchReport, String> {
    args.validate()?;
    let keys = KeyGen::new(args.keyspace, args.dist.clone())?;
    let sh = Arc::new(Shared {
        value: vec![b'x'; args.value_size],
        keys,
        remaining: AtomicU64::new(args.requests),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        misses: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(args.warmup == 0.0),
        host: format!("{}:{}", args.host, args.port),
        args: args.clone(),
    });
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for id in 0..args.clients {
        tasks.push(tokio::spawn(client_task(sh.clone(), id, start)));
    }
    if args.warmup > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        sh.measuring.store(true, Ordering::Release);
    }
    let measure_start = Instant::now();
    let cpu_start = cpu_secs();
    let progress = {
        let sh = sh.clone();
        let quiet = args.quiet;
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = sh.done.load(Ordering::Relaxed);
                if !quiet {
                    eprint!(
                        "\r[{:>6.1}s] {done} requests, {} req/s, {} errors     ",
                        measure_start.elapsed().as_secs_f64(),
                        done - last,
                        sh.errors.load(Ordering::Relaxed)
                    );
                }
                last = done;
            }
        })
    };
    if let Some(d) = args.duration {
        tokio::time::sleep(Duration::from_secs_f64(d)).await;
        sh.stop.store(true, Ordering::Release);
    }
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(h)) => hist.add(&h).map_err(|e| e.to_string())?,
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(e.to_string()),
        }
        // One failed connection ends the run for all.
        if failure.is_some() {
            sh.stop.store(true, Ordering::Release);
        }
    }
    progress.abort();
    if !args.quiet {
        eprintln!();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let seconds = measure_start.elapsed().as_secs_f64();
    let requests = sh.done.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(BenchReport {
        target: match args.target {
            Target::Resp => "resp".into(),
            Target::Http => "http".into(),
        },
        requests,
        errors: sh.errors.load(Ordering::Relaxed),
        misses: sh.misses.load(Ordering::Relaxed),
        seconds,
        throughput: requests as f64 / seconds.max(1e-9),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        open_loop: args.rate > 0.0,
        client_cpu_secs: cpu_secs() - cpu_start,
    })
}

/// The human-readable result table.
pub fn render(args: &BenchArgs, r: &BenchReport) -> String {
    format!(
        "strata bench: {} {}:{}, {} clients, pipeline {}, {:?} (reads {:.0}%), {} keys {:?}, {}-byte values\n\
         requests    {} ({} errors, {} misses) in {:.2} s\n\
         throughput  {:.0} req/s\n\
         latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}{}\n\
         client cpu  {:.2} s ({:.2} us per request)",
        r.target,
        args.host,
        args.port,
        args.clients,
        args.pipeline,
        args.workload,
        args.read_ratio * 100.0,
        args.keyspace,
        args.dist,
        args.value_size,
        r.requests,
        r.errors,
        r.misses,
        r.seconds,
        r.throughput,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.p999_ms,
        r.max_ms,
        if r.open_loop { "  (open loop, from scheduled send times)" } else { "" },
        r.client_cpu_secs,
        r.client_cpu_secs * 1e6 / r.requests.max(1) as f64,
    )
}
