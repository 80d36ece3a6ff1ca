//! List commands; job queues keep their jobs in lists. Pushes and pops
//! log only the items they add or remove (see [`Change::ListEnds`]).

use bytes::Bytes;

use super::blocking::timeout_arg;
use super::reply::Reply;
use super::{err, int_arg, is, CmdResult, Ctx};
use crate::storage::{Change, ListItems};

/// Which end of a list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

fn end_arg(b: &[u8]) -> Result<End, Reply> {
    if is(b, "LEFT") {
        Ok(End::Left)
    } else if is(b, "RIGHT") {
        Ok(End::Right)
    } else {
        Err(err::syntax())
    }
}

fn with_list<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&ListItems>) -> R,
) -> Result<R, Reply> {
    ctx.read_as(key, f)
}

/// What a list command did to the ends of the list, for the log.
#[derive(Default, Clone, Copy)]
struct Ends {
    popped_front: usize,
    popped_back: usize,
    pushed_front: usize,
    pushed_back: usize,
    /// Changed somewhere else than the ends: log the whole list.
    rewritten: bool,
}

impl Ends {
    fn none() -> Ends {
        Ends::default()
    }
    fn rewritten() -> Ends {
        Ends {
            rewritten: true,
            ..Ends::default()
        }
    }
    fn changed(&self) -> bool {
        self.rewritten
            || self.popped_front + self.popped_back + self.pushed_front + self.pushed_back > 0
    }
}

/// Changes the list at `key` (see [`Ctx::update`]); `f` says which ends
/// it changed, which is all the log records.
fn update_list<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    create: bool,
    f: impl FnOnce(Option<&mut ListItems>) -> Result<(R, Ends), Reply>,
) -> Result<R, Reply> {
    ctx.update(key, create, |list: Option<&mut ListItems>| {
        let Some(list) = list else {
            return Ok((f(None)?.0, Change::None));
        };
        let (r, ends) = f(Some(&mut *list))?;
        if !ends.changed() {
            return Ok((r, Change::None));
        }
        list.stamp();
        let change = if ends.rewritten {
            Change::Full
        } else {
            Change::ListEnds {
                popped_front: ends.popped_front,
                popped_back: ends.popped_back,
                pushed_front: ends.pushed_front,
                pushed_back: ends.pushed_back,
            }
        };
        Ok((r, change))
    })
}

fn push(ctx: &mut Ctx<'_>, a: &[Bytes], end: End, create: bool) -> CmdResult {
    let max = ctx.max_bulk();
    if a[2..].iter().any(|v| v.len() > max) {
        return Err(err::too_big());
    }
    let len = update_list(ctx, &a[1], create, |list| {
        let Some(list) = list else {
            return Ok((0, Ends::none()));
        };
        let mut ends = Ends::none();
        for v in &a[2..] {
            match end {
                End::Left => list.push_front(v.to_vec().into()),
                End::Right => list.push_back(v.to_vec().into()),
            }
        }
        match end {
            End::Left => ends.pushed_front = a.len() - 2,
            End::Right => ends.pushed_back = a.len() - 2,
        }
        Ok((list.len() as i64, ends))
    })?;
    Ok(Reply::Int(len))
}

pub fn lpush(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    push(ctx, a, End::Left, true)
}

pub fn rpush(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    push(ctx, a, End::Right, true)
}

pub fn lpushx(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    push(ctx, a, End::Left, false)
}

pub fn rpushx(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    push(ctx, a, End::Right, false)
}

/// Pops up to `count` items from `end` of the list at `key`; None if
/// there is no list.
fn pop_n(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    end: End,
    count: usize,
) -> Result<Option<Vec<Bytes>>, Reply> {
    update_list(ctx, key, false, |list| {
        let Some(list) = list else {
            return Ok((None, Ends::none()));
        };
        let mut out = Vec::with_capacity(count.min(list.len()));
        while out.len() < count {
            let item = match end {
                End::Left => list.pop_front(),
                End::Right => list.pop_back(),
            };
            match item {
                Some(v) => out.push(Bytes::from(Vec::from(v))),
                None => break,
            }
        }
        let mut ends = Ends::none();
        match end {
            End::Left => ends.popped_front = out.len(),
            End::Right => ends.popped_back = out.len(),
        }
        Ok((Some(out), ends))
    })
}

