//! Node storage: a memory tier that spills to an LSM disk tier instead of
//! evicting, with TTLs, an offloader and a write-ahead log.
//!
//! ```text
//! write ─> shard lock ─> memory tier (dirty) ─> WAL append ─> sync(lsn) per appendfsync
//!              │ memory full                      │
//!              └─> disk tier (fjall) directly     └─ checkpoint: dirty entries -> disk, WAL truncated
//! read  ─> memory tier ─miss─> disk tier ─hot─> promoted to memory
//! spiller (above overflow_ratio): sampled-LRU entries -> disk until below spill_low_ratio
//! offloader (every offload_interval): entries not written for offload_after -> disk
//! ```
//!
//! Every operation on a key holds the lock of the key's shard for its whole
//! duration, disk I/O included, so a key's moves between tiers never race
//! with a write to it. The memory tier is a large memtable in front of the
//! LSM: a *clean* memory entry has an identical copy on disk, so spilling it
//! is free; a *dirty* one is written on spill or at the next checkpoint.

mod background;
mod chunks;
mod config;
mod disk;
mod doorkeeper;
mod error;
mod fields;
pub mod hll;
mod memory;
mod pattern;
mod sets;
mod snapshot;
mod stats;
mod streams;
mod types;
mod wal;

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

pub use config::{parse_size, AppendFsync, StorageConfig, MAX_KEY_BYTES, MIN_MAXMEMORY};
pub use error::StorageError;
pub use pattern::glob_match;
pub use sets::{LexBound, Members, ScoreBound, SetMembers, SortedSet};
pub use snapshot::{CrcWriter, SnapshotInfo};
pub use stats::{OffloadReport, StatsSnapshot};
pub use streams::{Consumer, Fields, Group, Pending, StreamData, StreamId, StreamOp};
pub use types::{
    decode_record, dump, now_ms, now_secs, undump, with_clock, with_rng, FieldMap, ListItems,
    Record, Value, ValueKind, Version,
};
pub use wal::{FailPoint, Lsn};

use crate::slot::{position_of, slot_end, slot_of_position, slot_start, SLOTS};
use disk::Disk;
use memory::{charge_of, Entry, Shard};
use stats::Counters;
use types::{encode_record, peek_expiry};
use wal::Wal;

const SHARDS: usize = 256;

/// The tier that served a read or took a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The in-memory tier.
    Memory,
    /// The on-disk LSM tier.
    Disk,
}

impl Tier {
    /// The name the HTTP API reports (`"memory"` | `"disk"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        }
    }
}

/// How a read should treat the key's place in the tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadHint {
    /// Update recency; promote a disk hit if the key looks hot.
    #[default]
    Normal,
    /// The caller knows the key is hot: promote a disk hit now.
    Hot,
    /// Look without touching recency or moving anything (OBJECT, TTL).
    Peek,
}

/// How a write changed its key, which decides what the log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed.
    None,
    /// Log the whole new record (or the deletion).
    Full,
    /// Only these fields of a hash, or members of a set or sorted set,
    /// were set or removed: the log records just them, so changing one
    /// field or member of a big collection costs O(1) in the log.
    Fields {
        /// Fields or members set (their values or scores are read from the
        /// new record).
        set: Vec<Box<[u8]>>,
        /// Fields or members removed.
        removed: Vec<Box<[u8]>>,
    },
    /// Only the ends of a list changed: this many items were popped from
    /// the head and the tail, then this many pushed (their values are
    /// read from the new record), so a push or pop costs O(1) in the log.
    ListEnds {
        /// Items removed from the head.
        popped_front: usize,
        /// Items removed from the tail.
        popped_back: usize,
        /// Items added at the head.
        pushed_front: usize,
        /// Items added at the tail.
        pushed_back: usize,
    },
    /// A stream changed by these operations (see [`StreamOp`]), so an
    /// XADD or XACK costs O(1) in the log however long the stream is.
    Stream(Vec<StreamOp>),
    /// Only `len` bytes of a string from `offset` changed (it may have
    /// grown to hold them, zero-filled): SETRANGE, APPEND, SETBIT,
    /// BITFIELD and PFADD log just those bytes.
    Range {
        /// First byte changed.
        offset: usize,
        /// Bytes changed.
        len: usize,
    },
}

/// The outcome of [`Store::write`].
#[derive(Debug)]
pub struct Written<R> {
    /// What the write closure returned.
    pub value: R,
    /// The log position to pass to [`Store::sync`], if anything changed.
    pub lsn: Option<Lsn>,
    /// Where the new value went, if a value was stored.
    pub stored: Option<Tier>,
}

/// Where a key is and how old it is (strata's `TIER` command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlacement {
    /// The tier holding the current version.
    pub tier: Tier,
    /// Seconds since the key was last written.
    pub age_secs: u64,
    /// Milliseconds since the key was last read or written, if in memory.
    pub idle_ms: Option<u64>,
    /// Whether memory holds changes the disk tier has not seen.
    pub dirty: bool,
}

/// One item of a SCAN page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanItem {
    /// The key.
    pub key: Vec<u8>,
    /// Its type.
    pub kind: ValueKind,
}

struct DbCounts {
    /// Keys with some version on disk.
    disk: AtomicI64,
    /// Memory entries with no disk copy.
    mem_only: AtomicI64,
}

pub(crate) struct Inner {
    /// Which physical database each database number names: identity
    /// until SWAPDB exchanges two. Memory, disk and log records hold
    /// physical numbers; the map applies only where callers name one.
    dbmap: Box<[std::sync::atomic::AtomicU8]>,
    cfg: RwLock<StorageConfig>,
    tier_cap: AtomicU64,
    used: AtomicU64,
    shards: Box<[Mutex<Shard>]>,
    disk: Disk,
    wal: Wal,
    counts: Box<[DbCounts]>,
    counters: Counters,
    last_offload: Mutex<OffloadReport>,
    /// Writers hold it shared; snapshots hold it exclusively for the instant
    /// it takes to make both tiers agree.
    gate: RwLock<()>,
    /// Recent disk hits: a second hit promotes.
    doorkeeper: doorkeeper::Doorkeeper,
    started: Instant,
    coarse_clock: std::sync::atomic::AtomicU32,
    /// Held while a checkpoint runs, so two never interleave.
    checkpointing: Mutex<()>,
    /// Unix seconds of the last completed checkpoint (the store's open
    /// until the first), as Redis's LASTSAVE reports.
    last_checkpoint_secs: AtomicU64,
    /// The last mark of each apply group, as of the log's tail (see
    /// [`Store::apply_batch`]). Updated under the log's lock.
    marks: Mutex<std::collections::BTreeMap<u32, Vec<u8>>>,
    /// Apply batches hold it shared; a checkpoint takes it exclusively to
    /// read the marks at a point where no batch is half done.
    batches: RwLock<()>,
    /// The marks as of the last checkpoint (or open): what a crash can't
    /// take back.
    durable_marks: Mutex<std::collections::BTreeMap<u32, Vec<u8>>>,
    /// Expiry is decided by the replication layer: no local clock removes
    /// an expired key (see [`Store::set_replicated`]).
    replicated: std::sync::atomic::AtomicBool,
    /// In a replicated store: expired keys the sweeps found, for the
    /// replication layer to delete through its log
    /// ([`Store::take_expired`]).
    expired_found: Mutex<Vec<(usize, Vec<u8>)>>,
    /// Told of every key removed because it expired (keyspace
    /// notifications).
    on_expired: std::sync::OnceLock<ExpiryListener>,
}

/// Called with the database and key of each key removed because it expired.
pub type ExpiryListener = Box<dyn Fn(usize, &[u8]) + Send + Sync>;

/// Most expired keys waiting for the replication layer; the sweeps find
/// the rest again later.
const EXPIRED_FOUND_MAX: usize = 10_000;

/// Bytes `key` holding `rec` costs in the memory tier (MEMORY USAGE).
pub fn memory_charge(key: &[u8], rec: &Record) -> usize {
    charge_of(key, rec)
}

fn is_tombstone(rec: &Record) -> bool {
    rec.expire_at_ms == Some(1)
}

/// A handle to an open store. Clones share it; the last one dropped stops
/// the background workers and checkpoints.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    _workers: Arc<background::Workers>,
}

fn placeholder() -> Record {
    Record {
        value: Value::Str(Vec::new()),
        expire_at_ms: None,
        version: Version::default(),
        written_secs: 0,
    }
}

const OP_PUT: u8 = 1;
const OP_DEL: u8 = 2;
const OP_FLUSHDB: u8 = 3;
const OP_FLUSHALL: u8 = 4;
const OP_HASH_DELTA: u8 = 5;
const OP_LIST_DELTA: u8 = 7;
const OP_SET_DELTA: u8 = 9;
const OP_ZSET_DELTA: u8 = 10;
const OP_STREAM_DELTA: u8 = 11;
const OP_STR_RANGE: u8 = 12;
/// The whole database map after a SWAPDB: `[OP_DBMAP, n, physical...]`.
const OP_DBMAP: u8 = 13;
/// A batch of records applied as one, with its group's mark.
const OP_BATCH: u8 = 6;
/// Writes of one multi-key command on a single node, replayed all or none.
const OP_ATOMIC: u8 = 8;

