//! Pub/sub: SUBSCRIBE UNSUBSCRIBE PSUBSCRIBE PUNSUBSCRIBE SSUBSCRIBE
//! SUNSUBSCRIBE PUBLISH SPUBLISH PUBSUB.
//!
//! A connection's subscriptions live in its session; delivery goes
//! through the node's [`PubSub`](crate::pubsub::PubSub) registry and the
//! connection's inbox, which the connection drains between requests. In
//! RESP2 a subscribed connection accepts only the subscription commands,
//! PING, QUIT and RESET, as in Redis; RESP3 messages arrive as push
//! frames next to ordinary replies. In a cluster, PUBLISH and SPUBLISH
//! are delivered on this node and passed on to every other node, and the
//! reply counts the receivers on this node, as Redis Cluster's does.

use std::collections::HashSet;

use bytes::Bytes;

use super::{err, is, CmdResult, Ctx, Reply};
use crate::pubsub::Kind;
use crate::slot::slot_of;

/// A connection's subscriptions (its messages arrive on the session's
/// inbox).
#[derive(Default)]
pub struct Subscriptions {
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shard: HashSet<Bytes>,
}

impl Subscriptions {
    fn of(&mut self, kind: Kind) -> &mut HashSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }

    /// The count Redis reports after (un)subscribing: channels and
    /// patterns together, shard channels on their own.
    fn count(&self, kind: Kind) -> i64 {
        match kind {
            Kind::Shard => self.shard.len() as i64,
            _ => (self.channels.len() + self.patterns.len()) as i64,
        }
    }

    /// Puts the counts where CLIENT LIST reads them.
    fn show(&self, st: &mut crate::node::ClientState) {
        st.channels = self.channels.len();
        st.patterns = self.patterns.len();
        st.shard_channels = self.shard.len();
    }

    /// Whether anything is subscribed.
    pub fn active(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty())
    }
}

/// Commands a RESP2 connection may send while subscribed.
pub fn allowed_subscribed(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "unsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "ssubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    )
}

/// The refusal a RESP2 subscribed connection gets for anything else.
pub fn not_allowed(name: &str) -> Reply {
    Reply::err(format!(
        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    ))
}

fn verb(kind: Kind, on: bool) -> &'static str {
    match (kind, on) {
        (Kind::Channel, true) => "subscribe",
        (Kind::Channel, false) => "unsubscribe",
        (Kind::Pattern, true) => "psubscribe",
        (Kind::Pattern, false) => "punsubscribe",
        (Kind::Shard, true) => "ssubscribe",
        (Kind::Shard, false) => "sunsubscribe",
    }
}

/// Shard channels must share a slot in a cluster, like a command's keys.
fn check_slots(ctx: &Ctx<'_>, names: &[Bytes]) -> Result<(), Reply> {
    if ctx.node.cluster.get().is_none() {
        return Ok(());
    }
    let mut slots = names.iter().map(|n| slot_of(n));
    let first = slots.next();
    if slots.any(|s| Some(s) != first) {
        return Err(Reply::err(
            "CROSSSLOT Keys in request don't hash to the same slot",
        ));
    }
    Ok(())
}

fn subscribe(ctx: &mut Ctx<'_>, a: &[Bytes], kind: Kind) -> CmdResult {
    if kind == Kind::Shard {
        check_slots(ctx, &a[1..])?;
    }
    let id = ctx.s.handle.id;
    let Some(subscriber) = ctx.s.inbox.as_ref().map(|i| i.subscriber.clone()) else {
        return Err(Reply::err(
            "ERR this connection can't receive messages; subscribe over RESP",
        ));
    };
    let subs = ctx.s.subs.get_or_insert_with(Box::default);
    let mut out = Vec::with_capacity(a.len() - 1);
    for name in &a[1..] {
        if subs.of(kind).insert(name.clone()) {
            ctx.node.pubsub.subscribe(kind, name, id, &subscriber);
        }
        out.push(Reply::Push(vec![
            Reply::bulk(verb(kind, true)),
            Reply::Bulk(name.clone()),
            Reply::Int(subs.count(kind)),
        ]));
    }
    subs.show(&mut ctx.s.handle.state.lock());
    Ok(Reply::Many(out))
}

fn unsubscribe(ctx: &mut Ctx<'_>, a: &[Bytes], kind: Kind) -> CmdResult {
    let id = ctx.s.handle.id;
    let Some(subs) = ctx.s.subs.as_mut() else {
        // Nothing subscribed: one reply naming no channel.
        return Ok(Reply::Many(vec![Reply::Push(vec![
            Reply::bulk(verb(kind, false)),
            Reply::Nil,
            Reply::Int(0),
        ])]));
    };
    let names: Vec<Bytes> = if a.len() > 1 {
        a[1..].to_vec()
    } else {
        subs.of(kind).iter().cloned().collect()
    };
    if names.is_empty() {
        return Ok(Reply::Many(vec![Reply::Push(vec![
            Reply::bulk(verb(kind, false)),
            Reply::Nil,
            Reply::Int(subs.count(kind)),
        ])]));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if subs.of(kind).remove(&name) {
            ctx.node.pubsub.unsubscribe(kind, &name, id);
        }
        out.push(Reply::Push(vec![
            Reply::bulk(verb(kind, false)),
            Reply::Bulk(name),
            Reply::Int(subs.count(kind)),
        ]));
    }
    subs.show(&mut ctx.s.handle.state.lock());
    Ok(Reply::Many(out))
}

