//! The data model: what a key holds, and the one binary encoding of it that
//! the disk tier, the write-ahead log and snapshots all share.

use std::collections::VecDeque;

use super::chunks;
use super::error::StorageError;
pub use super::fields::FieldMap;
use super::sets::{SetMembers, SortedSet};
use super::streams::{decode_stream, encode_stream, StreamData};

/// A list's items. Like [`FieldMap`] it keeps a running count of its
/// buffers' bytes, so charging it against `maxmemory` is O(1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListItems {
    items: VecDeque<Box<[u8]>>,
    bytes: usize,
    /// Which list this is (random, set on its first change) and how many
    /// changes it has had: log replay applies a list delta only on top of
    /// the exact state it was made from, so replaying a log segment over
    /// a checkpoint that already holds some of it applies nothing twice.
    id: u64,
    seq: u64,
}

impl ListItems {
    /// An empty list.
    pub fn new() -> ListItems {
        ListItems::default()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The item at `i` (0 = head).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.items.get(i).map(|v| &v[..])
    }

    /// Items from head to tail.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator {
        self.items.iter().map(|v| &v[..])
    }

    /// Adds `v` at the head.
    pub fn push_front(&mut self, v: Box<[u8]>) {
        self.bytes += alloc_size(v.len());
        self.items.push_front(v);
    }

    /// Adds `v` at the tail.
    pub fn push_back(&mut self, v: Box<[u8]>) {
        self.bytes += alloc_size(v.len());
        self.items.push_back(v);
    }

    /// Removes the head.
    pub fn pop_front(&mut self) -> Option<Box<[u8]>> {
        let v = self.items.pop_front()?;
        self.bytes -= alloc_size(v.len());
        Some(v)
    }

    /// Removes the tail.
    pub fn pop_back(&mut self) -> Option<Box<[u8]>> {
        let v = self.items.pop_back()?;
        self.bytes -= alloc_size(v.len());
        Some(v)
    }

    /// Replaces the item at `i`; false if there is none.
    pub fn set(&mut self, i: usize, v: Box<[u8]>) -> bool {
        let Some(slot) = self.items.get_mut(i) else {
            return false;
        };
        self.bytes = self.bytes + alloc_size(v.len()) - alloc_size(slot.len());
        *slot = v;
        true
    }

    /// Inserts `v` before position `i` (`i == len` appends).
    pub fn insert(&mut self, i: usize, v: Box<[u8]>) {
        self.bytes += alloc_size(v.len());
        self.items.insert(i, v);
    }

    /// Keeps only the items for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let mut freed = 0;
        self.items.retain(|v| {
            let k = keep(v);
            if !k {
                freed += alloc_size(v.len());
            }
            k
        });
        self.bytes -= freed;
    }

    /// Counts one change; the first change also names the list.
    pub fn stamp(&mut self) {
        if self.id == 0 {
            self.id = rand::random::<u64>() | 1;
        }
        self.seq += 1;
    }

    /// The list's id and change count (see [`ListItems::stamp`]).
    pub fn stamp_of(&self) -> (u64, u64) {
        (self.id, self.seq)
    }

    /// Sets the id and change count (log replay).
    pub fn set_stamp(&mut self, id: u64, seq: u64) {
        (self.id, self.seq) = (id, seq);
    }

    fn heap_size(&self) -> usize {
        alloc_size(self.items.capacity() * 16) + self.bytes
    }
}

/// The value a key holds. New types (lists, stream entries) are new variants
/// with a type code in [`Value::type_code`] and a payload codec below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A byte string.
    Str(Vec<u8>),
    /// A map of field to byte string; feature stores keep features as hashes.
    Hash(Box<FieldMap>),
    /// A sequence of byte strings; job queues keep their jobs in lists.
    List(Box<ListItems>),
    /// Distinct byte strings; feature stores keep seen items in sets.
    Set(Box<SetMembers>),
    /// Members ranked by score; ranked candidates, delayed jobs.
    ZSet(Box<SortedSet>),
    /// An append-only log of entries with consumer groups.
    Stream(Box<StreamData>),
}

/// The type a key holds, as `TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `string`
    Str,
    /// `hash`
    Hash,
    /// `list`
    List,
    /// `set`
    Set,
    /// `zset`
    ZSet,
    /// `stream`
    Stream,
}