thread_local! {
    /// Log records of the apply batch running on this thread, if any.
    static BATCH: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
    /// Disk copies the running batch deleted: removed once its log record
    /// is written, so the disk tier never holds half a batch.
    static DEFERRED: std::cell::RefCell<Vec<(usize, Box<[u8]>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn in_batch() -> bool {
    BATCH.with(|b| b.borrow().is_some())
}

/// A deleted key whose disk copy is still there: it reads as absent
/// (expired long ago) until the batch that deleted it is logged.
fn tombstone() -> Record {
    Record {
        value: Value::Str(Vec::new()),
        expire_at_ms: Some(1),
        version: Version::default(),
        written_secs: 0,
    }
}

/// The start of a delta record: op, database, key and the record's
/// metadata.
fn encode_delta_head(b: &mut Vec<u8>, op: u8, db: usize, key: &[u8], rec: &Record) {
    b.push(op);
    b.push(db as u8);
    types::put_bytes(b, key);
    b.extend_from_slice(&rec.expire_at_ms.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&rec.version.epoch.to_le_bytes());
    b.extend_from_slice(&rec.version.hlc.to_le_bytes());
    b.extend_from_slice(&rec.written_secs.to_le_bytes());
}

fn encode_put(b: &mut Vec<u8>, db: usize, key: &[u8], rec: &Record) {
    b.push(OP_PUT);
    b.push(db as u8);
    types::put_bytes(b, key);
    encode_record(rec, b);
}

/// The log body for a stored record: the field delta when a hash changed
/// only in some fields, else the whole record.
fn encode_store(b: &mut Vec<u8>, db: usize, key: &[u8], rec: &Record, change: &Change) {
    if let (
        &Change::ListEnds {
            popped_front,
            popped_back,
            pushed_front,
            pushed_back,
        },
        Value::List(list),
    ) = (change, &rec.value)
    {
        if pushed_front + pushed_back <= list.len() {
            encode_delta_head(b, OP_LIST_DELTA, db, key, rec);
            let (id, seq) = list.stamp_of();
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
            for n in [popped_front, popped_back, pushed_front, pushed_back] {
                b.extend_from_slice(&(n as u32).to_le_bytes());
            }
            for v in list.iter().take(pushed_front) {
                types::put_bytes(b, v);
            }
            // By index: skipping through the list's iterator would walk it.
            for i in list.len() - pushed_back..list.len() {
                if let Some(v) = list.get(i) {
                    types::put_bytes(b, v);
                }
            }
            return;
        }
    }
    if let (&Change::Range { offset, len }, Value::Str(v)) = (change, &rec.value) {
        if let Some(bytes) = v.get(offset..offset.saturating_add(len)) {
            encode_delta_head(b, OP_STR_RANGE, db, key, rec);
            b.extend_from_slice(&(v.len() as u64).to_le_bytes());
            b.extend_from_slice(&(offset as u64).to_le_bytes());
            types::put_bytes(b, bytes);
            return;
        }
    }
    if let (Change::Stream(ops), Value::Stream(_)) = (change, &rec.value) {
        encode_delta_head(b, OP_STREAM_DELTA, db, key, rec);
        streams::encode_ops(ops, b);
        return;
    }
    let Change::Fields { set, removed } = change else {
        return encode_put(b, db, key, rec);
    };
    let op = match &rec.value {
        Value::Hash(_) => OP_HASH_DELTA,
        Value::Set(_) => OP_SET_DELTA,
        Value::ZSet(_) => OP_ZSET_DELTA,
        _ => return encode_put(b, db, key, rec),
    };
    encode_delta_head(b, op, db, key, rec);
    // Each field or member set, with what it now holds (a set's members
    // hold nothing); those no longer present were removed again later in
    // the same command and are left out.
    let count_at = b.len();
    b.extend_from_slice(&0u32.to_le_bytes());
    let mut present = 0u32;
    for f in set {
        match &rec.value {
            Value::Hash(map) => {
                let Some(v) = map.get(f) else { continue };
                types::put_bytes(b, f);
                types::put_bytes(b, v);
            }
            Value::Set(members) if members.contains(f) => types::put_bytes(b, f),
            Value::ZSet(z) => {
                let Some(score) = z.score(f) else { continue };
                types::put_bytes(b, f);
                b.extend_from_slice(&score.to_le_bytes());
            }
            _ => continue,
        }
        present += 1;
    }
    b[count_at..count_at + 4].copy_from_slice(&present.to_le_bytes());
    b.extend_from_slice(&(removed.len() as u32).to_le_bytes());
    for f in removed {
        types::put_bytes(b, f);
    }
}

/// What [`encode_delta_head`] wrote after the op and database.
struct DeltaHead<'a> {
    key: &'a [u8],
    expire: u64,
    version: Version,
    written_secs: u32,
}

impl<'a> DeltaHead<'a> {
    fn read(r: &mut types::Reader<'a>) -> Result<DeltaHead<'a>, StorageError> {
        Ok(DeltaHead {
            key: r.bytes()?,
            expire: r.u64()?,
            version: Version {
                epoch: r.u32()?,
                hlc: r.u64()?,
            },
            written_secs: r.u32()?,
        })
    }

    /// The record the delta leaves, holding `value`.
    fn record(&self, value: Value) -> Record {
        Record {
            value,
            expire_at_ms: (self.expire != 0).then_some(self.expire),
            version: self.version,
            written_secs: self.written_secs,
        }
    }
}

const MARKS_KEY: &[u8] = b"apply-marks";
/// Where the database map is kept (see [`Store::swap_db`]).
const DBMAP_KEY: &[u8] = b"db-map";

/// Reads a database map: a permutation of the physical databases.
fn decode_dbmap(bytes: &[u8], databases: usize) -> Result<Vec<u8>, StorageError> {
    let mut seen = vec![false; databases];
    let ok = bytes.len() == databases
        && bytes.iter().all(|&p| {
            let p = usize::from(p);
            p < databases && !std::mem::replace(&mut seen[p], true)
        });
    if ok {
        Ok(bytes.to_vec())
    } else if bytes.iter().enumerate().all(|(i, &p)| usize::from(p) == i) {
        // Never swapped: the identity for however many there are now.
        Ok((0..databases as u8).collect())
    } else {
        Err(StorageError::Corrupt {
            what: format!(
                "the database map ({} entries, after SWAPDB) doesn't fit databases = {databases}",
                bytes.len()
            ),
        })
    }
}

fn encode_marks(marks: &std::collections::BTreeMap<u32, Vec<u8>>) -> Vec<u8> {
    let mut b = Vec::new();
    for (group, mark) in marks {
        b.extend_from_slice(&group.to_le_bytes());
        types::put_bytes(&mut b, mark);
    }
    b
}

fn decode_marks(bytes: &[u8]) -> Result<std::collections::BTreeMap<u32, Vec<u8>>, StorageError> {
    let mut r = types::Reader { buf: bytes, pos: 0 };
    let mut out = std::collections::BTreeMap::new();
    while r.pos < bytes.len() {
        let group = r.u32()?;
        out.insert(group, r.bytes()?.to_vec());
    }
    Ok(out)
}

fn encode_del(b: &mut Vec<u8>, db: usize, key: &[u8]) {
    b.push(OP_DEL);
    b.push(db as u8);
    types::put_bytes(b, key);
}

impl Store {
    /// Sets who is told of keys removed because they expired (once).
    pub fn on_expired(&self, f: ExpiryListener) {
        let _ = self.inner.on_expired.set(f);
    }

    /// Opens (or creates) the store in `cfg.data_dir`, replaying the log.
    pub fn open(cfg: StorageConfig) -> Result<Store, StorageError> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)?;
        let (tier_cap, cache, write_buffer) = cfg.memory_budget();
        let disk = Disk::open(
            &cfg.data_dir.join("disk"),
            cfg.databases,
            cache,
            write_buffer,
            600_000,
        )?;
        disk.set_chunk_min(cfg.chunk_min_elements);
        let wal_dir = cfg.data_dir.join("wal");
        let mut marks = match disk.get_meta(MARKS_KEY)? {
            Some(bytes) => decode_marks(&bytes)?,
            None => std::collections::BTreeMap::new(),
        };
        let mut dbmap = match disk.get_meta(DBMAP_KEY)? {
            Some(bytes) => decode_dbmap(&bytes, cfg.databases)?,
            None => (0..cfg.databases as u8).collect(),
        };
        let replayed = Self::replay(&disk, &wal_dir, cfg.databases, &mut marks, &mut dbmap)?;
        disk.put_meta(DBMAP_KEY, &dbmap)?;
        disk.persist()?;
        let wal = Wal::create(&wal_dir)?;
        let keep_from = wal::list_segments(&wal_dir)?
            .last()
            .map_or(0, |(id, _)| *id);
        wal.remove_before(keep_from)?;
        let mut counts = Vec::with_capacity(cfg.databases);
        for db in 0..cfg.databases {
            counts.push(DbCounts {
                disk: AtomicI64::new(disk.count(db)? as i64),
                mem_only: AtomicI64::new(0),
            });
        }
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                "replayed write-ahead log into the disk tier"
            );
        }
        let inner = Arc::new(Inner {
            dbmap: dbmap
                .iter()
                .map(|&p| std::sync::atomic::AtomicU8::new(p))
                .collect(),
            tier_cap: AtomicU64::new(tier_cap),
            used: AtomicU64::new(0),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(cfg.databases)))
                .collect(),
            disk,
            wal,
            counts: counts.into_boxed_slice(),
            counters: Counters::default(),
            last_offload: Mutex::new(OffloadReport::default()),
            gate: RwLock::new(()),
            doorkeeper: doorkeeper::Doorkeeper::new(),
            started: Instant::now(),
            coarse_clock: std::sync::atomic::AtomicU32::new(0),
            checkpointing: Mutex::new(()),
            last_checkpoint_secs: AtomicU64::new(now_ms() / 1000),
            durable_marks: Mutex::new(marks.clone()),
            marks: Mutex::new(marks),
            batches: RwLock::new(()),
            replicated: std::sync::atomic::AtomicBool::new(false),
            expired_found: Mutex::new(Vec::new()),
            on_expired: std::sync::OnceLock::new(),
            cfg: RwLock::new(cfg),
        });
        let workers = Arc::new(background::Workers::start(inner.clone()));
        Ok(Store {
            inner,
            _workers: workers,
        })
    }

    /// Applies every valid log record to the disk tier; drops a torn tail.
    fn replay(
        disk: &Disk,
        dir: &Path,
        databases: usize,
        marks: &mut std::collections::BTreeMap<u32, Vec<u8>>,
        dbmap: &mut Vec<u8>,
    ) -> Result<u64, StorageError> {
        let mut applied = 0u64;
        let mut failure: Option<StorageError> = None;
        for (_, path) in wal::list_segments(dir)? {
            let (valid, total) = wal::read_segment(&path, |body| {
                if failure.is_some() {
                    return;
                }
                let result = if body.first() == Some(&OP_DBMAP) {
                    decode_dbmap(&body[1..], databases).map(|m| *dbmap = m)
                } else if body.first() == Some(&OP_BATCH) {
                    Self::apply_batch_record(disk, body, databases, marks, dbmap)
                } else if body.first() == Some(&OP_ATOMIC) {
                    Self::apply_records(disk, &body[1..], databases, dbmap)
                } else {
                    Self::apply_record(disk, body, databases)
                };
                if let Err(e) = result {
                    failure = Some(e);
                }
                applied += 1;
            })?;
            if let Some(e) = failure.take() {
                return Err(e);
            }
            if valid < total {
                tracing::warn!(path = %path.display(), valid, total, "dropped a torn or corrupt log tail");
            }
        }
        Ok(applied)
    }

    /// Replays one apply batch: its records, then its group's mark.
    fn apply_batch_record(
        disk: &Disk,
        body: &[u8],
        databases: usize,
        marks: &mut std::collections::BTreeMap<u32, Vec<u8>>,
        dbmap: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        let mut r = types::Reader { buf: body, pos: 1 };
        let group = r.u32()?;
        let mark = r.bytes()?.to_vec();
        Self::apply_records(disk, r.rest(), databases, dbmap)?;
        marks.insert(group, mark);
        Ok(())
    }

    /// Replays length-prefixed records collected by a batch.
    fn apply_records(
        disk: &Disk,
        body: &[u8],
        databases: usize,
        dbmap: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        let mut records = types::Reader { buf: body, pos: 0 };
        while records.pos < records.buf.len() {
            let record = records.bytes()?;
            if record.first() == Some(&OP_DBMAP) {
                *dbmap = decode_dbmap(&record[1..], databases)?;
            } else {
                Self::apply_record(disk, record, databases)?;
            }
        }
        Ok(())
    }

    fn apply_record(disk: &Disk, body: &[u8], databases: usize) -> Result<(), StorageError> {
        let mut r = types::Reader { buf: body, pos: 0 };
        let op = r.u8()?;
        if op == OP_FLUSHALL {
            for db in 0..databases {
                disk.clear(db)?;
            }
            return Ok(());
        }
        let db = r.u8()? as usize;
        if db >= databases {
            return Err(StorageError::Corrupt {
                what: format!("log names database {db}"),
            });
        }
        match op {
            OP_PUT => {
                let key = r.bytes()?;
                disk.put_raw(db, key, r.rest())
            }
            OP_DEL => disk.remove(db, r.bytes()?),
            OP_LIST_DELTA => {
                let head = DeltaHead::read(&mut r)?;
                let (id, seq) = (r.u64()?, r.u64()?);
                let mut list = match disk.get(db, head.key)? {
                    Some(Record {
                        value: Value::List(list),
                        ..
                    }) if list.stamp_of().0 == id => list,
                    // The disk holds a later list under this key (or its
                    // deletion): this change is already superseded.
                    _ => return Ok(()),
                };
                let have = list.stamp_of().1;
                if have >= seq {
                    return Ok(());
                }
                if have + 1 != seq {
                    return Err(StorageError::Corrupt {
                        what: format!("list delta {seq} logged after change {have}"),
                    });
                }
                list.set_stamp(id, seq);
                let (pf, pb, nf, nb) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
                for _ in 0..pf {
                    list.pop_front();
                }
                for _ in 0..pb {
                    list.pop_back();
                }
                let mut front = Vec::with_capacity(nf.min(1 << 16) as usize);
                for _ in 0..nf {
                    front.push(r.bytes()?);
                }
                for v in front.into_iter().rev() {
                    list.push_front(v.into());
                }
                for _ in 0..nb {
                    list.push_back(r.bytes()?.into());
                }
                disk.replace(db, head.key, &head.record(Value::List(list)))
            }
            OP_HASH_DELTA | OP_SET_DELTA | OP_ZSET_DELTA => {
                // Setting and removing fields is idempotent: replaying a
                // delta the disk tier already holds changes nothing.
                let head = DeltaHead::read(&mut r)?;
                let mut value = match (op, disk.get(db, head.key)?) {
                    (
                        OP_HASH_DELTA,
                        Some(
                            rec @ Record {
                                value: Value::Hash(_),
                                ..
                            },
                        ),
                    )
                    | (
                        OP_SET_DELTA,
                        Some(
                            rec @ Record {
                                value: Value::Set(_),
                                ..
                            },
                        ),
                    )
                    | (
                        OP_ZSET_DELTA,
                        Some(
                            rec @ Record {
                                value: Value::ZSet(_),
                                ..
                            },
                        ),
                    ) => rec.value,
                    (OP_HASH_DELTA, _) => Value::Hash(Box::default()),
                    (OP_SET_DELTA, _) => Value::Set(Box::default()),
                    _ => Value::ZSet(Box::default()),
                };
                for _ in 0..r.u32()? {
                    let f = r.bytes()?;
                    match &mut value {
                        Value::Hash(map) => {
                            map.insert(f.into(), r.bytes()?.into());
                        }
                        Value::Set(members) => {
                            members.insert(f.into());
                        }
                        Value::ZSet(z) => {
                            z.insert(f, r.f64()?);
                        }
                        _ => unreachable!("delta value chosen above"),
                    }
                }
                for _ in 0..r.u32()? {
                    let f = r.bytes()?;
                    match &mut value {
                        Value::Hash(map) => {
                            map.remove(f);
                        }
                        Value::Set(members) => {
                            members.remove(f);
                        }
                        Value::ZSet(z) => {
                            z.remove(f);
                        }
                        _ => unreachable!("delta value chosen above"),
                    }
                }
                disk.replace(db, head.key, &head.record(value))
            }
            OP_STREAM_DELTA => {
                // Each op sets state outright: replaying one the disk tier
                // already holds changes nothing.
                let head = DeltaHead::read(&mut r)?;
                let mut stream = match disk.get(db, head.key)? {
                    Some(Record {
                        value: Value::Stream(s),
                        ..
                    }) => s,
                    _ => Box::default(),
                };
                for op in streams::decode_ops(&mut r)? {
                    stream.apply(op);
                }
                disk.replace(db, head.key, &head.record(Value::Stream(stream)))
            }
            OP_STR_RANGE => {
                // Sets the length and the bytes outright: replaying it over
                // a disk copy that already has it (or later changes, which
                // are replayed after it) ends in the same string.
                let head = DeltaHead::read(&mut r)?;
                let (total, offset) = (r.u64()? as usize, r.u64()? as usize);
                let bytes = r.bytes()?;
                if total > 1 << 34
                    || offset
                        .checked_add(bytes.len())
                        .is_none_or(|end| end > total)
                {
                    return Err(StorageError::Corrupt {
                        what: format!("string range {offset}+{} past {total}", bytes.len()),
                    });
                }
                let mut v = match disk.get(db, head.key)? {
                    Some(Record {
                        value: Value::Str(v),
                        ..
                    }) => v,
                    _ => Vec::new(),
                };
                v.resize(total, 0);
                v[offset..offset + bytes.len()].copy_from_slice(bytes);
                disk.replace(db, head.key, &head.record(Value::Str(v)))
            }
            OP_FLUSHDB => disk.clear(db),
            other => Err(StorageError::Corrupt {
                what: format!("unknown log op {other}"),
            }),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> StorageConfig {
        self.inner.cfg.read().clone()
    }

    /// Replaces the runtime-tunable settings. `data_dir` and `databases`
    /// can't change while open.
    pub fn reconfigure(&self, new: StorageConfig) -> Result<(), StorageError> {
        new.validate()?;
        let mut cfg = self.inner.cfg.write();
        if new.data_dir != cfg.data_dir {
            return Err(StorageError::Config {
                field: "data_dir",
                reason: "can't change while running".into(),
            });
        }
        if new.databases != cfg.databases {
            return Err(StorageError::Config {
                field: "databases",
                reason: "can't change while running".into(),
            });
        }
        self.inner
            .tier_cap
            .store(new.memory_budget().0, Ordering::Relaxed);
        self.inner.disk.set_chunk_min(new.chunk_min_elements);
        *cfg = new;
        drop(cfg);
        self._workers.wake_spiller();
        Ok(())
    }

    /// Number of logical databases.
    pub fn databases(&self) -> usize {
        self.inner.counts.len()
    }

    /// Reads `key`, handing the record (if live) and the serving tier to `f`.
    pub fn read<R>(
        &self,
        db: usize,
        key: &[u8],
        hint: ReadHint,
        f: impl FnOnce(Option<(&Record, Tier)>) -> R,
    ) -> Result<R, StorageError> {
        let inner = &*self.inner;
        let db = inner.phys(db)?;
        if key.len() > MAX_KEY_BYTES {
            Counters::bump(&inner.counters.misses);
            return Ok(f(None));
        }
        let pos = position_of(key);
        let mut shard = inner.shard(pos).lock();
        let mut expired_mem = false;
        if let Some(e) = shard.get_mut(db, pos, key) {
            if e.rec.is_expired_now() {
                expired_mem = true;
            } else {
                if hint != ReadHint::Peek {
                    e.lru = inner.clock();
                    Counters::bump(&inner.counters.hits_memory);
                }
                return Ok(f(Some((&e.rec, Tier::Memory))));
            }
        }
        if expired_mem {
            if !inner.is_replicated() {
                inner.expire_in_memory(&mut shard, db, pos, key)?;
            }
            Counters::bump(&inner.counters.misses);
            return Ok(f(None));
        }
        match inner.disk.get_chunked(db, key)? {
            None => {
                if hint != ReadHint::Peek {
                    Counters::bump(&inner.counters.misses);
                }
                Ok(f(None))
            }
            Some((rec, _)) if rec.is_expired_now() => {
                if !inner.is_replicated() {
                    inner.disk.remove(db, key)?;
                    inner.counts[db].disk.fetch_sub(1, Ordering::Relaxed);
                    inner.expired(db, key);
                }
                Counters::bump(&inner.counters.misses);
                Ok(f(None))
            }
            Some((rec, chunks)) => {
                if hint == ReadHint::Peek {
                    return Ok(f(Some((&rec, Tier::Disk))));
                }
                Counters::bump(&inner.counters.hits_disk);
                let promote = hint == ReadHint::Hot || inner.doorkeeper.seen_before(pos);
                if promote {
                    // A key read again soon displaces the least recently
                    // used entries of its shard when the tier is full, so
                    // the read-hot set ends up in memory, not the newest
                    // writes.
                    let charge = charge_of(key, &rec);
                    let charged = inner.try_charge(charge, inner.spill_threshold()) || {
                        inner.make_room(&mut shard, charge)?;
                        inner.try_charge(charge, inner.tier_cap())
                    };
                    if charged {
                        let out = f(Some((&rec, Tier::Disk)));
                        let mut entry = Entry::new(key, rec, inner.clock(), false, true);
                        entry.chunks = chunks;
                        shard.insert(db, pos, entry);
                        Counters::bump(&inner.counters.promotions);
                        return Ok(out);
                    }
                }
                Ok(f(Some((&rec, Tier::Disk))))
            }
        }
    }

    /// Runs `f`, whose writes form one atomic unit in the log together
    /// with `mark`, an opaque position of `group` (the replication layer
    /// passes its Raft log id). After a crash, either all of the batch's
    /// writes and its mark are recovered or none are, so the caller can
    /// resume applying right after [`Store::mark`] without applying
    /// anything twice. Batches must not nest; writes inside need no
    /// [`Store::sync`], because the caller's own log is the durable one.
    pub fn apply_batch<R>(&self, group: u32, mark: &[u8], f: impl FnOnce() -> R) -> R {
        let inner = &*self.inner;
        let _open = inner.batches.read();
        BATCH.with(|b| *b.borrow_mut() = Some(Vec::new()));
        let out = f();
        let records = BATCH.with(|b| b.borrow_mut().take()).unwrap_or_default();
        inner.wal.append_with(|b| {
            b.push(OP_BATCH);
            b.extend_from_slice(&group.to_le_bytes());
            types::put_bytes(b, mark);
            b.extend_from_slice(&records);
            // Under the log's lock: a checkpoint sees the mark and the
            // batch's records together or neither.
            inner.marks.lock().insert(group, mark.to_vec());
        });
        let deferred = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
        if !deferred.is_empty() {
            inner.remove_tombstones(deferred);
        }
        out
    }

    /// Runs `f`, whose writes form one record in the log: after a crash
    /// all of them are there or none. Multi-key commands on a single node
    /// use it; inside an apply batch (a replicated command) the batch
    /// already is that unit, so `f` just runs. Returns the log position to
    /// pass to [`Store::sync`], if anything was written.
    pub fn atomic<R>(&self, f: impl FnOnce() -> R) -> (R, Option<Lsn>) {
        if in_batch() {
            return (f(), None);
        }
        let inner = &*self.inner;
        let _open = inner.batches.read();
        BATCH.with(|b| *b.borrow_mut() = Some(Vec::new()));
        let out = f();
        let records = BATCH.with(|b| b.borrow_mut().take()).unwrap_or_default();
        let lsn = (!records.is_empty()).then(|| {
            inner.wal.append_with(|b| {
                b.push(OP_ATOMIC);
                b.extend_from_slice(&records);
            })
        });
        let deferred = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
        if !deferred.is_empty() {
            inner.remove_tombstones(deferred);
        }
        (out, lsn)
    }

    /// The mark of the last apply batch of `group` that is in the store.
    pub fn mark(&self, group: u32) -> Option<Vec<u8>> {
        self.inner.marks.lock().get(&group).cloned()
    }

    /// The mark of `group` as of the last checkpoint: everything up to it
    /// survives any crash, so the caller may discard its own log up to it.
    pub fn durable_mark(&self, group: u32) -> Option<Vec<u8>> {
        self.inner.durable_marks.lock().get(&group).cloned()
    }

    /// Up to `count` records of the slots `first..=last` of `db` from
    /// `cursor` (start at 0), as (key, encoded record), and the cursor to
    /// continue from (0 = done). The encoding is the store's own, read
    /// back by [`Store::import`]; nothing is promoted or touched.
    pub fn export_slots(
        &self,
        db: usize,
        (first, last): (u16, u16),
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(Vec<u8>, Vec<u8>)>), StorageError> {
        let (next, items) = self.scan_slots(db, first, last, cursor, count)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let rec = self.read(db, &item.key, ReadHint::Peek, |r| {
                r.map(|(rec, _)| {
                    let mut b = Vec::new();
                    encode_record(rec, &mut b);
                    b
                })
            })?;
            if let Some(b) = rec {
                out.push((item.key, b));
            }
        }
        Ok((next, out))
    }

    /// Stores a record exported by [`Store::export_slots`].
    pub fn import(&self, db: usize, key: &[u8], encoded: &[u8]) -> Result<(), StorageError> {
        let rec = types::decode_record(encoded)?;
        self.write(db, key, move |cur| {
            *cur = Some(rec);
            ((), true)
        })?;
        Ok(())
    }

    /// Puts the store under a replication layer that decides expiry: a
    /// read or background sweep no longer removes expired keys by this
    /// machine's clock (they read as absent all the same), so replicas
    /// whose clocks differ never diverge. Writes still see expired keys as
    /// absent at the time they were stamped with.
    pub fn set_replicated(&self, on: bool) {
        self.inner.replicated.store(on, Ordering::Relaxed);
    }

    /// Expired keys the background sweeps found in a replicated store
    /// (at most `max`), for the replication layer to delete by a replicated
    /// command: replicas never expire keys by their own clocks.
    pub fn take_expired(&self, max: usize) -> Vec<(usize, Vec<u8>)> {
        let mut found = self.inner.expired_found.lock();
        let n = found.len().min(max);
        found
            .drain(..n)
            .map(|(db, key)| (self.inner.logical(db), key))
            .collect()
    }

    /// Whether `key` holds a record that has expired by [`now_ms`] (in a
    /// replicated apply, the clock its leader stamped the entry with).
    pub fn holds_expired(&self, db: usize, key: &[u8]) -> Result<bool, StorageError> {
        let inner = &*self.inner;
        let db = inner.phys(db)?;
        let now = now_ms();
        let pos = position_of(key);
        let shard = inner.shard(pos).lock();
        if let Some(e) = shard.get(db, pos, key) {
            return Ok(!is_tombstone(&e.rec) && e.rec.is_expired(now));
        }
        Ok(inner
            .disk
            .get(db, key)?
            .is_some_and(|rec| !is_tombstone(&rec) && rec.is_expired(now)))
    }

    /// Reads a copy of `key`'s record.
    pub fn get(&self, db: usize, key: &[u8]) -> Result<Option<(Record, Tier)>, StorageError> {
        self.read(db, key, ReadHint::Normal, |r| {
            r.map(|(rec, tier)| (rec.clone(), tier))
        })
    }

    /// Atomically reads and changes `key`. `f` sees the live record (None if
    /// absent or expired) and returns its result and whether it changed the
    /// record; setting it to None deletes the key. When `f` reports no
    /// change it must leave the record as it found it.
    pub fn write<R>(
        &self,
        db: usize,
        key: &[u8],
        f: impl FnOnce(&mut Option<Record>) -> (R, bool),
    ) -> Result<Written<R>, StorageError> {
        self.write_change(db, key, |cur| {
            let (r, changed) = f(cur);
            (r, if changed { Change::Full } else { Change::None })
        })
    }

    /// Like [`Store::write`], with `f` saying how it changed the record so
    /// the log can record a delta instead of the whole value.
    pub fn write_change<R>(
        &self,
        db: usize,
        key: &[u8],
        f: impl FnOnce(&mut Option<Record>) -> (R, Change),
    ) -> Result<Written<R>, StorageError> {
        let inner = &*self.inner;
        let db = inner.phys(db)?;
        inner.wal.check()?;
        let max_key = inner.cfg.read().max_key_bytes;
        if key.len() > max_key {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                limit: max_key,
            });
        }
        let _gate = inner.gate.read();
        let pos = position_of(key);
        let mut shard = inner.shard(pos).lock();
        let now = now_ms();
        let clock = inner.clock();
        // Inside an apply batch nothing reaches the disk tier before the
        // batch is logged: values stay in memory (over the cap if need be,
        // for the spiller to move after) and deletions leave tombstones.
        let batch = in_batch();

        // Memory hit: change the entry in place.
        let mem = shard.get_mut(db, pos, key).map(|e| {
            let old_charge = e.charge();
            let live = !e.rec.is_expired(now);
            let cur = live.then(|| std::mem::replace(&mut e.rec, placeholder()));
            (old_charge, live, cur, e.on_disk)
        });
        if let Some((old_charge, live, mut cur, on_disk)) = mem {
            let (value, change) = f(&mut cur);
            let modified = change != Change::None;
            if !modified {
                match cur {
                    Some(rec) => {
                        if let Some(e) = shard.get_mut(db, pos, key) {
                            e.rec = rec;
                            e.lru = clock;
                        }
                    }
                    None if !live && !inner.is_replicated() => {
                        inner.expire_in_memory(&mut shard, db, pos, key)?
                    }
                    None if !live => {}
                    None => debug_assert!(
                        false,
                        "write closure dropped a record without reporting a change"
                    ),
                }
                return Ok(Written {
                    value,
                    lsn: None,
                    stored: None,
                });
            }
            return match cur {
                Some(mut rec) => {
                    rec.written_secs = (now / 1000) as u32;
                    rec.version.hlc = types::next_stamp();
                    let lsn = inner.log(|b| encode_store(b, db, key, &rec, &change));
                    let new_charge = charge_of(key, &rec);
                    let Some(e) = shard.get_mut(db, pos, key) else {
                        unreachable!("entry vanished under its shard lock")
                    };
                    e.rec = rec;
                    e.dirty = true;
                    e.lru = clock;
                    if let Some(c) = e.chunks.as_mut() {
                        c.note(&change, &e.rec.value);
                    }
                    shard.recharge(old_charge, new_charge);
                    let fits = if new_charge > old_charge {
                        let grow = new_charge - old_charge;
                        inner.try_charge(grow, inner.tier_cap()) || {
                            if batch {
                                inner.used.fetch_add(grow as u64, Ordering::Relaxed);
                            }
                            batch
                        }
                    } else {
                        inner.release(old_charge - new_charge);
                        true
                    };
                    if !fits {
                        // The value outgrew memory: keep it on disk instead.
                        inner
                            .used
                            .fetch_add((new_charge - old_charge) as u64, Ordering::Relaxed);
                        inner.demote(&mut shard, db, pos, key)?;
                    }
                    drop(shard);
                    self._workers.maybe_wake_spiller(inner);
                    Ok(Written {
                        value,
                        lsn: Some(lsn),
                        stored: Some(if fits { Tier::Memory } else { Tier::Disk }),
                    })
                }
                None if batch && on_disk => {
                    let lsn = inner.log(|b| encode_del(b, db, key));
                    let stone = tombstone();
                    let new_charge = charge_of(key, &stone);
                    shard.recharge(old_charge, new_charge);
                    if let Some(e) = shard.get_mut(db, pos, key) {
                        e.rec = stone;
                        e.dirty = true;
                    }
                    inner.release(old_charge);
                    inner.used.fetch_add(new_charge as u64, Ordering::Relaxed);
                    DEFERRED.with(|d| d.borrow_mut().push((db, key.into())));
                    Ok(Written {
                        value,
                        lsn: Some(lsn),
                        stored: None,
                    })
                }
                None => {
                    let lsn = inner.log(|b| encode_del(b, db, key));
                    // The entry holds the placeholder now; charge it as such.
                    shard.recharge(old_charge, charge_of(key, &placeholder()));
                    shard.remove(db, pos, key);
                    inner.release(old_charge);
                    if on_disk {
                        inner.disk.remove(db, key)?;
                        inner.counts[db].disk.fetch_sub(1, Ordering::Relaxed);
                    } else {
                        inner.counts[db].mem_only.fetch_sub(1, Ordering::Relaxed);
                    }
                    Ok(Written {
                        value,
                        lsn: Some(lsn),
                        stored: None,
                    })
                }
            };
        }

        // Memory miss: the disk tier holds the key, or nobody does.
        let (from_disk, mut chunks) = match inner.disk.get_chunked(db, key)? {
            Some((rec, chunks)) => (Some(rec), chunks),
            None => (None, None),
        };
        let disk_had = from_disk.is_some();
        let mut cur = from_disk.filter(|r| !r.is_expired(now));
        let live = cur.is_some();
        let (value, change) = f(&mut cur);
        let modified = change != Change::None;
        if !modified {
            if disk_had && !live && !inner.is_replicated() {
                inner.disk.remove(db, key)?;
                inner.counts[db].disk.fetch_sub(1, Ordering::Relaxed);
                inner.expired(db, key);
            }
            return Ok(Written {
                value,
                lsn: None,
                stored: None,
            });
        }
        match cur {
            Some(mut rec) => {
                rec.written_secs = (now / 1000) as u32;
                rec.version.hlc = types::next_stamp();
                let charge = charge_of(key, &rec);
                if let Some(c) = chunks.as_mut() {
                    c.note(&change, &rec.value);
                }
                let fits = inner.try_charge(charge, inner.tier_cap()) || {
                    if batch {
                        inner.used.fetch_add(charge as u64, Ordering::Relaxed);
                    }
                    batch
                };
                let stored = if fits {
                    let lsn = inner.log(|b| encode_store(b, db, key, &rec, &change));
                    let mut entry = Entry::new(key, rec, clock, true, disk_had);
                    entry.chunks = chunks;
                    shard.insert(db, pos, entry);
                    if !disk_had {
                        inner.counts[db].mem_only.fetch_add(1, Ordering::Relaxed);
                    }
                    (lsn, Tier::Memory)
                } else {
                    inner.disk.put(db, key, &rec, chunks.as_deref())?;
                    let lsn = inner.log(|b| encode_store(b, db, key, &rec, &change));
                    if !disk_had {
                        inner.counts[db].disk.fetch_add(1, Ordering::Relaxed);
                    }
                    Counters::bump(&inner.counters.direct_to_disk);
                    (lsn, Tier::Disk)
                };
                drop(shard);
                self._workers.maybe_wake_spiller(inner);
                Ok(Written {
                    value,
                    lsn: Some(stored.0),
                    stored: Some(stored.1),
                })
            }
            None if batch && disk_had => {
                let lsn = inner.log(|b| encode_del(b, db, key));
                let stone = Entry::new(key, tombstone(), clock, true, true);
                inner
                    .used
                    .fetch_add(stone.charge() as u64, Ordering::Relaxed);
                shard.insert(db, pos, stone);
                DEFERRED.with(|d| d.borrow_mut().push((db, key.into())));
                Ok(Written {
                    value,
                    lsn: Some(lsn),
                    stored: None,
                })
            }
            None => {
                if disk_had {
                    inner.disk.remove(db, key)?;
                    inner.counts[db].disk.fetch_sub(1, Ordering::Relaxed);
                }
                let lsn = inner.log(|b| encode_del(b, db, key));
                Ok(Written {
                    value,
                    lsn: Some(lsn),
                    stored: None,
                })
            }
        }
    }

    /// Stores `rec` under `key`, replacing whatever was there.
    pub fn put(&self, db: usize, key: &[u8], rec: Record) -> Result<Written<()>, StorageError> {
        if let Value::Str(v) = &rec.value {
            let limit = self.inner.cfg.read().max_value_bytes;
            if v.len() > limit {
                return Err(StorageError::ValueTooLarge {
                    len: v.len(),
                    limit,
                });
            }
        }
        self.write(db, key, move |cur| {
            *cur = Some(rec);
            ((), true)
        })
    }

    /// Deletes `key`; the result says whether it existed.
    pub fn delete(&self, db: usize, key: &[u8]) -> Result<Written<bool>, StorageError> {
        self.write(db, key, |cur| {
            let existed = cur.take().is_some();
            (existed, existed)
        })
    }

    /// Makes the write at `lsn` as durable as `appendfsync` promises.
    /// Under `always` this may block for an fsync (shared with every write
    /// queued behind it).
    pub fn sync(&self, lsn: Lsn) -> Result<(), StorageError> {
        let policy = self.inner.cfg.read().appendfsync;
        self.inner.wal.sync(lsn, policy)
    }

    /// Makes everything logged so far as durable as [`Store::sync`] does.
    pub fn sync_all(&self) -> Result<(), StorageError> {
        self.sync(self.inner.wal.appended())
    }

    /// Whether [`Store::sync`] may block on an fsync under the current policy.
    pub fn sync_blocks(&self) -> bool {
        self.inner.cfg.read().appendfsync == AppendFsync::Always
    }

    /// Removes every key of `db`.
    pub fn flush_db(&self, db: usize) -> Result<Lsn, StorageError> {
        let inner = &*self.inner;
        let db = inner.phys(db)?;
        inner.wal.check()?;
        let _gate = inner.gate.write();
        inner.flush_db_locked(db)?;
        Ok(inner.log(|b| b.extend_from_slice(&[OP_FLUSHDB, db as u8])))
    }

    /// Exchanges databases `a` and `b` (SWAPDB): from now on each number
    /// names the other's data. Writers are held off meanwhile; the log
    /// records the whole resulting map, so replaying it twice is harmless.
    pub fn swap_db(&self, a: usize, b: usize) -> Result<Lsn, StorageError> {
        let inner = &*self.inner;
        let (pa, pb) = (inner.phys(a)?, inner.phys(b)?);
        inner.wal.check()?;
        let _gate = inner.gate.write();
        inner.dbmap[a].store(pb as u8, Ordering::Relaxed);
        inner.dbmap[b].store(pa as u8, Ordering::Relaxed);
        let map = inner.dbmap_now();
        Ok(inner.log(|buf| {
            buf.push(OP_DBMAP);
            buf.extend_from_slice(&map);
        }))
    }

    /// Removes every key of every database.
    pub fn flush_all(&self) -> Result<Lsn, StorageError> {
        let inner = &*self.inner;
        inner.wal.check()?;
        let _gate = inner.gate.write();
        for db in 0..inner.counts.len() {
            inner.flush_db_locked(db)?;
        }
        Ok(inner.log(|b| b.push(OP_FLUSHALL)))
    }

    /// Number of keys in `db` (both tiers; like Redis, keys whose TTL passed
    /// but that were not yet reclaimed still count).
    pub fn dbsize(&self, db: usize) -> u64 {
        let Ok(db) = self.inner.phys(db) else {
            return 0;
        };
        let c = &self.inner.counts[db];
        (c.disk.load(Ordering::Relaxed) + c.mem_only.load(Ordering::Relaxed)).max(0) as u64
    }

    /// One page of a cursor scan of `db` over both tiers. `cursor` 0 starts;
    /// a returned cursor of 0 means the scan is complete. Every key present
    /// for the whole scan is returned at least once. `count` is a hint of
    /// how many keys to examine; `pattern` and `kind` filter them after.
    pub fn scan(
        &self,
        db: usize,
        cursor: u64,
        count: usize,
        pattern: Option<&[u8]>,
        kind: Option<ValueKind>,
    ) -> Result<(u64, Vec<ScanItem>), StorageError> {
        self.scan_range(db, cursor, u64::MAX, count, pattern, kind)
    }

    /// Like [`Store::scan`], limited to one cluster slot. Start at
    /// `slot_start(slot)`; a returned cursor of 0 ends the slot.
    pub fn scan_slot(
        &self,
        db: usize,
        slot: u16,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<ScanItem>), StorageError> {
        let from = cursor.max(slot_start(slot));
        self.scan_range(db, from, slot_end(slot), count, None, None)
    }

    /// Like [`Store::scan_slot`], over the slots `first..=last`.
    pub fn scan_slots(
        &self,
        db: usize,
        first: u16,
        last: u16,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<ScanItem>), StorageError> {
        let from = cursor.max(slot_start(first));
        self.scan_range(db, from, slot_end(last), count, None, None)
    }

    fn scan_range(
        &self,
        db: usize,
        cursor: u64,
        end: u64,
        count: usize,
        pattern: Option<&[u8]>,
        kind: Option<ValueKind>,
    ) -> Result<(u64, Vec<ScanItem>), StorageError> {
        let inner = &*self.inner;
        let db = inner.phys(db)?;
        let count = count.max(1);
        let now = now_ms();
        let mut pos = cursor;
        let mut examined = 0usize;
        let mut out = Vec::new();
        let mut slots_visited = 0;
        while pos < end {
            let slot = slot_of_position(pos);
            let slot_limit = slot_end(slot).min(end);
            let want = count - examined.min(count - 1);
            let (items, bound) = inner.page(db, pos, slot_limit, want, now)?;
            for (key, k) in items {
                examined += 1;
                if kind.is_some_and(|want| want != k) {
                    continue;
                }
                if pattern.is_some_and(|p| !glob_match(p, &key)) {
                    continue;
                }
                out.push(ScanItem { key, kind: k });
            }
            pos = bound;
            slots_visited += 1;
            if examined >= count || slots_visited >= usize::from(SLOTS) {
                break;
            }
            if slot_of_position(pos) >= SLOTS || pos == u64::MAX {
                break;
            }
        }
        let next = if pos >= end || pos == u64::MAX || slot_of_position(pos) >= SLOTS {
            0
        } else {
            pos
        };
        Ok((next, out))
    }

    /// A random live key of `db`, if any.
    pub fn random_key(&self, db: usize) -> Result<Option<Vec<u8>>, StorageError> {
        if self.dbsize(db) == 0 {
            return Ok(None);
        }
        let start = slot_start(rand::random_range(0..SLOTS));
        let mut cursor = start;
        let mut wrapped = false;
        for _ in 0..64 {
            let (next, items) = self.scan(db, cursor, 16, None, None)?;
            if let Some(item) = items.into_iter().next() {
                return Ok(Some(item.key));
            }
            if next == 0 {
                if wrapped {
                    break;
                }
                wrapped = true;
            }
            cursor = next;
            if wrapped && cursor >= start {
                break;
            }
        }
        Ok(None)
    }

    /// Where `key` lives and how old it is, without moving it.
    pub fn placement(&self, db: usize, key: &[u8]) -> Result<Option<KeyPlacement>, StorageError> {
        let inner = &*self.inner;
        let phys = inner.phys(db)?;
        let pos = position_of(key);
        {
            let shard = inner.shard(pos).lock();
            if let Some(e) = shard.get(phys, pos, key) {
                if !e.rec.is_expired(now_ms()) {
                    let idle = inner.clock().wrapping_sub(e.lru);
                    return Ok(Some(KeyPlacement {
                        tier: Tier::Memory,
                        age_secs: u64::from(now_secs().saturating_sub(e.rec.written_secs)),
                        idle_ms: Some(u64::from(idle)),
                        dirty: e.dirty,
                    }));
                }
                return Ok(None);
            }
        }
        self.read(db, key, ReadHint::Peek, |r| {
            r.map(|(rec, tier)| KeyPlacement {
                tier,
                age_secs: u64::from(now_secs().saturating_sub(rec.written_secs)),
                idle_ms: None,
                dirty: false,
            })
        })
    }

    /// Moves `key` to the disk tier now (if it is in memory).
    pub fn demote_key(&self, db: usize, key: &[u8]) -> Result<bool, StorageError> {
        let inner = &*self.inner;
        let db = inner.phys(db)?;
        let pos = position_of(key);
        let _quiet = inner.quiesce();
        let mut shard = inner.shard(pos).lock();
        inner.demote(&mut shard, db, pos, key)
    }

    /// Runs the spiller until the memory tier is below its low watermark.
    /// Returns the number of entries moved.
    pub fn spill(&self) -> Result<u64, StorageError> {
        self.inner.spill_to(self.inner.spill_low())
    }

    /// Moves every memory entry to disk (used by tests and `DEBUG`-style tools).
    pub fn spill_all(&self) -> Result<u64, StorageError> {
        self.inner.spill_to(0)
    }

    /// One offloader run now.
    pub fn offload(&self) -> OffloadReport {
        self.inner.offload()
    }

    /// Writes dirty entries to disk and truncates the log.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.inner.checkpoint()
    }

    /// Unix seconds of the last completed checkpoint (of the store's open
    /// before the first).
    pub fn last_checkpoint_secs(&self) -> u64 {
        self.inner.last_checkpoint_secs.load(Ordering::Relaxed)
    }

    /// One active-expiry pass over the memory tier; returns keys removed.
    pub fn expire_cycle(&self) -> u64 {
        self.inner.expire_cycle(usize::MAX)
    }

    /// Statistics.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats()
    }

    /// Arms a one-shot failure in the write-ahead log (fault injection).
    #[doc(hidden)]
    pub fn inject_failure(&self, point: FailPoint) {
        self.inner.wal.inject(point);
    }

    /// The last offloader report.
    pub fn last_offload(&self) -> OffloadReport {
        self.inner.last_offload.lock().clone()
    }
}

