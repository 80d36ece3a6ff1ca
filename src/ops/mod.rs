//! Operating a node: its health score, alert rules, hot keys, the
//! machine's figures, and the monitor that ties them together.
//!
//! The monitor runs on every node. At each tick (`[monitoring]
//! interval_secs`, or seed 001's `start_monitoring` interval) it reads
//! the machine and the store, scores the node's health, asks the other
//! members for theirs, probes its own RESP port, looks at the
//! aggregation workers and the topic's backlog, evaluates the alert
//! rules, and keeps a bounded history of samples for the dashboard. A
//! second loop runs the worker autoscaler at its own interval.
//!
//! Alerts go to the log, the history (`GET /api/alerts`), `/metrics`, and
//! to `alert_webhook_url` as JSON, retried with backoff.

pub mod alerts;
pub mod backup;
pub mod health;
pub mod hotkeys;
pub mod system;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::commands::{dispatch, Reply, Session};
use crate::node::{ClientHandle, Node};
use crate::storage::{now_ms, StatsSnapshot};
use alerts::{Alert, Engine, Observed};
use system::{Sampler, SystemSample};

/// Samples kept for the dashboard's charts.
const SAMPLES_KEPT: usize = 720;
/// Attempts to deliver one alert to the webhook.
const WEBHOOK_ATTEMPTS: u32 = 5;

/// Settings of the monitor (`[monitoring]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Run the monitor (seed 001's `ENABLE_SYSTEM_MONITORING`).
    pub enabled: bool,
    /// Seconds between two ticks.
    pub interval_secs: f64,
    /// Run the worker autoscaler (seed 001's `ENABLE_AUTO_SCALING`).
    pub autoscaling: bool,
    /// Seconds between two autoscaler runs.
    pub autoscale_interval_secs: f64,
    /// Alerts the history keeps.
    pub alert_history: usize,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            interval_secs: 10.0,
            autoscaling: true,
            autoscale_interval_secs: 120.0,
            alert_history: 500,
        }
    }
}

/// Shortest interval a loop accepts, in seconds.
pub const MIN_INTERVAL: f64 = 0.2;
/// Longest, a day.
pub const MAX_INTERVAL: f64 = 86_400.0;

impl MonitoringConfig {
    /// Checks every field; the error names the bad one.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (f, v) in [
            ("interval_secs", self.interval_secs),
            ("autoscale_interval_secs", self.autoscale_interval_secs),
        ] {
            if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&v) {
                return Err((
                    format!("monitoring.{f}"),
                    "must be from 0.2 to 86400 seconds".into(),
                ));
            }
        }
        if !(1..=100_000).contains(&self.alert_history) {
            return Err((
                "monitoring.alert_history".into(),
                "must be from 1 to 100000".into(),
            ));
        }
        Ok(())
    }
}

/// One tick's reading of the node, for charts and rates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// When, epoch ms.
    pub timestamp: u64,
    /// Bytes in the memory tier.
    pub memory_bytes: u64,
    /// The memory tier's cap.
    pub memory_cap: u64,
    /// Bytes in the disk tier.
    pub disk_bytes: u64,
    /// Keys in memory.
    pub entries_memory: u64,
    /// Keys on disk.
    pub entries_disk: u64,
    /// Reads served from memory, total.
    pub hits_memory: u64,
    /// Reads served from disk, total.
    pub hits_disk: u64,
    /// Reads that found nothing, total.
    pub misses: u64,
    /// Keys spilled to disk, total.
    pub spilled: u64,
    /// Keys offloaded by age, total.
    pub offloaded: u64,
    /// Keys promoted back to memory, total.
    pub promotions: u64,
    /// Commands run, total.
    pub commands: u64,
    /// Commands a second since the last sample.
    pub ops_per_sec: f64,
    /// The health score.
    pub health_score: u32,
    /// CPU use, percent.
    pub cpu_percent: f64,
    /// Process resident memory.
    pub process_rss: u64,
}

/// One member's health as the monitor last heard it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberHealth {
    /// Node id.
    pub id: String,
    /// Its HTTP address.
    pub http: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Its score (0 when it didn't answer).
    pub score: u32,
    /// Its band.
    pub status: &'static str,
}

