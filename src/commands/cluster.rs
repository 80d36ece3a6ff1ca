//! Commands in cluster mode: the one entry point that routes a request to
//! its shard ([`dispatch`]), replicated writes applied on every replica
//! ([`Applier`]), requests forwarded by peers ([`Forwarder`]), and the
//! CLUSTER / READONLY / READWRITE commands.
//!
//! A write goes through its shard's Raft group and is answered with the
//! reply its application produced on this node. A read on the leader
//! first confirms leadership with a majority, so it is linearizable;
//! after READONLY it may be served, possibly stale, by any replica. A
//! client that asked for the topology gets `-MOVED`; any other client is
//! served by forwarding to the leader, so simple clients can use any node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::reply::Reply;
use super::{err, execute, int_arg, is, lookup, scripting, transactions, CmdResult, Ctx, Session};
use crate::cluster::read_cache::CacheRead;
use crate::cluster::state_machine::Apply;
use crate::cluster::types::ForwardReply;
use crate::cluster::{Admin, Cluster, ClusterError, Forwarded, PeerNode, ShardInfo};
use crate::node::{ClientHandle, Node};
use crate::slot::{slot_of, SLOTS};
use crate::storage::{ReadHint, Value};

/// A session for work the node does on its own behalf (applying
/// replicated writes, serving forwarded requests): authenticated, never
/// listed by CLIENT LIST.
fn internal_session(db: u8) -> Session {
    let handle = Arc::new(ClientHandle::new(0, "internal".into(), String::new(), 3));
    let mut s = Session::new(handle, true);
    s.db = usize::from(db);
    s.resp3 = true;
    s
}

/// Applies replicated writes through the ordinary command path.
pub struct Applier(pub Weak<Node>);

impl Apply for Applier {
    fn apply(&self, db: u8, args: &[Bytes]) -> Bytes {
        let Some(node) = self.0.upgrade() else {
            return Reply::err("ERR node is shutting down").to_resp3();
        };
        let mut s = internal_session(db);
        let mut ctx = Ctx {
            node: &node,
            s: &mut s,
        };
        execute(&mut ctx, args).to_resp3()
    }
}

/// Serves requests that peers forward to this node.
pub struct Forwarder(pub Weak<Node>);

impl Forwarded for Forwarder {
    fn execute(
        &self,
        db: u8,
        args: Vec<Bytes>,
        holders: bool,
    ) -> Pin<Box<dyn Future<Output = ForwardReply> + Send>> {
        let node = self.0.clone();
        Box::pin(async move {
            let Some(node) = node.upgrade() else {
                return ForwardReply {
                    reply: Reply::err("ERR node is shutting down").to_resp3(),
                    holders: None,
                };
            };
            let mut s = internal_session(db);
            s.forwarded = true;
            s.want_holders = holders;
            let reply = dispatch(&node, &mut s, &args).await.to_resp3();
            ForwardReply {
                reply,
                holders: s.holders,
            }
        })
    }

    fn cache_read(&self, db: u8, key: &[u8]) -> CacheRead {
        let Some(node) = self.0.upgrade() else {
            return CacheRead::Uncacheable;
        };
        let mut s = internal_session(db);
        let mut ctx = Ctx {
            node: &node,
            s: &mut s,
        };
        let now = crate::storage::now_ms();
        ctx.read(key, ReadHint::Normal, |r| match r {
            None => CacheRead::Absent,
            Some((rec, _)) => match &rec.value {
                Value::Str(v) => CacheRead::Value {
                    value: Bytes::copy_from_slice(v),
                    ttl_ms: rec.expire_at_ms.map(|at| at.saturating_sub(now)),
                },
                _ => CacheRead::Uncacheable,
            },
        })
        .unwrap_or(CacheRead::Uncacheable)
    }
}

/// GET of a key of a shard led elsewhere, for a client of this node: a
/// key hot here is answered from this node's cache, fetched into it on a
/// miss. None: read it the usual way.
async fn cached_get(
    node: &Node,
    cluster: &Cluster,
    s: &mut Session,
    spec: &'static super::Spec,
    args: &[Bytes],
    shard: &ShardInfo,
) -> Option<Reply> {
    if spec.name != "get"
        || s.cluster_aware
        || s.forwarded
        || !cluster.caches()
        || !node.hotkeys.enabled()
    {
        return None;
    }
    let (db, key) = (s.db as u8, &args[1]);
    if let Some(v) = cluster.cached(db, key) {
        node.metrics
            .local_cache_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.local_cache_hit = true;
        return Some(Reply::Bulk(v));
    }
    if node.hotkeys.per_min(s.db, key) < node.hotkeys.threshold() {
        return None;
    }
    match cluster.fetch_cached(shard, db, key).await? {
        CacheRead::Value { value, .. } => Some(Reply::Bulk(value)),
        CacheRead::Absent => Some(Reply::Nil),
        CacheRead::Uncacheable => None,
    }
}

