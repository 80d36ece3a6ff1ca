//! Sorted-set commands; job queues keep delayed and prioritised jobs in
//! sorted sets, feature stores keep ranked candidates. Changes log only the
//! members they touch (see [`Change::Fields`]).

use std::collections::HashMap;

use bytes::Bytes;

use super::blocking::timeout_arg;
use super::hashes::Delta;
use super::keys::{cursor_arg, scan_options, scan_page};
use super::lists::{mpop_count, range};
use super::reply::{format_double, Reply};
use super::sets::{counted_keys, limit_option};
use super::{err, float_arg, int_arg, is, CmdResult, Ctx};
use crate::storage::{Change, LexBound, Members, ReadHint, Record, ScoreBound, SortedSet, Value};

/// Owned members with their scores.
type Scored = Vec<(Box<[u8]>, f64)>;

fn zset_of<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&SortedSet>) -> R,
) -> Result<R, Reply> {
    ctx.read_as(key, f)
}

/// A member and its score as a reply pair.
fn pair(m: &[u8], score: f64) -> (Reply, Reply) {
    (Reply::bulk(m.to_vec()), Reply::Double(score))
}

/// Members, with their scores if asked.
fn scored_reply<'a>(items: impl Iterator<Item = (&'a [u8], f64)>, withscores: bool) -> Reply {
    if withscores {
        Reply::Pairs(items.map(|(m, s)| pair(m, s)).collect())
    } else {
        Reply::Array(items.map(|(m, _)| Reply::bulk(m.to_vec())).collect())
    }
}

fn score_arg(b: &[u8]) -> Result<f64, Reply> {
    float_arg(b)
}

/// `1.5`, `(1.5`, `-inf`, `+inf`.
fn score_bound(b: &[u8]) -> Result<ScoreBound, Reply> {
    let bad = || Reply::err("ERR min or max is not a float");
    let (exclusive, num) = match b.first() {
        Some(b'(') => (true, &b[1..]),
        _ => (false, b),
    };
    let score = float_arg(num).map_err(|_| bad())?;
    Ok(ScoreBound { score, exclusive })
}

/// `[m`, `(m`, `-`, `+`; `low` says which end of the range it is. A
/// bound that excludes everything (`+` as the low end) is None.
fn lex_bound(b: &[u8], low: bool) -> Result<Option<LexBound>, Reply> {
    let bad = || Reply::err("ERR min or max not valid string range item");
    Ok(match b.first() {
        Some(b'-') if b.len() == 1 => (low).then_some(LexBound::Open),
        Some(b'+') if b.len() == 1 => (!low).then_some(LexBound::Open),
        Some(b'[') => Some(LexBound::Inclusive(b[1..].into())),
        Some(b'(') => Some(LexBound::Exclusive(b[1..].into())),
        _ => return Err(bad()),
    })
}

/// What a range command selects.
enum Bounds {
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound),
    /// None: a range that holds nothing.
    Lex(Option<(LexBound, LexBound)>),
}

/// A parsed range query (ZRANGE and its older forms).
struct Query {
    bounds: Bounds,
    rev: bool,
    /// Offset and count; a negative count means all.
    limit: Option<(i64, i64)>,
    withscores: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Rank,
    Score,
    Lex,
}

/// Which options a range command accepts.
#[derive(Clone, Copy)]
struct Allowed {
    by: bool,
    rev: bool,
    limit: bool,
    withscores: bool,
}

