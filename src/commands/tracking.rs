//! CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO, and the two points
//! of the command path that feed the node's tracking table: keys a
//! tracking client reads are remembered, keys a command changes are
//! invalidated (see [`crate::tracking`]).

use bytes::Bytes;

use super::{err, int_arg, is, CmdResult, Ctx, Reply, Session, Spec};
use crate::node::Node;
use crate::tracking::{overlap, Mode};

/// The data-type families whose read-only commands are tracked.
const DATA: &[&str] = &[
    "generic",
    "string",
    "hash",
    "list",
    "set",
    "sorted-set",
    "stream",
    "bitmap",
    "geo",
    "hyperloglog",
];

/// Whether `spec` is a data command (its keys are data keys).
pub(super) fn is_data(spec: &Spec) -> bool {
    DATA.contains(&spec.group)
}

/// Whether this command's keys are remembered for the session, as Redis
/// decides it: a read-only data command, by a client tracking in the
/// default mode, that OPTIN/OPTOUT and CLIENT CACHING let through. In a
/// cluster only keys of shards this node replicates can be tracked here,
/// since their changes are applied here (see `cluster::route`).
pub(super) fn remembers(s: &Session, spec: &Spec) -> bool {
    let Some(mode) = &s.tracking else {
        return false;
    };
    if spec.write || mode.bcast || !DATA.contains(&spec.group) {
        return false;
    }
    if mode.optin {
        s.caching == Some(true)
    } else if mode.optout {
        s.caching != Some(false)
    } else {
        true
    }
}

/// Remembers the keys `args` read.
pub(super) fn remember(node: &Node, s: &Session, spec: &Spec, args: &[Bytes]) {
    let (max_keys, limits) = {
        let c = node.cfg.read();
        (c.tracking_table_max_keys, c.pubsub_output_limit)
    };
    node.tracking
        .remember(s.handle.id, spec.keys_of(args), max_keys, limits);
}

/// Tells tracking clients about the keys the command changed
/// (`ctx.s.touched` from `from` on).
pub(super) fn invalidate(ctx: &Ctx<'_>, from: usize) {
    if !ctx.node.tracking.active() {
        return;
    }
    let keys: Vec<Bytes> = ctx.s.touched[from..]
        .iter()
        .map(|t| Bytes::copy_from_slice(&t.key))
        .collect();
    let limits = ctx.node.cfg.read().pubsub_output_limit;
    ctx.node.tracking.invalidate(&keys, ctx.s.handle.id, limits);
}

/// CLIENT CACHING YES/NO only lasts for the next command (or the next
/// transaction).
pub(super) fn after_command(s: &mut Session, spec: &Spec, args: &[Bytes]) {
    if s.caching.is_some()
        && s.multi.is_none()
        && !(spec.name == "client" && args.get(1).is_some_and(|a| is(a, "CACHING")))
    {
        s.caching = None;
    }
}

/// CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN]
/// [OPTOUT] [NOLOOP].
pub(super) fn tracking(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let mut mode = Mode::default();
    let mut redirect = None;
    let mut i = 3;
    while i < a.len() {
        let more = i + 1 < a.len();
        if is(&a[i], "REDIRECT") && more {
            if redirect.is_some() {
                return Err(Reply::err(
                    "ERR A client can only redirect to a single other client",
                ));
            }
            let id = int_arg(&a[i + 1])?;
            redirect = Some(id);
            i += 2;
        } else if is(&a[i], "PREFIX") && more {
            mode.prefixes.push(a[i + 1].clone());
            i += 2;
        } else {
            if is(&a[i], "BCAST") {
                mode.bcast = true;
            } else if is(&a[i], "OPTIN") {
                mode.optin = true;
            } else if is(&a[i], "OPTOUT") {
                mode.optout = true;
            } else if is(&a[i], "NOLOOP") {
                mode.noloop = true;
            } else {
                return Err(err::syntax());
            }
            i += 1;
        }
    }
    let id = ctx.s.handle.id;
    let target = match redirect {
        Some(r) if r != 0 => {
            let target = ctx
                .node
                .clients
                .lock()
                .get(&(r as u64))
                .and_then(|c| c.outbox.get().cloned());
            match target {
                Some(t) => Some((r as u64, t)),
                None => {
                    return Err(Reply::err(
                        "ERR The client ID you want redirect to does not exist",
                    ))
                }
            }
        }
        _ => None,
    };
    if is(&a[2], "OFF") {
        ctx.node.tracking.disable(id);
        ctx.s.tracking = None;
        ctx.s.caching = None;
        return Ok(Reply::OK);
    }
    if !is(&a[2], "ON") {
        return Err(err::syntax());
    }
    if !mode.bcast && !mode.prefixes.is_empty() {
        return Err(Reply::err(
            "ERR PREFIX option requires BCAST mode to be enabled",
        ));
    }
    let current = ctx.s.tracking.clone();
    if let Some(cur) = &current {
        if cur.bcast != mode.bcast {
            return Err(Reply::err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."));
        }
    }
    if mode.bcast && (mode.optin || mode.optout) {
        return Err(Reply::err(
            "ERR OPTIN and OPTOUT are not compatible with BCAST",
        ));
    }
    if mode.optin && mode.optout {
        return Err(Reply::err("ERR You can't use both OPTIN and OPTOUT"));
    }
    if let Some(cur) = &current {
        if (mode.optin && cur.optout) || (mode.optout && cur.optin) {
            return Err(Reply::err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode."));
        }
    }
    if mode.bcast {
        let existing = current.as_ref().map_or(&[][..], |c| &c.prefixes[..]);
        if let Some(e) = overlap(existing, &mode.prefixes) {
            return Err(Reply::err(e));
        }
    }
    let Some(own) = ctx.s.handle.outbox.get().cloned() else {
        return Err(Reply::err(
            "ERR this connection can't receive invalidations; track over RESP",
        ));
    };
    let (redirect_id, target) = target.map_or((0, None), |(r, t)| (r, Some(t)));
    mode.redirect = redirect_id;
    ctx.node.tracking.enable(id, mode, own, target);
    // The table merges BCAST prefixes; the session keeps what it holds.
    ctx.s.tracking = ctx.node.tracking.mode_of(id).map(|(m, _)| m);
    Ok(Reply::OK)
}

/// CLIENT CACHING YES|NO.
pub(super) fn caching(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let Some(mode) = &ctx.s.tracking else {
        return Err(Reply::err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"));
    };
    if is(&a[2], "YES") {
        if !mode.optin {
            return Err(Reply::err(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            ));
        }
        ctx.s.caching = Some(true);
    } else if is(&a[2], "NO") {
        if !mode.optout {
            return Err(Reply::err(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            ));
        }
        ctx.s.caching = Some(false);
    } else {
        return Err(err::syntax());
    }
    Ok(Reply::OK)
}

/// CLIENT GETREDIR: -1 when not tracking, 0 without a redirect.
pub(super) fn getredir(ctx: &Ctx<'_>) -> Reply {
    Reply::Int(ctx.s.tracking.as_ref().map_or(-1, |m| m.redirect as i64))
}

/// CLIENT TRACKINGINFO.
pub(super) fn trackinginfo(ctx: &Ctx<'_>) -> Reply {
    let state = ctx.node.tracking.mode_of(ctx.s.handle.id);
    let mut flags = Vec::new();
    let (redirect, prefixes) = match &state {
        None => {
            flags.push("off");
            (-1, Vec::new())
        }
        Some((m, broken)) => {
            flags.push("on");
            for (on, name) in [
                (m.bcast, "bcast"),
                (m.optin, "optin"),
                (m.optout, "optout"),
                (m.optin && ctx.s.caching == Some(true), "caching-yes"),
                (m.optout && ctx.s.caching == Some(false), "caching-no"),
                (m.noloop, "noloop"),
                (*broken, "broken_redirect"),
            ] {
                if on {
                    flags.push(name);
                }
            }
            (m.redirect as i64, m.prefixes.clone())
        }
    };
    Reply::Map(vec![
        (
            Reply::bulk("flags"),
            Reply::Set(flags.into_iter().map(Reply::bulk).collect()),
        ),
        (Reply::bulk("redirect"), Reply::Int(redirect)),
        (
            Reply::bulk("prefixes"),
            Reply::Array(prefixes.into_iter().map(Reply::Bulk).collect()),
        ),
    ])
}

/// The CLIENT LIST flags and `redir` value tracking adds.
pub(super) fn list_flags(node: &crate::node::Node, id: u64) -> (String, i64) {
    match node.tracking.mode_of(id) {
        None => (String::new(), -1),
        Some((m, broken)) => {
            let mut f = String::from("t");
            if m.bcast {
                f.push('B');
            }
            if broken {
                f.push('R');
            }
            (f, m.redirect as i64)
        }
    }
}
