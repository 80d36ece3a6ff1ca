//! Set commands; feature stores keep seen items and tags in sets. Adds and
//! removes log only the members they touch (see [`Change::Fields`]).

use bytes::Bytes;
use indexmap::IndexSet;

use super::hashes::Delta;
use super::keys::{cursor_arg, scan_options, scan_page};
use super::reply::Reply;
use super::{err, int_arg, CmdResult, Ctx};
use crate::storage::{with_rng, Change, Record, SetMembers, Value};

fn members_reply<'a>(members: impl Iterator<Item = &'a [u8]>) -> Reply {
    Reply::Set(members.map(|m| Reply::bulk(m.to_vec())).collect())
}

pub fn sadd(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let max = ctx.max_bulk();
    if a[2..].iter().any(|m| m.len() > max) {
        return Err(err::too_big());
    }
    let n = ctx.update(&a[1], true, |s: Option<&mut SetMembers>| {
        let s = s.expect("created");
        let mut delta = Delta::default();
        for m in &a[2..] {
            if s.insert(m.to_vec().into()) {
                delta.set.push(m.to_vec().into());
            }
        }
        Ok((delta.set.len() as i64, delta.change()))
    })?;
    Ok(Reply::Int(n))
}

pub fn srem(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let n = ctx.update(&a[1], false, |s: Option<&mut SetMembers>| {
        let Some(s) = s else {
            return Ok((0, Change::None));
        };
        let mut delta = Delta::default();
        for m in &a[2..] {
            if s.remove(m) {
                delta.removed.push(m.to_vec().into());
            }
        }
        Ok((delta.removed.len() as i64, delta.change()))
    })?;
    Ok(Reply::Int(n))
}

pub fn smembers(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.read_as(&a[1], |s: Option<&SetMembers>| match s {
        None => Reply::Set(Vec::new()),
        Some(s) => members_reply(s.iter()),
    })
}

pub fn sismember(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.read_as(&a[1], |s: Option<&SetMembers>| {
        Reply::Int(s.is_some_and(|s| s.contains(&a[2])) as i64)
    })
}

pub fn smismember(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.read_as(&a[1], |s: Option<&SetMembers>| {
        Reply::Array(
            a[2..]
                .iter()
                .map(|m| Reply::Int(s.is_some_and(|s| s.contains(m)) as i64))
                .collect(),
        )
    })
}

pub fn scard(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.read_as(&a[1], |s: Option<&SetMembers>| {
        Reply::Int(s.map_or(0, |s| s.len()) as i64)
    })
}

/// A count argument that must not be negative.
fn positive_count(b: &[u8]) -> Result<usize, Reply> {
    int_arg(b)
        .ok()
        .filter(|n| *n >= 0)
        .map(|n| n as usize)
        .ok_or_else(|| Reply::err("ERR value is out of range, must be positive"))
}

pub fn spop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if a.len() > 3 {
        return Err(err::syntax());
    }
    let count = a.get(2).map(|c| positive_count(c)).transpose()?;
    let popped = ctx.update(&a[1], false, |s: Option<&mut SetMembers>| {
        let Some(s) = s else {
            return Ok((Vec::new(), Change::None));
        };
        let n = count.unwrap_or(1).min(s.len());
        // The members are drawn from the write's own random source, so
        // every replica of a shard pops the same ones.
        let popped: Vec<Box<[u8]>> =
            with_rng(|rng| (0..n).filter_map(|_| s.pop_random(rng)).collect());
        let delta = Delta {
            set: Vec::new(),
            removed: popped.clone(),
        };
        Ok((popped, delta.change()))
    })?;
    Ok(match count {
        None => popped
            .into_iter()
            .next()
            .map_or(Reply::Nil, |m| Reply::bulk(Vec::from(m))),
        Some(_) => members_reply(popped.iter().map(|m| &m[..])),
    })
}

