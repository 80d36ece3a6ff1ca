//! Storage configuration: one struct, validated before anything opens.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::StorageError;

/// When the write-ahead log is fsynced (Redis's `appendfsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AppendFsync {
    /// Before every write is acknowledged (group commit).
    Always,
    /// Once a second; a process crash loses nothing, a power loss up to 1 s.
    #[default]
    Everysec,
    /// Never explicitly; the OS decides.
    No,
}

impl AppendFsync {
    /// Parses the Redis spelling.
    pub fn parse(s: &str) -> Option<AppendFsync> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Some(AppendFsync::Always),
            "everysec" => Some(AppendFsync::Everysec),
            "no" => Some(AppendFsync::No),
            _ => None,
        }
    }

    /// The Redis spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::Everysec => "everysec",
            AppendFsync::No => "no",
        }
    }
}

/// Configuration of one node's storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for the log, the disk tier and nothing else.
    pub data_dir: PathBuf,
    /// The node's one memory cap, in bytes (or a size like `"64mb"`). The disk tier's block cache and
    /// write buffers are carved out of it; the rest holds hot entries.
    #[serde(deserialize_with = "de_size")]
    pub maxmemory: u64,
    /// Above this fraction of the memory tier's share the spiller starts
    /// moving least recently used entries to disk (`REDIS_MAXMEM_SOFT`).
    pub overflow_ratio: f64,
    /// The spiller stops once usage is below this fraction.
    pub spill_low_ratio: f64,
    /// Seconds between offloader runs (`OFFLOAD_INTERVAL_SECONDS`).
    pub offload_interval_secs: u64,
    /// Entries not written for this long move to disk (`OFFLOAD_AFTER_SECONDS`).
    pub offload_after_secs: u64,
    /// At this memory fraction the offloader turns aggressive (`OFFLOAD_FORCE_MEM_RATIO`).
    pub offload_force_ratio: f64,
    /// In aggressive mode, entries older than this move (`OFFLOAD_FORCE_MIN_AGE_SECONDS`).
    pub offload_force_min_age_secs: u64,
    /// Log fsync policy.
    pub appendfsync: AppendFsync,
    /// Number of logical databases (SELECT 0..n-1).
    pub databases: usize,
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Longest string value accepted, in bytes (Redis's `proto-max-bulk-len`).
    pub max_value_bytes: usize,
    /// Seconds between checkpoints of dirty entries to the disk tier.
    pub checkpoint_interval_secs: u64,
    /// A checkpoint also starts when the current log segment exceeds this.
    pub checkpoint_wal_bytes: u64,
    /// Hashes, sets, sorted sets and streams with at least this many
    /// elements are kept on disk in pieces, so a checkpoint or spill after
    /// a change writes the pieces it touched, not the whole key.
    pub chunk_min_elements: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            maxmemory: 1 << 30,
            overflow_ratio: 0.80,
            spill_low_ratio: 0.70,
            offload_interval_secs: 60,
            offload_after_secs: 300,
            offload_force_ratio: 0.70,
            offload_force_min_age_secs: 5,
            appendfsync: AppendFsync::Everysec,
            databases: 16,
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: 512 << 20,
            checkpoint_interval_secs: 60,
            checkpoint_wal_bytes: 64 << 20,
            chunk_min_elements: 512,
        }
    }
}

/// The disk tier stores keys of at most 64 KiB including an 8-byte prefix.
pub const MAX_KEY_BYTES: usize = 65_000;

/// Smallest accepted `maxmemory`.
pub const MIN_MAXMEMORY: u64 = 4 << 20;

impl StorageConfig {
    /// Checks every field; the error names the first bad one and why.
    pub fn validate(&self) -> Result<(), StorageError> {
        fn ratio(field: &'static str, v: f64) -> Result<(), StorageError> {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(StorageError::Config {
                    field,
                    reason: format!("{v} is not a fraction in (0, 1]"),
                })
            }
        }
        if self.maxmemory < MIN_MAXMEMORY {
            return Err(StorageError::Config {
                field: "maxmemory",
                reason: format!(
                    "{} bytes is below the minimum of {MIN_MAXMEMORY}",
                    self.maxmemory
                ),
            });
        }
        ratio("overflow_ratio", self.overflow_ratio)?;
        ratio("spill_low_ratio", self.spill_low_ratio)?;
        ratio("offload_force_ratio", self.offload_force_ratio)?;
        if self.spill_low_ratio >= self.overflow_ratio {
            return Err(StorageError::Config {
                field: "spill_low_ratio",
                reason: format!("must be below overflow_ratio ({})", self.overflow_ratio),
            });
        }
        if self.offload_interval_secs == 0 {
            return Err(StorageError::Config {
                field: "offload_interval_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.checkpoint_interval_secs == 0 {
            return Err(StorageError::Config {
                field: "checkpoint_interval_secs",
                reason: "must be at least 1".into(),
            });
        }
        if self.databases == 0 || self.databases > 256 {
            return Err(StorageError::Config {
                field: "databases",
                reason: format!("{} is not in 1..=256", self.databases),
            });
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > MAX_KEY_BYTES {
            return Err(StorageError::Config {
                field: "max_key_bytes",
                reason: format!("{} is not in 1..={MAX_KEY_BYTES}", self.max_key_bytes),
            });
        }
        if self.chunk_min_elements < 2 {
            return Err(StorageError::Config {
                field: "chunk_min_elements",
                reason: "must be at least 2".into(),
            });
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > u32::MAX as usize / 2 {
            return Err(StorageError::Config {
                field: "max_value_bytes",
                reason: format!("{} is not in 1..=2 GiB", self.max_value_bytes),
            });
        }
        Ok(())
    }

    /// How `maxmemory` is divided: (memory tier, disk block cache, disk write buffers).
    pub fn memory_budget(&self) -> (u64, u64, u64) {
        let share = (self.maxmemory / 16).clamp(1 << 20, 256 << 20);
        (self.maxmemory - 2 * share, share, share)
    }
}

/// Parses a memory size the way Redis does: `100`, `1k` (1000), `1kb`
/// (1024), `64mb`, `2gb`; case-insensitive.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" | "kib" => 1 << 10,
        "m" => 1_000_000,
        "mb" | "mib" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t)
            .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not a size like 64mb"))),
    }
}
