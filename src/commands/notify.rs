//! Keyspace notifications (`notify-keyspace-events`): after a command,
//! the keys it changed become Redis's events on `__keyspace@<db>__:<key>`
//! and `__keyevent@<db>__:<event>`.
//!
//! Every write goes through [`super::Ctx::write_change`], which notes the
//! key with its type before and after while notifications are on; this
//! module names the events from the command and its arguments. Keys that
//! expire are reported by the store.

use bytes::Bytes;

use super::{is, Ctx, Spec};
use crate::node::Node;
use crate::pubsub::events as ev;
use crate::storage::ValueKind;

/// A key a command changed.
#[derive(Debug, Clone)]
pub struct Touched {
    /// Its database.
    pub db: usize,
    /// The key.
    pub key: Vec<u8>,
    /// Its type before the change (None: absent).
    pub before: Option<ValueKind>,
    /// Its type after (None: deleted).
    pub after: Option<ValueKind>,
}

fn class_of(kind: ValueKind) -> u32 {
    match kind {
        ValueKind::Str => ev::STRING,
        ValueKind::Hash => ev::HASH,
        ValueKind::List => ev::LIST,
        ValueKind::Set => ev::SET,
        ValueKind::ZSet => ev::ZSET,
        ValueKind::Stream => ev::STREAM,
    }
}

/// Events about keys rather than values.
const GENERIC: &[&str] = &[
    "del",
    "expire",
    "persist",
    "rename_from",
    "rename_to",
    "move_from",
    "move_to",
    "copy_to",
    "restore",
    "sortstore",
];

/// The event `cmd` raises on the key at position `pos` among its keys.
fn event_of(
    spec: &Spec,
    args: &[Bytes],
    pos: usize,
    t: &Touched,
    session_db: usize,
) -> Option<&'static str> {
    let has = |word: &str| args.iter().skip(1).any(|a| is(a, word));
    let deleted = t.before.is_some() && t.after.is_none();
    Some(match spec.name {
        "set" | "setnx" | "setex" | "psetex" | "getset" | "mset" | "msetnx" => "set",
        "setrange" => "setrange",
        "incr" | "decr" | "incrby" | "decrby" => "incrby",
        "incrbyfloat" => "incrbyfloat",
        "append" => "append",
        "getex" if has("PERSIST") => "persist",
        "getex" => "expire",
        "setbit" | "bitfield" => "setbit",
        "bitop" => "set",
        "pfadd" | "pfmerge" => "pfadd",
        "lpush" | "lpushx" => "lpush",
        "rpush" | "rpushx" => "rpush",
        "lpop" | "blpop" => "lpop",
        "rpop" | "brpop" => "rpop",
        "linsert" => "linsert",
        "lset" => "lset",
        "lrem" => "lrem",
        "ltrim" => "ltrim",
        "rpoplpush" | "brpoplpush" => {
            if pos == 0 {
                "rpop"
            } else {
                "lpush"
            }
        }
        "lmove" | "blmove" => {
            let (from, to) = (args.get(3), args.get(4));
            let left = |a: Option<&Bytes>| a.is_some_and(|a| is(a, "LEFT"));
            match (pos, left(from), left(to)) {
                (0, true, _) => "lpop",
                (0, false, _) => "rpop",
                (_, _, true) => "lpush",
                _ => "rpush",
            }
        }
        "lmpop" | "blmpop" => {
            if has("LEFT") {
                "lpop"
            } else {
                "rpop"
            }
        }
        "hset" | "hsetnx" | "hmset" => "hset",
        "hincrby" => "hincrby",
        "hincrbyfloat" => "hincrbyfloat",
        "hdel" => "hdel",
        "sadd" => "sadd",
        "srem" => "srem",
        "spop" => "spop",
        "smove" => {
            if pos == 0 {
                "srem"
            } else {
                "sadd"
            }
        }
        "sinterstore" => "sinterstore",
        "sunionstore" => "sunionstore",
        "sdiffstore" => "sdiffstore",
        "zadd" if has("INCR") => "zincr",
        "zadd" | "geoadd" => "zadd",
        "zincrby" => "zincr",
        "zrem" => "zrem",
        "zremrangebyscore" => "zremrangebyscore",
        "zremrangebyrank" => "zremrangebyrank",
        "zremrangebylex" => "zremrangebylex",
        "zpopmin" | "bzpopmin" => "zpopmin",
        "zpopmax" | "bzpopmax" => "zpopmax",
        "zmpop" | "bzmpop" => {
            if has("MIN") {
                "zpopmin"
            } else {
                "zpopmax"
            }
        }
        "zunionstore" => "zunionstore",
        "zinterstore" => "zinterstore",
        "zdiffstore" => "zdiffstore",
        "zrangestore" => "zrangestore",
        "geosearchstore" => "geosearchstore",
        "georadius" | "georadiusbymember" => "georadiusstore",
        "xadd" => "xadd",
        "xtrim" => "xtrim",
        "xdel" => "xdel",
        "xsetid" => "xsetid",
        "xgroup" => match args.get(1) {
            Some(s) if is(s, "CREATE") => "xgroup-create",
            Some(s) if is(s, "SETID") => "xgroup-setid",
            Some(s) if is(s, "DESTROY") => "xgroup-destroy",
            Some(s) if is(s, "CREATECONSUMER") => "xgroup-createconsumer",
            Some(s) if is(s, "DELCONSUMER") => "xgroup-delconsumer",
            _ => return None,
        },
        "del" | "unlink" | "getdel" => "del",
        // An expiry in the past deletes the key: that is its event.
        "expire" | "pexpire" | "expireat" | "pexpireat" if deleted => return None,
        "expire" | "pexpire" | "expireat" | "pexpireat" => "expire",
        "persist" => "persist",
        "rename" | "renamenx" => {
            if pos == 0 && deleted {
                "rename_from"
            } else {
                "rename_to"
            }
        }
        "move" => {
            if t.db == session_db {
                "move_from"
            } else {
                "move_to"
            }
        }
        "copy" => "copy_to",
        "restore" => "restore",
        "sort" => "sortstore",
        "strata-expired" => "expired",
        _ => return None,
    })
}

