//! The metric pipeline (seed 004): a partitioned topic of metric events,
//! aggregation workers with watermarks, and the series they write.
//!
//! ```text
//! POST /v1/metrics ─┐                        ┌─> series hashes (ring buffers) <── GET /v1/series
//! XADD (RESP) ──────┴─> partition streams ───┤
//!                       (one per partition)  └─> worker state, dead letters
//! ```
//!
//! Everything lives in ordinary keys, so it is tiered, logged and, in a
//! cluster, replicated like any other data. Partition `p`'s keys share
//! one hash tag, `{metrics:p:n}`, chosen so that the partitions spread
//! evenly over the 16384 slots (and so over the shards): its stream, its
//! worker's state, its dead letters, and the series of every server that
//! hashes to it. One partition's commit is therefore one atomic write
//! (MULTI/EXEC, a single log record or Raft entry).
//!
//! This module sits above the command layer: the ingest path and the
//! workers run commands through [`crate::commands::dispatch`], exactly
//! as a client would, so routing to a shard's leader comes for free.

pub mod event;
pub mod scaling;
pub mod schemas;
pub mod series;
pub mod series_cap;
pub mod tenants;
pub mod window;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::slot::slot_of;

/// Slots, as a count.
const SLOTS: usize = crate::slot::SLOTS as usize;

/// The built-in topic metric events go to.
pub const TOPIC: &str = "metrics";
/// The consumer group whose cursor is each partition's committed offset.
pub const GROUP: &str = "strata-aggregator";

/// Settings of the metric pipeline (`[streams]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// Run aggregation workers on this node.
    pub workers: bool,
    /// Partitions of the metrics topic. Series are placed by it, so it
    /// must not change once events have been written.
    pub partitions: u32,
    /// How late an event may arrive and still count (seconds): the
    /// watermark trails the newest event time by this much.
    pub allowed_lateness_secs: u64,
    /// After this many quiet seconds a partition's event clock runs on
    /// with the wall clock, so its last windows close; 0: only new events
    /// move it.
    pub idle_advance_secs: u64,
    /// One-minute slots each series keeps (2880 = 2 days).
    pub retention_slots: u32,
    /// Partition entries older than this are deleted (seconds; 0: kept).
    pub log_retention_secs: u64,
    /// At most this many entries per partition (0: no limit).
    pub log_retention_max_len: u64,
    /// Entries a worker reads per batch, and so per commit at most.
    pub worker_batch: usize,
    /// How many partition workers may process a batch at once, and how
    /// the autoscaler changes that.
    pub scaling: scaling::ScalingConfig,
    /// Tenants, by name: their API keys and quotas. None configured: the
    /// pipeline's endpoints need no key.
    pub tenants: tenants::TenantsConfig,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            workers: true,
            partitions: 16,
            allowed_lateness_secs: 10,
            idle_advance_secs: 10,
            retention_slots: 2880,
            log_retention_secs: 86_400,
            log_retention_max_len: 0,
            worker_batch: 1000,
            scaling: scaling::ScalingConfig::default(),
            tenants: tenants::TenantsConfig::new(),
        }
    }
}

impl StreamsConfig {
    /// Checks every field; the error names the bad one.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, why: &str| Err((format!("streams.{f}"), why.to_string()));
        if !(1..=1024).contains(&self.partitions) {
            return bad("partitions", "must be from 1 to 1024");
        }
        if !(1..=100_000).contains(&self.retention_slots) {
            return bad("retention_slots", "must be from 1 to 100000");
        }
        if self.allowed_lateness_secs > 86_400 {
            return bad("allowed_lateness_secs", "must be at most 86400");
        }
        if self.log_retention_secs != 0 && self.log_retention_secs < 600 {
            return bad(
                "log_retention_secs",
                "must be 0 (keep) or at least 600, so open windows can be rebuilt",
            );
        }
        if !(1..=100_000).contains(&self.worker_batch) {
            return bad("worker_batch", "must be from 1 to 100000");
        }
        tenants::validate(&self.tenants)?;
        self.scaling.validate()
    }
}

