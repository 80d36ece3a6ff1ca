//! The disk tier: one fjall keyspace per logical database.
//!
//! Keys are laid out as `position (8 bytes, big-endian) ++ user key`, so the
//! LSM orders them exactly as the memory tier does: by slot, then key hash.
//! Listing one slot is a range scan, and a merged SCAN over both tiers needs
//! no sort.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fjall::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};
use fjall::config::PinningPolicy;
use fjall::{
    Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode, Readable,
};

use super::chunks::{self, Chunked, PieceId};
use super::error::StorageError;
use super::types::{
    decode_chunked, decode_record, encode_chunked_head, encode_record, is_chunked_head, now_ms,
    peek_expiry, Record,
};
use crate::slot::position_of;

/// Values at least this large are stored apart from the LSM's index blocks.
const BLOB_THRESHOLD: u32 = 4096;

/// The on-disk tier.
pub(crate) struct Disk {
    db: Database,
    spaces: Vec<Keyspace>,
    /// Small records about the store itself (apply marks), persisted with
    /// the data at every checkpoint.
    meta: Keyspace,
    /// The pieces of large collections (see [`chunks`]), every database's
    /// under keys that start with the database and the key's position.
    pieces: Keyspace,
    /// Collections with at least this many elements are kept in pieces.
    chunk_min: std::sync::atomic::AtomicUsize,
    /// What the store has written here.
    pub written: Written,
    /// Write buffers were being flushed at the last [`Disk::tidy`].
    flushing: std::sync::atomic::AtomicBool,
}

/// Totals of what the store wrote to the disk tier.
#[derive(Default)]
pub(crate) struct Written {
    /// Bytes of records, heads and pieces.
    pub bytes: AtomicU64,
    /// Pieces of large collections.
    pub pieces: AtomicU64,
    /// Large collections laid out in pieces afresh (written whole).
    pub layouts: AtomicU64,
}

/// A record read from disk, and what the disk holds of it in pieces.
pub(crate) type Stored = (Record, Option<Box<Chunked>>);

/// Where the pieces of `key` in physical database `db` are kept: the
/// database, the key's position, its length and itself, so one key's
/// pieces never share a prefix with another key's.
fn piece_prefix(db: usize, key: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(13 + key.len() + 16);
    p.push(db as u8);
    p.extend_from_slice(&position_of(key).to_be_bytes());
    p.extend_from_slice(&(key.len() as u32).to_be_bytes());
    p.extend_from_slice(key);
    p
}

fn piece_key(prefix: &[u8], (a, b): PieceId) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 16);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&a.to_be_bytes());
    k.extend_from_slice(&b.to_be_bytes());
    k
}

/// The pieces an iterator over one key's prefix yields, by id.
fn read_pieces(
    iter: fjall::Iter,
) -> impl Iterator<Item = Result<(PieceId, Vec<u8>), StorageError>> {
    iter.map(|guard| {
        let (k, v) = guard.into_inner()?;
        let id = k
            .len()
            .checked_sub(16)
            .map(|at| {
                let a = u64::from_be_bytes(k[at..at + 8].try_into().unwrap_or_default());
                let b = u64::from_be_bytes(k[at + 8..].try_into().unwrap_or_default());
                (a, b)
            })
            .ok_or_else(|| StorageError::Corrupt {
                what: "a piece key too short".into(),
            })?;
        Ok((id, v.to_vec()))
    })
}

/// A metadata key written only to move the LSM's versions on (see
/// [`Disk::tidy`]).
const TIDY_KEY: &[u8] = b"tidy";

/// The stored form of a key.
pub(crate) fn disk_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&position_of(key).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Splits a stored key into (position, user key).
pub(crate) fn split_disk_key(k: &[u8]) -> Option<(u64, &[u8])> {
    let pos = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
    Some((pos, &k[8..]))
}

