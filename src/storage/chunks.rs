//! Large collections on disk in pieces.
//!
//! A hash, set, sorted set or stream with at least `chunk_min_elements`
//! elements is stored in the disk tier as a small *head* under its key
//! (the record's metadata and the layout) and its elements in *pieces*
//! under separate keys. The memory entry remembers the layout the disk
//! holds and which pieces a change touched since, so a checkpoint or a
//! spill writes the head and those pieces only: an HSET, ZADD or XADD on a
//! million-element key costs one piece on disk, not the whole key.
//!
//! Layouts:
//! - hashes, sets and sorted sets are *hashed*: an element lives in piece
//!   `xxh3(element) >> (64 - bits)`, with `bits` chosen so a piece holds
//!   about [`PIECE_TARGET`] elements; when the collection grows or shrinks
//!   8x past that, the next write lays it out afresh (amortised O(1) per
//!   element);
//! - streams are *ranged*: piece i holds the entries with IDs in
//!   `[starts[i], starts[i+1])`, so appends touch the last piece only. A
//!   piece that grows past twice the target is split when written, and an
//!   emptied one is dropped.
//!
//! Head and pieces of one key are always written in one atomic batch.

use std::collections::BTreeSet;

use super::error::StorageError;
use super::sets::{SetMembers, SortedSet};
#[cfg(test)]
use super::streams::StreamData;
use super::streams::{self, StreamId, StreamOp};
use super::types::{put_bytes, FieldMap, Reader, Value};
use super::Change;

/// Set on a head record's type code.
pub(crate) const CHUNKED: u8 = 0x80;

/// Elements a piece is laid out to hold.
pub(crate) const PIECE_TARGET: usize = 256;

/// A piece's id, as the disk orders it: `(bucket, 0)` in a hashed layout,
/// the first stream ID of its range in a ranged one.
pub(crate) type PieceId = (u64, u64);

/// How a collection's elements are spread over pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Element e lives in piece `xxh3(e) >> (64 - bits)`.
    Hashed { bits: u8 },
    /// Piece i holds IDs in `[starts[i], starts[i+1])`; `starts[0]` is
    /// the smallest ID.
    Ranges { starts: Vec<StreamId> },
}

/// What the disk tier holds of a chunked key, and what changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunked {
    /// The layout of the pieces on disk.
    pub layout: Layout,
    /// Pieces changed in memory since they were written; `None` means
    /// the key must be written whole (its old pieces dropped first).
    pub dirty: Option<BTreeSet<PieceId>>,
}

impl Chunked {
    /// A clean state for `layout`.
    pub fn clean(layout: Layout) -> Box<Chunked> {
        Box::new(Chunked {
            layout,
            dirty: Some(BTreeSet::new()),
        })
    }

    /// Notes that `change` was made to the value, which now is `value`.
    pub fn note(&mut self, change: &Change, value: &Value) {
        let Some(dirty) = &mut self.dirty else {
            return;
        };
        let ok = match (change, value, &self.layout) {
            (Change::None, _, _) => true,
            (
                Change::Fields { set, removed },
                Value::Hash(_) | Value::Set(_) | Value::ZSet(_),
                Layout::Hashed { bits },
            ) => {
                for f in set.iter().chain(removed) {
                    dirty.insert((bucket(f, *bits), 0));
                }
                true
            }
            (Change::Stream(ops), Value::Stream(_), Layout::Ranges { starts }) => {
                for op in ops {
                    if let StreamOp::Add(id, _) | StreamOp::Del(id) = op {
                        dirty.insert(piece_of(starts, *id));
                    }
                }
                true
            }
            _ => false,
        };
        if !ok {
            self.dirty = None;
        }
    }
}

/// Elements of a value that can be chunked.
pub(crate) fn elements(value: &Value) -> Option<usize> {
    match value {
        Value::Hash(m) => Some(m.len()),
        Value::Set(s) => Some(s.len()),
        Value::ZSet(z) => Some(z.len()),
        Value::Stream(s) => Some(s.len()),
        Value::Str(_) | Value::List(_) => None,
    }
}

