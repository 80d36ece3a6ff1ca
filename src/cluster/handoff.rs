//! Handing a shard's leadership to another replica before this node
//! leaves the shard, so no client write is caught in flight.
//!
//! ```text
//! leader L, leaving the shard:
//!   close the gate ─> client requests for the shard wait at it
//!   wait until the requests already past it are answered
//!   pick a follower that has every entry; stop L's heartbeats and elections
//!   once the followers' leader lease runs out, ask that follower to stand
//!   another node leads ─> open the gate: the waiting requests find the new leader
//! ```
//!
//! openraft 0.9 has no leadership transfer of its own; its followers
//! refuse to vote while their lease from the current leader runs, so the
//! leader goes quiet first and the successor's election then wins at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Raft;
use parking_lot::RwLock;
use tokio::sync::Notify;

use super::types::{PeerRequest, RaftTypes};
use super::{Cluster, ELECTION_MAX_MS};

/// Longest a client request waits at a closed gate before it goes on
/// (a handoff gives up well before).
const GATE_WAIT: Duration = Duration::from_secs(10);

/// How long the requests already past the gate may take to finish.
const DRAIN_WAIT: Duration = Duration::from_secs(3);

/// How long a follower may take to catch up with the last entry.
const CATCHUP_WAIT: Duration = Duration::from_secs(3);

/// How far behind the leader's log a successor may be before a handoff
/// starts holding requests.
const NEARLY: u64 = 1000;

/// How long the election of the successor may take.
const ELECTION_WAIT: Duration = Duration::from_secs(5);

/// How often the successor is asked to stand, once the lease is out.
const NUDGE_EVERY: Duration = Duration::from_millis(300);

/// Client requests to a shard this node leads pass through its gate.
#[derive(Default)]
pub(super) struct Gates(RwLock<HashMap<u32, Arc<Gate>>>);

#[derive(Default)]
pub(super) struct Gate {
    closed: AtomicBool,
    inside: AtomicUsize,
    opened: Notify,
}

/// A request's passage through a gate; it leaves when dropped.
pub(super) struct Pass(Arc<Gate>);

impl Drop for Pass {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gates {
    fn get(&self, group: u32) -> Arc<Gate> {
        if let Some(g) = self.0.read().get(&group) {
            return g.clone();
        }
        self.0.write().entry(group).or_default().clone()
    }

    /// Passes `group`'s gate, waiting while a handoff holds it closed.
    pub(super) async fn enter(&self, group: u32) -> Pass {
        let gate = self.get(group);
        let deadline = tokio::time::Instant::now() + GATE_WAIT;
        loop {
            gate.inside.fetch_add(1, Ordering::SeqCst);
            if !gate.closed.load(Ordering::SeqCst) {
                return Pass(gate);
            }
            gate.inside.fetch_sub(1, Ordering::SeqCst);
            let waited_out = {
                let opened = gate.opened.notified();
                tokio::pin!(opened);
                opened.as_mut().enable();
                gate.closed.load(Ordering::SeqCst)
                    && tokio::time::timeout_at(deadline, opened).await.is_err()
            };
            if waited_out {
                gate.inside.fetch_add(1, Ordering::SeqCst);
                return Pass(gate);
            }
        }
    }
}

impl Gate {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    async fn drained(&self) -> bool {
        let deadline = Instant::now() + DRAIN_WAIT;
        while self.inside.load(Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Cluster {
    /// As `group`'s leader: makes one of `successors` (voters of the
    /// group) the leader, holding client requests meanwhile. Returns the
    /// new leader; on failure this node leads on as before.
    pub(super) async fn hand_off(
        &self,
        group: u32,
        raft: &Raft<RaftTypes>,
        successors: &BTreeSet<u64>,
    ) -> Result<u64, String> {
        // A successor close behind before anything is held; the exact
        // check follows once the requests in flight are done.
        self.caught_up_successor(raft, successors, NEARLY).await?;
        let gate = self.gates.get(group);
        gate.close();
        let r = self.hand_off_closed(group, raft, &gate, successors).await;
        let rc = raft.runtime_config();
        rc.heartbeat(true);
        rc.elect(true);
        gate.open();
        match &r {
            Ok(to) => {
                tracing::info!(group, to = %format!("{to:016x}"), "handed the shard's leadership over")
            }
            Err(e) => tracing::warn!(group, error = %e, "leadership handoff failed; leading on"),
        }
        r
    }

    async fn hand_off_closed(
        &self,
        group: u32,
        raft: &Raft<RaftTypes>,
        gate: &Gate,
        successors: &BTreeSet<u64>,
    ) -> Result<u64, String> {
        if !gate.drained().await {
            return Err("requests in flight did not finish".into());
        }
        let to = self.caught_up_successor(raft, successors, 0).await?;
        let node = self
            .layout
            .borrow()
            .nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| format!("no member {to:016x}"))?;
        let rc = raft.runtime_config();
        rc.heartbeat(false);
        rc.elect(false);
        let quiet = Instant::now();
        let lease = Duration::from_millis(ELECTION_MAX_MS + 50);
        let nudge = bincode::serialize(&PeerRequest::Elect { group }).map_err(|e| e.to_string())?;
        let mut nudged: Option<Instant> = None;
        let mut rx = raft.metrics();
        loop {
            let leader = rx.borrow_and_update().current_leader;
            if let Some(l) = leader.filter(|&l| l != self.id) {
                return Ok(l);
            }
            if quiet.elapsed() > ELECTION_WAIT {
                return Err(format!("node {to:016x} was not elected"));
            }
            if quiet.elapsed() >= lease && nudged.map_or(true, |t| t.elapsed() >= NUDGE_EVERY) {
                nudged = Some(Instant::now());
                if let Err(e) = self.peers.call(&node.cluster, &nudge, NUDGE_EVERY).await {
                    tracing::debug!(group, error = %e, "asking the successor to stand failed");
                }
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err("the group stopped".into()) },
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = self.stop.cancelled() => return Err("node is shutting down".into()),
            }
        }
    }

