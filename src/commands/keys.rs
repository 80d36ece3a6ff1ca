//! Generic key commands: deletion, existence, renaming, iteration and TTLs.

use bytes::Bytes;

use super::reply::Reply;
use super::{err, int_arg, is, storage_error, CmdResult, Ctx};
use crate::storage::{self, glob_match, now_ms, ReadHint, Record, Value, ValueKind};

pub fn del(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut n = 0;
    for key in &a[1..] {
        let w = ctx.write(key, |cur| {
            let existed = cur.take().is_some();
            (existed, existed)
        })?;
        n += i64::from(w.value);
    }
    Ok(Reply::Int(n))
}

/// STRATA-EXPIRED key [key ...]: deletes each key that holds a record
/// expired by the command's clock; returns how many. A cluster's shard
/// leader sends it through the shard's log for the expired keys its
/// sweeps find, so every replica reclaims them at the same point of the
/// log, by the leader's clock.
pub fn strata_expired(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut n = 0;
    for key in &a[1..] {
        let expired = ctx
            .node
            .store
            .holds_expired(ctx.s.db, key)
            .map_err(storage_error)?;
        if expired {
            // An expired record reads as absent: "deleting" it removes it.
            ctx.write(key, |cur| ((), cur.is_none()))?;
            n += 1;
        }
    }
    Ok(Reply::Int(n))
}

pub fn exists(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut n = 0;
    for key in &a[1..] {
        n += i64::from(ctx.read(key, ReadHint::Peek, |r| r.is_some())?);
    }
    Ok(Reply::Int(n))
}

pub fn touch(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut n = 0;
    for key in &a[1..] {
        n += i64::from(ctx.read(key, ReadHint::Normal, |r| r.is_some())?);
    }
    Ok(Reply::Int(n))
}

pub fn type_(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let t = ctx.read(&a[1], ReadHint::Peek, |r| {
        r.map_or("none", |(rec, _)| rec.value.kind().name())
    })?;
    Ok(Reply::Simple(t))
}

fn rename_generic(ctx: &mut Ctx<'_>, a: &[Bytes], nx: bool) -> CmdResult {
    let (src, dst) = (&a[1], &a[2]);
    let rec = ctx.read(src, ReadHint::Peek, |r| r.map(|(rec, _)| rec.clone()))?;
    let Some(rec) = rec else {
        return Err(Reply::err("ERR no such key"));
    };
    if src == dst {
        return Ok(if nx { Reply::Int(0) } else { Reply::OK });
    }
    let w = ctx.write(dst, |cur| {
        if nx && cur.is_some() {
            return (false, false);
        }
        *cur = Some(rec);
        (true, true)
    })?;
    if !w.value {
        return Ok(Reply::Int(0));
    }
    ctx.write(src, |cur| {
        let existed = cur.take().is_some();
        ((), existed)
    })?;
    Ok(if nx { Reply::Int(1) } else { Reply::OK })
}

pub fn rename(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.atomic(|ctx| rename_generic(ctx, a, false))
}

pub fn renamenx(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ctx.atomic(|ctx| rename_generic(ctx, a, true))
}

pub fn randomkey(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    let k = ctx.node.store.random_key(ctx.s.db).map_err(storage_error)?;
    Ok(k.map_or(Reply::Nil, Reply::bulk))
}

pub fn keys(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let (next, items) = ctx
            .node
            .store
            .scan(ctx.s.db, cursor, 1000, Some(&a[1]), None)
            .map_err(storage_error)?;
        out.extend(items.into_iter().map(|i| Reply::bulk(i.key)));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(Reply::Array(out))
}

