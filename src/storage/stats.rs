//! Counters the engine keeps and the server exports.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters (relaxed atomics; read as a [`StatsSnapshot`]).
#[derive(Default)]
pub(crate) struct Counters {
    pub hits_memory: AtomicU64,
    pub hits_disk: AtomicU64,
    pub misses: AtomicU64,
    pub spilled: AtomicU64,
    pub spilled_bytes: AtomicU64,
    pub direct_to_disk: AtomicU64,
    pub promotions: AtomicU64,
    pub expired: AtomicU64,
    pub offload_runs: AtomicU64,
    pub offloaded: AtomicU64,
    pub offload_write_fail: AtomicU64,
    pub checkpoints: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one offloader run did, as the seed's offloader logs it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OffloadReport {
    /// Entries examined.
    pub scanned: u64,
    /// Entries older than the age threshold.
    pub old: u64,
    /// Entries moved to disk.
    pub moved: u64,
    /// Entries whose move failed.
    pub write_fail: u64,
    /// Memory tier usage as a fraction of its cap when the run started.
    pub mem_ratio: f64,
    /// Whether the run was aggressive because of memory pressure.
    pub force_by_mem: bool,
}

/// A point-in-time copy of the engine's statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    /// Bytes charged to the memory tier.
    pub used_bytes: u64,
    /// Bytes the disk tier holds in write buffers not yet flushed to files.
    pub write_buffer_bytes: u64,
    /// The memory tier's cap (maxmemory less the disk tier's share).
    pub tier_cap_bytes: u64,
    /// The configured `maxmemory`.
    pub maxmemory: u64,
    /// Entries held in memory (all databases).
    pub entries_memory: u64,
    /// Keys whose current version is only on disk (all databases).
    pub entries_disk: u64,
    /// Reads served from memory.
    pub hits_memory: u64,
    /// Reads served from disk.
    pub hits_disk: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Entries moved to disk by the spiller.
    pub spilled: u64,
    /// Bytes moved to disk by the spiller.
    pub spilled_bytes: u64,
    /// Writes stored straight on disk because memory was full.
    pub direct_to_disk: u64,
    /// Disk hits promoted back to memory.
    pub promotions: u64,
    /// Keys removed because their TTL passed.
    pub expired: u64,
    /// Offloader runs.
    pub offload_runs: u64,
    /// Entries moved by the offloader.
    pub offloaded: u64,
    /// Offloader moves that failed.
    pub offload_write_fail: u64,
    /// The last offloader run.
    pub last_offload: OffloadReport,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Bytes written to the write-ahead log.
    pub wal_bytes: u64,
    /// Log fsyncs.
    pub wal_fsyncs: u64,
    /// Total fsync time, microseconds.
    pub wal_fsync_micros: u64,
    /// Slowest fsync, microseconds.
    pub wal_fsync_max_micros: u64,
    /// Bytes the disk tier occupies on disk.
    pub disk_bytes: u64,
    /// Bytes the store wrote to the disk tier (records, heads and pieces).
    pub disk_write_bytes: u64,
    /// Pieces of large collections written.
    pub disk_pieces_written: u64,
    /// Large collections laid out in pieces afresh (written whole).
    pub disk_layouts_written: u64,
    /// Set when a failed log write made the store read-only.
    pub poisoned: Option<String>,
}