fn cluster_error(e: &ClusterError) -> Reply {
    match e {
        ClusterError::NotLeader { group, .. } => Reply::err(format!(
            "CLUSTERDOWN shard {group} has no leader right now; retry shortly"
        )),
        other => Reply::err(other.to_string()),
    }
}

/// Executes one request, routing it to its shard in cluster mode.
pub async fn dispatch(node: &Node, s: &mut Session, args: &[Bytes]) -> Reply {
    let local = |s: &mut Session| {
        let mut ctx = Ctx { node, s };
        execute(&mut ctx, args)
    };
    let Some(cluster) = node.cluster.get() else {
        return local(s);
    };
    let Some((idx, spec)) = args.first().and_then(|n| lookup(n)) else {
        return local(s);
    };
    if (!s.authed && !spec.noauth) || !spec.arity_ok(args.len()) {
        // Refused the same way as anywhere else.
        return local(s);
    }
    if s.multi.is_some() && !transactions::runs_in_multi(spec.name) {
        // Queued here; the transaction is routed whole at EXEC.
        return local(s);
    }
    if s.user.is_some() {
        // Checked here, where the client is: peers trust what is routed
        // to them.
        let mut ctx = Ctx { node, s };
        if let Err(denied) = super::acl::permit(&mut ctx, idx, spec, args) {
            return denied;
        }
    }
    match spec.name {
        // Subscriptions belong to this connection; messages reach every
        // node (see `pubsub`).
        "ssubscribe" | "sunsubscribe" | "spublish" => return local(s),
        "exec" if s.multi.is_some() => return exec(node, cluster, s).await,
        "watch" if s.multi.is_none() => return watch(node, cluster, s, args).await,
        _ => {}
    }
    if spec.name == "cluster" && args.get(1).is_some_and(|a| is(a, "STRATA-CREATE")) {
        return create(cluster, &args[2..]).await;
    }
    if spec.name == "cluster" {
        if let Some(req) = admin_request(&args[1..]) {
            return match req {
                Ok(req) => match cluster.admin(req).await {
                    Ok(done) => Reply::Status(done),
                    Err(e) => cluster_error(&e),
                },
                Err(e) => e,
            };
        }
    }
    if matches!(spec.name, "flushdb" | "flushall") {
        return flush(cluster, s, spec.name == "flushall", args).await;
    }
    if spec.name == "strata-flushslots" {
        return flush_shard(cluster, s, args).await;
    }
    let mut reply = route(node, cluster, s, spec, args).await;
    if !s.forwarded {
        // An election or a replica move is under way: the request was
        // refused before anything was applied, so it is sent again for
        // about an election's length before the client hears of it.
        let settle = tokio::time::Instant::now() + SETTLE;
        while not_applied(&reply) && tokio::time::Instant::now() < settle {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            reply = route(node, cluster, s, spec, args).await;
        }
    }
    if s.caching.is_some() {
        // Served elsewhere: CLIENT CACHING's one command is over all the
        // same.
        super::tracking::after_command(s, spec, args);
    }
    reply
}

/// How a node removed from the cluster refuses every request.
const REMOVED: &str = "CLUSTERDOWN this node was removed from the cluster";

/// How long a forwarded request may still be answered by a leader that
/// was replaced while it was in flight.
const STEP_DOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a request refused for want of a leader is retried.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(2500);

/// Whether `reply` refuses a request that was certainly not applied
/// anywhere because its shard has no leader that can take it right now.
fn not_applied(reply: &Reply) -> bool {
    let Reply::Error(e) = reply else {
        return false;
    };
    e.starts_with("NOQUORUM")
        || e.starts_with("TRYAGAIN leadership of shard")
        || (e.starts_with("CLUSTERDOWN shard ") && e.contains("has no leader right now"))
}

/// EXEC in a cluster: the transaction goes whole to its keys' shard as
/// one STRATA-EXEC request, replicated as one entry.
async fn exec(node: &Node, cluster: &Cluster, s: &mut Session) -> Reply {
    let mut ctx = Ctx { node, s };
    let (queued, watched) = match transactions::take(&mut ctx) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let args = transactions::encode(&watched, &queued);
    if transactions::keys_of(&args).is_empty() {
        return transactions::run(&mut ctx, &watched, &queued);
    }
    let Some((_, spec)) = lookup(&args[0]) else {
        unreachable!("STRATA-EXEC is in the command table")
    };
    route(node, cluster, s, spec, &args).await
}

