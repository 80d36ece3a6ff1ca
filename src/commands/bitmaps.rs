//! Bitmap commands: strings addressed by bit. Bit 0 is the most significant
//! bit of the first byte, as in Redis. Edits log only the bytes they change
//! (see [`Change::Range`](crate::storage::Change)).

use std::ops::Range;

use bytes::Bytes;

use super::reply::Reply;
use super::strings::{read_bytes, update_bytes};
use super::{err, int_arg, is, CmdResult, Ctx};
use crate::storage::{Record, Value};

fn bad_offset() -> Reply {
    Reply::err("ERR bit offset is not an integer or out of range")
}

/// A bit offset, within 2^32 bits and the configured string limit.
fn bit_offset(ctx: &Ctx<'_>, arg: &[u8]) -> Result<u64, Reply> {
    let n = std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad_offset)?;
    if n >= 1 << 32 || (n >> 3) as usize >= ctx.max_bulk() {
        return Err(bad_offset());
    }
    Ok(n)
}

fn get_bit(v: &[u8], bit: u64) -> u8 {
    v.get((bit >> 3) as usize)
        .map_or(0, |b| (b >> (7 - (bit & 7))) & 1)
}

fn put_bit(v: &mut Vec<u8>, bit: u64, on: bool) {
    let byte = (bit >> 3) as usize;
    if v.len() <= byte {
        v.resize(byte + 1, 0);
    }
    let mask = 1 << (7 - (bit & 7));
    if on {
        v[byte] |= mask;
    } else {
        v[byte] &= !mask;
    }
}

pub fn setbit(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let bit = bit_offset(ctx, &a[2])?;
    let on = match &a[3][..] {
        b"1" => true,
        b"0" => false,
        _ => return Err(Reply::err("ERR bit is not an integer or out of range")),
    };
    update_bytes(ctx, &a[1], |v, _| {
        let old = get_bit(v, bit);
        put_bit(v, bit, on);
        let byte = (bit >> 3) as usize;
        Ok((Reply::Int(old.into()), Some(byte..byte + 1)))
    })
}

pub fn getbit(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let bit = bit_offset(ctx, &a[2])?;
    read_bytes(ctx, &a[1], |v| Reply::Int(get_bit(v, bit).into()))
}

/// Resolves Redis's `start end` (negative from the end) against `total`
/// units; None for an empty range.
fn clamp_range(start: i64, end: i64, total: i64) -> Option<(u64, u64)> {
    let fix = |i: i64| if i < 0 { (total + i).max(0) } else { i };
    let (start, end) = (fix(start), fix(end).min(total - 1));
    (total > 0 && start <= end).then_some((start as u64, end as u64))
}

/// A start and optional end, and whether they count bits.
type RangeArgs = (Option<(i64, Option<i64>)>, bool);

/// `[start end [BYTE|BIT]]` from `at`: the range and whether it is in bits.
fn range_args(a: &[Bytes], at: usize) -> Result<RangeArgs, Reply> {
    let start = a.get(at).map(|s| int_arg(s)).transpose()?;
    let end = a.get(at + 1).map(|s| int_arg(s)).transpose()?;
    let bits = match a.get(at + 2) {
        None => false,
        Some(u) if is(u, "BIT") => true,
        Some(u) if is(u, "BYTE") => false,
        Some(_) => return Err(err::syntax()),
    };
    if a.len() > at + 3 {
        return Err(err::syntax());
    }
    Ok((start.map(|s| (s, end)), bits))
}

/// Set bits among bits `first..=last` of `v`.
fn count_bits(v: &[u8], first: u64, last: u64) -> u64 {
    let (fb, lb) = ((first >> 3) as usize, (last >> 3) as usize);
    if fb == lb {
        let byte = v[fb] << (first & 7) >> (first & 7);
        return u64::from((byte >> (7 - (last & 7))).count_ones());
    }
    let head = u64::from((v[fb] << (first & 7) >> (first & 7)).count_ones());
    let tail = u64::from((v[lb] >> (7 - (last & 7))).count_ones());
    let middle: u64 = v[fb + 1..lb]
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from(u64::from_ne_bytes(w).count_ones())
        })
        .sum();
    head + middle + tail
}

pub fn bitcount(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (range, bits) = range_args(a, 2)?;
    let range = match range {
        None => None,
        Some((s, Some(e))) => Some((s, e)),
        Some((_, None)) => return Err(err::syntax()),
    };
    read_bytes(ctx, &a[1], |v| {
        let total_bits = v.len() as i64 * 8;
        let span = match range {
            None => clamp_range(0, -1, total_bits),
            Some((s, e)) if bits => clamp_range(s, e, total_bits),
            Some((s, e)) => clamp_range(s, e, v.len() as i64).map(|(s, e)| (s * 8, e * 8 + 7)),
        };
        Reply::Int(span.map_or(0, |(s, e)| count_bits(v, s, e)) as i64)
    })
}

