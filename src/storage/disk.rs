//! The disk tier: one fjall keyspace per logical database.
//!
//! Keys are laid out as `position (8 bytes, big-endian) ++ user key`, so the
//! LSM orders them exactly as the memory tier does: by slot, then key hash.
//! Listing one slot is a range scan, and a merged SCAN over both tiers needs
//! no sort.

use std::path::Path;
use std::sync::Arc;

use fjall::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};
use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use super::error::StorageError;
use super::types::{decode_record, encode_record, now_ms, peek_expiry, Record};
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
}

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
            .with_compaction_filter_factories(Arc::new(move |_name: &str| Some(filter.clone())))
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
        Ok(Disk { db, spaces, meta })
    }

    pub fn get(&self, db: usize, key: &[u8]) -> Result<Option<Record>, StorageError> {
        match self.spaces[db].get(disk_key(key))? {
            Some(v) => Ok(Some(decode_record(&v)?)),
            None => Ok(None),
        }
    }

    pub fn put(&self, db: usize, key: &[u8], rec: &Record) -> Result<(), StorageError> {
        let mut buf = Vec::with_capacity(64);
        encode_record(rec, &mut buf);
        self.spaces[db].insert(disk_key(key), buf)?;
        Ok(())
    }

    pub fn put_raw(&self, db: usize, key: &[u8], encoded: &[u8]) -> Result<(), StorageError> {
        self.spaces[db].insert(disk_key(key), encoded)?;
        Ok(())
    }

    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    pub fn remove(&self, db: usize, key: &[u8]) -> Result<(), StorageError> {
        self.spaces[db].remove(disk_key(key))?;
        Ok(())
    }

    pub fn clear(&self, db: usize) -> Result<(), StorageError> {
        self.spaces[db].clear()?;
        Ok(())
    }

    /// Writes many records in one batch.
    pub fn put_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (usize, &'a [u8], &'a Record)>,
    ) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        let mut buf = Vec::new();
        for (db, key, rec) in items {
            buf.clear();
            encode_record(rec, &mut buf);
            batch.insert(&self.spaces[db], disk_key(key), buf.as_slice());
        }
        batch.commit()?;
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn persist(&self) -> Result<(), StorageError> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
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
        Ok(match peek_expiry(&value) {
            Some(at) if at <= self.cutoff_ms => Verdict::Remove,
            _ => Verdict::Keep,
        })
    }
}
