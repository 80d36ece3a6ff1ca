//! Blocking commands: BLPOP BRPOP BLMOVE BRPOPLPUSH BLMPOP BZPOPMIN
//! BZPOPMAX BZMPOP, and XREAD / XREADGROUP with BLOCK.
//!
//! Each has a handler that never waits: it serves what is there or
//! answers nil. [`run`] is what a connection calls instead of
//! [`dispatch`] for them: it queues the client on the command's keys
//! (see [`crate::node::Waiters`]), tries the command, and while it gets
//! nil waits for a key to be created or a stream to grow, then tries
//! again, until the timeout, CLIENT UNBLOCK or the client leaving.
//! Retrying through [`dispatch`] makes a served pop an ordinary write, so
//! in a cluster it is replicated like any other. Inside MULTI or a script
//! the handlers run alone and so never block, as in Redis.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{dispatch, float_arg, int_arg, is, lookup, Reply, Session};
use crate::node::Node;
use crate::slot::slot_of;

/// How often a client blocked on keys of a shard this node doesn't
/// replicate looks again: no write there wakes it.
const POLL: Duration = Duration::from_millis(200);

/// The longest timeout accepted (Redis refuses ones whose deadline would
/// overflow).
const MAX_TIMEOUT_SECS: f64 = 1e12;

