//! What operators ask a node about itself: SLOWLOG, LATENCY and MEMORY.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::reply::Reply;
use super::{err, int_arg, is, CmdResult, Ctx, Spec};
use crate::node::{LatencySeries, Node, SlowEntry};
use crate::storage::{now_ms, ReadHint};

/// Most arguments a slow log entry keeps, and most bytes of each.
const SLOW_MAX_ARGS: usize = 32;
const SLOW_MAX_ARG_BYTES: usize = 128;

/// Commands whose arguments carry secrets: logged without them.
fn redacted(spec: &Spec, args: &[Bytes]) -> bool {
    match spec.name {
        "auth" | "hello" => true,
        "acl" => args.get(1).is_some_and(|s| is(s, "SETUSER")),
        "config" => args.iter().any(|a| is(a, "requirepass")),
        _ => false,
    }
}

/// Notes a command that ran `micros` long, as the slow log and the
/// latency monitor's thresholds say.
pub(super) fn observe(ctx: &Ctx<'_>, spec: &Spec, args: &[Bytes], micros: u64) {
    let node = ctx.node;
    let slower_than = node.slowlog_slower_than.load(Ordering::Relaxed);
    // Commands a transaction or script runs are part of it, not entries
    // of their own.
    if slower_than >= 0 && micros >= slower_than as u64 && ctx.s.acl_context == "toplevel" {
        let hide = redacted(spec, args);
        let mut kept: Vec<Bytes> = Vec::with_capacity(args.len().min(SLOW_MAX_ARGS));
        for (i, a) in args.iter().enumerate() {
            if i == SLOW_MAX_ARGS - 1 && args.len() > SLOW_MAX_ARGS {
                kept.push(Bytes::from(format!(
                    "... ({} more arguments)",
                    args.len() - SLOW_MAX_ARGS + 1
                )));
                break;
            }
            if hide && i > 0 {
                kept.push(Bytes::from_static(b"(redacted)"));
            } else if a.len() > SLOW_MAX_ARG_BYTES {
                let mut s = a[..SLOW_MAX_ARG_BYTES].to_vec();
                s.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - SLOW_MAX_ARG_BYTES).as_bytes(),
                );
                kept.push(Bytes::from(s));
            } else {
                kept.push(a.clone());
            }
        }
        let max = node.cfg.read().slowlog_max_len;
        let entry = SlowEntry {
            id: node.slowlog_ids.fetch_add(1, Ordering::Relaxed),
            unix_secs: now_ms() / 1000,
            micros,
            args: kept,
            addr: ctx.s.handle.addr.clone(),
            name: ctx.s.handle.state.lock().name.clone(),
        };
        let mut log = node.slowlog.lock();
        log.push_front(entry);
        log.truncate(max);
    }
    let threshold_ms = node.latency_threshold_ms.load(Ordering::Relaxed);
    let ms = micros / 1000;
    if threshold_ms > 0 && ms >= threshold_ms {
        let fast = super::acl::catalogue().id(spec.name).is_some_and(|id| {
            super::acl::catalogue().categories(id) & crate::acl::category_bit("fast").unwrap_or(0)
                != 0
        });
        record_latency(node, if fast { "fast-command" } else { "command" }, ms);
    }
}

/// Adds a latency sample for `event` (one per second is kept, the
/// largest, as Redis's monitor does).
pub fn record_latency(node: &Node, event: &'static str, ms: u64) {
    let now = now_ms() / 1000;
    let mut all = node.latency.lock();
    let series = all.entry(event).or_insert_with(LatencySeries::default);
    series.max = series.max.max(ms);
    match series.samples.back_mut() {
        Some((t, v)) if *t == now => *v = (*v).max(ms),
        _ => {
            series.samples.push_back((now, ms));
            if series.samples.len() > 160 {
                series.samples.pop_front();
            }
        }
    }
}