/// The cluster's health (see [`cluster_score`]), and every member's.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterHealth {
    /// 0-100.
    pub score: u32,
    /// Its band.
    pub status: &'static str,
    /// Each member.
    pub nodes: Vec<MemberHealth>,
    /// When it was put together, epoch ms.
    pub timestamp: u64,
}

/// One partition of the metrics topic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionView {
    /// Partition number.
    pub partition: usize,
    /// Its stream key.
    pub stream: String,
    /// Entries in it.
    pub length: u64,
    /// Entries the aggregation group has not read.
    pub lag: u64,
    /// The group's last delivered id.
    pub committed: String,
    /// Whether this node runs its worker.
    pub worker_here: bool,
}

/// What the monitor knows at the moment.
struct State {
    monitoring: bool,
    interval: Duration,
    autoscaling: bool,
    autoscale_interval: Duration,
    samples: VecDeque<Sample>,
    system: Option<SystemSample>,
    cluster: Option<ClusterHealth>,
    partitions: Vec<PartitionView>,
    /// Rejected plus dead-lettered totals, newest last, for the hourly count.
    failed: VecDeque<(u64, u64)>,
    busy: (f64, f64),
    load_factor: f64,
    probe_secs: Option<f64>,
    /// Partitions aggregated without trouble, of those this node should.
    workers: Option<(usize, usize)>,
    /// Since when each partition this node should aggregate has had no
    /// working worker, epoch ms.
    missing_since: BTreeMap<usize, u64>,
    latency: Option<Latency>,
    last_command_buckets: Option<Vec<(f64, u64)>>,
}

/// Command latency percentiles over the last interval, from the
/// per-command histograms (upper bounds of their buckets).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Commands in the interval.
    pub commands: u64,
    /// 50th percentile, at most this many seconds.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The monitor's shared state.
pub struct Monitor {
    alerts: Mutex<Engine>,
    state: Mutex<State>,
    wake: Notify,
    wake_scaler: Notify,
    webhook: Mutex<Option<mpsc::UnboundedSender<Alert>>>,
    /// Alerts the webhook accepted.
    pub webhook_sent: AtomicU64,
    /// Alerts the webhook never accepted after every retry.
    pub webhook_failed: AtomicU64,
    /// Alerts fired, by rule and severity.
    fired: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.clamp(MIN_INTERVAL, MAX_INTERVAL))
}

