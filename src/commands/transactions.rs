//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Between MULTI and EXEC a client's commands are checked and queued, not
//! run. EXEC runs them holding the node's gate alone, so no other
//! client's command runs in between, and logs their writes as one record,
//! so after a crash all of them are there or none.
//!
//! WATCH remembers each key's write stamp (a number every write to a key
//! changes; absent keys have none). EXEC compares them first and, if any
//! changed, runs nothing and answers nil. Expiry and FLUSH count as
//! changes, since the key is then absent.
//!
//! In a cluster EXEC travels to the keys' shard as one STRATA-EXEC
//! request carrying the watched stamps and the queued commands. Every
//! replica applies it as one Raft entry, and stamps are derived from the
//! entry's log position, so the check comes out the same on all of them.

use bytes::Bytes;

use super::{execute, int_arg, lookup, CmdResult, Ctx, Reply};
use crate::storage::ReadHint;

/// A watched key: its database, name and write stamp when watched.
pub type Watched = (usize, Bytes, Option<u64>);

/// Commands that run at once inside MULTI instead of being queued.
pub fn runs_in_multi(name: &str) -> bool {
    matches!(
        name,
        "exec" | "discard" | "multi" | "watch" | "unwatch" | "quit" | "reset"
    )
}

/// Whether a command holds the gate alone (and so must not take it
/// shared first).
pub fn exclusive(name: &str) -> bool {
    matches!(name, "exec" | "strata-exec") || super::scripting::runs_script(name)
}

/// Queues `args` inside MULTI: `+QUEUED`, or an error that also dooms the
/// transaction when the queue grows past the query-buffer limit.
pub fn queue(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let limit = ctx.node.cfg.read().client_query_buffer_limit;
    let size: usize = args.iter().map(|a| a.len() + 16).sum();
    ctx.s.multi_bytes += size;
    if ctx.s.multi_bytes > limit {
        ctx.s.multi_failed = true;
        return Reply::err("ERR transaction queue exceeds the client query buffer limit");
    }
    if let Some(q) = ctx.s.multi.as_mut() {
        q.push(args.to_vec());
        let mut st = ctx.s.handle.state.lock();
        st.queued = q.len();
        st.queued_bytes = ctx.s.multi_bytes;
    }
    Reply::Simple("QUEUED")
}

pub fn multi(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    if ctx.s.multi.is_some() {
        return Err(Reply::err("ERR MULTI calls can not be nested"));
    }
    ctx.s.multi = Some(Vec::new());
    ctx.s.multi_failed = false;
    ctx.s.multi_bytes = 0;
    ctx.s.handle.state.lock().in_multi = true;
    Ok(Reply::OK)
}

pub fn discard(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    if ctx.s.multi.is_none() {
        return Err(Reply::err("ERR DISCARD without MULTI"));
    }
    ctx.s.end_transaction();
    Ok(Reply::OK)
}

/// The write stamp of `key` in `db` (None if there is no such key).
fn stamp(ctx: &mut Ctx<'_>, db: usize, key: &[u8]) -> Result<Option<u64>, Reply> {
    ctx.node
        .store
        .read(db, key, ReadHint::Peek, |r| {
            r.map(|(rec, _)| rec.version.hlc)
        })
        .map_err(super::storage_error)
}

pub fn watch(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if ctx.s.multi.is_some() {
        return Err(Reply::err("ERR WATCH inside MULTI is not allowed"));
    }
    let db = ctx.s.db;
    for key in &a[1..] {
        let st = stamp(ctx, db, key)?;
        ctx.s.watch(db, key.clone(), st);
    }
    Ok(Reply::OK)
}

pub fn unwatch(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    ctx.s.unwatch();
    Ok(Reply::OK)
}