pub fn bitpos(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let want = match &a[2][..] {
        b"1" => 1u8,
        b"0" => 0u8,
        _ => return Err(Reply::err("ERR The bit argument must be 1 or 0.")),
    };
    let (range, bits) = range_args(a, 3)?;
    let end_given = matches!(range, Some((_, Some(_))));
    read_bytes(ctx, &a[1], |v| {
        if v.is_empty() {
            return Reply::Int(if want == 1 { -1 } else { 0 });
        }
        let (s, e) = match range {
            None => (0, -1),
            Some((s, e)) => (s, e.unwrap_or(-1)),
        };
        let span = if bits {
            clamp_range(s, e, v.len() as i64 * 8)
        } else {
            clamp_range(s, e, v.len() as i64).map(|(s, e)| (s * 8, e * 8 + 7))
        };
        let Some((first, last)) = span else {
            return Reply::Int(-1);
        };
        // Skip whole bytes that can't hold the bit, then look bit by bit.
        let skip = if want == 1 { 0x00 } else { 0xff };
        let mut i = first;
        while i <= last {
            if i & 7 == 0 && i + 7 <= last && v[(i >> 3) as usize] == skip {
                i += 8;
                continue;
            }
            if get_bit(v, i) == want {
                return Reply::Int(i as i64);
            }
            i += 1;
        }
        // Looking for a clear bit with no end given: the string reads as
        // padded with zeros, so the first bit past it is clear.
        if want == 0 && !end_given {
            Reply::Int(last as i64 + 1)
        } else {
            Reply::Int(-1)
        }
    })
}

