//! Commands: each request is looked up once in one table, checked for
//! authentication and arity, and executed to a [`Reply`] value. RESP
//! connections and the HTTP API both execute through [`execute`], so a
//! behaviour is written once.
//!
//! One file per command family: `connection`, `server`, `keys`, `strings`,
//! `hashes`.

mod connection;
mod hashes;
mod keys;
mod server;
mod strings;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::frontend::resp::Reply;
use crate::metrics::CmdLabels;
use crate::node::{ClientHandle, Node};
use crate::storage::{Change, Lsn, ReadHint, Record, StorageError, Tier, Value, Written};

/// A command's outcome: a reply, or an error reply to send instead.
pub type CmdResult = Result<Reply, Reply>;

type Handler = fn(&mut Ctx<'_>, &[Bytes]) -> CmdResult;

/// A command's entry in the table.
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: N means exactly N arguments including the name; -N at least N.
    pub arity: i32,
    /// Whether it may change data.
    pub write: bool,
    /// Runs before AUTH.
    pub noauth: bool,
    handler: Handler,
}

const fn spec(name: &'static str, arity: i32, write: bool, handler: Handler) -> Spec {
    Spec {
        name,
        arity,
        write,
        noauth: false,
        handler,
    }
}

const fn open_spec(name: &'static str, arity: i32, handler: Handler) -> Spec {
    Spec {
        name,
        arity,
        write: false,
        noauth: true,
        handler,
    }
}

