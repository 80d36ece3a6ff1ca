//! Commands: each request is looked up once in one table, checked for
//! authentication and arity, and executed to a [`Reply`] value. RESP
//! connections and the HTTP API both execute through [`execute`], so a
//! behaviour is written once.
//!
//! One file per command family: `connection`, `server`, `cluster`, `keys`
//! (and `sort`), `strings`, `bitmaps`, `hyperloglog`, `hashes`, `lists`,
//! `sets`, `zsets`, `geo`, `streams`.

mod acl;
mod bitmaps;
pub mod blocking;
mod cluster;
mod connection;
mod diagnostics;
mod geo;
mod hashes;
mod hyperloglog;
mod keys;
mod lists;
pub mod notify;
mod pubsub;
pub mod reply;
mod scripting;
mod server;
mod sets;
mod sort;
mod streams;
mod strings;
mod tracking;
mod transactions;
mod zsets;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use crate::node::{ClientHandle, Node};
use crate::storage::{
    Change, FieldMap, ListItems, Lsn, ReadHint, Record, SetMembers, SortedSet, StorageError,
    StreamData, Tier, Value, Version, Written,
};
pub use acl::catalogue as acl_catalogue;
pub use cluster::{dispatch, dispatch_pipeline, warm_cache, Applier, Forwarder};
pub use reply::Reply;
pub use scripting::needs_runner;

/// A command's outcome: a reply, or an error reply to send instead.
pub type CmdResult = Result<Reply, Reply>;

type Handler = fn(&mut Ctx<'_>, &[Bytes]) -> CmdResult;

/// Where a command's keys are among its arguments, as Redis's COMMAND
/// reports them: the first, the last (negative counts from the end) and
/// the step. `first == 0` means the command takes no keys. Cluster
/// routing and COMMAND GETKEYS read this one description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Index of the first key (0 = none).
    pub first: i32,
    /// Index of the last key; -1 is the last argument.
    pub last: i32,
    /// Distance between keys.
    pub step: i32,
    /// Index of an argument giving the number of keys, which follow it
    /// (0 = none; `first`, `last` and `step` are then unused).
    pub numkeys: i32,
}

const NO_KEYS: KeySpec = KeySpec {
    first: 0,
    last: 0,
    step: 0,
    numkeys: 0,
};
const FIRST_KEY: KeySpec = KeySpec {
    first: 1,
    last: 1,
    step: 1,
    numkeys: 0,
};
const SECOND_KEY: KeySpec = KeySpec {
    first: 2,
    last: 2,
    step: 1,
    numkeys: 0,
};
const TWO_KEYS: KeySpec = KeySpec {
    first: 1,
    last: 2,
    step: 1,
    numkeys: 0,
};
const ALL_KEYS: KeySpec = KeySpec {
    first: 1,
    last: -1,
    step: 1,
    numkeys: 0,
};
const PAIRS_KEYS: KeySpec = KeySpec {
    first: 1,
    last: -1,
    step: 2,
    numkeys: 0,
};
/// `numkeys key [key ...]` from the first argument (LMPOP, ZUNION, EVAL).
const COUNTED_KEYS: KeySpec = KeySpec {
    first: 0,
    last: 0,
    step: 0,
    numkeys: 1,
};

/// Every argument but the first and the last (BLPOP's keys before its
/// timeout).
const BLOCKING_KEYS: KeySpec = KeySpec {
    first: 1,
    last: -2,
    step: 1,
    numkeys: 0,
};

/// `numkeys key [key ...]` from the second argument (BLMPOP).
const SECOND_COUNTED_KEYS: KeySpec = KeySpec {
    first: 0,
    last: 0,
    step: 0,
    numkeys: 2,
};

/// Every argument from the second on (BITOP's destination and sources).
const KEYS_FROM_SECOND: KeySpec = KeySpec {
    first: 2,
    last: -1,
    step: 1,
    numkeys: 0,
};

/// The first argument, and the one after each STORE or STOREDIST
/// (GEORADIUS).
const STORE_KEYS: KeySpec = KeySpec {
    first: 1,
    last: 1,
    step: 1,
    numkeys: -2,
};

/// A destination key, then `numkeys key [key ...]` (ZUNIONSTORE).
const DEST_COUNTED_KEYS: KeySpec = KeySpec {
    first: 1,
    last: 1,
    step: 1,
    numkeys: 2,
};

/// The keys of XREAD and XREADGROUP: the first half of what follows the
/// STREAMS keyword.
const STREAMS_KEYS: KeySpec = KeySpec {
    first: 0,
    last: 0,
    step: 0,
    numkeys: -1,
};

/// The keys of the commands a STRATA-EXEC request carries.
const EMBEDDED_KEYS: KeySpec = KeySpec {
    first: 0,
    last: 0,
    step: 0,
    numkeys: -3,
};

/// A command's entry in the table.
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// The family COMMAND DOCS and ACL categories name (`string`,
    /// `sorted-set`, ...).
    pub group: &'static str,
    /// Redis arity: N means exactly N arguments including the name; -N at least N.
    pub arity: i32,
    /// Whether it may change data.
    pub write: bool,
    /// Runs before AUTH.
    pub noauth: bool,
    /// Where its keys are.
    pub keys: KeySpec,
    handler: Handler,
}

impl Spec {
    /// Whether `n` arguments (the name included) fit the command's arity.
    pub fn arity_ok(&self, n: usize) -> bool {
        let n = n as i32;
        if self.arity > 0 {
            n == self.arity
        } else {
            n >= -self.arity
        }
    }

    /// The keys of one request to this command, in order.
    pub fn keys_of<'a>(&self, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> + Send + 'a {
        let KeySpec {
            first,
            last,
            step,
            numkeys,
        } = self.keys;
        let n = args.len() as i32;
        if numkeys == -3 {
            return Box::new(transactions::keys_of(args).into_iter())
                as Box<dyn Iterator<Item = &'a Bytes> + Send + 'a>;
        }
        if numkeys == -2 {
            // The source, then each STORE or STOREDIST destination.
            let stores = args
                .iter()
                .enumerate()
                .skip(2)
                .filter(|(_, a)| is(a, "STORE") || is(a, "STOREDIST"))
                .filter_map(|(i, _)| args.get(i + 1));
            return Box::new(args.get(1).into_iter().chain(stores))
                as Box<dyn Iterator<Item = &'a Bytes> + Send + 'a>;
        }
        if numkeys < 0 {
            // After STREAMS: as many keys as IDs follow them.
            let at = args
                .iter()
                .position(|a| is(a, "STREAMS"))
                .unwrap_or(args.len());
            let rest = args.len().saturating_sub(at + 1);
            let keys = args.get(at + 1..at + 1 + rest / 2).unwrap_or_default();
            return Box::new(keys.iter()) as Box<dyn Iterator<Item = &'a Bytes> + Send + 'a>;
        }
        let counted = (numkeys > 0)
            .then(|| args.get(numkeys as usize))
            .flatten()
            .and_then(|c| std::str::from_utf8(c).ok()?.parse::<i32>().ok());
        // A counted spec may also name one fixed key before the count
        // (ZUNIONSTORE's destination).
        let fixed = if numkeys > 0 && first > 0 && first < n {
            Some(first as usize)
        } else {
            None
        };
        let (first, last) = if let Some(count) = counted {
            (numkeys + 1, (numkeys + count.max(0)).min(n - 1))
        } else if first == 0 || numkeys > 0 {
            (1, 0)
        } else if last < 0 {
            (first, n + last)
        } else {
            (first, last.min(n - 1))
        };
        let step = step.max(1) as usize;
        let range = if last >= first {
            first as usize..last as usize + 1
        } else {
            0..0
        };
        let fixed = fixed.into_iter().filter_map(move |i| args.get(i));
        Box::new(fixed.chain(range.step_by(step).filter_map(move |i| args.get(i))))
    }
}