impl ValueKind {
    /// The name Redis's `TYPE` command uses.
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Str => "string",
            ValueKind::Hash => "hash",
            ValueKind::List => "list",
            ValueKind::Set => "set",
            ValueKind::ZSet => "zset",
            ValueKind::Stream => "stream",
        }
    }
}

impl Value {
    /// The kind of this value.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Str(_) => ValueKind::Str,
            Value::Hash(_) => ValueKind::Hash,
            Value::List(_) => ValueKind::List,
            Value::Set(_) => ValueKind::Set,
            Value::ZSet(_) => ValueKind::ZSet,
            Value::Stream(_) => ValueKind::Stream,
        }
    }

    fn type_code(&self) -> u8 {
        match self {
            Value::Str(_) => 0,
            Value::Hash(_) => 1,
            Value::List(_) => 2,
            Value::Set(_) => 3,
            Value::ZSet(_) => 4,
            Value::Stream(_) => 5,
        }
    }

    /// Heap bytes this value holds, counted against `maxmemory`. A
    /// collection is its boxed header and the buffers it reports, plus
    /// [`COLLECTION_SLACK`].
    pub fn heap_size(&self) -> usize {
        let boxed = |header: usize, heap: usize| alloc_size(header) + heap + COLLECTION_SLACK;
        match self {
            Value::Str(v) => alloc_size(v.capacity()),
            Value::Hash(map) => boxed(std::mem::size_of::<FieldMap>(), map.heap_size()),
            Value::List(list) => boxed(std::mem::size_of::<ListItems>(), list.heap_size()),
            Value::Set(set) => boxed(std::mem::size_of::<SetMembers>(), set.heap_size()),
            Value::ZSet(z) => boxed(std::mem::size_of::<SortedSet>(), z.heap_size()),
            Value::Stream(st) => boxed(std::mem::size_of::<StreamData>(), st.heap_size()),
        }
    }
}

/// What a collection's allocations in other size classes than its entry's
/// cost beyond their own bytes (partly filled allocator pages). Calibrated
/// on the server: 1M hashes of 10 small fields grow its RSS by 416 bytes
/// each once settled, 9 more than their entries and buffers.
const COLLECTION_SLACK: usize = 16;

/// Bytes the allocator (mimalloc) sets aside for a request of `n`: a
/// multiple of 16 up to 64 bytes (counting 8-byte classes as 16 keeps the
/// charge on the safe side), then four size classes per doubling.
pub(crate) const fn alloc_size(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let words = n.div_ceil(8);
    if words <= 8 {
        return words.next_multiple_of(2) * 8;
    }
    let step = 1usize << (usize::BITS - 1 - (words - 1).leading_zeros() - 2);
    words.div_ceil(step) * step * 8
}

/// A cluster version stamp: the coordinator's epoch and a hybrid logical
/// clock. Single-node stores leave it zero; the storage layer only keeps it.
// Packed to 12 bytes so it shares an 8-byte slot of `Record` with
// `written_secs`: a `Record` is 56 bytes instead of 64 (RSS per small key
// dropped from 174 to 157 bytes in the storage benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(C, packed(4))]
pub struct Version {
    /// Configuration epoch of the writer.
    pub epoch: u32,
    /// Hybrid logical clock of the write.
    pub hlc: u64,
}

/// Everything stored under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The value.
    pub value: Value,
    /// Absolute expiry in milliseconds since the Unix epoch; `None` never expires.
    pub expire_at_ms: Option<u64>,
    /// Version stamp for the replication layer.
    pub version: Version,
    /// When the key was last written, in seconds since the Unix epoch (the
    /// seed's `_ts`; the offloader ages entries by it).
    pub written_secs: u32,
}

impl Record {
    /// A record holding `value` with no expiry, written now.
    pub fn new(value: Value) -> Record {
        Record {
            value,
            expire_at_ms: None,
            version: Version::default(),
            written_secs: now_secs(),
        }
    }

    /// Whether the record has expired by now (reads the clock only if it
    /// has an expiry).
    pub fn is_expired_now(&self) -> bool {
        matches!(self.expire_at_ms, Some(at) if at <= now_ms())
    }