pub fn slowlog(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    let node = ctx.node;
    if is(sub, "GET") && a.len() <= 3 {
        let count = match a.get(2) {
            None => 10,
            Some(c) => match int_arg(c) {
                Ok(-1) => usize::MAX,
                Ok(n) if n >= 0 => n as usize,
                _ => {
                    return Err(Reply::err(
                        "ERR count should be greater than or equal to -1",
                    ))
                }
            },
        };
        let log = node.slowlog.lock();
        Ok(Reply::Array(
            log.iter()
                .take(count)
                .map(|e| {
                    Reply::Array(vec![
                        Reply::Int(e.id as i64),
                        Reply::Int(e.unix_secs as i64),
                        Reply::Int(e.micros as i64),
                        Reply::Array(e.args.iter().cloned().map(Reply::Bulk).collect()),
                        Reply::bulk(e.addr.clone()),
                        Reply::bulk(e.name.clone()),
                    ])
                })
                .collect(),
        ))
    } else if is(sub, "LEN") && a.len() == 2 {
        Ok(Reply::Int(node.slowlog.lock().len() as i64))
    } else if is(sub, "RESET") && a.len() == 2 {
        node.slowlog.lock().clear();
        Ok(Reply::OK)
    } else if is(sub, "HELP") && a.len() == 2 {
        Ok(help(&[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Print this help.",
        ]))
    } else {
        Err(err::subcommand(sub, "slowlog"))
    }
}

