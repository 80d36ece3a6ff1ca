//! The value of a stream: an append-only log of entries keyed by
//! `ms-seq` IDs, with consumer groups that track what each consumer was
//! delivered and has not acknowledged.
//!
//! A change to a stream is logged as [`StreamOp`]s, each of which sets a
//! piece of state outright (an entry, a group's cursor, a pending entry),
//! so replaying a log segment over a checkpoint that already holds part
//! of it converges on the same stream. Cost model (n entries, k touched):
//! XADD, XDEL, XACK are O(log n) per entry; ranges are O(log n + k).

use std::collections::{BTreeMap, BTreeSet};

use super::error::StorageError;
use super::types::{alloc_size, put_bytes, Reader};

/// A stream entry ID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// The smallest ID.
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest ID.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The next ID after this one, if any.
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => Some(StreamId {
                ms: self.ms.checked_add(1)?,
                seq: 0,
            }),
        }
    }

    /// The ID before this one, if any.
    pub fn prev(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => Some(StreamId {
                ms: self.ms.checked_sub(1)?,
                seq: u64::MAX,
            }),
        }
    }

    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ms.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
    }

    fn read(r: &mut Reader<'_>) -> Result<StreamId, StorageError> {
        Ok(StreamId {
            ms: r.u64()?,
            seq: r.u64()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An entry's fields and values, alternating.
pub type Fields = Box<[Box<[u8]>]>;

/// A delivered entry not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The consumer it was last delivered to.
    pub consumer: Box<[u8]>,
    /// When it was last delivered (ms since the epoch).
    pub delivered_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consumer {
    /// When it last tried to read or claim (ms).
    pub seen_ms: u64,
    /// When it last read or claimed something (ms; 0 = never).
    pub active_ms: u64,
    /// IDs pending for it.
    pub pending: BTreeSet<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The last ID delivered to the group.
    pub last_delivered: StreamId,
    /// How many entries the group has read, if known.
    pub entries_read: Option<u64>,
    /// Delivered, unacknowledged entries.
    pub pel: BTreeMap<StreamId, Pending>,
    /// Consumers by name.
    pub consumers: BTreeMap<Box<[u8]>, Consumer>,
}

impl Group {
    /// Records `id` as pending for `p.consumer` (created if need be).
    fn add_pending(&mut self, id: StreamId, p: Pending) {
        self.consumers
            .entry(p.consumer.clone())
            .or_default()
            .pending
            .insert(id);
        self.pel.insert(id, p);
    }
}

/// A stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamData {
    /// Entries by ID.
    pub entries: BTreeMap<StreamId, Fields>,
    /// The last ID generated (or set by XSETID).
    pub last_id: StreamId,
    /// Entries ever added.
    pub entries_added: u64,
    /// The largest ID ever deleted.
    pub max_deleted: StreamId,
    /// Consumer groups by name.
    pub groups: BTreeMap<Box<[u8]>, Group>,
    bytes: usize,
}

/// One logged change to a stream; each sets state outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOp {
    /// Entry `id` holds these fields.
    Add(StreamId, Fields),
    /// Entry `id` is gone.
    Del(StreamId),
    /// The stream's counters are these.
    Meta {
        /// Last ID.
        last_id: StreamId,
        /// Entries ever added.
        entries_added: u64,
        /// Largest deleted ID.
        max_deleted: StreamId,
    },
    /// The group exists with this cursor (created if need be).
    GroupCursor(Box<[u8]>, StreamId, Option<u64>),
    /// The group is gone.
    GroupDel(Box<[u8]>),
    /// The consumer exists with these times (created if need be).
    ConsumerSet(Box<[u8]>, Box<[u8]>, u64, u64),
    /// The consumer and its pending entries are gone.
    ConsumerDel(Box<[u8]>, Box<[u8]>),
    /// Entry `id` is pending in the group as this.
    PendingSet(Box<[u8]>, StreamId, Pending),
    /// Entry `id` is no longer pending in the group.
    PendingDel(Box<[u8]>, StreamId),
}

/// Bytes charged per entry beyond its fields: the tree slot, the ID and
/// the boxed slice.
const ENTRY_OVERHEAD: usize = 48;

fn fields_size(f: &Fields) -> usize {
    alloc_size(f.len() * 16) + f.iter().map(|v| alloc_size(v.len())).sum::<usize>() + ENTRY_OVERHEAD
}

impl StreamData {
    /// An empty stream.
    pub fn new() -> StreamData {
        StreamData::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no entries. A stream key stays even when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds or replaces entry `id`.
    pub fn insert(&mut self, id: StreamId, fields: Fields) {
        self.bytes += fields_size(&fields);
        if let Some(old) = self.entries.insert(id, fields) {
            self.bytes -= fields_size(&old);
        }
    }

    /// Removes entry `id`; true if it was there.
    pub fn remove(&mut self, id: StreamId) -> bool {
        match self.entries.remove(&id) {
            Some(old) => {
                self.bytes -= fields_size(&old);
                true
            }
            None => false,
        }
    }

    /// The first entry's ID.
    pub fn first_id(&self) -> Option<StreamId> {
        self.entries.keys().next().copied()
    }

    /// Applies one logged change.
    pub fn apply(&mut self, op: StreamOp) {
        match op {
            StreamOp::Add(id, fields) => self.insert(id, fields),
            StreamOp::Del(id) => {
                self.remove(id);
            }
            StreamOp::Meta {
                last_id,
                entries_added,
                max_deleted,
            } => {
                self.last_id = last_id;
                self.entries_added = entries_added;
                self.max_deleted = max_deleted;
            }
            StreamOp::GroupCursor(name, id, read) => {
                let g = self.groups.entry(name).or_default();
                g.last_delivered = id;
                g.entries_read = read;
            }
            StreamOp::GroupDel(name) => {
                self.groups.remove(&name);
            }
            StreamOp::ConsumerSet(group, name, seen, active) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    let c = g.consumers.entry(name).or_default();
                    c.seen_ms = seen;
                    c.active_ms = active;
                }
            }
            StreamOp::ConsumerDel(group, name) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    if let Some(c) = g.consumers.remove(&name) {
                        for id in c.pending {
                            g.pel.remove(&id);
                        }
                    }
                }
            }
            StreamOp::PendingSet(group, id, p) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    if let Some(old) = g.pel.get(&id) {
                        if let Some(c) = g.consumers.get_mut(&old.consumer) {
                            c.pending.remove(&id);
                        }
                    }
                    g.add_pending(id, p);
                }
            }
            StreamOp::PendingDel(group, id) => {
                if let Some(g) = self.groups.get_mut(&group) {
                    if let Some(old) = g.pel.remove(&id) {
                        if let Some(c) = g.consumers.get_mut(&old.consumer) {
                            c.pending.remove(&id);
                        }
                    }
                }
            }
        }
    }

    /// The counters as an op.
    pub fn meta_op(&self) -> StreamOp {
        StreamOp::Meta {
            last_id: self.last_id,
            entries_added: self.entries_added,
            max_deleted: self.max_deleted,
        }
    }

    pub(crate) fn heap_size(&self) -> usize {
        let groups: usize = self
            .groups
            .iter()
            .map(|(name, g)| {
                alloc_size(name.len())
                    + 64
                    + g.pel.len() * 80
                    + g.consumers
                        .keys()
                        .map(|c| alloc_size(c.len()) + 64)
                        .sum::<usize>()
            })
            .sum();
        self.bytes + groups
    }
}

