//! ACL: the catalogue of commands with Redis's categories, the permission
//! check every request passes, and the ACL command.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::reply::Reply;
use super::{err, int_arg, is, lookup, transactions, CmdResult, Ctx, Spec, COMMANDS};
use crate::acl::{category_bit, category_names, Access, Catalogue, Denied, Reason, User};

/// Commands in `@fast`: O(1) or O(log N). Every other command is `@slow`.
const FAST: &[&str] = &[
    "get",
    "set",
    "setnx",
    "setex",
    "psetex",
    "getset",
    "getdel",
    "getex",
    "mget",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "append",
    "strlen",
    "getbit",
    "bitfield_ro",
    "hset",
    "hsetnx",
    "hget",
    "hmset",
    "hmget",
    "hdel",
    "hlen",
    "hstrlen",
    "hexists",
    "hincrby",
    "hincrbyfloat",
    "lpush",
    "rpush",
    "lpushx",
    "rpushx",
    "lpop",
    "rpop",
    "llen",
    "sadd",
    "srem",
    "sismember",
    "smismember",
    "scard",
    "spop",
    "smove",
    "zadd",
    "zincrby",
    "zrem",
    "zcard",
    "zscore",
    "zmscore",
    "zrank",
    "zrevrank",
    "zcount",
    "zlexcount",
    "zpopmin",
    "zpopmax",
    "xadd",
    "xlen",
    "xdel",
    "xack",
    "xclaim",
    "xautoclaim",
    "xsetid",
    "pfadd",
    "exists",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "persist",
    "type",
    "touch",
    "unlink",
    "renamenx",
    "move",
    "dbsize",
    "ping",
    "echo",
    "hello",
    "auth",
    "select",
    "quit",
    "reset",
    "readonly",
    "readwrite",
    "multi",
    "discard",
    "watch",
    "unwatch",
    "publish",
    "spublish",
    "time",
    "tier",
];

/// Commands in `@admin` (beyond subcommands listed in [`SUBCOMMANDS`]).
const ADMIN: &[&str] = &[
    "monitor",
    "strata-acked",
    "debug",
    "slowlog",
    "latency",
    "shutdown",
    "save",
    "bgsave",
    "lastsave",
    "strata-publish",
    "strata-flushslots",
    "strata-expired",
];

/// Commands in `@dangerous`.
const DANGEROUS: &[&str] = &[
    "monitor",
    "debug",
    "swapdb",
    "slowlog",
    "latency",
    "flushdb",
    "flushall",
    "keys",
    "sort",
    "restore",
    "info",
    "shutdown",
    "save",
    "bgsave",
    "lastsave",
    "strata-publish",
    "strata-flushslots",
    "strata-expired",
];

/// Commands in `@blocking`.
const BLOCKING: &[&str] = &[
    "blpop",
    "brpop",
    "blmove",
    "brpoplpush",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    "xread",
    "xreadgroup",
];

/// Commands in `@keyspace` outside the generic family.
const KEYSPACE: &[&str] = &["dbsize", "flushdb", "flushall", "swapdb", "strata-expired"];

