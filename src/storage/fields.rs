//! A hash's fields, in one of two layouts:
//! - **packed**: up to [`PACKED_FIELDS`] fields whose names and values are
//!   at most [`PACKED_LEN`] bytes each, as length-prefixed pairs in one
//!   buffer sized to fit. A 10-field feature vector costs one allocation
//!   instead of twenty-one, and a lookup scans at most a few KiB;
//! - **table**: a hash table of boxed fields and values, O(1) per field.
//!
//! A packed map turns into a table when it outgrows either limit, and
//! stays one (as in Redis). Both keep a running count of their bytes, so
//! charging a hash against `maxmemory` costs O(1) however many fields it
//! has.

use std::collections::HashMap;

use super::types::alloc_size;

/// Most fields a packed map holds (Redis's `hash-max-listpack-entries`).
pub const PACKED_FIELDS: usize = 128;

/// Longest field or value a packed map holds (`hash-max-listpack-value`).
pub const PACKED_LEN: usize = 64;

/// A hash's fields.
#[derive(Debug, Clone)]
pub struct FieldMap {
    repr: Repr,
    len: usize,
    /// For a table: its buffers' bytes (rounded to the allocator's 16).
    bytes: usize,
}

#[derive(Debug, Clone)]
enum Repr {
    /// `[field len][field][value len][value]`, one byte per length.
    Packed(Vec<u8>),
    Table(Box<HashMap<Box<[u8]>, Box<[u8]>>>),
}

impl Default for FieldMap {
    fn default() -> FieldMap {
        FieldMap {
            repr: Repr::Packed(Vec::new()),
            len: 0,
            bytes: 0,
        }
    }
}

impl PartialEq for FieldMap {
    fn eq(&self, other: &FieldMap) -> bool {
        self.len == other.len && self.iter().all(|(f, v)| other.get(f) == Some(v))
    }
}

impl Eq for FieldMap {}

fn packable(b: &[u8]) -> bool {
    b.len() <= PACKED_LEN
}

/// The pairs of a packed buffer, with each pair's offset.
fn pairs(buf: &[u8]) -> impl Iterator<Item = (usize, &[u8], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let start = at;
        let flen = buf[at] as usize;
        let field = &buf[at + 1..at + 1 + flen];
        at += 1 + flen;
        let vlen = buf[at] as usize;
        let value = &buf[at + 1..at + 1 + vlen];
        at += 1 + vlen;
        Some((start, field, value))
    })
}

impl FieldMap {
    /// An empty map.
    pub fn new() -> FieldMap {
        FieldMap::default()
    }

    /// An empty map with room for `n` fields.
    pub fn with_capacity(n: usize) -> FieldMap {
        if n <= PACKED_FIELDS {
            return FieldMap::new();
        }
        FieldMap {
            repr: Repr::Table(Box::new(HashMap::with_capacity(n))),
            len: 0,
            bytes: 0,
        }
    }

    /// Sets `field`; returns the previous value.
    pub fn insert(&mut self, field: Box<[u8]>, value: Box<[u8]>) -> Option<Box<[u8]>> {
        if let Repr::Packed(buf) = &mut self.repr {
            let found = pairs(buf).find(|(_, f, _)| *f == &field[..]);
            let fits = packable(&field) && packable(&value);
            if let Some((at, _, old)) = found {
                if fits {
                    let old: Box<[u8]> = old.into();
                    let vat = at + 1 + field.len();
                    let end = vat + 1 + old.len();
                    let mut pair = Vec::with_capacity(1 + value.len());
                    pair.push(value.len() as u8);
                    pair.extend_from_slice(&value);
                    buf.splice(vat..end, pair);
                    buf.shrink_to_fit();
                    return Some(old);
                }
            } else if fits && self.len < PACKED_FIELDS {
                buf.reserve_exact(2 + field.len() + value.len());
                buf.push(field.len() as u8);
                buf.extend_from_slice(&field);
                buf.push(value.len() as u8);
                buf.extend_from_slice(&value);
                self.len += 1;
                return None;
            }
            self.to_table();
        }
        let Repr::Table(map) = &mut self.repr else {
            unreachable!("a packed map that can't take a field became a table")
        };
        let (flen, vlen) = (field.len(), value.len());
        let old = map.insert(field, value);
        match &old {
            // An overwrite keeps the map's original field buffer.
            Some(old) => self.bytes = self.bytes + alloc_size(vlen) - alloc_size(old.len()),
            None => {
                self.bytes += alloc_size(flen) + alloc_size(vlen);
                self.len += 1;
            }
        }
        old
    }

    fn to_table(&mut self) {
        let mut map = HashMap::with_capacity(self.len + 1);
        let mut bytes = 0;
        if let Repr::Packed(buf) = &self.repr {
            for (_, f, v) in pairs(buf) {
                bytes += alloc_size(f.len()) + alloc_size(v.len());
                map.insert(f.into(), v.into());
            }
        }
        self.repr = Repr::Table(Box::new(map));
        self.bytes = bytes;
    }

