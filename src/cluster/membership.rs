//! Growing and shrinking a running cluster: members join and leave, and
//! shard replicas move between them by Raft membership changes while the
//! shards keep serving.
//!
//! ```text
//! add-node / remove-node / rebalance ─> metadata leader: plan moves into the layout
//! metadata leader, one move at a time:
//!   layout: the receiving node joins the shard as a learner ─> it starts the group
//!   shard leader: add learner, wait until it has caught up, make it a voter and drop the giver
//!   layout: the move is done ─> the giver stops the group and drops its copy
//! ```
//!
//! The plan lives in the replicated layout, so a new metadata leader
//! carries on where the last one stopped; every step can be repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};

use super::state_machine::{forget_shard, holds_data};
use super::types::{Admin, ClusterMeta, Move, PeerNode, PeerRequest, Request, META_GROUP};
use super::{Cluster, ClusterError};

/// How often the metadata leader works on planned moves.
pub(super) const MOVE_EVERY: Duration = Duration::from_millis(300);

/// A learner that gains no log entries for this long fails its move,
/// which is tried again.
const CATCHUP_STALL: Duration = Duration::from_secs(60);

/// Longest a single replica move may take before the metadata leader
/// asks again.
const MOVE_WAIT: Duration = Duration::from_secs(3600);

/// How many times evening out the leaderships is tried after a plan.
const LEADER_TRIES: u32 = 5;

/// How long an admin request forwarded to the metadata leader may take.
const ADMIN_WAIT: Duration = Duration::from_secs(60);

/// Where a membership change stands, for `CLUSTER INFO` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct MoveStatus {
    /// Moves planned since the cluster was created.
    pub planned: u64,
    /// Moves finished.
    pub done: u64,
    /// Moves still to make.
    pub pending: usize,
    /// The move being made, if any.
    pub current: Option<Move>,
    /// Members being removed.
    pub leaving: Vec<u64>,
}

impl Cluster {
    /// Carries out a membership change on the metadata leader (forwarding
    /// it there from any member); returns what was planned.
    pub async fn admin(&self, req: Admin) -> Result<String, ClusterError> {
        if self.layout.borrow().shards.is_empty() {
            return Err(ClusterError::NotCreated);
        }
        if !self.is_leader(META_GROUP) {
            return self.admin_on_leader(req).await;
        }
        match req {
            Admin::AddNode(id, node) => self.add_node(id, node).await,
            Admin::RemoveNode(id) => self.remove_node(id).await,
            Admin::Rebalance => self.rebalance().await,
        }
    }

    async fn admin_on_leader(&self, req: Admin) -> Result<String, ClusterError> {
        let leader = self
            .meta_leader()
            .and_then(|id| self.layout.borrow().nodes.get(&id).cloned())
            .ok_or_else(|| ClusterError::Peer("the metadata group has no leader".into()))?;
        let msg = bincode::serialize(&PeerRequest::Admin(req))
            .map_err(|e| ClusterError::Peer(e.to_string()))?;
        let answer = self
            .peers
            .call(&leader.cluster, &msg, ADMIN_WAIT)
            .await
            .map_err(|e| ClusterError::Peer(e.to_string()))?;
        let r: Result<String, String> = bincode::deserialize(&answer)
            .map_err(|e| ClusterError::Peer(format!("malformed admin reply: {e}")))?;
        r.map_err(ClusterError::Admin)
    }