/// WATCH in a cluster: the stamps are read where the keys live.
async fn watch(node: &Node, cluster: &Cluster, s: &mut Session, args: &[Bytes]) -> Reply {
    let mut stamps = args.to_vec();
    stamps[0] = Bytes::from_static(b"STRATA-STAMPS");
    let Some((_, spec)) = lookup(&stamps[0]) else {
        unreachable!("STRATA-STAMPS is in the command table")
    };
    let reply = route(node, cluster, s, spec, &stamps).await;
    match transactions::stamps_from(s.db, &args[1..], &reply) {
        Ok(watched) => {
            for (db, key, stamp) in watched {
                s.watch(db, key, stamp);
            }
            Reply::OK
        }
        Err(e) => e,
    }
}

/// Routes a keyed request to its shard: executed here, replicated through
/// the shard's log, or sent to the node that can.
async fn route(
    node: &Node,
    cluster: &Cluster,
    s: &mut Session,
    spec: &'static super::Spec,
    args: &[Bytes],
) -> Reply {
    let local = |s: &mut Session| {
        let mut ctx = Ctx { node, s };
        execute(&mut ctx, args)
    };
    let mut keys = spec.keys_of(args);
    let Some(first) = keys.next() else {
        return local(s);
    };
    let slot = slot_of(first);
    if keys.any(|k| slot_of(k) != slot) {
        return Reply::err("CROSSSLOT Keys in request don't hash to the same slot");
    }
    if cluster.was_removed() {
        return Reply::err(format!("{REMOVED} and serves no data; connect to a member"));
    }
    let shard = match cluster.shard_of(slot) {
        Ok(shard) => shard,
        Err(e) => return cluster_error(&e),
    };
    let group = shard.group;
    if !spec.write {
        // A client tracking keys is told of changes this node applies:
        // a key of a shard it doesn't replicate is read where it lives,
        // as in Redis Cluster.
        let tracked = s.tracking.is_some() && super::tracking::remembers(s, spec);
        if tracked && !cluster.replicates(group) {
            let to = cluster
                .leader_of(&shard)
                .map(|(_, p)| p.resp.to_string())
                .unwrap_or_default();
            return Reply::err(format!("MOVED {slot} {to}"));
        }
        if s.readonly && cluster.replicates(group) {
            return local(s);
        }
        let leader = if cluster.is_leader(group) {
            match cluster.read_barrier(group).await {
                Ok(()) => return local(s),
                Err(ClusterError::NotLeader { leader, .. }) => leader,
                Err(e) => return cluster_error(&e),
            }
        } else {
            None
        };
        count_access(node, s, spec, args);
        if let Some(reply) = cached_get(node, cluster, s, spec, args, &shard).await {
            return reply;
        }
        let reply = elsewhere(cluster, s, slot, &shard, leader, args).await;
        if tracked {
            super::tracking::remember(node, s, spec, args);
        }
        return reply;
    }
    if !cluster.is_leader(group) {
        s.last_write = Some((group, None));
        count_access(node, s, spec, args);
        return elsewhere(cluster, s, slot, &shard, None, args).await;
    }
    let db = s.db as u8;
    let entry = match scripting::for_log(node, args) {
        Ok(entry) => entry,
        Err(e) => return e,
    };
    match cluster.propose(group, db, entry).await {
        Ok(done) => {
            s.last_write = Some((group, Some(done.index)));
            if s.want_holders {
                s.holders = Some(cluster.holders(group, done.index).await);
            }
            Reply::from_resp3(&done.reply)
        }
        Err(ClusterError::NotLeader { leader, .. }) => {
            elsewhere(cluster, s, slot, &shard, leader, args).await
        }
        Err(e) => cluster_error(&e),
    }
}

/// FLUSHDB / FLUSHALL [ASYNC|SYNC] in a cluster: every shard deletes its
/// slots' keys through its own log (STRATA-FLUSHSLOTS on its leader).
/// Shards are flushed one after another; if one can't be reached the
/// reply names it, and the shards before it are already flushed.
async fn flush(cluster: &Cluster, s: &mut Session, all: bool, args: &[Bytes]) -> Reply {
    match args.get(1) {
        None => {}
        Some(m) if args.len() == 2 && (is(m, "ASYNC") || is(m, "SYNC")) => {}
        Some(_) => return err::syntax(),
    }
    let shards = cluster.layout().shards.clone();
    if shards.is_empty() {
        return cluster_error(&ClusterError::NotCreated);
    }
    let db = if all {
        Bytes::from_static(b"ALL")
    } else {
        Bytes::from(s.db.to_string())
    };
    for shard in shards {
        let mut cmd = vec![Bytes::from_static(b"STRATA-FLUSHSLOTS"), db.clone()];
        for &(a, b) in &shard.slots {
            cmd.push(Bytes::from(a.to_string()));
            cmd.push(Bytes::from(b.to_string()));
        }
        let reply = if cluster.is_leader(shard.group) {
            flush_shard(cluster, s, &cmd).await
        } else {
            match cluster.leader_of(&shard) {
                Some((id, peer)) if id != cluster.id => {
                    match cluster.forward(&peer, s.db as u8, cmd, false).await {
                        Ok(answer) => Reply::from_resp3(&answer.reply),
                        Err(e) => cluster_error(&e),
                    }
                }
                _ => cluster_error(&ClusterError::NotLeader {
                    group: shard.group,
                    leader: None,
                }),
            }
        };
        if let Reply::Error(e) = reply {
            return Reply::err(format!("{e} (flushing shard {})", shard.group));
        }
    }
    Reply::OK
}