/// Container commands: each subcommand and its categories beyond the
/// container's family, as Redis 7 files them.
const SUBCOMMANDS: &[(&str, &[(&str, &str)])] = &[
    (
        "client",
        &[
            ("caching", "slow"),
            ("getname", "slow"),
            ("getredir", "slow"),
            ("id", "slow"),
            ("info", "slow"),
            ("kill", "admin slow dangerous"),
            ("list", "admin slow dangerous"),
            ("no-evict", "admin slow dangerous"),
            ("no-touch", "slow"),
            ("pause", "admin slow dangerous"),
            ("reply", "slow"),
            ("setinfo", "slow"),
            ("setname", "slow"),
            ("tracking", "slow"),
            ("trackinginfo", "slow"),
            ("unblock", "admin slow dangerous"),
            ("unpause", "admin slow dangerous"),
            ("help", "slow"),
        ],
    ),
    (
        "command",
        &[
            ("count", "slow"),
            ("docs", "slow"),
            ("getkeys", "slow"),
            ("getkeysandflags", "slow"),
            ("info", "slow"),
            ("list", "slow"),
            ("help", "slow"),
        ],
    ),
    (
        "config",
        &[
            ("get", "admin slow dangerous"),
            ("set", "admin slow dangerous"),
            ("resetstat", "admin slow dangerous"),
            ("rewrite", "admin slow dangerous"),
            ("help", "slow"),
        ],
    ),
    (
        "cluster",
        &[
            ("addslots", "admin slow dangerous"),
            ("addslotsrange", "admin slow dangerous"),
            ("countkeysinslot", "slow"),
            ("delslots", "admin slow dangerous"),
            ("delslotsrange", "admin slow dangerous"),
            ("failover", "admin slow dangerous"),
            ("forget", "admin slow dangerous"),
            ("getkeysinslot", "slow"),
            ("info", "slow"),
            ("keyslot", "slow"),
            ("links", "slow"),
            ("meet", "admin slow dangerous"),
            ("myid", "slow"),
            ("nodes", "slow"),
            ("replicas", "admin slow dangerous"),
            ("replicate", "admin slow dangerous"),
            ("reset", "admin slow dangerous"),
            ("setslot", "admin slow dangerous"),
            ("shards", "slow"),
            ("slots", "slow"),
            ("strata-create", "admin slow dangerous"),
            ("strata-node", "admin slow dangerous"),
            ("help", "slow"),
        ],
    ),
    (
        "memory",
        &[
            ("doctor", "slow"),
            ("malloc-stats", "slow"),
            ("purge", "slow"),
            ("stats", "slow"),
            ("usage", "read slow"),
            ("help", "slow"),
        ],
    ),
    (
        "object",
        &[
            ("encoding", "keyspace read slow"),
            ("freq", "keyspace read slow"),
            ("idletime", "keyspace read slow"),
            ("refcount", "keyspace read slow"),
            ("help", "keyspace slow"),
        ],
    ),
    (
        "script",
        &[
            ("debug", "slow"),
            ("exists", "slow"),
            ("flush", "slow"),
            ("kill", "slow"),
            ("load", "slow"),
            ("help", "slow"),
        ],
    ),
    (
        "function",
        &[
            ("delete", "write slow"),
            ("dump", "slow"),
            ("flush", "write slow"),
            ("kill", "slow"),
            ("list", "slow"),
            ("load", "write slow"),
            ("restore", "write slow"),
            ("stats", "slow"),
            ("help", "slow"),
        ],
    ),
    (
        "pubsub",
        &[
            ("channels", "slow"),
            ("numpat", "slow"),
            ("numsub", "slow"),
            ("shardchannels", "slow"),
            ("shardnumsub", "slow"),
            ("help", "slow"),
        ],
    ),
    (
        "xgroup",
        &[
            ("create", "write slow"),
            ("createconsumer", "write slow"),
            ("delconsumer", "write slow"),
            ("destroy", "write slow"),
            ("setid", "write slow"),
            ("help", "slow"),
        ],
    ),
    (
        "xinfo",
        &[
            ("consumers", "read slow"),
            ("groups", "read slow"),
            ("stream", "read slow"),
            ("help", "slow"),
        ],
    ),
    (
        "acl",
        &[
            ("cat", "slow"),
            ("deluser", "admin slow dangerous"),
            ("dryrun", "admin slow dangerous"),
            ("genpass", "slow"),
            ("getuser", "admin slow dangerous"),
            ("list", "admin slow dangerous"),
            ("load", "admin slow dangerous"),
            ("log", "admin slow dangerous"),
            ("save", "admin slow dangerous"),
            ("setuser", "admin slow dangerous"),
            ("users", "admin slow dangerous"),
            ("whoami", "slow"),
            ("help", "slow"),
        ],
    ),
];

fn bits(names: &str) -> u32 {
    names
        .split_ascii_whitespace()
        .filter_map(category_bit)
        .fold(0, |a, b| a | b)
}

/// The category a command family belongs to.
fn family(group: &str) -> Option<&'static str> {
    Some(match group {
        "string" => "string",
        "hash" => "hash",
        "list" => "list",
        "set" => "set",
        "sorted-set" => "sortedset",
        "stream" => "stream",
        "bitmap" => "bitmap",
        "hyperloglog" => "hyperloglog",
        "geo" => "geo",
        "transactions" => "transaction",
        "pubsub" => "pubsub",
        "scripting" => "scripting",
        "connection" => "connection",
        "generic" => "keyspace",
        _ => return None,
    })
}