    /// Changes the layout on the metadata leader: `f` edits a copy of the
    /// current one, which is replicated with the next epoch.
    pub(super) async fn update_layout(
        &self,
        f: impl FnOnce(&mut ClusterMeta) -> Result<(), String>,
    ) -> Result<ClusterMeta, ClusterError> {
        let _one_at_a_time = self.layout_lock.lock().await;
        if !self.is_leader(META_GROUP) {
            return Err(ClusterError::NotLeader {
                group: META_GROUP,
                leader: None,
            });
        }
        // Everything committed is applied here, so the copy is current.
        self.meta
            .ensure_linearizable()
            .await
            .map_err(|e| ClusterError::Peer(e.to_string()))?;
        let mut next = self.layout.borrow().clone();
        f(&mut next).map_err(ClusterError::Admin)?;
        next.epoch += 1;
        tokio::time::timeout(
            super::QUORUM_WAIT,
            self.meta.client_write(Request::Layout(next.clone())),
        )
        .await
        .map_err(|_| ClusterError::InFlight { group: META_GROUP })?
        .map_err(|e| ClusterError::Peer(e.to_string()))?;
        Ok(next)
    }

    /// The leader of each shard, as far as this node knows.
    pub(super) fn leaders(&self) -> BTreeMap<u32, u64> {
        let shards = self.layout.borrow().shards.clone();
        shards
            .iter()
            .filter_map(|s| Some((s.group, self.leader_of(s)?.0)))
            .collect()
    }

    async fn add_node(&self, id: u64, node: PeerNode) -> Result<String, ClusterError> {
        if let Some(known) = self.layout.borrow().nodes.get(&id) {
            return if *known == node {
                Ok(format!("node {id:016x} is already a member"))
            } else {
                Err(ClusterError::Admin(format!(
                    "node {id:016x} is already a member at {known}"
                )))
            };
        }
        let ping = bincode::serialize(&PeerRequest::Ping)
            .map_err(|e| ClusterError::Peer(e.to_string()))?;
        self.peers
            .call(&node.cluster, &ping, Duration::from_secs(5))
            .await
            .map_err(|e| {
                ClusterError::Admin(format!("can't reach the new node at {}: {e}", node.cluster))
            })?;
        let leaders = self.leaders();
        let layout = self
            .update_layout(|m| {
                if m.nodes.values().any(|n| n.cluster == node.cluster) {
                    return Err(format!("{} is already a member's address", node.cluster));
                }
                m.nodes.insert(id, node.clone());
                let moves = m.plan_balance(&leaders);
                m.schedule(moves);
                Ok(())
            })
            .await?;
        let to_it = layout.moves.iter().filter(|m| m.to == id).count();
        Ok(format!(
            "node {id:016x} added at epoch {}; {to_it} shard replicas will move to it",
            layout.epoch
        ))
    }

    async fn remove_node(&self, id: u64) -> Result<String, ClusterError> {
        let layout = self
            .update_layout(|m| {
                if !m.nodes.contains_key(&id) {
                    return Err(format!("no member {id:016x}"));
                }
                if m.leaving.contains(&id) {
                    return Ok(());
                }
                if m.nodes.len() - m.leaving.len() <= 1 {
                    return Err("can't remove the last member".into());
                }
                m.start_leaving(id)
            })
            .await?;
        let off = layout.moves.iter().filter(|m| m.from == id).count();
        Ok(format!(
            "node {id:016x} is leaving at epoch {}; {off} shard replicas will move off it first",
            layout.epoch
        ))
    }

    /// Evens out the replicas over the members; once they are even (now,
    /// or when the planned moves are done), the leaderships too.
    async fn rebalance(&self) -> Result<String, ClusterError> {
        let leaders = self.leaders();
        let layout = self
            .update_layout(|m| {
                let moves = m.plan_balance(&leaders);
                m.schedule(moves);
                Ok(())
            })
            .await?;
        if !layout.moves.is_empty() || !layout.leaving.is_empty() {
            self.leaders_unsettled.store(true, Ordering::Relaxed);
            return Ok(format!(
                "{} shard replica moves pending at epoch {}; leaderships are evened out after them",
                layout.moves.len(),
                layout.epoch
            ));
        }
        let handed = self.balance_leaders().await.map_err(ClusterError::Admin)?;
        Ok(format!(
            "0 shard replica moves pending at epoch {}; {handed} shard leaderships moved",
            layout.epoch
        ))
    }