pub fn bitop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        And,
        Or,
        Xor,
        Not,
    }
    let op = if is(&a[1], "AND") {
        Op::And
    } else if is(&a[1], "OR") {
        Op::Or
    } else if is(&a[1], "XOR") {
        Op::Xor
    } else if is(&a[1], "NOT") {
        Op::Not
    } else {
        return Err(err::syntax());
    };
    if op == Op::Not && a.len() != 4 {
        return Err(Reply::err(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    ctx.atomic(|ctx| {
        let mut sources = Vec::with_capacity(a.len() - 3);
        for key in &a[3..] {
            sources.push(read_bytes(ctx, key, <[u8]>::to_vec)?);
        }
        let len = sources.iter().map(Vec::len).max().unwrap_or(0);
        let mut out = vec![0u8; len];
        for (i, o) in out.iter_mut().enumerate() {
            let byte = |s: &Vec<u8>| s.get(i).copied().unwrap_or(0);
            *o = match op {
                Op::Not => !byte(&sources[0]),
                Op::And => sources.iter().map(byte).fold(0xff, |x, y| x & y),
                Op::Or => sources.iter().map(byte).fold(0, |x, y| x | y),
                Op::Xor => sources.iter().map(byte).fold(0, |x, y| x ^ y),
            };
        }
        ctx.write(&a[2], |cur| {
            let existed = cur.is_some();
            *cur = (len > 0).then(|| Record {
                value: Value::Str(out),
                expire_at_ms: None,
                version: Default::default(),
                written_secs: 0,
            });
            ((), existed || len > 0)
        })?;
        Ok(Reply::Int(len as i64))
    })
}

/// A BITFIELD integer type: signed or not, and its width in bits.
#[derive(Clone, Copy)]
struct Field {
    signed: bool,
    bits: u32,
}

impl Field {
    fn parse(arg: &[u8]) -> Result<Field, Reply> {
        let bad = || {
            Reply::err(
                "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
            )
        };
        let (signed, rest) = match arg.split_first() {
            Some((b'i' | b'I', rest)) => (true, rest),
            Some((b'u' | b'U', rest)) => (false, rest),
            _ => return Err(bad()),
        };
        let bits = std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&b| b >= 1 && b <= if signed { 64 } else { 63 })
            .ok_or_else(bad)?;
        Ok(Field { signed, bits })
    }

    fn min(self) -> i128 {
        if self.signed {
            -(1i128 << (self.bits - 1))
        } else {
            0
        }
    }

    fn max(self) -> i128 {
        if self.signed {
            (1i128 << (self.bits - 1)) - 1
        } else {
            (1i128 << self.bits) - 1
        }
    }

    /// `v` cut to this width (two's complement wrap-around).
    fn wrap(self, v: i128) -> i64 {
        let m = v.rem_euclid(1i128 << self.bits);
        if self.signed && m > self.max() {
            (m - (1i128 << self.bits)) as i64
        } else {
            m as i64
        }
    }

    /// Reads the field at bit `at`.
    fn get(self, v: &[u8], at: u64) -> i64 {
        let mut raw = 0u64;
        for i in 0..u64::from(self.bits) {
            raw = (raw << 1) | u64::from(get_bit(v, at + i));
        }
        if self.signed && self.bits < 64 && raw >> (self.bits - 1) & 1 == 1 {
            (raw | (u64::MAX << self.bits)) as i64
        } else {
            raw as i64
        }
    }

    /// Writes `value` (already in range) at bit `at`.
    fn set(self, v: &mut Vec<u8>, at: u64, value: i64) {
        let raw = value as u64;
        for i in 0..u64::from(self.bits) {
            let on = raw >> (u64::from(self.bits) - 1 - i) & 1 == 1;
            put_bit(v, at + i, on);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

enum FieldOp {
    Get,
    Set(i64),
    IncrBy(i64),
}

pub fn bitfield(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    bitfield_generic(ctx, a, false)
}

pub fn bitfield_ro(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    bitfield_generic(ctx, a, true)
}

fn bitfield_generic(ctx: &mut Ctx<'_>, a: &[Bytes], read_only: bool) -> CmdResult {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut i = 2;
    while i < a.len() {
        let word = &a[i];
        let takes = if is(word, "GET") {
            2
        } else if is(word, "SET") || is(word, "INCRBY") {
            3
        } else if is(word, "OVERFLOW") {
            1
        } else {
            return Err(err::syntax());
        };
        if i + takes >= a.len() {
            return Err(err::syntax());
        }
        if is(word, "OVERFLOW") {
            let how = &a[i + 1];
            overflow = if is(how, "WRAP") {
                Overflow::Wrap
            } else if is(how, "SAT") {
                Overflow::Sat
            } else if is(how, "FAIL") {
                Overflow::Fail
            } else {
                return Err(Reply::err("ERR Invalid OVERFLOW type specified"));
            };
            i += 2;
            continue;
        }
        if read_only && !is(word, "GET") {
            return Err(Reply::err(
                "ERR BITFIELD_RO only supports the GET subcommand",
            ));
        }
        let field = Field::parse(&a[i + 1])?;
        let at = match a[i + 2].strip_prefix(b"#") {
            Some(n) => std::str::from_utf8(n)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .and_then(|n| n.checked_mul(u64::from(field.bits)))
                .ok_or_else(bad_offset)?,
            None => std::str::from_utf8(&a[i + 2])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(bad_offset)?,
        };
        let end_bit = at
            .checked_add(u64::from(field.bits))
            .ok_or_else(bad_offset)?;
        if end_bit > 1 << 32 || ((end_bit + 7) >> 3) as usize > ctx.max_bulk() {
            return Err(bad_offset());
        }
        let op = if is(word, "GET") {
            FieldOp::Get
        } else if is(word, "SET") {
            FieldOp::Set(int_arg(&a[i + 3])?)
        } else {
            FieldOp::IncrBy(int_arg(&a[i + 3])?)
        };
        ops.push((field, at, op, overflow));
        i += takes + 1;
    }
    let writes = ops.iter().any(|(_, _, op, _)| !matches!(op, FieldOp::Get));
    if !writes {
        return read_bytes(ctx, &a[1], |v| {
            Reply::Array(
                ops.iter()
                    .map(|&(f, at, _, _)| Reply::Int(f.get(v, at)))
                    .collect(),
            )
        });
    }
    // As in Redis, the string first grows to hold every field written,
    // even one whose write then fails on overflow.
    let needed = ops
        .iter()
        .filter(|(_, _, op, _)| !matches!(op, FieldOp::Get))
        .map(|&(f, at, _, _)| ((at + u64::from(f.bits) + 7) >> 3) as usize)
        .max()
        .unwrap_or(0);
    update_bytes(ctx, &a[1], |v, _| {
        let mut out = Vec::with_capacity(ops.len());
        let mut touched: Option<Range<usize>> = None;
        if v.len() < needed {
            touched = Some(v.len()..needed);
            v.resize(needed, 0);
        }
        for &(f, at, ref op, ov) in &ops {
            let old = f.get(v, at);
            let (target, reply_old) = match *op {
                FieldOp::Get => {
                    out.push(Reply::Int(old));
                    continue;
                }
                FieldOp::Set(x) => (i128::from(x), true),
                FieldOp::IncrBy(d) => (i128::from(old) + i128::from(d), false),
            };
            let new = if (f.min()..=f.max()).contains(&target) {
                target as i64
            } else {
                match ov {
                    Overflow::Wrap => f.wrap(target),
                    Overflow::Sat if target > f.max() => f.max() as i64,
                    Overflow::Sat => f.min() as i64,
                    Overflow::Fail => {
                        out.push(Reply::Nil);
                        continue;
                    }
                }
            };
            f.set(v, at, new);
            let bytes = (at >> 3) as usize..((at + u64::from(f.bits) + 7) >> 3) as usize;
            touched = Some(match touched {
                None => bytes,
                Some(t) => t.start.min(bytes.start)..t.end.max(bytes.end),
            });
            out.push(Reply::Int(if reply_old { old } else { new }));
        }
        Ok((Reply::Array(out), touched))
    })
}
