//! The cluster's data types: what Raft replicates, who the members are,
//! and how slots are laid out over shards.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::slot::SLOTS;

openraft::declare_raft_types!(
    /// Every Raft group of a node (the metadata group and each shard) uses
    /// these types, so one transport serves them all.
    pub RaftTypes:
        D = Request,
        R = Bytes,
        NodeId = u64,
        Node = PeerNode,
        Entry = openraft::Entry<RaftTypes>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Raft's log id for our types.
pub type LogId = openraft::LogId<u64>;
/// A group's membership as the state machine stores it.
pub type Membership = openraft::StoredMembership<u64, PeerNode>;

/// The Raft group that holds cluster metadata; shard groups are 1..
pub const META_GROUP: u32 = 0;

/// Where a node can be reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// Node-to-node transport address (`host:port`).
    pub cluster: String,
    /// RESP address clients are redirected to.
    pub resp: String,
    /// HTTP address.
    pub http: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (resp {})", self.cluster, self.resp)
    }
}

/// One replicated entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A write command for a shard, as the client sent it, with the time
    /// its leader stamped on it so every replica applies it alike.
    Command {
        /// Logical database.
        db: u8,
        /// Leader's clock, milliseconds since the epoch.
        at_ms: u64,
        /// The command and its arguments.
        args: Vec<Bytes>,
    },
    /// Several write commands of one client's pipeline, applied in order
    /// as one entry; the reply is a RESP3 array of their replies.
    Batch {
        /// Logical database.
        db: u8,
        /// Leader's clock, milliseconds since the epoch.
        at_ms: u64,
        /// The commands.
        cmds: Vec<Vec<Bytes>>,
    },
    /// A new cluster layout (metadata group only).
    Layout(ClusterMeta),
    /// Write commands from different clients, gathered into one entry
    /// while the previous entries of the shard were being replicated;
    /// applied in order. The reply frames each command's RESP3 reply with
    /// its length (`u32` little-endian), see [`split_replies`].
    Group {
        /// Leader's clock, milliseconds since the epoch.
        at_ms: u64,
        /// Each command with its logical database.
        cmds: Vec<(u8, Vec<Bytes>)>,
    },
}

/// Frames the replies of a [`Request::Group`] entry.
pub fn join_replies(replies: impl IntoIterator<Item = Bytes>) -> Bytes {
    let mut out = Vec::new();
    for r in replies {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(&r);
    }
    Bytes::from(out)
}

/// The replies framed by [`join_replies`]; None if `framed` is malformed.
pub fn split_replies(framed: &Bytes) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < framed.len() {
        let len = u32::from_le_bytes(framed.get(pos..pos + 4)?.try_into().ok()?) as usize;
        let end = (pos + 4).checked_add(len).filter(|&e| e <= framed.len())?;
        out.push(framed.slice(pos + 4..end));
        pos = end;
    }
    Some(out)
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Command { args, .. } => write!(
                f,
                "{}",
                args.first()
                    .map_or_else(String::new, |a| String::from_utf8_lossy(a).into_owned())
            ),
            Request::Batch { cmds, .. } => write!(f, "{} pipelined commands", cmds.len()),
            Request::Layout(m) => write!(f, "layout epoch {}", m.epoch),
            Request::Group { cmds, .. } => write!(f, "{} grouped commands", cmds.len()),
        }
    }
}

/// One shard: a range of slots and the nodes that replicate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Raft group id (1-based).
    pub group: u32,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
    /// Replica node ids; the first bootstraps the group.
    pub replicas: Vec<u64>,
}

impl ShardInfo {
    /// Whether `slot` belongs to this shard.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// The cluster's metadata: the state of the metadata Raft group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Bumped by every layout change (seed 003's `generationId`).
    pub epoch: u64,
    /// Replicas per shard.
    pub replicas: usize,
    /// Members by node id.
    pub nodes: BTreeMap<u64, PeerNode>,
    /// Shards, in slot order.
    pub shards: Vec<ShardInfo>,
}

impl ClusterMeta {
    /// The first layout of a new cluster: one shard per node, slots split
    /// evenly, each shard replicated on `replicas` consecutive nodes so
    /// every node bootstraps (and usually leads) one shard.
    pub fn initial(nodes: BTreeMap<u64, PeerNode>, replicas: usize) -> ClusterMeta {
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let n = ids.len().max(1);
        let replicas = replicas.clamp(1, n);
        let per = usize::from(SLOTS) / n;
        let shards = (0..n)
            .map(|i| {
                let start = (i * per) as u16;
                let end = if i + 1 == n {
                    SLOTS - 1
                } else {
                    ((i + 1) * per - 1) as u16
                };
                ShardInfo {
                    group: i as u32 + 1,
                    slots: vec![(start, end)],
                    replicas: (0..replicas).map(|r| ids[(i + r) % n]).collect(),
                }
            })
            .collect();
        ClusterMeta {
            epoch: 1,
            replicas,
            nodes,
            shards,
        }
    }

    /// The shard that owns `slot`.
    pub fn shard_of(&self, slot: u16) -> Option<&ShardInfo> {
        self.shards.iter().find(|s| s.owns(slot))
    }
}

/// A message between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft AppendEntries for a group.
    Append(u32, openraft::raft::AppendEntriesRequest<RaftTypes>),
    /// Raft RequestVote for a group.
    Vote(u32, openraft::raft::VoteRequest<u64>),
    /// A chunk of a Raft snapshot for a group.
    Snapshot(u32, openraft::raft::InstallSnapshotRequest<RaftTypes>),
    /// A client command for a shard this node doesn't lead, forwarded to
    /// the leader, which answers as if the client had asked it.
    Forward {
        /// Logical database.
        db: u8,
        /// The command.
        args: Vec<Bytes>,
        /// Whether the answer should name the replicas that hold the write.
        holders: bool,
    },
    /// A liveness probe; answered with an empty message.
    Ping,
}

/// A forwarded command's answer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ForwardReply {
    /// The RESP3-encoded reply.
    pub reply: Bytes,
    /// For a write, when asked: the replicas that had it in their log
    /// when it was acknowledged.
    pub holders: Option<Vec<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_layout_covers_every_slot_once() {
        let nodes: BTreeMap<u64, PeerNode> =
            (1..=3).map(|i| (i * 10, PeerNode::default())).collect();
        let meta = ClusterMeta::initial(nodes, 3);
        assert_eq!(meta.shards.len(), 3);
        for slot in 0..SLOTS {
            assert_eq!(
                meta.shards.iter().filter(|s| s.owns(slot)).count(),
                1,
                "slot {slot}"
            );
        }
        let firsts: Vec<u64> = meta.shards.iter().map(|s| s.replicas[0]).collect();
        assert_eq!(firsts, vec![10, 20, 30]);
        assert!(meta.shards.iter().all(|s| s.replicas.len() == 3));
        let one = ClusterMeta::initial([(5, PeerNode::default())].into(), 3);
        assert_eq!(one.shards[0].slots, vec![(0, SLOTS - 1)]);
        assert_eq!(one.shards[0].replicas, vec![5]);
    }
}