    /// Whether the record has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expire_at_ms, Some(at) if at <= now_ms)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    let fixed = APPLY_CLOCK.with(std::cell::Cell::get);
    if fixed != 0 {
        return fixed;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

thread_local! {
    /// The time a replicated write was stamped with, while it is applied.
    static APPLY_CLOCK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The next write stamp of the replicated write being applied (0 when
    /// none is).
    static APPLY_STAMP: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The random source of a replicated write, while it is applied.
    static APPLY_RNG: std::cell::RefCell<Option<rand::rngs::StdRng>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` as a replicated write is applied: [`now_ms`] fixed at `at_ms`
/// and [`with_rng`] drawing from a generator seeded with `seed`. Replicas
/// apply a write at the time its leader stamped on it and make the same
/// random choices (SPOP), so TTLs, expiry checks, write ages and picks
/// come out the same on every replica.
pub fn with_clock<R>(at_ms: u64, seed: u64, f: impl FnOnce() -> R) -> R {
    use rand::SeedableRng;
    struct Restore(u64, Option<rand::rngs::StdRng>, u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            APPLY_CLOCK.with(|c| c.set(self.0));
            APPLY_RNG.with(|r| *r.borrow_mut() = self.1.take());
            APPLY_STAMP.with(|c| c.set(self.2));
        }
    }
    let rng = rand::rngs::StdRng::seed_from_u64(seed ^ at_ms.rotate_left(32));
    let _restore = Restore(
        APPLY_CLOCK.with(|c| c.replace(at_ms)),
        APPLY_RNG.with(|r| r.borrow_mut().replace(rng)),
        APPLY_STAMP.with(|c| c.replace((seed << STAMP_SEQ_BITS) | 1)),
    );
    f()
}

/// Bits of a replicated write's stamp that number the writes of one entry.
const STAMP_SEQ_BITS: u32 = 20;

/// A stamp for a write that is about to change a record: different from
/// every stamp the key had before, so WATCH can tell whether a key was
/// written since it looked. Replicas applying the same entry hand out
/// the same stamps (the entry's seed, then a sequence); a node on its own
/// counts up from its start time, so stamps from before a restart are
/// not reused.
pub fn next_stamp() -> u64 {
    static LOCAL: std::sync::OnceLock<std::sync::atomic::AtomicU64> = std::sync::OnceLock::new();
    let applied = APPLY_STAMP.with(|c| {
        let v = c.get();
        if v != 0 {
            c.set(v + 1);
        }
        v
    });
    if applied != 0 {
        return applied;
    }
    LOCAL
        .get_or_init(|| {
            let us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            std::sync::atomic::AtomicU64::new(us.saturating_mul(16))
        })
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Runs `f` with the random source a command's effects must draw from:
/// the replicated write's seeded generator while one is applied (see
/// [`with_clock`]), the thread's generator otherwise.
pub fn with_rng<R>(f: impl FnOnce(&mut dyn rand::RngCore) -> R) -> R {
    APPLY_RNG.with(|r| match r.borrow_mut().as_mut() {
        Some(rng) => f(rng),
        None => f(&mut rand::rng()),
    })
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u32 {
    (now_ms() / 1000) as u32
}

const FORMAT: u8 = 1;

/// Appends the header every record's encoding starts with.
fn encode_header(rec: &Record, code: u8, out: &mut Vec<u8>) {
    out.push(FORMAT);
    out.push(code);
    out.extend_from_slice(&rec.expire_at_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&rec.version.epoch.to_le_bytes());
    out.extend_from_slice(&rec.version.hlc.to_le_bytes());
    out.extend_from_slice(&rec.written_secs.to_le_bytes());
}

/// Appends the head of a record kept in pieces (see [`chunks`]): the
/// header, flagged, and the layout; the elements are in the pieces.
pub(crate) fn encode_chunked_head(rec: &Record, layout: &chunks::Layout, out: &mut Vec<u8>) {
    encode_header(rec, rec.value.type_code() | chunks::CHUNKED, out);
    chunks::encode_head(layout, &rec.value, out);
}

/// Whether an encoded record is the head of one kept in pieces.
pub(crate) fn is_chunked_head(buf: &[u8]) -> bool {
    buf.get(1).is_some_and(|code| code & chunks::CHUNKED != 0)
}

/// The type of an encoded record, read from its header alone.
pub(crate) fn peek_kind(buf: &[u8]) -> Option<ValueKind> {
    Some(match buf.get(1)? & !chunks::CHUNKED {
        0 => ValueKind::Str,
        1 => ValueKind::Hash,
        2 => ValueKind::List,
        3 => ValueKind::Set,
        4 => ValueKind::ZSet,
        5 => ValueKind::Stream,
        _ => return None,
    })
}

/// Decodes a head written by [`encode_chunked_head`] and its pieces.
pub(crate) fn decode_chunked(
    buf: &[u8],
    pieces: impl IntoIterator<Item = Result<(chunks::PieceId, Vec<u8>), StorageError>>,
) -> Result<(Record, chunks::Layout), StorageError> {
    let mut r = Reader { buf, pos: 0 };
    let (code, mut rec) = read_header(&mut r)?;
    let (value, layout) = chunks::decode(code & !chunks::CHUNKED, &mut r, pieces)?;
    rec.value = value;
    Ok((rec, layout))
}

/// Reads the header [`encode_header`] wrote: the type code, and a record
/// holding an empty string.
fn read_header(r: &mut Reader<'_>) -> Result<(u8, Record), StorageError> {
    let format = r.u8()?;
    if format != FORMAT {
        return Err(StorageError::Corrupt {
            what: format!("unknown record format {format}"),
        });
    }
    let code = r.u8()?;
    let expire = r.u64()?;
    let epoch = r.u32()?;
    let hlc = r.u64()?;
    let written_secs = r.u32()?;
    Ok((
        code,
        Record {
            value: Value::Str(Vec::new()),
            expire_at_ms: (expire != 0).then_some(expire),
            version: Version { epoch, hlc },
            written_secs,
        },
    ))
}

/// Appends the encoding of `rec` to `out`.
pub fn encode_record(rec: &Record, out: &mut Vec<u8>) {
    encode_header(rec, rec.value.type_code(), out);
    match &rec.value {
        Value::Str(v) => out.extend_from_slice(v),
        Value::Hash(map) => {
            out.extend_from_slice(&(map.len() as u32).to_le_bytes());
            for (f, v) in map.iter() {
                put_bytes(out, f);
                put_bytes(out, v);
            }
        }
        Value::List(list) => {
            out.extend_from_slice(&list.id.to_le_bytes());
            out.extend_from_slice(&list.seq.to_le_bytes());
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for v in list.iter() {
                put_bytes(out, v);
            }
        }
        Value::Set(set) => {
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for m in set.iter() {
                put_bytes(out, m);
            }
        }
        Value::ZSet(z) => {
            out.extend_from_slice(&(z.len() as u32).to_le_bytes());
            for (m, score) in z.iter() {
                out.extend_from_slice(&score.to_le_bytes());
                put_bytes(out, m);
            }
        }
        Value::Stream(st) => encode_stream(st, out),
    }
}

/// Encodes `rec` into a new buffer.
#[cfg(test)]
pub fn record_bytes(rec: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_record(rec, &mut out);
    out
}

/// Reads only the expiry of an encoded record, without decoding its value.
pub fn peek_expiry(buf: &[u8]) -> Option<u64> {
    let raw = u64::from_le_bytes(buf.get(2..10)?.try_into().ok()?);
    (raw != 0).then_some(raw)
}

/// Decodes a record produced by [`encode_record`].
pub fn decode_record(buf: &[u8]) -> Result<Record, StorageError> {
    let mut r = Reader { buf, pos: 0 };
    let (code, mut rec) = read_header(&mut r)?;
    let value = match code {
        0 => Value::Str(r.rest().to_vec()),
        1 => {
            let n = r.u32()? as usize;
            let mut map = FieldMap::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let f = r.bytes()?;
                let v = r.bytes()?;
                map.insert(f.into(), v.into());
            }
            Value::Hash(Box::new(map))
        }
        2 => {
            let (id, seq) = (r.u64()?, r.u64()?);
            let n = r.u32()? as usize;
            let mut list = ListItems::new();
            list.set_stamp(id, seq);
            for _ in 0..n {
                list.push_back(r.bytes()?.into());
            }
            Value::List(Box::new(list))
        }
        3 => {
            let n = r.u32()? as usize;
            let mut set = SetMembers::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                set.insert(r.bytes()?.into());
            }
            Value::Set(Box::new(set))
        }
        4 => {
            let n = r.u32()? as usize;
            let mut z = SortedSet::new();
            for _ in 0..n {
                let score = r.f64()?;
                z.insert(r.bytes()?, score);
            }
            Value::ZSet(Box::new(z))
        }
        5 => Value::Stream(Box::new(decode_stream(&mut r)?)),
        code if code & chunks::CHUNKED != 0 => {
            return Err(StorageError::Corrupt {
                what: "a record kept in pieces read without them".into(),
            })
        }
        other => {
            return Err(StorageError::Corrupt {
                what: format!("unknown value type {other}"),
            })
        }
    };
    rec.value = value;
    Ok(rec)
}

/// Version of the DUMP payload format.
const DUMP_VERSION: u16 = 1;

/// DUMP's payload for `rec`'s value: the record encoding without expiry
/// or version, then the format version (2 bytes) and an XXH3 checksum of
/// everything before it (8 bytes). It round-trips through [`undump`] on
/// any strata node; it is not Redis's RDB format.
pub fn dump(rec: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_record(rec, &mut out);
    // Expiry, version and write time (bytes 2..26) belong to the key, not
    // the value.
    out[2..26].fill(0);
    out.extend_from_slice(&DUMP_VERSION.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The value in a DUMP payload; None if the payload is damaged, from
/// another format version, or not one at all.
pub fn undump(payload: &[u8]) -> Option<Value> {
    let body_len = payload.len().checked_sub(10)?;
    let (body, trailer) = payload.split_at(body_len);
    let version = u16::from_le_bytes([trailer[0], trailer[1]]);
    let sum = u64::from_le_bytes(trailer[2..10].try_into().ok()?);
    if version != DUMP_VERSION || xxhash_rust::xxh3::xxh3_64(&payload[..body_len + 2]) != sum {
        return None;
    }
    let rec = decode_record(body).ok()?;
    let sane = match &rec.value {
        Value::ZSet(z) => z.iter().all(|(_, s)| !s.is_nan()),
        Value::Hash(m) => !m.is_empty(),
        Value::List(l) => !l.is_empty(),
        Value::Set(m) => !m.is_empty(),
        _ => true,
    };
    sane.then_some(rec.value)
}

/// Appends a u32-length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A bounds-checked cursor over an encoded buffer.
pub struct Reader<'a> {
    /// The buffer.
    pub buf: &'a [u8],
    /// The read position.
    pub pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(StorageError::Corrupt {
                what: "record truncated".into(),
            }),
        }
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, StorageError> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, StorageError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, StorageError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A little-endian f64 (never NaN: a NaN is corruption).
    pub fn f64(&mut self) -> Result<f64, StorageError> {
        let v = f64::from_bits(self.u64()?);
        if v.is_nan() {
            return Err(StorageError::Corrupt {
                what: "NaN score".into(),
            });
        }
        Ok(v)
    }
    /// A u32-length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], StorageError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_compact() {
        assert_eq!(std::mem::size_of::<Record>(), 56);
    }

    #[test]
    fn records_round_trip() {
        let mut map = FieldMap::new();
        map.insert(b"f"[..].into(), b"v"[..].into());
        let mut list = ListItems::new();
        list.push_back(b"a"[..].into());
        list.push_front(b"bb"[..].into());
        list.stamp();
        for value in [
            Value::Str(b"hello".to_vec()),
            Value::Hash(Box::new(map)),
            Value::List(Box::new(list)),
        ] {
            let rec = Record {
                value,
                expire_at_ms: Some(42),
                version: Version { epoch: 3, hlc: 9 },
                written_secs: 7,
            };
            let buf = record_bytes(&rec);
            assert_eq!(peek_expiry(&buf), Some(42));
            assert_eq!(decode_record(&buf).unwrap(), rec);
        }
        assert!(decode_record(&[1, 1, 0]).is_err());
    }
}

#[cfg(test)]
mod alloc_tests {
    use super::alloc_size;

    #[test]
    fn allocation_sizes_follow_the_allocators_classes() {
        let classes: Vec<usize> = [0, 1, 16, 17, 64, 65, 80, 81, 128, 129, 179, 257, 1000, 1025]
            .iter()
            .map(|&n| alloc_size(n))
            .collect();
        assert_eq!(
            classes,
            [0, 16, 16, 32, 64, 80, 80, 96, 128, 160, 192, 320, 1024, 1280]
        );
    }
}