/// Every command, in one table.
pub static COMMANDS: &[Spec] = &[
    // connection
    open_spec("ping", -1, connection::ping),
    spec("echo", 2, false, connection::echo),
    open_spec("hello", -1, connection::hello),
    open_spec("auth", -2, connection::auth),
    spec("select", 2, false, connection::select),
    open_spec("quit", -1, connection::quit),
    open_spec("reset", 1, connection::reset),
    spec("client", -2, false, connection::client),
    spec("command", -1, false, connection::command),
    // server
    spec("info", -1, false, server::info),
    spec("config", -2, false, server::config),
    spec("dbsize", 1, false, server::dbsize),
    spec("flushdb", -1, true, server::flushdb),
    spec("flushall", -1, true, server::flushall),
    spec("time", 1, false, server::time),
    spec("tier", 2, false, server::tier),
    // keys
    spec("del", -2, true, keys::del),
    spec("unlink", -2, true, keys::del),
    spec("exists", -2, false, keys::exists),
    spec("type", 2, false, keys::type_),
    spec("touch", -2, false, keys::touch),
    spec("rename", 3, true, keys::rename),
    spec("renamenx", 3, true, keys::renamenx),
    spec("randomkey", 1, false, keys::randomkey),
    spec("keys", 2, false, keys::keys),
    spec("scan", -2, false, keys::scan),
    spec("expire", -3, true, keys::expire),
    spec("pexpire", -3, true, keys::pexpire),
    spec("expireat", -3, true, keys::expireat),
    spec("pexpireat", -3, true, keys::pexpireat),
    spec("ttl", 2, false, keys::ttl),
    spec("pttl", 2, false, keys::pttl),
    spec("expiretime", 2, false, keys::expiretime),
    spec("pexpiretime", 2, false, keys::pexpiretime),
    spec("persist", 2, true, keys::persist),
    spec("object", -2, false, keys::object),
    // strings
    spec("get", 2, false, strings::get),
    spec("set", -3, true, strings::set),
    spec("setnx", 3, true, strings::setnx),
    spec("setex", 4, true, strings::setex),
    spec("psetex", 4, true, strings::psetex),
    spec("getset", 3, true, strings::getset),
    spec("getdel", 2, true, strings::getdel),
    spec("getex", -2, true, strings::getex),
    spec("mget", -2, false, strings::mget),
    spec("mset", -3, true, strings::mset),
    spec("msetnx", -3, true, strings::msetnx),
    spec("incr", 2, true, strings::incr),
    spec("decr", 2, true, strings::decr),
    spec("incrby", 3, true, strings::incrby),
    spec("decrby", 3, true, strings::decrby),
    spec("incrbyfloat", 3, true, strings::incrbyfloat),
    spec("append", 3, true, strings::append),
    spec("strlen", 2, false, strings::strlen),
    spec("getrange", 4, false, strings::getrange),
    spec("substr", 4, false, strings::getrange),
    spec("setrange", 4, true, strings::setrange),
    // hashes
    spec("hset", -4, true, hashes::hset),
    spec("hmset", -4, true, hashes::hmset),
    spec("hsetnx", 4, true, hashes::hsetnx),
    spec("hget", 3, false, hashes::hget),
    spec("hmget", -3, false, hashes::hmget),
    spec("hgetall", 2, false, hashes::hgetall),
    spec("hdel", -3, true, hashes::hdel),
    spec("hexists", 3, false, hashes::hexists),
    spec("hlen", 2, false, hashes::hlen),
    spec("hstrlen", 3, false, hashes::hstrlen),
    spec("hincrby", 4, true, hashes::hincrby),
    spec("hincrbyfloat", 4, true, hashes::hincrbyfloat),
    spec("hkeys", 2, false, hashes::hkeys),
    spec("hvals", 2, false, hashes::hvals),
    spec("hrandfield", -2, false, hashes::hrandfield),
    spec("hscan", -3, false, hashes::hscan),
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

impl Ctx<'_> {
    /// Reads `key` in the selected database.
    pub fn read<R>(
        &mut self,
        key: &[u8],
        hint: ReadHint,
        f: impl FnOnce(Option<(&Record, Tier)>) -> R,
    ) -> Result<R, Reply> {
        let s = &mut *self.s;
        self.node
            .store
            .read(s.db, key, hint, |r| {
                s.last_tier = r.map(|(_, t)| t);
                f(r)
            })
            .map_err(storage_error)
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
        let w = self
            .node
            .store
            .write_change(self.s.db, key, f)
            .map_err(storage_error)?;
        self.s.last_tier = w.stored;
        if let Some(lsn) = w.lsn {
            self.s.pending_lsn = Some(self.s.pending_lsn.map_or(lsn, |p| p.max(lsn)));
            if self.s.db == 0 {
                self.node.local_cache.invalidate(key);
            }
        }
        Ok(w)
    }

    /// The string at `key`, WRONGTYPE for other types.
    pub fn get_str(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Reply> {
        self.read(key, ReadHint::Normal, |r| match r {
            None => Ok(None),
            Some((
                Record {
                    value: Value::Str(v),
                    ..
                },
                _,
            )) => Ok(Some(v.clone())),
            Some(_) => Err(err::wrongtype()),
        })?
    }

    /// The configured limit on string sizes.
    pub fn max_bulk(&self) -> usize {
        self.node.cfg.read().proto_max_bulk_len
    }
}

/// Metric handles of one command.
pub struct CmdMetrics {
    count: Counter,
    seconds: Histogram,
    errors: Counter,
}

fn cmd_metrics(node: &Node) -> &[CmdMetrics] {
    node.cmd_metrics.get_or_init(|| {
        COMMANDS
            .iter()
            .map(|s| {
                let l = CmdLabels {
                    cmd: s.name.to_string(),
                };
                CmdMetrics {
                    count: node.metrics.commands.get_or_create(&l).clone(),
                    seconds: node.metrics.command_seconds.get_or_create(&l).clone(),
                    errors: node.metrics.command_errors.get_or_create(&l).clone(),
                }
            })
            .collect()
    })
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
        return Reply::err(msg);
    };
    if !ctx.s.authed && !spec.noauth {
        return Reply::err("NOAUTH Authentication required.");
    }
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        return err::arity(spec.name);
    }
    let started = Instant::now();
    let reply = match (spec.handler)(ctx, args) {
        Ok(r) | Err(r) => r,
    };
    let m = &cmd_metrics(ctx.node)[idx];
    m.count.inc();
    m.seconds.observe(started.elapsed().as_secs_f64());
    if reply.is_error() {
        m.errors.inc();
    }
    ctx.node
        .total_commands
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    {
        let mut st = ctx.s.handle.state.lock();
        st.last_cmd.clear();
        st.last_cmd.push_str(spec.name);
        st.last_active = Some(started);
    }
    reply
}