const fn spec(
    group: &'static str,
    name: &'static str,
    arity: i32,
    write: bool,
    handler: Handler,
    keys: KeySpec,
) -> Spec {
    Spec {
        name,
        group,
        arity,
        write,
        noauth: false,
        keys,
        handler,
    }
}

const fn open_spec(
    group: &'static str,
    name: &'static str,
    arity: i32,
    handler: Handler,
    keys: KeySpec,
) -> Spec {
    Spec {
        name,
        group,
        arity,
        write: false,
        noauth: true,
        keys,
        handler,
    }
}

/// Every command, in one table.
pub static COMMANDS: &[Spec] = &[
    // connection
    open_spec("connection", "ping", -1, connection::ping, NO_KEYS),
    spec("connection", "echo", 2, false, connection::echo, NO_KEYS),
    open_spec("connection", "hello", -1, connection::hello, NO_KEYS),
    open_spec("connection", "auth", -2, connection::auth, NO_KEYS),
    spec(
        "connection",
        "select",
        2,
        false,
        connection::select,
        NO_KEYS,
    ),
    open_spec("connection", "quit", -1, connection::quit, NO_KEYS),
    open_spec("connection", "reset", 1, connection::reset, NO_KEYS),
    spec(
        "connection",
        "client",
        -2,
        false,
        connection::client,
        NO_KEYS,
    ),
    spec(
        "connection",
        "command",
        -1,
        false,
        connection::command,
        NO_KEYS,
    ),
    // transactions
    spec(
        "transactions",
        "multi",
        1,
        false,
        transactions::multi,
        NO_KEYS,
    ),
    spec(
        "transactions",
        "exec",
        1,
        false,
        transactions::exec,
        NO_KEYS,
    ),
    spec(
        "transactions",
        "discard",
        1,
        false,
        transactions::discard,
        NO_KEYS,
    ),
    spec(
        "transactions",
        "watch",
        -2,
        false,
        transactions::watch,
        ALL_KEYS,
    ),
    spec(
        "transactions",
        "unwatch",
        1,
        false,
        transactions::unwatch,
        NO_KEYS,
    ),
    spec(
        "transactions",
        "strata-exec",
        -2,
        true,
        transactions::strata_exec,
        EMBEDDED_KEYS,
    ),
    spec(
        "transactions",
        "strata-stamps",
        -2,
        false,
        transactions::strata_stamps,
        ALL_KEYS,
    ),
    // scripting
    spec(
        "scripting",
        "eval",
        -3,
        true,
        scripting::eval,
        SECOND_COUNTED_KEYS,
    ),
    spec(
        "scripting",
        "evalsha",
        -3,
        true,
        scripting::evalsha,
        SECOND_COUNTED_KEYS,
    ),
    spec(
        "scripting",
        "eval_ro",
        -3,
        false,
        scripting::eval_ro,
        SECOND_COUNTED_KEYS,
    ),
    spec(
        "scripting",
        "evalsha_ro",
        -3,
        false,
        scripting::evalsha_ro,
        SECOND_COUNTED_KEYS,
    ),
    spec(
        "scripting",
        "fcall",
        -3,
        true,
        scripting::fcall,
        SECOND_COUNTED_KEYS,
    ),
    spec(
        "scripting",
        "fcall_ro",
        -3,
        false,
        scripting::fcall_ro,
        SECOND_COUNTED_KEYS,
    ),
    spec("scripting", "script", -2, false, scripting::script, NO_KEYS),
    spec(
        "scripting",
        "function",
        -2,
        false,
        scripting::function,
        NO_KEYS,
    ),
    // pub/sub
    spec(
        "pubsub",
        "subscribe",
        -2,
        false,
        pubsub::subscribe_cmd,
        NO_KEYS,
    ),
    spec(
        "pubsub",
        "unsubscribe",
        -1,
        false,
        pubsub::unsubscribe_cmd,
        NO_KEYS,
    ),
    spec(
        "pubsub",
        "psubscribe",
        -2,
        false,
        pubsub::psubscribe,
        NO_KEYS,
    ),
    spec(
        "pubsub",
        "punsubscribe",
        -1,
        false,
        pubsub::punsubscribe,
        NO_KEYS,
    ),
    spec(
        "pubsub",
        "ssubscribe",
        -2,
        false,
        pubsub::ssubscribe,
        ALL_KEYS,
    ),
    spec(
        "pubsub",
        "sunsubscribe",
        -1,
        false,
        pubsub::sunsubscribe,
        ALL_KEYS,
    ),
    spec("pubsub", "publish", 3, false, pubsub::publish, NO_KEYS),
    spec("pubsub", "spublish", 3, false, pubsub::spublish, FIRST_KEY),
    spec("pubsub", "pubsub", -2, false, pubsub::pubsub, NO_KEYS),
    spec(
        "pubsub",
        "strata-publish",
        4,
        false,
        pubsub::strata_publish,
        NO_KEYS,
    ),
    // server
    spec("server", "info", -1, false, server::info, NO_KEYS),
    spec("server", "acl", -2, false, acl::acl, NO_KEYS),
    spec(
        "server",
        "slowlog",
        -2,
        false,
        diagnostics::slowlog,
        NO_KEYS,
    ),
    spec(
        "server",
        "latency",
        -2,
        false,
        diagnostics::latency,
        NO_KEYS,
    ),
    spec("server", "memory", -2, false, diagnostics::memory, NO_KEYS),
    spec("server", "debug", -2, false, diagnostics::debug, NO_KEYS),
    spec(
        "server",
        "monitor",
        1,
        false,
        diagnostics::monitor_cmd,
        NO_KEYS,
    ),
    spec("server", "config", -2, false, server::config, NO_KEYS),
    spec("server", "dbsize", 1, false, server::dbsize, NO_KEYS),
    spec("server", "flushdb", -1, true, server::flushdb, NO_KEYS),
    spec("server", "flushall", -1, true, server::flushall, NO_KEYS),
    spec("server", "swapdb", 3, true, server::swapdb, NO_KEYS),
    spec("server", "shutdown", -1, false, server::shutdown, NO_KEYS),
    spec("server", "save", 1, false, server::save, NO_KEYS),
    spec("server", "bgsave", -1, false, server::bgsave, NO_KEYS),
    spec("server", "lastsave", 1, false, server::lastsave, NO_KEYS),
    spec(
        "server",
        "strata-flushslots",
        -4,
        true,
        server::strata_flushslots,
        NO_KEYS,
    ),
    spec("server", "time", 1, false, server::time, NO_KEYS),
    spec("server", "tier", 2, false, server::tier, FIRST_KEY),
    spec("cluster", "cluster", -2, false, cluster::cluster, NO_KEYS),
    spec("cluster", "readonly", 1, false, cluster::readonly, NO_KEYS),
    spec("generic", "wait", 3, false, cluster::wait, NO_KEYS),
    spec(
        "cluster",
        "strata-acked",
        -2,
        false,
        cluster::strata_acked,
        NO_KEYS,
    ),
    spec(
        "cluster",
        "readwrite",
        1,
        false,
        cluster::readwrite,
        NO_KEYS,
    ),
    // keys
    spec("generic", "del", -2, true, keys::del, ALL_KEYS),
    spec("generic", "unlink", -2, true, keys::del, ALL_KEYS),
    spec("generic", "exists", -2, false, keys::exists, ALL_KEYS),
    spec("generic", "type", 2, false, keys::type_, FIRST_KEY),
    spec("generic", "touch", -2, false, keys::touch, ALL_KEYS),
    spec("generic", "rename", 3, true, keys::rename, TWO_KEYS),
    spec("generic", "renamenx", 3, true, keys::renamenx, TWO_KEYS),
    spec("generic", "randomkey", 1, false, keys::randomkey, NO_KEYS),
    spec("generic", "keys", 2, false, keys::keys, NO_KEYS),
    spec("generic", "scan", -2, false, keys::scan, NO_KEYS),
    spec("generic", "expire", -3, true, keys::expire, FIRST_KEY),
    spec("generic", "pexpire", -3, true, keys::pexpire, FIRST_KEY),
    spec("generic", "expireat", -3, true, keys::expireat, FIRST_KEY),
    spec("generic", "pexpireat", -3, true, keys::pexpireat, FIRST_KEY),
    spec("generic", "ttl", 2, false, keys::ttl, FIRST_KEY),
    spec("generic", "pttl", 2, false, keys::pttl, FIRST_KEY),
    spec(
        "generic",
        "expiretime",
        2,
        false,
        keys::expiretime,
        FIRST_KEY,
    ),
    spec(
        "generic",
        "pexpiretime",
        2,
        false,
        keys::pexpiretime,
        FIRST_KEY,
    ),
    spec("generic", "persist", 2, true, keys::persist, FIRST_KEY),
    spec(
        "generic",
        "strata-expired",
        -2,
        true,
        keys::strata_expired,
        ALL_KEYS,
    ),
    spec("generic", "object", -2, false, keys::object, SECOND_KEY),
    spec("generic", "copy", -3, true, keys::copy, TWO_KEYS),
    spec("generic", "move", 3, true, keys::move_, FIRST_KEY),
    spec("generic", "dump", 2, false, keys::dump, FIRST_KEY),
    spec("generic", "restore", -4, true, keys::restore, FIRST_KEY),
    spec("generic", "sort", -2, true, sort::sort, STORE_KEYS),
    spec("generic", "sort_ro", -2, false, sort::sort_ro, FIRST_KEY),
    // strings
    spec("string", "get", 2, false, strings::get, FIRST_KEY),
    spec("string", "set", -3, true, strings::set, FIRST_KEY),
    spec("string", "setnx", 3, true, strings::setnx, FIRST_KEY),
    spec("string", "setex", 4, true, strings::setex, FIRST_KEY),
    spec("string", "psetex", 4, true, strings::psetex, FIRST_KEY),
    spec("string", "getset", 3, true, strings::getset, FIRST_KEY),
    spec("string", "getdel", 2, true, strings::getdel, FIRST_KEY),
    spec("string", "getex", -2, true, strings::getex, FIRST_KEY),
    spec("string", "mget", -2, false, strings::mget, ALL_KEYS),
    spec("string", "mset", -3, true, strings::mset, PAIRS_KEYS),
    spec("string", "msetnx", -3, true, strings::msetnx, PAIRS_KEYS),
    spec("string", "incr", 2, true, strings::incr, FIRST_KEY),
    spec("string", "decr", 2, true, strings::decr, FIRST_KEY),
    spec("string", "incrby", 3, true, strings::incrby, FIRST_KEY),
    spec("string", "decrby", 3, true, strings::decrby, FIRST_KEY),
    spec(
        "string",
        "incrbyfloat",
        3,
        true,
        strings::incrbyfloat,
        FIRST_KEY,
    ),
    spec("string", "append", 3, true, strings::append, FIRST_KEY),
    spec("string", "strlen", 2, false, strings::strlen, FIRST_KEY),
    spec("string", "getrange", 4, false, strings::getrange, FIRST_KEY),
    spec("string", "substr", 4, false, strings::getrange, FIRST_KEY),
    spec("string", "setrange", 4, true, strings::setrange, FIRST_KEY),
    spec("string", "lcs", -3, false, strings::lcs, TWO_KEYS),
    // bitmaps
    spec("bitmap", "setbit", 4, true, bitmaps::setbit, FIRST_KEY),
    spec("bitmap", "getbit", 3, false, bitmaps::getbit, FIRST_KEY),
    spec(
        "bitmap",
        "bitcount",
        -2,
        false,
        bitmaps::bitcount,
        FIRST_KEY,
    ),
    spec("bitmap", "bitpos", -3, false, bitmaps::bitpos, FIRST_KEY),
    spec(
        "bitmap",
        "bitop",
        -4,
        true,
        bitmaps::bitop,
        KEYS_FROM_SECOND,
    ),
    spec("bitmap", "bitfield", -2, true, bitmaps::bitfield, FIRST_KEY),
    spec(
        "bitmap",
        "bitfield_ro",
        -2,
        false,
        bitmaps::bitfield_ro,
        FIRST_KEY,
    ),
    // geo
    spec("geo", "geoadd", -5, true, geo::geoadd, FIRST_KEY),
    spec("geo", "geopos", -2, false, geo::geopos, FIRST_KEY),
    spec("geo", "geodist", -4, false, geo::geodist, FIRST_KEY),
    spec("geo", "geohash", -2, false, geo::geohash, FIRST_KEY),
    spec("geo", "geosearch", -7, false, geo::geosearch, FIRST_KEY),
    spec(
        "geo",
        "geosearchstore",
        -8,
        true,
        geo::geosearchstore,
        TWO_KEYS,
    ),
    spec("geo", "georadius", -6, true, geo::georadius, STORE_KEYS),
    spec(
        "geo",
        "georadius_ro",
        -6,
        false,
        geo::georadius_ro,
        FIRST_KEY,
    ),
    spec(
        "geo",
        "georadiusbymember",
        -5,
        true,
        geo::georadiusbymember,
        STORE_KEYS,
    ),
    spec(
        "geo",
        "georadiusbymember_ro",
        -5,
        false,
        geo::georadiusbymember_ro,
        FIRST_KEY,
    ),
    // HyperLogLog
    spec(
        "hyperloglog",
        "pfadd",
        -2,
        true,
        hyperloglog::pfadd,
        FIRST_KEY,
    ),
    spec(
        "hyperloglog",
        "pfcount",
        -2,
        false,
        hyperloglog::pfcount,
        ALL_KEYS,
    ),
    spec(
        "hyperloglog",
        "pfmerge",
        -2,
        true,
        hyperloglog::pfmerge,
        ALL_KEYS,
    ),
    // lists
    spec("list", "lpush", -3, true, lists::lpush, FIRST_KEY),
    spec("list", "rpush", -3, true, lists::rpush, FIRST_KEY),
    spec("list", "lpushx", -3, true, lists::lpushx, FIRST_KEY),
    spec("list", "rpushx", -3, true, lists::rpushx, FIRST_KEY),
    spec("list", "lpop", -2, true, lists::lpop, FIRST_KEY),
    spec("list", "rpop", -2, true, lists::rpop, FIRST_KEY),
    spec("list", "llen", 2, false, lists::llen, FIRST_KEY),
    spec("list", "lrange", 4, false, lists::lrange, FIRST_KEY),
    spec("list", "lindex", 3, false, lists::lindex, FIRST_KEY),
    spec("list", "lset", 4, true, lists::lset, FIRST_KEY),
    spec("list", "linsert", 5, true, lists::linsert, FIRST_KEY),
    spec("list", "lrem", 4, true, lists::lrem, FIRST_KEY),
    spec("list", "ltrim", 4, true, lists::ltrim, FIRST_KEY),
    spec("list", "lpos", -3, false, lists::lpos, FIRST_KEY),
    spec("list", "lmove", 5, true, lists::lmove, TWO_KEYS),
    spec("list", "rpoplpush", 3, true, lists::rpoplpush, TWO_KEYS),
    spec("list", "lmpop", -4, true, lists::lmpop, COUNTED_KEYS),
    spec("list", "blpop", -3, true, lists::blpop, BLOCKING_KEYS),
    spec("list", "brpop", -3, true, lists::brpop, BLOCKING_KEYS),
    spec("list", "blmove", 6, true, lists::blmove, TWO_KEYS),
    spec("list", "brpoplpush", 4, true, lists::brpoplpush, TWO_KEYS),
    spec(
        "list",
        "blmpop",
        -5,
        true,
        lists::blmpop,
        SECOND_COUNTED_KEYS,
    ),
    // sets
    spec("set", "sadd", -3, true, sets::sadd, FIRST_KEY),
    spec("set", "srem", -3, true, sets::srem, FIRST_KEY),
    spec("set", "smembers", 2, false, sets::smembers, FIRST_KEY),
    spec("set", "sismember", 3, false, sets::sismember, FIRST_KEY),
    spec("set", "smismember", -3, false, sets::smismember, FIRST_KEY),
    spec("set", "scard", 2, false, sets::scard, FIRST_KEY),
    spec("set", "spop", -2, true, sets::spop, FIRST_KEY),
    spec(
        "set",
        "srandmember",
        -2,
        false,
        sets::srandmember,
        FIRST_KEY,
    ),
    spec("set", "smove", 4, true, sets::smove, TWO_KEYS),
    spec("set", "sinter", -2, false, sets::sinter, ALL_KEYS),
    spec(
        "set",
        "sintercard",
        -3,
        false,
        sets::sintercard,
        COUNTED_KEYS,
    ),
    spec("set", "sinterstore", -3, true, sets::sinterstore, ALL_KEYS),
    spec("set", "sunion", -2, false, sets::sunion, ALL_KEYS),
    spec("set", "sunionstore", -3, true, sets::sunionstore, ALL_KEYS),
    spec("set", "sdiff", -2, false, sets::sdiff, ALL_KEYS),
    spec("set", "sdiffstore", -3, true, sets::sdiffstore, ALL_KEYS),
    spec("set", "sscan", -3, false, sets::sscan, FIRST_KEY),
    // sorted sets
    spec("sorted-set", "zadd", -4, true, zsets::zadd, FIRST_KEY),
    spec("sorted-set", "zincrby", 4, true, zsets::zincrby, FIRST_KEY),
    spec("sorted-set", "zrem", -3, true, zsets::zrem, FIRST_KEY),
    spec("sorted-set", "zcard", 2, false, zsets::zcard, FIRST_KEY),
    spec("sorted-set", "zcount", 4, false, zsets::zcount, FIRST_KEY),
    spec(
        "sorted-set",
        "zlexcount",
        4,
        false,
        zsets::zlexcount,
        FIRST_KEY,
    ),
    spec("sorted-set", "zscore", 3, false, zsets::zscore, FIRST_KEY),
    spec(
        "sorted-set",
        "zmscore",
        -3,
        false,
        zsets::zmscore,
        FIRST_KEY,
    ),
    spec("sorted-set", "zrank", -3, false, zsets::zrank, FIRST_KEY),
    spec(
        "sorted-set",
        "zrevrank",
        -3,
        false,
        zsets::zrevrank,
        FIRST_KEY,
    ),
    spec("sorted-set", "zrange", -4, false, zsets::zrange, FIRST_KEY),
    spec(
        "sorted-set",
        "zrangestore",
        -5,
        true,
        zsets::zrangestore,
        TWO_KEYS,
    ),
    spec(
        "sorted-set",
        "zrangebyscore",
        -4,
        false,
        zsets::zrangebyscore,
        FIRST_KEY,
    ),
    spec(
        "sorted-set",
        "zrevrangebyscore",
        -4,
        false,
        zsets::zrevrangebyscore,
        FIRST_KEY,
    ),
    spec(
        "sorted-set",
        "zrangebylex",
        -4,
        false,
        zsets::zrangebylex,
        FIRST_KEY,
    ),
    spec(
        "sorted-set",
        "zrevrangebylex",
        -4,
        false,
        zsets::zrevrangebylex,
        FIRST_KEY,
    ),
    spec(
        "sorted-set",
        "zrevrange",
        -4,
        false,
        zsets::zrevrange,
        FIRST_KEY,
    ),
    spec(
        "sorted-set",
        "zremrangebyrank",
        4,
        true,
        zsets::zremrangebyrank,
        FIRST_KEY,
    ),
    spec(
        "sorted-set",
        "zremrangebyscore",
        4,
        true,
        zsets::zremrangebyscore,
        FIRST_KEY,
    ),
    spec(
        "sorted-set",
        "zremrangebylex",
        4,
        true,
        zsets::zremrangebylex,
        FIRST_KEY,
    ),
    spec("sorted-set", "zpopmin", -2, true, zsets::zpopmin, FIRST_KEY),
    spec("sorted-set", "zpopmax", -2, true, zsets::zpopmax, FIRST_KEY),
    spec("sorted-set", "zmpop", -4, true, zsets::zmpop, COUNTED_KEYS),
    spec(
        "sorted-set",
        "bzpopmin",
        -3,
        true,
        zsets::bzpopmin,
        BLOCKING_KEYS,
    ),
    spec(
        "sorted-set",
        "bzpopmax",
        -3,
        true,
        zsets::bzpopmax,
        BLOCKING_KEYS,
    ),
    spec(
        "sorted-set",
        "bzmpop",
        -5,
        true,
        zsets::bzmpop,
        SECOND_COUNTED_KEYS,
    ),
    spec(
        "sorted-set",
        "zrandmember",
        -2,
        false,
        zsets::zrandmember,
        FIRST_KEY,
    ),
    spec(
        "sorted-set",
        "zunion",
        -3,
        false,
        zsets::zunion,
        COUNTED_KEYS,
    ),
    spec(
        "sorted-set",
        "zinter",
        -3,
        false,
        zsets::zinter,
        COUNTED_KEYS,
    ),
    spec("sorted-set", "zdiff", -3, false, zsets::zdiff, COUNTED_KEYS),
    spec(
        "sorted-set",
        "zunionstore",
        -4,
        true,
        zsets::zunionstore,
        DEST_COUNTED_KEYS,
    ),
    spec(
        "sorted-set",
        "zinterstore",
        -4,
        true,
        zsets::zinterstore,
        DEST_COUNTED_KEYS,
    ),
    spec(
        "sorted-set",
        "zdiffstore",
        -4,
        true,
        zsets::zdiffstore,
        DEST_COUNTED_KEYS,
    ),
    spec(
        "sorted-set",
        "zintercard",
        -3,
        false,
        zsets::zintercard,
        COUNTED_KEYS,
    ),
    spec("sorted-set", "zscan", -3, false, zsets::zscan, FIRST_KEY),
    // streams
    spec("stream", "xadd", -5, true, streams::xadd, FIRST_KEY),
    spec("stream", "xlen", 2, false, streams::xlen, FIRST_KEY),
    spec("stream", "xrange", -4, false, streams::xrange, FIRST_KEY),
    spec(
        "stream",
        "xrevrange",
        -4,
        false,
        streams::xrevrange,
        FIRST_KEY,
    ),
    spec("stream", "xdel", -3, true, streams::xdel, FIRST_KEY),
    spec("stream", "xtrim", -4, true, streams::xtrim, FIRST_KEY),
    spec("stream", "xsetid", -3, true, streams::xsetid, FIRST_KEY),
    spec("stream", "xread", -4, false, streams::xread, STREAMS_KEYS),
    spec(
        "stream",
        "xreadgroup",
        -7,
        true,
        streams::xreadgroup,
        STREAMS_KEYS,
    ),
    spec("stream", "xack", -4, true, streams::xack, FIRST_KEY),
    spec(
        "stream",
        "xpending",
        -3,
        false,
        streams::xpending,
        FIRST_KEY,
    ),
    spec("stream", "xclaim", -6, true, streams::xclaim, FIRST_KEY),
    spec(
        "stream",
        "xautoclaim",
        -6,
        true,
        streams::xautoclaim,
        FIRST_KEY,
    ),
    spec("stream", "xgroup", -2, true, streams::xgroup, SECOND_KEY),
    spec("stream", "xinfo", -2, false, streams::xinfo, SECOND_KEY),
    // hashes
    spec("hash", "hset", -4, true, hashes::hset, FIRST_KEY),
    spec("hash", "hmset", -4, true, hashes::hmset, FIRST_KEY),
    spec("hash", "hsetnx", 4, true, hashes::hsetnx, FIRST_KEY),
    spec("hash", "hget", 3, false, hashes::hget, FIRST_KEY),
    spec("hash", "hmget", -3, false, hashes::hmget, FIRST_KEY),
    spec("hash", "hgetall", 2, false, hashes::hgetall, FIRST_KEY),
    spec("hash", "hdel", -3, true, hashes::hdel, FIRST_KEY),
    spec("hash", "hexists", 3, false, hashes::hexists, FIRST_KEY),
    spec("hash", "hlen", 2, false, hashes::hlen, FIRST_KEY),
    spec("hash", "hstrlen", 3, false, hashes::hstrlen, FIRST_KEY),
    spec("hash", "hincrby", 4, true, hashes::hincrby, FIRST_KEY),
    spec(
        "hash",
        "hincrbyfloat",
        4,
        true,
        hashes::hincrbyfloat,
        FIRST_KEY,
    ),
    spec("hash", "hkeys", 2, false, hashes::hkeys, FIRST_KEY),
    spec("hash", "hvals", 2, false, hashes::hvals, FIRST_KEY),
    spec(
        "hash",
        "hrandfield",
        -2,
        false,
        hashes::hrandfield,
        FIRST_KEY,
    ),
    spec("hash", "hscan", -3, false, hashes::hscan, FIRST_KEY),
];