    /// Where membership changes stand.
    pub fn move_status(&self) -> MoveStatus {
        let m = self.layout.borrow();
        MoveStatus {
            planned: m.moves_planned,
            done: m.moves_done,
            pending: m.moves.len(),
            current: m.moves.first().copied(),
            leaving: m.leaving.clone(),
        }
    }

    /// Whether the layout lists this node (false once it was removed, or
    /// before it joined).
    pub fn is_member(&self) -> bool {
        !self.removed.load(Ordering::Relaxed) && self.layout.borrow().nodes.contains_key(&self.id)
    }

    /// Whether this node was removed from the cluster it belonged to.
    pub fn was_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Records that this node is no longer a member (the layout at `epoch`
    /// doesn't list it): it stops serving and drops its copies, and
    /// remembers that across restarts.
    pub(super) async fn mark_removed(&self, epoch: u64) {
        if self.removed.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(
            epoch,
            "this node was removed from the cluster; it stops serving and drops its data"
        );
        if let Err(e) = std::fs::write(&self.removed_file, format!("{epoch}\n")) {
            tracing::error!(error = %e, "recording the removal failed");
        }
        let layout = self.layout.borrow().clone();
        self.retire_groups(&layout).await;
    }

    /// A probe's answer from a member: a newer layout without this node
    /// means it was removed while it was away.
    pub(super) async fn heard_removed(&self, answer: &[u8]) {
        let Ok(Some(epoch)) = bincode::deserialize::<Option<u64>>(answer) else {
            return;
        };
        if epoch > self.layout.borrow().epoch {
            self.mark_removed(epoch).await;
        }
    }

    /// Replaces a member that has been unreachable for longer than
    /// `node_down_after`: its replicas are rebuilt on the others, then it
    /// is removed. One at a time, and only with nothing else moving.
    async fn replace_down_members(&self) {
        let Some(after) = self.down_after else {
            return;
        };
        let layout = self.layout.borrow().clone();
        if !layout.moves.is_empty() || !layout.leaving.is_empty() {
            return;
        }
        let down = layout.nodes.keys().copied().find(|&id| {
            let last = self.seen.read().get(&id).copied().unwrap_or(self.started);
            id != self.id && last.elapsed() > after
        });
        let Some(id) = down else {
            return;
        };
        // A shard that lost its majority can't change its membership (nor
        // copy itself anywhere): nothing is planned until it recovers.
        let stuck = layout.shards.iter().find(|s| {
            s.replicas.contains(&id)
                && s.replicas.iter().filter(|&&r| self.is_up(r)).count() * 2 <= s.replicas.len()
        });
        if let Some(s) = stuck {
            if self.down_refused.swap(id, Ordering::Relaxed) != id {
                tracing::warn!(
                    node = %format!("{id:016x}"),
                    group = s.group,
                    "a member is down, but a shard it replicates has no majority left to rebuild it from"
                );
            }
            return;
        }
        let planned = self.update_layout(|m| m.start_leaving(id)).await;
        match planned {
            Ok(l) => tracing::warn!(
                node = %format!("{id:016x}"),
                moves = l.moves.len(),
                "member down for longer than node_down_after: rebuilding its replicas elsewhere"
            ),
            Err(e) => {
                if self.down_refused.swap(id, Ordering::Relaxed) != id {
                    tracing::warn!(node = %format!("{id:016x}"), error = %e, "a member is down but can't be replaced");
                }
            }
        }
    }

    /// One step of the metadata leader's work: keep the metadata group's
    /// voters equal to the members, make the next planned move, or finish
    /// removing a member whose replicas are all gone.
    pub(super) async fn drive_membership(&self) {
        if !self.is_leader(META_GROUP) {
            return;
        }
        if let Err(e) = self.reconcile_meta_voters().await {
            tracing::warn!(error = %e, "changing the metadata group's voters failed; retrying");
            return;
        }
        self.replace_down_members().await;
        let layout = self.layout.borrow().clone();
        if let Some(mv) = layout.moves.first().copied() {
            self.leaders_unsettled.store(true, Ordering::Relaxed);
            self.leader_retries.store(0, Ordering::Relaxed);
            if let Err(e) = self.make_move(&layout, mv).await {
                tracing::warn!(%mv, error = %e, "replica move failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            return;
        }
        for &id in &layout.leaving {
            let holds = layout
                .shards
                .iter()
                .any(|s| s.replicas.contains(&id) || s.learners.contains(&id));
            if holds {
                continue;
            }
            let done = self
                .update_layout(|m| {
                    m.nodes.remove(&id);
                    m.leaving.retain(|&x| x != id);
                    Ok(())
                })
                .await;
            match done {
                Ok(l) => {
                    tracing::info!(node = %format!("{id:016x}"), epoch = l.epoch, "member removed")
                }
                Err(e) => tracing::warn!(error = %e, "removing a member failed; retrying"),
            }
        }
        // Replicas are where the plan put them: even out the leaderships.
        if layout.leaving.is_empty() && self.leaders_unsettled.swap(false, Ordering::Relaxed) {
            match self.balance_leaders().await {
                Ok(handed) => {
                    self.leader_retries.store(0, Ordering::Relaxed);
                    tracing::info!(handed, "shard leaderships evened out");
                }
                Err(e) => {
                    // Most often a leader this node knew of had already
                    // changed: look again shortly, a few times.
                    let tries = self.leader_retries.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(error = %e, tries, "evening out shard leaderships failed");
                    if tries < LEADER_TRIES {
                        self.leaders_unsettled.store(true, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Makes the metadata group's voters the cluster's members: a new
    /// member first catches up as a learner.
    async fn reconcile_meta_voters(&self) -> Result<(), String> {
        let nodes = self.layout.borrow().nodes.clone();
        let voters: BTreeSet<u64> = self
            .meta
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let wanted: BTreeSet<u64> = nodes.keys().copied().collect();
        if voters == wanted || wanted.is_empty() {
            return Ok(());
        }
        for id in wanted.difference(&voters) {
            let node = nodes[id].clone();
            tokio::time::timeout(
                Duration::from_secs(30),
                self.meta.add_learner(*id, node, true),
            )
            .await
            .map_err(|_| format!("node {id:016x} did not catch up with the metadata log"))?
            .map_err(|e| e.to_string())?;
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            self.meta.change_membership(wanted.clone(), false),
        )
        .await
        .map_err(|_| "the metadata group's membership change timed out".to_string())?
        .map_err(|e| e.to_string())?;
        tracing::info!(voters = ?wanted, "metadata group voters changed");
        Ok(())
    }

    /// Moves one replica: the receiver joins as a learner, the shard's
    /// leader brings it up to date and swaps it in for the giver, and the
    /// layout records the result.
    async fn make_move(&self, layout: &ClusterMeta, mv: Move) -> Result<(), String> {
        let shard = layout
            .shards
            .iter()
            .find(|s| s.group == mv.group)
            .cloned()
            .ok_or_else(|| format!("no shard {}", mv.group))?;
        let node = layout
            .nodes
            .get(&mv.to)
            .cloned()
            .ok_or_else(|| format!("no member {:016x}", mv.to))?;
        let finished = !shard.replicas.contains(&mv.from) && shard.replicas.contains(&mv.to);
        if !finished {
            if !shard.learners.contains(&mv.to) && !shard.replicas.contains(&mv.to) {
                self.update_layout(|m| {
                    if let Some(s) = m.shards.iter_mut().find(|s| s.group == mv.group) {
                        s.learners.push(mv.to);
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())?;
            }
            let voters: BTreeSet<u64> = shard
                .replicas
                .iter()
                .copied()
                .filter(|&id| id != mv.from)
                .chain([mv.to])
                .collect();
            let req = PeerRequest::Reconfigure {
                group: mv.group,
                add: Some((mv.to, node)),
                voters,
            };
            self.to_shard_leader(&shard, &req).await?;
        }
        self.update_layout(|m| {
            if let Some(s) = m.shards.iter_mut().find(|s| s.group == mv.group) {
                s.replicas.retain(|&id| id != mv.from);
                if !s.replicas.contains(&mv.to) {
                    s.replicas.push(mv.to);
                }
                s.learners.retain(|&id| id != mv.to);
            }
            if let Some(i) = m.moves.iter().position(|x| *x == mv) {
                m.moves.remove(i);
                m.moves_done += 1;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(%mv, "replica moved");
        Ok(())
    }

    /// Sends `req` to the shard's leader, trying its replicas in turn.
    async fn to_shard_leader(
        &self,
        shard: &super::ShardInfo,
        req: &PeerRequest,
    ) -> Result<(), String> {
        let msg = bincode::serialize(req).map_err(|e| e.to_string())?;
        let mut last = String::from("no replica answered");
        for id in self.replicas_leader_first(shard) {
            let r = if id == self.id {
                let PeerRequest::Reconfigure { group, add, voters } = req else {
                    unreachable!("only reconfigurations go to shard leaders")
                };
                self.reconfigure(*group, add.clone(), voters.clone()).await
            } else {
                let Some(node) = self.layout.borrow().nodes.get(&id).cloned() else {
                    continue;
                };
                match self.peers.call(&node.cluster, &msg, MOVE_WAIT).await {
                    Ok(answer) => bincode::deserialize::<Result<(), String>>(&answer)
                        .unwrap_or_else(|e| Err(format!("malformed reply: {e}"))),
                    Err(e) => Err(e.to_string()),
                }
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{id:016x}: {e}"),
            }
        }
        Err(last)
    }

    /// As `group`'s leader: brings `add` up to date as a learner, then
    /// makes `voters` the group's voters (a joint consensus change, so a
    /// majority of both the old and the new voters agrees at every step).
    pub(super) async fn reconfigure(
        &self,
        group: u32,
        add: Option<(u64, PeerNode)>,
        voters: BTreeSet<u64>,
    ) -> Result<(), String> {
        let raft = self
            .raft_of(group)
            .ok_or_else(|| format!("shard {group} is not replicated here"))?;
        if !self.is_leader(group) {
            return Err(format!("not the leader of shard {group}"));
        }
        let current: BTreeSet<u64> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if current == voters {
            return Ok(());
        }
        // A leader that leaves the group hands it over first: removed while
        // leading, it would step down with client writes in flight.
        if !voters.contains(&self.id) {
            let successors: BTreeSet<u64> = current.intersection(&voters).copied().collect();
            let to = self.hand_off(group, &raft, &successors).await?;
            return Err(format!(
                "handed the leadership of shard {group} to {to:016x}; ask it"
            ));
        }
        if let Some((id, node)) = add.filter(|(id, _)| !current.contains(id)) {
            raft.add_learner(id, node, false)
                .await
                .map_err(|e| write_error(group, e))?;
            self.wait_caught_up(group, &raft, id).await?;
        }
        raft.change_membership(voters, false)
            .await
            .map_err(|e| write_error(group, e))?;
        Ok(())
    }

    /// Waits until learner `id` has every entry the leader had when the
    /// wait began; gives up if it gains nothing for [`CATCHUP_STALL`].
    async fn wait_caught_up(
        &self,
        group: u32,
        raft: &openraft::Raft<super::RaftTypes>,
        id: u64,
    ) -> Result<(), String> {
        let matched = |raft: &openraft::Raft<super::RaftTypes>| {
            let m = raft.metrics();
            let m = m.borrow();
            let have = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .map(|l| l.index);
            (have, m.last_log_index.unwrap_or(0), m.state)
        };
        let target = matched(raft).1;
        let mut best = None;
        let mut progressed = Instant::now();
        loop {
            let (have, _, state) = matched(raft);
            if state != openraft::ServerState::Leader {
                return Err(format!("lost the leadership of shard {group}"));
            }
            if have.is_some_and(|h| h >= target) {
                return Ok(());
            }
            if have > best {
                best = have;
                progressed = Instant::now();
            } else if progressed.elapsed() > CATCHUP_STALL {
                return Err(format!(
                    "node {id:016x} made no progress catching up with shard {group} for {} s",
                    CATCHUP_STALL.as_secs()
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = self.stop.cancelled() => return Err("node is shutting down".into()),
            }
        }
    }

    /// Stops the groups this node no longer replicates and drops their
    /// data and logs; also finishes a drop a crash interrupted.
    pub(super) async fn retire_groups(&self, layout: &ClusterMeta) {
        let removed = self.removed.load(Ordering::Relaxed);
        let mine = |s: &super::ShardInfo| {
            !removed && (s.replicas.contains(&self.id) || s.learners.contains(&self.id))
        };
        let running: Vec<u32> = self.groups.read().keys().copied().collect();
        for shard in &layout.shards {
            if mine(shard) {
                continue;
            }
            let raft = if running.contains(&shard.group) {
                self.groups.write().remove(&shard.group)
            } else {
                None
            };
            if raft.is_none() && !holds_data(&self.store, shard.group) {
                continue;
            }
            if let Some(raft) = raft {
                // Writes this node accepted while it still led the group
                // are answered before it stops: wait (briefly) until
                // everything in its log is applied.
                let settled = |m: &openraft::RaftMetrics<u64, PeerNode>| {
                    m.last_applied.map(|l| l.index) >= m.last_log_index
                };
                let _ = raft
                    .wait(Some(Duration::from_secs(2)))
                    .metrics(settled, "pending writes applied")
                    .await;
                let _ = raft.shutdown().await;
                self.leases.write().remove(&shard.group);
                self.committers.lock().remove(&shard.group);
            }
            let (store, raftdb, group, slots) = (
                self.store.clone(),
                self.raftdb.clone(),
                shard.group,
                shard.slots.clone(),
            );
            let dropped = tokio::task::spawn_blocking(move || {
                forget_shard(&store, group, &slots)?;
                raftdb.forget(group).map_err(|e| e.to_string())
            })
            .await;
            match dropped {
                Ok(Ok(())) => {
                    tracing::info!(group, "no longer a replica; dropped this node's copy")
                }
                Ok(Err(e)) => tracing::error!(group, error = %e, "dropping a shard's copy failed"),
                Err(e) => tracing::error!(group, error = %e, "dropping a shard's copy failed"),
            }
        }
    }
}

/// A Raft write error as text; a lost leadership says so.
fn write_error(group: u32, e: RaftError<u64, ClientWriteError<u64, PeerNode>>) -> String {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            format!("not the leader of shard {group}")
        }
        other => other.to_string(),
    }
}

/// The answer to a probe from `from`: the layout's epoch if that layout
/// no longer lists `from` (so a member that was removed while it was away
/// learns it), else nothing.
pub(super) fn answer_ping(cluster: &Cluster, from: u64) -> Result<Bytes, String> {
    let layout = cluster.layout.borrow();
    if layout.nodes.is_empty() || layout.nodes.contains_key(&from) || !cluster.is_member() {
        return Ok(Bytes::new());
    }
    bincode::serialize(&Some(layout.epoch))
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// Encodes the answer to a peer's admin or reconfiguration request.
pub(super) fn answer<T: serde::Serialize>(r: &Result<T, String>) -> Result<Bytes, String> {
    bincode::serialize(r)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}