/// The categories of a top-level command.
fn categories_of(s: &Spec) -> u32 {
    let fam = family(s.group);
    let mut names: Vec<&str> = fam.into_iter().collect();
    let container = SUBCOMMANDS.iter().any(|(c, _)| *c == s.name);
    let data = !matches!(
        s.group,
        "transactions" | "scripting" | "pubsub" | "connection" | "server" | "cluster"
    );
    if !container {
        if s.write && s.group != "scripting" {
            names.push("write");
        } else if !s.write
            && data
            && (s.keys.first != 0 || s.keys.numkeys != 0 || fam == Some("keyspace"))
        {
            names.push("read");
        }
    }
    if s.name == "dbsize" {
        names.push("read");
    }
    for (list, cat) in [
        (ADMIN, "admin"),
        (DANGEROUS, "dangerous"),
        (BLOCKING, "blocking"),
        (KEYSPACE, "keyspace"),
    ] {
        if list.contains(&s.name) {
            names.push(cat);
        }
    }
    names.push(if FAST.contains(&s.name) {
        "fast"
    } else {
        "slow"
    });
    bits(&names.join(" "))
}

/// Whether `name` is a container command (CLIENT, CONFIG, ...).
pub(super) fn is_container(name: &str) -> bool {
    SUBCOMMANDS.iter().any(|(n, _)| *n == name)
}

/// Every command and subcommand, with its categories; a command's id is
/// its place in [`COMMANDS`].
pub fn catalogue() -> Arc<Catalogue> {
    static CATALOGUE: OnceLock<Arc<Catalogue>> = OnceLock::new();
    CATALOGUE
        .get_or_init(|| {
            let mut c = Catalogue::default();
            for s in COMMANDS {
                c.add(s.name, categories_of(s));
            }
            // ACL itself: a container like the others.
            for (name, subs) in SUBCOMMANDS {
                let Some(id) = c.id(name) else {
                    continue;
                };
                let fam = COMMANDS
                    .get(id)
                    .and_then(|s| family(s.group))
                    .unwrap_or_default();
                for (sub, cats) in *subs {
                    c.add_sub(id, sub, bits(cats) | bits(fam));
                }
            }
            Arc::new(c)
        })
        .clone()
}

/// The categories of command `idx` (COMMAND INFO lists them).
pub fn command_categories(idx: usize) -> Vec<String> {
    category_names(catalogue().categories(idx))
        .map(|c| format!("@{c}"))
        .collect()
}

/// Write commands that also read the keys they change (they reply with
/// what was there): their keys need both permissions.
const READ_AND_WRITE: &[&str] = &[
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "getset",
    "getdel",
    "getex",
    "lpop",
    "rpop",
    "lmpop",
    "blpop",
    "brpop",
    "blmpop",
    "lmove",
    "blmove",
    "rpoplpush",
    "brpoplpush",
    "spop",
    "zpopmin",
    "zpopmax",
    "bzpopmin",
    "bzpopmax",
    "zmpop",
    "bzmpop",
    "zincrby",
    "hincrby",
    "hincrbyfloat",
    "xreadgroup",
    "xclaim",
    "xautoclaim",
    "bitfield",
    "eval",
    "evalsha",
    "fcall",
    "rename",
    "renamenx",
    "smove",
    "pfmerge",
];

/// Write commands whose first key is a destination and the rest sources.
const STORE_FIRST: &[&str] = &[
    "sinterstore",
    "sunionstore",
    "sdiffstore",
    "zunionstore",
    "zinterstore",
    "zdiffstore",
    "zrangestore",
    "geosearchstore",
    "bitop",
];

/// What one request touches, for its permission check.
fn access_of<'a>(cat: &Catalogue, idx: usize, spec: &Spec, args: &'a [Bytes]) -> Access<'a> {
    let command = args
        .get(1)
        .and_then(|sub| cat.sub_id(idx, sub))
        .unwrap_or(idx);
    let mut access = Access {
        command,
        first_arg: args.get(1).map(|a| &a[..]),
        ..Access::default()
    };
    match spec.name {
        "subscribe" | "ssubscribe" => {
            access.channels = args[1..].iter().map(|c| &c[..]).collect();
            return access;
        }
        "psubscribe" => {
            access.patterns = args[1..].iter().map(|c| &c[..]).collect();
            return access;
        }
        "publish" | "spublish" => {
            access.channels = vec![&args[1][..]];
            return access;
        }
        "unsubscribe" | "sunsubscribe" | "punsubscribe" => return access,
        _ => {}
    }
    let read_only = !spec.write || matches!(spec.name, "eval_ro" | "evalsha_ro" | "fcall_ro");
    let both = READ_AND_WRITE.contains(&spec.name)
        || (spec.name == "set" && args.iter().skip(3).any(|a| is(a, "GET")));
    let store_first = STORE_FIRST.contains(&spec.name) || spec.name == "pfmerge";
    let source_first = matches!(
        spec.name,
        "copy" | "sort" | "georadius" | "georadiusbymember"
    );
    access.keys = spec
        .keys_of(args)
        .enumerate()
        .map(|(i, k)| {
            let (read, write) = if read_only {
                (true, false)
            } else if both {
                (true, true)
            } else if store_first {
                (i > 0 || spec.name == "pfmerge", i == 0)
            } else if source_first {
                (i == 0, i > 0)
            } else {
                (false, true)
            };
            (&k[..], read, write)
        })
        .collect();
    access
}