impl Monitor {
    /// A monitor configured by `cfg`.
    pub fn new(cfg: &crate::config::Config, node_id: &str) -> Monitor {
        let m = &cfg.monitoring;
        Monitor {
            alerts: Mutex::new(Engine::new(
                alerts::rules(&cfg.alerts),
                m.alert_history,
                node_id.to_string(),
            )),
            state: Mutex::new(State {
                monitoring: m.enabled,
                interval: secs(m.interval_secs),
                autoscaling: m.autoscaling,
                autoscale_interval: secs(m.autoscale_interval_secs),
                samples: VecDeque::new(),
                system: None,
                cluster: None,
                partitions: Vec::new(),
                failed: VecDeque::new(),
                busy: (0.0, 0.0),
                load_factor: 0.0,
                probe_secs: None,
                workers: None,
                missing_since: BTreeMap::new(),
                latency: None,
                last_command_buckets: None,
            }),
            wake: Notify::new(),
            wake_scaler: Notify::new(),
            webhook: Mutex::new(None),
            webhook_sent: AtomicU64::new(0),
            webhook_failed: AtomicU64::new(0),
            fired: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts or stops the monitor; `interval` changes its tick.
    pub fn set_monitoring(&self, on: bool, interval: Option<f64>) {
        let mut st = self.state.lock();
        st.monitoring = on;
        if let Some(i) = interval {
            st.interval = secs(i);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Starts or stops the autoscaler; `interval` changes its period.
    pub fn set_autoscaling(&self, on: bool, interval: Option<f64>) {
        let mut st = self.state.lock();
        st.autoscaling = on;
        if let Some(i) = interval {
            st.autoscale_interval = secs(i);
        }
        drop(st);
        self.wake_scaler.notify_one();
    }

    /// Whether the monitor runs, and its interval.
    pub fn monitoring(&self) -> (bool, Duration) {
        let st = self.state.lock();
        (st.monitoring, st.interval)
    }

    /// Whether the autoscaler runs, and its interval.
    pub fn autoscaling(&self) -> (bool, Duration) {
        let st = self.state.lock();
        (st.autoscaling, st.autoscale_interval)
    }

    /// Replaces the alert rules' settings (after CONFIG changes).
    pub fn set_rules(&self, cfg: &alerts::AlertsConfig) {
        self.alerts.lock().set_rules(alerts::rules(cfg));
    }

    /// The alert history, newest first.
    pub fn alerts(&self, limit: usize) -> Vec<Alert> {
        self.alerts.lock().history(limit)
    }

    /// Every rule and its state.
    pub fn rules(&self) -> Vec<alerts::RuleStatus> {
        self.alerts.lock().status()
    }

    /// Alerts fired, by rule and severity.
    pub fn fired(&self) -> Vec<((&'static str, &'static str), u64)> {
        self.fired.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.state.lock().samples.iter().cloned().collect()
    }

    /// The last reading of the machine.
    pub fn system(&self) -> Option<SystemSample> {
        self.state.lock().system.clone()
    }

    /// The cluster's health as last put together.
    pub fn cluster_health(&self) -> Option<ClusterHealth> {
        self.state.lock().cluster.clone()
    }

    /// The metrics topic's partitions as last read.
    pub fn partitions(&self) -> Vec<PartitionView> {
        self.state.lock().partitions.clone()
    }

    /// The worker pool's load factor over the last autoscaler interval.
    pub fn load_factor(&self) -> f64 {
        self.state.lock().load_factor
    }

    /// Seconds the last self-probe took.
    pub fn probe_secs(&self) -> Option<f64> {
        self.state.lock().probe_secs
    }

    /// Command latency over the last interval.
    pub fn latency(&self) -> Option<Latency> {
        self.state.lock().latency.clone()
    }

    /// Records raised alerts: log, counters, webhook.
    fn raise(&self, raised: Vec<Alert>) {
        let tx = self.webhook.lock().clone();
        for a in raised {
            if a.status == "firing" {
                tracing::warn!(rule = a.rule, severity = a.severity.name(), message = %a.message, "alert");
                *self
                    .fired
                    .lock()
                    .entry((a.rule, a.severity.name()))
                    .or_default() += 1;
            } else {
                tracing::info!(rule = a.rule, "alert resolved");
            }
            if let Some(tx) = &tx {
                let _ = tx.send(a);
            }
        }
    }
}

/// The node's health score and the machine figures it used.
pub fn node_health(node: &Node, stats: &StatsSnapshot, sys: &SystemSample) -> health::Health {
    let (members, shards) = match node.cluster.get() {
        Some(cluster) => {
            let views = cluster.member_views();
            let meta = cluster.layout().clone();
            let led = meta
                .shards
                .iter()
                .filter(|sh| cluster.leader_of(sh).is_some())
                .count();
            (
                Some((views.iter().filter(|m| m.up).count(), views.len())),
                Some((led, meta.shards.len())),
            )
        }
        None => (None, None),
    };
    health::score(&health::Inputs {
        writes_ok: stats.poisoned.is_none(),
        members,
        shards,
        memory_ratio: stats.used_bytes as f64 / stats.tier_cap_bytes.max(1) as f64,
        disk_free: sys.disk_free(),
        system_memory_free: sys.memory_free(),
        load_per_core: sys.load_per_core(),
        workers: node.monitor.state.lock().workers,
    })
}

/// The machine as the monitor last read it, or read now when it has not.
pub fn system_now(node: &Node) -> SystemSample {
    if let Some(s) = node.monitor.system() {
        return s;
    }
    Sampler::new().sample(&node.store.config().data_dir)
}

/// Runs the monitor, the autoscaler and the webhook sender until the
/// node shuts down.
pub async fn run(node: Arc<Node>) {
    let (tx, rx) = mpsc::unbounded_channel();
    *node.monitor.webhook.lock() = Some(tx);
    let sender = tokio::spawn(deliver(node.clone(), rx));
    let scaler = tokio::spawn(autoscale_loop(node.clone()));
    let mut sampler = Sampler::new();
    loop {
        // The first tick comes one interval after start, so its CPU
        // reading covers a whole interval.
        let (_, every) = node.monitor.monitoring();
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = node.monitor.wake.notified() => {}
            () = node.shutdown.cancelled() => break,
        }
        if node.monitor.monitoring().0 {
            tick(&node, &mut sampler).await;
        }
    }
    *node.monitor.webhook.lock() = None;
    scaler.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), sender).await;
}

/// One tick of the monitor.
async fn tick(node: &Arc<Node>, sampler: &mut Sampler) {
    let dir = node.store.config().data_dir;
    let sys = sampler.sample(&dir);
    let stats = node.store.stats();
    let health = node_health(node, &stats, &sys);
    let now = now_ms();
    let probe = probe(node).await;
    let partitions = partitions(node).await;
    let cluster = cluster_health(node, &health).await;
    let mut o = Observed {
        unreachable: match (&probe, &stats.poisoned) {
            (Err(e), _) => Some(format!("RESP port does not answer PING: {e}")),
            (_, Some(why)) => Some(format!("writes refused after a failed log write: {why}")),
            _ => None,
        },
        probe_secs: probe.as_ref().ok().copied(),
        memory_ratio: stats.used_bytes as f64 / stats.tier_cap_bytes.max(1) as f64,
        system_memory_free: sys.memory_free(),
        load_per_core: sys.load_per_core(),
        health_score: health.score,
        ..Observed::default()
    };
    if let Some(c) = node.cluster.get() {
        o.members_down = c
            .member_views()
            .iter()
            .filter(|m| !m.up)
            .map(|m| format!("{:016x}", m.id))
            .collect();
        let meta = c.layout().clone();
        let views = c.member_views();
        o.shards_short = meta
            .shards
            .iter()
            .filter(|sh| {
                let live = sh
                    .replicas
                    .iter()
                    .filter(|id| views.iter().any(|m| m.id == **id && m.up))
                    .count();
                c.leader_of(sh).is_none() || live < meta.replicas.min(meta.nodes.len())
            })
            .map(|sh| sh.group)
            .collect();
    }
    workers_view(node, &partitions, now, &mut o);
    let commands = node.total_commands.load(Ordering::Relaxed);
    let latency = command_latency(node);
    {
        let c = &node.pipeline.counters;
        let failed = c.rejected.load(Ordering::Relaxed) + c.dead.load(Ordering::Relaxed);
        let mut st = node.monitor.state.lock();
        st.failed.push_back((now, failed));
        while st
            .failed
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > 3_600_000)
        {
            st.failed.pop_front();
        }
        o.failed_last_hour = failed - st.failed.front().map_or(failed, |f| f.1);
        let ops_per_sec = st.samples.back().map_or(0.0, |last| {
            commands.saturating_sub(last.commands) as f64
                / (now.saturating_sub(last.timestamp).max(1) as f64 / 1000.0)
        });
        st.samples.push_back(Sample {
            timestamp: now,
            memory_bytes: stats.used_bytes,
            memory_cap: stats.tier_cap_bytes,
            disk_bytes: stats.disk_bytes,
            entries_memory: stats.entries_memory,
            entries_disk: stats.entries_disk,
            hits_memory: stats.hits_memory,
            hits_disk: stats.hits_disk,
            misses: stats.misses,
            spilled: stats.spilled,
            offloaded: stats.offloaded,
            promotions: stats.promotions,
            commands,
            ops_per_sec,
            health_score: health.score,
            cpu_percent: sys.cpu_percent,
            process_rss: sys.process_rss,
        });
        while st.samples.len() > SAMPLES_KEPT {
            st.samples.pop_front();
        }
        st.system = Some(sys);
        st.cluster = cluster;
        st.partitions = partitions;
        st.probe_secs = probe.ok();
        if let Some((buckets, l)) = latency {
            if let Some(prev) = &st.last_command_buckets {
                st.latency = Some(percentiles(prev, &buckets).unwrap_or(l));
            }
            st.last_command_buckets = Some(buckets);
        }
    }
    let raised = node.monitor.alerts.lock().evaluate(&o, now);
    node.monitor.raise(raised);
}

