//! Scripting commands: EVAL EVALSHA EVAL_RO EVALSHA_RO, SCRIPT, FUNCTION,
//! FCALL FCALL_RO.
//!
//! A script runs holding the node's gate alone, like EXEC, and its writes
//! reach the log as one record. What it calls through `redis.call` goes
//! through the command table here ([`CommandHost`]), which refuses what
//! scripts may not run: transactions, subscriptions, other scripts, writes
//! from read-only scripts, and in a cluster keys outside the script's slot.
//!
//! In a cluster a script is replicated like any write: the entry carries
//! the script (EVALSHA travels as EVAL with its body) and every replica
//! runs it against the same data at the same logical time, so they reach
//! the same result. Libraries are loaded on every node.

use std::time::Duration;

use bytes::Bytes;

use super::{err, execute, int_arg, is, lookup, CmdResult, Ctx, Reply, Session};
use crate::scripting::{Host, Kind};
use crate::slot::slot_of;
use crate::storage::glob_match;

const BUSY_SCRIPT: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";

/// Commands that run a script.
pub fn runs_script(name: &str) -> bool {
    matches!(
        name,
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
    )
}

/// A write as it goes into a shard's log: EVALSHA travels as EVAL with
/// the script's body, so that every replica can run it whether or not it
/// has seen the script; NOSCRIPT if this node doesn't know it.
pub fn for_log(node: &crate::node::Node, args: &[Bytes]) -> Result<Vec<Bytes>, Reply> {
    let mut entry = args.to_vec();
    let Some(name) = args.first() else {
        return Ok(entry);
    };
    let ro = if is(name, "EVALSHA") {
        false
    } else if is(name, "EVALSHA_RO") {
        true
    } else {
        return Ok(entry);
    };
    let script = node
        .scripts
        .script(&String::from_utf8_lossy(&args[1]))
        .ok_or_else(|| Reply::err("NOSCRIPT No matching script. Please use EVAL."))?;
    entry[0] = Bytes::from_static(if ro { b"EVAL_RO" } else { b"EVAL" });
    entry[1] = script.body.clone();
    Ok(entry)
}

/// Whether a request should run on the node's runner thread rather than
/// the connection's I/O thread: a script, or EXEC of a transaction that
/// holds one.
pub fn needs_runner(s: &Session, args: &[Bytes]) -> bool {
    let Some((_, spec)) = args.first().and_then(|n| lookup(n)) else {
        return false;
    };
    if s.multi.is_some() {
        return spec.name == "exec"
            && s.multi.as_ref().is_some_and(|q| {
                q.iter().any(|c| {
                    c.first()
                        .and_then(|n| lookup(n))
                        .is_some_and(|(_, sp)| runs_script(sp.name))
                })
            });
    }
    runs_script(spec.name) || (spec.name == "debug" && args.get(1).is_some_and(|a| is(a, "SLEEP")))
}

/// Commands that go past the gate: they touch no data and must work
/// while a script holds it (SCRIPT KILL above all).
pub fn bypasses_gate(name: &str, args: &[Bytes]) -> bool {
    match name {
        "script" => args.get(1).is_some_and(|a| is(a, "KILL")),
        "function" => args.get(1).is_some_and(|a| is(a, "KILL") || is(a, "STATS")),
        "shutdown" | "quit" | "auth" | "hello" => true,
        // Takes the gate alone itself.
        "debug" => args.get(1).is_some_and(|a| is(a, "SLEEP")),
        _ => false,
    }
}

/// Commands a script may not call.
fn forbidden_in_script(name: &str) -> bool {
    runs_script(name)
        || matches!(
            name,
            "script"
                | "function"
                | "multi"
                | "exec"
                | "discard"
                | "watch"
                | "unwatch"
                | "subscribe"
                | "unsubscribe"
                | "psubscribe"
                | "punsubscribe"
                | "ssubscribe"
                | "sunsubscribe"
                | "auth"
                | "hello"
                | "quit"
                | "reset"
                | "client"
                | "monitor"
                | "wait"
                | "debug"
                | "shutdown"
                | "strata-exec"
        )
}

