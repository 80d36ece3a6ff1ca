//! The storage layer's error type. The server maps each variant to a RESP
//! error prefix and an HTTP status in one place.

use std::path::PathBuf;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A write or fsync of the write-ahead log failed earlier; the store no
    /// longer accepts writes because it can't promise their durability.
    #[error("store is read-only after a failed log write ({cause}); restart the node to recover")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// A key longer than the configured limit.
    #[error("key too large: {len} bytes (limit {limit})")]
    KeyTooLarge {
        /// Size of the key.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A value longer than the configured limit.
    #[error("value too large: {len} bytes (limit {limit})")]
    ValueTooLarge {
        /// Size of the value.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A logical database outside 0..databases.
    #[error("DB index is out of range")]
    BadDatabase,
    /// A configuration value that can't be used.
    #[error("invalid storage config: {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// Stored bytes that don't decode.
    #[error("corrupt data: {what}")]
    Corrupt {
        /// What was wrong.
        what: String,
    },
    /// A snapshot file that can't be restored; nothing was changed.
    #[error("bad snapshot {path}: {reason}")]
    BadSnapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The disk tier failed.
    #[error("disk tier: {0}")]
    Disk(#[from] fjall::Error),
    /// A file operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