fn pop(ctx: &mut Ctx<'_>, a: &[Bytes], end: End) -> CmdResult {
    if a.len() > 3 {
        return Err(err::syntax());
    }
    let count = match a.get(2) {
        None => None,
        Some(c) => {
            let n = int_arg(c)
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| Reply::err("ERR value is out of range, must be positive"))?;
            Some(n as usize)
        }
    };
    let popped = pop_n(ctx, &a[1], end, count.unwrap_or(1))?;
    Ok(match (popped, count) {
        (None, None) => Reply::Nil,
        (None, Some(_)) => Reply::NilArray,
        (Some(mut items), None) => items.pop().map_or(Reply::Nil, Reply::Bulk),
        (Some(items), Some(_)) => Reply::Array(items.into_iter().map(Reply::Bulk).collect()),
    })
}

pub fn lpop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    pop(ctx, a, End::Left)
}

pub fn rpop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    pop(ctx, a, End::Right)
}

pub fn llen(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    with_list(ctx, &a[1], |l| Reply::Int(l.map_or(0, |l| l.len() as i64)))
}

/// Redis's index range: negative indexes count from the end; the result
/// is clamped to the list, or None if empty.
pub(super) fn range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len).then_some((start as usize, stop as usize))
}

/// The position of index `i` (negative from the end), if inside.
fn position(i: i64, len: usize) -> Option<usize> {
    let p = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&p).then_some(p as usize)
}

pub fn lrange(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    with_list(ctx, &a[1], |l| {
        let Some(l) = l else {
            return Reply::Array(Vec::new());
        };
        match range(start, stop, l.len()) {
            None => Reply::Array(Vec::new()),
            // By index, so a range deep in a long list costs only its length.
            Some((s, e)) => Reply::Array(
                (s..=e)
                    .filter_map(|i| l.get(i))
                    .map(|v| Reply::bulk(v.to_vec()))
                    .collect(),
            ),
        }
    })
}

pub fn lindex(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let i = int_arg(&a[2])?;
    with_list(ctx, &a[1], |l| {
        l.and_then(|l| position(i, l.len()).and_then(|p| l.get(p)))
            .map_or(Reply::Nil, |v| Reply::bulk(v.to_vec()))
    })
}

pub fn lset(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let i = int_arg(&a[2])?;
    if a[3].len() > ctx.max_bulk() {
        return Err(err::too_big());
    }
    update_list(ctx, &a[1], false, |l| {
        let Some(l) = l else {
            return Err(Reply::err("ERR no such key"));
        };
        let p = position(i, l.len()).ok_or_else(|| Reply::err("ERR index out of range"))?;
        l.set(p, a[3].to_vec().into());
        Ok((Reply::OK, Ends::rewritten()))
    })
}

pub fn linsert(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let after = if is(&a[2], "AFTER") {
        true
    } else if is(&a[2], "BEFORE") {
        false
    } else {
        return Err(err::syntax());
    };
    if a[4].len() > ctx.max_bulk() {
        return Err(err::too_big());
    }
    let n = update_list(ctx, &a[1], false, |l| {
        let Some(l) = l else {
            return Ok((0, Ends::none()));
        };
        let Some(p) = l.iter().position(|v| v == &a[3][..]) else {
            return Ok((-1, Ends::none()));
        };
        let at = if after { p + 1 } else { p };
        l.insert(at, a[4].to_vec().into());
        let ends = if at == 0 {
            Ends {
                pushed_front: 1,
                ..Ends::none()
            }
        } else if at == l.len() - 1 {
            Ends {
                pushed_back: 1,
                ..Ends::none()
            }
        } else {
            Ends::rewritten()
        };
        Ok((l.len() as i64, ends))
    })?;
    Ok(Reply::Int(n))
}