/// STRATA-FLUSHSLOTS on the leader of the shard that owns its slots:
/// replicated through that shard's log. Only the cluster sends it.
async fn flush_shard(cluster: &Cluster, s: &mut Session, args: &[Bytes]) -> Reply {
    let Some(first) = args
        .get(2)
        .and_then(|a| std::str::from_utf8(a).ok()?.parse::<u16>().ok())
    else {
        return err::syntax();
    };
    let shard = match cluster.shard_of(first) {
        Ok(shard) => shard,
        Err(e) => return cluster_error(&e),
    };
    // Every range must lie in this one shard: each replica applies the
    // command to its whole store, which holds other shards' keys too.
    let mut bounds = args[2..].chunks(2).map(|p| {
        let n = |b: &Bytes| std::str::from_utf8(b).ok()?.parse::<u16>().ok();
        Some((n(&p[0])?, n(p.get(1)?)?))
    });
    let inside = bounds.all(|r| {
        r.is_some_and(|(a, b)| {
            shard
                .slots
                .iter()
                .any(|&(sa, sb)| sa <= a && a <= b && b <= sb)
        })
    });
    if !inside {
        return Reply::err("ERR slot ranges must lie within one shard");
    }
    if !cluster.is_leader(shard.group) {
        return Reply::err(format!(
            "TRYAGAIN this node no longer leads shard {}; retry shortly",
            shard.group
        ));
    }
    match cluster
        .propose(shard.group, s.db as u8, args.to_vec())
        .await
    {
        Ok(done) => Reply::from_resp3(&done.reply),
        Err(e) => cluster_error(&e),
    }
}

/// The shard group a request would be replicated through as part of a
/// pipeline batch: a well-formed keyed write to one slot of a shard this
/// node leads.
fn batch_group(cluster: &Cluster, s: &Session, args: &[Bytes]) -> Option<u32> {
    let (_, spec) = lookup(args.first()?)?;
    if !spec.write
        || s.multi.is_some()
        || (!s.authed && !spec.noauth)
        || !spec.arity_ok(args.len())
        || matches!(spec.name, "flushdb" | "flushall" | "strata-flushslots")
        || scripting::runs_script(spec.name)
    {
        return None;
    }
    let mut keys = spec.keys_of(args);
    let slot = slot_of(keys.next()?);
    if keys.any(|k| slot_of(k) != slot) {
        return None;
    }
    let group = cluster.shard_of(slot).ok()?.group;
    cluster.is_leader(group).then_some(group)
}

/// Executes a client's pipeline in order, appending one reply per request
/// to `out`. Consecutive writes to a shard this node leads travel as one
/// Raft entry, so a pipeline costs one replication round trip per run of
/// writes instead of one per command. Stops after QUIT.
pub async fn dispatch_pipeline(
    node: &Node,
    s: &mut Session,
    reqs: &[Vec<Bytes>],
    out: &mut Vec<Reply>,
) {
    let Some(cluster) = node.cluster.get() else {
        for args in reqs {
            out.push(dispatch(node, s, args).await);
            if s.quit {
                return;
            }
        }
        return;
    };
    let mut i = 0;
    while i < reqs.len() {
        let group = batch_group(cluster, s, &reqs[i]);
        let mut j = i + 1;
        if let Some(g) = group {
            while j < reqs.len() && batch_group(cluster, s, &reqs[j]) == Some(g) {
                j += 1;
            }
        }
        if let (Some(g), true) = (group, j - i > 1) {
            let cmds: Vec<Vec<Bytes>> = reqs[i..j].to_vec();
            if let Ok(bytes) = cluster.propose_batch(g, s.db as u8, cmds).await {
                s.last_write = Some((g, None));
                match Reply::from_resp3(&bytes) {
                    Reply::Array(items) if items.len() == j - i => {
                        out.extend(items);
                        i = j;
                        continue;
                    }
                    other => {
                        // Applied, but the answer is unreadable: say so for each.
                        let e = match other {
                            Reply::Error(e) => e,
                            _ => "ERR malformed pipeline reply".into(),
                        };
                        out.extend((i..j).map(|_| Reply::err(e.clone())));
                        i = j;
                        continue;
                    }
                }
            }
            // Not replicated as a batch (leadership moved, no quorum): each
            // request takes the ordinary path, which redirects or refuses.
        }
        for args in &reqs[i..j] {
            out.push(dispatch(node, s, args).await);
            if s.quit {
                return;
            }
        }
        i = j;
    }
}