/// Parses `MATCH pattern`, `COUNT n` and (if allowed) `TYPE t` options.
pub(crate) fn scan_options(
    a: &[Bytes],
    allow_type: bool,
) -> Result<(Option<Bytes>, usize, Option<Option<ValueKind>>), Reply> {
    let (mut pattern, mut count, mut kind) = (None, 10usize, None);
    let mut i = 0;
    while i < a.len() {
        if i + 1 >= a.len() {
            return Err(err::syntax());
        }
        if is(&a[i], "MATCH") {
            pattern = Some(a[i + 1].clone());
        } else if is(&a[i], "COUNT") {
            let n = int_arg(&a[i + 1])?;
            if n < 1 {
                return Err(err::syntax());
            }
            count = n as usize;
        } else if allow_type && is(&a[i], "TYPE") {
            let t = &a[i + 1];
            kind = Some(if is(t, "string") {
                Some(ValueKind::Str)
            } else if is(t, "hash") {
                Some(ValueKind::Hash)
            } else if is(t, "list") {
                Some(ValueKind::List)
            } else if is(t, "set") {
                Some(ValueKind::Set)
            } else if is(t, "zset") {
                Some(ValueKind::ZSet)
            } else if is(t, "stream") {
                Some(ValueKind::Stream)
            } else {
                // A type strata does not store matches nothing.
                None
            });
        } else {
            return Err(err::syntax());
        }
        i += 2;
    }
    Ok((pattern, count, kind))
}

pub fn scan(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let cursor = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("ERR invalid cursor"))?;
    let (pattern, count, kind) = scan_options(&a[2..], true)?;
    let (next, items) = match kind {
        Some(None) => (0, Vec::new()),
        Some(Some(k)) => ctx
            .node
            .store
            .scan(ctx.s.db, cursor, count, pattern.as_deref(), Some(k))
            .map_err(storage_error)?,
        None => ctx
            .node
            .store
            .scan(ctx.s.db, cursor, count, pattern.as_deref(), None)
            .map_err(storage_error)?,
    };
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(items.into_iter().map(|i| Reply::bulk(i.key)).collect()),
    ]))
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum ExpireCond {
    Any,
    Nx,
    Xx,
    Gt,
    Lt,
}

fn expire_generic(
    ctx: &mut Ctx<'_>,
    a: &[Bytes],
    unit_ms: i64,
    absolute: bool,
    cmd: &str,
) -> CmdResult {
    let n = int_arg(&a[2])?;
    let invalid = || Reply::err(format!("ERR invalid expire time in '{cmd}' command"));
    let mut cond = ExpireCond::Any;
    for opt in &a[3..] {
        let c = if is(opt, "NX") {
            ExpireCond::Nx
        } else if is(opt, "XX") {
            ExpireCond::Xx
        } else if is(opt, "GT") {
            ExpireCond::Gt
        } else if is(opt, "LT") {
            ExpireCond::Lt
        } else {
            return Err(Reply::err(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        };
        if cond != ExpireCond::Any && cond != c {
            let both_gl = matches!(
                (cond, c),
                (ExpireCond::Gt, ExpireCond::Lt) | (ExpireCond::Lt, ExpireCond::Gt)
            );
            return Err(Reply::err(if both_gl {
                "ERR GT and LT options at the same time are not compatible"
            } else {
                "ERR NX and XX, GT or LT options at the same time are not compatible"
            }));
        }
        cond = c;
    }
    let ms = n.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        ms
    } else {
        (now_ms() as i64).checked_add(ms).ok_or_else(invalid)?
    };
    let w = ctx.write(&a[1], |cur| {
        let Some(rec) = cur.as_mut() else {
            return (0, false);
        };
        let current = rec.expire_at_ms;
        let ok = match cond {
            ExpireCond::Any => true,
            ExpireCond::Nx => current.is_none(),
            ExpireCond::Xx => current.is_some(),
            ExpireCond::Gt => current.is_some_and(|c| at > c as i64),
            ExpireCond::Lt => current.is_none_or(|c| at < c as i64),
        };
        if !ok {
            return (0, false);
        }
        if at <= now_ms() as i64 {
            *cur = None;
        } else {
            rec.expire_at_ms = Some(at as u64);
        }
        (1, true)
    })?;
    Ok(Reply::Int(w.value))
}

pub fn expire(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    expire_generic(ctx, a, 1000, false, "expire")
}

pub fn pexpire(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    expire_generic(ctx, a, 1, false, "pexpire")
}

pub fn expireat(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    expire_generic(ctx, a, 1000, true, "expireat")
}

pub fn pexpireat(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    expire_generic(ctx, a, 1, true, "pexpireat")
}

/// The key's expiry: None if absent, Some(None) if persistent.
fn expiry_of(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Option<u64>>, Reply> {
    ctx.read(key, ReadHint::Peek, |r| r.map(|(rec, _)| rec.expire_at_ms))
}

fn ttl_generic(ctx: &mut Ctx<'_>, key: &[u8], div: u64, absolute: bool) -> CmdResult {
    Ok(Reply::Int(match expiry_of(ctx, key)? {
        None => -2,
        Some(None) => -1,
        Some(Some(at)) if absolute => (at / div) as i64,
        Some(Some(at)) => {
            let left = at.saturating_sub(now_ms());
            ((left + div / 2) / div) as i64
        }
    }))
}

pub fn ttl(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &a[1], 1000, false)
}

pub fn pttl(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &a[1], 1, false)
}