/// What a script's `redis.call` reaches: the command table, with the
/// rules for scripts.
struct CommandHost<'c, 'n> {
    ctx: &'c mut Ctx<'n>,
    read_only: bool,
    /// In a cluster, the slot of the script's keys: the only one it may
    /// touch (None: it declared none, so it may touch no key).
    slot: Option<Option<u16>>,
}

impl Host for CommandHost<'_, '_> {
    fn call(&mut self, args: Vec<Bytes>) -> Reply {
        let Some((_, spec)) = lookup(&args[0]) else {
            return Reply::err("ERR Unknown Redis command called from script");
        };
        if forbidden_in_script(spec.name) {
            return Reply::err("ERR This Redis command is not allowed from script");
        }
        if !spec.arity_ok(args.len()) {
            return Reply::err("ERR Wrong number of args calling Redis command from script");
        }
        if spec.write && self.read_only {
            return Reply::err("ERR Write commands are not allowed from read-only scripts.");
        }
        if let Some(slot) = self.slot {
            let outside = spec.keys_of(&args).any(|k| Some(slot_of(k)) != slot);
            if outside {
                return Reply::err(
                    "ERR Script attempted to access a non local key in a cluster node script",
                );
            }
        }
        if spec.write {
            self.ctx.node.scripts.mark_wrote();
        }
        match execute(self.ctx, &args) {
            Reply::Many(replies) => Reply::Array(replies),
            reply => reply,
        }
    }
}