/// Caches `key` here (`cache_hint: "hot_read"`), if its shard is led
/// elsewhere.
pub async fn warm_cache(node: &Node, db: u8, key: Bytes) {
    let Some(cluster) = node.cluster.get() else {
        return;
    };
    if !cluster.caches() {
        return;
    }
    let Ok(shard) = cluster.shard_of(slot_of(&key)) else {
        return;
    };
    if !cluster.is_leader(shard.group) {
        cluster.fetch_cached(&shard, db, &key).await;
    }
}

/// Counts a client's use of keys served by another node in this node's
/// hot-key sketch (keys served here are counted where they are executed).
fn count_access(node: &Node, s: &Session, spec: &super::Spec, args: &[Bytes]) {
    if node.hotkeys.enabled() && !s.forwarded && super::tracking::is_data(spec) {
        for key in spec.keys_of(args) {
            node.hotkeys.touch(s.db, key);
        }
    }
}

/// The request belongs to another node: redirect a cluster-aware client,
/// forward for any other.
async fn elsewhere(
    cluster: &Cluster,
    s: &mut Session,
    slot: u16,
    shard: &ShardInfo,
    leader: Option<(u64, PeerNode)>,
    args: &[Bytes],
) -> Reply {
    let Some((id, peer)) = leader.or_else(|| cluster.leader_of(shard)) else {
        return Reply::err(format!(
            "CLUSTERDOWN shard {} has no leader right now (an election is running or a majority of its replicas is down); retry shortly",
            shard.group
        ));
    };
    if id == cluster.id {
        return Reply::err(format!(
            "TRYAGAIN leadership of shard {} is changing; retry shortly",
            shard.group
        ));
    }
    if s.cluster_aware || s.forwarded {
        return Reply::err(format!("MOVED {slot} {}", peer.resp));
    }
    // A leader that stops answering (paused, partitioned) is replaced by
    // an election; don't wait out the timeout on it. Whether it applied
    // the request is unknown, so the client is told to retry rather than
    // the request being sent twice.
    let (mut id, mut peer) = (id, peer);
    for _hop in 0..3 {
        let answer = {
            let forward = cluster.forward(&peer, s.db as u8, args.to_vec(), s.want_holders);
            tokio::pin!(forward);
            tokio::select! {
                r = &mut forward => Some(r),
                // A leader that is still up answers soon after it steps
                // down: with the reply if the write committed, or a
                // refusal if it was dropped.
                () = cluster.leader_changed(shard.group, id) => {
                    tokio::time::timeout(STEP_DOWN_GRACE, &mut forward).await.ok()
                }
            }
        };
        let reply = match answer {
            Some(Ok(answer)) => {
                s.holders = answer.holders;
                Reply::from_resp3(&answer.reply)
            }
            Some(Err(e)) => cluster_error(&e),
            None => Reply::err(format!(
                "TRYAGAIN the leader of shard {} changed while the request was in flight; it may or may not have been applied",
                shard.group
            )),
        };
        // The peer was removed from the cluster while the request was on
        // its way, and refused it untouched: held and sent again to the
        // shard's leader as the layout names it next.
        if matches!(&reply, Reply::Error(e) if e.starts_with(REMOVED)) {
            return Reply::err(format!(
                "TRYAGAIN leadership of shard {} is moving between nodes; retry shortly",
                shard.group
            ));
        }
        // The peer no longer leads the shard and did nothing with the
        // request: follow it to the node it names.
        match moved_to(cluster, &reply) {
            Some(next) if next.0 != cluster.id => (id, peer) = next,
            Some(_) => break,
            None => return reply,
        }
    }
    Reply::err(format!(
        "TRYAGAIN leadership of shard {} is moving between nodes; retry shortly",
        shard.group
    ))
}

/// The member a `MOVED slot host:port` reply names.
fn moved_to(cluster: &Cluster, reply: &Reply) -> Option<(u64, PeerNode)> {
    let Reply::Error(e) = reply else {
        return None;
    };
    let addr = e.strip_prefix("MOVED ")?.split_whitespace().nth(1)?;
    let layout = cluster.layout();
    layout
        .nodes
        .iter()
        .find(|(_, n)| n.resp == addr)
        .map(|(id, n)| (*id, n.clone()))
}

/// A node as `CLUSTER STRATA-NODE` describes it: id (hex), cluster,
/// RESP and HTTP addresses.
fn peer_of(m: &[Bytes]) -> Result<(u64, PeerNode), Reply> {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let [id, c, r, h] = m else {
        return Err(err::syntax());
    };
    let id = u64::from_str_radix(&text(id), 16).map_err(|_| Reply::err("ERR bad node id"))?;
    Ok((
        id,
        PeerNode {
            cluster: text(c),
            resp: text(r),
            http: text(h),
        },
    ))
}

