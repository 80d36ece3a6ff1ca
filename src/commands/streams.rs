//! Stream commands: an append-only event log with consumer groups (seed
//! 004's log). Every change is logged as [`StreamOp`]s, never the whole
//! stream.

use bytes::Bytes;

use super::blocking::block_arg;
use super::reply::Reply;
use super::{err, int_arg, is, CmdResult, Ctx};
use crate::storage::{
    now_ms, Change, Consumer, Fields, Group, Pending, StreamData, StreamId, StreamOp,
};

fn invalid_id() -> Reply {
    Reply::err("ERR Invalid stream ID specified as stream command argument")
}

fn u64_arg(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse::<u64>().ok()
}

/// `ms-seq`, `ms` (with `missing_seq`), `-` and `+`.
fn parse_id(b: &[u8], missing_seq: u64) -> Result<StreamId, Reply> {
    match b {
        b"-" => return Ok(StreamId::MIN),
        b"+" => return Ok(StreamId::MAX),
        _ => {}
    }
    let (ms, seq) = match b.iter().position(|&c| c == b'-') {
        Some(i) => (
            u64_arg(&b[..i]).ok_or_else(invalid_id)?,
            u64_arg(&b[i + 1..]).ok_or_else(invalid_id)?,
        ),
        None => (u64_arg(b).ok_or_else(invalid_id)?, missing_seq),
    };
    Ok(StreamId { ms, seq })
}

/// A range start: `-`, an ID, or `(id` for strictly after it.
fn range_start(b: &[u8]) -> Result<Option<StreamId>, Reply> {
    match b.strip_prefix(b"(") {
        Some(rest) => {
            let id = parse_id(rest, 0)?;
            if rest == b"+" || rest == b"-" {
                return Err(Reply::err("ERR invalid start ID for the interval"));
            }
            Ok(id.next())
        }
        None => parse_id(b, 0).map(Some),
    }
}

/// A range end: `+`, an ID, or `(id` for strictly before it.
fn range_end(b: &[u8]) -> Result<Option<StreamId>, Reply> {
    match b.strip_prefix(b"(") {
        Some(rest) => {
            let id = parse_id(rest, u64::MAX)?;
            if rest == b"+" || rest == b"-" {
                return Err(Reply::err("ERR invalid end ID for the interval"));
            }
            Ok(id.prev())
        }
        None => parse_id(b, u64::MAX).map(Some),
    }
}

fn id_reply(id: StreamId) -> Reply {
    Reply::bulk(id.to_string())
}

fn entry_reply(id: StreamId, fields: Option<&Fields>) -> Reply {
    Reply::Array(vec![
        id_reply(id),
        match fields {
            Some(f) => Reply::Array(f.iter().map(|v| Reply::bulk(v.to_vec())).collect()),
            None => Reply::NilArray,
        },
    ])
}

fn stream_of<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&StreamData>) -> R,
) -> Result<R, Reply> {
    ctx.read_as(key, f)
}

/// Changes the stream at `key` (created if `create`); `f` returns its
/// result and the ops to log.
fn update_stream<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    create: bool,
    f: impl FnOnce(Option<&mut StreamData>) -> Result<(R, Vec<StreamOp>), Reply>,
) -> Result<R, Reply> {
    ctx.update(key, create, |s: Option<&mut StreamData>| {
        let (r, ops) = f(s)?;
        let change = if ops.is_empty() {
            Change::None
        } else {
            Change::Stream(ops)
        };
        Ok((r, change))
    })
}

/// A trimming rule: MAXLEN or MINID, exact or approximate, with a cap
/// on how many entries one trim removes.
#[derive(Clone, Copy)]
enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

#[derive(Clone, Copy)]
struct TrimSpec {
    trim: Trim,
    /// At most this many entries removed (approximate trims only).
    limit: Option<u64>,
}

