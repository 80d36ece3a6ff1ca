//! Server commands: INFO CONFIG DBSIZE FLUSHDB FLUSHALL TIME, and strata's
//! own TIER.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::reply::Reply;
use super::{err, int_arg, is, storage_error, CmdResult, Ctx};
use crate::storage::{glob_match, parse_size, AppendFsync, StorageConfig};

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2}G", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.2}M", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

/// User and system CPU seconds of this process, from /proc (zero where
/// there is no /proc).
fn cpu_seconds() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 12th and 13th, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (ticks(11), ticks(12))
}

/// Renders INFO for the requested sections.
pub fn info_text(ctx: &Ctx<'_>, sections: &[String]) -> String {
    let node = ctx.node;
    let cfg = node.cfg.read().clone();
    let s = node.store.stats();
    // With no argument (or `default`) INFO leaves out the long per-command
    // sections, as Redis does.
    let verbose = |name: &str| matches!(name, "commandstats" | "errorstats" | "latencystats");
    let want = |name: &str| {
        (sections.is_empty() && !verbose(name))
            || sections.iter().any(|x| {
                x == name || x == "all" || x == "everything" || (x == "default" && !verbose(name))
            })
    };
    let mut out = String::new();
    let up = node.started.elapsed().as_secs();
    if want("server") {
        let mode = if node.cluster.get().is_some() {
            "cluster"
        } else {
            "standalone"
        };
        let _ = write!(
            out,
            "# Server\r\nredis_version:7.0.15\r\nstrata_version:{}\r\nredis_mode:{mode}\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            node.node_id,
            node.resp_addr.get().map_or(cfg.port, |a| a.port()),
            up / 86400
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\ntotal_blocking_keys:{}\r\ntracking_clients:{}\r\n\r\n",
            node.clients.lock().len(),
            cfg.maxclients,
            node.waiters.blocked(),
            node.waiters.keys(),
            node.tracking.stats().clients
        );
    }
    if want("memory") {
        let rss = crate::metrics::process_rss_bytes();
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:noeviction\r\nmem_tier_cap:{}\r\n\r\n",
            s.used_bytes + s.write_buffer_bytes,
            human(s.used_bytes + s.write_buffer_bytes),
            human(rss),
            s.maxmemory,
            human(s.maxmemory),
            s.tier_cap_bytes
        );
    }
    if want("persistence") {
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nappendfsync:{}\r\naof_last_write_status:{}\r\ncheckpoints:{}\r\nrdb_last_save_time:{}\r\n\r\n",
            cfg.storage.appendfsync.as_str(),
            if s.poisoned.is_some() { "err" } else { "ok" },
            s.checkpoints,
            ctx.node.store.last_checkpoint_secs()
        );
    }
    if want("stats") {
        let base = node.stat_baseline.lock().clone();
        let tracked = node.tracking.stats();
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:0\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\n\r\n",
            node.metrics.connections_total.get().saturating_sub(base.connections),
            node.total_commands.load(Ordering::Relaxed).saturating_sub(base.commands),
            node.metrics.rejected_connections.get().saturating_sub(base.rejected),
            s.expired.saturating_sub(base.expired),
            (s.hits_memory + s.hits_disk).saturating_sub(base.hits),
            s.misses.saturating_sub(base.misses),
            node.pubsub.active(crate::pubsub::Kind::Channel, None).len(),
            node.pubsub.patterns(),
            tracked.keys,
            tracked.items,
            tracked.prefixes
        );
    }
    if want("hotkeys") {
        let hot = node.hotkeys.hot();
        let _ = write!(
            out,
            "# Hotkeys\r\nhotkey_threshold_per_min:{}\r\nhotkeys:{}\r\n",
            node.hotkeys.threshold(),
            hot.len()
        );
        for (i, h) in hot.iter().take(16).enumerate() {
            let key: String = h
                .key
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != ',' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            let _ = write!(
                out,
                "hotkey_{i}:db={},key={key},per_min={}\r\n",
                h.db, h.per_min
            );
        }
        out.push_str("\r\n");
    }
    if want("tiers") {
        let fsync_avg = s.wal_fsync_micros.checked_div(s.wal_fsyncs).unwrap_or(0);
        let lo = &s.last_offload;
        let _ = write!(
            out,
            "# Tiers\r\nmemory_used_bytes:{}\r\nmemory_cap_bytes:{}\r\nmemory_ratio:{:.4}\r\noverflow_ratio:{}\r\nmemory_entries:{}\r\ndisk_entries:{}\r\ndisk_bytes:{}\r\ndisk_write_buffer_bytes:{}\r\nhits_memory:{}\r\nhits_disk:{}\r\nhits_local_cache:{}\r\nmisses:{}\r\nspilled:{}\r\nspilled_bytes:{}\r\ndirect_to_disk:{}\r\npromotions:{}\r\nexpired:{}\r\noffload_runs:{}\r\noffloaded:{}\r\noffload_write_fail:{}\r\nlast_offload:scanned={},old={},moved={},write_fail={},mem_ratio={:.4},force_by_mem={}\r\nwal_bytes:{}\r\nwal_fsyncs:{}\r\nwal_fsync_avg_us:{fsync_avg}\r\nwal_fsync_max_us:{}\r\nwrite_poisoned:{}\r\n\r\n",
            s.used_bytes,
            s.tier_cap_bytes,
            s.used_bytes as f64 / s.tier_cap_bytes.max(1) as f64,
            cfg.storage.overflow_ratio,
            s.entries_memory,
            s.entries_disk,
            s.disk_bytes,
            s.write_buffer_bytes,
            s.hits_memory,
            s.hits_disk,
            node.metrics.local_cache_hits.load(Ordering::Relaxed),
            s.misses,
            s.spilled,
            s.spilled_bytes,
            s.direct_to_disk,
            s.promotions,
            s.expired,
            s.offload_runs,
            s.offloaded,
            s.offload_write_fail,
            lo.scanned,
            lo.old,
            lo.moved,
            lo.write_fail,
            lo.mem_ratio,
            u8::from(lo.force_by_mem),
            s.wal_bytes,
            s.wal_fsyncs,
            s.wal_fsync_max_micros,
            u8::from(s.poisoned.is_some())
        );
    }
    if want("replication") {
        let _ = write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_repl_offset:{}\r\n\r\n",
            node.node_id,
            s.wal_bytes
        );
    }
    if want("cluster") {
        let enabled = u8::from(node.cluster.get().is_some());
        let _ = write!(out, "# Cluster\r\ncluster_enabled:{enabled}\r\n\r\n");
    }
    if want("cpu") {
        let (user, sys) = cpu_seconds();
        let _ = write!(
            out,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\r\n"
        );
    }
    if want("commandstats") {
        out.push_str("# Commandstats\r\n");
        for (spec, m) in super::COMMANDS.iter().zip(node.metrics.command_stats()) {
            let calls = m.count.get();
            if calls == 0 {
                continue;
            }
            let usec = m.micros.load(Ordering::Relaxed);
            let _ = write!(
                out,
                "cmdstat_{}:calls={calls},usec={usec},usec_per_call={:.2},rejected_calls=0,failed_calls={}\r\n",
                spec.name,
                usec as f64 / calls as f64,
                m.errors.get()
            );
        }
        out.push_str("\r\n");
    }
    if want("errorstats") {
        out.push_str("# Errorstats\r\n");
        for (prefix, n) in node.errors_by_prefix.lock().iter() {
            let _ = write!(out, "errorstat_{prefix}:count={n}\r\n");
        }
        out.push_str("\r\n");
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        for db in 0..node.store.databases() {
            let n = node.store.dbsize(db);
            if n > 0 {
                let _ = write!(out, "db{db}:keys={n},expires=0,avg_ttl=0\r\n");
            }
        }
        out.push_str("\r\n");
    }
    out
}