fn help(lines: &[&'static str]) -> Reply {
    Reply::Array(lines.iter().map(|l| Reply::Simple(l)).collect())
}

pub fn latency(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    let node = ctx.node;
    if is(sub, "LATEST") && a.len() == 2 {
        let all = node.latency.lock();
        Ok(Reply::Array(
            all.iter()
                .filter_map(|(event, s)| {
                    let &(t, v) = s.samples.back()?;
                    Some(Reply::Array(vec![
                        Reply::bulk(*event),
                        Reply::Int(t as i64),
                        Reply::Int(v as i64),
                        Reply::Int(s.max as i64),
                    ]))
                })
                .collect(),
        ))
    } else if is(sub, "HISTORY") && a.len() == 3 {
        let all = node.latency.lock();
        let event = String::from_utf8_lossy(&a[2]);
        Ok(Reply::Array(
            all.get(event.as_ref())
                .map(|s| {
                    s.samples
                        .iter()
                        .map(|&(t, v)| {
                            Reply::Array(vec![Reply::Int(t as i64), Reply::Int(v as i64)])
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ))
    } else if is(sub, "RESET") {
        let mut all = node.latency.lock();
        if a.len() == 2 {
            let n = all.len();
            all.clear();
            return Ok(Reply::Int(n as i64));
        }
        let mut n = 0;
        for e in &a[2..] {
            n += i64::from(all.remove(String::from_utf8_lossy(e).as_ref()).is_some());
        }
        Ok(Reply::Int(n))
    } else if is(sub, "DOCTOR") && a.len() == 2 {
        let threshold = node.latency_threshold_ms.load(Ordering::Relaxed);
        let all = node.latency.lock();
        let mut out = String::new();
        if threshold == 0 {
            out.push_str("The latency monitor is off: set latency-monitor-threshold (in milliseconds) with CONFIG SET to record latency spikes.\n");
        } else if all.is_empty() {
            out.push_str(&format!(
                "No latency spike at or above {threshold} ms was recorded. Nothing to report.\n"
            ));
        } else {
            out.push_str(&format!(
                "Latency spikes at or above {threshold} ms, by event:\n\n"
            ));
            for (i, (event, s)) in all.iter().enumerate() {
                let avg =
                    s.samples.iter().map(|&(_, v)| v).sum::<u64>() / s.samples.len().max(1) as u64;
                out.push_str(&format!(
                    "{}. {event}: {} latency spikes (average {avg}ms, worst {}ms).\n",
                    i + 1,
                    s.samples.len(),
                    s.max
                ));
            }
            if all.contains_key("command") || all.contains_key("fast-command") {
                out.push_str("\nSlow commands: SLOWLOG GET lists them with their arguments. Commands over big collections (KEYS, SMEMBERS, ZRANGE over everything, SORT) and scripts are the usual cause; collections on the disk tier are read whole.\n");
            }
        }
        Ok(Reply::Verbatim(out))
    } else if is(sub, "HELP") && a.len() == 2 {
        Ok(help(&[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HELP",
            "    Print this help.",
        ]))
    } else {
        Err(err::subcommand(sub, "latency"))
    }
}

pub fn memory(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    if is(sub, "USAGE") && (a.len() == 3 || a.len() == 5) {
        if a.len() == 5 && (!is(&a[3], "SAMPLES") || int_arg(&a[4]).is_err()) {
            return Err(err::syntax());
        }
        let key = &a[2];
        // What the key costs in the memory tier (key, value and entry),
        // whichever tier holds it now.
        let size = ctx.read(key, ReadHint::Peek, |r| {
            r.map(|(rec, _)| crate::storage::memory_charge(key, rec))
        })?;
        Ok(size.map_or(Reply::Nil, |n| Reply::Int(n as i64)))
    } else if is(sub, "STATS") && a.len() == 2 {
        let s = ctx.node.store.stats();
        let keys: u64 = (0..ctx.node.store.databases())
            .map(|db| ctx.node.store.dbsize(db))
            .sum();
        let used = s.used_bytes as i64;
        let fields = vec![
            ("total.allocated", Reply::Int(used)),
            ("keys.count", Reply::Int(keys as i64)),
            (
                "keys.bytes-per-key",
                Reply::Int(if keys == 0 { 0 } else { used / keys as i64 }),
            ),
            ("dataset.bytes", Reply::Int(used)),
            ("tier.memory.cap", Reply::Int(s.tier_cap_bytes as i64)),
            ("tier.memory.keys", Reply::Int(s.entries_memory as i64)),
            ("tier.disk.keys", Reply::Int(s.entries_disk as i64)),
            ("tier.disk.bytes", Reply::Int(s.disk_bytes as i64)),
        ];
        Ok(Reply::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Reply::bulk(k), v))
                .collect(),
        ))
    } else if is(sub, "DOCTOR") && a.len() == 2 {
        let s = ctx.node.store.stats();
        let ratio = s.used_bytes as f64 / s.tier_cap_bytes.max(1) as f64;
        let mut out = format!(
            "Memory tier: {} bytes used of a {} byte cap ({:.0}%); {} keys on the disk tier.\n",
            s.used_bytes,
            s.tier_cap_bytes,
            ratio * 100.0,
            s.entries_disk
        );
        if ratio >= 0.9 {
            out.push_str("The memory tier is nearly full: colder keys are spilling to disk. Raise maxmemory if the hot set no longer fits (INFO tiers shows hits per tier).\n");
        } else {
            out.push_str("No memory problem found.\n");
        }
        Ok(Reply::Verbatim(out))
    } else if is(sub, "HELP") && a.len() == 2 {
        Ok(help(&[
            "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return memory problems reports.",
            "STATS",
            "    Return information about the memory usage of the server.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value.",
            "HELP",
            "    Print this help.",
        ]))
    } else {
        Err(err::subcommand(sub, "memory"))
    }
}

/// DEBUG SLEEP, OBJECT, RELOAD and HELP: the subcommands that mean
/// something for strata. `enable-debug-command` says who may use them.
pub fn debug(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let allowed = match ctx.node.cfg.read().enable_debug_command.as_str() {
        "yes" => true,
        "local" => {
            let ip = ctx
                .s
                .handle
                .addr
                .parse::<std::net::SocketAddr>()
                .map(|a| a.ip());
            // The node's own sessions (replication) have no address.
            ctx.s.user.is_none() || ip.is_ok_and(|ip| ip.is_loopback())
        }
        _ => ctx.s.user.is_none(),
    };
    if !allowed {
        return Err(Reply::err("ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server."));
    }
    let sub = &a[1];
    if is(sub, "HELP") {
        return Ok(Reply::Array(
            [
                "DEBUG SLEEP <seconds>",
                "    Stop the server for <seconds> (decimals allowed): every client waits.",
                "DEBUG OBJECT <key>",
                "    Show low level info about <key>: encoding, serialized length, idle time, tier.",
                "DEBUG RELOAD",
                "    Take a checkpoint: every change is written to the disk tier and the log truncated.",
            ]
            .into_iter()
            .map(Reply::Simple)
            .collect(),
        ));
    }
    if is(sub, "SLEEP") && a.len() == 3 {
        let secs = super::float_arg(&a[2])
            .ok()
            .filter(|s| s.is_finite() && (0.0..=1e6).contains(s))
            .ok_or_else(|| Reply::err("ERR value is not a valid float"))?;
        // As in Redis the whole node stops: every other command waits at
        // the gate meanwhile.
        let _alone = ctx.node.gate.exclusive();
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        return Ok(Reply::OK);
    }
    if is(sub, "OBJECT") && a.len() == 3 {
        let key = &a[2];
        let knobs = ctx.node.cfg.read().encoding.clone();
        let placement = ctx
            .node
            .store
            .placement(ctx.s.db, key)
            .map_err(super::storage_error)?
            .ok_or_else(|| Reply::err("ERR no such key"))?;
        let shape = ctx.read(key, ReadHint::Peek, |r| {
            r.map(|(rec, _)| {
                (
                    super::keys::encoding_of(&rec.value, &knobs),
                    crate::storage::dump(rec).len(),
                )
            })
        })?;
        let (encoding, length) = shape.ok_or_else(|| Reply::err("ERR no such key"))?;
        let idle = placement.idle_ms.map_or(placement.age_secs, |ms| ms / 1000);
        return Ok(Reply::Status(format!(
            "Value at:0x0 refcount:1 encoding:{encoding} serializedlength:{length} lru:0 lru_seconds_idle:{idle} tier:{}",
            placement.tier.as_str()
        )));
    }
    if is(sub, "RELOAD") {
        ctx.node.store.checkpoint().map_err(super::storage_error)?;
        return Ok(Reply::OK);
    }
    Err(err::subcommand(sub, "debug"))
}

/// MONITOR: this connection is sent every command the node runs from now
/// on.
pub fn monitor_cmd(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    let Some(sub) = ctx.s.handle.outbox.get().cloned() else {
        return Err(Reply::err(
            "ERR this connection can't receive messages; monitor over RESP",
        ));
    };
    ctx.node.monitors.add(ctx.s.handle.id, sub);
    Ok(Reply::OK)
}

/// Feeds a command that just ran to the MONITOR connections, as Redis
/// shows it: time, database, client address (`lua` inside a script),
/// then each argument quoted. Administrative commands are left out, and
/// secrets are redacted.
pub(super) fn monitor(ctx: &Ctx<'_>, idx: usize, spec: &Spec, args: &[Bytes]) {
    let admin = crate::acl::category_bit("admin").unwrap_or(0);
    let catalogue = super::acl::catalogue();
    let id = args
        .get(1)
        .and_then(|sub| catalogue.sub_id(idx, sub))
        .unwrap_or(idx);
    if catalogue.categories(id) & admin != 0 || spec.name == "exec" {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let from = if ctx.s.acl_context == "lua" {
        "lua"
    } else {
        &ctx.s.handle.addr
    };
    let mut line = format!(
        "{}.{:06} [{} {}]",
        now.as_secs(),
        now.subsec_micros(),
        ctx.s.db,
        from
    );
    let hide = redacted(spec, args);
    for (i, a) in args.iter().enumerate() {
        line.push(' ');
        if hide && i > 0 {
            line.push_str("\"(redacted)\"");
        } else {
            quote(a, &mut line);
        }
    }
    let limits = ctx.node.cfg.read().pubsub_output_limit;
    ctx.node.monitors.feed(&line, limits);
}

/// Quotes `a` as Redis's `sdscatrepr` does.
fn quote(a: &[u8], out: &mut String) {
    out.push('"');
    for &b in a {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            7 => out.push_str("\\a"),
            8 => out.push_str("\\b"),
            b' '..=b'~' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn monitor_arguments_are_quoted_like_redis() {
        let mut s = String::new();
        quote(b"a \"b\"\n\\\x01\xff", &mut s);
        assert_eq!(s, r#""a \"b\"\n\\\x01\xff""#);
    }
}