/// Parses `MAXLEN|MINID [=|~] threshold [LIMIT n]` at `a[i]`; returns the
/// spec and the index after it.
fn parse_trim(a: &[Bytes], mut i: usize) -> Result<(TrimSpec, usize), Reply> {
    let maxlen = is(&a[i], "MAXLEN");
    i += 1;
    let mut approx = false;
    if let Some(op) = a.get(i) {
        if &op[..] == b"~" {
            approx = true;
            i += 1;
        } else if &op[..] == b"=" {
            i += 1;
        }
    }
    let threshold = a.get(i).ok_or_else(err::syntax)?;
    let trim = if maxlen {
        let n = int_arg(threshold)?;
        if n < 0 {
            return Err(Reply::err("ERR The MAXLEN argument must be >= 0."));
        }
        Trim::MaxLen(n as u64)
    } else {
        Trim::MinId(parse_id(threshold, 0)?)
    };
    i += 1;
    let mut limit = approx.then_some(10_000);
    if a.get(i).is_some_and(|o| is(o, "LIMIT")) {
        let n = a.get(i + 1).ok_or_else(err::syntax)?;
        let n = int_arg(n)?;
        if n < 0 {
            return Err(Reply::err("ERR The LIMIT argument must be >= 0."));
        }
        if !approx {
            return Err(Reply::err(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
        limit = (n > 0).then_some(n as u64);
        i += 2;
    }
    Ok((TrimSpec { trim, limit }, i))
}

/// Trims `s` by `spec`; returns the ops for the removed entries.
fn trim(s: &mut StreamData, spec: TrimSpec) -> Vec<StreamOp> {
    let mut ops = Vec::new();
    let cap = spec.limit.unwrap_or(u64::MAX);
    while (ops.len() as u64) < cap {
        let Some(first) = s.first_id() else { break };
        let go = match spec.trim {
            Trim::MaxLen(n) => s.len() as u64 > n,
            Trim::MinId(min) => first < min,
        };
        if !go {
            break;
        }
        s.remove(first);
        ops.push(StreamOp::Del(first));
    }
    ops
}

/// How XADD names the new entry.
enum NewId {
    Auto,
    AutoSeq(u64),
    Exact(StreamId),
}

fn parse_new_id(b: &[u8]) -> Result<NewId, Reply> {
    if b == b"*" {
        return Ok(NewId::Auto);
    }
    if let Some(ms) = b.strip_suffix(b"-*") {
        return Ok(NewId::AutoSeq(u64_arg(ms).ok_or_else(invalid_id)?));
    }
    Ok(NewId::Exact(parse_id(b, 0)?))
}

fn too_small() -> Reply {
    Reply::err("ERR The ID specified in XADD is equal or smaller than the target stream top item")
}

/// The ID the next entry gets.
fn next_id(s: &StreamData, how: &NewId) -> Result<StreamId, Reply> {
    let last = s.last_id;
    if last == StreamId::MAX {
        return Err(Reply::err(
            "ERR The stream has exhausted the last possible ID, unable to add more items",
        ));
    }
    match *how {
        NewId::Auto => {
            let ms = now_ms().max(last.ms);
            Ok(if ms == last.ms {
                last.next().unwrap_or(StreamId::MAX)
            } else {
                StreamId { ms, seq: 0 }
            })
        }
        NewId::AutoSeq(ms) => {
            if ms < last.ms {
                return Err(too_small());
            }
            if ms == last.ms {
                let seq = last.seq.checked_add(1).ok_or_else(too_small)?;
                return Ok(StreamId { ms, seq });
            }
            Ok(StreamId { ms, seq: 0 })
        }
        NewId::Exact(id) => {
            if id == StreamId::MIN {
                return Err(Reply::err(
                    "ERR The ID specified in XADD must be greater than 0-0",
                ));
            }
            if id <= last {
                return Err(too_small());
            }
            Ok(id)
        }
    }
}

pub fn xadd(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (mut nomkstream, mut trim_spec) = (false, None);
    let mut i = 2;
    loop {
        let Some(o) = a.get(i) else {
            return Err(err::arity("xadd"));
        };
        if is(o, "NOMKSTREAM") {
            nomkstream = true;
            i += 1;
        } else if is(o, "MAXLEN") || is(o, "MINID") {
            let (spec, next) = parse_trim(a, i)?;
            trim_spec = Some(spec);
            i = next;
        } else {
            break;
        }
    }
    let how = parse_new_id(&a[i])?;
    let pairs = &a[i + 1..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(err::arity("xadd"));
    }
    let max = ctx.max_bulk();
    if pairs.iter().any(|v| v.len() > max) {
        return Err(err::too_big());
    }
    let fields: Fields = pairs.iter().map(|v| Box::from(&v[..])).collect();
    let id = update_stream(ctx, &a[1], !nomkstream, |s| {
        let Some(s) = s else {
            return Ok((None, Vec::new()));
        };
        let id = next_id(s, &how)?;
        s.insert(id, fields.clone());
        s.last_id = id;
        s.entries_added += 1;
        let mut ops = vec![StreamOp::Add(id, fields)];
        if let Some(spec) = trim_spec {
            ops.extend(trim(s, spec));
        }
        ops.push(s.meta_op());
        Ok((Some(id), ops))
    })?;
    if id.is_some() {
        // Readers blocked on the stream may have something new.
        ctx.node.waiters.signal(ctx.s.db, &a[1]);
    }
    Ok(id.map_or(Reply::Nil, id_reply))
}

pub fn xlen(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    stream_of(ctx, &a[1], |s| Reply::Int(s.map_or(0, |s| s.len()) as i64))
}

/// `[COUNT n]` after a range; None means no limit.
fn count_option(opts: &[Bytes]) -> Result<Option<usize>, Reply> {
    match opts {
        [] => Ok(None),
        [w, n] if is(w, "COUNT") => {
            let n = int_arg(n)?;
            Ok(Some(n.max(0) as usize))
        }
        _ => Err(err::syntax()),
    }
}

fn range_cmd(ctx: &mut Ctx<'_>, a: &[Bytes], rev: bool) -> CmdResult {
    let (lo, hi) = if rev { (&a[3], &a[2]) } else { (&a[2], &a[3]) };
    let (start, end) = (range_start(lo)?, range_end(hi)?);
    let count = count_option(&a[4..])?;
    stream_of(ctx, &a[1], |s| {
        let (Some(s), Some(start), Some(end)) = (s, start, end) else {
            return Reply::Array(Vec::new());
        };
        if start > end || count == Some(0) {
            return Reply::Array(Vec::new());
        }
        let items = s.entries.range(start..=end);
        let take = count.unwrap_or(usize::MAX);
        let out: Vec<Reply> = if rev {
            items
                .rev()
                .take(take)
                .map(|(id, f)| entry_reply(*id, Some(f)))
                .collect()
        } else {
            items
                .take(take)
                .map(|(id, f)| entry_reply(*id, Some(f)))
                .collect()
        };
        Reply::Array(out)
    })
}

pub fn xrange(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    range_cmd(ctx, a, false)
}

pub fn xrevrange(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    range_cmd(ctx, a, true)
}

pub fn xdel(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let ids = a[2..]
        .iter()
        .map(|b| parse_id(b, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let n = update_stream(ctx, &a[1], false, |s| {
        let Some(s) = s else {
            return Ok((0, Vec::new()));
        };
        let mut ops = Vec::new();
        for id in ids {
            if s.remove(id) {
                s.max_deleted = s.max_deleted.max(id);
                ops.push(StreamOp::Del(id));
            }
        }
        let n = ops.len() as i64;
        if n > 0 {
            ops.push(s.meta_op());
        }
        Ok((n, ops))
    })?;
    Ok(Reply::Int(n))
}

pub fn xtrim(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if !(is(&a[2], "MAXLEN") || is(&a[2], "MINID")) {
        return Err(err::syntax());
    }
    let (spec, next) = parse_trim(a, 2)?;
    if next != a.len() {
        return Err(err::syntax());
    }
    let n = update_stream(ctx, &a[1], false, |s| {
        let Some(s) = s else {
            return Ok((0, Vec::new()));
        };
        let ops = trim(s, spec);
        Ok((ops.len() as i64, ops))
    })?;
    Ok(Reply::Int(n))
}

pub fn xsetid(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let id = parse_id(&a[2], 0)?;
    let (mut added, mut max_deleted) = (None, None);
    let mut i = 3;
    while i < a.len() {
        let v = a.get(i + 1).ok_or_else(err::syntax)?;
        if is(&a[i], "ENTRIESADDED") {
            let n = int_arg(v)?;
            if n < 0 {
                return Err(Reply::err("ERR entries_added must be positive"));
            }
            added = Some(n as u64);
        } else if is(&a[i], "MAXDELETEDID") {
            max_deleted = Some(parse_id(v, 0)?);
        } else {
            return Err(err::syntax());
        }
        i += 2;
    }
    if max_deleted.is_some_and(|m| id < m) {
        return Err(Reply::err(
            "ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id",
        ));
    }
    update_stream(ctx, &a[1], false, |s| {
        let Some(s) = s else {
            return Err(Reply::err("ERR no such key"));
        };
        if added.is_some_and(|n| n < s.len() as u64) {
            return Err(Reply::err(
                "ERR The entries_added specified in XSETID is smaller than the target stream length",
            ));
        }
        if s.entries.keys().next_back().is_some_and(|top| id < *top) {
            return Err(Reply::err(
                "ERR The ID specified in XSETID is smaller than the target stream top item",
            ));
        }
        s.last_id = id;
        if let Some(n) = added {
            s.entries_added = n;
        }
        if let Some(m) = max_deleted {
            s.max_deleted = m;
        }
        Ok((Reply::OK, vec![s.meta_op()]))
    })
}

/// The keys and IDs after STREAMS.
fn streams_arg(a: &[Bytes], at: usize) -> Result<(&[Bytes], &[Bytes]), Reply> {
    let rest = &a[at + 1..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(Reply::err(
            "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.",
        ));
    }
    Ok(rest.split_at(rest.len() / 2))
}

pub fn xread(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut count = None;
    let mut i = 1;
    let streams_at = loop {
        let o = a.get(i).ok_or_else(err::syntax)?;
        if is(o, "COUNT") {
            count = Some(int_arg(a.get(i + 1).ok_or_else(err::syntax)?)?.max(0) as usize);
            i += 2;
        } else if is(o, "BLOCK") {
            // The connection waits (see `blocking`); here it reads once.
            block_arg(&a[i..(i + 2).min(a.len())])?;
            i += 2;
        } else if is(o, "STREAMS") {
            break i;
        } else {
            return Err(err::syntax());
        }
    };
    let (keys, ids) = streams_arg(a, streams_at)?;
    let mut out = Vec::new();
    for (key, id) in keys.iter().zip(ids) {
        let after = if &id[..] == b"$" {
            None
        } else {
            Some(parse_id(id, 0)?)
        };
        let entries = stream_of(ctx, key, |s| {
            let Some(s) = s else { return Vec::new() };
            let Some(start) = after.unwrap_or(s.last_id).next() else {
                return Vec::new();
            };
            s.entries
                .range(start..)
                .take(count.filter(|c| *c > 0).unwrap_or(usize::MAX))
                .map(|(id, f)| entry_reply(*id, Some(f)))
                .collect::<Vec<_>>()
        })?;
        if !entries.is_empty() {
            out.push((Reply::Bulk(key.clone()), Reply::Array(entries)));
        }
    }
    Ok(if out.is_empty() {
        Reply::NilArray
    } else {
        Reply::Keyed(out)
    })
}

fn nogroup(key: &[u8], group: &[u8], cmd: &str) -> Reply {
    Reply::err(format!(
        "NOGROUP No such key '{}' or consumer group '{}'{cmd}",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    ))
}

/// Whether a deletion lies at or after `start` (Redis's tombstone check,
/// which decides whether a group's read counter can be trusted).
fn has_tombstones(s: &StreamData, start: StreamId) -> bool {
    if s.is_empty() || s.max_deleted == StreamId::MIN {
        return false;
    }
    start <= s.max_deleted && s.max_deleted <= s.last_id
}

/// How many entries were added up to and including `id`, if that can be
/// known.
fn estimate_read(s: &StreamData, id: StreamId) -> Option<u64> {
    if s.entries_added == 0 {
        return Some(0);
    }
    if s.is_empty() && id <= s.last_id {
        return Some(s.entries_added);
    }
    if id == s.last_id {
        return Some(s.entries_added);
    }
    if id > s.last_id {
        return None;
    }
    let first = s.first_id()?;
    if s.max_deleted == StreamId::MIN || s.max_deleted < first {
        if id < first {
            return Some(s.entries_added - s.len() as u64);
        }
        if id == first {
            return Some(s.entries_added - s.len() as u64 + 1);
        }
    }
    None
}

/// A group's lag: entries added that it has not read, if known.
fn lag(s: &StreamData, g: &Group) -> Option<u64> {
    if s.entries_added == 0 {
        return Some(0);
    }
    if let Some(read) = g.entries_read {
        if !has_tombstones(s, g.last_delivered) {
            return Some(s.entries_added.saturating_sub(read));
        }
    }
    estimate_read(s, g.last_delivered).map(|read| s.entries_added.saturating_sub(read))
}

/// The group's read counter after delivering `id`.
fn read_after(s: &StreamData, g: &Group, id: StreamId) -> Option<u64> {
    match g.entries_read {
        Some(n) if !has_tombstones(s, id) => Some(n + 1),
        _ => estimate_read(s, id),
    }
}

pub fn xreadgroup(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if !is(&a[1], "GROUP") {
        return Err(err::syntax());
    }
    let (group, consumer) = (&a[2], &a[3]);
    let (mut count, mut noack) = (None, false);
    let mut i = 4;
    let streams_at = loop {
        let o = a.get(i).ok_or_else(err::syntax)?;
        if is(o, "COUNT") {
            count = Some(int_arg(a.get(i + 1).ok_or_else(err::syntax)?)?.max(0) as usize);
            i += 2;
        } else if is(o, "BLOCK") {
            // The connection waits (see `blocking`); here it reads once.
            block_arg(&a[i..(i + 2).min(a.len())])?;
            i += 2;
        } else if is(o, "NOACK") {
            noack = true;
            i += 1;
        } else if is(o, "STREAMS") {
            break i;
        } else {
            return Err(err::syntax());
        }
    };
    let (keys, ids) = streams_arg(a, streams_at)?;
    let mut wanted = Vec::with_capacity(ids.len());
    for id in ids {
        wanted.push(if &id[..] == b">" {
            None
        } else {
            Some(parse_id(id, 0)?)
        });
    }
    let take = count.filter(|c| *c > 0).unwrap_or(usize::MAX);
    // Every group must exist before anything is delivered.
    for key in keys {
        let exists = stream_of(ctx, key, |s| {
            s.is_some_and(|s| s.groups.contains_key(&group[..]))
        })?;
        if !exists {
            return Err(nogroup(key, group, " in XREADGROUP with GROUP option"));
        }
    }
    let now = now_ms();
    let mut out = Vec::new();
    ctx.atomic(|ctx| {
        for (key, from) in keys.iter().zip(&wanted) {
            let entries = update_stream(ctx, key, false, |s| {
                let s = s.ok_or_else(|| nogroup(key, group, " in XREADGROUP with GROUP option"))?;
                let gname: Box<[u8]> = group[..].into();
                let cname: Box<[u8]> = consumer[..].into();
                let mut ops = Vec::new();
                let mut replies = Vec::new();
                let Some(g) = s.groups.get(&gname) else {
                    return Err(nogroup(key, group, " in XREADGROUP with GROUP option"));
                };
                let active_before = g.consumers.get(&cname).map_or(0, |c| c.active_ms);
                match from {
                    // History: this consumer's pending entries after the ID.
                    Some(after) => {
                        let pending: Vec<StreamId> = g
                            .consumers
                            .get(&cname)
                            .map(|c| {
                                c.pending
                                    .range(after.next().unwrap_or(StreamId::MAX)..)
                                    .take(take)
                                    .copied()
                                    .collect()
                            })
                            .unwrap_or_default();
                        for id in pending {
                            replies.push(entry_reply(id, s.entries.get(&id)));
                        }
                        ops.push(StreamOp::ConsumerSet(
                            gname.clone(),
                            cname,
                            now,
                            active_before,
                        ));
                    }
                    // New entries after the group's cursor.
                    None => {
                        let start = g.last_delivered.next().unwrap_or(StreamId::MAX);
                        let fresh: Vec<StreamId> = s
                            .entries
                            .range(start..)
                            .take(take)
                            .map(|(id, _)| *id)
                            .collect();
                        let mut cursor = (g.last_delivered, g.entries_read);
                        for id in &fresh {
                            let probe = Group {
                                last_delivered: cursor.0,
                                entries_read: cursor.1,
                                ..Group::default()
                            };
                            cursor = (*id, read_after(s, &probe, *id));
                            replies.push(entry_reply(*id, s.entries.get(id)));
                        }
                        let active = if fresh.is_empty() { active_before } else { now };
                        ops.push(StreamOp::ConsumerSet(
                            gname.clone(),
                            cname.clone(),
                            now,
                            active,
                        ));
                        if !fresh.is_empty() {
                            ops.push(StreamOp::GroupCursor(gname.clone(), cursor.0, cursor.1));
                        }
                        if !noack {
                            for id in fresh {
                                let p = Pending {
                                    consumer: cname.clone(),
                                    delivered_ms: now,
                                    deliveries: 1,
                                };
                                ops.push(StreamOp::PendingSet(gname.clone(), id, p));
                            }
                        }
                    }
                }
                for op in &ops {
                    s.apply(op.clone());
                }
                Ok((replies, ops))
            })?;
            if from.is_some() || !entries.is_empty() {
                out.push((Reply::Bulk(key.clone()), Reply::Array(entries)));
            }
        }
        Ok::<_, Reply>(())
    })?;
    Ok(if out.is_empty() {
        Reply::NilArray
    } else {
        Reply::Keyed(out)
    })
}

pub fn xack(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let ids = a[3..]
        .iter()
        .map(|b| parse_id(b, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let group = &a[2];
    let n = update_stream(ctx, &a[1], false, |s| {
        let Some(s) = s else {
            return Ok((0, Vec::new()));
        };
        let Some(g) = s.groups.get(&group[..]) else {
            return Ok((0, Vec::new()));
        };
        let mut ops = Vec::new();
        for id in ids {
            if g.pel.contains_key(&id) && !ops.contains(&StreamOp::PendingDel(group[..].into(), id))
            {
                ops.push(StreamOp::PendingDel(group[..].into(), id));
            }
        }
        for op in &ops {
            s.apply(op.clone());
        }
        Ok((ops.len() as i64, ops))
    })?;
    Ok(Reply::Int(n))
}

pub fn xpending(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (key, group) = (&a[1], &a[2]);
    let mut rest = &a[3..];
    let mut min_idle = None;
    if rest.first().is_some_and(|o| is(o, "IDLE")) {
        let v = rest.get(1).ok_or_else(err::syntax)?;
        min_idle = Some(int_arg(v)?.max(0) as u64);
        rest = &rest[2..];
        if rest.is_empty() {
            return Err(err::syntax());
        }
    }
    let extended = match rest.len() {
        0 => None,
        3 | 4 => {
            let start = range_start(&rest[0])?;
            let end = range_end(&rest[1])?;
            let count = int_arg(&rest[2])?.max(0) as usize;
            Some((start, end, count, rest.get(3).cloned()))
        }
        _ => return Err(err::syntax()),
    };
    let now = now_ms();
    stream_of(ctx, key, |s| {
        let g = s
            .and_then(|s| s.groups.get(&group[..]))
            .ok_or_else(|| nogroup(key, group, ""))?;
        let Some((start, end, count, consumer)) = extended else {
            // The summary.
            let (Some((first, _)), Some((last, _))) =
                (g.pel.iter().next(), g.pel.iter().next_back())
            else {
                return Ok(Reply::Array(vec![
                    Reply::Int(0),
                    Reply::Nil,
                    Reply::Nil,
                    Reply::NilArray,
                ]));
            };
            let per_consumer: Vec<Reply> = g
                .consumers
                .iter()
                .filter(|(_, c)| !c.pending.is_empty())
                .map(|(name, c)| {
                    Reply::Array(vec![
                        Reply::bulk(name.to_vec()),
                        Reply::bulk(c.pending.len().to_string()),
                    ])
                })
                .collect();
            return Ok(Reply::Array(vec![
                Reply::Int(g.pel.len() as i64),
                id_reply(*first),
                id_reply(*last),
                Reply::Array(per_consumer),
            ]));
        };
        let (Some(start), Some(end)) = (start, end) else {
            return Ok(Reply::Array(Vec::new()));
        };
        if start > end {
            return Ok(Reply::Array(Vec::new()));
        }
        let rows = g
            .pel
            .range(start..=end)
            .filter(|(_, p)| consumer.as_ref().is_none_or(|c| p.consumer[..] == c[..]))
            .filter(|(_, p)| min_idle.is_none_or(|m| now.saturating_sub(p.delivered_ms) >= m))
            .take(count)
            .map(|(id, p)| {
                Reply::Array(vec![
                    id_reply(*id),
                    Reply::bulk(p.consumer.to_vec()),
                    Reply::Int(now.saturating_sub(p.delivered_ms) as i64),
                    Reply::Int(p.deliveries as i64),
                ])
            })
            .collect();
        Ok(Reply::Array(rows))
    })?
}

/// Options of XCLAIM.
#[derive(Default)]
struct ClaimOpts {
    idle: Option<u64>,
    time: Option<u64>,
    retry: Option<u64>,
    force: bool,
    justid: bool,
    lastid: Option<StreamId>,
}

/// Claims `id` for `consumer` if it is pending and idle long enough (or
/// FORCE and the entry exists); returns the ops, or None if not claimed.
/// An entry deleted from the stream leaves the pending list instead.
fn claim_one(
    s: &StreamData,
    gname: &[u8],
    consumer: &[u8],
    id: StreamId,
    min_idle: u64,
    now: u64,
    o: &ClaimOpts,
) -> Result<Option<StreamOp>, StreamOp> {
    let g = &s.groups[gname];
    let pending = g.pel.get(&id);
    if !s.entries.contains_key(&id) {
        return match pending {
            Some(_) => Err(StreamOp::PendingDel(gname.into(), id)),
            None => Ok(None),
        };
    }
    let prior = match pending {
        Some(p) => {
            if now.saturating_sub(p.delivered_ms) < min_idle {
                return Ok(None);
            }
            p.deliveries
        }
        None if o.force => 0,
        None => return Ok(None),
    };
    let delivered_ms = match (o.idle, o.time) {
        (Some(idle), _) => now.saturating_sub(idle),
        (None, Some(t)) => t,
        (None, None) => now,
    };
    let deliveries = match o.retry {
        Some(n) => n,
        None if o.justid => prior,
        None => prior + 1,
    };
    Ok(Some(StreamOp::PendingSet(
        gname.into(),
        id,
        Pending {
            consumer: consumer.into(),
            delivered_ms,
            deliveries,
        },
    )))
}

/// Ends a claim: records the consumer as seen (and active if it claimed
/// anything), applies `ops` to the stream, and answers with the claimed
/// entries (or only their IDs).
fn finish_claim(
    s: &mut StreamData,
    gname: &[u8],
    consumer: &[u8],
    now: u64,
    claimed: &[StreamId],
    ops: &mut Vec<StreamOp>,
    justid: bool,
) -> Vec<Reply> {
    let c = s.groups[gname].consumers.get(consumer);
    let active = if claimed.is_empty() {
        c.map_or(0, |c| c.active_ms)
    } else {
        now
    };
    ops.insert(
        0,
        StreamOp::ConsumerSet(gname.into(), consumer.into(), now, active),
    );
    for op in ops.iter() {
        s.apply(op.clone());
    }
    claimed
        .iter()
        .map(|&id| {
            if justid {
                id_reply(id)
            } else {
                entry_reply(id, s.entries.get(&id))
            }
        })
        .collect()
}

pub fn xclaim(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (key, group, consumer) = (&a[1], &a[2], &a[3]);
    let min_idle = int_arg(&a[4])
        .map_err(|_| Reply::err("ERR Invalid min-idle-time argument for XCLAIM"))?
        .max(0) as u64;
    let mut ids = Vec::new();
    let mut i = 5;
    while i < a.len() {
        match parse_id(&a[i], 0) {
            Ok(id) => ids.push(id),
            Err(_) => break,
        }
        i += 1;
    }
    let mut o = ClaimOpts::default();
    while i < a.len() {
        let opt = &a[i];
        let val = || a.get(i + 1).ok_or_else(err::syntax);
        if is(opt, "FORCE") {
            o.force = true;
        } else if is(opt, "JUSTID") {
            o.justid = true;
        } else if is(opt, "IDLE") {
            o.idle = Some(int_arg(val()?)?.max(0) as u64);
            i += 1;
        } else if is(opt, "TIME") {
            o.time = Some(int_arg(val()?)?.max(0) as u64);
            i += 1;
        } else if is(opt, "RETRYCOUNT") {
            o.retry = Some(int_arg(val()?)?.max(0) as u64);
            i += 1;
        } else if is(opt, "LASTID") {
            o.lastid = Some(parse_id(val()?, 0)?);
            i += 1;
        } else {
            return Err(Reply::err(format!(
                "ERR Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
        i += 1;
    }
    let now = now_ms();
    update_stream(ctx, key, false, |s| {
        let s = s.ok_or_else(|| nogroup(key, group, ""))?;
        let gname: Box<[u8]> = group[..].into();
        let g = s
            .groups
            .get(&gname)
            .ok_or_else(|| nogroup(key, group, ""))?;
        let mut ops = Vec::new();
        if let Some(last) = o.lastid {
            if last > g.last_delivered {
                ops.push(StreamOp::GroupCursor(gname.clone(), last, g.entries_read));
            }
        }
        let mut claimed = Vec::new();
        for id in ids {
            match claim_one(s, &gname, consumer, id, min_idle, now, &o) {
                Ok(Some(op)) => {
                    claimed.push(id);
                    ops.push(op);
                }
                Ok(None) => {}
                Err(drop) => ops.push(drop),
            }
        }
        let reply = finish_claim(s, &gname, consumer, now, &claimed, &mut ops, o.justid);
        Ok((Reply::Array(reply), ops))
    })
}

pub fn xautoclaim(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (key, group, consumer) = (&a[1], &a[2], &a[3]);
    let min_idle = int_arg(&a[4])
        .map_err(|_| Reply::err("ERR Invalid min-idle-time argument for XAUTOCLAIM"))?
        .max(0) as u64;
    let start = range_start(&a[5])?.unwrap_or(StreamId::MAX);
    let (mut count, mut justid) = (100usize, false);
    let mut i = 6;
    while i < a.len() {
        if is(&a[i], "COUNT") {
            let n = int_arg(a.get(i + 1).ok_or_else(err::syntax)?)?;
            if !(1..=i64::MAX / 10).contains(&n) {
                return Err(Reply::err("ERR COUNT must be > 0"));
            }
            count = n as usize;
            i += 2;
        } else if is(&a[i], "JUSTID") {
            justid = true;
            i += 1;
        } else {
            return Err(err::syntax());
        }
    }
    let o = ClaimOpts {
        justid,
        ..ClaimOpts::default()
    };
    let now = now_ms();
    update_stream(ctx, key, false, |s| {
        let s = s.ok_or_else(|| nogroup(key, group, ""))?;
        let gname: Box<[u8]> = group[..].into();
        let g = s
            .groups
            .get(&gname)
            .ok_or_else(|| nogroup(key, group, ""))?;
        let mut ops = Vec::new();
        let (mut claimed, mut deleted) = (Vec::new(), Vec::new());
        let mut attempts = count * 10;
        let mut next = StreamId::MIN;
        let candidates: Vec<StreamId> = g.pel.range(start..).map(|(id, _)| *id).collect();
        let mut it = candidates.into_iter();
        for id in it.by_ref() {
            if attempts == 0 || claimed.len() >= count {
                next = id;
                break;
            }
            attempts -= 1;
            match claim_one(s, &gname, consumer, id, min_idle, now, &o) {
                Ok(Some(op)) => {
                    claimed.push(id);
                    ops.push(op);
                }
                Ok(None) => {}
                Err(drop) => {
                    deleted.push(id);
                    ops.push(drop);
                }
            }
        }
        let entries = finish_claim(s, &gname, consumer, now, &claimed, &mut ops, justid);
        Ok((
            Reply::Array(vec![
                id_reply(next),
                Reply::Array(entries),
                Reply::Array(deleted.into_iter().map(id_reply).collect()),
            ]),
            ops,
        ))
    })
}

pub fn xgroup(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    if is(sub, "HELP") {
        return Ok(Reply::Array(
            [
                "XGROUP CREATE <key> <groupname> <id|$> [option]",
                "XGROUP CREATECONSUMER <key> <groupname> <consumer>",
                "XGROUP DELCONSUMER <key> <groupname> <consumer>",
                "XGROUP DESTROY <key> <groupname>",
                "XGROUP SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            ]
            .into_iter()
            .map(Reply::Simple)
            .collect(),
        ));
    }
    let want = |n: usize| {
        if a.len() == n {
            Ok(())
        } else {
            Err(Reply::err(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try XGROUP HELP.",
                String::from_utf8_lossy(sub)
            )))
        }
    };
    if a.len() < 4 {
        return Err(err::subcommand(sub, "xgroup"));
    }
    let (key, group) = (&a[2], &a[3]);
    let gname: Box<[u8]> = group[..].into();
    if is(sub, "CREATE") || is(sub, "SETID") {
        let create = is(sub, "CREATE");
        let at = a.get(4).ok_or_else(|| err::subcommand(sub, "xgroup"))?;
        let (mut mkstream, mut entries_read) = (false, None);
        let mut i = 5;
        while i < a.len() {
            if create && is(&a[i], "MKSTREAM") {
                mkstream = true;
                i += 1;
            } else if is(&a[i], "ENTRIESREAD") {
                let n = int_arg(a.get(i + 1).ok_or_else(err::syntax)?)?;
                if n < -1 {
                    return Err(Reply::err(
                        "ERR value for ENTRIESREAD must be positive or -1",
                    ));
                }
                entries_read = (n >= 0).then_some(n as u64);
                i += 2;
            } else {
                return Err(err::syntax());
            }
        }
        let id = if &at[..] == b"$" {
            None
        } else {
            Some(parse_id(at, 0)?)
        };
        return update_stream(ctx, key, create && mkstream, |s| {
            let s = s.ok_or_else(need_key)?;
            let exists = s.groups.contains_key(&gname);
            if create && exists {
                return Err(Reply::err("BUSYGROUP Consumer Group name already exists"));
            }
            if !create && !exists {
                return Err(nogroup(key, group, ""));
            }
            let id = id.unwrap_or(s.last_id);
            let op = StreamOp::GroupCursor(gname.clone(), id, entries_read);
            s.apply(op.clone());
            Ok((Reply::OK, vec![op]))
        });
    }
    if is(sub, "DESTROY") {
        want(4)?;
        let n = update_stream(ctx, key, false, |s| {
            let s = s.ok_or_else(need_key)?;
            if !s.groups.contains_key(&gname) {
                return Ok((0, Vec::new()));
            }
            let op = StreamOp::GroupDel(gname.clone());
            s.apply(op.clone());
            Ok((1, vec![op]))
        })?;
        return Ok(Reply::Int(n));
    }
    if is(sub, "CREATECONSUMER") || is(sub, "DELCONSUMER") {
        want(5)?;
        let cname: Box<[u8]> = a[4][..].into();
        let create = is(sub, "CREATECONSUMER");
        let now = now_ms();
        let n = update_stream(ctx, key, false, |s| {
            let s = s.ok_or_else(|| nogroup(key, group, ""))?;
            let g = s
                .groups
                .get(&gname)
                .ok_or_else(|| nogroup(key, group, ""))?;
            let existing = g.consumers.get(&cname);
            let (n, op) = match (create, existing) {
                (true, Some(_)) => return Ok((0, Vec::new())),
                (true, None) => (1, StreamOp::ConsumerSet(gname.clone(), cname, now, 0)),
                (false, None) => return Ok((0, Vec::new())),
                (false, Some(c)) => (
                    c.pending.len() as i64,
                    StreamOp::ConsumerDel(gname.clone(), cname),
                ),
            };
            s.apply(op.clone());
            Ok((n, vec![op]))
        })?;
        return Ok(Reply::Int(n));
    }
    Err(err::subcommand(sub, "xgroup"))
}

fn need_key() -> Reply {
    Reply::err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.")
}

fn consumer_reply(name: &[u8], c: &Consumer, now: u64) -> Reply {
    Reply::Map(vec![
        (Reply::bulk("name"), Reply::bulk(name.to_vec())),
        (Reply::bulk("pending"), Reply::Int(c.pending.len() as i64)),
        (
            Reply::bulk("idle"),
            Reply::Int(now.saturating_sub(c.seen_ms) as i64),
        ),
        (
            Reply::bulk("inactive"),
            Reply::Int(if c.active_ms == 0 {
                -1
            } else {
                now.saturating_sub(c.active_ms) as i64
            }),
        ),
    ])
}

fn lag_reply(s: &StreamData, g: &Group) -> Reply {
    lag(s, g).map_or(Reply::Nil, |l| Reply::Int(l as i64))
}

fn read_reply(g: &Group) -> Reply {
    g.entries_read.map_or(Reply::Nil, |n| Reply::Int(n as i64))
}

fn group_summary(s: &StreamData, name: &[u8], g: &Group) -> Reply {
    Reply::Map(vec![
        (Reply::bulk("name"), Reply::bulk(name.to_vec())),
        (
            Reply::bulk("consumers"),
            Reply::Int(g.consumers.len() as i64),
        ),
        (Reply::bulk("pending"), Reply::Int(g.pel.len() as i64)),
        (Reply::bulk("last-delivered-id"), id_reply(g.last_delivered)),
        (Reply::bulk("entries-read"), read_reply(g)),
        (Reply::bulk("lag"), lag_reply(s, g)),
    ])
}

fn stream_head(s: &StreamData) -> Vec<(Reply, Reply)> {
    vec![
        (Reply::bulk("length"), Reply::Int(s.len() as i64)),
        (
            Reply::bulk("radix-tree-keys"),
            Reply::Int(s.len().div_ceil(100) as i64),
        ),
        (
            Reply::bulk("radix-tree-nodes"),
            Reply::Int((s.len().div_ceil(100) + 1) as i64),
        ),
        (Reply::bulk("last-generated-id"), id_reply(s.last_id)),
        (Reply::bulk("max-deleted-entry-id"), id_reply(s.max_deleted)),
        (
            Reply::bulk("entries-added"),
            Reply::Int(s.entries_added as i64),
        ),
        (
            Reply::bulk("recorded-first-entry-id"),
            id_reply(s.first_id().unwrap_or(StreamId::MIN)),
        ),
    ]
}

pub fn xinfo(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    if is(sub, "HELP") {
        return Ok(Reply::Array(
            [
                "XINFO CONSUMERS <key> <groupname>",
                "XINFO GROUPS <key>",
                "XINFO STREAM <key> [FULL [COUNT <count>]]",
            ]
            .into_iter()
            .map(Reply::Simple)
            .collect(),
        ));
    }
    let key = a.get(2).ok_or_else(|| err::subcommand(sub, "xinfo"))?;
    let now = now_ms();
    let no_key = || Reply::err("ERR no such key");
    if is(sub, "STREAM") {
        let full = match &a[3..] {
            [] => None,
            [f] if is(f, "FULL") => Some(10usize),
            [f, c, n] if is(f, "FULL") && is(c, "COUNT") => {
                let n = int_arg(n)?;
                Some(if n <= 0 { usize::MAX } else { n as usize })
            }
            _ => return Err(err::syntax()),
        };
        return stream_of(ctx, key, |s| {
            let s = s.ok_or_else(no_key)?;
            let mut out = stream_head(s);
            match full {
                None => {
                    out.push((Reply::bulk("groups"), Reply::Int(s.groups.len() as i64)));
                    let first = s.entries.iter().next();
                    let last = s.entries.iter().next_back();
                    out.push((
                        Reply::bulk("first-entry"),
                        first.map_or(Reply::Nil, |(id, f)| entry_reply(*id, Some(f))),
                    ));
                    out.push((
                        Reply::bulk("last-entry"),
                        last.map_or(Reply::Nil, |(id, f)| entry_reply(*id, Some(f))),
                    ));
                }
                Some(count) => {
                    out.push((
                        Reply::bulk("entries"),
                        Reply::Array(
                            s.entries
                                .iter()
                                .take(count)
                                .map(|(id, f)| entry_reply(*id, Some(f)))
                                .collect(),
                        ),
                    ));
                    let groups = s
                        .groups
                        .iter()
                        .map(|(name, g)| {
                            let pel = g
                                .pel
                                .iter()
                                .take(count)
                                .map(|(id, p)| {
                                    Reply::Array(vec![
                                        id_reply(*id),
                                        Reply::bulk(p.consumer.to_vec()),
                                        Reply::Int(p.delivered_ms as i64),
                                        Reply::Int(p.deliveries as i64),
                                    ])
                                })
                                .collect();
                            let consumers = g
                                .consumers
                                .iter()
                                .map(|(cname, c)| {
                                    let pending = c
                                        .pending
                                        .iter()
                                        .take(count)
                                        .filter_map(|id| {
                                            let p = g.pel.get(id)?;
                                            Some(Reply::Array(vec![
                                                id_reply(*id),
                                                Reply::Int(p.delivered_ms as i64),
                                                Reply::Int(p.deliveries as i64),
                                            ]))
                                        })
                                        .collect();
                                    Reply::Map(vec![
                                        (Reply::bulk("name"), Reply::bulk(cname.to_vec())),
                                        (Reply::bulk("seen-time"), Reply::Int(c.seen_ms as i64)),
                                        (
                                            Reply::bulk("active-time"),
                                            Reply::Int(c.active_ms as i64),
                                        ),
                                        (
                                            Reply::bulk("pel-count"),
                                            Reply::Int(c.pending.len() as i64),
                                        ),
                                        (Reply::bulk("pending"), Reply::Array(pending)),
                                    ])
                                })
                                .collect();
                            Reply::Map(vec![
                                (Reply::bulk("name"), Reply::bulk(name.to_vec())),
                                (Reply::bulk("last-delivered-id"), id_reply(g.last_delivered)),
                                (Reply::bulk("entries-read"), read_reply(g)),
                                (Reply::bulk("lag"), lag_reply(s, g)),
                                (Reply::bulk("pel-count"), Reply::Int(g.pel.len() as i64)),
                                (Reply::bulk("pending"), Reply::Array(pel)),
                                (Reply::bulk("consumers"), Reply::Array(consumers)),
                            ])
                        })
                        .collect();
                    out.push((Reply::bulk("groups"), Reply::Array(groups)));
                }
            }
            Ok(Reply::Map(out))
        })?;
    }
    if is(sub, "GROUPS") {
        if a.len() != 3 {
            return Err(err::subcommand(sub, "xinfo"));
        }
        return stream_of(ctx, key, |s| {
            let s = s.ok_or_else(no_key)?;
            Ok(Reply::Array(
                s.groups
                    .iter()
                    .map(|(name, g)| group_summary(s, name, g))
                    .collect(),
            ))
        })?;
    }
    if is(sub, "CONSUMERS") {
        let group = a.get(3).ok_or_else(|| err::subcommand(sub, "xinfo"))?;
        return stream_of(ctx, key, |s| {
            let s = s.ok_or_else(no_key)?;
            let g = s
                .groups
                .get(&group[..])
                .ok_or_else(|| nogroup(key, group, ""))?;
            Ok(Reply::Array(
                g.consumers
                    .iter()
                    .map(|(name, c)| consumer_reply(name, c, now))
                    .collect(),
            ))
        })?;
    }
    Err(err::subcommand(sub, "xinfo"))
}