fn put_fields(out: &mut Vec<u8>, f: &Fields) {
    out.extend_from_slice(&(f.len() as u32).to_le_bytes());
    for v in f.iter() {
        put_bytes(out, v);
    }
}

fn read_fields(r: &mut Reader<'_>) -> Result<Fields, StorageError> {
    let n = r.u32()? as usize;
    let mut v = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        v.push(Box::from(r.bytes()?));
    }
    Ok(v.into_boxed_slice())
}

fn put_pending(out: &mut Vec<u8>, p: &Pending) {
    put_bytes(out, &p.consumer);
    out.extend_from_slice(&p.delivered_ms.to_le_bytes());
    out.extend_from_slice(&p.deliveries.to_le_bytes());
}

fn read_pending(r: &mut Reader<'_>) -> Result<Pending, StorageError> {
    Ok(Pending {
        consumer: r.bytes()?.into(),
        delivered_ms: r.u64()?,
        deliveries: r.u64()?,
    })
}

fn put_read(out: &mut Vec<u8>, read: Option<u64>) {
    out.extend_from_slice(&read.map_or(u64::MAX, |n| n).to_le_bytes());
}

fn read_read(r: &mut Reader<'_>) -> Result<Option<u64>, StorageError> {
    let n = r.u64()?;
    Ok((n != u64::MAX).then_some(n))
}