/// `numkeys key... arg...` starting at `a[2]`: the keys and the rest.
fn split_keys(a: &[Bytes]) -> Result<(&[Bytes], &[Bytes]), Reply> {
    let n = int_arg(&a[2])?;
    if n < 0 {
        return Err(Reply::err("ERR Number of keys can't be negative"));
    }
    let n = n as usize;
    if n > a.len() - 3 {
        return Err(Reply::err(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    Ok((&a[3..3 + n], &a[3 + n..]))
}

/// Runs `f` as a script: the gate held alone, `-BUSY` for others past the
/// threshold, its writes one log record, and the caller's database as it
/// was afterwards (SELECT inside a script stays inside it).
fn run_guarded(
    ctx: &mut Ctx<'_>,
    kind: Kind,
    read_only: bool,
    keys: &[Bytes],
    f: impl FnOnce(&mut dyn Host) -> Reply,
) -> Reply {
    let node = ctx.node;
    let _alone = node.gate.exclusive();
    let threshold = Duration::from_millis(node.cfg.read().busy_reply_threshold_ms);
    node.gate.script_started(
        match kind {
            Kind::Script => BUSY_SCRIPT,
            Kind::Function => BUSY_FUNCTION,
        },
        threshold,
    );
    let slot = node.cluster.get().map(|_| keys.first().map(|k| slot_of(k)));
    let db = ctx.s.db;
    let outer = std::mem::replace(&mut ctx.s.acl_context, "lua");
    let reply = ctx.atomic(|ctx| {
        let mut host = CommandHost {
            ctx,
            read_only,
            slot,
        };
        f(&mut host)
    });
    ctx.s.db = db;
    ctx.s.acl_context = outer;
    reply
}

fn eval_generic(ctx: &mut Ctx<'_>, a: &[Bytes], by_sha: bool, read_only: bool) -> CmdResult {
    let (keys, argv) = split_keys(a)?;
    let scripts = &ctx.node.scripts;
    let script = if by_sha {
        scripts
            .script(&String::from_utf8_lossy(&a[1]))
            .ok_or_else(|| Reply::err("NOSCRIPT No matching script. Please use EVAL."))?
    } else {
        scripts.load(a[1].clone())?
    };
    if script.flags.no_cluster && ctx.node.cluster.get().is_some() {
        return Err(Reply::err(
            "ERR Can not run script on cluster, 'no-cluster' flag is set.",
        ));
    }
    let read_only = read_only || script.flags.no_writes;
    let node = ctx.node;
    Ok(run_guarded(ctx, Kind::Script, read_only, keys, |host| {
        node.scripts.run_script(&script, keys, argv, a, host)
    }))
}

pub fn eval(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    eval_generic(ctx, a, false, false)
}

pub fn evalsha(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    eval_generic(ctx, a, true, false)
}

pub fn eval_ro(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    eval_generic(ctx, a, false, true)
}

pub fn evalsha_ro(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    eval_generic(ctx, a, true, true)
}

fn fcall_generic(ctx: &mut Ctx<'_>, a: &[Bytes], read_only: bool) -> CmdResult {
    let (keys, argv) = split_keys(a)?;
    let name = String::from_utf8_lossy(&a[1]).to_string();
    let info = ctx
        .node
        .scripts
        .function(&name)
        .ok_or_else(|| Reply::err("ERR Function not found"))?;
    if read_only && !info.flags.no_writes {
        return Err(Reply::err(
            "ERR Can not execute a script with write flag using *_ro command.",
        ));
    }
    if info.flags.no_cluster && ctx.node.cluster.get().is_some() {
        return Err(Reply::err(
            "ERR Can not run script on cluster, 'no-cluster' flag is set.",
        ));
    }
    let read_only = read_only || info.flags.no_writes;
    let node = ctx.node;
    Ok(run_guarded(ctx, Kind::Function, read_only, keys, |host| {
        node.scripts.run_function(&name, keys, argv, a, host)
    }))
}

pub fn fcall(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    fcall_generic(ctx, a, false)
}

pub fn fcall_ro(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    fcall_generic(ctx, a, true)
}

pub fn script(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_uppercase();
    let scripts = &ctx.node.scripts;
    match (sub.as_str(), a.len()) {
        ("LOAD", 3) => {
            let script = scripts.load(a[2].clone())?;
            Ok(Reply::bulk(script.sha.clone()))
        }
        ("EXISTS", n) if n >= 3 => Ok(Reply::Array(
            a[2..]
                .iter()
                .map(|sha| Reply::Int(i64::from(scripts.exists(&String::from_utf8_lossy(sha)))))
                .collect(),
        )),
        ("FLUSH", 2) => {
            scripts.flush_scripts();
            Ok(Reply::OK)
        }
        ("FLUSH", 3) if is(&a[2], "ASYNC") || is(&a[2], "SYNC") => {
            scripts.flush_scripts();
            Ok(Reply::OK)
        }
        ("KILL", 2) => Ok(scripts.kill(Kind::Script)),
        ("DEBUG", 3) => Err(Reply::err("ERR SCRIPT DEBUG is not supported")),
        ("HELP", 2) => Ok(Reply::Array(
            [
                "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
            ]
            .into_iter()
            .map(|l| Reply::Status(l.into()))
            .collect(),
        )),
        _ => Err(err::subcommand(&a[1], "script")),
    }
}

pub fn function(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_uppercase();
    let scripts = &ctx.node.scripts;
    let reply = match sub.as_str() {
        "LOAD" => {
            let (replace, code) = match a.len() {
                3 => (false, &a[2]),
                4 if is(&a[2], "REPLACE") => (true, &a[3]),
                _ => return Err(err::syntax()),
            };
            let code = std::str::from_utf8(code)
                .map_err(|_| Reply::err("ERR library code must be valid UTF-8"))?;
            let name = scripts.load_library(code, replace)?;
            Reply::bulk(name)
        }
        "DELETE" if a.len() == 3 => {
            scripts.delete_library(&String::from_utf8_lossy(&a[2]))?;
            Reply::OK
        }
        "FLUSH" if a.len() == 2 || (a.len() == 3 && (is(&a[2], "ASYNC") || is(&a[2], "SYNC"))) => {
            scripts.flush_libraries();
            Reply::OK
        }
        "LIST" => return list(ctx, a),
        "STATS" if a.len() == 2 => stats(ctx),
        "KILL" if a.len() == 2 => return Ok(scripts.kill(Kind::Function)),
        "DUMP" | "RESTORE" => {
            return Err(Reply::err(format!(
                "ERR FUNCTION {sub} is not supported; load libraries with FUNCTION LOAD"
            )))
        }
        "HELP" if a.len() == 2 => Reply::Array(
            [
                "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "LOAD [REPLACE] <FUNCTION CODE>",
                "DELETE <LIBRARY NAME>",
                "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
                "FLUSH [ASYNC|SYNC]",
                "STATS",
                "KILL",
            ]
            .into_iter()
            .map(|l| Reply::Status(l.into()))
            .collect(),
        ),
        _ => return Err(err::subcommand(&a[1], "function")),
    };
    // Libraries live on every node of a cluster.
    if matches!(sub.as_str(), "LOAD" | "DELETE" | "FLUSH") {
        broadcast(ctx, a);
    }
    Ok(reply)
}

/// Passes a library (or ACL) change on to every other node of the cluster.
pub(super) fn broadcast(ctx: &Ctx<'_>, a: &[Bytes]) {
    let Some(cluster) = ctx.node.cluster.get() else {
        return;
    };
    if ctx.s.forwarded {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no runtime to pass a library change on to the cluster");
        return;
    };
    for (id, peer) in cluster.layout().nodes.iter() {
        if *id == cluster.id {
            continue;
        }
        let (cluster, peer, args) = (cluster.clone(), peer.clone(), a.to_vec());
        rt.spawn(async move {
            if let Err(e) = cluster.forward(&peer, 0, args, false).await {
                tracing::warn!(error = %e, "passing a change on to a peer failed");
            }
        });
    }
}

fn list(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut pattern: Option<&Bytes> = None;
    let mut with_code = false;
    let mut i = 2;
    while i < a.len() {
        if is(&a[i], "WITHCODE") {
            with_code = true;
            i += 1;
        } else if is(&a[i], "LIBRARYNAME") && i + 1 < a.len() {
            pattern = Some(&a[i + 1]);
            i += 2;
        } else {
            return Err(Reply::err(format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(&a[i])
            )));
        }
    }
    let libs = ctx.node.scripts.libraries();
    let out = libs
        .into_iter()
        .filter(|l| pattern.is_none_or(|p| glob_match(p, l.name.as_bytes())))
        .map(|l| {
            let functions = l
                .functions
                .values()
                .map(|f| {
                    Reply::Map(vec![
                        (Reply::bulk("name"), Reply::bulk(f.name.clone())),
                        (
                            Reply::bulk("description"),
                            f.description.clone().map_or(Reply::Nil, Reply::bulk),
                        ),
                        (
                            Reply::bulk("flags"),
                            Reply::Set(f.flags.names().into_iter().map(Reply::bulk).collect()),
                        ),
                    ])
                })
                .collect();
            let mut fields = vec![
                (Reply::bulk("library_name"), Reply::bulk(l.name.clone())),
                (Reply::bulk("engine"), Reply::bulk("LUA")),
                (Reply::bulk("functions"), Reply::Array(functions)),
            ];
            if with_code {
                fields.push((Reply::bulk("library_code"), Reply::bulk(l.code.clone())));
            }
            Reply::Map(fields)
        })
        .collect();
    Ok(Reply::Array(out))
}

fn stats(ctx: &mut Ctx<'_>) -> Reply {
    let scripts = &ctx.node.scripts;
    let running = match scripts.running() {
        Some(r) if r.kind == Kind::Function => Reply::Map(vec![
            (Reply::bulk("name"), Reply::bulk(r.name)),
            (
                Reply::bulk("command"),
                Reply::Array(r.command.into_iter().map(Reply::Bulk).collect()),
            ),
            (
                Reply::bulk("duration_ms"),
                Reply::Int(r.started.elapsed().as_millis() as i64),
            ),
        ]),
        _ => Reply::Nil,
    };
    let libs = scripts.libraries();
    let functions: usize = libs.iter().map(|l| l.functions.len()).sum();
    Reply::Map(vec![
        (Reply::bulk("running_script"), running),
        (
            Reply::bulk("engines"),
            Reply::Map(vec![(
                Reply::bulk("LUA"),
                Reply::Map(vec![
                    (
                        Reply::bulk("libraries_count"),
                        Reply::Int(libs.len() as i64),
                    ),
                    (Reply::bulk("functions_count"), Reply::Int(functions as i64)),
                ]),
            )]),
        ),
    ])
}