pub fn expiretime(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &a[1], 1000, true)
}

pub fn pexpiretime(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    ttl_generic(ctx, &a[1], 1, true)
}

pub fn persist(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let w = ctx.write(&a[1], |cur| match cur.as_mut() {
        Some(rec) if rec.expire_at_ms.is_some() => {
            rec.expire_at_ms = None;
            (1, true)
        }
        _ => (0, false),
    })?;
    Ok(Reply::Int(w.value))
}

/// The encoding Redis would use for `v` under the thresholds `k`
/// (OBJECT ENCODING, DEBUG OBJECT).
pub(super) fn encoding_of(v: &Value, k: &crate::config::EncodingKnobs) -> &'static str {
    let small = |n: usize, entries: i64| n as i64 <= entries;
    let short = |b: &[u8], value: i64| b.len() as i64 <= value;
    match v {
        Value::Str(v) if int_like(v) => "int",
        Value::Str(v) if v.len() <= 44 => "embstr",
        Value::Str(_) => "raw",
        Value::Hash(m)
            if small(m.len(), k.hash_max_listpack_entries)
                && m.iter().all(|(f, v)| {
                    short(f, k.hash_max_listpack_value) && short(v, k.hash_max_listpack_value)
                }) =>
        {
            "listpack"
        }
        Value::Hash(_) => "hashtable",
        Value::List(_) => "quicklist",
        Value::Set(s) if small(s.len(), k.set_max_intset_entries) && s.iter().all(int_like) => {
            "intset"
        }
        Value::Set(_) => "hashtable",
        Value::ZSet(z)
            if small(z.len(), k.zset_max_listpack_entries)
                && z.iter().all(|(m, _)| short(m, k.zset_max_listpack_value)) =>
        {
            "listpack"
        }
        Value::ZSet(_) => "skiplist",
        Value::Stream(_) => "stream",
    }
}

