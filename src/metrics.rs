//! Prometheus metrics (`strata_` prefix). Request metrics are recorded as
//! they happen; storage gauges and totals are read from the engine at
//! scrape time, so there is one source of truth for them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cluster::GroupStats;
use crate::storage::StatsSnapshot;

/// Labels of per-command metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CmdLabels {
    /// Lower-case command name.
    pub cmd: String,
}

/// Labels of HTTP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route pattern.
    pub path: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Resident memory of this process, from `/proc/self/statm` (0 elsewhere).
pub fn process_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn latency_histogram() -> Histogram {
    // 10 µs .. ~5 s
    Histogram::new(exponential_buckets(0.000_01, 2.5, 15))
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Commands executed, by name.
    pub commands: Family<CmdLabels, Counter>,
    /// Command latency, by name.
    pub command_seconds: Family<CmdLabels, Histogram, fn() -> Histogram>,
    /// Commands that returned an error, by name.
    pub command_errors: Family<CmdLabels, Counter>,
    /// HTTP requests.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP latency by route.
    pub http_seconds: Family<CmdLabels, Histogram, fn() -> Histogram>,
    /// Open RESP connections.
    pub connections: Gauge,
    /// RESP connections accepted.
    pub connections_total: Counter,
    /// Connections refused because of `maxclients`.
    pub rejected_connections: Counter,
    /// Reads answered by the HTTP local cache.
    pub local_cache_hits: AtomicU64,
    /// Backups taken by this node.
    pub backups_ok: AtomicU64,
    /// Backups this node failed to take.
    pub backups_failed: AtomicU64,
    /// When this node last took one, ms since the epoch (0: never).
    pub last_backup_ms: AtomicU64,
    /// Per-command handles, resolved once (see [`Metrics::command_handles`]).
    command_handles: std::sync::OnceLock<Vec<CommandHandles>>,
}

/// The metric handles of one command, resolved once so the request path
/// doesn't hash label sets.
pub struct CommandHandles {
    /// Executions.
    pub count: Counter,
    /// Latency.
    pub seconds: Histogram,
    /// Error replies.
    pub errors: Counter,
    /// Microseconds spent executing (INFO's Commandstats).
    pub micros: AtomicU64,
}

impl Metrics {
    /// The handles resolved so far (none before the first command).
    pub fn command_stats(&self) -> &[CommandHandles] {
        self.command_handles.get().map_or(&[], |v| &v[..])
    }