/// Partitions this node should aggregate without a live worker, and
/// those with a backlog but no recent commit.
fn workers_view(node: &Node, parts: &[PartitionView], now: u64, o: &mut Observed) {
    if !node.cfg.read().streams.workers {
        node.monitor.state.lock().workers = None;
        return;
    }
    let alive = node.pipeline.alive.lock().clone();
    let running = node.pipeline.running.lock().clone();
    let mut st = node.monitor.state.lock();
    st.missing_since.retain(|p, _| {
        parts.iter().any(|v| v.partition == *p && v.worker_here) && !alive.contains_key(p)
    });
    for p in parts.iter().filter(|p| p.worker_here) {
        match alive.get(&p.partition) {
            None => {
                let since = *st.missing_since.entry(p.partition).or_insert(now);
                o.workers_missing
                    .push((p.partition, now.saturating_sub(since) as f64 / 1000.0));
            }
            Some(&started) if p.lag > 0 => {
                let last = running
                    .get(&p.partition)
                    .map_or(started, |s| s.committed_at.max(started));
                o.workers_stalled
                    .push((p.partition, now.saturating_sub(last) as f64 / 1000.0));
            }
            Some(_) => {}
        }
    }
    let wanted = parts.iter().filter(|p| p.worker_here).count();
    let troubled = o.workers_missing.iter().filter(|(_, s)| *s > 10.0).count()
        + o.workers_stalled.iter().filter(|(_, s)| *s > 60.0).count();
    st.workers = Some((wanted.saturating_sub(troubled), wanted));
}