fn index() -> &'static HashMap<&'static str, usize> {
    static INDEX: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    INDEX.get_or_init(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name, i))
            .collect()
    })
}

/// Looks a command up by name (any case): its table index and entry.
pub fn lookup(name: &[u8]) -> Option<(usize, &'static Spec)> {
    let mut buf = [0u8; 32];
    if name.len() > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let lower = std::str::from_utf8(&buf[..name.len()]).ok()?;
    index().get(lower).map(|&i| (i, &COMMANDS[i]))
}

/// Makes a request batch's writes (up to `lsn`) as durable as `appendfsync`
/// promises, before anyone acknowledges them. Under `always` the fsync
/// runs on the blocking pool, so the calling thread keeps serving.
pub async fn make_durable(store: &crate::storage::Store, lsn: Lsn) -> Result<(), StorageError> {
    if !store.sync_blocks() {
        return store.sync(lsn);
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.sync(lsn))
        .await
        .unwrap_or_else(|e| Err(StorageError::Io(std::io::Error::other(e))))
}

/// Per-connection state.
pub struct Session {
    /// Selected database.
    pub db: usize,
    /// Whether AUTH succeeded (or no password is set).
    pub authed: bool,
    /// RESP3 after HELLO 3.
    pub resp3: bool,
    /// The registry entry of this client.
    pub handle: Arc<ClientHandle>,
    /// Highest log position written by this batch; synced before replying.
    pub pending_lsn: Option<Lsn>,
    /// Close after replying.
    pub quit: bool,
    /// The tier that served the last read or took the last write.
    pub last_tier: Option<Tier>,
    /// The last read was answered from this node's cache of hot keys.
    pub local_cache_hit: bool,
    /// The client asked for the cluster's topology (or said READONLY), so
    /// it routes by itself: send it MOVED rather than forwarding for it.
    pub cluster_aware: bool,
    /// READONLY: reads may be served, possibly stale, by any replica.
    pub readonly: bool,
    /// A request a peer forwarded: never forwarded again.
    pub forwarded: bool,
    /// Find out which replicas hold each replicated write (the HTTP
    /// write API reports them).
    pub want_holders: bool,
    /// With `want_holders`: the node ids that had the last replicated
    /// write in their log when it was acknowledged.
    pub holders: Option<Vec<u64>>,
    /// Commands queued since MULTI (None outside a transaction).
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A command was refused while queuing: EXEC will abort.
    pub multi_failed: bool,
    /// Bytes queued since MULTI.
    pub multi_bytes: usize,
    /// Keys watched, with their write stamps.
    pub watched: Vec<transactions::Watched>,
    /// Pub/sub subscriptions.
    pub subs: Option<Box<pubsub::Subscriptions>>,
    /// Where pushed messages (pub/sub, invalidations, MONITOR lines)
    /// arrive; only RESP connections have one.
    pub inbox: Option<crate::pubsub::Inbox>,
    /// CLIENT TRACKING: read keys are remembered for invalidation.
    pub tracking: Option<crate::tracking::Mode>,
    /// CLIENT CACHING YES/NO applies to the next command.
    pub caching: Option<bool>,
    /// In a cluster: the shard this connection last wrote to, with the
    /// write's log index when this node proposed it (WAIT counts to it).
    pub last_write: Option<(u32, Option<u64>)>,
    /// The ACL user whose permissions apply; None for the node's own
    /// sessions (replication, forwarded requests), which are trusted.
    pub user: Option<Arc<crate::acl::User>>,
    /// The ACL generation `user` was read at.
    pub acl_generation: u64,
    /// Where commands run from, for ACL LOG: `toplevel`, `multi`, `lua`.
    pub acl_context: &'static str,
    /// Keys changed by the running command, while keyspace notifications
    /// are on.
    pub touched: Vec<notify::Touched>,
    /// CLIENT REPLY OFF: no replies are sent.
    pub reply_off: bool,
    /// CLIENT REPLY SKIP: replies still to leave out (its own and the
    /// next command's).
    pub reply_skip: u8,
    /// CLIENT NO-TOUCH: reads don't count toward a key's recency.
    pub no_touch: bool,
    /// The node's own work (the metric pipeline's workers): left out of
    /// MONITOR, the slow log, command metrics and INFO's counters.
    pub internal: bool,
}