pub fn lrem(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let count = int_arg(&a[2])?;
    let target = &a[3][..];
    let n = update_list(ctx, &a[1], false, |l| {
        let Some(l) = l else {
            return Ok((0, Ends::none()));
        };
        let limit = if count == 0 {
            usize::MAX
        } else {
            count.unsigned_abs() as usize
        };
        // Mark which matches go, from the head or (count < 0) the tail.
        let len = l.len();
        let mut remove = vec![false; len];
        let mut removed = 0;
        let order: Box<dyn Iterator<Item = usize>> = if count < 0 {
            Box::new((0..len).rev())
        } else {
            Box::new(0..len)
        };
        for i in order {
            if removed == limit {
                break;
            }
            if l.get(i) == Some(target) {
                remove[i] = true;
                removed += 1;
            }
        }
        if removed == 0 {
            return Ok((0, Ends::none()));
        }
        let mut i = 0;
        l.retain(|_| {
            let keep = !remove[i];
            i += 1;
            keep
        });
        Ok((removed as i64, Ends::rewritten()))
    })?;
    Ok(Reply::Int(n))
}

pub fn ltrim(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    update_list(ctx, &a[1], false, |l| {
        let Some(l) = l else {
            return Ok((Reply::OK, Ends::none()));
        };
        let len = l.len();
        let (keep_from, keep_to) = range(start, stop, len).unwrap_or((len, len));
        let mut ends = Ends::none();
        for _ in 0..keep_from.min(len) {
            l.pop_front();
            ends.popped_front += 1;
        }
        let tail = if keep_from >= len {
            0
        } else {
            len - 1 - keep_to
        };
        for _ in 0..tail {
            l.pop_back();
            ends.popped_back += 1;
        }
        Ok((Reply::OK, ends))
    })
}

pub fn lpos(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
    let mut i = 3;
    while i < a.len() {
        let value = a.get(i + 1).ok_or_else(err::syntax)?;
        let n = int_arg(value)?;
        if is(&a[i], "RANK") {
            if n == 0 {
                return Err(Reply::err(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                ));
            }
            if n == i64::MIN {
                return Err(Reply::err("ERR value is out of range"));
            }
            rank = n;
        } else if is(&a[i], "COUNT") {
            if n < 0 {
                return Err(Reply::err("ERR COUNT can't be negative"));
            }
            count = Some(n as usize);
        } else if is(&a[i], "MAXLEN") {
            if n < 0 {
                return Err(Reply::err("ERR MAXLEN can't be negative"));
            }
            maxlen = n as usize;
        } else {
            return Err(err::syntax());
        }
        i += 2;
    }
    let target = &a[2][..];
    with_list(ctx, &a[1], |l| {
        let mut found = Vec::new();
        if let Some(l) = l {
            let want = match count {
                Some(0) => usize::MAX,
                Some(c) => c,
                None => 1,
            };
            let scan = if maxlen == 0 {
                l.len()
            } else {
                maxlen.min(l.len())
            };
            let mut skip = rank.unsigned_abs() as usize - 1;
            let mut check = |p: usize| {
                if l.get(p) == Some(target) {
                    if skip > 0 {
                        skip -= 1;
                    } else {
                        found.push(p as i64);
                    }
                }
                found.len() < want
            };
            if rank > 0 {
                for p in 0..scan {
                    if !check(p) {
                        break;
                    }
                }
            } else {
                for p in (l.len() - scan..l.len()).rev() {
                    if !check(p) {
                        break;
                    }
                }
            }
        }
        match count {
            Some(_) => Reply::Array(found.into_iter().map(Reply::Int).collect()),
            None => found.first().map_or(Reply::Nil, |p| Reply::Int(*p)),
        }
    })
}