    /// The successor that has every entry of this leader's log but
    /// `slack`, waiting briefly for one to catch up.
    async fn caught_up_successor(
        &self,
        raft: &Raft<RaftTypes>,
        successors: &BTreeSet<u64>,
        slack: u64,
    ) -> Result<u64, String> {
        let deadline = Instant::now() + CATCHUP_WAIT;
        loop {
            {
                let m = raft.metrics();
                let m = m.borrow();
                let last = m.last_log_index;
                let best = m.replication.as_ref().and_then(|r| {
                    successors
                        .iter()
                        .filter(|&&id| id != self.id && self.is_up(id))
                        .filter_map(|id| Some((r.get(id)?.map(|l| l.index), *id)))
                        .filter(|(have, _)| have.map(|h| h + slack) >= last)
                        .max()
                });
                if let Some((_, id)) = best {
                    return Ok(id);
                }
            }
            if Instant::now() > deadline {
                return Err("no other replica has caught up".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// As `group`'s leader: hands it to replica `to` (a rebalance).
    pub(super) async fn transfer_leadership(&self, group: u32, to: u64) -> Result<u64, String> {
        let raft = self
            .leading(group)
            .map_err(|_| format!("not the leader of shard {group}"))?;
        if !self.is_up(to) {
            return Err(format!("node {to:016x} is not reachable"));
        }
        self.hand_off(group, &raft, &BTreeSet::from([to])).await
    }

    /// As the metadata leader: evens out how many shards each member
    /// leads, one handoff at a time, to members that are up. Returns the
    /// transfers made, or an error if one failed (the rest are not tried).
    pub(super) async fn balance_leaders(&self) -> Result<usize, String> {
        let layout = self.layout.borrow().clone();
        let plan = layout.plan_leaders(&self.leaders());
        let mut made = 0;
        for (group, from, to) in plan {
            if !self.is_up(to) {
                continue;
            }
            if from == self.id {
                self.transfer_leadership(group, to).await?;
            } else {
                self.ask_transfer(&layout, group, from, to).await?;
            }
            made += 1;
        }
        Ok(made)
    }

    async fn ask_transfer(
        &self,
        layout: &super::ClusterMeta,
        group: u32,
        from: u64,
        to: u64,
    ) -> Result<u64, String> {
        let node = layout
            .nodes
            .get(&from)
            .ok_or_else(|| format!("no member {from:016x}"))?;
        let msg =
            bincode::serialize(&PeerRequest::HandOff { group, to }).map_err(|e| e.to_string())?;
        let answer = self
            .peers
            .call(&node.cluster, &msg, GATE_WAIT + ELECTION_WAIT)
            .await
            .map_err(|e| e.to_string())?;
        bincode::deserialize::<Result<u64, String>>(&answer)
            .unwrap_or_else(|e| Err(format!("malformed reply: {e}")))
    }

    /// Stands for election in `group` when its leader hands it over.
    pub(super) async fn stand(&self, group: u32) -> Result<(), String> {
        let raft = self
            .raft_of(group)
            .ok_or_else(|| format!("group {group} is not served here"))?;
        raft.trigger().elect().await.map_err(|e| e.to_string())
    }
}