/// Takes the transaction out of the session for EXEC: the queued
/// commands and the watched keys, or EXEC's error.
pub fn take(ctx: &mut Ctx<'_>) -> Result<(Vec<Vec<Bytes>>, Vec<Watched>), Reply> {
    let Some(queued) = ctx.s.multi.take() else {
        return Err(Reply::err("ERR EXEC without MULTI"));
    };
    let failed = ctx.s.multi_failed;
    let watched = std::mem::take(&mut ctx.s.watched);
    ctx.s.end_transaction();
    if failed {
        return Err(Reply::err(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    Ok((queued, watched))
}

pub fn exec(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    let (queued, watched) = take(ctx)?;
    Ok(run(ctx, &watched, &queued))
}

/// Runs a transaction: nothing (a nil reply) if a watched key was written
/// since it was watched, else every command in order, one reply each.
/// Commands that fail don't stop the others, as in Redis.
pub fn run(ctx: &mut Ctx<'_>, watched: &[Watched], queued: &[Vec<Bytes>]) -> Reply {
    let _alone = ctx.node.gate.exclusive();
    for (db, key, was) in watched {
        match stamp(ctx, *db, key) {
            Ok(now) if now == *was => {}
            Ok(_) => return Reply::NilArray,
            Err(e) => return e,
        }
    }
    let outer = std::mem::replace(&mut ctx.s.acl_context, "multi");
    let replies = ctx.atomic(|ctx| {
        queued
            .iter()
            .map(|args| match execute(ctx, args) {
                // One element per command (SUBSCRIBE a b answers twice).
                Reply::Many(replies) => Reply::Array(replies),
                reply => reply,
            })
            .collect::<Vec<_>>()
    });
    ctx.s.acl_context = outer;
    Reply::Array(replies)
}

/// Encodes a transaction as one STRATA-EXEC request: the number of
/// watched keys, each as database, key and stamp (empty for none), then
/// each command as its argument count and arguments.
pub fn encode(watched: &[Watched], queued: &[Vec<Bytes>]) -> Vec<Bytes> {
    let mut out = vec![
        Bytes::from_static(b"STRATA-EXEC"),
        Bytes::from(watched.len().to_string()),
    ];
    for (db, key, stamp) in watched {
        out.push(Bytes::from(db.to_string()));
        out.push(key.clone());
        out.push(stamp.map_or_else(Bytes::new, |s| Bytes::from(s.to_string())));
    }
    for args in queued {
        out.push(Bytes::from(args.len().to_string()));
        out.extend(args.iter().cloned());
    }
    out
}

/// Reads a STRATA-EXEC request back; None if it is malformed.
pub fn decode(a: &[Bytes]) -> Option<(Vec<Watched>, Vec<Vec<Bytes>>)> {
    let num = |b: &Bytes| std::str::from_utf8(b).ok()?.parse::<usize>().ok();
    let n = num(a.get(1)?)?;
    let mut i = 2;
    let mut watched = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let db = num(a.get(i)?)?;
        let key = a.get(i + 1)?.clone();
        let stamp = a.get(i + 2)?;
        let stamp = if stamp.is_empty() {
            None
        } else {
            Some(std::str::from_utf8(stamp).ok()?.parse::<u64>().ok()?)
        };
        watched.push((db, key, stamp));
        i += 3;
    }
    let mut queued = Vec::new();
    while i < a.len() {
        let argc = num(&a[i])?;
        let args = a.get(i + 1..i + 1 + argc)?;
        if args.is_empty() {
            return None;
        }
        queued.push(args.to_vec());
        i += 1 + argc;
    }
    Some((watched, queued))
}

/// The keys a STRATA-EXEC request touches: the watched ones and those of
/// every queued command.
pub fn keys_of(a: &[Bytes]) -> Vec<&Bytes> {
    let num = |b: &Bytes| std::str::from_utf8(b).ok()?.parse::<usize>().ok();
    let mut keys = Vec::new();
    let Some(n) = a.get(1).and_then(num) else {
        return keys;
    };
    let mut i = 2;
    for _ in 0..n {
        if let Some(k) = a.get(i + 1) {
            keys.push(k);
        }
        i += 3;
    }
    while let Some(argc) = a.get(i).and_then(num) {
        let Some(args) = a.get(i + 1..i + 1 + argc) else {
            break;
        };
        if let Some((_, spec)) = args.first().and_then(|n| lookup(n)) {
            keys.extend(spec.keys_of(args));
        }
        i += 1 + argc;
    }
    keys
}

/// STRATA-EXEC: a transaction sent whole (how EXEC travels in a cluster).
pub fn strata_exec(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let (watched, queued) =
        decode(a).ok_or_else(|| Reply::err("ERR malformed STRATA-EXEC request"))?;
    for args in &queued {
        let Some((_, spec)) = lookup(&args[0]) else {
            return Err(Reply::err("ERR STRATA-EXEC holds an unknown command"));
        };
        if runs_in_multi(spec.name) || exclusive(spec.name) {
            return Err(Reply::err(format!(
                "ERR {} can't run inside a transaction",
                spec.name.to_ascii_uppercase()
            )));
        }
    }
    Ok(run(ctx, &watched, &queued))
}

/// STRATA-STAMPS key...: the write stamp of each key (nil for none), which
/// WATCH reads from the keys' shard in a cluster.
pub fn strata_stamps(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let db = ctx.s.db;
    let mut out = Vec::with_capacity(a.len() - 1);
    for key in &a[1..] {
        out.push(match stamp(ctx, db, key)? {
            Some(s) => Reply::bulk(s.to_string()),
            None => Reply::Nil,
        });
    }
    Ok(Reply::Array(out))
}

/// Reads STRATA-STAMPS' reply into watched keys.
pub fn stamps_from(db: usize, keys: &[Bytes], reply: &Reply) -> Result<Vec<Watched>, Reply> {
    let Reply::Array(items) = reply else {
        return Err(match reply {
            Reply::Error(_) => reply.clone(),
            _ => Reply::err("ERR malformed stamps reply"),
        });
    };
    if items.len() != keys.len() {
        return Err(Reply::err("ERR malformed stamps reply"));
    }
    keys.iter()
        .zip(items)
        .map(|(k, r)| {
            let stamp = match r {
                Reply::Nil => None,
                Reply::Bulk(b) => Some(int_arg(b)? as u64),
                _ => return Err(Reply::err("ERR malformed stamps reply")),
            };
            Ok((db, k.clone(), stamp))
        })
        .collect()
}