/// Appends the whole stream's encoding.
pub fn encode_stream(s: &StreamData, out: &mut Vec<u8>) {
    encode_stream_parts(s, true, out);
}

/// Appends the stream's encoding without its entries (they are kept in
/// pieces); [`decode_stream`] reads it as a stream with no entries.
pub(crate) fn encode_stream_head(s: &StreamData, out: &mut Vec<u8>) {
    encode_stream_parts(s, false, out);
}

/// Appends one entry as a stream's encoding holds it.
pub(crate) fn put_entry(out: &mut Vec<u8>, id: StreamId, f: &Fields) {
    id.put(out);
    put_fields(out, f);
}

/// Reads what [`put_entry`] wrote.
pub(crate) fn read_entry(r: &mut Reader<'_>) -> Result<(StreamId, Fields), StorageError> {
    Ok((StreamId::read(r)?, read_fields(r)?))
}

fn encode_stream_parts(s: &StreamData, entries: bool, out: &mut Vec<u8>) {
    s.last_id.put(out);
    out.extend_from_slice(&s.entries_added.to_le_bytes());
    s.max_deleted.put(out);
    if entries {
        out.extend_from_slice(&(s.entries.len() as u64).to_le_bytes());
        for (id, f) in &s.entries {
            put_entry(out, *id, f);
        }
    } else {
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    out.extend_from_slice(&(s.groups.len() as u32).to_le_bytes());
    for (name, g) in &s.groups {
        put_bytes(out, name);
        g.last_delivered.put(out);
        put_read(out, g.entries_read);
        out.extend_from_slice(&(g.consumers.len() as u32).to_le_bytes());
        for (cname, c) in &g.consumers {
            put_bytes(out, cname);
            out.extend_from_slice(&c.seen_ms.to_le_bytes());
            out.extend_from_slice(&c.active_ms.to_le_bytes());
        }
        out.extend_from_slice(&(g.pel.len() as u64).to_le_bytes());
        for (id, p) in &g.pel {
            id.put(out);
            put_pending(out, p);
        }
    }
}

/// Decodes what [`encode_stream`] wrote.
pub fn decode_stream(r: &mut Reader<'_>) -> Result<StreamData, StorageError> {
    let mut s = StreamData {
        last_id: StreamId::read(r)?,
        entries_added: r.u64()?,
        max_deleted: StreamId::read(r)?,
        ..StreamData::default()
    };
    for _ in 0..r.u64()? {
        let id = StreamId::read(r)?;
        let f = read_fields(r)?;
        s.insert(id, f);
    }
    for _ in 0..r.u32()? {
        let name: Box<[u8]> = r.bytes()?.into();
        let mut g = Group {
            last_delivered: StreamId::read(r)?,
            entries_read: read_read(r)?,
            ..Group::default()
        };
        for _ in 0..r.u32()? {
            let cname: Box<[u8]> = r.bytes()?.into();
            let c = Consumer {
                seen_ms: r.u64()?,
                active_ms: r.u64()?,
                pending: BTreeSet::new(),
            };
            g.consumers.insert(cname, c);
        }
        for _ in 0..r.u64()? {
            let id = StreamId::read(r)?;
            let p = read_pending(r)?;
            g.add_pending(id, p);
        }
        s.groups.insert(name, g);
    }
    Ok(s)
}

/// Appends a list of ops.
pub fn encode_ops(ops: &[StreamOp], out: &mut Vec<u8>) {
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            StreamOp::Add(id, f) => {
                out.push(0);
                id.put(out);
                put_fields(out, f);
            }
            StreamOp::Del(id) => {
                out.push(1);
                id.put(out);
            }
            StreamOp::Meta {
                last_id,
                entries_added,
                max_deleted,
            } => {
                out.push(2);
                last_id.put(out);
                out.extend_from_slice(&entries_added.to_le_bytes());
                max_deleted.put(out);
            }
            StreamOp::GroupCursor(name, id, read) => {
                out.push(3);
                put_bytes(out, name);
                id.put(out);
                put_read(out, *read);
            }
            StreamOp::GroupDel(name) => {
                out.push(4);
                put_bytes(out, name);
            }
            StreamOp::ConsumerSet(g, c, seen, active) => {
                out.push(5);
                put_bytes(out, g);
                put_bytes(out, c);
                out.extend_from_slice(&seen.to_le_bytes());
                out.extend_from_slice(&active.to_le_bytes());
            }
            StreamOp::ConsumerDel(g, c) => {
                out.push(6);
                put_bytes(out, g);
                put_bytes(out, c);
            }
            StreamOp::PendingSet(g, id, p) => {
                out.push(7);
                put_bytes(out, g);
                id.put(out);
                put_pending(out, p);
            }
            StreamOp::PendingDel(g, id) => {
                out.push(8);
                put_bytes(out, g);
                id.put(out);
            }
        }
    }
}