fn bucket(element: &[u8], bits: u8) -> u64 {
    xxhash_rust::xxh3::xxh3_64(element) >> (64 - u32::from(bits))
}

fn piece_of(starts: &[StreamId], id: StreamId) -> PieceId {
    let i = starts.partition_point(|s| *s <= id).saturating_sub(1);
    let s = starts.get(i).copied().unwrap_or(StreamId::MIN);
    (s.ms, s.seq)
}

fn bits_for(n: usize) -> u8 {
    let pieces = n.div_ceil(PIECE_TARGET).max(2);
    (usize::BITS - (pieces - 1).leading_zeros()).clamp(1, 20) as u8
}

/// A fresh layout for `value`.
pub(crate) fn layout_for(value: &Value) -> Layout {
    match value {
        Value::Stream(s) => {
            let mut starts = vec![StreamId::MIN];
            starts.extend(
                s.entries
                    .keys()
                    .enumerate()
                    .filter(|(i, _)| *i > 0 && i % PIECE_TARGET == 0)
                    .map(|(_, id)| *id),
            );
            Layout::Ranges { starts }
        }
        other => Layout::Hashed {
            bits: bits_for(elements(other).unwrap_or(0)),
        },
    }
}

/// Whether writing only the dirty pieces of `value` under `layout` keeps
/// the pieces near their target size; if not, the key is laid out afresh.
pub(crate) fn still_fits(layout: &Layout, value: &Value) -> bool {
    let n = elements(value).unwrap_or(0);
    match layout {
        Layout::Hashed { bits } => {
            let per = n >> bits;
            per <= PIECE_TARGET * 8 && (*bits <= 1 || per * 8 >= PIECE_TARGET)
        }
        Layout::Ranges { starts } => starts.len() <= n / (PIECE_TARGET / 8) + 4,
    }
}

/// The pieces to write: for each dirty piece, its new contents (`None`
/// when it is now empty and its key goes). A ranged layout may gain or
/// lose starts on the way; `layout` is updated to match.
pub(crate) fn dirty_pieces(
    layout: &mut Layout,
    value: &Value,
    dirty: &BTreeSet<PieceId>,
) -> Vec<(PieceId, Option<Vec<u8>>)> {
    let mut out = Vec::with_capacity(dirty.len());
    match (layout, value) {
        (Layout::Hashed { bits }, v) => {
            let bits = *bits;
            let mut bufs: std::collections::BTreeMap<u64, (u32, Vec<u8>)> =
                dirty.iter().map(|(b, _)| (*b, (0, Vec::new()))).collect();
            for_each_element(v, |e, put| {
                if let Some((n, buf)) = bufs.get_mut(&bucket(e, bits)) {
                    *n += 1;
                    put(buf);
                }
            });
            for (b, (n, buf)) in bufs {
                out.push(((b, 0), (n > 0).then(|| framed(n, &buf))));
            }
        }
        (Layout::Ranges { starts }, Value::Stream(s)) => {
            let mut new_starts: BTreeSet<StreamId> = starts.iter().copied().collect();
            for &(ms, seq) in dirty {
                let start = StreamId { ms, seq };
                let end = new_starts.range(start..).nth(1).copied();
                let ids: Vec<StreamId> = match end {
                    Some(end) => s.entries.range(start..end).map(|(id, _)| *id).collect(),
                    None => s.entries.range(start..).map(|(id, _)| *id).collect(),
                };
                if ids.is_empty() {
                    out.push(((ms, seq), None));
                    if start != StreamId::MIN {
                        new_starts.remove(&start);
                    }
                    continue;
                }
                // Split a piece grown past twice the target.
                let parts: Vec<&[StreamId]> = if ids.len() > 2 * PIECE_TARGET {
                    ids.chunks(PIECE_TARGET).collect()
                } else {
                    vec![&ids[..]]
                };
                for (i, part) in parts.into_iter().enumerate() {
                    let first = if i == 0 { start } else { part[0] };
                    new_starts.insert(first);
                    let mut buf = Vec::new();
                    for id in part {
                        if let Some(f) = s.entries.get(id) {
                            streams::put_entry(&mut buf, *id, f);
                        }
                    }
                    out.push(((first.ms, first.seq), Some(framed(part.len() as u32, &buf))));
                }
            }
            *starts = new_starts.into_iter().collect();
        }
        (Layout::Ranges { .. }, _) => {}
    }
    out
}