    /// Handles for every command of `names`, in that order; the names are
    /// read on the first call only.
    pub fn command_handles<'a>(&self, names: impl FnOnce() -> Vec<&'a str>) -> &[CommandHandles] {
        self.command_handles.get_or_init(|| {
            names()
                .into_iter()
                .map(|name| {
                    let l = CmdLabels {
                        cmd: name.to_string(),
                    };
                    CommandHandles {
                        count: self.commands.get_or_create(&l).clone(),
                        seconds: self.command_seconds.get_or_create(&l).clone(),
                        errors: self.command_errors.get_or_create(&l).clone(),
                        micros: AtomicU64::new(0),
                    }
                })
                .collect()
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("strata");
        let commands = Family::<CmdLabels, Counter>::default();
        let command_seconds =
            Family::<CmdLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let command_errors = Family::<CmdLabels, Counter>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_seconds = Family::<CmdLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let connections = Gauge::default();
        let connections_total = Counter::default();
        let rejected_connections = Counter::default();
        registry.register("commands", "Commands executed", commands.clone());
        registry.register(
            "command_duration_seconds",
            "Command execution time",
            command_seconds.clone(),
        );
        registry.register(
            "command_errors",
            "Commands that returned an error",
            command_errors.clone(),
        );
        registry.register("http_requests", "HTTP requests", http_requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request time by route",
            http_seconds.clone(),
        );
        registry.register(
            "connected_clients",
            "Open RESP connections",
            connections.clone(),
        );
        registry.register(
            "connections",
            "RESP connections accepted",
            connections_total.clone(),
        );
        registry.register(
            "rejected_connections",
            "Connections refused because of maxclients",
            rejected_connections.clone(),
        );
        Metrics {
            registry,
            commands,
            command_seconds,
            command_errors,
            http_requests,
            http_seconds,
            connections,
            connections_total,
            rejected_connections,
            local_cache_hits: AtomicU64::new(0),
            backups_ok: AtomicU64::new(0),
            backups_failed: AtomicU64::new(0),
            last_backup_ms: AtomicU64::new(0),
            command_handles: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// The recorded metrics alone (commands, HTTP, connections).
    pub fn encode_recorded(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The text exposition: recorded metrics, the engine's statistics
    /// and, in cluster mode, the state of this node's Raft groups.
    pub fn render(
        &self,
        s: &StatsSnapshot,
        groups: Option<&GroupStats>,
        node: &NodeGauges,
    ) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The registry ends the exposition with `# EOF`; storage series go before it.
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out.truncate(stripped.len());
        }
        let mut metric = |name: &str, kind: &str, help: &str, series: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP strata_{name} {help}");
            let _ = writeln!(out, "# TYPE strata_{name} {kind}");
            for (labels, v) in series {
                let suffix = if kind == "counter" { "_total" } else { "" };
                let _ = writeln!(out, "strata_{name}{suffix}{labels} {v}");
            }
        };
        let f = |v: u64| v as f64;
        metric(
            "memory_used_bytes",
            "gauge",
            "Bytes charged to the memory tier",
            &[("", f(s.used_bytes))],
        );
        metric(
            "memory_cap_bytes",
            "gauge",
            "The memory tier's cap (maxmemory less the disk tier's share)",
            &[("", f(s.tier_cap_bytes))],
        );
        metric(
            "maxmemory_bytes",
            "gauge",
            "Configured maxmemory",
            &[("", f(s.maxmemory))],
        );
        metric(
            "memory_ratio",
            "gauge",
            "Memory tier usage as a fraction of its cap",
            &[("", s.used_bytes as f64 / s.tier_cap_bytes.max(1) as f64)],
        );
        metric(
            "entries",
            "gauge",
            "Keys per tier",
            &[
                ("{tier=\"memory\"}", f(s.entries_memory)),
                ("{tier=\"disk\"}", f(s.entries_disk)),
            ],
        );
        metric(
            "hits",
            "counter",
            "Reads that found their key, by serving tier",
            &[
                ("{tier=\"memory\"}", f(s.hits_memory)),
                ("{tier=\"disk\"}", f(s.hits_disk)),
                (
                    "{tier=\"local_cache\"}",
                    f(self.local_cache_hits.load(Ordering::Relaxed)),
                ),
            ],
        );
        metric(
            "backups",
            "counter",
            "Backups this node took (periodic and on request), by outcome",
            &[
                (
                    "{outcome=\"ok\"}",
                    f(self.backups_ok.load(Ordering::Relaxed)),
                ),
                (
                    "{outcome=\"failed\"}",
                    f(self.backups_failed.load(Ordering::Relaxed)),
                ),
            ],
        );
        metric(
            "last_backup_timestamp_seconds",
            "gauge",
            "When this node last took a backup (0: never)",
            &[(
                "",
                self.last_backup_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            )],
        );
        metric(
            "misses",
            "counter",
            "Reads that found nothing",
            &[("", f(s.misses))],
        );
        metric(
            "spilled",
            "counter",
            "Entries moved to disk by the spiller",
            &[("", f(s.spilled))],
        );
        metric(
            "spilled_bytes",
            "counter",
            "Bytes moved to disk by the spiller",
            &[("", f(s.spilled_bytes))],
        );
        metric(
            "direct_to_disk",
            "counter",
            "Writes stored straight on disk because memory was full",
            &[("", f(s.direct_to_disk))],
        );
        metric(
            "promotions",
            "counter",
            "Disk hits promoted to memory",
            &[("", f(s.promotions))],
        );
        metric(
            "expired",
            "counter",
            "Keys removed because their TTL passed",
            &[("", f(s.expired))],
        );
        metric(
            "offload_runs",
            "counter",
            "Offloader runs",
            &[("", f(s.offload_runs))],
        );
        metric(
            "offloaded",
            "counter",
            "Entries moved to disk by the offloader",
            &[("", f(s.offloaded))],
        );
        metric(
            "offload_write_fail",
            "counter",
            "Offloader moves that failed",
            &[("", f(s.offload_write_fail))],
        );
        metric(
            "offload_last_scanned",
            "gauge",
            "Entries scanned by the last offloader run",
            &[("", f(s.last_offload.scanned))],
        );
        metric(
            "offload_last_moved",
            "gauge",
            "Entries moved by the last offloader run",
            &[("", f(s.last_offload.moved))],
        );
        metric(
            "checkpoints",
            "counter",
            "Checkpoints completed",
            &[("", f(s.checkpoints))],
        );
        metric(
            "wal_bytes",
            "counter",
            "Bytes written to the write-ahead log",
            &[("", f(s.wal_bytes))],
        );
        metric(
            "wal_fsyncs",
            "counter",
            "Write-ahead log fsyncs",
            &[("", f(s.wal_fsyncs))],
        );
        metric(
            "wal_fsync_seconds",
            "counter",
            "Time spent in write-ahead log fsyncs",
            &[("", s.wal_fsync_micros as f64 / 1e6)],
        );
        metric(
            "wal_fsync_max_seconds",
            "gauge",
            "Slowest write-ahead log fsync",
            &[("", s.wal_fsync_max_micros as f64 / 1e6)],
        );
        metric(
            "disk_bytes",
            "gauge",
            "Bytes the disk tier occupies",
            &[("", f(s.disk_bytes))],
        );
        metric(
            "disk_written_bytes",
            "counter",
            "Bytes written to the disk tier: records, and the heads and pieces of big collections",
            &[("", f(s.disk_write_bytes))],
        );
        metric(
            "disk_pieces_written",
            "counter",
            "Pieces of big collections written to the disk tier",
            &[("", f(s.disk_pieces_written))],
        );
        metric(
            "disk_layouts_written",
            "counter",
            "Big collections laid out in pieces afresh (written whole)",
            &[("", f(s.disk_layouts_written))],
        );
        metric(
            "write_poisoned",
            "gauge",
            "1 if a failed log write made the node read-only",
            &[("", if s.poisoned.is_some() { 1.0 } else { 0.0 })],
        );
        let components: Vec<(String, f64)> = node
            .health_components
            .iter()
            .map(|(name, score)| (format!("{{component=\"{name}\"}}"), f64::from(*score)))
            .collect();
        metric(
            "health_score",
            "gauge",
            "The node's health score, 0-100 (90+ healthy, 70-89 warning, below 70 critical)",
            &[("", f64::from(node.health_score))],
        );
        metric(
            "health_component_score",
            "gauge",
            "Each health component's own score, 0-100",
            &components
                .iter()
                .map(|(l, v)| (l.as_str(), *v))
                .collect::<Vec<_>>(),
        );
        metric(
            "hot_keys",
            "gauge",
            "Keys above hotkey_threshold_per_min",
            &[("", node.hot_keys as f64)],
        );
        metric(
            "tracking_clients",
            "gauge",
            "Connections with CLIENT TRACKING on",
            &[("", node.tracking_clients as f64)],
        );
        for (name, help, v) in [
            (
                "disk_free_ratio",
                "Free fraction of the data directory's filesystem",
                node.disk_free,
            ),
            (
                "system_memory_available_ratio",
                "Available fraction of the machine's memory",
                node.system_memory_free,
            ),
            (
                "load_per_core",
                "One-minute load average per core",
                node.load_per_core,
            ),
        ] {
            if let Some(v) = v {
                metric(name, "gauge", help, &[("", v)]);
            }
        }
        let fired: Vec<(String, f64)> = node
            .alerts_fired
            .iter()
            .map(|((rule, sev), n)| (format!("{{rule=\"{rule}\",severity=\"{sev}\"}}"), *n as f64))
            .collect();
        metric(
            "alerts_fired",
            "counter",
            "Alerts fired, by rule and severity",
            &fired
                .iter()
                .map(|(l, v)| (l.as_str(), *v))
                .collect::<Vec<_>>(),
        );
        let firing: Vec<(String, f64)> = node
            .alerts_firing
            .iter()
            .map(|(rule, on)| (format!("{{rule=\"{rule}\"}}"), if *on { 1.0 } else { 0.0 }))
            .collect();
        metric(
            "alert_firing",
            "gauge",
            "Whether each alert rule's condition held at the last evaluation",
            &firing
                .iter()
                .map(|(l, v)| (l.as_str(), *v))
                .collect::<Vec<_>>(),
        );
        metric(
            "alert_webhook_deliveries",
            "counter",
            "Alerts sent to alert_webhook_url, by outcome (after retries)",
            &[
                ("{outcome=\"sent\"}", f(node.webhook_sent)),
                ("{outcome=\"failed\"}", f(node.webhook_failed)),
            ],
        );
        metric(
            "aggregation_workers",
            "gauge",
            "Aggregation worker pool: size and workers processing a batch",
            &[
                ("{state=\"pool\"}", f(node.workers_pool)),
                ("{state=\"busy\"}", f(node.workers_busy)),
            ],
        );
        let [accepted, rejected, late, dead, windows] = node.pipeline_events;
        metric(
            "pipeline_events",
            "counter",
            "Metric events by outcome: accepted or rejected at the door, dropped late or dead-lettered by a worker",
            &[
                ("{outcome=\"accepted\"}", f(accepted)),
                ("{outcome=\"rejected\"}", f(rejected)),
                ("{outcome=\"late\"}", f(late)),
                ("{outcome=\"dead_lettered\"}", f(dead)),
            ],
        );
        let tenant_series: Vec<(String, f64)> = node
            .tenant_events
            .iter()
            .flat_map(|(t, counts)| {
                let t = t
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                ["accepted", "rejected", "throttled"]
                    .into_iter()
                    .zip(*counts)
                    .map(move |(o, n)| (format!("{{tenant=\"{t}\",outcome=\"{o}\"}}"), f(n)))
            })
            .collect();
        metric(
            "tenant_events",
            "counter",
            "Metric events of each tenant at this node's door: accepted, rejected, or throttled by its quota",
            &tenant_series
                .iter()
                .map(|(l, v)| (l.as_str(), *v))
                .collect::<Vec<_>>(),
        );
        metric(
            "pipeline_windows_stored",
            "counter",
            "One-minute windows the aggregation workers closed and stored",
            &[("", f(windows))],
        );
        metric(
            "topic_lag",
            "gauge",
            "Entries of the metrics topic not yet read by its aggregation workers, on the partitions this node aggregates",
            &[("", f(node.topic_lag))],
        );
        if let Some(c) = &node.cluster_health {
            metric(
                "cluster_health_score",
                "gauge",
                "The cluster's health score: the lowest among the members that answer",
                &[("", f64::from(*c))],
            );
        }
        for (name, help, v) in [
            (
                "cpu_percent",
                "CPU use of the machine, percent",
                node.cpu_percent,
            ),
            (
                "network_received_bytes",
                "Bytes received by the machine's interfaces since boot (loopback excluded)",
                node.network.map(|n| n.0 as f64),
            ),
            (
                "network_transmitted_bytes",
                "Bytes sent by the machine's interfaces since boot (loopback excluded)",
                node.network.map(|n| n.1 as f64),
            ),
        ] {
            if let Some(v) = v {
                metric(name, "gauge", help, &[("", v)]);
            }
        }
        if let Some(g) = groups {
            render_groups(&mut out, g);
        }
        out.push_str("# EOF\n");
        out
    }
}

/// A per-group series: name, help, and how to read it.
type GroupSeries = (
    &'static str,
    &'static str,
    fn(&crate::cluster::GroupStat) -> u64,
);

/// Node-level figures `/metrics` adds to the storage ones.
#[derive(Debug, Clone, Default)]
pub struct NodeGauges {
    /// The health score.
    pub health_score: u32,
    /// Each health component's score.
    pub health_components: Vec<(&'static str, u32)>,
    /// Keys hot now.
    pub hot_keys: usize,
    /// Connections tracking keys.
    pub tracking_clients: usize,
    /// Free fraction of the data directory's filesystem.
    pub disk_free: Option<f64>,
    /// Available fraction of the machine's memory.
    pub system_memory_free: Option<f64>,
    /// One-minute load average per core.
    pub load_per_core: Option<f64>,
    /// Alerts fired, by rule and severity.
    pub alerts_fired: Vec<((&'static str, &'static str), u64)>,
    /// Whether each rule's condition holds.
    pub alerts_firing: Vec<(&'static str, bool)>,
    /// Alerts the webhook accepted.
    pub webhook_sent: u64,
    /// Alerts the webhook never accepted.
    pub webhook_failed: u64,
    /// Aggregation worker pool size.
    pub workers_pool: u64,
    /// Workers processing a batch.
    pub workers_busy: u64,
    /// Entries waiting for this node's workers.
    pub topic_lag: u64,
    /// Metric events accepted, rejected, late, dead-lettered; windows stored.
    pub pipeline_events: [u64; 5],
    /// Each tenant's events on this node: accepted, rejected, throttled.
    pub tenant_events: Vec<(String, [u64; 3])>,
    /// The cluster's health score (cluster mode, once the monitor ran).
    pub cluster_health: Option<u32>,
    /// Machine CPU use, percent.
    pub cpu_percent: Option<f64>,
    /// Bytes received and sent since boot.
    pub network: Option<(u64, u64)>,
}

fn render_groups(out: &mut String, g: &GroupStats) {
    let per_group: [GroupSeries; 6] = [
        ("raft_leader", "1 if this node leads the group", |s| {
            s.leader as u64
        }),
        ("raft_term", "The group's current term", |s| s.term),
        (
            "raft_last_log_index",
            "Index of the last entry in this node's log",
            |s| s.last_log,
        ),
        (
            "raft_applied_index",
            "Index of the last entry applied to the store",
            |s| s.applied,
        ),
        (
            "raft_snapshot_index",
            "Index the latest snapshot covers",
            |s| s.snapshot,
        ),
        (
            "raft_purged_index",
            "Index up to which the log was truncated",
            |s| s.purged,
        ),
    ];
    for (name, help, value) in per_group {
        let _ = writeln!(out, "# HELP strata_{name} {help}");
        let _ = writeln!(out, "# TYPE strata_{name} gauge");
        for s in &g.groups {
            let _ = writeln!(out, "strata_{name}{{group=\"{}\"}} {}", s.group, value(s));
        }
    }
    let _ = writeln!(
        out,
        "# HELP strata_raft_snapshots_installed Snapshots installed from a leader"
    );
    let _ = writeln!(out, "# TYPE strata_raft_snapshots_installed counter");
    let _ = writeln!(
        out,
        "strata_raft_snapshots_installed_total {}",
        g.snapshots_installed
    );
    let cluster: [(&str, &str, &str, u64); 11] = [
        (
            "raft_snapshot_bytes_installed_total",
            "counter",
            "Bytes of snapshots installed from a leader (replicas moved here arrive this way)",
            g.snapshot_bytes_installed,
        ),
        (
            "cluster_moves_planned_total",
            "counter",
            "Shard replica moves planned by joins, leaves, replacements and rebalances",
            g.moves.planned,
        ),
        (
            "cluster_moves_done_total",
            "counter",
            "Shard replica moves finished",
            g.moves.done,
        ),
        (
            "cluster_moves_pending",
            "gauge",
            "Shard replica moves still to make",
            g.moves.pending as u64,
        ),
        (
            "cluster_nodes_leaving",
            "gauge",
            "Members being removed once their replicas have moved",
            g.moves.leaving.len() as u64,
        ),
        (
            "cluster_member",
            "gauge",
            "1 while this node is a member of its cluster, 0 once it was removed",
            u64::from(g.member),
        ),
        (
            "read_cache_keys",
            "gauge",
            "Hot keys of shards led elsewhere cached here under their leader's lease",
            g.cached_keys,
        ),
        (
            "read_cache_fetches_total",
            "counter",
            "Fetches of hot keys from their shard leaders (misses and lease renewals)",
            g.cache_fetches,
        ),
        (
            "read_cache_leases_granted_total",
            "counter",
            "Leases on this node's keys granted to nodes that cache them",
            g.cache_granted,
        ),
        (
            "read_cache_drops_told_total",
            "counter",
            "Nodes caching a changed key told to drop it before the write was acknowledged",
            g.cache_dropped_told,
        ),
        (
            "read_cache_drops_waited_total",
            "counter",
            "Nodes caching a changed key that didn't answer, whose lease was waited out",
            g.cache_dropped_waited,
        ),
    ];
    for (name, kind, help, value) in cluster {
        let family = name.trim_end_matches("_total");
        let _ = writeln!(out, "# HELP strata_{family} {help}");
        let _ = writeln!(out, "# TYPE strata_{family} {kind}");
        let _ = writeln!(out, "strata_{name} {value}");
    }
}