/// PINGs this node's own RESP port: seconds it took, or why it failed.
async fn probe(node: &Node) -> Result<f64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(addr) = node.resp_addr.get().copied() else {
        return Err("not listening".into());
    };
    let start = Instant::now();
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        Ok::<_, std::io::Error>(buf[..n].to_vec())
    };
    match tokio::time::timeout(Duration::from_secs(5), go).await {
        Err(_) => Err("no answer in 5 s".into()),
        Ok(Err(e)) => Err(e.to_string()),
        // A password-protected node answers -NOAUTH: it is serving.
        Ok(Ok(reply)) if reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH") => {
            Ok(start.elapsed().as_secs_f64())
        }
        Ok(Ok(reply)) => Err(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&reply).trim_end()
        )),
    }
}

/// Field `name` of a RESP2 key-value array or a RESP3 map.
fn field<'a>(r: &'a Reply, name: &str) -> Option<&'a Reply> {
    let is = |k: &Reply| match k {
        Reply::Bulk(b) => b.as_ref() == name.as_bytes(),
        Reply::Simple(s) => *s == name,
        Reply::Status(s) => s == name,
        _ => false,
    };
    match r {
        Reply::Map(m) => m.iter().find(|(k, _)| is(k)).map(|(_, v)| v),
        Reply::Array(a) => a.chunks_exact(2).find(|kv| is(&kv[0])).map(|kv| &kv[1]),
        _ => None,
    }
}