impl Session {
    /// A fresh session for `handle`; `authed` when no password is required.
    pub fn new(handle: Arc<ClientHandle>, authed: bool) -> Session {
        Session {
            db: 0,
            authed,
            resp3: false,
            handle,
            pending_lsn: None,
            quit: false,
            last_tier: None,
            local_cache_hit: false,
            cluster_aware: false,
            readonly: false,
            forwarded: false,
            want_holders: false,
            holders: None,
            multi: None,
            multi_failed: false,
            multi_bytes: 0,
            watched: Vec::new(),
            subs: None,
            inbox: None,
            tracking: None,
            caching: None,
            last_write: None,
            user: None,
            acl_generation: 0,
            acl_context: "toplevel",
            touched: Vec::new(),
            reply_off: false,
            reply_skip: 0,
            no_touch: false,
            internal: false,
        }
    }

    /// The inbox of a RESP connection.
    pub fn inbox(&mut self) -> Option<&mut crate::pubsub::Inbox> {
        self.inbox.as_mut()
    }

    /// Drops every subscription (the connection is going away).
    pub fn leave_pubsub(&mut self, node: &Node) {
        pubsub::leave(node, self);
    }

    /// Leaves MULTI (EXEC, DISCARD, RESET) and forgets watched keys.
    pub fn end_transaction(&mut self) {
        self.multi = None;
        self.multi_failed = false;
        self.multi_bytes = 0;
        self.unwatch();
        let mut st = self.handle.state.lock();
        st.in_multi = false;
        st.queued = 0;
        st.queued_bytes = 0;
    }