pub fn srandmember(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if a.len() > 3 {
        return Err(err::syntax());
    }
    let count = a.get(2).map(|c| int_arg(c)).transpose()?;
    if count == Some(i64::MIN) {
        return Err(Reply::err("ERR value is out of range"));
    }
    ctx.read_as(&a[1], |s: Option<&SetMembers>| {
        let mut rng = rand::rng();
        let Some(count) = count else {
            return s
                .and_then(|s| s.random(&mut rng))
                .map_or(Reply::Nil, |m| Reply::bulk(m.to_vec()));
        };
        let Some(s) = s else {
            return Reply::Array(Vec::new());
        };
        let picked: Vec<&[u8]> = if count < 0 {
            // Repeats allowed.
            (0..count.unsigned_abs())
                .filter_map(|_| s.random(&mut rng))
                .collect()
        } else if count as usize >= s.len() {
            s.iter().collect()
        } else {
            rand::seq::index::sample(&mut rng, s.len(), count as usize)
                .into_iter()
                .filter_map(|i| s.get_index(i))
                .collect()
        };
        Reply::Array(
            picked
                .into_iter()
                .map(|m| Reply::bulk(m.to_vec()))
                .collect(),
        )
    })
}

pub fn smove(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (src, dst, member) = (&a[1], &a[2], &a[3]);
    // Both keys must hold sets (or nothing) before anything moves.
    ctx.read_as(dst, |_: Option<&SetMembers>| ())?;
    ctx.atomic(|ctx| {
        let moved = ctx.update(src, false, |s: Option<&mut SetMembers>| {
            let Some(s) = s else {
                return Ok((false, Change::None));
            };
            if src == dst {
                return Ok((s.contains(member), Change::None));
            }
            if !s.remove(member) {
                return Ok((false, Change::None));
            }
            let delta = Delta {
                set: Vec::new(),
                removed: vec![member.to_vec().into()],
            };
            Ok((true, delta.change()))
        })?;
        if moved && src != dst {
            ctx.update(dst, true, |s: Option<&mut SetMembers>| {
                let added = s.expect("created").insert(member.to_vec().into());
                let delta = if added {
                    Delta::set(member)
                } else {
                    Delta::default()
                };
                Ok(((), delta.change()))
            })?;
        }
        Ok(Reply::Int(moved as i64))
    })
}

/// How several sets combine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// The members of each of `keys`, combined by `op`; WRONGTYPE if any key
/// holds another type. An intersection stops early once `limit` members
/// are found (0 = no limit).
fn combine(
    ctx: &mut Ctx<'_>,
    keys: &[Bytes],
    op: Op,
    limit: usize,
) -> Result<IndexSet<Box<[u8]>>, Reply> {
    let mut sizes = Vec::with_capacity(keys.len());
    for k in keys {
        sizes.push(ctx.read_as(k, |s: Option<&SetMembers>| s.map_or(0, |s| s.len()))?);
    }
    let collect = |s: Option<&SetMembers>| -> IndexSet<Box<[u8]>> {
        s.map(|s| s.iter().map(Box::from).collect())
            .unwrap_or_default()
    };
    match op {
        Op::Union => {
            let mut out = IndexSet::new();
            for k in keys {
                ctx.read_as(k, |s: Option<&SetMembers>| {
                    out.extend(s.into_iter().flat_map(|s| s.iter().map(Box::from)))
                })?;
            }
            Ok(out)
        }
        Op::Diff => {
            let mut out = ctx.read_as(&keys[0], collect)?;
            for k in &keys[1..] {
                if out.is_empty() {
                    break;
                }
                ctx.read_as(k, |s: Option<&SetMembers>| {
                    if let Some(s) = s {
                        out.retain(|m| !s.contains(m));
                    }
                })?;
            }
            Ok(out)
        }
        Op::Inter => {
            if sizes.contains(&0) {
                return Ok(IndexSet::new());
            }
            // Start from the smallest set and keep what every other holds.
            let smallest = (0..keys.len()).min_by_key(|&i| sizes[i]).unwrap_or(0);
            let mut out = ctx.read_as(&keys[smallest], collect)?;
            for (i, k) in keys.iter().enumerate() {
                if i == smallest || out.is_empty() {
                    continue;
                }
                ctx.read_as(k, |s: Option<&SetMembers>| {
                    out.retain(|m| s.is_some_and(|s| s.contains(m)))
                })?;
            }
            if limit > 0 {
                out.truncate(limit);
            }
            Ok(out)
        }
    }
}