pub fn info(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sections: Vec<String> = a[1..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    Ok(Reply::Verbatim(info_text(ctx, &sections)))
}

pub fn dbsize(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(ctx.node.store.dbsize(ctx.s.db) as i64))
}

fn flush_mode(a: &[Bytes]) -> Result<(), Reply> {
    match a.len() {
        1 => Ok(()),
        2 if is(&a[1], "ASYNC") || is(&a[1], "SYNC") => Ok(()),
        _ => Err(err::syntax()),
    }
}

/// Clients that cache keys drop everything (keys are tracked by name
/// across databases, so any flush invalidates all of them).
fn forget_cached(ctx: &Ctx<'_>) {
    let limits = ctx.node.cfg.read().pubsub_output_limit;
    ctx.node.tracking.flush(limits);
}

/// SWAPDB index1 index2: the two databases exchange their data. Clients
/// connected to either see the other's data at once; clients blocked on
/// their keys look again, and clients that cache keys drop them.
pub fn swapdb(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if ctx.node.cluster.get().is_some() {
        return Err(Reply::err("ERR SWAPDB is not allowed in cluster mode"));
    }
    let index = |b: &Bytes, which: &str| {
        super::int_arg(b).map_err(|_| Reply::err(format!("ERR invalid {which} DB index")))
    };
    let (x, y) = (index(&a[1], "first")?, index(&a[2], "second")?);
    let databases = ctx.node.store.databases() as i64;
    if !(0..databases).contains(&x) || !(0..databases).contains(&y) {
        return Err(Reply::err("ERR DB index is out of range"));
    }
    let (x, y) = (x as usize, y as usize);
    if x != y {
        let lsn = ctx.node.store.swap_db(x, y).map_err(storage_error)?;
        ctx.s.pending_lsn = Some(ctx.s.pending_lsn.map_or(lsn, |p| p.max(lsn)));
        ctx.node.local_cache.clear();
        forget_cached(ctx);
        ctx.node.waiters.signal_db(x);
        ctx.node.waiters.signal_db(y);
    }
    Ok(Reply::OK)
}

