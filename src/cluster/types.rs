//! The cluster's data types: what Raft replicates, who the members are,
//! and how slots are laid out over shards.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Nodes being added to the group: they run it and receive its log
    /// (or a snapshot) as Raft learners, and become replicas once caught
    /// up. A learner never bootstraps the group.
    pub learners: Vec<u64>,
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
    /// Replica moves still to make, in order (join, leave, rebalance).
    pub moves: Vec<Move>,
    /// Members being removed: their replicas are moved away first.
    pub leaving: Vec<u64>,
    /// Moves planned and done since the cluster was created.
    pub moves_planned: u64,
    /// Moves finished since the cluster was created.
    pub moves_done: u64,
}

/// One replica of a shard moving from one node to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The shard's group.
    pub group: u32,
    /// The node giving the replica up.
    pub from: u64,
    /// The node receiving it.
    pub to: u64,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shard {}: replica from {:016x} to {:016x}",
            self.group, self.from, self.to
        )
    }
}

impl ClusterMeta {
    /// The first layout of a new cluster: `shards` shards (at least one
    /// per node), slots split evenly, each shard replicated on `replicas`
    /// consecutive nodes so every node bootstraps (and usually leads) as
    /// many shards as the others. More shards than nodes lets a grown
    /// cluster spread its shards over more machines.
    pub fn initial(nodes: BTreeMap<u64, PeerNode>, replicas: usize, shards: usize) -> ClusterMeta {
        let ids: Vec<u64> = nodes.keys().copied().collect();
        let n = ids.len().max(1);
        let replicas = replicas.clamp(1, n);
        let count = shards.clamp(n, usize::from(SLOTS));
        let per = usize::from(SLOTS) / count;
        let shards = (0..count)
            .map(|i| {
                let start = (i * per) as u16;
                let end = if i + 1 == count {
                    SLOTS - 1
                } else {
                    ((i + 1) * per - 1) as u16
                };
                ShardInfo {
                    group: i as u32 + 1,
                    slots: vec![(start, end)],
                    replicas: (0..replicas).map(|r| ids[(i + r) % n]).collect(),
                    learners: Vec::new(),
                }
            })
            .collect();
        ClusterMeta {
            epoch: 1,
            replicas,
            nodes,
            shards,
            ..ClusterMeta::default()
        }
    }

    /// Each shard's replicas once the planned moves are made.
    fn placed(&self) -> BTreeMap<u32, Vec<u64>> {
        let mut placed: BTreeMap<u32, Vec<u64>> = self
            .shards
            .iter()
            .map(|s| (s.group, s.replicas.clone()))
            .collect();
        for m in &self.moves {
            if let Some(r) = placed.get_mut(&m.group) {
                r.retain(|&id| id != m.from);
                r.push(m.to);
            }
        }
        placed
    }

    /// The shards each member holds, counting moves still to make as
    /// made; members being removed are left out.
    fn load_after_moves(&self) -> BTreeMap<u64, BTreeSet<u32>> {
        let mut held: BTreeMap<u64, BTreeSet<u32>> = self
            .nodes
            .keys()
            .filter(|id| !self.leaving.contains(id))
            .map(|id| (*id, BTreeSet::new()))
            .collect();
        for (group, replicas) in self.placed() {
            for id in replicas {
                if let Some(h) = held.get_mut(&id) {
                    h.insert(group);
                }
            }
        }
        held
    }

    /// The moves that even out how many shard replicas each member holds
    /// (to within one), after the moves already planned: each takes a
    /// replica from the fullest member to the emptiest one that doesn't
    /// hold that shard, so a new member receives about 1/N of the data and
    /// nothing else moves. A replica that leads its shard (in `leaders`)
    /// is moved only when no other will do, so fewer shards change leader.
    pub fn plan_balance(&self, leaders: &BTreeMap<u32, u64>) -> Vec<Move> {
        let mut held = self.load_after_moves();
        let mut out = Vec::new();
        let limit = self.shards.len() * self.replicas.max(1);
        while out.len() < limit {
            let Some((&full, _)) = held
                .iter()
                .max_by_key(|(id, h)| (h.len(), std::cmp::Reverse(**id)))
            else {
                break;
            };
            let Some((&empty, _)) = held.iter().min_by_key(|(id, h)| (h.len(), **id)) else {
                break;
            };
            if held[&full].len() <= held[&empty].len() + 1 {
                break;
            }
            let movable = || held[&full].iter().filter(|g| !held[&empty].contains(g));
            let Some(&group) = movable()
                .find(|g| leaders.get(g) != Some(&full))
                .or_else(|| movable().next())
            else {
                break;
            };
            held.get_mut(&full).map(|h| h.remove(&group));
            held.get_mut(&empty).map(|h| h.insert(group));
            out.push(Move {
                group,
                from: full,
                to: empty,
            });
        }
        out
    }