/// Replaces `dst` with a set of `members` (or deletes it if there are
/// none); returns how many members it holds.
fn store_set(ctx: &mut Ctx<'_>, dst: &[u8], members: IndexSet<Box<[u8]>>) -> CmdResult {
    let mut set = SetMembers::with_capacity(members.len());
    for m in members {
        set.insert(m);
    }
    let n = set.len() as i64;
    ctx.write(dst, |cur| {
        if set.is_empty() {
            let existed = cur.is_some();
            *cur = None;
            return ((), existed);
        }
        *cur = Some(Record::new(Value::Set(Box::new(set))));
        ((), true)
    })?;
    Ok(Reply::Int(n))
}

fn read_op(ctx: &mut Ctx<'_>, a: &[Bytes], op: Op) -> CmdResult {
    let out = combine(ctx, &a[1..], op, 0)?;
    Ok(members_reply(out.iter().map(|m| &m[..])))
}

fn store_op(ctx: &mut Ctx<'_>, a: &[Bytes], op: Op) -> CmdResult {
    ctx.atomic(|ctx| {
        let out = combine(ctx, &a[2..], op, 0)?;
        store_set(ctx, &a[1], out)
    })
}

pub fn sinter(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    read_op(ctx, a, Op::Inter)
}

pub fn sunion(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    read_op(ctx, a, Op::Union)
}

pub fn sdiff(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    read_op(ctx, a, Op::Diff)
}

pub fn sinterstore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    store_op(ctx, a, Op::Inter)
}

pub fn sunionstore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    store_op(ctx, a, Op::Union)
}

pub fn sdiffstore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    store_op(ctx, a, Op::Diff)
}

/// `numkeys key [key ...]` followed by options: the keys and the options.
pub(crate) fn counted_keys(a: &[Bytes]) -> Result<(&[Bytes], &[Bytes]), Reply> {
    let n = int_arg(&a[1])
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Reply::err("ERR numkeys should be greater than 0"))? as usize;
    if n > a.len() - 2 {
        return Err(Reply::err(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    Ok((&a[2..2 + n], &a[2 + n..]))
}

/// A `LIMIT n` option (0 = no limit).
pub(crate) fn limit_option(opts: &[Bytes]) -> Result<usize, Reply> {
    match opts {
        [] => Ok(0),
        [word, n] if super::is(word, "LIMIT") => int_arg(n)
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n as usize)
            .ok_or_else(|| Reply::err("ERR LIMIT can't be negative")),
        _ => Err(err::syntax()),
    }
}

pub fn sintercard(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (keys, opts) = counted_keys(a)?;
    let limit = limit_option(opts)?;
    let out = combine(ctx, keys, Op::Inter, limit)?;
    Ok(Reply::Int(out.len() as i64))
}

pub fn sscan(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let cursor = cursor_arg(&a[2])?;
    let (pattern, count, _) = scan_options(&a[3..], false)?;
    ctx.read_as(&a[1], |s: Option<&SetMembers>| {
        let (next, page) = match s {
            None => (0, Vec::new()),
            Some(s) => scan_page(s.iter().map(|m| (m, ())), cursor, count, pattern.as_deref()),
        };
        Reply::Array(vec![
            Reply::bulk(next.to_string()),
            Reply::Array(
                page.into_iter()
                    .map(|(m, _)| Reply::bulk(m.to_vec()))
                    .collect(),
            ),
        ])
    })
}