/// Reads the session's user again if any user changed since it was read.
fn refresh_user(ctx: &mut Ctx<'_>) -> Result<(), Reply> {
    let generation = ctx.node.acl.generation();
    if generation == ctx.s.acl_generation {
        return Ok(());
    }
    let Some(name) = ctx.s.user.as_ref().map(|u| u.name.clone()) else {
        return Ok(());
    };
    match ctx.node.acl.user(&name) {
        Some(u) => {
            ctx.s.user = Some(u);
            ctx.s.acl_generation = generation;
            Ok(())
        }
        None => {
            ctx.s.quit = true;
            Err(Reply::err("ERR the user of this connection was deleted"))
        }
    }
}

/// Whether the session's user may run this request; a refusal is logged
/// in ACL LOG and answered with Redis's `-NOPERM` text.
pub(super) fn permit(
    ctx: &mut Ctx<'_>,
    idx: usize,
    spec: &Spec,
    args: &[Bytes],
) -> Result<(), Reply> {
    refresh_user(ctx)?;
    // Node-internal sessions (no user) are trusted.
    let user = match &ctx.s.user {
        Some(u) if !u.unrestricted() => u.clone(),
        _ => return Ok(()),
    };
    match spec.name {
        // A transaction sent whole: each of its commands is checked.
        "strata-exec" => {
            let Some((watched, queued)) = transactions::decode(args) else {
                return Ok(());
            };
            let keys: Vec<Bytes> = watched.into_iter().map(|(_, k, _)| k).collect();
            let mut watch = vec![Bytes::from_static(b"WATCH")];
            watch.extend(keys);
            for cmd in std::iter::once(&watch)
                .filter(|w| w.len() > 1)
                .chain(&queued)
            {
                if let Some((i, s)) = lookup(&cmd[0]) {
                    check(ctx, &user, i, s, cmd)?;
                }
            }
            Ok(())
        }
        "strata-stamps" => {
            let Some((i, s)) = lookup(b"watch") else {
                return Ok(());
            };
            check(ctx, &user, i, s, args)
        }
        _ => check(ctx, &user, idx, spec, args),
    }
}

fn check(
    ctx: &mut Ctx<'_>,
    user: &User,
    idx: usize,
    spec: &Spec,
    args: &[Bytes],
) -> Result<(), Reply> {
    let cat = ctx.node.acl.catalogue();
    let access = access_of(cat, idx, spec, args);
    let Err(denied) = user.check(&access) else {
        return Ok(());
    };
    let command = cat.name(access.command).to_string();
    let (reason, object, text) = match denied {
        Denied::Command => (
            Reason::Command,
            command.clone(),
            format!("NOPERM this user has no permissions to run the '{command}' command"),
        ),
        Denied::Key(k) => (
            Reason::Key,
            String::from_utf8_lossy(&k).into_owned(),
            "NOPERM this user has no permissions to access one of the keys used as arguments"
                .to_string(),
        ),
        Denied::Channel(c) => (
            Reason::Channel,
            String::from_utf8_lossy(&c).into_owned(),
            "NOPERM this user has no permissions to access one of the channels used as arguments"
                .to_string(),
        ),
    };
    let info = super::connection::client_line(ctx.node, &ctx.s.handle);
    let max = ctx.node.cfg.read().acllog_max_len;
    // Refused while queuing in MULTI counts as the transaction's.
    let context = if ctx.s.multi.is_some() {
        "multi"
    } else {
        ctx.s.acl_context
    };
    ctx.node
        .acl
        .log(reason, context, object, user.name.clone(), info, max);
    Err(Reply::err(text))
}