    /// Removes `field`; returns its value.
    pub fn remove(&mut self, field: &[u8]) -> Option<Box<[u8]>> {
        match &mut self.repr {
            Repr::Packed(buf) => {
                let (at, _, v) = pairs(buf).find(|(_, f, _)| *f == field)?;
                let old: Box<[u8]> = v.into();
                buf.drain(at..at + 2 + field.len() + old.len());
                buf.shrink_to_fit();
                self.len -= 1;
                Some(old)
            }
            Repr::Table(map) => {
                let (k, v) = map.remove_entry(field)?;
                self.bytes -= alloc_size(k.len()) + alloc_size(v.len());
                self.len -= 1;
                Some(v)
            }
        }
    }

    /// The value of `field`.
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match &self.repr {
            Repr::Packed(buf) => pairs(buf).find(|(_, f, _)| *f == field).map(|(_, _, v)| v),
            Repr::Table(map) => map.get(field).map(|v| &v[..]),
        }
    }

    /// Whether `field` is set.
    pub fn contains_key(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the fields are packed in one buffer (Redis's `listpack`).
    pub fn is_packed(&self) -> bool {
        matches!(self.repr, Repr::Packed(_))
    }

    /// All fields and values, in no particular order.
    pub fn iter(&self) -> Fields<'_> {
        match &self.repr {
            Repr::Packed(buf) => Fields::Packed(buf),
            Repr::Table(map) => Fields::Table(map.iter()),
        }
    }

    /// Heap bytes, as charged against `maxmemory`.
    pub(super) fn heap_size(&self) -> usize {
        match &self.repr {
            Repr::Packed(buf) => alloc_size(buf.capacity()),
            Repr::Table(map) => {
                alloc_size(std::mem::size_of::<HashMap<Box<[u8]>, Box<[u8]>>>())
                    + alloc_size(map.capacity() * (32 + 1))
                    + self.bytes
            }
        }
    }
}

/// The fields and values of a [`FieldMap`].
pub enum Fields<'a> {
    /// What is left of a packed buffer.
    Packed(&'a [u8]),
    /// A table's iterator.
    Table(std::collections::hash_map::Iter<'a, Box<[u8]>, Box<[u8]>>),
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Fields::Packed(rest) => {
                let (_, f, v) = pairs(rest).next()?;
                *rest = &rest[2 + f.len() + v.len()..];
                Some((f, v))
            }
            Fields::Table(it) => it.next().map(|(f, v)| (&f[..], &v[..])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Box<[u8]> {
        s.as_bytes().into()
    }

    #[test]
    fn packed_maps_set_overwrite_and_remove_like_tables() {
        let mut m = FieldMap::new();
        for i in 0..10 {
            assert_eq!(m.insert(b(&format!("f{i}")), b(&format!("v{i}"))), None);
        }
        assert!(m.is_packed());
        assert_eq!(m.len(), 10);
        assert_eq!(
            m.insert(b("f3"), b("longer value")).as_deref(),
            Some(&b"v3"[..])
        );
        assert_eq!(m.get(b"f3"), Some(&b"longer value"[..]));
        assert_eq!(m.get(b"f4"), Some(&b"v4"[..]));
        assert_eq!(m.remove(b"f0").as_deref(), Some(&b"v0"[..]));
        assert_eq!(m.remove(b"f0"), None);
        assert_eq!(m.len(), 9);
        assert!(!m.contains_key(b"f0"));
        let mut seen: Vec<(Vec<u8>, Vec<u8>)> =
            m.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect();
        seen.sort();
        assert_eq!(seen.len(), 9);
        assert_eq!(seen[0], (b"f1".to_vec(), b"v1".to_vec()));
        // Exactly what it holds: 9 pairs of 2 length bytes and their text.
        assert_eq!(
            m.heap_size(),
            alloc_size(2 * 9 + 2 * 8 + 2 * 8 + "longer value".len())
        );
    }

    #[test]
    fn a_long_value_or_many_fields_turn_a_packed_map_into_a_table() {
        let mut m = FieldMap::new();
        m.insert(b("a"), b("1"));
        m.insert(b("b"), vec![b'x'; PACKED_LEN + 1].into_boxed_slice());
        assert!(!m.is_packed());
        assert_eq!(m.get(b"a"), Some(&b"1"[..]));
        assert_eq!(m.get(b"b").map(<[u8]>::len), Some(PACKED_LEN + 1));
        assert_eq!(m.len(), 2);

        let mut many = FieldMap::new();
        for i in 0..=PACKED_FIELDS {
            many.insert(b(&i.to_string()), b("v"));
        }
        assert!(!many.is_packed());
        assert_eq!(many.len(), PACKED_FIELDS + 1);
        assert_eq!(many.get(b"0"), Some(&b"v"[..]));

        // An overwrite that no longer fits moves the field to a table too.
        let mut grow = FieldMap::new();
        grow.insert(b("f"), b("short"));
        grow.insert(b("f"), vec![b'y'; 100].into_boxed_slice());
        assert!(!grow.is_packed());
        assert_eq!(grow.len(), 1);
        assert_eq!(grow.get(b"f").map(<[u8]>::len), Some(100));
        assert_eq!(grow, {
            let mut t = FieldMap::with_capacity(PACKED_FIELDS + 1);
            t.insert(b("f"), vec![b'y'; 100].into_boxed_slice());
            t
        });
    }
}