fn number(b: Option<&Bytes>) -> Option<usize> {
    std::str::from_utf8(b?).ok()?.parse().ok()
}

/// CLUSTER STRATA-CREATE replicas shards (id cluster resp http)...: forms
/// the cluster (sent by `strata cluster create` to one of the nodes).
async fn create(cluster: &Cluster, a: &[Bytes]) -> Reply {
    let (Some(replicas), Some(shards)) = (number(a.first()), number(a.get(1))) else {
        return err::syntax();
    };
    let rest = &a[2..];
    if rest.is_empty() || rest.len() % 4 != 0 {
        return err::syntax();
    }
    let mut nodes = BTreeMap::new();
    for m in rest.chunks(4) {
        match peer_of(m) {
            Ok((id, node)) => nodes.insert(id, node),
            Err(e) => return e,
        };
    }
    match cluster.create(replicas, shards, nodes).await {
        Ok(layout) => Reply::Status(format!(
            "OK epoch {} shards {}",
            layout.epoch,
            layout.shards.len()
        )),
        Err(e) => Reply::err(e.to_string()),
    }
}

/// CLUSTER STRATA-ADD-NODE id cluster resp http, STRATA-REMOVE-NODE id,
/// STRATA-REBALANCE: membership changes (None for other subcommands).
fn admin_request(a: &[Bytes]) -> Option<Result<Admin, Reply>> {
    let sub = a.first()?;
    if is(sub, "STRATA-ADD-NODE") {
        return Some(peer_of(&a[1..]).map(|(id, node)| Admin::AddNode(id, node)));
    }
    if is(sub, "STRATA-REMOVE-NODE") {
        let id = match &a[1..] {
            [id] => std::str::from_utf8(id)
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()),
            _ => return Some(Err(err::syntax())),
        };
        return Some(
            id.map(Admin::RemoveNode)
                .ok_or_else(|| Reply::err("ERR bad node id")),
        );
    }
    if is(sub, "STRATA-REBALANCE") {
        return Some(if a.len() == 1 {
            Ok(Admin::Rebalance)
        } else {
            Err(err::syntax())
        });
    }
    None
}

fn node_name(id: u64) -> String {
    format!("{id:040x}")
}

fn host_port(addr: &str) -> (String, i64) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}

/// Shards in slot order with their leader (if known) first.
fn shard_view(cluster: &Cluster) -> Vec<(ShardInfo, Vec<(u64, PeerNode)>)> {
    let meta = cluster.layout().clone();
    meta.shards
        .iter()
        .map(|shard| {
            let nodes = cluster
                .replicas_leader_first(shard)
                .into_iter()
                .filter_map(|id| meta.nodes.get(&id).map(|n| (id, n.clone())))
                .collect();
            (shard.clone(), nodes)
        })
        .collect()
}