fn int(r: Option<&Reply>) -> u64 {
    match r {
        Some(Reply::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

fn string(r: Option<&Reply>) -> String {
    match r {
        Some(Reply::Bulk(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Reply::Status(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Reads every partition of the metrics topic: length, the aggregation
/// group's lag and position (through the command layer, so a cluster
/// routes each to its shard).
async fn partitions(node: &Arc<Node>) -> Vec<PartitionView> {
    let layout = &node.pipeline.layout;
    let handle = Arc::new(ClientHandle::new(0, "monitor".into(), String::new(), 2));
    let mut session = Session::new(handle, true);
    session.internal = true;
    let enabled = node.cfg.read().streams.workers;
    let mut out = Vec::with_capacity(layout.partitions());
    for p in 0..layout.partitions() {
        let stream = layout.stream(p);
        let key = Bytes::from(stream.clone());
        let mut view = PartitionView {
            partition: p,
            worker_here: enabled && crate::pipeline::leads(node, &stream),
            stream,
            ..PartitionView::default()
        };
        let len = dispatch(
            node,
            &mut session,
            &[Bytes::from_static(b"XLEN"), key.clone()],
        )
        .await;
        view.length = int(Some(&len));
        let groups = dispatch(
            node,
            &mut session,
            &[
                Bytes::from_static(b"XINFO"),
                Bytes::from_static(b"GROUPS"),
                key,
            ],
        )
        .await;
        view.lag = view.length;
        if let Reply::Array(gs) = &groups {
            if let Some(g) = gs
                .iter()
                .find(|g| string(field(g, "name")) == crate::pipeline::GROUP)
            {
                view.lag = int(field(g, "lag"));
                view.committed = string(field(g, "last-delivered-id"));
            }
        }
        out.push(view);
    }
    out
}

/// Every member's score, this node's included (cluster mode only).
async fn cluster_health(node: &Node, own: &health::Health) -> Option<ClusterHealth> {
    let cluster = node.cluster.get()?;
    let me = cluster.id;
    let peers: Vec<(u64, String)> = cluster
        .layout()
        .nodes
        .iter()
        .map(|(id, p)| (*id, p.http.clone()))
        .collect();
    let mut nodes = Vec::with_capacity(peers.len());
    for (id, http) in peers {
        let (reachable, score) = if id == me {
            (true, own.score)
        } else {
            let url = format!("http://{http}/health");
            let got = tokio::task::spawn_blocking(move || peer_score(&url))
                .await
                .ok()
                .flatten();
            (got.is_some(), got.unwrap_or(0))
        };
        nodes.push(MemberHealth {
            id: format!("{id:016x}"),
            http,
            reachable,
            score,
            status: health::band(score),
        });
    }
    let score = cluster_score(&nodes);
    Some(ClusterHealth {
        score,
        status: health::band(score),
        nodes,
        timestamp: now_ms(),
    })
}

/// The lowest score among the members that answer; a member that doesn't
/// caps the cluster at 89 (warning: it serves, but one more loss may cost
/// a shard its majority), and losing half or more caps it at 49.
fn cluster_score(nodes: &[MemberHealth]) -> u32 {
    let lowest = nodes
        .iter()
        .filter(|n| n.reachable)
        .map(|n| n.score)
        .min()
        .unwrap_or(0);
    let down = nodes.iter().filter(|n| !n.reachable).count();
    match down {
        0 => lowest,
        d if d * 2 >= nodes.len() => lowest.min(49),
        _ => lowest.min(89),
    }
}

fn peer_score(url: &str) -> Option<u32> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let body: Value = agent.get(url).call().ok()?.body_mut().read_json().ok()?;
    body.get("health_score")?
        .as_u64()
        .map(|s| s.min(100) as u32)
}

/// Cumulative command latency buckets (upper bound in seconds, count),
/// summed over every command, from the command histograms.
fn command_latency(node: &Node) -> Option<(Vec<(f64, u64)>, Latency)> {
    let text = node.metrics.encode_recorded();
    let mut sums: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("strata_command_duration_seconds_bucket{") else {
            continue;
        };
        let Some(le) = rest.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let Some(count) = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok()) else {
            continue;
        };
        let e = sums.entry(bound.to_bits()).or_insert((bound, 0));
        e.1 += count as u64;
    }
    let mut buckets: Vec<(f64, u64)> = sums.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let zero: Vec<(f64, u64)> = buckets.iter().map(|(b, _)| (*b, 0)).collect();
    let l = percentiles(&zero, &buckets)?;
    Some((buckets, l))
}

/// Percentiles of the commands between two cumulative readings.
fn percentiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<Latency> {
    if before.len() != after.len() {
        return None;
    }
    let delta: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|(a, b)| (a.0, a.1.saturating_sub(b.1)))
        .collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let want = (total as f64 * q).ceil() as u64;
        delta
            .iter()
            .find(|(_, c)| *c >= want)
            .map_or(f64::INFINITY, |(b, _)| *b)
    };
    Some(Latency {
        commands: total,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    })
}

/// The autoscaler: every interval, seed 001's decision on the pool.
async fn autoscale_loop(node: Arc<Node>) {
    loop {
        let (on, every) = node.monitor.autoscaling();
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = node.monitor.wake_scaler.notified() => continue,
            () = node.shutdown.cancelled() => break,
        }
        let pool = &node.pipeline.pool;
        let busy = pool.busy_seconds();
        let load = {
            let mut st = node.monitor.state.lock();
            let (b0, t0) = st.busy;
            st.busy = busy;
            let span = (busy.1 - t0) * f64::from(pool.size().max(1));
            st.load_factor = if span > 0.0 {
                ((busy.0 - b0) / span).clamp(0.0, 1.0)
            } else {
                0.0
            };
            st.load_factor
        };
        if !on {
            continue;
        }
        autoscale_once(&node, load);
    }
}

/// Entries waiting for the workers of this node.
pub fn waiting_here(node: &Node) -> u64 {
    node.monitor
        .partitions()
        .iter()
        .filter(|p| p.worker_here)
        .map(|p| p.lag)
        .sum()
}

fn autoscale_once(node: &Node, load: f64) {
    let (cfg, partitions) = {
        let c = node.cfg.read();
        (c.streams.scaling.clone(), c.streams.partitions as usize)
    };
    if !cfg.enabled {
        return;
    }
    let pool = &node.pipeline.pool;
    let cooled = pool
        .last_change
        .lock()
        .is_none_or(|at| at.elapsed() >= Duration::from_secs(cfg.cooldown_secs));
    if !cooled {
        return;
    }
    let bounds = cfg.bounds(partitions);
    if let Some(d) =
        crate::pipeline::scaling::decide(&cfg, bounds, pool.size(), waiting_here(node), load)
    {
        pool.resize(d.to, d.reason, "auto");
    }
}

/// Sends alerts to `alert_webhook_url`, each retried with backoff.
async fn deliver(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Alert>) {
    while let Some(alert) = rx.recv().await {
        let Some(url) = node.cfg.read().alert_webhook_url.clone() else {
            continue;
        };
        let body = json!({
            "source": "strata",
            "alert": alert,
        });
        let mut backoff = Duration::from_millis(500);
        let mut delivered = false;
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            let (u, b) = (url.clone(), body.clone());
            let outcome = tokio::task::spawn_blocking(move || post_json(&u, &b))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match outcome {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, url = %url, "alert webhook failed");
                }
            }
            if attempt < WEBHOOK_ATTEMPTS {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = node.shutdown.cancelled() => return,
                }
                backoff *= 2;
            }
        }
        let counter = if delivered {
            &node.monitor.webhook_sent
        } else {
            &node.monitor.webhook_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn post_json(url: &str, body: &Value) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", r.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_interval_between_readings() {
        let before = vec![(0.001, 10), (0.01, 10), (f64::INFINITY, 10)];
        let after = vec![(0.001, 100), (0.01, 109), (f64::INFINITY, 110)];
        let l = percentiles(&before, &after).unwrap();
        assert_eq!(l.commands, 100);
        assert_eq!(l.p50, 0.001);
        assert_eq!(l.p95, 0.01);
        assert_eq!(l.p99, 0.01);
        assert!(percentiles(&after, &after).is_none());
    }

    #[test]
    fn a_member_down_caps_the_cluster_score() {
        let m = |score, reachable| MemberHealth {
            id: String::new(),
            http: String::new(),
            reachable,
            score,
            status: health::band(score),
        };
        assert_eq!(cluster_score(&[m(100, true), m(95, true), m(97, true)]), 95);
        assert_eq!(cluster_score(&[m(100, true), m(95, true), m(0, false)]), 89);
        assert_eq!(cluster_score(&[m(80, true), m(95, true), m(0, false)]), 80);
        assert_eq!(cluster_score(&[m(100, true), m(0, false), m(0, false)]), 49);
    }

    #[test]
    fn fields_are_found_in_both_protocols() {
        let r2 = Reply::Array(vec![Reply::bulk("lag"), Reply::Int(7)]);
        assert_eq!(int(field(&r2, "lag")), 7);
        let r3 = Reply::Map(vec![(Reply::bulk("lag"), Reply::Int(3))]);
        assert_eq!(int(field(&r3, "lag")), 3);
        assert_eq!(int(field(&r3, "nope")), 0);
    }

    #[test]
    fn monitoring_settings_are_checked() {
        let bad = MonitoringConfig {
            interval_secs: 0.0,
            ..MonitoringConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "monitoring.interval_secs");
        assert!(MonitoringConfig::default().validate().is_ok());
    }
}