/// Every piece of `value` under `layout`.
pub(crate) fn all_pieces(layout: &Layout, value: &Value) -> Vec<(PieceId, Vec<u8>)> {
    match (layout, value) {
        (Layout::Hashed { bits }, v) => {
            let mut bufs: std::collections::BTreeMap<u64, (u32, Vec<u8>)> = Default::default();
            for_each_element(v, |e, put| {
                let (n, buf) = bufs.entry(bucket(e, *bits)).or_default();
                *n += 1;
                put(buf);
            });
            bufs.into_iter()
                .map(|(b, (n, buf))| ((b, 0), framed(n, &buf)))
                .collect()
        }
        (Layout::Ranges { starts }, Value::Stream(s)) => {
            let mut out = Vec::with_capacity(starts.len());
            for (i, start) in starts.iter().enumerate() {
                let mut buf = Vec::new();
                let mut n = 0u32;
                let range = match starts.get(i + 1) {
                    Some(end) => s.entries.range(*start..*end),
                    None => s.entries.range(*start..),
                };
                for (id, f) in range {
                    streams::put_entry(&mut buf, *id, f);
                    n += 1;
                }
                if n > 0 {
                    out.push(((start.ms, start.seq), framed(n, &buf)));
                }
            }
            out
        }
        (Layout::Ranges { .. }, _) => Vec::new(),
    }
}