pub fn subscribe_cmd(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    subscribe(ctx, a, Kind::Channel)
}

pub fn psubscribe(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    subscribe(ctx, a, Kind::Pattern)
}

pub fn ssubscribe(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    subscribe(ctx, a, Kind::Shard)
}

pub fn unsubscribe_cmd(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    unsubscribe(ctx, a, Kind::Channel)
}

pub fn punsubscribe(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    unsubscribe(ctx, a, Kind::Pattern)
}

pub fn sunsubscribe(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    unsubscribe(ctx, a, Kind::Shard)
}

/// Drops every subscription of a connection that is going away.
pub fn leave(node: &crate::node::Node, s: &mut super::Session) {
    let Some(subs) = s.subs.take() else { return };
    Subscriptions::default().show(&mut s.handle.state.lock());
    let id = s.handle.id;
    for (kind, names) in [
        (Kind::Channel, &subs.channels),
        (Kind::Pattern, &subs.patterns),
        (Kind::Shard, &subs.shard),
    ] {
        for name in names {
            node.pubsub.unsubscribe(kind, name, id);
        }
    }
}

/// Passes a message on to every other node of the cluster, without
/// waiting for them.
fn broadcast(ctx: &Ctx<'_>, kind: &'static str, channel: &Bytes, payload: &Bytes) {
    let Some(cluster) = ctx.node.cluster.get().cloned() else {
        return;
    };
    if ctx.s.forwarded {
        return;
    }
    let peers: Vec<_> = cluster
        .layout()
        .nodes
        .iter()
        .filter(|(id, _)| **id != cluster.id)
        .map(|(_, p)| p.clone())
        .collect();
    let args = vec![
        Bytes::from_static(b"STRATA-PUBLISH"),
        Bytes::from_static(kind.as_bytes()),
        channel.clone(),
        payload.clone(),
    ];
    for peer in peers {
        let (cluster, args) = (cluster.clone(), args.clone());
        tokio::spawn(async move {
            if let Err(e) = cluster.forward(&peer, 0, args, false).await {
                tracing::debug!(error = %e, "passing a published message on failed");
            }
        });
    }
}

fn limits(ctx: &Ctx<'_>) -> crate::pubsub::Limits {
    ctx.node.cfg.read().pubsub_output_limit
}

pub fn publish(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let n = ctx.node.pubsub.publish(&a[1], &a[2], limits(ctx));
    broadcast(ctx, "channel", &a[1], &a[2]);
    Ok(Reply::Int(n as i64))
}

pub fn spublish(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let n = ctx.node.pubsub.publish_shard(&a[1], &a[2], limits(ctx));
    broadcast(ctx, "shard", &a[1], &a[2]);
    Ok(Reply::Int(n as i64))
}

/// STRATA-PUBLISH channel|shard name payload: a message another node
/// published, delivered here only.
pub fn strata_publish(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let n = if is(&a[1], "channel") {
        ctx.node.pubsub.publish(&a[2], &a[3], limits(ctx))
    } else if is(&a[1], "shard") {
        ctx.node.pubsub.publish_shard(&a[2], &a[3], limits(ctx))
    } else {
        return Err(err::syntax());
    };
    Ok(Reply::Int(n as i64))
}

pub fn pubsub(ctx: &mut Ctx<'_>, a: &[Bytes]) -> CmdResult {
    let sub = &a[1];
    let ps = &ctx.node.pubsub;
    let names = |kind: Kind| -> Result<Reply, Reply> {
        if a.len() > 3 {
            return Err(err::arity("pubsub|channels"));
        }
        Ok(Reply::Array(
            ps.active(kind, a.get(2).map(|p| &p[..]))
                .into_iter()
                .map(Reply::Bulk)
                .collect(),
        ))
    };
    let counts = |kind: Kind| {
        Reply::Array(
            a[2..]
                .iter()
                .flat_map(|c| [Reply::Bulk(c.clone()), Reply::Int(ps.count(kind, c) as i64)])
                .collect(),
        )
    };
    if is(sub, "CHANNELS") {
        names(Kind::Channel)
    } else if is(sub, "SHARDCHANNELS") {
        names(Kind::Shard)
    } else if is(sub, "NUMSUB") {
        Ok(counts(Kind::Channel))
    } else if is(sub, "SHARDNUMSUB") {
        Ok(counts(Kind::Shard))
    } else if is(sub, "NUMPAT") && a.len() == 2 {
        Ok(Reply::Int(ps.patterns() as i64))
    } else if is(sub, "HELP") {
        Ok(Reply::Array(
            [
                "PUBSUB CHANNELS [<pattern>]",
                "PUBSUB NUMPAT",
                "PUBSUB NUMSUB [<channel> ...]",
                "PUBSUB SHARDCHANNELS [<pattern>]",
                "PUBSUB SHARDNUMSUB [<shardchannel> ...]",
            ]
            .into_iter()
            .map(Reply::Simple)
            .collect(),
        ))
    } else {
        Err(err::subcommand(sub, "pubsub"))
    }
}