/// Decodes what [`encode_ops`] wrote.
pub fn decode_ops(r: &mut Reader<'_>) -> Result<Vec<StreamOp>, StorageError> {
    let n = r.u32()? as usize;
    let mut ops = Vec::with_capacity(n.min(1 << 12));
    for _ in 0..n {
        ops.push(match r.u8()? {
            0 => StreamOp::Add(StreamId::read(r)?, read_fields(r)?),
            1 => StreamOp::Del(StreamId::read(r)?),
            2 => StreamOp::Meta {
                last_id: StreamId::read(r)?,
                entries_added: r.u64()?,
                max_deleted: StreamId::read(r)?,
            },
            3 => StreamOp::GroupCursor(r.bytes()?.into(), StreamId::read(r)?, read_read(r)?),
            4 => StreamOp::GroupDel(r.bytes()?.into()),
            5 => StreamOp::ConsumerSet(r.bytes()?.into(), r.bytes()?.into(), r.u64()?, r.u64()?),
            6 => StreamOp::ConsumerDel(r.bytes()?.into(), r.bytes()?.into()),
            7 => StreamOp::PendingSet(r.bytes()?.into(), StreamId::read(r)?, read_pending(r)?),
            8 => StreamOp::PendingDel(r.bytes()?.into(), StreamId::read(r)?),
            other => {
                return Err(StorageError::Corrupt {
                    what: format!("unknown stream op {other}"),
                })
            }
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &str) -> Fields {
        vec![Box::from(b"f".as_slice()), Box::from(s.as_bytes())].into_boxed_slice()
    }

    #[test]
    fn ops_replay_to_the_same_stream_twice() {
        let id = |ms| StreamId { ms, seq: 0 };
        let ops = vec![
            StreamOp::Add(id(1), fields("a")),
            StreamOp::Add(id(2), fields("b")),
            StreamOp::Meta {
                last_id: id(2),
                entries_added: 2,
                max_deleted: StreamId::MIN,
            },
            StreamOp::GroupCursor(b"g"[..].into(), id(1), Some(1)),
            StreamOp::PendingSet(
                b"g"[..].into(),
                id(1),
                Pending {
                    consumer: b"c"[..].into(),
                    delivered_ms: 5,
                    deliveries: 1,
                },
            ),
            StreamOp::Del(id(2)),
        ];
        let mut buf = Vec::new();
        encode_ops(&ops, &mut buf);
        let decoded = decode_ops(&mut Reader { buf: &buf, pos: 0 }).unwrap();
        assert_eq!(decoded, ops);
        let mut once = StreamData::new();
        for op in ops.clone() {
            once.apply(op);
        }
        let mut twice = once.clone();
        for op in ops {
            twice.apply(op);
        }
        assert_eq!(once, twice);
        assert_eq!(once.len(), 1);
        assert_eq!(once.groups[&b"g"[..]].consumers[&b"c"[..]].pending.len(), 1);
        let mut whole = Vec::new();
        encode_stream(&once, &mut whole);
        let back = decode_stream(&mut Reader {
            buf: &whole,
            pos: 0,
        })
        .unwrap();
        assert_eq!(back, once);
    }
}