/// Where the topic's partitions live.
#[derive(Debug, Clone)]
pub struct Layout {
    tags: Vec<String>,
}

impl Layout {
    /// `partitions` partitions of the metrics topic, partition `p`'s hash
    /// tag falling in the `p`-th of that many equal slot ranges.
    pub fn new(partitions: u32) -> Layout {
        let n = partitions.max(1) as usize;
        let tags = (0..n)
            .map(|p| {
                let lo = p * SLOTS / n;
                let hi = (p + 1) * SLOTS / n;
                (0u32..)
                    .map(|salt| format!("{TOPIC}:{p}:{salt}"))
                    .find(|t| (lo..hi).contains(&(slot_of(t.as_bytes()) as usize)))
                    .expect("every slot range is hit by some salt")
            })
            .collect();
        Layout { tags }
    }

    /// Partitions.
    pub fn partitions(&self) -> usize {
        self.tags.len()
    }

    /// The partition of a tenant's server: every series of one server is
    /// in one partition.
    pub fn partition_of(&self, tenant: &str, server_id: &str) -> usize {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(tenant.as_bytes());
        h.update(&[0]);
        h.update(server_id.as_bytes());
        (h.digest() % self.tags.len() as u64) as usize
    }

    /// Partition `p`'s stream.
    pub fn stream(&self, p: usize) -> String {
        format!("{{{}}}:events", self.tags[p])
    }

    /// Partition `p`'s worker state.
    pub fn state(&self, p: usize) -> String {
        format!("{{{}}}:state", self.tags[p])
    }

    /// Partition `p`'s dead letters.
    pub fn dead(&self, p: usize) -> String {
        format!("{{{}}}:dead", self.tags[p])
    }

    /// A series' ring buffer.
    pub fn series(&self, s: &event::SeriesId) -> String {
        let p = self.partition_of(&s.tenant, &s.server_id);
        format!(
            "{{{}}}:s:{}:{}:{}",
            self.tags[p],
            escape(&s.tenant),
            escape(&s.server_id),
            escape(&s.metric)
        )
    }

    /// The set of a server's metric names.
    pub fn metric_index(&self, tenant: &str, server_id: &str) -> String {
        let p = self.partition_of(tenant, server_id);
        format!(
            "{{{}}}:m:{}:{}",
            self.tags[p],
            escape(tenant),
            escape(server_id)
        )
    }
}

/// A name as a key part: `%`, `:`, `{` and `}` are percent-escaped, so
/// names can't run into each other or into the hash tag.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// Counters of the pipeline on this node.
#[derive(Default)]
pub struct Counters {
    /// Events accepted at the door.
    pub accepted: AtomicU64,
    /// Events refused at the door.
    pub rejected: AtomicU64,
    /// Events dropped by workers as late.
    pub late: AtomicU64,
    /// Entries workers dead-lettered.
    pub dead: AtomicU64,
    /// Windows closed and stored.
    pub windows: AtomicU64,
}

/// What one partition's worker last reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: usize,
    /// Last committed entry id.
    pub committed: String,
    /// Entries read and committed.
    pub read: u64,
    /// Watermark, epoch ms (absent before any event).
    pub watermark_ms: Option<i64>,
    /// Windows open.
    pub open_windows: usize,
    /// When it last committed, epoch ms.
    pub committed_at: u64,
}