/// Records a failed login in ACL LOG.
pub(super) fn log_auth_failure(ctx: &Ctx<'_>, username: &str) {
    let info = super::connection::client_line(ctx.node, &ctx.s.handle);
    let max = ctx.node.cfg.read().acllog_max_len;
    ctx.node.acl.log(
        Reason::Auth,
        ctx.s.acl_context,
        "AUTH".into(),
        username.to_string(),
        info,
        max,
    );
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// ACL GETUSER's reply for `u`.
fn describe_user(u: &User) -> Reply {
    let mut fields = vec![
        (
            Reply::bulk("flags"),
            Reply::Array(u.flags().into_iter().map(Reply::bulk).collect()),
        ),
        (
            Reply::bulk("passwords"),
            Reply::Array(
                u.passwords()
                    .iter()
                    .map(|p| Reply::bulk(p.clone()))
                    .collect(),
            ),
        ),
    ];
    for (name, value) in u.root.fields() {
        fields.push((Reply::bulk(name), Reply::bulk(value)));
    }
    let selectors = u
        .selectors()
        .iter()
        .map(|s| {
            Reply::Map(
                s.fields()
                    .into_iter()
                    .map(|(n, v)| (Reply::bulk(n), Reply::bulk(v)))
                    .collect(),
            )
        })
        .collect();
    fields.push((Reply::bulk("selectors"), Reply::Array(selectors)));
    Reply::Map(fields)
}

/// Disconnects every client logged in as one of `names`.
fn disconnect_users(ctx: &Ctx<'_>, names: &[String]) {
    let clients: Vec<_> = ctx.node.clients.lock().values().cloned().collect();
    for c in clients {
        let user = c.state.lock().user.clone();
        if names.contains(&user) {
            c.kill.cancel();
        }
    }
}

fn denial_text(denied: Denied, command: &str) -> String {
    match denied {
        Denied::Command => {
            format!("This user has no permissions to run the '{command}' command")
        }
        Denied::Key(k) => format!(
            "This user has no permissions to access the '{}' key",
            text(&k)
        ),
        Denied::Channel(c) => format!(
            "This user has no permissions to access the '{}' channel",
            text(&c)
        ),
    }
}

const HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]",
    "    Delete a list of users.",
    "DRYRUN <username> <command> [<arg> ...]",
    "    Returns whether the user can execute the given command without executing the command.",
    "GETUSER <username>",
    "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST",
    "    Show users details in config file format.",
    "LOAD",
    "    Reload users from the ACL file.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries.",
    "SAVE",
    "    Save the current config to the ACL file.",
    "SETUSER <username> <attribute> [<attribute> ...]",
    "    Create or modify a user with the specified attributes.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Print this help.",
];

/// ACL SETUSER and DELUSER reach every node of a cluster, so a user can
/// log in anywhere.
fn broadcast(ctx: &Ctx<'_>, a: &[Bytes]) {
    super::scripting::broadcast(ctx, a);
}