pub fn object(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    if is(sub, "HELP") {
        return Ok(Reply::Array(
            [
                "OBJECT ENCODING <key>",
                "OBJECT FREQ <key>",
                "OBJECT IDLETIME <key>",
                "OBJECT REFCOUNT <key>",
            ]
            .into_iter()
            .map(Reply::Simple)
            .collect(),
        ));
    }
    if a.len() != 3 {
        return Err(err::subcommand(sub, "object"));
    }
    let key = &a[2];
    if is(sub, "ENCODING") {
        let k = ctx.node.cfg.read().encoding.clone();
        let enc = ctx.read(key, ReadHint::Peek, |r| {
            r.map(|(rec, _)| encoding_of(&rec.value, &k))
        })?;
        return Ok(enc.map_or(Reply::Nil, Reply::bulk));
    }
    let placement = ctx
        .node
        .store
        .placement(ctx.s.db, key)
        .map_err(storage_error)?;
    let Some(p) = placement else {
        return Ok(Reply::Nil);
    };
    if is(sub, "IDLETIME") {
        Ok(Reply::Int(
            p.idle_ms.map_or(p.age_secs, |ms| ms / 1000) as i64
        ))
    } else if is(sub, "FREQ") {
        // From the hot-key counts, on Redis's LFU scale.
        if !ctx.node.hotkeys.enabled() {
            return Err(Reply::err("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
        }
        Ok(Reply::Int(i64::from(ctx.node.hotkeys.freq(ctx.s.db, key))))
    } else if is(sub, "REFCOUNT") {
        Ok(Reply::Int(1))
    } else {
        Err(err::subcommand(sub, "object"))
    }
}

/// One page of HSCAN, SSCAN or ZSCAN over `items` (each with its member).
/// The cursor is a position in the members' hash order, so a member present
/// for the whole scan is returned at least once however the collection
/// changes in between. Returns the next cursor (0 at the end) and the page.
pub(crate) fn scan_page<'a, T>(
    items: impl Iterator<Item = (&'a [u8], T)>,
    cursor: u64,
    count: usize,
    pattern: Option<&[u8]>,
) -> (u64, Vec<(&'a [u8], T)>) {
    let position = |m: &[u8]| xxhash_rust::xxh3::xxh3_64(m).max(1);
    let mut left: Vec<(u64, &'a [u8], T)> = items
        .filter_map(|(m, t)| {
            let p = position(m);
            (p >= cursor).then_some((p, m, t))
        })
        .collect();
    if left.len() > count {
        left.select_nth_unstable_by_key(count - 1, |(p, _, _)| *p);
        // Members sharing the last position go in this page too.
        let last = left[..count].iter().map(|(p, _, _)| *p).max().unwrap_or(0);
        let mut page: Vec<_> = Vec::with_capacity(count);
        let mut more = false;
        for item in left {
            if item.0 <= last {
                page.push(item);
            } else {
                more = true;
            }
        }
        let next = if more {
            last.checked_add(1).unwrap_or(0)
        } else {
            0
        };
        return (next, filter_page(page, pattern));
    }
    (0, filter_page(left, pattern))
}

/// A SCAN-family cursor argument.
pub(crate) fn cursor_arg(b: &[u8]) -> Result<u64, Reply> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("ERR invalid cursor"))
}

fn filter_page<'a, T>(page: Vec<(u64, &'a [u8], T)>, pattern: Option<&[u8]>) -> Vec<(&'a [u8], T)> {
    page.into_iter()
        .filter(|(_, m, _)| matches(pattern, m))
        .map(|(_, m, t)| (m, t))
        .collect()
}

/// Whether Redis would store `v` as an integer.
fn int_like(v: &[u8]) -> bool {
    v.len() <= 20
        && std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some()
}

/// Whether `key` matches an optional glob.
pub(crate) fn matches(pattern: Option<&[u8]>, key: &[u8]) -> bool {
    pattern.is_none_or(|p| glob_match(p, key))
}

fn in_cluster(ctx: &Ctx<'_>) -> bool {
    ctx.node.cluster.get().is_some()
}

fn db_arg(ctx: &Ctx<'_>, b: &[u8]) -> Result<usize, Reply> {
    let db = int_arg(b)?;
    if db < 0 || db as usize >= ctx.node.store.databases() {
        return Err(Reply::err("ERR DB index is out of range"));
    }
    Ok(db as usize)
}

/// Runs `f` with database `db` selected.
fn in_db<R>(ctx: &mut Ctx<'_>, db: usize, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
    let saved = std::mem::replace(&mut ctx.s.db, db);
    let out = f(ctx);
    ctx.s.db = saved;
    out
}

/// Puts `rec` at `key` unless a key is there and `replace` is off; whether
/// it did.
fn put_record(ctx: &mut Ctx<'_>, key: &[u8], rec: Record, replace: bool) -> Result<bool, Reply> {
    let w = ctx.write(key, |cur| {
        if cur.is_some() && !replace {
            return (false, false);
        }
        *cur = Some(rec);
        (true, true)
    })?;
    Ok(w.value)
}