    /// Watches `key` of `db` at `stamp`.
    pub fn watch(&mut self, db: usize, key: Bytes, stamp: Option<u64>) {
        if !self.watched.iter().any(|(d, k, _)| *d == db && *k == key) {
            self.watched.push((db, key, stamp));
        }
        self.handle.state.lock().watching = self.watched.len();
    }

    /// Forgets every watched key.
    pub fn unwatch(&mut self) {
        if !self.watched.is_empty() {
            self.watched.clear();
            self.handle.state.lock().watching = 0;
        }
    }

    /// A command was refused while queuing inside MULTI.
    /// Whether the next reply goes to the client (CLIENT REPLY); counts a
    /// skipped one.
    pub fn wants_reply(&mut self) -> bool {
        if self.reply_skip > 0 {
            self.reply_skip -= 1;
            return false;
        }
        !self.reply_off
    }

    fn refused(&mut self) {
        if self.multi.is_some() {
            self.multi_failed = true;
        }
    }
}

/// What a command sees: the node and its connection.
pub struct Ctx<'a> {
    /// The node.
    pub node: &'a Node,
    /// The connection.
    pub s: &'a mut Session,
}

/// Redis's error texts, in one place.
pub mod err {
    use super::Reply;
    /// WRONGTYPE.
    pub fn wrongtype() -> Reply {
        Reply::err("WRONGTYPE Operation against a key holding the wrong kind of value")
    }
    /// Syntax error.
    pub fn syntax() -> Reply {
        Reply::err("ERR syntax error")
    }
    /// Not an integer.
    pub fn not_int() -> Reply {
        Reply::err("ERR value is not an integer or out of range")
    }
    /// Not a float.
    pub fn not_float() -> Reply {
        Reply::err("ERR value is not a valid float")
    }
    /// Overflow.
    pub fn overflow() -> Reply {
        Reply::err("ERR increment or decrement would overflow")
    }
    /// Wrong arity.
    pub fn arity(name: &str) -> Reply {
        Reply::err(format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    }
    /// Too big.
    pub fn too_big() -> Reply {
        Reply::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    }
    /// Unknown subcommand.
    pub fn subcommand(sub: &[u8], cmd: &str) -> Reply {
        Reply::err(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(sub),
            cmd.to_ascii_uppercase()
        ))
    }
}

