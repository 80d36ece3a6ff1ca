//! Snapshots: a consistent point-in-time copy of both tiers in one portable
//! file, and restoring from one.
//!
//! File layout: a 16-byte magic, then records `1 | db u8 | key | record`
//! (byte strings are u32-length-prefixed; the record uses the same encoding
//! as the disk tier), then a trailer `0 | count u64 | crc32 u32` where the
//! CRC covers every byte before it.
//!
//! To take one, writers pause for as long as a checkpoint takes: then every
//! key is on disk, and an LSM snapshot at that instant is the whole store.
//! The file is streamed from that LSM snapshot while writes go on.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use fjall::Readable;
use serde::Serialize;

use super::disk::split_disk_key;
use super::error::StorageError;
use super::types::{decode_record, now_ms, peek_expiry, put_bytes};
use super::Store;

const MAGIC: &[u8; 16] = b"STRATA-SNAPSHOT1";

/// What a snapshot or restore covered.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// Keys in it.
    pub keys: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A writer that keeps the CRC-32 and the count of what went through it.
pub struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> CrcWriter<W> {
    /// Counts what is written to `inner`.
    pub fn new(inner: W) -> CrcWriter<W> {
        CrcWriter {
            inner,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }

    /// The writer, the CRC-32 of everything written and its length.
    pub fn finish(self) -> (W, u32, u64) {
        (self.inner, self.crc.finalize(), self.bytes)
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Store {
    /// Writes a consistent snapshot of every database to `path`
    /// (atomically: a temporary file renamed into place).
    pub fn snapshot_to(&self, path: &Path) -> Result<SnapshotInfo, StorageError> {
        let inner = &*self.inner;
        let view = {
            let _paused = inner.gate.write();
            inner.checkpoint()?;
            inner.disk.snapshot()
        };
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp)?;
        let mut w = CrcWriter::new(BufWriter::new(file));
        w.write_all(MAGIC)?;
        let now = now_ms();
        let mut keys = 0u64;
        let mut buf = Vec::new();
        for db in 0..inner.counts.len() {
            for guard in view.iter(inner.disk.keyspace(db)) {
                let (k, v) = guard.into_inner()?;
                if matches!(peek_expiry(&v), Some(at) if at <= now) {
                    continue;
                }
                let Some((_, key)) = split_disk_key(&k) else {
                    continue;
                };
                buf.clear();
                buf.push(1);
                // Database numbers as clients name them (after SWAPDB).
                buf.push(inner.logical(db) as u8);
                put_bytes(&mut buf, key);
                put_bytes(&mut buf, &inner.disk.whole_in(&view, db, key, v.clone())?);
                w.write_all(&buf)?;
                keys += 1;
            }
        }
        w.write_all(&[0])?;
        w.write_all(&keys.to_le_bytes())?;
        let (inner_w, crc, _) = w.finish();
        let mut file = inner_w.into_inner().map_err(|e| e.into_error())?;
        file.write_all(&crc.to_le_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        let bytes = std::fs::metadata(path)?.len();
        tracing::info!(path = %path.display(), keys, bytes, "snapshot written");
        Ok(SnapshotInfo {
            path: path.to_path_buf(),
            keys,
            bytes,
        })
    }

    /// Replaces the whole store with the snapshot at `path`. The file is
    /// checked completely first: a bad file changes nothing.
    pub fn restore_from(&self, path: &Path) -> Result<SnapshotInfo, StorageError> {
        let inner = &*self.inner;
        let databases = inner.counts.len();
        let max_key = inner.cfg.read().max_key_bytes;
        let bad = |reason: String| StorageError::BadSnapshot {
            path: path.to_path_buf(),
            reason,
        };
        // Pass 1: validate.
        let keys =
            read_snapshot(path, databases, max_key, |_, _, _| Ok(())).map_err(|e| match e {
                StorageError::Io(io) => bad(io.to_string()),
                StorageError::Corrupt { what } => bad(what),
                other => other,
            })?;
        inner.wal.check()?;
        // Pass 2: replace.
        let _paused = inner.gate.write();
        inner.checkpoint()?;
        for db in 0..databases {
            inner.flush_db_locked(db)?;
        }
        let mut added = vec![0i64; databases];
        read_snapshot(path, databases, max_key, |db, key, rec| {
            let db = inner.phys(db)?;
            inner.disk.put_raw(db, key, rec)?;
            added[db] += 1;
            Ok(())
        })?;
        for (db, n) in added.into_iter().enumerate() {
            inner.counts[db].disk.store(n, Ordering::Relaxed);
        }
        inner.disk.persist()?;
        let bytes = std::fs::metadata(path)?.len();
        tracing::info!(path = %path.display(), keys, bytes, "snapshot restored");
        Ok(SnapshotInfo {
            path: path.to_path_buf(),
            keys,
            bytes,
        })
    }
}

/// Reads and checks a snapshot, calling `f` per record; returns the count.
fn read_snapshot(
    path: &Path,
    databases: usize,
    max_key: usize,
    mut f: impl FnMut(usize, &[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<u64, StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt {
        what: what.to_string(),
    };
    let mut r = BufReader::new(File::open(path)?);
    let mut crc = crc32fast::Hasher::new();
    let read = |buf: &mut [u8],
                crc: &mut crc32fast::Hasher,
                r: &mut BufReader<File>|
     -> Result<(), StorageError> {
        r.read_exact(buf).map_err(|_| corrupt("file ends early"))?;
        crc.update(buf);
        Ok(())
    };
    let mut magic = [0u8; 16];
    read(&mut magic, &mut crc, &mut r)?;
    if &magic != MAGIC {
        return Err(corrupt("not a strata snapshot (bad magic)"));
    }
    let mut count = 0u64;
    let mut key = Vec::new();
    let mut rec = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        read(&mut tag, &mut crc, &mut r)?;
        match tag[0] {
            0 => break,
            1 => {}
            _ => return Err(corrupt("unknown record tag")),
        }
        let mut db = [0u8; 1];
        read(&mut db, &mut crc, &mut r)?;
        let db = db[0] as usize;
        if db >= databases {
            return Err(corrupt(&format!("database {db} does not exist here")));
        }
        for (buf, limit) in [(&mut key, max_key), (&mut rec, u32::MAX as usize)] {
            let mut len = [0u8; 4];
            read(&mut len, &mut crc, &mut r)?;
            let len = u32::from_le_bytes(len) as usize;
            if len > limit {
                return Err(corrupt("key longer than max_key_bytes"));
            }
            buf.resize(len, 0);
            read(buf, &mut crc, &mut r)?;
        }
        decode_record(&rec)?;
        f(db, &key, &rec)?;
        count += 1;
    }
    let mut n = [0u8; 8];
    read(&mut n, &mut crc, &mut r)?;
    if u64::from_le_bytes(n) != count {
        return Err(corrupt("record count does not match the trailer"));
    }
    let want = crc.finalize();
    let mut got = [0u8; 4];
    r.read_exact(&mut got)
        .map_err(|_| corrupt("file ends early"))?;
    if u32::from_le_bytes(got) != want {
        return Err(corrupt("checksum mismatch"));
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra)? != 0 {
        return Err(corrupt("trailing bytes after the trailer"));
    }
    Ok(count)
}