pub fn flushdb(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    flush_mode(a)?;
    let lsn = ctx.node.store.flush_db(ctx.s.db).map_err(storage_error)?;
    ctx.s.pending_lsn = Some(ctx.s.pending_lsn.map_or(lsn, |p| p.max(lsn)));
    ctx.node.local_cache.clear();
    forget_cached(ctx);
    Ok(Reply::OK)
}

pub fn flushall(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    flush_mode(a)?;
    let lsn = ctx.node.store.flush_all().map_err(storage_error)?;
    ctx.s.pending_lsn = Some(ctx.s.pending_lsn.map_or(lsn, |p| p.max(lsn)));
    ctx.node.local_cache.clear();
    forget_cached(ctx);
    Ok(Reply::OK)
}

/// STRATA-FLUSHSLOTS db|ALL first last [first last ...]: deletes every
/// key of the given slot ranges, in one database or all. A cluster runs
/// FLUSHDB and FLUSHALL as one of these per shard, through the shard's
/// log, so each replica deletes exactly its shard's keys.
pub fn strata_flushslots(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    if a.len() < 4 || a.len() % 2 != 0 {
        return Err(err::syntax());
    }
    let dbs: Vec<usize> = if is(&a[1], "ALL") {
        (0..ctx.node.store.databases()).collect()
    } else {
        let db = int_arg(&a[1])?;
        if !(0..ctx.node.store.databases() as i64).contains(&db) {
            return Err(Reply::err("ERR DB index is out of range"));
        }
        vec![db as usize]
    };
    let mut ranges = Vec::new();
    for pair in a[2..].chunks(2) {
        let (first, last) = (int_arg(&pair[0])?, int_arg(&pair[1])?);
        if !(0..i64::from(crate::slot::SLOTS)).contains(&first)
            || !(first..i64::from(crate::slot::SLOTS)).contains(&last)
        {
            return Err(Reply::err("ERR Invalid slot range"));
        }
        ranges.push((first as u16, last as u16));
    }
    let own_db = ctx.s.db;
    let mut deleted = 0;
    for db in dbs {
        ctx.s.db = db;
        for &(first, last) in &ranges {
            let mut cursor = 0;
            loop {
                let page = ctx.node.store.scan_slots(db, first, last, cursor, 1000);
                let (next, items) = match page {
                    Ok(p) => p,
                    Err(e) => {
                        ctx.s.db = own_db;
                        return Err(storage_error(e));
                    }
                };
                for item in items {
                    let w = ctx.write(&item.key, |cur| {
                        let existed = cur.take().is_some();
                        (existed, existed)
                    });
                    match w {
                        Ok(w) => deleted += i64::from(w.value),
                        Err(e) => {
                            ctx.s.db = own_db;
                            return Err(e);
                        }
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    ctx.s.db = own_db;
    ctx.node.local_cache.clear();
    Ok(Reply::Int(deleted))
}

pub fn time(_: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Reply::Array(vec![
        Reply::bulk(d.as_secs().to_string()),
        Reply::bulk(d.subsec_micros().to_string()),
    ]))
}

pub fn tier(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let p = ctx
        .node
        .store
        .placement(ctx.s.db, &a[1])
        .map_err(storage_error)?;
    let Some(p) = p else { return Ok(Reply::Nil) };
    let mut fields = vec![
        (Reply::bulk("tier"), Reply::bulk(p.tier.as_str())),
        (Reply::bulk("age_secs"), Reply::Int(p.age_secs as i64)),
        (Reply::bulk("dirty"), Reply::Int(i64::from(p.dirty))),
    ];
    if let Some(ms) = p.idle_ms {
        fields.push((Reply::bulk("idle_ms"), Reply::Int(ms as i64)));
    }
    Ok(Reply::Map(fields))
}

/// Settings CONFIG GET/SET know, with their current values.
fn params(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let c = ctx.node.cfg.read();
    let s = &c.storage;
    let mut out = vec![
        ("maxmemory", s.maxmemory.to_string()),
        ("maxmemory-policy", "noeviction".into()),
        ("appendfsync", s.appendfsync.as_str().into()),
        ("appendonly", "yes".into()),
        ("save", String::new()),
        ("requirepass", c.requirepass.clone().unwrap_or_default()),
        ("aclfile", ctx.node.acl.file().display().to_string()),
        ("acllog-max-len", c.acllog_max_len.to_string()),
        ("enable-debug-command", c.enable_debug_command.clone()),
        (
            "tracking-table-max-keys",
            c.tracking_table_max_keys.to_string(),
        ),
        (
            "hotkey-threshold-per-min",
            c.hotkey_threshold_per_min.to_string(),
        ),
        (
            "slowlog-log-slower-than",
            c.slowlog_log_slower_than.to_string(),
        ),
        ("slowlog-max-len", c.slowlog_max_len.to_string()),
        (
            "latency-monitor-threshold",
            c.latency_monitor_threshold.to_string(),
        ),
        (
            "notify-keyspace-events",
            crate::pubsub::events::format(
                crate::pubsub::events::parse(&c.notify_keyspace_events).unwrap_or(0),
            ),
        ),
        ("maxclients", c.maxclients.to_string()),
        ("proto-max-bulk-len", c.proto_max_bulk_len.to_string()),
        (
            "client-query-buffer-limit",
            c.client_query_buffer_limit.to_string(),
        ),
        ("overflow-ratio", s.overflow_ratio.to_string()),
        ("spill-low-ratio", s.spill_low_ratio.to_string()),
        ("offload-after-seconds", s.offload_after_secs.to_string()),
        (
            "offload-interval-seconds",
            s.offload_interval_secs.to_string(),
        ),
        ("offload-force-mem-ratio", s.offload_force_ratio.to_string()),
        (
            "offload-force-min-age-seconds",
            s.offload_force_min_age_secs.to_string(),
        ),
        ("databases", s.databases.to_string()),
        ("dir", s.data_dir.display().to_string()),
        (
            "port",
            ctx.node
                .resp_addr
                .get()
                .map_or(c.port, |a| a.port())
                .to_string(),
        ),
        ("bind", c.bind.clone()),
        (
            "busy-reply-threshold",
            c.busy_reply_threshold_ms.to_string(),
        ),
        ("lua-time-limit", c.busy_reply_threshold_ms.to_string()),
        (
            "client-output-buffer-limit",
            format!(
                "normal 0 0 0 slave 268435456 67108864 60 pubsub {} {} {}",
                c.pubsub_output_limit.hard_bytes,
                c.pubsub_output_limit.soft_bytes,
                c.pubsub_output_limit.soft_seconds
            ),
        ),
    ];
    out.extend(
        c.encoding
            .list()
            .into_iter()
            .map(|(name, v)| (name, v.to_string())),
    );
    out
}

fn apply(cfg: &mut crate::config::Config, name: &str, v: &str) -> Result<(), String> {
    let num = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| "argument must be a number".to_string())
    };
    let ratio = |v: &str| {
        v.parse::<f64>()
            .map_err(|_| "argument must be a number".to_string())
    };
    if let Some(knob) = cfg.encoding.knob_mut(name) {
        *knob = v
            .parse::<i64>()
            .map_err(|_| "argument couldn't be parsed into an integer".to_string())?;
        return Ok(());
    }
    let s: &mut StorageConfig = &mut cfg.storage;
    match name {
        "maxmemory" => s.maxmemory = parse_size(v).ok_or("argument must be a memory value")?,
        "appendfsync" => {
            s.appendfsync = AppendFsync::parse(v)
                .ok_or("argument(s) must be one of the following: always, everysec, no")?
        }
        "requirepass" => cfg.requirepass = Some(v.to_string()).filter(|p| !p.is_empty()),
        "maxclients" => cfg.maxclients = num(v)? as usize,
        "acllog-max-len" => cfg.acllog_max_len = num(v)? as usize,
        "tracking-table-max-keys" => cfg.tracking_table_max_keys = num(v)? as usize,
        "hotkey-threshold-per-min" => cfg.hotkey_threshold_per_min = num(v)?,
        "slowlog-log-slower-than" => {
            cfg.slowlog_log_slower_than = v
                .parse::<i64>()
                .map_err(|_| "argument couldn't be parsed into an integer".to_string())?
        }
        "slowlog-max-len" => cfg.slowlog_max_len = num(v)? as usize,
        "latency-monitor-threshold" => cfg.latency_monitor_threshold = num(v)?,
        "notify-keyspace-events" => {
            crate::pubsub::events::parse(v)?;
            cfg.notify_keyspace_events = v.to_string();
        }
        "proto-max-bulk-len" => {
            cfg.proto_max_bulk_len =
                parse_size(v).ok_or("argument must be a memory value")? as usize
        }
        "client-query-buffer-limit" => {
            cfg.client_query_buffer_limit =
                parse_size(v).ok_or("argument must be a memory value")? as usize
        }
        "busy-reply-threshold" | "lua-time-limit" => cfg.busy_reply_threshold_ms = num(v)?,
        "overflow-ratio" => s.overflow_ratio = ratio(v)?,
        "spill-low-ratio" => s.spill_low_ratio = ratio(v)?,
        "offload-after-seconds" => s.offload_after_secs = num(v)?,
        "offload-interval-seconds" => s.offload_interval_secs = num(v)?,
        "offload-force-mem-ratio" => s.offload_force_ratio = ratio(v)?,
        "offload-force-min-age-seconds" => s.offload_force_min_age_secs = num(v)?,
        "client-output-buffer-limit" => {
            // Classes and their three limits; strata enforces pubsub's.
            let words: Vec<&str> = v.split_whitespace().collect();
            if words.is_empty() || words.len() % 4 != 0 {
                return Err("Wrong number of arguments in buffer limit configuration.".into());
            }
            for class in words.chunks(4) {
                let size = |w: &str| {
                    parse_size(w).ok_or("Error in hard, soft or soft_seconds setting in buffer limit configuration.")
                };
                let (hard, soft) = (size(class[1])?, size(class[2])?);
                let secs = class[3].parse::<u64>().map_err(|_| {
                    "Error in hard, soft or soft_seconds setting in buffer limit configuration."
                })?;
                match class[0].to_ascii_lowercase().as_str() {
                    "pubsub" => {
                        cfg.pubsub_output_limit = crate::config::OutputLimit {
                            hard_bytes: hard,
                            soft_bytes: soft,
                            soft_seconds: secs,
                        }
                    }
                    "normal" | "slave" | "replica" => {}
                    _ => {
                        return Err(
                            "Invalid client class specified in buffer limit configuration.".into(),
                        )
                    }
                }
            }
        }
        "save" if v.is_empty() => {}
        "appendonly" if v == "yes" => {}
        _ => return Err("unsupported CONFIG parameter".into()),
    }
    Ok(())
}

pub fn config(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    if is(sub, "GET") && a.len() >= 3 {
        let all = params(ctx);
        let mut out = Vec::new();
        for (name, value) in &all {
            if a[2..]
                .iter()
                .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
            {
                out.push((Reply::bulk(*name), Reply::bulk(value.clone())));
            }
        }
        Ok(Reply::Map(out))
    } else if is(sub, "SET") && a.len() >= 4 && a.len().is_multiple_of(2) {
        // All or nothing: apply to a copy, validate, then swap it in.
        let mut next = ctx.node.cfg.read().clone();
        for pair in a[2..].chunks(2) {
            let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&pair[1]).into_owned();
            apply(&mut next, &name, &value).map_err(|why| {
                Reply::err(format!(
                    "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
                ))
            })?;
        }
        next.validate()
            .map_err(|e| Reply::err(format!("ERR CONFIG SET failed - {e}")))?;
        ctx.node
            .store
            .reconfigure(next.storage.clone())
            .map_err(|e| Reply::err(format!("ERR CONFIG SET failed - {e}")))?;
        if let Some(cluster) = ctx.node.cluster.get() {
            // In a cluster the Raft log is the durability log.
            cluster.set_appendfsync(next.storage.appendfsync);
        }
        let old_pass = ctx.node.cfg.read().requirepass.clone();
        if next.requirepass != old_pass {
            // `requirepass` is the default user's password.
            ctx.node
                .acl
                .set_default_password(next.requirepass.as_deref())
                .map_err(|e| Reply::err(format!("ERR CONFIG SET failed - {e}")))?;
        }
        let notify = crate::pubsub::events::parse(&next.notify_keyspace_events).unwrap_or(0);
        ctx.node.notify.store(notify, Ordering::Relaxed);
        ctx.node
            .slowlog_slower_than
            .store(next.slowlog_log_slower_than, Ordering::Relaxed);
        ctx.node
            .latency_threshold_ms
            .store(next.latency_monitor_threshold, Ordering::Relaxed);
        ctx.node
            .hotkeys
            .set_threshold(next.hotkey_threshold_per_min);
        *ctx.node.cfg.write() = next;
        Ok(Reply::OK)
    } else if is(sub, "RESETSTAT") && a.len() == 2 {
        let s = ctx.node.store.stats();
        *ctx.node.stat_baseline.lock() = crate::node::StatBaseline {
            connections: ctx.node.metrics.connections_total.get(),
            commands: ctx.node.total_commands.load(Ordering::Relaxed),
            rejected: ctx.node.metrics.rejected_connections.get(),
            expired: s.expired,
            hits: s.hits_memory + s.hits_disk,
            misses: s.misses,
        };
        Ok(Reply::OK)
    } else if is(sub, "REWRITE") && a.len() == 2 {
        Err(Reply::err(
            "ERR The server is running without a config file",
        ))
    } else if is(sub, "HELP") {
        Ok(Reply::Array(
            [
                "CONFIG GET <pattern>",
                "CONFIG SET <name> <value> ...",
                "CONFIG RESETSTAT",
            ]
            .into_iter()
            .map(Reply::Simple)
            .collect(),
        ))
    } else if is(sub, "GET") || is(sub, "SET") || is(sub, "RESETSTAT") {
        Err(Reply::err(format!(
            "ERR wrong number of arguments for 'config|{}' command",
            String::from_utf8_lossy(sub).to_ascii_lowercase()
        )))
    } else {
        Err(err::subcommand(sub, "config"))
    }
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]: stops the node. Without
/// NOSAVE the store takes a final checkpoint as it closes; either way
/// every acknowledged write is in the log. The connection closes without
/// a reply, as in Redis.
pub fn shutdown(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    for arg in &a[1..] {
        if is(arg, "ABORT") {
            return Err(Reply::err("ERR No shutdown in progress."));
        }
        if !["NOSAVE", "SAVE", "NOW", "FORCE"]
            .iter()
            .any(|w| is(arg, w))
        {
            return Err(err::syntax());
        }
    }
    tracing::warn!(client = ctx.s.handle.addr, "SHUTDOWN requested");
    ctx.node.shutdown.cancel();
    ctx.s.quit = true;
    Ok(Reply::Many(Vec::new()))
}

/// SAVE: a checkpoint now (every dirty entry to the disk tier, the log
/// truncated), answered once it is done.
pub fn save(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    ctx.node.store.checkpoint().map_err(storage_error)?;
    Ok(Reply::OK)
}

/// BGSAVE [SCHEDULE]: a checkpoint on a thread of its own.
pub fn bgsave(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    match a.get(1) {
        None => {}
        Some(w) if a.len() == 2 && is(w, "SCHEDULE") => {}
        Some(_) => return Err(err::syntax()),
    }
    let store = ctx.node.store.clone();
    std::thread::Builder::new()
        .name("strata-bgsave".into())
        .spawn(move || {
            if let Err(e) = store.checkpoint() {
                tracing::error!(error = %e, "BGSAVE checkpoint failed");
            }
        })
        .map_err(|e| Reply::err(format!("ERR starting the checkpoint: {e}")))?;
    Ok(Reply::Status("Background saving started".into()))
}

/// LASTSAVE: Unix time of the last completed checkpoint.
pub fn lastsave(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    Ok(Reply::Int(ctx.node.store.last_checkpoint_secs() as i64))
}