/// CLUSTER subcommands.
pub fn cluster(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    if is(sub, "KEYSLOT") {
        if a.len() != 3 {
            return Err(err::arity("cluster|keyslot"));
        }
        return Ok(Reply::Int(i64::from(slot_of(&a[2]))));
    }
    if is(sub, "HELP") {
        return Ok(Reply::Array(
            [
                "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "INFO, MYID, NODES, SLOTS, SHARDS, KEYSLOT <key>,",
                "COUNTKEYSINSLOT <slot>, GETKEYSINSLOT <slot> <count>",
            ]
            .iter()
            .map(|l| Reply::Status((*l).to_string()))
            .collect(),
        ));
    }
    let Some(cluster) = ctx.node.cluster.get() else {
        return Err(Reply::err("ERR This instance has cluster support disabled"));
    };
    if is(sub, "STRATA-NODE") {
        return Ok(Reply::bulk(format!(
            "{:016x} {} {} {}",
            cluster.id, cluster.me.cluster, cluster.me.resp, cluster.me.http
        )));
    }
    if is(sub, "MYID") {
        return Ok(Reply::bulk(node_name(cluster.id)));
    }
    if is(sub, "INFO") {
        let meta = cluster.layout().clone();
        let (served, total) = cluster.shards_served();
        let all_led = total > 0
            && cluster.is_member()
            && meta.shards.iter().all(|s| cluster.leader_of(s).is_some());
        let state = if all_led { "ok" } else { "fail" };
        let assigned = if total > 0 { SLOTS } else { 0 };
        let mut out = String::new();
        let _ = write!(
            out,
            "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:{}\r\ncluster_size:{total}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\nstrata_shards_replicated_here:{served}\r\nstrata_replicas:{}\r\n",
            if all_led { assigned } else { 0 },
            if all_led { 0 } else { assigned },
            meta.nodes.len(),
            meta.epoch,
            meta.epoch,
            meta.replicas
        );
        let moves = cluster.move_status();
        let _ = write!(
            out,
            "strata_member:{}\r\nstrata_moves_planned:{}\r\nstrata_moves_done:{}\r\nstrata_moves_pending:{}\r\nstrata_nodes_leaving:{}\r\n",
            if cluster.was_removed() {
                "removed"
            } else if cluster.is_member() {
                "yes"
            } else {
                "no"
            },
            moves.planned,
            moves.done,
            moves.pending,
            moves.leaving.len(),
        );
        if let Some(mv) = moves.current {
            let _ = write!(out, "strata_move_current:{mv}\r\n");
        }
        return Ok(Reply::Verbatim(out));
    }
    if is(sub, "SLOTS") {
        ctx.s.cluster_aware = true;
        let mut out = Vec::new();
        for (shard, nodes) in shard_view(cluster) {
            for &(a, b) in &shard.slots {
                let mut entry = vec![Reply::Int(i64::from(a)), Reply::Int(i64::from(b))];
                for (id, n) in &nodes {
                    let (host, port) = host_port(&n.resp);
                    entry.push(Reply::Array(vec![
                        Reply::bulk(host),
                        Reply::Int(port),
                        Reply::bulk(node_name(*id)),
                    ]));
                }
                out.push(Reply::Array(entry));
            }
        }
        return Ok(Reply::Array(out));
    }
    if is(sub, "SHARDS") {
        ctx.s.cluster_aware = true;
        let mut out = Vec::new();
        for (shard, nodes) in shard_view(cluster) {
            let slots = shard
                .slots
                .iter()
                .flat_map(|&(a, b)| [Reply::Int(i64::from(a)), Reply::Int(i64::from(b))])
                .collect();
            let members = nodes
                .iter()
                .enumerate()
                .map(|(i, (id, n))| {
                    let (host, port) = host_port(&n.resp);
                    Reply::Map(vec![
                        (Reply::bulk("id"), Reply::bulk(node_name(*id))),
                        (Reply::bulk("port"), Reply::Int(port)),
                        (Reply::bulk("ip"), Reply::bulk(host.clone())),
                        (Reply::bulk("endpoint"), Reply::bulk(host)),
                        (
                            Reply::bulk("role"),
                            Reply::bulk(if i == 0 { "master" } else { "replica" }),
                        ),
                        (Reply::bulk("replication-offset"), Reply::Int(0)),
                        (Reply::bulk("health"), Reply::bulk("online")),
                    ])
                })
                .collect();
            out.push(Reply::Map(vec![
                (Reply::bulk("slots"), Reply::Array(slots)),
                (Reply::bulk("nodes"), Reply::Array(members)),
            ]));
        }
        return Ok(Reply::Array(out));
    }
    if is(sub, "NODES") {
        ctx.s.cluster_aware = true;
        let meta = cluster.layout().clone();
        let view = shard_view(cluster);
        let mut out = String::new();
        for (id, n) in &meta.nodes {
            let led: Vec<String> = view
                .iter()
                .filter(|(_, nodes)| nodes.first().is_some_and(|(l, _)| l == id))
                .flat_map(|(s, _)| {
                    s.slots.iter().map(|&(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                })
                .collect();
            let cport = host_port(&n.cluster).1;
            let flags = if *id == cluster.id {
                "myself,master"
            } else {
                "master"
            };
            let _ = writeln!(
                out,
                "{} {}@{cport} {flags} - 0 0 {} connected{}{}",
                node_name(*id),
                n.resp,
                meta.epoch,
                if led.is_empty() { "" } else { " " },
                led.join(" ")
            );
        }
        return Ok(Reply::Verbatim(out));
    }
    if is(sub, "COUNTKEYSINSLOT") || is(sub, "GETKEYSINSLOT") {
        let count_only = is(sub, "COUNTKEYSINSLOT");
        if a.len() != if count_only { 3 } else { 4 } {
            return Err(err::syntax());
        }
        let slot = int_arg(&a[2])?;
        if !(0..i64::from(SLOTS)).contains(&slot) {
            return Err(Reply::err("ERR Invalid slot"));
        }
        let limit = if count_only {
            usize::MAX
        } else {
            let n = int_arg(&a[3])?;
            if n < 0 {
                return Err(Reply::err("ERR Invalid number of keys"));
            }
            n as usize
        };
        let mut keys = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, items) = ctx
                .node
                .store
                .scan_slot(ctx.s.db, slot as u16, cursor, 1000)
                .map_err(super::storage_error)?;
            keys.extend(items.into_iter().map(|i| i.key));
            if next == 0 || keys.len() >= limit {
                break;
            }
            cursor = next;
        }
        if count_only {
            return Ok(Reply::Int(keys.len() as i64));
        }
        keys.truncate(limit);
        return Ok(Reply::Array(keys.into_iter().map(Reply::bulk).collect()));
    }
    Err(err::subcommand(sub, "cluster"))
}

