//! Hash commands; feature stores keep a feature vector per key as a hash.

use bytes::Bytes;
use rand::seq::IndexedRandom;

use super::keys::{cursor_arg, scan_options, scan_page};
use super::reply::{format_double, Reply};
use super::{err, float_arg, int_arg, is, CmdResult, Ctx};
use crate::storage::{Change, FieldMap, ReadHint};

fn with_hash<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&FieldMap>) -> R,
) -> Result<R, Reply> {
    ctx.read_as(key, f)
}

/// Fields (of a hash) or members (of a set or sorted set) a command set
/// or removed.
#[derive(Default)]
pub(super) struct Delta {
    pub(super) set: Vec<Box<[u8]>>,
    pub(super) removed: Vec<Box<[u8]>>,
}

impl Delta {
    pub(super) fn set(field: &[u8]) -> Delta {
        Delta {
            set: vec![field.into()],
            removed: Vec::new(),
        }
    }

    /// The change to log.
    pub(super) fn change(self) -> Change {
        if self.set.is_empty() && self.removed.is_empty() {
            Change::None
        } else {
            Change::Fields {
                set: self.set,
                removed: self.removed,
            }
        }
    }
}

/// Changes the hash at `key` (created empty if absent; removed if left
/// empty). `f` returns its result and the fields it changed, which is all
/// the log records.
fn update_hash<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&mut FieldMap) -> Result<(R, Delta), Reply>,
) -> Result<R, Reply> {
    ctx.update(key, true, |map| {
        let (r, delta) = f(map.expect("created"))?;
        Ok((r, delta.change()))
    })
}

fn hset_pairs(ctx: &mut Ctx<'_>, a: &[Bytes], cmd: &str) -> Result<i64, Reply> {
    if !a.len().is_multiple_of(2) {
        return Err(err::arity(cmd));
    }
    let max = ctx.max_bulk();
    if a[2..].iter().any(|v| v.len() > max) {
        return Err(err::too_big());
    }
    update_hash(ctx, &a[1], |map| {
        let mut added = 0;
        let mut delta = Delta::default();
        for pair in a[2..].chunks(2) {
            if map
                .insert(pair[0].to_vec().into(), pair[1].to_vec().into())
                .is_none()
            {
                added += 1;
            }
            delta.set.push(pair[0].to_vec().into());
        }
        Ok((added, delta))
    })
}

pub fn hset(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(hset_pairs(ctx, a, "hset")?))
}

pub fn hmset(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    hset_pairs(ctx, a, "hmset")?;
    Ok(Reply::OK)
}

pub fn hsetnx(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let n = update_hash(ctx, &a[1], |map| {
        if map.contains_key(&a[2][..]) {
            return Ok((0, Delta::default()));
        }
        map.insert(a[2].to_vec().into(), a[3].to_vec().into());
        Ok((1, Delta::set(&a[2])))
    })?;
    Ok(Reply::Int(n))
}

pub fn hget(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_hash(ctx, &a[1], |m| {
        m.and_then(|m| m.get(&a[2][..]))
            .map_or(Reply::Nil, |v| Reply::bulk(v.to_vec()))
    })
}

pub fn hmget(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_hash(ctx, &a[1], |m| {
        Reply::Array(
            a[2..]
                .iter()
                .map(|f| {
                    m.and_then(|m| m.get(&f[..]))
                        .map_or(Reply::Nil, |v| Reply::bulk(v.to_vec()))
                })
                .collect(),
        )
    })
}

fn sorted(m: &FieldMap) -> Vec<(&[u8], &[u8])> {
    let mut v: Vec<_> = m.iter().map(|(f, v)| (&f[..], &v[..])).collect();
    v.sort_unstable();
    v
}

pub fn hgetall(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_hash(ctx, &a[1], |m| {
        Reply::Map(
            m.map(sorted)
                .unwrap_or_default()
                .into_iter()
                .map(|(f, v)| (Reply::bulk(f.to_vec()), Reply::bulk(v.to_vec())))
                .collect(),
        )
    })
}

pub fn hdel(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let exists = ctx.read(&a[1], ReadHint::Peek, |r| r.is_some())?;
    if !exists {
        return Ok(Reply::Int(0));
    }
    let n = update_hash(ctx, &a[1], |map| {
        let mut delta = Delta::default();
        for f in &a[2..] {
            if map.remove(&f[..]).is_some() {
                delta.removed.push(f.to_vec().into());
            }
        }
        Ok((delta.removed.len() as i64, delta))
    })?;
    Ok(Reply::Int(n))
}