/// Maps a storage error to its reply, in one place.
pub fn storage_error(e: StorageError) -> Reply {
    match e {
        StorageError::BadDatabase => Reply::err("ERR DB index is out of range"),
        StorageError::Poisoned { .. } => Reply::err(format!("MISCONF {e}")),
        StorageError::KeyTooLarge { .. } | StorageError::ValueTooLarge { .. } => {
            Reply::err(format!("ERR {e}"))
        }
        other => Reply::err(format!("ERR {other}")),
    }
}

/// Parses an integer argument.
pub fn int_arg(b: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(err::not_int)
}

/// Parses a float argument (Redis accepts `inf`, rejects NaN).
pub fn float_arg(b: &[u8]) -> Result<f64, Reply> {
    let s = std::str::from_utf8(b).map_err(|_| err::not_float())?;
    let v = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        t if t.contains("nan") || t.is_empty() || t.trim() != t => return Err(err::not_float()),
        _ => s.parse::<f64>().map_err(|_| err::not_float())?,
    };
    Ok(v)
}

/// Case-insensitive keyword comparison.
pub fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// A collection type that commands read and change in place.
pub(crate) trait Collection: Default {
    /// The value holding `c`.
    fn wrap(c: Box<Self>) -> Value;
    /// `v` as this type, if it is one.
    fn pick(v: &Value) -> Option<&Self>;
    /// `v` as this type, if it is one.
    fn pick_mut(v: &mut Value) -> Option<&mut Self>;
    /// Whether it holds nothing (an empty collection is no key).
    fn is_empty(&self) -> bool;
}

