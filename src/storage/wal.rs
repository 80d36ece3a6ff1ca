//! The write-ahead log: segmented files of checksummed records with group
//! commit.
//!
//! A record is `len u32 | crc32 u32 | body`. Appending only copies into a
//! shared buffer and returns a log sequence number (LSN). [`Wal::sync`]
//! makes an LSN as durable as the `appendfsync` policy promises: one
//! `write(2)` moves everything appended so far to the OS, and under
//! `always` one caller at a time fsyncs for everyone queued behind it.
//!
//! Any failed write or fsync poisons the log: a log with a hole in it can't
//! be trusted, so the store refuses writes until it is reopened.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::config::AppendFsync;
use super::error::StorageError;

/// A log sequence number.
pub type Lsn = u64;

/// Where to inject a failure (tests of the poisoning path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FailPoint {
    /// No failure.
    None = 0,
    /// The next `write(2)` of the log fails.
    WalWrite = 1,
    /// The next fsync of the log fails.
    WalFsync = 2,
}

struct Tail {
    buf: Vec<u8>,
    appended: Lsn,
    file: Arc<File>,
    segment: u64,
    segment_bytes: u64,
}

/// Counters the log exports.
#[derive(Default)]
pub struct WalStats {
    /// Bytes written to log files.
    pub bytes: AtomicU64,
    /// Number of fsyncs.
    pub fsyncs: AtomicU64,
    /// Total fsync time, microseconds.
    pub fsync_micros: AtomicU64,
    /// Slowest fsync, microseconds.
    pub fsync_max_micros: AtomicU64,
}

/// The write-ahead log.
pub(crate) struct Wal {
    dir: PathBuf,
    tail: Mutex<Tail>,
    sync_lock: Mutex<()>,
    written: AtomicU64,
    synced: AtomicU64,
    poisoned: Mutex<Option<String>>,
    failpoint: AtomicU8,
    pub stats: WalStats,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("wal-{id:020}.log"))
}