/// READONLY: this connection's reads may be served by any replica.
pub fn readonly(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    if ctx.node.cluster.get().is_none() {
        return Err(Reply::err("ERR This instance has cluster support disabled"));
    }
    ctx.s.readonly = true;
    ctx.s.cluster_aware = true;
    Ok(Reply::OK)
}

/// READWRITE: back to reads from the leader only.
pub fn readwrite(ctx: &mut Ctx<'_>, _: &[Bytes]) -> CmdResult {
    if ctx.node.cluster.get().is_none() {
        return Err(Reply::err("ERR This instance has cluster support disabled"));
    }
    ctx.s.readonly = false;
    Ok(Reply::OK)
}

/// WAIT numreplicas timeout, answered now: how many replicas have this
/// connection's writes. A single node has none. In a cluster this counts
/// the other replicas of the shard the connection last wrote to that
/// have its log up to that write, as far as this node can tell without
/// waiting (it must lead the shard); [`super::blocking`] waits for more
/// and asks the leader.
pub fn wait(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    wait_args(a)?;
    let Some(cluster) = ctx.node.cluster.get() else {
        return Ok(Reply::Int(0));
    };
    let Some((group, index)) = wait_target(cluster, ctx.s) else {
        return Ok(Reply::Int(0));
    };
    Ok(Reply::Int(
        cluster
            .acked_followers(group, index)
            .map_or(0, |(_, n)| n as i64),
    ))
}

/// WAIT's replica count and timeout (0: forever).
pub fn wait_args(a: &[Bytes]) -> Result<(i64, std::time::Duration), Reply> {
    let want = super::int_arg(&a[1])?;
    let ms = super::int_arg(&a[2])
        .map_err(|_| Reply::err("ERR timeout is not an integer or out of range"))?;
    if ms < 0 {
        return Err(Reply::err("ERR timeout is negative"));
    }
    Ok((want, std::time::Duration::from_millis(ms as u64)))
}

/// The shard and log index WAIT counts to: the connection's last write,
/// or, before any, the first shard's log as it is now.
pub fn wait_target(cluster: &Cluster, s: &Session) -> Option<(u32, Option<u64>)> {
    s.last_write
        .or_else(|| Some((cluster.layout().shards.first()?.group, None)))
}

/// STRATA-ACKED group [index]: on the shard's leader, the index counted
/// to and how many other replicas have the log up to it (see WAIT).
pub fn strata_acked(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let cluster = ctx
        .node
        .cluster
        .get()
        .ok_or_else(|| Reply::err("ERR This instance has cluster support disabled"))?;
    let group = u32::try_from(super::int_arg(&a[1])?).map_err(|_| err::syntax())?;
    let index = match a.get(2) {
        Some(i) => Some(u64::try_from(super::int_arg(i)?).map_err(|_| err::syntax())?),
        None => None,
    };
    match cluster.acked_followers(group, index) {
        Some((index, n)) => Ok(Reply::Array(vec![
            Reply::Int(index as i64),
            Reply::Int(n as i64),
        ])),
        None => Err(cluster_error(&ClusterError::NotLeader {
            group,
            leader: None,
        })),
    }
}

/// How many replicas have the connection's writes, asked of the leader
/// of the shard it last wrote to; `index` is pinned by the first answer
/// so later writes by others don't move the goal.
pub async fn acked(node: &Node, s: &Session, index: &mut Option<u64>) -> i64 {
    let Some(cluster) = node.cluster.get() else {
        return 0;
    };
    let Some((group, first)) = wait_target(cluster, s) else {
        return 0;
    };
    let goal = index.or(first);
    if let Some((at, n)) = cluster.acked_followers(group, goal) {
        *index = Some(at);
        return n as i64;
    }
    let shard = cluster
        .layout()
        .shards
        .iter()
        .find(|sh| sh.group == group)
        .cloned();
    let Some((id, peer)) = shard.and_then(|sh| cluster.leader_of(&sh)) else {
        return 0;
    };
    if id == cluster.id {
        return 0;
    }
    let mut args = vec![
        Bytes::from_static(b"STRATA-ACKED"),
        Bytes::from(group.to_string()),
    ];
    if let Some(i) = goal {
        args.push(Bytes::from(i.to_string()));
    }
    match cluster.forward(&peer, s.db as u8, args, false).await {
        Ok(answer) => match Reply::from_resp3(&answer.reply) {
            Reply::Array(v) => match v[..] {
                [Reply::Int(at), Reply::Int(n)] => {
                    *index = Some(at as u64);
                    n
                }
                _ => 0,
            },
            _ => 0,
        },
        Err(_) => 0,
    }
}