impl Disk {
    pub fn open(
        dir: &Path,
        databases: usize,
        cache_bytes: u64,
        write_buffer_bytes: u64,
        expiry_grace_ms: u64,
    ) -> Result<Disk, StorageError> {
        let filter: Arc<dyn Factory> = Arc::new(ExpiredFilterFactory {
            grace_ms: expiry_grace_ms,
        });
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            // The store's own write-ahead log decides durability; fjall's
            // journal is persisted at checkpoints.
            .manual_journal_persist(true)
            // Only the databases hold records with an expiry to read: the
            // pieces and the store's own metadata are never dropped by it.
            .with_compaction_filter_factories(Arc::new(move |name: &str| {
                name.starts_with("db").then(|| filter.clone())
            }))
            .open()?;
        let mut spaces = Vec::with_capacity(databases);
        for i in 0..databases {
            let name = format!("db{i}");
            let ks = db.keyspace(&name, || {
                KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size((write_buffer_bytes / 4).max(1 << 20))
                    // Point reads of cold keys must not re-read and re-checksum
                    // whole filter or index blocks: keep them resident.
                    .filter_block_pinning_policy(PinningPolicy::all(true))
                    .index_block_pinning_policy(PinningPolicy::all(true))
                    .with_kv_separation(Some(
                        KvSeparationOptions::default().separation_threshold(BLOB_THRESHOLD),
                    ))
            })?;
            spaces.push(ks);
        }
        let meta = db.keyspace("meta", || {
            KeyspaceCreateOptions::default().manual_journal_persist(true)
        })?;
        let pieces = db.keyspace("pieces", || {
            KeyspaceCreateOptions::default()
                .manual_journal_persist(true)
                .max_memtable_size((write_buffer_bytes / 4).max(1 << 20))
                .with_kv_separation(Some(
                    KvSeparationOptions::default().separation_threshold(BLOB_THRESHOLD),
                ))
        })?;
        Ok(Disk {
            db,
            spaces,
            meta,
            pieces,
            chunk_min: std::sync::atomic::AtomicUsize::new(usize::MAX),
            written: Written::default(),
            flushing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Collections with at least `n` elements are written in pieces from now on.
    pub fn set_chunk_min(&self, n: usize) {
        self.chunk_min
            .store(n.max(2), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, db: usize, key: &[u8]) -> Result<Option<Record>, StorageError> {
        Ok(self.get_chunked(db, key)?.map(|(rec, _)| rec))
    }

    /// Reads `key`, and what the disk holds of it in pieces (if it is kept
    /// that way), for its memory entry to track.
    pub fn get_chunked(&self, db: usize, key: &[u8]) -> Result<Option<Stored>, StorageError> {
        let Some(v) = self.spaces[db].get(disk_key(key))? else {
            return Ok(None);
        };
        if !is_chunked_head(&v) {
            return Ok(Some((decode_record(&v)?, None)));
        }
        let pieces = read_pieces(self.pieces.prefix(piece_prefix(db, key)));
        let (rec, layout) = decode_chunked(&v, pieces)?;
        Ok(Some((rec, Some(Chunked::clean(layout)))))
    }

    /// The whole encoding of a stored record as `view` sees it: a head kept
    /// in pieces is put back together with them.
    pub fn whole_in(
        &self,
        view: &fjall::Snapshot,
        db: usize,
        key: &[u8],
        stored: fjall::Slice,
    ) -> Result<Vec<u8>, StorageError> {
        if !is_chunked_head(&stored) {
            return Ok(stored.to_vec());
        }
        let pieces = read_pieces(view.prefix(&self.pieces, piece_prefix(db, key)));
        let (rec, _) = decode_chunked(&stored, pieces)?;
        let mut out = Vec::new();
        encode_record(&rec, &mut out);
        Ok(out)
    }

    /// Stores `rec`, writing only what `chunks` says changed; returns what
    /// the disk now holds in pieces, for the memory entry to keep.
    pub fn put(
        &self,
        db: usize,
        key: &[u8],
        rec: &Record,
        chunks: Option<&Chunked>,
    ) -> Result<Option<Box<Chunked>>, StorageError> {
        let mut batch = self.batch();
        let out = batch.store(db, key, rec, chunks)?;
        batch.commit()?;
        Ok(out)
    }

    /// Stores `rec` in place of whatever the key held, pieces included
    /// (the log's replay, which has no memory entry to say what they are).
    pub fn replace(&self, db: usize, key: &[u8], rec: &Record) -> Result<(), StorageError> {
        let mut batch = self.batch();
        batch.store_over(db, key, rec, None, true)?;
        batch.commit()
    }

    /// Stores an encoded whole record, dropping any pieces the key had.
    pub fn put_raw(&self, db: usize, key: &[u8], encoded: &[u8]) -> Result<(), StorageError> {
        let mut batch = self.batch();
        batch.drop_pieces(db, key)?;
        batch.bytes += encoded.len() as u64;
        batch.inner.insert(&self.spaces[db], disk_key(key), encoded);
        batch.commit()
    }

    /// A batch of writes that land together.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            disk: self,
            inner: self.db.batch(),
            bytes: 0,
            pieces: 0,
            layouts: 0,
        }
    }

    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    /// Removes `key` and its pieces.
    pub fn remove(&self, db: usize, key: &[u8]) -> Result<(), StorageError> {
        let mut batch = self.batch();
        batch.drop_pieces(db, key)?;
        batch.inner.remove(&self.spaces[db], disk_key(key));
        batch.commit()
    }

    /// Removes every key of `db` and their pieces.
    pub fn clear(&self, db: usize) -> Result<(), StorageError> {
        self.spaces[db].clear()?;
        let mut batch = self.db.batch();
        for guard in self.pieces.prefix([db as u8]) {
            batch.remove(&self.pieces, guard.key()?);
            if batch.len() >= 4096 {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
            }
        }
        batch.commit()?;
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn persist(&self) -> Result<(), StorageError> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Seals the write buffers and has them flushed to table files. After
    /// a checkpoint they hold a second copy of what the memory tier holds
    /// (measured: 1M small keys left 105 MiB in buffers that stayed below
    /// their cap, and so in memory for as long as no further writes came).
    pub fn release_write_buffers(&self) -> Result<(), StorageError> {
        for ks in self.spaces.iter().chain([&self.pieces]) {
            ks.rotate_memtable()?;
        }
        Ok(())
    }

    /// Frees write buffers already flushed to table files. The LSM keeps
    /// the table versions that still point at a flushed buffer until its
    /// next version change with a newer read watermark, which an idle
    /// keyspace may never see; rotating the store's own small metadata
    /// keyspace makes that change for all of them. Called once a second;
    /// does its work once after each round of flushes has finished.
    pub fn tidy(&self) -> Result<(), StorageError> {
        let sealed: usize = self
            .spaces
            .iter()
            .chain([&self.pieces])
            .map(Keyspace::sealed_memtable_count)
            .sum();
        let pending = sealed + self.db.outstanding_flushes();
        let was = self
            .flushing
            .swap(pending > 0, std::sync::atomic::Ordering::Relaxed);
        if was && pending == 0 {
            self.meta.insert(TIDY_KEY, [])?;
            self.meta.rotate_memtable()?;
        }
        Ok(())
    }

    /// Bytes held in write buffers not yet flushed to table files.
    pub fn write_buffer_bytes(&self) -> u64 {
        self.db.write_buffer_size()
    }

    /// Up to `limit` (position, key, encoded record) items of `db` from
    /// position `from`, and whether more follow.
    pub fn scan_from(
        &self,
        db: usize,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, Vec<u8>, fjall::Slice)>, bool), StorageError> {
        let mut out = Vec::new();
        for guard in self.spaces[db].range(from.to_be_bytes()..) {
            if out.len() >= limit {
                return Ok((out, true));
            }
            let (k, v) = guard.into_inner()?;
            if let Some((pos, key)) = split_disk_key(&k) {
                out.push((pos, key.to_vec(), v));
            }
        }
        Ok((out, false))
    }

    /// Counts the keys of `db`, expired-but-unreclaimed ones included (they
    /// are uncounted when reclaimed).
    pub fn count(&self, db: usize) -> Result<u64, StorageError> {
        let mut n = 0;
        for guard in self.spaces[db].iter() {
            guard.key()?;
            n += 1;
        }
        Ok(n)
    }

    /// A point-in-time view of every database.
    pub fn snapshot(&self) -> fjall::Snapshot {
        self.db.snapshot()
    }

    pub fn keyspace(&self, db: usize) -> &Keyspace {
        &self.spaces[db]
    }

    /// Bytes the disk tier occupies.
    pub fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

/// Writes to the disk tier that land together, atomically.
pub(crate) struct Batch<'a> {
    disk: &'a Disk,
    inner: fjall::OwnedWriteBatch,
    bytes: u64,
    pieces: u64,
    layouts: u64,
}

impl Batch<'_> {
    /// Adds `rec` under `key`: whole, or in pieces if it is a large
    /// collection, writing only the pieces `chunks` (what the disk holds
    /// and what changed since) says changed. Returns what the disk holds in
    /// pieces once the batch lands.
    pub fn store(
        &mut self,
        db: usize,
        key: &[u8],
        rec: &Record,
        chunks: Option<&Chunked>,
    ) -> Result<Option<Box<Chunked>>, StorageError> {
        self.store_over(db, key, rec, chunks, chunks.is_some())
    }

    /// [`Batch::store`], told whether the key may have pieces on disk
    /// that `chunks` does not describe.
    fn store_over(
        &mut self,
        db: usize,
        key: &[u8],
        rec: &Record,
        chunks: Option<&Chunked>,
        had_pieces: bool,
    ) -> Result<Option<Box<Chunked>>, StorageError> {
        let min = self
            .disk
            .chunk_min
            .load(std::sync::atomic::Ordering::Relaxed);
        let elements = chunks::elements(&rec.value);
        // Once in pieces, a collection stays so until it shrinks well
        // below the threshold, so one at the edge does not flip each write.
        let in_pieces = match (elements, chunks) {
            (Some(n), Some(_)) => n >= min / 4,
            (Some(n), None) => n >= min,
            (None, _) => false,
        };
        let space = &self.disk.spaces[db];
        let mut head = Vec::with_capacity(64);
        if !in_pieces {
            if had_pieces {
                self.drop_pieces(db, key)?;
            }
            encode_record(rec, &mut head);
            self.bytes += head.len() as u64;
            self.inner.insert(space, disk_key(key), head);
            return Ok(None);
        }
        let prefix = piece_prefix(db, key);
        if let Some(Chunked {
            layout,
            dirty: Some(dirty),
        }) = chunks
        {
            if chunks::still_fits(layout, &rec.value) {
                let mut layout = layout.clone();
                for (id, bytes) in chunks::dirty_pieces(&mut layout, &rec.value, dirty) {
                    match bytes {
                        Some(b) => {
                            self.bytes += b.len() as u64;
                            self.pieces += 1;
                            self.inner
                                .insert(&self.disk.pieces, piece_key(&prefix, id), b);
                        }
                        None => self.inner.remove(&self.disk.pieces, piece_key(&prefix, id)),
                    }
                }
                encode_chunked_head(rec, &layout, &mut head);
                self.bytes += head.len() as u64;
                self.inner.insert(space, disk_key(key), head);
                return Ok(Some(Chunked::clean(layout)));
            }
        }
        // Laid out afresh: the pieces the key had and the new layout lacks
        // go. (A batch must not both remove and insert one key: the two
        // would carry the same sequence number.)
        let layout = chunks::layout_for(&rec.value);
        let pieces = chunks::all_pieces(&layout, &rec.value);
        let fresh: std::collections::HashSet<Vec<u8>> = pieces
            .iter()
            .map(|(id, _)| piece_key(&prefix, *id))
            .collect();
        for guard in self.disk.pieces.prefix(&prefix) {
            let k = guard.key()?;
            if !fresh.contains(&*k) {
                self.inner.remove(&self.disk.pieces, k);
            }
        }
        for (id, bytes) in pieces {
            self.bytes += bytes.len() as u64;
            self.pieces += 1;
            self.inner
                .insert(&self.disk.pieces, piece_key(&prefix, id), bytes);
        }
        encode_chunked_head(rec, &layout, &mut head);
        self.bytes += head.len() as u64;
        self.layouts += 1;
        self.inner.insert(space, disk_key(key), head);
        Ok(Some(Chunked::clean(layout)))
    }

    /// Adds the removal of every piece `key` has.
    pub fn drop_pieces(&mut self, db: usize, key: &[u8]) -> Result<(), StorageError> {
        for guard in self.disk.pieces.prefix(piece_prefix(db, key)) {
            self.inner.remove(&self.disk.pieces, guard.key()?);
        }
        Ok(())
    }

    pub fn commit(self) -> Result<(), StorageError> {
        self.inner.commit()?;
        let w = &self.disk.written;
        w.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        w.pieces.fetch_add(self.pieces, Ordering::Relaxed);
        w.layouts.fetch_add(self.layouts, Ordering::Relaxed);
        Ok(())
    }
}

/// Drops records that expired more than a grace period ago. The grace lets
/// the store's own expiry sweep remove keys first, keeping key counts exact;
/// the filter reclaims space for anything the sweep has not reached.
struct ExpiredFilterFactory {
    grace_ms: u64,
}

impl Factory for ExpiredFilterFactory {
    fn name(&self) -> &str {
        "strata-expired"
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        Box::new(ExpiredFilter {
            cutoff_ms: now_ms().saturating_sub(self.grace_ms),
        })
    }
}

struct ExpiredFilter {
    cutoff_ms: u64,
}

impl CompactionFilter for ExpiredFilter {
    fn filter_item(
        &mut self,
        item: ItemAccessor<'_>,
        _ctx: &Context,
    ) -> fjall::compaction::filter::CompactionFilterResult {
        let value = item.value()?;
        // A head kept in pieces is left to the store's sweep, which
        // removes its pieces with it.
        if is_chunked_head(&value) {
            return Ok(Verdict::Keep);
        }
        Ok(match peek_expiry(&value) {
            Some(at) if at <= self.cutoff_ms => Verdict::Remove,
            _ => Verdict::Keep,
        })
    }
}