macro_rules! collection {
    ($t:ty, $variant:ident) => {
        impl Collection for $t {
            fn wrap(c: Box<Self>) -> Value {
                Value::$variant(c)
            }
            fn pick(v: &Value) -> Option<&Self> {
                match v {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn pick_mut(v: &mut Value) -> Option<&mut Self> {
                match v {
                    Value::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn is_empty(&self) -> bool {
                <$t>::is_empty(self)
            }
        }
    };
}
collection!(FieldMap, Hash);
collection!(ListItems, List);
collection!(SetMembers, Set);
collection!(SortedSet, ZSet);

impl Collection for StreamData {
    fn wrap(c: Box<Self>) -> Value {
        Value::Stream(c)
    }
    fn pick(v: &Value) -> Option<&Self> {
        match v {
            Value::Stream(c) => Some(c),
            _ => None,
        }
    }
    fn pick_mut(v: &mut Value) -> Option<&mut Self> {
        match v {
            Value::Stream(c) => Some(c),
            _ => None,
        }
    }
    /// A stream stays when its last entry goes, as in Redis.
    fn is_empty(&self) -> bool {
        false
    }
}

impl Ctx<'_> {
    /// Reads the collection at `key`: None if there is no key, WRONGTYPE if
    /// it holds another type.
    pub(crate) fn read_as<T: Collection, R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, Reply> {
        self.read_typed(key, T::pick, f)
    }

    /// Changes the collection at `key`. With `create`, an absent key starts
    /// empty; otherwise `f` sees None and can't create one. `f` returns its
    /// result and how it changed the collection ([`Change::None`] for not
    /// at all). A collection left empty is removed, as in Redis.
    pub(crate) fn update<T: Collection, R>(
        &mut self,
        key: &[u8],
        create: bool,
        f: impl FnOnce(Option<&mut T>) -> Result<(R, Change), Reply>,
    ) -> Result<R, Reply> {
        let w = self.write_change(key, |cur| {
            let created = cur.is_none() && create;
            if created {
                *cur = Some(Record {
                    value: T::wrap(Box::default()),
                    expire_at_ms: None,
                    version: Version::default(),
                    written_secs: 0,
                });
            }
            let c = match cur.as_mut() {
                None => None,
                Some(rec) => match T::pick_mut(&mut rec.value) {
                    Some(c) => Some(c),
                    None => return (Err(err::wrongtype()), Change::None),
                },
            };
            match f(c) {
                Ok((r, change)) => {
                    let empty = cur
                        .as_ref()
                        .and_then(|rec| T::pick(&rec.value))
                        .is_some_and(T::is_empty);
                    if empty {
                        *cur = None;
                    }
                    let change = if change == Change::None || (created && empty) {
                        Change::None
                    } else if empty || created {
                        Change::Full
                    } else {
                        change
                    };
                    (Ok(r), change)
                }
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

    /// Reads `key` in the selected database.
    pub fn read<R>(
        &mut self,
        key: &[u8],
        hint: ReadHint,
        f: impl FnOnce(Option<(&Record, Tier)>) -> R,
    ) -> Result<R, Reply> {
        let s = &mut *self.s;
        // CLIENT NO-TOUCH: the read leaves the key's recency as it was.
        let hint = if s.no_touch && hint == ReadHint::Normal {
            ReadHint::Peek
        } else {
            hint
        };
        let mut missed = false;
        let out = self
            .node
            .store
            .read(s.db, key, hint, |r| {
                s.last_tier = r.map(|(_, t)| t);
                missed = r.is_none();
                f(r)
            })
            .map_err(storage_error);
        if missed && hint != ReadHint::Peek {
            let flags = self.node.notify_flags();
            if flags & crate::pubsub::events::KEY_MISS != 0 {
                notify::publish(
                    self.node,
                    flags,
                    crate::pubsub::events::KEY_MISS,
                    "keymiss",
                    s.db,
                    key,
                );
            }
        }
        out
    }

    /// Changes `key` in the selected database; the write is synced before
    /// the reply goes out.
    pub fn write<R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Option<Record>) -> (R, bool),
    ) -> Result<Written<R>, Reply> {
        self.write_change(key, |cur| {
            let (r, changed) = f(cur);
            (r, if changed { Change::Full } else { Change::None })
        })
    }

    /// Like [`Ctx::write`], saying how the record changed (see [`Change`]).
    pub fn write_change<R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Option<Record>) -> (R, Change),
    ) -> Result<Written<R>, Reply> {
        let mut created = false;
        let mut changed = false;
        // Keyspace notifications and client tracking want to know.
        let notify = self.node.notify_flags() != 0 || self.node.tracking.active();
        let mut kinds = None;
        let w = self
            .node
            .store
            .write_change(self.s.db, key, |cur| {
                let before = cur.as_ref().map(|r| r.value.kind());
                let (r, change) = f(cur);
                changed = change != Change::None;
                created = before.is_none() && cur.is_some() && changed;
                if notify && change != Change::None {
                    kinds = Some((before, cur.as_ref().map(|r| r.value.kind())));
                }
                (r, change)
            })
            .map_err(storage_error)?;
        if let Some((before, after)) = kinds {
            self.s.touched.push(notify::Touched {
                db: self.s.db,
                key: key.to_vec(),
                before,
                after,
            });
        }
        if created {
            // A client blocked on this key may now be served.
            self.node.waiters.signal(self.s.db, key);
        }
        self.s.last_tier = w.stored;
        if changed {
            if let Some(cluster) = self.node.cluster.get() {
                // Nodes caching the key drop it before the write is
                // acknowledged.
                cluster.written(self.s.db as u8, key);
            }
        }
        if let Some(lsn) = w.lsn {
            self.s.pending_lsn = Some(self.s.pending_lsn.map_or(lsn, |p| p.max(lsn)));
            if self.s.db == 0 {
                self.node.local_cache.invalidate(key);
            }
        }
        Ok(w)
    }

    /// Reads `key` as one type: `pick` returns the value if it is of that
    /// type; another type is WRONGTYPE, and `f` sees None for no key.
    pub fn read_typed<T: ?Sized, R>(
        &mut self,
        key: &[u8],
        pick: impl FnOnce(&Value) -> Option<&T>,
        f: impl FnOnce(Option<&T>) -> R,
    ) -> Result<R, Reply> {
        self.read(key, ReadHint::Normal, |r| match r {
            None => Ok(f(None)),
            Some((rec, _)) => pick(&rec.value)
                .map(|v| f(Some(v)))
                .ok_or_else(err::wrongtype),
        })?
    }

    /// Runs `f` so that its writes reach the log as one record: after a
    /// crash a multi-key command has happened entirely or not at all.
    pub fn atomic<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let store = self.node.store.clone();
        let (out, lsn) = store.atomic(|| f(self));
        if let Some(lsn) = lsn {
            self.s.pending_lsn = Some(self.s.pending_lsn.map_or(lsn, |p| p.max(lsn)));
        }
        out
    }

    /// The string at `key`, WRONGTYPE for other types.
    pub fn get_str(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Reply> {
        self.read_typed(
            key,
            |v| match v {
                Value::Str(s) => Some(s),
                _ => None,
            },
            |s| s.cloned(),
        )
    }

    /// The configured limit on string sizes.
    pub fn max_bulk(&self) -> usize {
        self.node.cfg.read().proto_max_bulk_len
    }
}

/// How CLIENT PAUSE treats a request: None if it is never held (CLIENT
/// itself, so a pause can be lifted), else whether it may write, which
/// a `WRITE` pause holds too.
pub fn pausable(args: &[Bytes]) -> Option<bool> {
    let (_, spec) = lookup(args.first()?)?;
    match spec.name {
        "client" | "quit" | "reset" => None,
        "eval" | "evalsha" | "fcall" | "publish" | "spublish" | "pfcount" | "exec" => Some(true),
        _ => Some(spec.write),
    }
}

/// Executes one request.
pub fn execute(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let Some(name) = args.first() else {
        return Reply::NilArray;
    };
    let Some((idx, spec)) = lookup(name) else {
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            String::from_utf8_lossy(name)
        );
        for a in args.iter().skip(1).take(8) {
            msg.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
        }
        ctx.s.refused();
        return Reply::err(msg);
    };
    if !ctx.s.authed && !spec.noauth {
        ctx.s.refused();
        return Reply::err("NOAUTH Authentication required.");
    }
    if !spec.arity_ok(args.len()) {
        ctx.s.refused();
        return err::arity(spec.name);
    }
    if ctx.s.user.is_some() {
        if let Err(denied) = acl::permit(ctx, idx, spec, args) {
            ctx.s.refused();
            return denied;
        }
    }
    if ctx.s.multi.is_some() && !transactions::runs_in_multi(spec.name) {
        return transactions::queue(ctx, args);
    }
    if !ctx.s.resp3
        && ctx.s.subs.as_ref().is_some_and(|s| s.active())
        && !pubsub::allowed_subscribed(spec.name)
    {
        return pubsub::not_allowed(spec.name);
    }
    let _gate = if transactions::exclusive(spec.name) || scripting::bypasses_gate(spec.name, args) {
        None
    } else {
        match ctx.node.gate.shared() {
            Ok(g) => g,
            Err(busy) => return Reply::err(busy),
        }
    };
    let started = Instant::now();
    {
        let mut st = ctx.s.handle.state.lock();
        st.last_active = Some(started);
        st.last_cmd.clear();
        st.last_cmd.push_str(spec.name);
        // `client|list`, as Redis 7 names a container's subcommand.
        let word = |a: &&Bytes| {
            a.len() <= 32
                && a.iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        };
        if let Some(sub) = args
            .get(1)
            .filter(|a| acl::is_container(spec.name) && word(a))
        {
            st.last_cmd.push('|');
            st.last_cmd
                .push_str(&String::from_utf8_lossy(sub).to_ascii_lowercase());
        }
    }
    let mark = ctx.s.touched.len();
    let remembers = ctx.s.tracking.is_some() && tracking::remembers(ctx.s, spec);
    let reply = match (spec.handler)(ctx, args) {
        Ok(r) | Err(r) => r,
    };
    if ctx.s.touched.len() > mark {
        notify::emit(ctx, spec, args, mark);
        tracking::invalidate(ctx, mark);
        ctx.s.touched.truncate(mark);
    }
    if remembers {
        tracking::remember(ctx.node, ctx.s, spec, args);
    }
    if ctx.node.hotkeys.enabled() && tracking::is_data(spec) {
        for key in spec.keys_of(args) {
            ctx.node.hotkeys.touch(ctx.s.db, key);
        }
    }
    if ctx.s.caching.is_some() {
        tracking::after_command(ctx.s, spec, args);
    }
    if !ctx.s.internal {
        account(ctx, idx, spec, args, started, &reply);
    }
    reply
}

/// What a client's command leaves behind for the operator: MONITOR lines,
/// the slow log, per-command metrics and INFO's counters.
fn account(
    ctx: &mut Ctx<'_>,
    idx: usize,
    spec: &Spec,
    args: &[Bytes],
    started: Instant,
    reply: &Reply,
) {
    if ctx.node.monitors.active() {
        diagnostics::monitor(ctx, idx, spec, args);
    }
    let m = &ctx
        .node
        .metrics
        .command_handles(|| COMMANDS.iter().map(|s| s.name).collect())[idx];
    let took = started.elapsed();
    diagnostics::observe(ctx, spec, args, took.as_micros() as u64);
    m.count.inc();
    m.seconds.observe(took.as_secs_f64());
    m.micros.fetch_add(
        took.as_micros() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    if let Reply::Error(text) = reply {
        m.errors.inc();
        let prefix = text.split(' ').next().unwrap_or("ERR");
        let mut by = ctx.node.errors_by_prefix.lock();
        match by.get_mut(prefix) {
            Some(n) => *n += 1,
            None => {
                by.insert(prefix.to_string(), 1);
            }
        }
    }
    ctx.node
        .total_commands
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}