/// Moves one item from `from` of `src` to `to` of `dst`. The destination
/// is checked first, so a wrong type there pops nothing.
fn move_one(ctx: &mut Ctx<'_>, src: &[u8], dst: &[u8], from: End, to: End) -> CmdResult {
    if src != dst {
        with_list(ctx, dst, |_| ())?;
    }
    let Some(mut items) = pop_n(ctx, src, from, 1)? else {
        return Ok(Reply::Nil);
    };
    let Some(item) = items.pop() else {
        return Ok(Reply::Nil);
    };
    update_list(ctx, dst, true, |l| {
        let l = l.expect("created");
        let mut ends = Ends::none();
        match to {
            End::Left => {
                l.push_front(item.to_vec().into());
                ends.pushed_front = 1;
            }
            End::Right => {
                l.push_back(item.to_vec().into());
                ends.pushed_back = 1;
            }
        }
        Ok(((), ends))
    })?;
    Ok(Reply::Bulk(item))
}

pub fn lmove(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (from, to) = (end_arg(&a[3])?, end_arg(&a[4])?);
    ctx.atomic(|ctx| move_one(ctx, &a[1], &a[2], from, to))
}

pub fn rpoplpush(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.atomic(|ctx| move_one(ctx, &a[1], &a[2], End::Right, End::Left))
}

/// The `[COUNT n]` that ends LMPOP and ZMPOP (1 without it).
pub(super) fn mpop_count(opts: &[Bytes]) -> Result<usize, Reply> {
    match opts {
        [] => Ok(1),
        [w, n] if is(w, "COUNT") => int_arg(n)
            .ok()
            .filter(|c| *c > 0)
            .map(|c| c as usize)
            .ok_or_else(|| Reply::err("ERR count should be greater than 0")),
        _ => Err(err::syntax()),
    }
}

pub fn lmpop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let n = int_arg(&a[1])
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Reply::err("ERR numkeys should be greater than 0"))? as usize;
    let keys = a.get(2..2 + n).ok_or_else(err::syntax)?;
    let rest = &a[2 + n..];
    let end = end_arg(rest.first().ok_or_else(err::syntax)?)?;
    let count = mpop_count(&rest[1..])?;
    for key in keys {
        if let Some(items) = pop_n(ctx, key, end, count)? {
            if !items.is_empty() {
                return Ok(Reply::Array(vec![
                    Reply::Bulk(key.clone()),
                    Reply::Array(items.into_iter().map(Reply::Bulk).collect()),
                ]));
            }
        }
    }
    Ok(Reply::NilArray)
}

/// BLPOP / BRPOP without waiting: the first item of the first non-empty
/// list as (key, item), or a nil array for the caller to wait on.
fn bpop(ctx: &mut Ctx<'_>, a: &[Bytes], end: End) -> CmdResult {
    let (keys, timeout) = a[1..].split_at(a.len() - 2);
    timeout_arg(&timeout[0])?;
    for key in keys {
        if let Some(item) = pop_n(ctx, key, end, 1)?.and_then(|mut items| items.pop()) {
            return Ok(Reply::Array(vec![
                Reply::Bulk(key.clone()),
                Reply::Bulk(item),
            ]));
        }
    }
    Ok(Reply::NilArray)
}

pub fn blpop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    bpop(ctx, a, End::Left)
}

pub fn brpop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    bpop(ctx, a, End::Right)
}

pub fn blmove(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (from, to) = (end_arg(&a[3])?, end_arg(&a[4])?);
    timeout_arg(&a[5])?;
    ctx.atomic(|ctx| move_one(ctx, &a[1], &a[2], from, to))
}

pub fn brpoplpush(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    timeout_arg(&a[3])?;
    ctx.atomic(|ctx| move_one(ctx, &a[1], &a[2], End::Right, End::Left))
}

/// BLMPOP timeout numkeys key... LEFT|RIGHT [COUNT n]: LMPOP after the
/// timeout.
pub fn blmpop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    timeout_arg(&a[1])?;
    lmpop(ctx, &a[1..])
}