fn framed(n: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Calls `f` with each element's identity and a writer of its encoding.
fn for_each_element(value: &Value, mut f: impl FnMut(&[u8], &dyn Fn(&mut Vec<u8>))) {
    match value {
        Value::Hash(map) => {
            for (k, v) in map.iter() {
                f(k, &|buf| {
                    put_bytes(buf, k);
                    put_bytes(buf, v);
                });
            }
        }
        Value::Set(set) => {
            for m in set.iter() {
                f(m, &|buf| put_bytes(buf, m));
            }
        }
        Value::ZSet(z) => {
            for (m, score) in z.iter() {
                f(m, &|buf| {
                    buf.extend_from_slice(&score.to_le_bytes());
                    put_bytes(buf, m);
                });
            }
        }
        Value::Str(_) | Value::List(_) | Value::Stream(_) => {}
    }
}

/// Appends the layout-and-value part of a head record (after the common
/// record header, whose type code carries [`CHUNKED`]).
pub(crate) fn encode_head(layout: &Layout, value: &Value, out: &mut Vec<u8>) {
    match (layout, value) {
        (Layout::Hashed { bits }, _) => out.push(*bits),
        (Layout::Ranges { starts }, Value::Stream(s)) => {
            out.extend_from_slice(&(starts.len() as u32).to_le_bytes());
            for id in starts {
                out.extend_from_slice(&id.ms.to_le_bytes());
                out.extend_from_slice(&id.seq.to_le_bytes());
            }
            streams::encode_stream_head(s, out);
        }
        (Layout::Ranges { .. }, _) => {}
    }
}

/// Rebuilds a value from its head (the part [`encode_head`] wrote, for
/// type code `code` without the flag) and its pieces, in key order.
pub(crate) fn decode(
    code: u8,
    head: &mut Reader<'_>,
    pieces: impl IntoIterator<Item = Result<(PieceId, Vec<u8>), StorageError>>,
) -> Result<(Value, Layout), StorageError> {
    let corrupt = |what: String| StorageError::Corrupt { what };
    if code == 5 {
        let n = head.u32()? as usize;
        let mut starts = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            starts.push(StreamId {
                ms: head.u64()?,
                seq: head.u64()?,
            });
        }
        if starts.first() != Some(&StreamId::MIN) || starts.windows(2).any(|w| w[0] >= w[1]) {
            return Err(corrupt(
                "a chunked stream's piece ranges are out of order".into(),
            ));
        }
        let mut s = streams::decode_stream(head)?;
        for piece in pieces {
            let (_, bytes) = piece?;
            let mut r = Reader {
                buf: &bytes,
                pos: 0,
            };
            for _ in 0..r.u32()? {
                let (id, f) = streams::read_entry(&mut r)?;
                s.insert(id, f);
            }
        }
        return Ok((Value::Stream(Box::new(s)), Layout::Ranges { starts }));
    }
    let bits = head.u8()?;
    if !(1..=20).contains(&bits) {
        return Err(corrupt(format!(
            "a chunked collection has {bits}-bit pieces"
        )));
    }
    let mut value = match code {
        1 => Value::Hash(Box::default()),
        3 => Value::Set(Box::new(SetMembers::new())),
        4 => Value::ZSet(Box::new(SortedSet::new())),
        other => return Err(corrupt(format!("type {other} is never chunked"))),
    };
    for piece in pieces {
        let ((b, _), bytes) = piece?;
        if b >> bits != 0 {
            return Err(corrupt(format!("piece {b} past a {bits}-bit layout")));
        }
        let mut r = Reader {
            buf: &bytes,
            pos: 0,
        };
        for _ in 0..r.u32()? {
            match &mut value {
                Value::Hash(map) => {
                    let (f, v) = (r.bytes()?, r.bytes()?);
                    FieldMap::insert(map, f.into(), v.into());
                }
                Value::Set(set) => {
                    set.insert(r.bytes()?.into());
                }
                Value::ZSet(z) => {
                    let score = r.f64()?;
                    z.insert(r.bytes()?, score);
                }
                _ => unreachable!("chosen above"),
            }
        }
    }
    Ok((value, Layout::Hashed { bits }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: u64) -> Value {
        let mut s = StreamData::new();
        for ms in 1..=n {
            let f: streams::Fields =
                vec![Box::from(&b"v"[..]), Box::from(ms.to_string().as_bytes())].into_boxed_slice();
            s.insert(StreamId { ms, seq: 0 }, f);
        }
        Value::Stream(Box::new(s))
    }

    fn rebuild(code: u8, layout: &Layout, value: &Value, pieces: Vec<(PieceId, Vec<u8>)>) -> Value {
        let mut head = Vec::new();
        encode_head(layout, value, &mut head);
        let (back, back_layout) = decode(
            code,
            &mut Reader { buf: &head, pos: 0 },
            pieces.into_iter().map(Ok),
        )
        .unwrap();
        assert_eq!(&back_layout, layout);
        back
    }

    #[test]
    fn a_hash_round_trips_through_its_pieces() {
        let mut map = FieldMap::new();
        for i in 0..3000 {
            map.insert(
                format!("f{i}").into_bytes().into(),
                vec![b'x'; i % 7].into(),
            );
        }
        let value = Value::Hash(Box::new(map));
        let layout = layout_for(&value);
        assert_eq!(
            layout,
            Layout::Hashed { bits: 4 },
            "3000 fields, ~188 a piece"
        );
        let pieces = all_pieces(&layout, &value);
        assert_eq!(pieces.len(), 16);
        assert_eq!(rebuild(1, &layout, &value, pieces), value);
    }

    #[test]
    fn a_field_change_dirties_one_piece() {
        let mut map = FieldMap::new();
        for i in 0..2000 {
            map.insert(format!("f{i}").into_bytes().into(), b"v"[..].into());
        }
        let mut value = Value::Hash(Box::new(map));
        let mut c = Chunked::clean(layout_for(&value));
        let Value::Hash(m) = &mut value else {
            unreachable!()
        };
        m.insert(b"f7"[..].into(), b"new"[..].into());
        let change = Change::Fields {
            set: vec![b"f7"[..].into()],
            removed: vec![],
        };
        c.note(&change, &value);
        let dirty = c.dirty.clone().unwrap();
        assert_eq!(dirty.len(), 1);
        let written = dirty_pieces(&mut c.layout, &value, &dirty);
        assert_eq!(written.len(), 1);
        // The written piece holds exactly the elements of that bucket.
        let all = all_pieces(&c.layout, &value);
        let same = all.iter().find(|(id, _)| *id == written[0].0).unwrap();
        assert_eq!(Some(&same.1), written[0].1.as_ref());
        // A whole-value change forgets the pieces.
        c.note(&Change::Full, &value);
        assert_eq!(c.dirty, None);
    }

    #[test]
    fn appends_touch_the_last_range_and_split_it() {
        let mut value = stream(1000);
        let mut layout = layout_for(&value);
        let Layout::Ranges { starts } = &layout else {
            unreachable!()
        };
        assert_eq!(starts.len(), 4, "1000 entries in pieces of 256");
        let mut c = Chunked {
            layout: layout.clone(),
            dirty: Some(BTreeSet::new()),
        };
        let Value::Stream(s) = &mut value else {
            unreachable!()
        };
        let mut ops = Vec::new();
        for ms in 1001..=1600 {
            let f: streams::Fields = vec![Box::from(&b"v"[..])].into_boxed_slice();
            s.insert(StreamId { ms, seq: 0 }, f.clone());
            ops.push(StreamOp::Add(StreamId { ms, seq: 0 }, f));
        }
        c.note(&Change::Stream(ops), &value);
        let dirty = c.dirty.clone().unwrap();
        assert_eq!(dirty, BTreeSet::from([(769, 0)]), "only the tail piece");
        let written = dirty_pieces(&mut layout, &value, &dirty);
        // 832 entries from 769 on: split into pieces of 256.
        assert_eq!(written.len(), 4);
        assert!(written.iter().all(|(_, b)| b.is_some()));
        let Layout::Ranges { starts } = &layout else {
            unreachable!()
        };
        assert_eq!(starts.len(), 7);
        assert!(still_fits(&layout, &value));
        // Rebuilt from the old untouched pieces and the written ones.
        let mut pieces: std::collections::BTreeMap<PieceId, Vec<u8>> =
            all_pieces(&layout_for(&stream(1000)), &stream(1000))
                .into_iter()
                .collect();
        for (id, b) in written {
            pieces.insert(id, b.unwrap());
        }
        assert_eq!(
            rebuild(5, &layout, &value, pieces.into_iter().collect()),
            value
        );
    }

    #[test]
    fn an_emptied_range_is_dropped() {
        let mut value = stream(600);
        let mut layout = layout_for(&value);
        let Value::Stream(s) = &mut value else {
            unreachable!()
        };
        let mut ops = Vec::new();
        for ms in 1..=300 {
            s.remove(StreamId { ms, seq: 0 });
            ops.push(StreamOp::Del(StreamId { ms, seq: 0 }));
        }
        let mut c = Chunked::clean(layout.clone());
        c.note(&Change::Stream(ops), &value);
        let dirty = c.dirty.clone().unwrap();
        assert_eq!(dirty.len(), 2);
        let written = dirty_pieces(&mut layout, &value, &dirty);
        assert_eq!(written[0], ((0, 0), None), "the first piece emptied");
        let Layout::Ranges { starts } = &layout else {
            unreachable!()
        };
        assert_eq!(starts[0], StreamId::MIN, "the first start stays");
        assert_eq!(starts.len(), 3);
    }
}