pub fn copy(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (src, dst) = (&a[1], &a[2]);
    let mut db = ctx.s.db;
    let mut replace = false;
    let mut i = 3;
    while i < a.len() {
        if is(&a[i], "REPLACE") {
            replace = true;
        } else if is(&a[i], "DB") && i + 1 < a.len() {
            db = db_arg(ctx, &a[i + 1])?;
            i += 1;
        } else {
            return Err(err::syntax());
        }
        i += 1;
    }
    if db != ctx.s.db && in_cluster(ctx) {
        return Err(Reply::err(
            "ERR Copying to another database is not allowed in cluster mode",
        ));
    }
    if db == ctx.s.db && src == dst {
        return Err(Reply::err(
            "ERR source and destination objects are the same",
        ));
    }
    ctx.atomic(|ctx| {
        let rec = ctx.read(src, ReadHint::Peek, |r| r.map(|(rec, _)| rec.clone()))?;
        let Some(rec) = rec else {
            return Ok(Reply::Int(0));
        };
        let done = in_db(ctx, db, |ctx| put_record(ctx, dst, rec, replace))?;
        Ok(Reply::Int(done.into()))
    })
}

pub fn move_(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if in_cluster(ctx) {
        return Err(Reply::err("ERR MOVE is not allowed in cluster mode"));
    }
    let db = db_arg(ctx, &a[2])?;
    if db == ctx.s.db {
        return Err(Reply::err(
            "ERR source and destination objects are the same",
        ));
    }
    ctx.atomic(|ctx| {
        let rec = ctx.read(&a[1], ReadHint::Peek, |r| r.map(|(rec, _)| rec.clone()))?;
        let Some(rec) = rec else {
            return Ok(Reply::Int(0));
        };
        if !in_db(ctx, db, |ctx| put_record(ctx, &a[1], rec, false))? {
            return Ok(Reply::Int(0));
        }
        ctx.write(&a[1], |cur| ((), cur.take().is_some()))?;
        Ok(Reply::Int(1))
    })
}

pub fn dump(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let payload = ctx.read(&a[1], ReadHint::Peek, |r| {
        r.map(|(rec, _)| storage::dump(rec))
    })?;
    Ok(payload.map_or(Reply::Nil, Reply::bulk))
}

pub fn restore(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let ttl = int_arg(&a[2])?;
    let (mut replace, mut absttl) = (false, false);
    let mut i = 4;
    while i < a.len() {
        if is(&a[i], "REPLACE") {
            replace = true;
        } else if is(&a[i], "ABSTTL") {
            absttl = true;
        } else if is(&a[i], "IDLETIME") && i + 1 < a.len() {
            // Accepted for compatibility; strata's recency is its own.
            if int_arg(&a[i + 1])? < 0 {
                return Err(Reply::err("ERR Invalid IDLETIME value, must be >= 0"));
            }
            i += 1;
        } else if is(&a[i], "FREQ") && i + 1 < a.len() {
            let f = int_arg(&a[i + 1])?;
            if !(0..=255).contains(&f) {
                return Err(Reply::err(
                    "ERR Invalid FREQ value, must be >= 0 and <= 255",
                ));
            }
            i += 1;
        } else {
            return Err(err::syntax());
        }
        i += 1;
    }
    if ttl < 0 {
        return Err(Reply::err("ERR Invalid TTL value, must be >= 0"));
    }
    let busy = || Reply::err("BUSYKEY Target key name already exists.");
    if !replace && ctx.read(&a[1], ReadHint::Peek, |r| r.is_some())? {
        return Err(busy());
    }
    let Some(value) = storage::undump(&a[3]) else {
        return Err(Reply::err("ERR DUMP payload version or checksum are wrong"));
    };
    let expire_at_ms = match (ttl, absttl) {
        (0, _) => None,
        (t, true) => Some(t as u64),
        (t, false) => Some(now_ms().saturating_add(t as u64)),
    };
    let w = ctx.write(&a[1], |cur| {
        if cur.is_some() && !replace {
            return (Err(busy()), false);
        }
        if expire_at_ms.is_some_and(|t| t <= now_ms()) {
            // Already expired: nothing is created (a replaced key goes).
            let existed = cur.take().is_some();
            return (Ok(()), existed);
        }
        *cur = Some(Record {
            value,
            expire_at_ms,
            version: Default::default(),
            written_secs: 0,
        });
        (Ok(()), true)
    })?;
    w.value.map(|()| Reply::OK)
}