/// Lists log segments in order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
        {
            if let Ok(id) = id.parse::<u64>() {
                out.push((id, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the valid records of one segment. Stops at the first torn or
/// corrupt record and reports how many bytes were valid.
pub(crate) fn read_segment(
    path: &Path,
    mut f: impl FnMut(&[u8]),
) -> Result<(u64, u64), StorageError> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut pos = 0usize;
    let mut records = 0;
    while pos + 8 <= data.len() {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let Some(end) = (pos + 8).checked_add(len).filter(|&e| e <= data.len()) else {
            break;
        };
        let body = &data[pos + 8..end];
        if crc32fast::hash(body) != crc {
            break;
        }
        f(body);
        records += 1;
        pos = end;
    }
    let _ = records;
    Ok((pos as u64, data.len() as u64))
}

impl Wal {
    /// Opens a fresh segment after every older one.
    pub fn create(dir: &Path) -> Result<Wal, StorageError> {
        fs::create_dir_all(dir)?;
        let next = list_segments(dir)?.last().map_or(1, |(id, _)| id + 1);
        let file = open_segment(dir, next)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            tail: Mutex::new(Tail {
                buf: Vec::with_capacity(1 << 16),
                appended: 0,
                file: Arc::new(file),
                segment: next,
                segment_bytes: 0,
            }),
            sync_lock: Mutex::new(()),
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            failpoint: AtomicU8::new(0),
            stats: WalStats::default(),
        })
    }

    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }

    pub fn check(&self) -> Result<(), StorageError> {
        match &*self.poisoned.lock() {
            Some(cause) => Err(StorageError::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&self, cause: String) -> StorageError {
        let mut p = self.poisoned.lock();
        let cause = p.get_or_insert(cause).clone();
        tracing::error!(%cause, "write-ahead log failed; refusing further writes");
        StorageError::Poisoned { cause }
    }

    pub fn inject(&self, point: FailPoint) {
        self.failpoint.store(point as u8, Ordering::SeqCst);
    }

    /// Appends one record whose body `encode` writes straight into the log
    /// buffer (no intermediate allocation on the write path); returns its LSN.
    pub fn append_with(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Lsn {
        let mut t = self.tail.lock();
        let start = t.buf.len();
        t.buf.extend_from_slice(&[0u8; 8]);
        encode(&mut t.buf);
        let len = (t.buf.len() - start - 8) as u32;
        let crc = crc32fast::hash(&t.buf[start + 8..]);
        t.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        t.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        t.appended += 1;
        t.appended
    }

    /// The last appended LSN.
    pub fn appended(&self) -> Lsn {
        self.tail.lock().appended
    }

    /// Bytes in the current segment.
    pub fn segment_bytes(&self) -> u64 {
        self.tail.lock().segment_bytes
    }

    fn write_out(&self, t: &mut Tail) -> Result<(), StorageError> {
        if t.buf.is_empty() {
            return Ok(());
        }
        if self
            .failpoint
            .compare_exchange(
                FailPoint::WalWrite as u8,
                0,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            return Err(self.poison("injected write failure".into()));
        }
        let mut file: &File = &t.file;
        if let Err(e) = file.write_all(&t.buf) {
            return Err(self.poison(format!("write: {e}")));
        }
        self.stats
            .bytes
            .fetch_add(t.buf.len() as u64, Ordering::Relaxed);
        t.segment_bytes += t.buf.len() as u64;
        t.buf.clear();
        if t.buf.capacity() > 4 << 20 {
            // Don't keep a burst's buffer around.
            t.buf = Vec::with_capacity(1 << 16);
        }
        self.written.store(t.appended, Ordering::Release);
        Ok(())
    }

    fn fsync(&self, file: &File) -> Result<(), StorageError> {
        if self
            .failpoint
            .compare_exchange(
                FailPoint::WalFsync as u8,
                0,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            return Err(self.poison("injected fsync failure".into()));
        }
        let start = Instant::now();
        if let Err(e) = file.sync_data() {
            return Err(self.poison(format!("fsync: {e}")));
        }
        let us = start.elapsed().as_micros() as u64;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats.fsync_micros.fetch_add(us, Ordering::Relaxed);
        self.stats.fsync_max_micros.fetch_max(us, Ordering::Relaxed);
        Ok(())
    }

    /// Makes `lsn` as durable as `policy` promises.
    pub fn sync(&self, lsn: Lsn, policy: AppendFsync) -> Result<(), StorageError> {
        self.check()?;
        match policy {
            AppendFsync::No | AppendFsync::Everysec => {
                if self.written.load(Ordering::Acquire) < lsn {
                    let mut t = self.tail.lock();
                    if self.written.load(Ordering::Acquire) < lsn {
                        self.write_out(&mut t)?;
                    }
                }
                Ok(())
            }
            AppendFsync::Always => {
                if self.synced.load(Ordering::Acquire) >= lsn {
                    return Ok(());
                }
                let _leader = self.sync_lock.lock();
                if self.synced.load(Ordering::Acquire) >= lsn {
                    return Ok(());
                }
                let (file, upto) = {
                    let mut t = self.tail.lock();
                    self.write_out(&mut t)?;
                    (t.file.clone(), t.appended)
                };
                // Appends go on while this fsync runs; they ride the next one.
                self.fsync(&file)?;
                self.synced.fetch_max(upto, Ordering::AcqRel);
                Ok(())
            }
        }
    }

    /// Closes the current segment (written and synced) and starts a new
    /// one. Returns the id of the new segment: every older segment can be
    /// deleted once the disk tier holds what they recorded.
    pub fn rotate(&self) -> Result<u64, StorageError> {
        let _leader = self.sync_lock.lock();
        let mut t = self.tail.lock();
        self.write_out(&mut t)?;
        let old = t.file.clone();
        self.fsync(&old)?;
        self.synced.fetch_max(t.appended, Ordering::AcqRel);
        let next = t.segment + 1;
        let file =
            open_segment(&self.dir, next).map_err(|e| self.poison(format!("open segment: {e}")))?;
        t.file = Arc::new(file);
        t.segment = next;
        t.segment_bytes = 0;
        Ok(next)
    }

    /// Deletes segments older than `keep_from`.
    pub fn remove_before(&self, keep_from: u64) -> Result<(), StorageError> {
        for (id, path) in list_segments(&self.dir)? {
            if id < keep_from {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

fn open_segment(dir: &Path, id: u64) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, id))?;
    // Make the new file's directory entry durable.
    File::open(dir)?.sync_all()?;
    Ok(file)
}
