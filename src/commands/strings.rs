//! String commands.

use bytes::Bytes;

use super::reply::{format_double, Reply};
use super::{err, float_arg, int_arg, is, CmdResult, Ctx};
use crate::storage::{now_ms, Change, Record, Value, Version};

fn string_record(v: Vec<u8>, expire_at_ms: Option<u64>) -> Record {
    Record {
        value: Value::Str(v),
        expire_at_ms,
        version: Version::default(),
        written_secs: 0,
    }
}

/// How a write treats the key's TTL.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Expiry {
    /// Clear it.
    None,
    /// Keep the current one.
    Keep,
    /// Set this absolute time (ms).
    At(u64),
}

/// Parses an expiry amount into an absolute time, Redis-style.
pub(crate) fn expire_at(
    amount: &[u8],
    unit_ms: u64,
    absolute: bool,
    cmd: &str,
) -> Result<u64, Reply> {
    let n = int_arg(amount)?;
    let invalid = || Reply::err(format!("ERR invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let ms = (n as u64).checked_mul(unit_ms).ok_or_else(invalid)?;
    if absolute {
        Ok(ms)
    } else {
        now_ms()
            .checked_add(ms)
            .filter(|&t| t < i64::MAX as u64)
            .ok_or_else(invalid)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cond {
    Always,
    Nx,
    Xx,
}

/// SET and its relatives. Returns (whether it was set, the old value if `get`).
fn set_generic(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    value: &[u8],
    expiry: Expiry,
    cond: Cond,
    get: bool,
) -> Result<(bool, Option<Vec<u8>>), Reply> {
    if value.len() > ctx.max_bulk() {
        return Err(err::too_big());
    }
    let w = ctx.write(key, |cur| {
        let old = match (get, &*cur) {
            (
                true,
                Some(Record {
                    value: Value::Str(v),
                    ..
                }),
            ) => Some(v.clone()),
            (true, Some(_)) => return (Err(err::wrongtype()), false),
            _ => None,
        };
        let exists = cur.is_some();
        if (cond == Cond::Nx && exists) || (cond == Cond::Xx && !exists) {
            return (Ok((false, old)), false);
        }
        let at = match expiry {
            Expiry::None => None,
            Expiry::Keep => cur.as_ref().and_then(|r| r.expire_at_ms),
            Expiry::At(t) => Some(t),
        };
        if at.is_some_and(|t| t <= now_ms()) {
            // An expiry in the past deletes, as in Redis.
            *cur = None;
            return (Ok((true, old)), exists);
        }
        *cur = Some(string_record(value.to_vec(), at));
        (Ok((true, old)), true)
    })?;
    w.value
}

pub fn get(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    Ok(ctx.get_str(&a[1])?.map_or(Reply::Nil, Reply::bulk))
}

pub fn set(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut expiry = Expiry::None;
    let mut cond = Cond::Always;
    let mut get = false;
    let mut seen_expiry = false;
    let mut i = 3;
    while i < a.len() {
        let opt = &a[i];
        let unit = if is(opt, "EX") {
            Some((1000, false))
        } else if is(opt, "PX") {
            Some((1, false))
        } else if is(opt, "EXAT") {
            Some((1000, true))
        } else if is(opt, "PXAT") {
            Some((1, true))
        } else {
            None
        };
        if let Some((ms, abs)) = unit {
            if seen_expiry || i + 1 >= a.len() {
                return Err(err::syntax());
            }
            seen_expiry = true;
            expiry = Expiry::At(expire_at(&a[i + 1], ms, abs, "set")?);
            i += 2;
            continue;
        }
        if is(opt, "NX") && cond == Cond::Always {
            cond = Cond::Nx;
        } else if is(opt, "XX") && cond == Cond::Always {
            cond = Cond::Xx;
        } else if is(opt, "KEEPTTL") && !seen_expiry {
            seen_expiry = true;
            expiry = Expiry::Keep;
        } else if is(opt, "GET") {
            get = true;
        } else {
            return Err(err::syntax());
        }
        i += 1;
    }
    let (done, old) = set_generic(ctx, &a[1], &a[2], expiry, cond, get)?;
    Ok(match (get, done) {
        (true, _) => old.map_or(Reply::Nil, Reply::bulk),
        (false, true) => Reply::OK,
        (false, false) => Reply::Nil,
    })
}

pub fn setnx(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (done, _) = set_generic(ctx, &a[1], &a[2], Expiry::None, Cond::Nx, false)?;
    Ok(Reply::Int(i64::from(done)))
}

pub fn setex(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let at = expire_at(&a[2], 1000, false, "setex")?;
    set_generic(ctx, &a[1], &a[3], Expiry::At(at), Cond::Always, false)?;
    Ok(Reply::OK)
}

pub fn psetex(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let at = expire_at(&a[2], 1, false, "psetex")?;
    set_generic(ctx, &a[1], &a[3], Expiry::At(at), Cond::Always, false)?;
    Ok(Reply::OK)
}

pub fn getset(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (_, old) = set_generic(ctx, &a[1], &a[2], Expiry::None, Cond::Always, true)?;
    Ok(old.map_or(Reply::Nil, Reply::bulk))
}

pub fn getdel(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let w = ctx.write(&a[1], |cur| match cur.take() {
        Some(Record {
            value: Value::Str(v),
            ..
        }) => (Ok(Reply::bulk(v)), true),
        None => (Ok(Reply::Nil), false),
        other => {
            *cur = other;
            (Err(err::wrongtype()), false)
        }
    })?;
    w.value
}

pub fn getex(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut change: Option<Option<u64>> = None;
    let mut i = 2;
    while i < a.len() {
        let unit = if is(&a[i], "EX") {
            Some((1000, false))
        } else if is(&a[i], "PX") {
            Some((1, false))
        } else if is(&a[i], "EXAT") {
            Some((1000, true))
        } else if is(&a[i], "PXAT") {
            Some((1, true))
        } else {
            None
        };
        if change.is_some() {
            return Err(err::syntax());
        }
        if let Some((ms, abs)) = unit {
            if i + 1 >= a.len() {
                return Err(err::syntax());
            }
            change = Some(Some(expire_at(&a[i + 1], ms, abs, "getex")?));
            i += 2;
        } else if is(&a[i], "PERSIST") {
            change = Some(None);
            i += 1;
        } else {
            return Err(err::syntax());
        }
    }
    let w = ctx.write(&a[1], |cur| {
        let v = match &*cur {
            None => return (Ok(Reply::Nil), false),
            Some(Record {
                value: Value::Str(v),
                ..
            }) => v.clone(),
            Some(_) => return (Err(err::wrongtype()), false),
        };
        match change {
            None => (Ok(Reply::bulk(v)), false),
            Some(Some(t)) if t <= now_ms() => {
                *cur = None;
                (Ok(Reply::bulk(v)), true)
            }
            Some(at) => {
                let rec = cur.as_mut().map(|r| {
                    let changed = r.expire_at_ms != at;
                    r.expire_at_ms = at;
                    changed
                });
                (Ok(Reply::bulk(v)), rec.unwrap_or(false))
            }
        }
    })?;
    w.value
}

pub fn mget(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut out = Vec::with_capacity(a.len() - 1);
    for key in &a[1..] {
        out.push(match ctx.get_str(key) {
            Ok(Some(v)) => Reply::bulk(v),
            Ok(None) => Reply::Nil,
            Err(e) if e == err::wrongtype() => Reply::Nil,
            Err(e) => return Err(e),
        });
    }
    Ok(Reply::Array(out))
}

pub fn mset(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if a.len() % 2 != 1 {
        return Err(err::arity("mset"));
    }
    ctx.atomic(|ctx| {
        for pair in a[1..].chunks(2) {
            set_generic(ctx, &pair[0], &pair[1], Expiry::None, Cond::Always, false)?;
        }
        Ok(Reply::OK)
    })
}

pub fn msetnx(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if a.len() % 2 != 1 {
        return Err(err::arity("msetnx"));
    }
    for pair in a[1..].chunks(2) {
        if ctx.read(&pair[0], crate::storage::ReadHint::Peek, |r| r.is_some())? {
            return Ok(Reply::Int(0));
        }
    }
    ctx.atomic(|ctx| {
        for pair in a[1..].chunks(2) {
            set_generic(ctx, &pair[0], &pair[1], Expiry::None, Cond::Always, false)?;
        }
        Ok(Reply::Int(1))
    })
}

fn parse_stored_int(v: &[u8]) -> Option<i64> {
    if v.is_empty() || v.len() > 20 || v[0] == b'+' || (v.len() > 1 && v[0] == b'0') {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], delta: i64) -> CmdResult {
    let w = ctx.write(key, |cur| {
        let (old, at) = match &*cur {
            None => (0, None),
            Some(Record {
                value: Value::Str(v),
                expire_at_ms,
                ..
            }) => match parse_stored_int(v) {
                Some(n) => (n, *expire_at_ms),
                None => return (Err(err::not_int()), false),
            },
            Some(_) => return (Err(err::wrongtype()), false),
        };
        let Some(new) = old.checked_add(delta) else {
            return (Err(err::overflow()), false);
        };
        *cur = Some(string_record(new.to_string().into_bytes(), at));
        (Ok(Reply::Int(new)), true)
    })?;
    w.value
}

pub fn incr(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    incr_by(ctx, &a[1], 1)
}

pub fn decr(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    incr_by(ctx, &a[1], -1)
}

pub fn incrby(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    incr_by(ctx, &a[1], int_arg(&a[2])?)
}

pub fn decrby(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let d = int_arg(&a[2])?;
    incr_by(ctx, &a[1], d.checked_neg().ok_or_else(err::overflow)?)
}

pub fn incrbyfloat(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let delta = float_arg(&a[2])?;
    let w = ctx.write(&a[1], |cur| {
        let (old, at) = match &*cur {
            None => (0.0, None),
            Some(Record {
                value: Value::Str(v),
                expire_at_ms,
                ..
            }) => match float_arg(v) {
                Ok(n) => (n, *expire_at_ms),
                Err(e) => return (Err(e), false),
            },
            Some(_) => return (Err(err::wrongtype()), false),
        };
        let new = old + delta;
        if !new.is_finite() {
            return (
                Err(Reply::err("ERR increment would produce NaN or Infinity")),
                false,
            );
        }
        let text = format_double(new);
        *cur = Some(string_record(text.clone().into_bytes(), at));
        (Ok(Reply::bulk(text)), true)
    })?;
    w.value
}

pub fn append(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let max = ctx.max_bulk();
    let w = ctx.write_change(&a[1], |cur| match cur {
        None => {
            *cur = Some(string_record(a[2].to_vec(), None));
            (Ok(Reply::Int(a[2].len() as i64)), Change::Full)
        }
        Some(Record {
            value: Value::Str(v),
            ..
        }) => {
            if v.len() + a[2].len() > max {
                return (Err(err::too_big()), Change::None);
            }
            let offset = v.len();
            v.extend_from_slice(&a[2]);
            let change = Change::Range {
                offset,
                len: a[2].len(),
            };
            (Ok(Reply::Int(v.len() as i64)), change)
        }
        Some(_) => (Err(err::wrongtype()), Change::None),
    })?;
    w.value
}

pub fn strlen(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let n = ctx.read(&a[1], crate::storage::ReadHint::Normal, |r| match r {
        None => Ok(0),
        Some((
            Record {
                value: Value::Str(v),
                ..
            },
            _,
        )) => Ok(v.len() as i64),
        Some(_) => Err(err::wrongtype()),
    })??;
    Ok(Reply::Int(n))
}

pub fn getrange(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (start, end) = (int_arg(&a[2])?, int_arg(&a[3])?);
    let v = ctx.get_str(&a[1])?.unwrap_or_default();
    let len = v.len() as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return Ok(Reply::bulk(""));
    }
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (s, e) = (norm(start), norm(end).min(len - 1));
    if s > e || s >= len {
        return Ok(Reply::bulk(""));
    }
    Ok(Reply::bulk(v[s as usize..=e as usize].to_vec()))
}

pub fn setrange(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let offset = int_arg(&a[2])?;
    if offset < 0 {
        return Err(Reply::err("ERR offset is out of range"));
    }
    let offset = offset as usize;
    let max = ctx.max_bulk();
    let patch = &a[3];
    if !patch.is_empty() && offset + patch.len() > max {
        return Err(err::too_big());
    }
    let w = ctx.write_change(&a[1], |cur| match cur {
        None if patch.is_empty() => (Ok(Reply::Int(0)), Change::None),
        None => {
            let mut v = vec![0u8; offset];
            v.extend_from_slice(patch);
            let n = v.len();
            *cur = Some(string_record(v, None));
            (Ok(Reply::Int(n as i64)), Change::Full)
        }
        Some(Record {
            value: Value::Str(v),
            ..
        }) => {
            if patch.is_empty() {
                return (Ok(Reply::Int(v.len() as i64)), Change::None);
            }
            if v.len() < offset + patch.len() {
                v.resize(offset + patch.len(), 0);
            }
            v[offset..offset + patch.len()].copy_from_slice(patch);
            let change = Change::Range {
                offset,
                len: patch.len(),
            };
            (Ok(Reply::Int(v.len() as i64)), change)
        }
        Some(_) => (Err(err::wrongtype()), Change::None),
    })?;
    w.value
}

/// Changes the string at `key` in place, for commands that edit bytes
/// (SETBIT, BITFIELD, PFADD). `f` gets the bytes (empty for no key) and
/// whether the key existed, and returns its result and the byte range it changed, if any; an absent key
/// is created only when something changed. The key keeps its TTL.
pub(super) fn update_bytes<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&mut Vec<u8>, bool) -> Result<(R, Option<std::ops::Range<usize>>), Reply>,
) -> Result<R, Reply> {
    let w = ctx.write_change(key, |cur| {
        let created = cur.is_none();
        let rec = cur.get_or_insert_with(|| string_record(Vec::new(), None));
        let Value::Str(v) = &mut rec.value else {
            return (Err(err::wrongtype()), Change::None);
        };
        match f(v, !created) {
            Ok((r, None)) => {
                if created {
                    *cur = None;
                }
                (Ok(r), Change::None)
            }
            Ok((r, Some(_))) if created => (Ok(r), Change::Full),
            Ok((r, Some(range))) => (
                Ok(r),
                Change::Range {
                    offset: range.start,
                    len: range.len(),
                },
            ),
            Err(e) => {
                if created {
                    *cur = None;
                }
                (Err(e), Change::None)
            }
        }
    })?;
    w.value
}

/// The string at `key` for reading (empty for no key).
pub(super) fn read_bytes<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, Reply> {
    ctx.read_typed(
        key,
        |v| match v {
            Value::Str(s) => Some(s.as_slice()),
            _ => None,
        },
        |s| f(s.unwrap_or_default()),
    )
}

pub fn lcs(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (mut len_only, mut idx, mut with_len, mut min_len) = (false, false, false, 0usize);
    let mut i = 3;
    while i < a.len() {
        if is(&a[i], "LEN") {
            len_only = true;
        } else if is(&a[i], "IDX") {
            idx = true;
        } else if is(&a[i], "WITHMATCHLEN") {
            with_len = true;
        } else if is(&a[i], "MINMATCHLEN") && i + 1 < a.len() {
            min_len = int_arg(&a[i + 1])?.max(0) as usize;
            i += 1;
        } else {
            return Err(err::syntax());
        }
        i += 1;
    }
    if len_only && idx {
        return Err(Reply::err(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    let x = read_bytes(ctx, &a[1], <[u8]>::to_vec)?;
    let y = read_bytes(ctx, &a[2], <[u8]>::to_vec)?;
    let (n, m) = (x.len(), y.len());
    // The table takes (n+1)(m+1) cells of 4 bytes.
    let cells = (n as u128 + 1) * (m as u128 + 1);
    if cells * 4 > ctx.max_bulk() as u128 {
        return Err(Reply::err(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let w = m + 1;
    let mut t = vec![0u32; (n + 1) * w];
    for i in 1..=n {
        for j in 1..=m {
            t[i * w + j] = if x[i - 1] == y[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    let total = t[n * w + m] as usize;
    if len_only {
        return Ok(Reply::Int(total as i64));
    }
    // Walk back from the end, collecting the common bytes and, for IDX,
    // the matching ranges (last first, as Redis lists them).
    let mut common = vec![0u8; total];
    let mut k = total;
    let mut matches = Vec::new();
    let (mut i, mut j) = (n, m);
    let mut range: Option<(usize, usize, usize, usize)> = None;
    while i > 0 && j > 0 {
        let mut emit = false;
        if x[i - 1] == y[j - 1] {
            common[k - 1] = x[i - 1];
            range = Some(match range {
                Some((a0, a1, b0, b1)) if a0 == i && b0 == j => (a0 - 1, a1, b0 - 1, b1),
                Some(_) => {
                    emit = true;
                    (i - 1, i - 1, j - 1, j - 1)
                }
                None => (i - 1, i - 1, j - 1, j - 1),
            });
            if range.is_some_and(|(a0, _, b0, _)| a0 == 0 || b0 == 0) {
                emit = true;
            }
            k -= 1;
            i -= 1;
            j -= 1;
        } else {
            if t[(i - 1) * w + j] > t[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            emit = range.is_some();
        }
        if emit {
            if let Some((a0, a1, b0, b1)) = range.take() {
                let len = a1 - a0 + 1;
                if idx && (min_len == 0 || len >= min_len) {
                    let span = |s: usize, e: usize| {
                        Reply::Array(vec![Reply::Int(s as i64), Reply::Int(e as i64)])
                    };
                    let mut item = vec![span(a0, a1), span(b0, b1)];
                    if with_len {
                        item.push(Reply::Int(len as i64));
                    }
                    matches.push(Reply::Array(item));
                }
            }
        }
    }
    if idx {
        return Ok(Reply::Map(vec![
            (Reply::bulk("matches"), Reply::Array(matches)),
            (Reply::bulk("len"), Reply::Int(total as i64)),
        ]));
    }
    Ok(Reply::bulk(common))
}