pub fn acl(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    let acl = &ctx.node.acl;
    let n = a.len();
    if is(sub, "WHOAMI") && n == 2 {
        let name = ctx
            .s
            .user
            .as_ref()
            .map_or_else(|| "default".to_string(), |u| u.name.clone());
        Ok(Reply::bulk(name))
    } else if is(sub, "USERS") && n == 2 {
        Ok(Reply::Array(
            acl.users()
                .iter()
                .map(|u| Reply::bulk(u.name.clone()))
                .collect(),
        ))
    } else if is(sub, "LIST") && n == 2 {
        Ok(Reply::Array(
            acl.users()
                .iter()
                .map(|u| Reply::bulk(format!("user {} {}", u.name, u.describe())))
                .collect(),
        ))
    } else if is(sub, "GETUSER") && n == 3 {
        Ok(acl
            .user(&text(&a[2]))
            .map_or(Reply::Nil, |u| describe_user(&u)))
    } else if is(sub, "SETUSER") && n >= 3 {
        let name = text(&a[2]);
        let rules: Vec<String> = a[3..].iter().map(|r| text(r)).collect();
        acl.set_user(&name, &rules)
            .map_err(|e| Reply::err(format!("ERR {e}")))?;
        broadcast(ctx, a);
        Ok(Reply::OK)
    } else if is(sub, "DELUSER") && n >= 3 {
        let names: Vec<String> = a[2..].iter().map(|r| text(r)).collect();
        let removed = acl
            .delete_users(&names)
            .map_err(|e| Reply::err(format!("ERR {e}")))?;
        disconnect_users(ctx, &names);
        broadcast(ctx, a);
        Ok(Reply::Int(removed as i64))
    } else if is(sub, "CAT") && (n == 2 || n == 3) {
        let cat = acl.catalogue();
        let Some(wanted) = a.get(2) else {
            return Ok(Reply::Array(
                crate::acl::CATEGORIES
                    .iter()
                    .map(|c| Reply::bulk(*c))
                    .collect(),
            ));
        };
        let bit = category_bit(&text(wanted).to_ascii_lowercase())
            .ok_or_else(|| Reply::err(format!("ERR Unknown category '{}'", text(wanted))))?;
        Ok(Reply::Array(
            (0..cat.len())
                .filter(|&id| cat.categories(id) & bit != 0)
                .map(|id| Reply::bulk(cat.name(id).to_string()))
                .collect(),
        ))
    } else if is(sub, "GENPASS") && (n == 2 || n == 3) {
        let bits = match a.get(2) {
            None => 256,
            Some(b) => match int_arg(b) {
                Ok(v) if v > 0 && v <= 4096 => v as usize,
                _ => {
                    return Err(Reply::err(
                        "ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096",
                    ))
                }
            },
        };
        let chars = bits.div_ceil(4);
        let bytes: Vec<u8> = (0..chars.div_ceil(2))
            .map(|_| rand::random::<u8>())
            .collect();
        let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        hex.truncate(chars);
        Ok(Reply::bulk(hex))
    } else if is(sub, "LOG") && (n == 2 || n == 3) {
        let count = match a.get(2) {
            None => 10,
            Some(r) if is(r, "RESET") => {
                acl.reset_log();
                return Ok(Reply::OK);
            }
            Some(c) => match int_arg(c) {
                Ok(v) if v >= 0 => v as usize,
                _ => return Err(Reply::err("ERR value is out of range, must be positive")),
            },
        };
        let now = crate::storage::now_ms();
        Ok(Reply::Array(
            acl.log_entries(count)
                .into_iter()
                .map(|e| {
                    Reply::Map(vec![
                        (Reply::bulk("count"), Reply::Int(e.count as i64)),
                        (Reply::bulk("reason"), Reply::bulk(e.reason)),
                        (Reply::bulk("context"), Reply::bulk(e.context)),
                        (Reply::bulk("object"), Reply::bulk(e.object)),
                        (Reply::bulk("username"), Reply::bulk(e.username)),
                        (
                            Reply::bulk("age-seconds"),
                            Reply::Double(now.saturating_sub(e.created_ms) as f64 / 1000.0),
                        ),
                        (Reply::bulk("client-info"), Reply::bulk(e.client_info)),
                        (Reply::bulk("entry-id"), Reply::Int(e.entry_id as i64)),
                        (
                            Reply::bulk("timestamp-created"),
                            Reply::Int(e.created_ms as i64),
                        ),
                        (
                            Reply::bulk("timestamp-last-updated"),
                            Reply::Int(e.updated_ms as i64),
                        ),
                    ])
                })
                .collect(),
        ))
    } else if is(sub, "DRYRUN") && n >= 4 {
        let name = text(&a[2]);
        let user = acl
            .user(&name)
            .ok_or_else(|| Reply::err(format!("ERR User '{name}' not found")))?;
        let args = &a[3..];
        let (idx, spec) = lookup(&args[0])
            .ok_or_else(|| Reply::err(format!("ERR Command '{}' not found", text(&args[0]))))?;
        if !spec.arity_ok(args.len()) {
            return Err(err::arity(spec.name));
        }
        let cat = acl.catalogue();
        let access = access_of(cat, idx, spec, args);
        Ok(match user.check(&access) {
            Ok(()) => Reply::OK,
            Err(d) => Reply::bulk(denial_text(d, cat.name(access.command))),
        })
    } else if is(sub, "SAVE") && n == 2 {
        acl.save().map_err(|e| Reply::err(format!("ERR {e}")))?;
        Ok(Reply::OK)
    } else if is(sub, "LOAD") && n == 2 {
        acl.load().map_err(|e| Reply::err(format!("ERR {e}")))?;
        Ok(Reply::OK)
    } else if is(sub, "HELP") && n == 2 {
        Ok(Reply::Array(
            HELP.iter().map(|l| Reply::Simple(l)).collect(),
        ))
    } else {
        Err(err::subcommand(sub, "acl"))
    }
}