impl Inner {
    /// Counts a key removed because it expired, and tells the listener.
    fn expired(&self, db: usize, key: &[u8]) {
        Counters::bump(&self.counters.expired);
        if let Some(f) = self.on_expired.get() {
            f(self.logical(db), key);
        }
    }

    fn shard(&self, pos: u64) -> &Mutex<Shard> {
        &self.shards[slot_of_position(pos) as usize % SHARDS]
    }

    /// The access clock: milliseconds since open, refreshed by the spill
    /// thread every few tens of milliseconds. Reading it costs one atomic
    /// load instead of a clock call on every access.
    fn clock(&self) -> u32 {
        self.coarse_clock.load(Ordering::Relaxed)
    }

    fn tick_clock(&self) {
        self.coarse_clock
            .store(self.started.elapsed().as_millis() as u32, Ordering::Relaxed);
    }

    /// Appends a log record, or adds it to this thread's apply batch.
    fn log(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Lsn {
        if !BATCH.with(|b| b.borrow().is_some()) {
            return self.wal.append_with(encode);
        }
        BATCH.with(|b| {
            if let Some(buf) = b.borrow_mut().as_mut() {
                let at = buf.len();
                buf.extend_from_slice(&[0u8; 4]);
                encode(buf);
                let len = (buf.len() - at - 4) as u32;
                buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
        });
        0
    }

    /// Removes the disk copies of keys the batch just logged deleted, and
    /// their tombstones. The batch's record reaches the OS first, so after
    /// a crash the disk tier never holds a deletion the log lacks.
    fn remove_tombstones(&self, keys: Vec<(usize, Box<[u8]>)>) {
        if let Err(e) = self.wal.sync(self.wal.appended(), AppendFsync::No) {
            tracing::error!(error = %e, "writing the log before removing deleted keys failed");
            return;
        }
        for (db, key) in keys {
            let pos = position_of(&key);
            let mut shard = self.shard(pos).lock();
            let is_stone = shard
                .get(db, pos, &key)
                .is_some_and(|e| e.rec.expire_at_ms == Some(1) && e.on_disk);
            if !is_stone {
                // Written again later in the same batch: memory is current.
                continue;
            }
            if let Some(e) = shard.remove(db, pos, &key) {
                self.release(e.charge());
            }
            match self.disk.remove(db, &key) {
                Ok(()) => {
                    self.counts[db].disk.fetch_sub(1, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "removing a deleted key from disk failed"),
            }
        }
    }

    /// Before background work moves dirty entries to the disk tier of a
    /// replicated store: waits for running apply batches to finish and
    /// writes the log out, so the disk tier never gets ahead of it.
    fn quiesce(&self) -> Option<parking_lot::RwLockWriteGuard<'_, ()>> {
        if !self.is_replicated() {
            return None;
        }
        let guard = self.batches.write();
        if let Err(e) = self.wal.sync(self.wal.appended(), AppendFsync::No) {
            tracing::error!(error = %e, "writing the log out failed");
        }
        Some(guard)
    }

    fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Relaxed)
    }