/// Publishes one event, if its class is on.
pub fn publish(node: &Node, flags: u32, class: u32, event: &str, db: usize, key: &[u8]) {
    if flags & class == 0 {
        return;
    }
    let limits = node.cfg.read().pubsub_output_limit;
    if flags & ev::KEYSPACE != 0 {
        let mut channel = format!("__keyspace@{db}__:").into_bytes();
        channel.extend_from_slice(key);
        node.pubsub.publish(
            &Bytes::from(channel),
            &Bytes::copy_from_slice(event.as_bytes()),
            limits,
        );
    }
    if flags & ev::KEYEVENT != 0 {
        node.pubsub.publish(
            &Bytes::from(format!("__keyevent@{db}__:{event}")),
            &Bytes::copy_from_slice(key),
            limits,
        );
    }
}

/// Raises the events of the keys a command changed (`ctx.s.touched` from
/// `from` on).
pub(super) fn emit(ctx: &mut Ctx<'_>, spec: &Spec, args: &[Bytes], from: usize) {
    let flags = ctx.node.notify_flags();
    if flags == 0 {
        return;
    }
    let touched: Vec<Touched> = ctx.s.touched[from..].to_vec();
    let keys: Vec<&Bytes> = spec.keys_of(args).collect();
    let pos_of = |t: &Touched| keys.iter().position(|k| k[..] == t.key[..]).unwrap_or(0);
    // In the order of the command's keys, as Redis raises them (a
    // RENAME's source before its destination), the source database first.
    let mut touched: Vec<(usize, Touched)> = touched.into_iter().map(|t| (pos_of(&t), t)).collect();
    let db = ctx.s.db;
    touched.sort_by_key(|(pos, t)| (*pos, t.db != db));
    for (pos, t) in &touched {
        let pos = *pos;
        if t.before.is_none() && t.after.is_some() {
            publish(ctx.node, flags, ev::NEW, "new", t.db, &t.key);
        }
        let event = event_of(spec, args, pos, t, ctx.s.db);
        if let Some(e) = event {
            let class = if e == "expired" {
                ev::EXPIRED
            } else if GENERIC.contains(&e) {
                ev::GENERIC
            } else {
                t.after.or(t.before).map_or(ev::GENERIC, class_of)
            };
            publish(ctx.node, flags, class, e, t.db, &t.key);
        }
        // A command that empties a collection deletes the key, as Redis
        // reports it.
        let gone = t.before.is_some() && t.after.is_none();
        let said = matches!(event, Some("del" | "expired" | "rename_from" | "move_from"));
        if gone && !said {
            publish(ctx.node, flags, ev::GENERIC, "del", t.db, &t.key);
        }
    }
}

/// A key the store removed because it expired: its event, and clients
/// that may cache it are told.
pub fn expired(node: &Node, db: usize, key: &[u8]) {
    let flags = node.notify_flags();
    if flags != 0 {
        publish(node, flags, ev::EXPIRED, "expired", db, key);
    }
    if node.tracking.active() {
        let limits = node.cfg.read().pubsub_output_limit;
        node.tracking
            .invalidate(&[Bytes::copy_from_slice(key)], 0, limits);
    }
}