    /// Leadership transfers `(group, from, to)` that even out how many
    /// shards each member leads (to within one): each hands a shard from
    /// the member leading the most to the replica of that shard leading the
    /// fewest. Only shards whose replicas are settled (no move planned)
    /// take part, and members being removed receive none.
    pub fn plan_leaders(&self, leaders: &BTreeMap<u32, u64>) -> Vec<(u32, u64, u64)> {
        let moving: BTreeSet<u32> = self.moves.iter().map(|m| m.group).collect();
        let mut led: BTreeMap<u64, BTreeSet<u32>> = self
            .nodes
            .keys()
            .filter(|id| !self.leaving.contains(id))
            .map(|id| (*id, BTreeSet::new()))
            .collect();
        for (&group, &leader) in leaders {
            if let Some(l) = led.get_mut(&leader) {
                l.insert(group);
            }
        }
        let replicas_of = |g: u32| {
            self.shards
                .iter()
                .find(|s| s.group == g)
                .map(|s| s.replicas.clone())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        for _ in 0..self.shards.len() {
            let Some((&most, _)) = led
                .iter()
                .max_by_key(|(id, l)| (l.len(), std::cmp::Reverse(**id)))
            else {
                break;
            };
            // The transfer that gives a shard of `most` to the replica of
            // it that leads the fewest, if that evens things out.
            let best = led[&most]
                .iter()
                .filter(|g| !moving.contains(g))
                .flat_map(|&g| replicas_of(g).into_iter().map(move |r| (g, r)))
                .filter_map(|(g, r)| Some((led.get(&r)?.len(), r, g)))
                .filter(|&(n, r, _)| r != most && n + 1 < led[&most].len())
                .min();
            let Some((_, to, group)) = best else {
                break;
            };
            led.get_mut(&most).map(|l| l.remove(&group));
            led.get_mut(&to).map(|l| l.insert(group));
            out.push((group, most, to));
        }
        out
    }

    /// Appends `moves` to the plan.
    pub fn schedule(&mut self, moves: Vec<Move>) {
        self.moves_planned += moves.len() as u64;
        self.moves.extend(moves);
    }

    /// Marks member `id` as leaving and plans the moves of its replicas.
    pub fn start_leaving(&mut self, id: u64) -> Result<(), String> {
        self.leaving.push(id);
        let moves = self.plan_leave(id)?;
        self.schedule(moves);
        Ok(())
    }

    /// The moves that take every replica off member `id` (already marked
    /// as leaving), each to the emptiest remaining member without that
    /// shard; an error if some shard has nowhere to go.
    pub fn plan_leave(&self, id: u64) -> Result<Vec<Move>, String> {
        let mut held = self.load_after_moves();
        let mut out = Vec::new();
        for (group, replicas) in self.placed() {
            if !replicas.contains(&id) {
                continue;
            }
            let target = held
                .iter()
                .filter(|(n, h)| **n != id && !h.contains(&group))
                .min_by_key(|(n, h)| (h.len(), **n))
                .map(|(n, _)| *n);
            let Some(to) = target else {
                return Err(format!(
                    "removing node {id:016x} would leave shard {group} with {} of its {} replicas: no other member can take it; add a node first",
                    replicas.len() - 1,
                    replicas.len()
                ));
            };
            held.get_mut(&to).map(|h| h.insert(group));
            out.push(Move {
                group,
                from: id,
                to,
            });
        }
        Ok(out)
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
    /// To a shard's leader: bring `add` (if any) up to date as a learner,
    /// then make `voters` the group's voters, removing every other member.
    Reconfigure {
        /// The shard's group.
        group: u32,
        /// The node to add, and where it is reached.
        add: Option<(u64, PeerNode)>,
        /// The voters the group should end with.
        voters: BTreeSet<u64>,
    },
    /// A membership change of the cluster, for the metadata leader.
    Admin(Admin),
    /// To a shard's leader: hand the shard to replica `to`.
    HandOff {
        /// The shard's group.
        group: u32,
        /// The replica to lead it.
        to: u64,
    },
    /// From a shard's leader handing the shard over: stand for election.
    Elect {
        /// The shard's group.
        group: u32,
    },
    /// To a shard's leader: the sender caches these keys; read them under
    /// a lease (answered with a `CacheRead` per key).
    CacheFetch {
        /// The shard's group.
        group: u32,
        /// Logical database.
        db: u8,
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// A shard's dump for a backup, from its leader.
    Dump(super::backup::DumpRequest),
    /// From a shard's leader to a node caching its keys: these changed.
    CacheDrop {
        /// Logical database.
        db: u8,
        /// The keys.
        keys: Vec<Bytes>,
    },
}

/// A change to the cluster's members, carried out by the metadata leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Admin {
    /// Add a member and move about 1/N of the shard replicas to it.
    AddNode(u64, PeerNode),
    /// Move every replica off a member, then remove it.
    RemoveNode(u64),
    /// Even out the replicas over the members.
    Rebalance,
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
        let meta = ClusterMeta::initial(nodes, 3, 0);
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
        let one = ClusterMeta::initial([(5, PeerNode::default())].into(), 3, 1);
        assert_eq!(one.shards[0].slots, vec![(0, SLOTS - 1)]);
        assert_eq!(one.shards[0].replicas, vec![5]);
    }

    fn members(n: u64) -> BTreeMap<u64, PeerNode> {
        (1..=n).map(|i| (i, PeerNode::default())).collect()
    }

    fn apply(meta: &mut ClusterMeta, moves: &[Move]) {
        for m in moves {
            let shard = meta
                .shards
                .iter_mut()
                .find(|s| s.group == m.group)
                .expect("shard");
            assert!(shard.replicas.contains(&m.from), "{m}: not a replica");
            assert!(!shard.replicas.contains(&m.to), "{m}: already a replica");
            shard.replicas.retain(|&i| i != m.from);
            shard.replicas.push(m.to);
        }
    }

    fn counts(meta: &ClusterMeta) -> BTreeMap<u64, usize> {
        let mut c: BTreeMap<u64, usize> = meta.nodes.keys().map(|&i| (i, 0)).collect();
        for s in &meta.shards {
            for r in &s.replicas {
                *c.entry(*r).or_default() += 1;
            }
        }
        c
    }

    #[test]
    fn leadership_evens_out_over_the_replicas_of_each_shard() {
        // Six shards on three nodes, all led by node 1.
        let mut meta = ClusterMeta::initial(members(3), 3, 6);
        let mut leaders: BTreeMap<u32, u64> = meta.shards.iter().map(|s| (s.group, 1)).collect();
        let plan = meta.plan_leaders(&leaders);
        assert_eq!(plan.len(), 4, "{plan:?}");
        for &(g, from, to) in &plan {
            assert_eq!(leaders.insert(g, to), Some(from));
        }
        let mut led: BTreeMap<u64, usize> = BTreeMap::new();
        for l in leaders.values() {
            *led.entry(*l).or_default() += 1;
        }
        assert_eq!(led.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert!(meta.plan_leaders(&leaders).is_empty());

        // A leaving member and a shard being moved take no part; a shard
        // goes only to one of its own replicas.
        meta.leaving.push(3);
        meta.moves.push(Move {
            group: 1,
            from: 2,
            to: 3,
        });
        let all_one: BTreeMap<u32, u64> = meta.shards.iter().map(|s| (s.group, 1)).collect();
        let plan = meta.plan_leaders(&all_one);
        assert!(plan.iter().all(|&(g, _, to)| g != 1 && to == 2), "{plan:?}");
        assert_eq!(plan.len(), 3, "{plan:?}");
        for s in &mut meta.shards {
            s.replicas.retain(|&r| r == 1);
        }
        assert!(meta.plan_leaders(&all_one).is_empty());
    }

    #[test]
    fn a_joining_node_receives_about_one_nth_and_only_it_does() {
        let mut meta = ClusterMeta::initial(members(3), 3, 12);
        meta.nodes.insert(4, PeerNode::default());
        let moves = meta.plan_balance(&BTreeMap::new());
        // 36 replicas over 4 nodes: 9 each, all moved to the new node.
        assert_eq!(moves.len(), 9);
        assert!(moves.iter().all(|m| m.to == 4));
        apply(&mut meta, &moves);
        assert!(
            counts(&meta).values().all(|&c| c == 9),
            "{:?}",
            counts(&meta)
        );
        assert!(meta.plan_balance(&BTreeMap::new()).is_empty());
        // One shard per node, three replicas: the new node takes two.
        let mut small = ClusterMeta::initial(members(3), 3, 0);
        small.nodes.insert(4, PeerNode::default());
        let leaders: BTreeMap<u32, u64> = small
            .shards
            .iter()
            .map(|s| (s.group, s.replicas[0]))
            .collect();
        let moves = small.plan_balance(&leaders);
        assert_eq!(moves.len(), 2);
        assert!(
            moves.iter().all(|m| leaders[&m.group] != m.from),
            "a leader moved: {moves:?}"
        );
        apply(&mut small, &moves);
        assert_eq!(counts(&small)[&4], 2);
    }

    #[test]
    fn a_leaving_node_hands_every_replica_to_a_node_without_it() {
        let mut meta = ClusterMeta::initial(members(4), 3, 8);
        meta.leaving.push(2);
        let moves = meta.plan_leave(2).expect("room");
        assert_eq!(moves.len(), counts(&meta)[&2]);
        apply(&mut meta, &moves);
        assert_eq!(counts(&meta)[&2], 0);
        assert!(meta.shards.iter().all(|s| s.replicas.len() == 3));
        // Three nodes, three replicas: nowhere to go.
        let mut full = ClusterMeta::initial(members(3), 3, 0);
        full.leaving.push(1);
        let e = full.plan_leave(1).expect_err("no room");
        assert!(e.contains("add a node first"), "{e}");
        // Pending moves are taken into account.
        let mut meta = ClusterMeta::initial(members(3), 2, 6);
        meta.nodes.insert(4, PeerNode::default());
        meta.moves = meta.plan_balance(&BTreeMap::new());
        let before = meta.moves.len();
        meta.leaving.push(4);
        let away = meta.plan_leave(4).expect("room");
        assert_eq!(
            away.len(),
            before,
            "every replica planned onto 4 leaves it again"
        );
    }
}