pub fn hexists(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_hash(ctx, &a[1], |m| {
        Reply::Int(i64::from(m.is_some_and(|m| m.contains_key(&a[2][..]))))
    })
}

pub fn hlen(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_hash(ctx, &a[1], |m| Reply::Int(m.map_or(0, |m| m.len() as i64)))
}

pub fn hstrlen(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_hash(ctx, &a[1], |m| {
        Reply::Int(
            m.and_then(|m| m.get(&a[2][..]))
                .map_or(0, |v| v.len() as i64),
        )
    })
}

pub fn hincrby(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let delta = int_arg(&a[3])?;
    let n = update_hash(ctx, &a[1], |map| {
        let old = match map.get(&a[2][..]) {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| Reply::err("ERR hash value is not an integer"))?,
        };
        let new = old.checked_add(delta).ok_or_else(err::overflow)?;
        map.insert(a[2].to_vec().into(), new.to_string().into_bytes().into());
        Ok((new, Delta::set(&a[2])))
    })?;
    Ok(Reply::Int(n))
}

pub fn hincrbyfloat(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let delta = float_arg(&a[3])?;
    let s = update_hash(ctx, &a[1], |map| {
        let old = match map.get(&a[2][..]) {
            None => 0.0,
            Some(v) => float_arg(v).map_err(|_| Reply::err("ERR hash value is not a float"))?,
        };
        let new = old + delta;
        if !new.is_finite() {
            return Err(Reply::err("ERR increment would produce NaN or Infinity"));
        }
        let s = format_double(new);
        map.insert(a[2].to_vec().into(), s.clone().into_bytes().into());
        Ok((s, Delta::set(&a[2])))
    })?;
    Ok(Reply::bulk(s))
}

pub fn hkeys(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_hash(ctx, &a[1], |m| {
        Reply::Array(
            m.map(sorted)
                .unwrap_or_default()
                .into_iter()
                .map(|(f, _)| Reply::bulk(f.to_vec()))
                .collect(),
        )
    })
}

pub fn hvals(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_hash(ctx, &a[1], |m| {
        Reply::Array(
            m.map(sorted)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, v)| Reply::bulk(v.to_vec()))
                .collect(),
        )
    })
}

pub fn hrandfield(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if a.len() > 4 || (a.len() == 4 && !is(&a[3], "WITHVALUES")) {
        return Err(err::syntax());
    }
    let count = if a.len() >= 3 {
        Some(int_arg(&a[2])?)
    } else {
        None
    };
    let with_values = a.len() == 4;
    with_hash(ctx, &a[1], |m| {
        let fields: Vec<(&[u8], &[u8])> = m.map(sorted).unwrap_or_default();
        let mut rng = rand::rng();
        let Some(count) = count else {
            return fields
                .choose(&mut rng)
                .map_or(Reply::Nil, |(f, _)| Reply::bulk(f.to_vec()));
        };
        let picked: Vec<(&[u8], &[u8])> = if count >= 0 {
            fields
                .choose_multiple(&mut rng, count as usize)
                .copied()
                .collect()
        } else {
            (0..count.unsigned_abs())
                .filter_map(|_| fields.choose(&mut rng).copied())
                .collect()
        };
        let mut out = Vec::new();
        for (f, v) in picked {
            out.push(Reply::bulk(f.to_vec()));
            if with_values {
                out.push(Reply::bulk(v.to_vec()));
            }
        }
        Reply::Array(out)
    })
}

pub fn hscan(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let cursor = cursor_arg(&a[2])?;
    let (pattern, count, _) = scan_options(&a[3..], false)?;
    with_hash(ctx, &a[1], |m| {
        let (next, page) = match m {
            None => (0, Vec::new()),
            Some(m) => scan_page(
                m.iter().map(|(f, v)| (&f[..], &v[..])),
                cursor,
                count,
                pattern.as_deref(),
            ),
        };
        let mut out = Vec::with_capacity(page.len() * 2);
        for (f, v) in page {
            out.push(Reply::bulk(f.to_vec()));
            out.push(Reply::bulk(v.to_vec()));
        }
        Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(out)])
    })
}