/// Parses `start stop [options]`. With REV, a score or lex range gives
/// its upper bound first, as in Redis.
fn parse_query(
    start: &[u8],
    stop: &[u8],
    opts: &[Bytes],
    mut by: By,
    mut rev: bool,
    allowed: Allowed,
) -> Result<Query, Reply> {
    let (mut limit, mut withscores) = (None, false);
    let mut i = 0;
    while i < opts.len() {
        let o = &opts[i];
        if allowed.withscores && is(o, "WITHSCORES") {
            withscores = true;
        } else if allowed.by && is(o, "BYSCORE") && by != By::Lex {
            by = By::Score;
        } else if allowed.by && is(o, "BYLEX") && by != By::Score {
            by = By::Lex;
        } else if allowed.rev && is(o, "REV") {
            rev = true;
        } else if allowed.limit && is(o, "LIMIT") && i + 2 < opts.len() {
            limit = Some((int_arg(&opts[i + 1])?, int_arg(&opts[i + 2])?));
            i += 2;
        } else {
            return Err(err::syntax());
        }
        i += 1;
    }
    if limit.is_some() && by == By::Rank {
        return Err(Reply::err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if withscores && by == By::Lex {
        return Err(Reply::err(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    let (lo, hi) = if rev && by != By::Rank {
        (stop, start)
    } else {
        (start, stop)
    };
    let bounds = match by {
        By::Rank => Bounds::Rank(int_arg(start)?, int_arg(stop)?),
        By::Score => Bounds::Score(score_bound(lo)?, score_bound(hi)?),
        By::Lex => {
            let (min, max) = (lex_bound(lo, true)?, lex_bound(hi, false)?);
            Bounds::Lex(min.zip(max))
        }
    };
    Ok(Query {
        bounds,
        rev,
        limit,
        withscores,
    })
}

/// The members a query selects, in reply order.
fn select<'a>(z: &'a SortedSet, q: &'a Query) -> Vec<(&'a [u8], f64)> {
    let items: Members<'a> = match &q.bounds {
        Bounds::Rank(start, stop) => {
            let Some((s, e)) = range(*start, *stop, z.len()) else {
                return Vec::new();
            };
            let n = e - s + 1;
            return if q.rev {
                z.iter().rev().skip(s).take(n).collect()
            } else {
                z.iter().skip(s).take(n).collect()
            };
        }
        Bounds::Score(min, max) => z.range_by_score(*min, *max),
        Bounds::Lex(None) => return Vec::new(),
        Bounds::Lex(Some((min, max))) => z.range_by_lex(min, max),
    };
    let items: Box<dyn Iterator<Item = (&[u8], f64)>> =
        if q.rev { Box::new(items.rev()) } else { items };
    match q.limit {
        None => items.collect(),
        Some((offset, _)) if offset < 0 => Vec::new(),
        Some((offset, count)) => {
            let count = if count < 0 {
                usize::MAX
            } else {
                count as usize
            };
            items.skip(offset as usize).take(count).collect()
        }
    }
}

const RANGE_OPTS: Allowed = Allowed {
    by: true,
    rev: true,
    limit: true,
    withscores: true,
};

fn run_query(ctx: &mut Ctx<'_>, key: &[u8], q: Query) -> CmdResult {
    zset_of(ctx, key, |z| match z {
        None => Reply::Array(Vec::new()),
        Some(z) => scored_reply(select(z, &q).into_iter(), q.withscores),
    })
}

pub fn zrange(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let q = parse_query(&a[2], &a[3], &a[4..], By::Rank, false, RANGE_OPTS)?;
    run_query(ctx, &a[1], q)
}

pub fn zrevrange(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let allowed = Allowed {
        by: false,
        rev: false,
        limit: false,
        withscores: true,
    };
    let q = parse_query(&a[2], &a[3], &a[4..], By::Rank, true, allowed)?;
    run_query(ctx, &a[1], q)
}

fn by_score(ctx: &mut Ctx<'_>, a: &[Bytes], rev: bool) -> CmdResult {
    let allowed = Allowed {
        by: false,
        rev: false,
        limit: true,
        withscores: true,
    };
    let q = parse_query(&a[2], &a[3], &a[4..], By::Score, rev, allowed)?;
    run_query(ctx, &a[1], q)
}

pub fn zrangebyscore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    by_score(ctx, a, false)
}

pub fn zrevrangebyscore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    by_score(ctx, a, true)
}

fn by_lex(ctx: &mut Ctx<'_>, a: &[Bytes], rev: bool) -> CmdResult {
    let allowed = Allowed {
        by: false,
        rev: false,
        limit: true,
        withscores: false,
    };
    let q = parse_query(&a[2], &a[3], &a[4..], By::Lex, rev, allowed)?;
    run_query(ctx, &a[1], q)
}

pub fn zrangebylex(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    by_lex(ctx, a, false)
}

pub fn zrevrangebylex(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    by_lex(ctx, a, true)
}

/// Replaces `dst` with a sorted set of `items` (deleting it if there are
/// none); returns how many members it holds.
pub(super) fn store_zset(ctx: &mut Ctx<'_>, dst: &[u8], items: Scored) -> CmdResult {
    let mut z = SortedSet::new();
    for (m, s) in items {
        z.insert(&m, s);
    }
    let n = z.len() as i64;
    ctx.write(dst, |cur| {
        if z.is_empty() {
            let existed = cur.is_some();
            *cur = None;
            return ((), existed);
        }
        *cur = Some(Record::new(Value::ZSet(Box::new(z))));
        ((), true)
    })?;
    Ok(Reply::Int(n))
}

pub fn zrangestore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let allowed = Allowed {
        withscores: false,
        ..RANGE_OPTS
    };
    let q = parse_query(&a[3], &a[4], &a[5..], By::Rank, false, allowed)?;
    ctx.atomic(|ctx| {
        let items = zset_of(ctx, &a[2], |z| {
            z.map(|z| {
                select(z, &q)
                    .into_iter()
                    .map(|(m, s)| (Box::from(m), s))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        })?;
        store_zset(ctx, &a[1], items)
    })
}

/// Whether an update applies to a member that has a score.
#[derive(Clone, Copy, Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

/// What [`add_one`] did.
enum Added {
    /// A flag ruled it out.
    Skipped,
    /// New member with this score.
    New(f64),
    /// Score changed to this.
    Updated(f64),
    /// Score stayed this.
    Same(f64),
}

/// Adds or updates one member under `flags`.
fn add_one(z: &mut SortedSet, m: &[u8], score: f64, flags: AddFlags) -> Result<Added, Reply> {
    let Some(cur) = z.score(m) else {
        if flags.xx {
            return Ok(Added::Skipped);
        }
        z.insert(m, score);
        return Ok(Added::New(score));
    };
    if flags.nx {
        return Ok(Added::Skipped);
    }
    let new = if flags.incr { cur + score } else { score };
    if new.is_nan() {
        return Err(Reply::err("ERR resulting score is not a number (NaN)"));
    }
    if (flags.gt && new <= cur) || (flags.lt && new >= cur) {
        return Ok(Added::Skipped);
    }
    if new.to_bits() == cur.to_bits() {
        return Ok(Added::Same(new));
    }
    z.insert(m, new);
    Ok(Added::Updated(new))
}

fn check_member(ctx: &Ctx<'_>, m: &[u8]) -> Result<(), Reply> {
    if m.len() > ctx.max_bulk() {
        return Err(err::too_big());
    }
    Ok(())
}

pub fn zadd(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut flags = AddFlags::default();
    let mut i = 2;
    while i < a.len() {
        let o = &a[i];
        if is(o, "NX") {
            flags.nx = true;
        } else if is(o, "XX") {
            flags.xx = true;
        } else if is(o, "GT") {
            flags.gt = true;
        } else if is(o, "LT") {
            flags.lt = true;
        } else if is(o, "CH") {
            flags.ch = true;
        } else if is(o, "INCR") {
            flags.incr = true;
        } else {
            break;
        }
        i += 1;
    }
    let pairs = &a[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(err::syntax());
    }
    if flags.nx && flags.xx {
        return Err(Reply::err(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (flags.nx && (flags.gt || flags.lt)) || (flags.gt && flags.lt) {
        return Err(Reply::err(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if flags.incr && pairs.len() > 2 {
        return Err(Reply::err(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let mut parsed = Vec::with_capacity(pairs.len() / 2);
    for p in pairs.chunks(2) {
        check_member(ctx, &p[1])?;
        parsed.push((score_arg(&p[0])?, &p[1]));
    }
    let (added, changed, last) = ctx.update(&a[1], !flags.xx, |z: Option<&mut SortedSet>| {
        let Some(z) = z else {
            return Ok(((0, 0, None), Change::None));
        };
        let (mut added, mut changed, mut last) = (0, 0, None);
        let mut delta = Delta::default();
        for (score, m) in &parsed {
            match add_one(z, m, *score, flags)? {
                Added::Skipped => continue,
                Added::Same(s) => last = Some(s),
                Added::New(s) => {
                    (added, last) = (added + 1, Some(s));
                    delta.set.push(m.to_vec().into());
                }
                Added::Updated(s) => {
                    (changed, last) = (changed + 1, Some(s));
                    delta.set.push(m.to_vec().into());
                }
            }
        }
        Ok(((added, changed, last), delta.change()))
    })?;
    if flags.incr {
        return Ok(last.map_or(Reply::Nil, Reply::Double));
    }
    Ok(Reply::Int(if flags.ch { added + changed } else { added }))
}

pub fn zincrby(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let by = score_arg(&a[2])?;
    check_member(ctx, &a[3])?;
    let flags = AddFlags {
        incr: true,
        ..AddFlags::default()
    };
    let new = ctx.update(&a[1], true, |z: Option<&mut SortedSet>| {
        let z = z.expect("created");
        Ok(match add_one(z, &a[3], by, flags)? {
            Added::New(s) | Added::Updated(s) => (Some(s), Delta::set(&a[3]).change()),
            Added::Same(s) => (Some(s), Change::None),
            Added::Skipped => (None, Change::None),
        })
    })?;
    Ok(new.map_or(Reply::Nil, Reply::Double))
}

pub fn zrem(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let n = ctx.update(&a[1], false, |z: Option<&mut SortedSet>| {
        let Some(z) = z else {
            return Ok((0, Change::None));
        };
        let mut delta = Delta::default();
        for m in &a[2..] {
            if z.remove(m).is_some() {
                delta.removed.push(m.to_vec().into());
            }
        }
        Ok((delta.removed.len() as i64, delta.change()))
    })?;
    Ok(Reply::Int(n))
}

pub fn zcard(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    zset_of(ctx, &a[1], |z| Reply::Int(z.map_or(0, |z| z.len()) as i64))
}

pub fn zcount(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (min, max) = (score_bound(&a[2])?, score_bound(&a[3])?);
    zset_of(ctx, &a[1], |z| {
        Reply::Int(z.map_or(0, |z| z.range_by_score(min, max).count()) as i64)
    })
}

pub fn zlexcount(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (min, max) = (lex_bound(&a[2], true)?, lex_bound(&a[3], false)?);
    let Some((min, max)) = min.zip(max) else {
        return Ok(Reply::Int(0));
    };
    zset_of(ctx, &a[1], |z| {
        Reply::Int(z.map_or(0, |z| z.range_by_lex(&min, &max).count()) as i64)
    })
}

pub fn zscore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    zset_of(ctx, &a[1], |z| {
        z.and_then(|z| z.score(&a[2]))
            .map_or(Reply::Nil, Reply::Double)
    })
}

pub fn zmscore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    zset_of(ctx, &a[1], |z| {
        Reply::Array(
            a[2..]
                .iter()
                .map(|m| z.and_then(|z| z.score(m)).map_or(Reply::Nil, Reply::Double))
                .collect(),
        )
    })
}

fn rank(ctx: &mut Ctx<'_>, a: &[Bytes], rev: bool) -> CmdResult {
    let withscore = match a.get(3) {
        None => false,
        Some(o) if is(o, "WITHSCORE") && a.len() == 4 => true,
        Some(_) => return Err(err::syntax()),
    };
    zset_of(ctx, &a[1], |z| {
        let found = z.and_then(|z| {
            let r = z.rank(&a[2])?;
            let r = if rev { z.len() - 1 - r } else { r };
            Some((r as i64, z.score(&a[2])?))
        });
        match (found, withscore) {
            (None, false) => Reply::Nil,
            (None, true) => Reply::NilArray,
            (Some((r, _)), false) => Reply::Int(r),
            (Some((r, s)), true) => Reply::Array(vec![Reply::Int(r), Reply::Double(s)]),
        }
    })
}

pub fn zrank(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    rank(ctx, a, false)
}

pub fn zrevrank(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    rank(ctx, a, true)
}

/// Removes what `q` selects from the set at `key`.
fn remove_range(ctx: &mut Ctx<'_>, key: &[u8], q: Query) -> CmdResult {
    let n = ctx.update(key, false, |z: Option<&mut SortedSet>| {
        let Some(z) = z else {
            return Ok((0, Change::None));
        };
        let doomed: Vec<Box<[u8]>> = select(z, &q).into_iter().map(|(m, _)| m.into()).collect();
        for m in &doomed {
            z.remove(m);
        }
        let n = doomed.len() as i64;
        let delta = Delta {
            set: Vec::new(),
            removed: doomed,
        };
        Ok((n, delta.change()))
    })?;
    Ok(Reply::Int(n))
}

const NO_OPTS: Allowed = Allowed {
    by: false,
    rev: false,
    limit: false,
    withscores: false,
};

pub fn zremrangebyrank(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let q = parse_query(&a[2], &a[3], &[], By::Rank, false, NO_OPTS)?;
    remove_range(ctx, &a[1], q)
}

pub fn zremrangebyscore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let q = parse_query(&a[2], &a[3], &[], By::Score, false, NO_OPTS)?;
    remove_range(ctx, &a[1], q)
}

pub fn zremrangebylex(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let q = parse_query(&a[2], &a[3], &[], By::Lex, false, NO_OPTS)?;
    remove_range(ctx, &a[1], q)
}

/// Pops up to `count` members from the low (or high) end; None if there
/// is no set.
fn pop_n(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    highest: bool,
    count: usize,
) -> Result<Option<Scored>, Reply> {
    ctx.update(key, false, |z: Option<&mut SortedSet>| {
        let Some(z) = z else {
            return Ok((None, Change::None));
        };
        let mut out = Vec::with_capacity(count.min(z.len()));
        while out.len() < count {
            match z.pop(highest) {
                Some(item) => out.push(item),
                None => break,
            }
        }
        let delta = Delta {
            set: Vec::new(),
            removed: out.iter().map(|(m, _)| m.clone()).collect(),
        };
        Ok((Some(out), delta.change()))
    })
}

fn zpop(ctx: &mut Ctx<'_>, a: &[Bytes], highest: bool) -> CmdResult {
    if a.len() > 3 {
        return Err(err::syntax());
    }
    let count = match a.get(2) {
        None => None,
        Some(c) => Some(
            int_arg(c)
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| Reply::err("ERR value is out of range, must be positive"))?
                as usize,
        ),
    };
    let popped = pop_n(ctx, &a[1], highest, count.unwrap_or(1))?.unwrap_or_default();
    Ok(match count {
        // One member: a flat member-score array, in either protocol.
        None => Reply::Array(
            popped
                .iter()
                .flat_map(|(m, s)| {
                    let (m, s) = pair(m, *s);
                    [m, s]
                })
                .collect(),
        ),
        Some(_) => Reply::Pairs(popped.iter().map(|(m, s)| pair(m, *s)).collect()),
    })
}

pub fn zpopmin(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    zpop(ctx, a, false)
}

pub fn zpopmax(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    zpop(ctx, a, true)
}

pub fn zmpop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (keys, rest) = counted_keys(a)?;
    let highest = match rest.first() {
        Some(w) if is(w, "MIN") => false,
        Some(w) if is(w, "MAX") => true,
        _ => return Err(err::syntax()),
    };
    let count = mpop_count(&rest[1..])?;
    for key in keys {
        if let Some(items) = pop_n(ctx, key, highest, count)? {
            if !items.is_empty() {
                return Ok(Reply::Array(vec![
                    Reply::Bulk(key.clone()),
                    Reply::Array(
                        items
                            .iter()
                            .map(|(m, s)| {
                                let (m, s) = pair(m, *s);
                                Reply::Array(vec![m, s])
                            })
                            .collect(),
                    ),
                ]));
            }
        }
    }
    Ok(Reply::NilArray)
}

pub fn zrandmember(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if a.len() > 4 || (a.len() == 4 && !is(&a[3], "WITHSCORES")) {
        return Err(err::syntax());
    }
    let count = a.get(2).map(|c| int_arg(c)).transpose()?;
    if count.is_some_and(|c| c < -(i64::MAX / 2)) {
        return Err(Reply::err("ERR value is out of range"));
    }
    let withscores = a.len() == 4;
    zset_of(ctx, &a[1], |z| {
        let mut rng = rand::rng();
        let Some(count) = count else {
            return z
                .and_then(|z| z.random(&mut rng))
                .map_or(Reply::Nil, |(m, _)| Reply::bulk(m.to_vec()));
        };
        let Some(z) = z else {
            return Reply::Array(Vec::new());
        };
        let picked: Vec<(&[u8], f64)> = if count < 0 {
            (0..count.unsigned_abs())
                .filter_map(|_| z.random(&mut rng))
                .collect()
        } else if count as usize >= z.len() {
            z.iter().collect()
        } else {
            rand::seq::index::sample(&mut rng, z.len(), count as usize)
                .into_iter()
                .filter_map(|i| z.get_index(i))
                .collect()
        };
        scored_reply(picked.into_iter(), withscores)
    })
}

/// How scores of a member in several sets combine.
#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    fn apply(self, a: f64, b: f64) -> f64 {
        let v = match self {
            Aggregate::Sum => a + b,
            Aggregate::Min => a.min(b),
            Aggregate::Max => a.max(b),
        };
        // inf + -inf: Redis takes 0.
        if v.is_nan() {
            0.0
        } else {
            v
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

/// The members and scores of a sorted set, or of a set (every score 1).
fn scored_members(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Scored, Reply> {
    ctx.read(key, ReadHint::Normal, |r| {
        match r.map(|(rec, _)| &rec.value) {
            None => Ok(Vec::new()),
            Some(Value::ZSet(z)) => Ok(z.iter().map(|(m, s)| (Box::from(m), s)).collect()),
            Some(Value::Set(s)) => Ok(s.iter().map(|m| (Box::from(m), 1.0)).collect()),
            Some(_) => Err(err::wrongtype()),
        }
    })?
}

/// Combines the sets of `keys` by `op`, weighting and aggregating scores.
fn combine(
    ctx: &mut Ctx<'_>,
    keys: &[Bytes],
    op: SetOp,
    weights: &[f64],
    agg: Aggregate,
) -> Result<Scored, Reply> {
    let mut inputs = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let w = weights.get(i).copied().unwrap_or(1.0);
        let items = scored_members(ctx, k)?;
        inputs.push(
            items
                .into_iter()
                .map(|(m, s)| {
                    let v = s * w;
                    (m, if v.is_nan() { 0.0 } else { v })
                })
                .collect::<Vec<_>>(),
        );
    }
    let mut acc: HashMap<Box<[u8]>, f64> = HashMap::new();
    let mut inputs = inputs.into_iter();
    if let Some(first) = inputs.next() {
        acc.extend(first);
    }
    for items in inputs {
        match op {
            SetOp::Union => {
                for (m, s) in items {
                    acc.entry(m)
                        .and_modify(|v| *v = agg.apply(*v, s))
                        .or_insert(s);
                }
            }
            SetOp::Inter => {
                let other: HashMap<Box<[u8]>, f64> = items.into_iter().collect();
                acc.retain(|m, v| match other.get(m) {
                    Some(s) => {
                        *v = agg.apply(*v, *s);
                        true
                    }
                    None => false,
                });
            }
            SetOp::Diff => {
                for (m, _) in items {
                    acc.remove(&m);
                }
            }
        }
    }
    let mut out: Scored = acc.into_iter().collect();
    out.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
    Ok(out)
}

/// Parses `numkeys key ... [WEIGHTS ...] [AGGREGATE ...] [WITHSCORES]`,
/// starting at `a[0]` = numkeys (shifted by the caller).
fn combine_args(
    a: &[Bytes],
    op: SetOp,
    allow_withscores: bool,
) -> Result<(Vec<Bytes>, Vec<f64>, Aggregate, bool), Reply> {
    let (keys, opts) = counted_keys(a)?;
    let (mut weights, mut agg, mut withscores) = (Vec::new(), Aggregate::Sum, false);
    let mut i = 0;
    while i < opts.len() {
        let o = &opts[i];
        if op != SetOp::Diff && is(o, "WEIGHTS") {
            let ws = opts
                .get(i + 1..i + 1 + keys.len())
                .ok_or_else(err::syntax)?;
            weights = ws
                .iter()
                .map(|w| float_arg(w).map_err(|_| Reply::err("ERR weight value is not a float")))
                .collect::<Result<_, _>>()?;
            i += keys.len();
        } else if op != SetOp::Diff && is(o, "AGGREGATE") {
            let which = opts.get(i + 1).ok_or_else(err::syntax)?;
            agg = if is(which, "SUM") {
                Aggregate::Sum
            } else if is(which, "MIN") {
                Aggregate::Min
            } else if is(which, "MAX") {
                Aggregate::Max
            } else {
                return Err(err::syntax());
            };
            i += 1;
        } else if allow_withscores && is(o, "WITHSCORES") {
            withscores = true;
        } else {
            return Err(err::syntax());
        }
        i += 1;
    }
    Ok((keys.to_vec(), weights, agg, withscores))
}

fn read_combined(ctx: &mut Ctx<'_>, a: &[Bytes], op: SetOp) -> CmdResult {
    let (keys, weights, agg, withscores) = combine_args(a, op, true)?;
    let out = combine(ctx, &keys, op, &weights, agg)?;
    Ok(scored_reply(
        out.iter().map(|(m, s)| (&m[..], *s)),
        withscores,
    ))
}

fn store_combined(ctx: &mut Ctx<'_>, a: &[Bytes], op: SetOp) -> CmdResult {
    let (keys, weights, agg, _) = combine_args(&a[1..], op, false)?;
    ctx.atomic(|ctx| {
        let out = combine(ctx, &keys, op, &weights, agg)?;
        store_zset(ctx, &a[1], out)
    })
}

pub fn zunion(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    read_combined(ctx, a, SetOp::Union)
}

pub fn zinter(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    read_combined(ctx, a, SetOp::Inter)
}

pub fn zdiff(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    read_combined(ctx, a, SetOp::Diff)
}

pub fn zunionstore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    store_combined(ctx, a, SetOp::Union)
}

pub fn zinterstore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    store_combined(ctx, a, SetOp::Inter)
}

pub fn zdiffstore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    store_combined(ctx, a, SetOp::Diff)
}

pub fn zintercard(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (keys, opts) = counted_keys(a)?;
    let limit = limit_option(opts)?;
    let out = combine(ctx, keys, SetOp::Inter, &[], Aggregate::Sum)?;
    let n = if limit > 0 {
        out.len().min(limit)
    } else {
        out.len()
    };
    Ok(Reply::Int(n as i64))
}

pub fn zscan(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let cursor = cursor_arg(&a[2])?;
    let (pattern, count, _) = scan_options(&a[3..], false)?;
    zset_of(ctx, &a[1], |z| {
        let (next, page) = match z {
            None => (0, Vec::new()),
            Some(z) => scan_page(z.iter(), cursor, count, pattern.as_deref()),
        };
        let mut out = Vec::with_capacity(page.len() * 2);
        for (m, s) in page {
            out.push(Reply::bulk(m.to_vec()));
            out.push(Reply::bulk(format_double(s)));
        }
        Reply::Array(vec![Reply::bulk(next.to_string()), Reply::Array(out)])
    })
}

/// BZPOPMIN / BZPOPMAX without waiting: (key, member, score) from the
/// first non-empty set, or a nil array for the caller to wait on.
fn bzpop(ctx: &mut Ctx<'_>, a: &[Bytes], highest: bool) -> CmdResult {
    let (keys, timeout) = a[1..].split_at(a.len() - 2);
    timeout_arg(&timeout[0])?;
    for key in keys {
        let popped = pop_n(ctx, key, highest, 1)?.unwrap_or_default();
        if let Some((m, s)) = popped.first() {
            let (m, s) = pair(m, *s);
            return Ok(Reply::Array(vec![Reply::Bulk(key.clone()), m, s]));
        }
    }
    Ok(Reply::NilArray)
}

pub fn bzpopmin(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    bzpop(ctx, a, false)
}

pub fn bzpopmax(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    bzpop(ctx, a, true)
}

/// BZMPOP timeout numkeys key... MIN|MAX [COUNT n]: ZMPOP after the
/// timeout.
pub fn bzmpop(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    timeout_arg(&a[1])?;
    zmpop(ctx, &a[1..])
}