    /// The physical database database number `db` names.
    fn phys(&self, db: usize) -> Result<usize, StorageError> {
        self.dbmap
            .get(db)
            .map(|p| usize::from(p.load(Ordering::Relaxed)))
            .ok_or(StorageError::BadDatabase)
    }

    /// The database number that names physical database `phys`.
    fn logical(&self, phys: usize) -> usize {
        self.dbmap
            .iter()
            .position(|p| usize::from(p.load(Ordering::Relaxed)) == phys)
            .unwrap_or(phys)
    }

    /// The database map as it stands.
    fn dbmap_now(&self) -> Vec<u8> {
        self.dbmap
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }

    fn tier_cap(&self) -> u64 {
        self.tier_cap.load(Ordering::Relaxed)
    }

    fn spill_threshold(&self) -> u64 {
        (self.tier_cap() as f64 * self.cfg.read().overflow_ratio) as u64
    }

    fn spill_low(&self) -> u64 {
        (self.tier_cap() as f64 * self.cfg.read().spill_low_ratio) as u64
    }

    /// Reserves `bytes` if usage stays within `limit`.
    fn try_charge(&self, bytes: usize, limit: u64) -> bool {
        let bytes = bytes as u64;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + bytes <= limit).then_some(u + bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes as u64, Ordering::AcqRel);
    }

    /// Removes an expired memory entry (and its disk copy).
    fn expire_in_memory(
        &self,
        shard: &mut Shard,
        db: usize,
        pos: u64,
        key: &[u8],
    ) -> Result<(), StorageError> {
        if let Some(e) = shard.remove(db, pos, key) {
            self.release(e.charge());
            if e.on_disk {
                self.disk.remove(db, key)?;
                self.counts[db].disk.fetch_sub(1, Ordering::Relaxed);
            } else {
                self.counts[db].mem_only.fetch_sub(1, Ordering::Relaxed);
            }
            self.expired(db, key);
        }
        Ok(())
    }

    /// Moves one entry to disk (writing it only if dirty). Returns whether it moved.
    fn demote(
        &self,
        shard: &mut Shard,
        db: usize,
        pos: u64,
        key: &[u8],
    ) -> Result<bool, StorageError> {
        let Some(e) = shard.get(db, pos, key) else {
            return Ok(false);
        };
        if e.rec.is_expired(now_ms()) && !self.is_replicated() {
            self.expire_in_memory(shard, db, pos, key)?;
            return Ok(true);
        }
        if e.dirty {
            self.disk.put(db, key, &e.rec, e.chunks.as_deref())?;
            if !e.on_disk {
                self.counts[db].disk.fetch_add(1, Ordering::Relaxed);
                self.counts[db].mem_only.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(e) = shard.remove(db, pos, key) {
            let charge = e.charge();
            self.release(charge);
            self.counters
                .spilled_bytes
                .fetch_add(charge as u64, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn flush_db_locked(&self, db: usize) -> Result<(), StorageError> {
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            let before = s.used;
            s.clear_db(db);
            self.release(before - s.used);
        }
        self.disk.clear(db)?;
        self.counts[db].disk.store(0, Ordering::Relaxed);
        self.counts[db].mem_only.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Demotes the least recently used of a few sampled entries of `shard`
    /// until `bytes` have been freed (or a few rounds found nothing), to
    /// make room for a promotion into a full tier.
    fn make_room(&self, shard: &mut Shard, bytes: usize) -> Result<(), StorageError> {
        let mut rng = rand::rng();
        let mut freed = 0usize;
        for _ in 0..4 {
            let mut sample = shard.sample(8, &mut rng);
            let now = self.clock();
            sample.sort_by_key(|(_, _, _, lru)| std::cmp::Reverse(now.wrapping_sub(*lru)));
            let replicated = self.is_replicated();
            for (db, pos, key, _) in sample.into_iter().take(2) {
                // A replicated store writes dirty entries out only when
                // quiesced (see `quiesce`), which a reader can't wait for.
                if replicated && shard.get(db, pos, &key).is_some_and(|e| e.dirty) {
                    continue;
                }
                let before = shard.used;
                if self.demote(shard, db, pos, &key)? {
                    freed += before - shard.used;
                    Counters::bump(&self.counters.spilled);
                }
                if freed >= bytes {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Spills sampled-LRU entries until usage is at most `target`.
    fn spill_to(&self, target: u64) -> Result<u64, StorageError> {
        let mut rng = rand::rng();
        let mut moved = 0u64;
        let mut idle_rounds = 0;
        let mut shard_idx = rand::random_range(0..SHARDS);
        while self.used.load(Ordering::Acquire) > target {
            shard_idx = (shard_idx + 1) % SHARDS;
            let _quiet = self.quiesce();
            let mut shard = self.shards[shard_idx].lock();
            let mut sample = shard.sample(if target == 0 { 64 } else { 16 }, &mut rng);
            if sample.is_empty() {
                idle_rounds += 1;
                if idle_rounds > SHARDS * 2 {
                    break;
                }
                continue;
            }
            idle_rounds = 0;
            // A long spill must not freeze the access clock, or every entry
            // written meanwhile looks equally old.
            self.tick_clock();
            let now = self.clock();
            // Oldest first; demote the older half of the sample.
            sample.sort_by_key(|(_, _, _, lru)| std::cmp::Reverse(now.wrapping_sub(*lru)));
            let take = if target == 0 {
                sample.len()
            } else {
                sample.len().div_ceil(2)
            };
            for (db, pos, key, _) in sample.into_iter().take(take) {
                if self.demote(&mut shard, db, pos, &key)? {
                    moved += 1;
                    Counters::bump(&self.counters.spilled);
                }
            }
        }
        Ok(moved)
    }

    fn offload(&self) -> OffloadReport {
        let cfg = self.cfg.read().clone();
        let cap = self.tier_cap().max(1);
        let mem_ratio = self.used.load(Ordering::Relaxed) as f64 / cap as f64;
        let force_by_mem = mem_ratio >= cfg.offload_force_ratio;
        let min_age = if force_by_mem {
            cfg.offload_force_min_age_secs
        } else {
            cfg.offload_after_secs
        };
        let now = now_secs();
        let clock = self.clock();
        let mut report = OffloadReport {
            mem_ratio,
            force_by_mem,
            ..Default::default()
        };
        for shard in self.shards.iter() {
            let _quiet = self.quiesce();
            let mut s = shard.lock();
            let mut old = Vec::new();
            s.for_each_mut(|db, e| {
                report.scanned += 1;
                // Age since the last write makes a key eligible; a recent
                // read keeps it in memory all the same.
                let idle_ms = u64::from(clock.wrapping_sub(e.lru));
                if u64::from(now.saturating_sub(e.rec.written_secs)) >= min_age
                    && idle_ms >= min_age * 1000
                {
                    old.push((db, e.key.clone()));
                }
            });
            report.old += old.len() as u64;
            for (db, key) in old {
                let pos = position_of(&key);
                match self.demote(&mut s, db, pos, &key) {
                    Ok(true) => report.moved += 1,
                    Ok(false) => {}
                    Err(e) => {
                        report.write_fail += 1;
                        tracing::warn!(error = %e, "offload of a key failed");
                    }
                }
            }
        }
        Counters::bump(&self.counters.offload_runs);
        self.counters
            .offloaded
            .fetch_add(report.moved, Ordering::Relaxed);
        self.counters
            .offload_write_fail
            .fetch_add(report.write_fail, Ordering::Relaxed);
        tracing::info!(
            scanned = report.scanned,
            old = report.old,
            moved = report.moved,
            write_fail = report.write_fail,
            mem_ratio = format!("{:.3}", report.mem_ratio),
            force_by_mem = report.force_by_mem,
            "offload run"
        );
        *self.last_offload.lock() = report.clone();
        report
    }

    fn checkpoint(&self) -> Result<(), StorageError> {
        let _one = self.checkpointing.lock();
        self.wal.check()?;
        let keep_from = self.wal.rotate()?;
        for shard in self.shards.iter() {
            let _quiet = self.quiesce();
            let mut s = shard.lock();
            let mut dirty: Vec<(usize, Box<[u8]>)> = Vec::new();
            s.for_each_mut(|db, e| {
                if e.dirty {
                    dirty.push((db, Box::from(&*e.key)));
                }
            });
            if dirty.is_empty() {
                continue;
            }
            let mut batch = self.disk.batch();
            let mut kept = Vec::with_capacity(dirty.len());
            for (db, key) in &dirty {
                if let Some(e) = s.get(*db, position_of(key), key) {
                    kept.push(batch.store(*db, key, &e.rec, e.chunks.as_deref())?);
                }
            }
            batch.commit()?;
            let mut kept = kept.into_iter();
            for (db, key) in &dirty {
                if let Some(e) = s.get_mut(*db, position_of(key), key) {
                    e.chunks = kept.next().flatten();
                    e.dirty = false;
                    if !e.on_disk {
                        e.on_disk = true;
                        self.counts[*db].disk.fetch_add(1, Ordering::Relaxed);
                        self.counts[*db].mem_only.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
        // The marks persisted with the data must cover every write the
        // data holds: read them with no batch in flight, after the flush,
        // and make the log durable up to that point first.
        let (marks, upto) = {
            let _quiet = self.batches.write();
            (self.marks.lock().clone(), self.wal.appended())
        };
        if !marks.is_empty() {
            self.wal.sync(upto, AppendFsync::Always)?;
            self.disk.put_meta(MARKS_KEY, &encode_marks(&marks))?;
        }
        // A SWAPDB logged before the rotation is in the map by now; one
        // after it stays in the log that is kept.
        self.disk.put_meta(DBMAP_KEY, &self.dbmap_now())?;
        self.disk.persist()?;
        self.disk.release_write_buffers()?;
        *self.durable_marks.lock() = marks;
        self.wal.remove_before(keep_from)?;
        Counters::bump(&self.counters.checkpoints);
        self.last_checkpoint_secs
            .store(now_ms() / 1000, Ordering::Relaxed);
        Ok(())
    }

    /// Sweeps up to `budget` memory entries per shard for expired keys.
    fn expire_cycle(&self, budget: usize) -> u64 {
        let replicated = self.is_replicated();
        let now = now_ms();
        let databases = self.counts.len();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            if s.len() == 0 {
                continue;
            }
            let (mut db, mut from) = s.sweep;
            let mut left = budget;
            let mut dbs_seen = 0;
            while left > 0 && dbs_seen <= databases {
                let mut expired = Vec::new();
                let step = left.min(256);
                let next = s.visit_from(db, from, step, |_, e| {
                    if e.rec.is_expired(now) && !is_tombstone(&e.rec) {
                        expired.push(e.key.to_vec());
                    }
                });
                left = left.saturating_sub(step);
                if replicated {
                    self.found_expired(db, expired.into_iter());
                    expired = Vec::new();
                }
                for key in expired {
                    if self
                        .expire_in_memory(&mut s, db, position_of(&key), &key)
                        .is_ok()
                    {
                        removed += 1;
                    }
                }
                match next {
                    Some(p) => from = p,
                    None => {
                        db = (db + 1) % databases;
                        from = 0;
                        dbs_seen += 1;
                    }
                }
            }
            s.sweep = (db, from);
        }
        removed
    }

    /// Removes expired keys from the disk tier, up to `budget` keys examined
    /// from `cursor` in `db`; returns where to continue.
    fn expire_disk(
        &self,
        db: usize,
        cursor: u64,
        budget: usize,
    ) -> Result<Option<u64>, StorageError> {
        let replicated = self.is_replicated();
        let now = now_ms();
        let (items, more) = self.disk.scan_from(db, cursor, budget)?;
        let next = if more {
            items.last().map(|(p, _, _)| *p)
        } else {
            None
        };
        for (pos, key, v) in items {
            // A replicated store's tombstones (expiry 1) are its log's
            // business, not expiry's.
            if matches!(peek_expiry(&v), Some(at) if at <= now && !(replicated && at == 1)) {
                let s = self.shard(pos).lock();
                if replicated {
                    if s.get(db, pos, &key).is_none() {
                        drop(s);
                        self.found_expired(db, std::iter::once(key.to_vec()));
                    }
                    continue;
                }
                // A memory entry is authoritative; its disk copy is rewritten
                // at the next checkpoint.
                if s.get(db, pos, &key).is_none() {
                    if let Ok(Some(rec)) = self.disk.get(db, &key) {
                        if rec.is_expired(now) {
                            self.disk.remove(db, &key)?;
                            self.counts[db].disk.fetch_sub(1, Ordering::Relaxed);
                            self.expired(db, &key);
                        }
                    }
                }
                drop(s);
            }
        }
        Ok(next)
    }

    /// Queues expired keys of `db` for the replication layer.
    fn found_expired(&self, db: usize, keys: impl Iterator<Item = Vec<u8>>) {
        let mut found = self.expired_found.lock();
        for key in keys {
            if found.len() >= EXPIRED_FOUND_MAX {
                return;
            }
            found.push((db, key));
        }
    }

    /// Keys in `[from, end)` of one slot, merged from both tiers, and the
    /// position up to which the page is complete.
    fn page(
        &self,
        db: usize,
        from: u64,
        end: u64,
        want: usize,
        now: u64,
    ) -> Result<(Vec<(Vec<u8>, ValueKind)>, u64), StorageError> {
        let mut limit = want.max(2);
        loop {
            let mut mem: Vec<(u64, Vec<u8>, Option<ValueKind>)> = Vec::new();
            let mem_bound = {
                let s = self.shard(from).lock();
                let next = s.visit_from(db, from, limit, |pos, e| {
                    if pos < end {
                        let kind = (!e.rec.is_expired(now)).then(|| e.rec.value.kind());
                        mem.push((pos, e.key.to_vec(), kind));
                    }
                });
                next.map_or(end, |p| p.min(end))
            };
            let mut disk_items = Vec::new();
            let mut disk_more = false;
            for guard in self
                .disk
                .keyspace(db)
                .range(from.to_be_bytes()..end.to_be_bytes())
            {
                if disk_items.len() >= limit {
                    disk_more = true;
                    break;
                }
                let (k, v) = guard.into_inner()?;
                if let Some((pos, key)) = disk::split_disk_key(&k) {
                    let expired = matches!(peek_expiry(&v), Some(at) if at <= now);
                    let kind = types::peek_kind(&v).unwrap_or(ValueKind::Str);
                    disk_items.push((pos, key.to_vec(), (!expired).then_some(kind)));
                }
            }
            let disk_bound = if disk_more {
                disk_items.last().map_or(end, |(p, _, _)| *p)
            } else {
                end
            };
            let bound = mem_bound.min(disk_bound);
            if bound <= from {
                // Every fetched item shares one position: fetch more.
                limit *= 4;
                continue;
            }
            let mut out: Vec<(u64, Vec<u8>, ValueKind)> = Vec::new();
            let mut mem_keys = std::collections::HashSet::new();
            for (pos, key, kind) in mem.into_iter().filter(|(p, _, _)| *p < bound) {
                mem_keys.insert(key.clone());
                if let Some(kind) = kind {
                    out.push((pos, key, kind));
                }
            }
            for (pos, key, kind) in disk_items.into_iter().filter(|(p, _, _)| *p < bound) {
                if !mem_keys.contains(&key) {
                    if let Some(kind) = kind {
                        out.push((pos, key, kind));
                    }
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            return Ok((
                out.into_iter().map(|(_, k, kind)| (k, kind)).collect(),
                bound,
            ));
        }
    }

    fn stats(&self) -> StatsSnapshot {
        let c = &self.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let entries_memory: u64 = self.shards.iter().map(|s| s.lock().len() as u64).sum();
        let total: i64 = self
            .counts
            .iter()
            .map(|d| d.disk.load(Ordering::Relaxed) + d.mem_only.load(Ordering::Relaxed))
            .sum();
        StatsSnapshot {
            used_bytes: self.used.load(Ordering::Relaxed),
            write_buffer_bytes: self.disk.write_buffer_bytes(),
            tier_cap_bytes: self.tier_cap(),
            maxmemory: self.cfg.read().maxmemory,
            entries_memory,
            entries_disk: (total.max(0) as u64).saturating_sub(entries_memory),
            hits_memory: r(&c.hits_memory),
            hits_disk: r(&c.hits_disk),
            misses: r(&c.misses),
            spilled: r(&c.spilled),
            spilled_bytes: r(&c.spilled_bytes),
            direct_to_disk: r(&c.direct_to_disk),
            promotions: r(&c.promotions),
            expired: r(&c.expired),
            offload_runs: r(&c.offload_runs),
            offloaded: r(&c.offloaded),
            offload_write_fail: r(&c.offload_write_fail),
            last_offload: self.last_offload.lock().clone(),
            checkpoints: r(&c.checkpoints),
            wal_bytes: r(&self.wal.stats.bytes),
            wal_fsyncs: r(&self.wal.stats.fsyncs),
            wal_fsync_micros: r(&self.wal.stats.fsync_micros),
            wal_fsync_max_micros: r(&self.wal.stats.fsync_max_micros),
            disk_bytes: self.disk.disk_space(),
            disk_write_bytes: r(&self.disk.written.bytes),
            disk_pieces_written: r(&self.disk.written.pieces),
            disk_layouts_written: r(&self.disk.written.layouts),
            poisoned: self.wal.poisoned(),
        }
    }
}