/// The pipeline's shared state on one node.
pub struct Pipeline {
    /// Partition layout (fixed at start).
    pub layout: Layout,
    /// Counters.
    pub counters: Counters,
    /// Workers running here, by partition, with their last status.
    pub running: Mutex<HashMap<usize, PartitionStatus>>,
    /// How many of them may process a batch at once.
    pub pool: scaling::Pool,
    /// Series this node's workers stored points of lately, newest last
    /// (for the dashboard's picker).
    pub recent_series: Mutex<std::collections::VecDeque<event::SeriesId>>,
    /// Partitions whose worker is working (started and not failed), with
    /// when it started, epoch ms.
    pub alive: Mutex<HashMap<usize, u64>>,
    /// Tenants' quota buckets and counters on this node.
    pub tenants: tenants::Tenants,
    /// The schema registry's versions this node has used.
    pub schemas: schemas::Registry,
    /// Tenants' series this node admitted lately.
    pub series_cap: series_cap::SeriesCap,
}

impl Pipeline {
    /// The pipeline for `cfg`.
    pub fn new(cfg: &StreamsConfig) -> Pipeline {
        Pipeline {
            layout: Layout::new(cfg.partitions),
            counters: Counters::default(),
            running: Mutex::new(HashMap::new()),
            alive: Mutex::new(HashMap::new()),
            recent_series: Mutex::new(std::collections::VecDeque::new()),
            tenants: tenants::Tenants::default(),
            schemas: schemas::Registry::default(),
            series_cap: series_cap::SeriesCap::default(),
            pool: scaling::Pool::new(cfg.scaling.bounds(cfg.partitions as usize).1),
        }
    }

    /// Remembers series that just got points (the last 50).
    pub fn note_series<'a>(&self, ids: impl Iterator<Item = &'a event::SeriesId>) {
        let mut recent = self.recent_series.lock();
        for id in ids {
            recent.retain(|r| r != id);
            recent.push_back(id.clone());
        }
        while recent.len() > 50 {
            recent.pop_front();
        }
    }

    /// Adds to a counter.
    pub fn count(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Keeps one worker running for each partition this node should
/// aggregate: all of them on a single node; in a cluster, those whose
/// shard this node leads. A worker whose partition's leadership moves
/// away stops; the new leader's node starts one, which resumes from the
/// last commit.
pub async fn supervise(node: Arc<Node>) {
    let mut workers: HashMap<usize, CancellationToken> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = node.shutdown.cancelled() => break,
        }
        let enabled = node.cfg.read().streams.workers;
        let layout = &node.pipeline.layout;
        for p in 0..layout.partitions() {
            let want = enabled && leads(&node, &layout.stream(p));
            let running = workers.get(&p).is_some_and(|c| !c.is_cancelled());
            if want && !running {
                let stop = node.shutdown.child_token();
                workers.insert(p, stop.clone());
                tokio::spawn(worker::run(node.clone(), p, stop));
            } else if !want && running {
                if let Some(c) = workers.remove(&p) {
                    c.cancel();
                }
            }
        }
    }
    for c in workers.values() {
        c.cancel();
    }
}

/// Whether this node leads the shard holding `key` (always, alone).
pub fn leads(node: &Node, key: &str) -> bool {
    let Some(cluster) = node.cluster.get() else {
        return true;
    };
    cluster
        .shard_of(slot_of(key.as_bytes()))
        .is_ok_and(|shard| cluster.is_leader(shard.group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_evenly_over_the_slots() {
        let l = Layout::new(16);
        for p in 0..16 {
            let slot = slot_of(l.stream(p).as_bytes()) as usize;
            assert_eq!(slot * 16 / SLOTS, p, "partition {p} in slot {slot}");
            let s = event::SeriesId {
                tenant: "t".into(),
                server_id: format!("srv-{p}"),
                metric: "cpu".into(),
            };
            let q = l.partition_of(&s.tenant, &s.server_id);
            assert_eq!(
                slot_of(l.series(&s).as_bytes()),
                slot_of(l.stream(q).as_bytes())
            );
        }
        assert_eq!(escape("a:b{c}%"), "a%3Ab%7Bc%7D%25");
        assert!(StreamsConfig::default().validate().is_ok());
        let bad = StreamsConfig {
            partitions: 0,
            ..StreamsConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "streams.partitions");
    }
}