/// Parses a blocking command's timeout in seconds (fractions allowed; 0
/// waits forever).
pub fn timeout_arg(b: &[u8]) -> Result<Duration, Reply> {
    let secs = float_arg(b)
        .ok()
        .filter(|s| s.is_finite() && *s <= MAX_TIMEOUT_SECS)
        .ok_or_else(|| Reply::err("ERR timeout is not a float or out of range"))?;
    if secs < 0.0 {
        return Err(Reply::err("ERR timeout is negative"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// XREAD's and XREADGROUP's BLOCK milliseconds, if given.
pub fn block_arg(a: &[Bytes]) -> Result<Option<Duration>, Reply> {
    let Some(at) = a.iter().position(|x| is(x, "BLOCK")) else {
        return Ok(None);
    };
    let ms = int_arg(a.get(at + 1).ok_or_else(super::err::syntax)?)
        .map_err(|_| Reply::err("ERR timeout is not an integer or out of range"))?;
    if ms < 0 {
        return Err(Reply::err("ERR timeout is negative"));
    }
    Ok(Some(Duration::from_millis(ms as u64)))
}

/// Where a blocking command keeps its timeout: None for commands that
/// never block.
fn timeout_of(name: &str, a: &[Bytes]) -> Option<Result<Duration, Reply>> {
    match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "blmove" | "brpoplpush" => {
            Some(timeout_arg(a.last()?))
        }
        "blmpop" | "bzmpop" => Some(timeout_arg(a.get(1)?)),
        "xread" | "xreadgroup" => {
            // Only up to STREAMS: a key may be called BLOCK.
            let end = a.iter().position(|x| is(x, "STREAMS")).unwrap_or(a.len());
            block_arg(&a[..end]).transpose()
        }
        _ => None,
    }
}

/// Whether a request is a command that may wait (then the connection
/// runs it through [`run`]).
pub fn may_block(args: &[Bytes]) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    if !matches!(name.first(), Some(b'b' | b'B' | b'x' | b'X' | b'w' | b'W')) {
        return false;
    }
    lookup(name).is_some_and(|(_, spec)| {
        spec.name == "wait" || matches!(timeout_of(spec.name, args), Some(Ok(_)))
    })
}

/// XREAD's `$` means "entries after the last one now": pin it to that ID
/// before waiting, so entries added while the client waits are new to it.
async fn pin_last_ids(node: &Node, s: &mut Session, args: &mut [Bytes]) {
    let Some(at) = args.iter().position(|x| is(x, "STREAMS")) else {
        return;
    };
    let rest = args.len() - at - 1;
    if rest == 0 || rest % 2 != 0 {
        return;
    }
    let n = rest / 2;
    for i in 0..n {
        let (key, id) = (at + 1 + i, at + 1 + n + i);
        if &args[id][..] != b"$" {
            continue;
        }
        let probe = [
            Bytes::from_static(b"XREVRANGE"),
            args[key].clone(),
            Bytes::from_static(b"+"),
            Bytes::from_static(b"-"),
            Bytes::from_static(b"COUNT"),
            Bytes::from_static(b"1"),
        ];
        let last = match dispatch(node, s, &probe).await {
            Reply::Array(items) => match items.first() {
                Some(Reply::Array(entry)) => match entry.first() {
                    Some(Reply::Bulk(id)) => id.clone(),
                    _ => continue,
                },
                _ => Bytes::from_static(b"0-0"),
            },
            // A wrong type: the command itself will say so.
            _ => continue,
        };
        args[id] = last;
    }
}

/// Whether a reply means "nothing yet": the command would wait.
fn empty(reply: &Reply) -> bool {
    matches!(reply, Reply::Nil | Reply::NilArray)
}

/// Whether no write on this node signals `keys`: in a cluster, keys of a
/// shard this node holds no replica of.
fn unsignalled(node: &Node, keys: &[(usize, Vec<u8>)]) -> bool {
    let Some(cluster) = node.cluster.get() else {
        return false;
    };
    keys.iter().any(|(_, k)| {
        cluster
            .shard_of(slot_of(k))
            .map_or(true, |shard| !cluster.replicates(shard.group))
    })
}

/// Runs a blocking command for a connection: served at once if it can
/// be, else when a key it waits on gets something, else its timeout
/// reply. `gone` finishes if the client hangs up, which ends the wait.
pub async fn run(
    node: &Node,
    s: &mut Session,
    args: &[Bytes],
    gone: impl std::future::Future<Output = ()>,
) -> Reply {
    let Some((_, spec)) = args.first().and_then(|n| lookup(n)) else {
        return dispatch(node, s, args).await;
    };
    if spec.name == "wait" {
        return wait(node, s, args, gone).await;
    }
    let timeout = match timeout_of(spec.name, args) {
        Some(Ok(t)) if s.multi.is_none() && s.authed && spec.arity_ok(args.len()) => t,
        // Queued, refused, or a bad timeout: the ordinary path answers.
        _ => return dispatch(node, s, args).await,
    };
    let mut args = args.to_vec();
    if spec.name == "xread" {
        pin_last_ids(node, s, &mut args).await;
    }
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let keys: Vec<(usize, Vec<u8>)> = spec.keys_of(&args).map(|k| (s.db, k.to_vec())).collect();
    let poll = unsignalled(node, &keys);
    // Queue first, then look: a push between the two still wakes us.
    let waiting = node.waiters.wait(keys);
    let handle = s.handle.clone();
    // An UNBLOCK aimed at an earlier command must not end this one.
    tokio::select! {
        biased;
        () = handle.unblock.notified() => {}
        () = std::future::ready(()) => {}
    }
    let mut reply = dispatch(node, s, &args).await;
    if !empty(&reply) {
        return reply;
    }
    handle.state.lock().blocked = true;
    let mut gone = std::pin::pin!(gone);
    let sleep_until = |at: Option<Instant>| async move {
        match at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    loop {
        let woken = tokio::select! {
            () = waiting.slot.ready.notified() => true,
            () = tokio::time::sleep(POLL), if poll => true,
            () = sleep_until(deadline) => false,
            () = handle.unblock.notified() => {
                let error = std::mem::take(&mut handle.state.lock().unblock_error);
                if error {
                    reply = Reply::err("UNBLOCKED client unblocked via CLIENT UNBLOCK");
                }
                false
            }
            () = handle.kill.cancelled() => false,
            () = &mut gone => false,
            () = node.shutdown.cancelled() => false,
        };
        if !woken {
            break;
        }
        let again = dispatch(node, s, &args).await;
        if !empty(&again) {
            reply = again;
            break;
        }
    }
    handle.state.lock().blocked = false;
    drop(waiting);
    reply
}

/// WAIT numreplicas timeout: answers at once when enough replicas have
/// the connection's writes (or the ordinary path refuses the request),
/// else looks again every few milliseconds until they do, the timeout
/// passes, CLIENT UNBLOCK, or the client leaves; the answer is the count
/// reached. A single node has no replicas: like Redis without any, it
/// answers 0, after the timeout if more were asked for.
async fn wait(
    node: &Node,
    s: &mut Session,
    args: &[Bytes],
    gone: impl std::future::Future<Output = ()>,
) -> Reply {
    let now = dispatch(node, s, args).await;
    let (want, timeout) = match (&now, super::cluster::wait_args(args)) {
        (Reply::Int(_), Ok(w)) if s.multi.is_none() => w,
        _ => return now,
    };
    let mut index = None;
    let mut have = super::cluster::acked(node, s, &mut index).await;
    if have >= want {
        return Reply::Int(have);
    }
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let handle = s.handle.clone();
    handle.state.lock().blocked = true;
    let mut gone = std::pin::pin!(gone);
    let sleep_until = |at: Option<Instant>| async move {
        match at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let mut reply = None;
    loop {
        let again = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(10)), if node.cluster.get().is_some() => true,
            () = sleep_until(deadline) => false,
            () = handle.unblock.notified() => {
                if std::mem::take(&mut handle.state.lock().unblock_error) {
                    reply = Some(Reply::err("UNBLOCKED client unblocked via CLIENT UNBLOCK"));
                }
                false
            }
            () = handle.kill.cancelled() => false,
            () = &mut gone => false,
            () = node.shutdown.cancelled() => false,
        };
        have = super::cluster::acked(node, s, &mut index).await;
        if !again || have >= want {
            break;
        }
    }
    handle.state.lock().blocked = false;
    reply.unwrap_or(Reply::Int(have))
}
