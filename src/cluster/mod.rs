//! The cluster layer, between commands and storage: routing a key's slot
//! to its shard, replicating the shard's writes through its Raft group
//! (openraft), and the cluster's metadata, itself a Raft group.
//!
//! ```text
//! command ─> route(slot) ─> shard group ─ leader here? ─ yes ─> propose ─> majority has it ─> apply on each replica
//!                                   │                                     (state machine = the tiered store)
//!                                   └─ no ─> MOVED (cluster clients) / forward to the leader (simple clients)
//! ```
//!
//! Storage knows nothing of Raft; commands reach peers only through
//! [`Cluster`]. The pieces:
//! - [`transport`]: authenticated, multiplexed connections between nodes.
//! - [`log_store`]: every group's Raft log in one fjall database.
//! - [`state_machine`]: applying entries to the store, atomically with
//!   their log position; snapshots.
//! - [`network`]: Raft RPCs over the transport.
//! - [`types`]: entries, members, the slot layout.

pub mod backup;
mod handoff;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod read_cache;
pub mod state_machine;
pub mod transport;
pub mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState, SnapshotPolicy};
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::storage::{AppendFsync, Store};
use log_store::RaftDb;
pub use membership::MoveStatus;
use network::GroupNetwork;
use state_machine::{Apply, GroupSm};
use transport::{Peers, Service, TransportConfig};
use types::{split_replies, ForwardReply, LogId, PeerRequest, RaftTypes, Request};
pub use types::{Admin, ClusterMeta, Move, PeerNode, ShardInfo, META_GROUP};

/// How long a client write or read barrier waits for its shard's quorum
/// before it is refused.
pub const QUORUM_WAIT: Duration = Duration::from_secs(5);

/// Raft heartbeat interval.
const HEARTBEAT_MS: u64 = 100;

/// Election timeouts. A follower that has a leader waits
/// `ELECTION_MAX_MS` plus a random timeout in this range without hearing
/// from it before it stands for election (1.2-1.6 s), and refuses to vote
/// for anyone else for `ELECTION_MAX_MS` after it last heard from it.
const ELECTION_MIN_MS: u64 = 400;
const ELECTION_MAX_MS: u64 = 800;

/// How long a majority's confirmation of leadership serves reads without
/// another round trip: half the time during which the followers that
/// confirmed it refuse to vote for another leader.
const LEASE: Duration = Duration::from_millis(ELECTION_MAX_MS / 2);

/// A leader that heard from no majority for this long refuses requests
/// at once rather than proposing what it probably can't commit.
const QUORUM_FRESH: Duration = Duration::from_millis(ELECTION_MAX_MS + 200);

/// How often members probe each other.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// A member not heard from for this long is reported down.
const DOWN_AFTER: Duration = Duration::from_secs(2);

/// How often a leader deletes the expired keys found in its shards, and
/// how many keys one replicated deletion carries.
const EXPIRE_EVERY: Duration = Duration::from_millis(250);
const EXPIRE_BATCH: usize = 500;

/// Largest message between nodes.
const MAX_FRAME: usize = 64 << 20;

/// Why the cluster could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// No layout yet: the cluster was never created.
    #[error("CLUSTERDOWN Hash slot not served: the cluster has not been created")]
    NotCreated,
    /// This node is not the shard's leader; the leader, if known.
    #[error("not the leader of shard {group}")]
    NotLeader {
        /// The shard's group.
        group: u32,
        /// Its leader, as far as this node knows.
        leader: Option<(u64, PeerNode)>,
    },
    /// The shard's leader hasn't heard from a majority: refused before
    /// anything was proposed, so nothing of it will ever be applied.
    #[error("NOQUORUM shard {group} can't reach a majority of its replicas; the request was refused and nothing was applied")]
    NoQuorum {
        /// The shard's group.
        group: u32,
    },
    /// The majority went away while the write was being replicated: it
    /// was not acknowledged, and Raft may still commit it if the shard
    /// recovers.
    #[error("TRYAGAIN shard {group} lost its majority while the write was in flight; it was not acknowledged and may or may not be applied")]
    InFlight {
        /// The shard's group.
        group: u32,
    },
    /// A peer could not be reached.
    #[error("CLUSTERDOWN {0}")]
    Peer(String),
    /// The cluster can't be created as asked.
    #[error("ERR {0}")]
    Create(String),
    /// A membership change was refused.
    #[error("ERR {0}")]
    Admin(String),
}

/// Answers commands forwarded by peers (the command layer provides it).
pub trait Forwarded: Send + Sync + 'static {
    /// Executes `args` in `db` as the node's own client would, routing
    /// included; with `holders`, a write's answer names the replicas that
    /// have it.
    fn execute(
        &self,
        db: u8,
        args: Vec<Bytes>,
        holders: bool,
    ) -> Pin<Box<dyn Future<Output = ForwardReply> + Send>>;

    /// Reads `key` in `db` for a node that will cache it: a string and
    /// the time it has left, on this node as it is now.
    fn cache_read(&self, db: u8, key: &[u8]) -> read_cache::CacheRead;
}

/// A committed write: its reply and where it sits in the shard's log.
pub struct Committed {
    /// The RESP3-encoded reply its application produced here.
    pub reply: Bytes,
    /// Its log index.
    pub index: u64,
}

/// One member as this node sees it.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// Where it is reached.
    pub node: PeerNode,
    /// Whether it answered a probe (or sent anything) lately.
    pub up: bool,
    /// The shard groups it leads, as far as this node knows.
    pub leads: Vec<u32>,
    /// The shard groups it replicates without leading them.
    pub follows: Vec<u32>,
}

/// One Raft group's state on this node, for `/metrics`.
#[derive(Debug, Clone)]
pub struct GroupStat {
    /// The group (0 is the metadata group).
    pub group: u32,
    /// Whether this node leads it.
    pub leader: bool,
    /// The current term.
    pub term: u64,
    /// Index of the last entry in this node's log.
    pub last_log: u64,
    /// Index of the last entry applied to the store.
    pub applied: u64,
    /// Index the latest snapshot covers.
    pub snapshot: u64,
    /// Index up to which the log was truncated.
    pub purged: u64,
}

/// The Raft groups of this node, for `/metrics`.
#[derive(Debug, Clone)]
pub struct GroupStats {
    /// Every group this node replicates.
    pub groups: Vec<GroupStat>,
    /// Snapshots installed from a leader since the node started.
    pub snapshots_installed: u64,
    /// Their bytes.
    pub snapshot_bytes_installed: u64,
    /// Membership changes (joins, leaves, rebalances).
    pub moves: MoveStatus,
    /// Whether this node is a member (0 once removed).
    pub member: bool,
    /// Hot keys of other shards cached here.
    pub cached_keys: u64,
    /// Fetches this node sent to leaders for its cache.
    pub cache_fetches: u64,
    /// Leases this node granted as a leader.
    pub cache_granted: u64,
    /// Holders told to drop a changed key.
    pub cache_dropped_told: u64,
    /// Holders that didn't answer, whose lease was waited out.
    pub cache_dropped_waited: u64,
}

/// What a node needs to join the cluster.
pub struct ClusterConfig {
    /// Where this node keeps its Raft log.
    pub data_dir: PathBuf,
    /// How this node is reached (announced to peers and clients).
    pub me: PeerNode,
    /// The shared secret.
    pub secret: Arc<[u8]>,
    /// Log fsync policy.
    pub appendfsync: AppendFsync,
    /// Log entries between a group's snapshots.
    pub snapshot_every: u64,
    /// A member unreachable this long is replaced (None: never).
    pub node_down_after: Option<Duration>,
    /// Hot keys of other shards cached here for reads, at most (0: none).
    pub read_cache_entries: usize,
}

/// A node's membership in the cluster.
pub struct Cluster {
    /// This node's id.
    pub id: u64,
    /// How this node is reached.
    pub me: PeerNode,
    raft_cfg: Arc<openraft::Config>,
    /// Snapshots installed from a leader (shared with the state machines).
    installed: Arc<state_machine::Installed>,
    /// Where snapshot transfers are staged.
    snap_dir: PathBuf,
    store: Store,
    applier: Arc<dyn Apply>,
    raftdb: Arc<RaftDb>,
    peers: Arc<Peers>,
    meta: Raft<RaftTypes>,
    layout: watch::Receiver<ClusterMeta>,
    groups: RwLock<HashMap<u32, Raft<RaftTypes>>>,
    /// When each group this node leads was last acknowledged by a majority
    /// (the send time of the acknowledged heartbeat or append, on this
    /// node's monotonic clock); None when not leading.
    leases: RwLock<HashMap<u32, Arc<parking_lot::Mutex<Option<std::time::Instant>>>>>,
    forwarded: OnceLock<Arc<dyn Forwarded>>,
    /// Client requests pass these; a leadership handoff holds them.
    gates: handoff::Gates,
    /// The write queue of each shard this node has proposed to.
    committers: parking_lot::Mutex<HashMap<u32, tokio::sync::mpsc::UnboundedSender<Pending>>>,
    /// When each peer was last heard from (a probe answered, or any
    /// request received from it).
    seen: RwLock<HashMap<u64, std::time::Instant>>,
    /// Layout changes are made one at a time.
    layout_lock: tokio::sync::Mutex<()>,
    /// A member unreachable this long is replaced.
    down_after: Option<Duration>,
    /// When this node started following the cluster: a member never
    /// heard from counts as last seen then.
    started: std::time::Instant,
    /// Set once a member told this node it was removed from the cluster
    /// (kept in `removed_file`, so it survives restarts).
    removed: std::sync::atomic::AtomicBool,
    removed_file: PathBuf,
    /// Whether a layout listing this node was seen since it started.
    was_listed: std::sync::atomic::AtomicBool,
    /// Set while replica moves run; the leaderships are evened out after.
    leaders_unsettled: std::sync::atomic::AtomicBool,
    /// Failed attempts at it since.
    leader_retries: std::sync::atomic::AtomicU32,
    /// The down member last found impossible to replace (logged once).
    down_refused: std::sync::atomic::AtomicU64,
    /// Other shards' hot keys cached here, under their leaders' leases.
    read_cache: read_cache::ReadCache,
    /// As a leader: the nodes caching this node's keys.
    cache_leases: read_cache::Leases,
    /// Counters of both.
    pub cache_stats: read_cache::CacheStats,
    /// Where work started from synchronous code runs.
    runtime: tokio::runtime::Handle,
    /// Shard dumps being pulled for backups, as a leader.
    dumps: backup::Dumps,
    stop: CancellationToken,
}

/// The Raft settings every group of this node runs with; the log keeps
/// up to `snapshot_every / 10` entries (at most 10,000) behind the last
/// snapshot, so a follower that is only a little behind catches up from
/// the log rather than by a snapshot transfer; it is truncated in steps
/// of up to 1,000 entries.
fn raft_config(snapshot_every: u64) -> Result<Arc<openraft::Config>, String> {
    let cfg = openraft::Config {
        cluster_name: "strata".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
        install_snapshot_timeout: 10_000,
        max_payload_entries: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: (snapshot_every / 10).min(10_000),
        purge_batch_size: (snapshot_every / 10).clamp(1, 1000),
        ..Default::default()
    };
    cfg.validate().map(Arc::new).map_err(|e| e.to_string())
}

/// Runs `tick` every `period` until `stop` is cancelled or `tick` says
/// there is nothing left to do.
fn every<F, Fut>(period: Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = stop.cancelled() => return,
            }
            if !tick().await {
                return;
            }
        }
    });
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

/// A write waiting for the shard's committer.
struct Pending {
    db: u8,
    args: Vec<Bytes>,
    tx: tokio::sync::oneshot::Sender<Result<Committed, ClusterError>>,
}

/// Most writes gathered into one entry.
const GROUP_MAX: usize = 512;
/// Entries of one shard's committer being replicated at once.
const GROUP_IN_FLIGHT: usize = 2;

/// Feeds one shard's Raft group: takes every write that queued up while
/// earlier entries were in flight and proposes them as one entry.
async fn commit_loop(
    group: u32,
    raft: Raft<RaftTypes>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Pending>,
    stop: CancellationToken,
) {
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            next = queue.recv(), if in_flight.len() < GROUP_IN_FLIGHT => {
                let Some(first) = next else { return };
                let mut batch = vec![first];
                while batch.len() < GROUP_MAX {
                    match queue.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                in_flight.spawn(commit_group(group, raft.clone(), batch));
            }
        }
    }
}

/// Proposes `batch` as one entry and answers each write.
async fn commit_group(group: u32, raft: Raft<RaftTypes>, mut batch: Vec<Pending>) {
    let at_ms = crate::storage::now_ms();
    if batch.len() == 1 {
        let p = batch.pop().expect("one write");
        let req = Request::Command {
            db: p.db,
            at_ms,
            args: p.args,
        };
        let _ = p.tx.send(write_entry(group, &raft, req).await);
        return;
    }
    let (cmds, txs): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| ((p.db, p.args), p.tx)).unzip();
    match write_entry(group, &raft, Request::Group { at_ms, cmds }).await {
        Ok(done) => match split_replies(&done.reply).filter(|r| r.len() == txs.len()) {
            Some(replies) => {
                for (tx, reply) in txs.into_iter().zip(replies) {
                    let _ = tx.send(Ok(Committed {
                        reply,
                        index: done.index,
                    }));
                }
            }
            None => {
                for tx in txs {
                    let _ = tx.send(Err(ClusterError::Peer("malformed grouped reply".into())));
                }
            }
        },
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// Appends `req` to `group`'s log and waits until it is committed and
/// applied here.
async fn write_entry(
    group: u32,
    raft: &Raft<RaftTypes>,
    req: Request,
) -> Result<Committed, ClusterError> {
    match tokio::time::timeout(QUORUM_WAIT, raft.client_write(req)).await {
        Err(_) => Err(ClusterError::InFlight { group }),
        Ok(Ok(resp)) => Ok(Committed {
            reply: resp.data,
            index: resp.log_id.index,
        }),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ClusterError::NotLeader {
                group,
                leader: f.leader_id.zip(f.leader_node),
            })
        }
        // Stopped while the write was pending: it may still commit
        // through the group's other replicas.
        Ok(Err(RaftError::Fatal(_))) => Err(ClusterError::InFlight { group }),
        Ok(Err(e)) => Err(ClusterError::Peer(e.to_string())),
    }
}

/// This node's id: made once, kept in the data directory.
pub fn node_id(dir: &std::path::Path) -> std::io::Result<u64> {
    let path = dir.join("node.id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if let Ok(id) = u64::from_str_radix(s.trim(), 16) {
            return Ok(id);
        }
    }
    std::fs::create_dir_all(dir)?;
    let id = rand::random::<u64>() | 1;
    let tmp = dir.join("node.id.tmp");
    std::fs::write(&tmp, format!("{id:016x}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

impl Cluster {
    /// Starts this node's cluster layer: its Raft groups, the transport on
    /// `listener`, and the workers that follow the layout.
    pub async fn start(
        cfg: ClusterConfig,
        store: Store,
        applier: Arc<dyn Apply>,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> Result<Arc<Cluster>, String> {
        let id = node_id(&cfg.data_dir).map_err(|e| format!("node id: {e}"))?;
        store.set_replicated(true);
        let raftdb = RaftDb::open(&cfg.data_dir.join("raft"), cfg.appendfsync)
            .map_err(|e| format!("opening the Raft log: {e}"))?;
        let peers = Arc::new(Peers::new(TransportConfig {
            node_id: id,
            secret: cfg.secret.clone(),
            max_frame: MAX_FRAME,
        }));
        let raft_cfg = raft_config(cfg.snapshot_every)?;
        let (layout_tx, layout_rx) = watch::channel(ClusterMeta::default());
        let installed = Arc::new(state_machine::Installed::default());
        // Snapshot transfers are staged in unlinked files here; anything
        // left is from a crash mid-transfer.
        let snap_dir = cfg.data_dir.join("raft-snapshots");
        let _ = std::fs::remove_dir_all(&snap_dir);
        let sm = GroupSm::meta(
            store.clone(),
            applier.clone(),
            layout_tx,
            installed.clone(),
            snap_dir.clone(),
        );
        let meta = Raft::new(
            id,
            raft_cfg.clone(),
            GroupNetwork {
                peers: peers.clone(),
                group: META_GROUP,
            },
            raftdb.group(META_GROUP, store.clone()),
            sm,
        )
        .await
        .map_err(|e| format!("starting the metadata group: {e}"))?;
        let cluster = Arc::new(Cluster {
            id,
            me: cfg.me.clone(),
            raft_cfg,
            installed,
            snap_dir,
            store,
            applier,
            raftdb,
            peers,
            meta,
            layout: layout_rx,
            groups: RwLock::new(HashMap::new()),
            leases: RwLock::new(HashMap::new()),
            forwarded: OnceLock::new(),
            gates: handoff::Gates::default(),
            committers: parking_lot::Mutex::new(HashMap::new()),
            seen: RwLock::new(HashMap::new()),
            layout_lock: tokio::sync::Mutex::new(()),
            down_after: cfg.node_down_after,
            started: std::time::Instant::now(),
            removed: std::sync::atomic::AtomicBool::new(cfg.data_dir.join("removed").exists()),
            removed_file: cfg.data_dir.join("removed"),
            was_listed: std::sync::atomic::AtomicBool::new(false),
            leaders_unsettled: std::sync::atomic::AtomicBool::new(false),
            leader_retries: std::sync::atomic::AtomicU32::new(0),
            down_refused: std::sync::atomic::AtomicU64::new(0),
            read_cache: read_cache::ReadCache::new(cfg.read_cache_entries),
            cache_leases: read_cache::Leases::default(),
            cache_stats: read_cache::CacheStats::default(),
            runtime: tokio::runtime::Handle::current(),
            dumps: backup::Dumps::default(),
            stop: stop.clone(),
        });
        cluster.watch_lease(META_GROUP, &cluster.meta);
        let service: Arc<dyn Service> = Arc::new(NodeService(Arc::downgrade(&cluster)));
        tokio::spawn(transport::serve(
            listener,
            TransportConfig {
                node_id: id,
                secret: cfg.secret,
                max_frame: MAX_FRAME,
            },
            service,
            stop.clone(),
        ));
        // Follow the layout: start the groups this node replicates.
        {
            let weak = Arc::downgrade(&cluster);
            let mut rx = cluster.layout.clone();
            tokio::spawn(async move {
                loop {
                    let Some(c) = weak.upgrade() else { return };
                    c.ensure_groups().await;
                    drop(c);
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return },
                        () = stop.cancelled() => return,
                    }
                }
            });
        }
        // Probe every member, so status reports know who is reachable.
        let weak = Arc::downgrade(&cluster);
        every(PROBE_EVERY, cluster.stop.clone(), move || {
            let c = weak.upgrade();
            async move { c.map(|c| c.probe_members()).is_some() }
        });
        // The metadata leader carries out joins, leaves and rebalances.
        let weak = Arc::downgrade(&cluster);
        every(membership::MOVE_EVERY, cluster.stop.clone(), move || {
            let c = weak.upgrade();
            async move {
                let Some(c) = c else { return false };
                c.drive_membership().await;
                true
            }
        });
        // Expired keys are deleted through their shard's log, by its leader.
        let weak = Arc::downgrade(&cluster);
        every(EXPIRE_EVERY, cluster.stop.clone(), move || {
            let c = weak.upgrade();
            async move {
                let Some(c) = c else { return false };
                c.expire_found().await;
                true
            }
        });
        // Cached hot keys still read keep their leases.
        let weak = Arc::downgrade(&cluster);
        every(read_cache::RENEW_EVERY, cluster.stop.clone(), move || {
            let c = weak.upgrade();
            async move {
                let Some(c) = c else { return false };
                c.renew_cached().await;
                true
            }
        });
        // `everysec`: fsync the Raft log once a second.
        let db = cluster.raftdb.clone();
        every(Duration::from_secs(1), cluster.stop.clone(), move || {
            let db = db.clone();
            async move {
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || db.sync()).await {
                    tracing::error!(error = %e, "fsync of the Raft log failed");
                }
                true
            }
        });
        Ok(cluster)
    }

    /// Sends a probe to every other member; an answer marks it seen.
    fn probe_members(self: &Arc<Self>) {
        let Ok(ping) = bincode::serialize(&PeerRequest::Ping) else {
            return;
        };
        let members: Vec<(u64, PeerNode)> = self
            .layout
            .borrow()
            .nodes
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        for (id, node) in members {
            let c = self.clone();
            let ping = ping.clone();
            tokio::spawn(async move {
                if let Ok(answer) = c.peers.call(&node.cluster, &ping, DOWN_AFTER).await {
                    c.saw(id);
                    c.heard_removed(&answer).await;
                }
            });
        }
    }

    fn saw(&self, id: u64) {
        self.seen.write().insert(id, std::time::Instant::now());
    }

    /// Whether member `id` was heard from lately (this node always is).
    pub fn is_up(&self, id: u64) -> bool {
        id == self.id
            || self
                .seen
                .read()
                .get(&id)
                .is_some_and(|t| t.elapsed() < DOWN_AFTER)
    }

    /// The metadata group's term: it grows with every election of a
    /// metadata leader (seed 003's `generationId`).
    pub fn generation(&self) -> u64 {
        self.meta.metrics().borrow().current_term
    }

    /// The metadata group's leader, if known.
    pub fn meta_leader(&self) -> Option<u64> {
        self.known_leader(&self.meta)
    }

    /// `shard`'s replicas, its leader (when known) first.
    pub fn replicas_leader_first(&self, shard: &ShardInfo) -> Vec<u64> {
        let mut ids = shard.replicas.clone();
        if let Some((l, _)) = self.leader_of(shard) {
            ids.retain(|&i| i != l);
            ids.insert(0, l);
        }
        ids
    }

    /// The state of every Raft group this node replicates.
    pub fn group_stats(&self) -> GroupStats {
        let mut rafts = vec![(META_GROUP, self.meta.clone())];
        rafts.extend(self.groups.read().iter().map(|(g, r)| (*g, r.clone())));
        rafts.sort_by_key(|(g, _)| *g);
        let index = |l: Option<LogId>| l.map_or(0, |l| l.index);
        let groups = rafts
            .into_iter()
            .map(|(group, raft)| {
                let m = raft.metrics().borrow().clone();
                GroupStat {
                    group,
                    leader: m.state == ServerState::Leader,
                    term: m.current_term,
                    last_log: m.last_log_index.unwrap_or(0),
                    applied: index(m.last_applied),
                    snapshot: index(m.snapshot),
                    purged: index(m.purged),
                }
            })
            .collect();
        GroupStats {
            groups,
            snapshots_installed: self
                .installed
                .count
                .load(std::sync::atomic::Ordering::Relaxed),
            snapshot_bytes_installed: self
                .installed
                .bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            moves: self.move_status(),
            member: self.is_member(),
            cached_keys: self.read_cache.len() as u64,
            cache_fetches: load(&self.cache_stats.fetches),
            cache_granted: load(&self.cache_stats.granted),
            cache_dropped_told: load(&self.cache_stats.dropped_told),
            cache_dropped_waited: load(&self.cache_stats.dropped_waited),
        }
    }

    /// Every member with its status and roles.
    pub fn member_views(&self) -> Vec<MemberView> {
        let meta = self.layout.borrow().clone();
        let leaders: Vec<(u32, Option<u64>)> = meta
            .shards
            .iter()
            .map(|s| (s.group, self.leader_of(s).map(|(id, _)| id)))
            .collect();
        meta.nodes
            .iter()
            .map(|(id, node)| {
                let mut leads = Vec::new();
                let mut follows = Vec::new();
                for (shard, (group, leader)) in meta.shards.iter().zip(&leaders) {
                    if *leader == Some(*id) {
                        leads.push(*group);
                    } else if shard.replicas.contains(id) {
                        follows.push(*group);
                    }
                }
                MemberView {
                    id: *id,
                    node: node.clone(),
                    up: self.is_up(*id),
                    leads,
                    follows,
                }
            })
            .collect()
    }

    /// The replicas of `group` that have log entry `index`, as its leader
    /// sees them: itself and every follower whose log matches up to there.
    /// Called after the entry committed, so a majority has it; waits
    /// briefly for the replication progress to show that.
    pub async fn holders(&self, group: u32, index: u64) -> Vec<u64> {
        let Some(raft) = self.raft_of(group) else {
            return Vec::new();
        };
        let voters = |m: &openraft::RaftMetrics<u64, PeerNode>| {
            m.membership_config
                .membership()
                .voter_ids()
                .collect::<Vec<u64>>()
        };
        let have = |m: &openraft::RaftMetrics<u64, PeerNode>| -> Vec<u64> {
            let mut ids = vec![self.id];
            if let Some(rep) = &m.replication {
                ids.extend(
                    rep.iter()
                        .filter(|(id, l)| **id != self.id && l.is_some_and(|l| l.index >= index))
                        .map(|(id, _)| *id),
                );
            }
            ids
        };
        let majority =
            |m: &openraft::RaftMetrics<u64, PeerNode>| have(m).len() > voters(m).len() / 2;
        let waited = raft
            .wait(Some(Duration::from_millis(200)))
            .metrics(majority, "a majority's progress")
            .await;
        match waited {
            Ok(m) => have(&m),
            Err(_) => have(&raft.metrics().borrow()),
        }
    }

    /// Proposes the deletion of the expired keys the store's sweeps found
    /// in shards this node leads; the rest are left to their leaders,
    /// whose own sweeps find them.
    async fn expire_found(&self) {
        let found = self.store.take_expired(EXPIRE_BATCH * 4);
        if found.is_empty() {
            return;
        }
        let mut by_group: BTreeMap<(u32, u8), Vec<Bytes>> = BTreeMap::new();
        {
            let layout = self.layout.borrow();
            for (db, key) in found {
                let slot = crate::slot::slot_of(&key);
                let Some(shard) = layout.shard_of(slot) else {
                    continue;
                };
                by_group
                    .entry((shard.group, db as u8))
                    .or_default()
                    .push(Bytes::from(key));
            }
        }
        for ((group, db), keys) in by_group {
            if !self.is_leader(group) {
                continue;
            }
            for chunk in keys.chunks(EXPIRE_BATCH) {
                let mut args = Vec::with_capacity(chunk.len() + 1);
                args.push(Bytes::from_static(b"STRATA-EXPIRED"));
                args.extend(chunk.iter().cloned());
                if let Err(e) = self.propose(group, db, args).await {
                    tracing::debug!(group, error = %e, "expiring keys deferred");
                    break;
                }
            }
        }
    }

    /// Sets who answers forwarded commands.
    pub fn set_forwarded(&self, f: Arc<dyn Forwarded>) {
        let _ = self.forwarded.set(f);
    }

    /// Changes the Raft log's fsync policy.
    pub fn set_appendfsync(&self, p: AppendFsync) {
        self.raftdb.set_fsync(p);
    }

    /// The current layout.
    pub fn layout(&self) -> watch::Ref<'_, ClusterMeta> {
        self.layout.borrow()
    }

    /// Starts a Raft instance for every shard this node replicates or is
    /// joining, and bootstraps the shards it is first replica of; stops
    /// the ones it no longer replicates.
    async fn ensure_groups(&self) {
        let meta = self.layout.borrow().clone();
        if meta.nodes.contains_key(&self.id) {
            self.was_listed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        } else if self.was_listed.load(std::sync::atomic::Ordering::Relaxed) {
            self.mark_removed(meta.epoch).await;
        }
        self.retire_groups(&meta).await;
        for shard in &meta.shards {
            let mine = !self.was_removed()
                && (shard.replicas.contains(&self.id) || shard.learners.contains(&self.id));
            if !mine || self.groups.read().contains_key(&shard.group) {
                continue;
            }
            let sm = GroupSm::shard(
                shard.group,
                self.store.clone(),
                self.applier.clone(),
                shard.slots.clone(),
                self.installed.clone(),
                self.snap_dir.clone(),
            );
            let raft = Raft::new(
                self.id,
                self.raft_cfg.clone(),
                GroupNetwork {
                    peers: self.peers.clone(),
                    group: shard.group,
                },
                self.raftdb.group(shard.group, self.store.clone()),
                sm,
            )
            .await;
            let raft = match raft {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(group = shard.group, error = %e, "starting a shard group failed");
                    continue;
                }
            };
            if shard.replicas.first() == Some(&self.id)
                && matches!(raft.is_initialized().await, Ok(false))
            {
                let members: BTreeMap<u64, PeerNode> = shard
                    .replicas
                    .iter()
                    .filter_map(|id| meta.nodes.get(id).map(|n| (*id, n.clone())))
                    .collect();
                if let Err(e) = raft.initialize(members).await {
                    tracing::warn!(group = shard.group, error = %e, "bootstrapping a shard group failed");
                }
            }
            tracing::info!(group = shard.group, "serving shard group");
            self.watch_lease(shard.group, &raft);
            self.groups.write().insert(shard.group, raft);
        }
    }

    /// Follows `raft`'s metrics to know when its leadership was last
    /// confirmed by a majority. Metrics arrive only when something
    /// changes, so the age they report is turned into an instant here;
    /// a leader cut off from its peers stops getting fresh ones and its
    /// lease simply runs out.
    fn watch_lease(&self, group: u32, raft: &Raft<RaftTypes>) {
        let slot = Arc::new(parking_lot::Mutex::new(None));
        self.leases.write().insert(group, slot.clone());
        let mut rx = raft.metrics();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                {
                    let m = rx.borrow_and_update();
                    let acked = match (m.state, m.millis_since_quorum_ack) {
                        (ServerState::Leader, Some(ms)) => {
                            std::time::Instant::now().checked_sub(Duration::from_millis(ms))
                        }
                        _ => None,
                    };
                    *slot.lock() = acked;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Time since a majority last confirmed this node's leadership of
    /// `group` (None if it doesn't lead it).
    fn lease_age(&self, group: u32) -> Option<Duration> {
        let slot = self.leases.read().get(&group)?.clone();
        let at = (*slot.lock())?;
        Some(at.elapsed())
    }

    fn raft_of(&self, group: u32) -> Option<Raft<RaftTypes>> {
        if group == META_GROUP {
            return Some(self.meta.clone());
        }
        self.groups.read().get(&group).cloned()
    }

    /// The shard that owns `slot`.
    pub fn shard_of(&self, slot: u16) -> Result<ShardInfo, ClusterError> {
        self.layout
            .borrow()
            .shard_of(slot)
            .cloned()
            .ok_or(ClusterError::NotCreated)
    }

    /// Whether this node leads `group` right now.
    pub fn is_leader(&self, group: u32) -> bool {
        self.raft_of(group).is_some_and(|r| {
            let m = r.metrics();
            let m = m.borrow();
            m.state == ServerState::Leader && m.current_leader == Some(self.id)
        })
    }

    /// Whether this node, as leader of `raft`'s group, heard from a
    /// majority within an election timeout. A leader cut off from its
    /// peers refuses at once instead of proposing what it can't commit.
    fn quorum_fresh(&self, group: u32, raft: &Raft<RaftTypes>) -> bool {
        if Self::single_voter(raft) {
            return true;
        }
        self.lease_age(group).is_some_and(|age| age <= QUORUM_FRESH)
    }

    fn single_voter(raft: &Raft<RaftTypes>) -> bool {
        raft.metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count()
            <= 1
    }

    /// Whether a read on this leader may skip the round trip to a
    /// majority: a majority confirmed its leadership less than
    /// [`LEASE`] ago (those followers vote for no one else until
    /// `ELECTION_MAX_MS` after that), and it has applied
    /// an entry of its own term, so it has every committed write.
    fn lease_valid(&self, group: u32, raft: &Raft<RaftTypes>) -> bool {
        let fresh =
            Self::single_voter(raft) || self.lease_age(group).is_some_and(|age| age < LEASE);
        if !fresh {
            return false;
        }
        let m = raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
            && m.last_applied
                .is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// The leader a group's Raft instance knows of. A node restarted after
    /// leading still holds its old vote; it is not the leader until elected.
    fn known_leader(&self, raft: &Raft<RaftTypes>) -> Option<u64> {
        let m = raft.metrics();
        let m = m.borrow();
        match m.current_leader {
            Some(id) if id == self.id && m.state != ServerState::Leader => None,
            other => other,
        }
    }

    /// As `group`'s leader: how many other replicas have its log up to
    /// `index` (None: up to its last entry now), with the index counted
    /// to. None if this node doesn't lead `group`.
    pub fn acked_followers(&self, group: u32, index: Option<u64>) -> Option<(u64, usize)> {
        let raft = self.raft_of(group)?;
        let m = raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader {
            return None;
        }
        let target = index.or(m.last_log_index).unwrap_or(0);
        let n = m.replication.as_ref().map_or(0, |rep| {
            rep.iter()
                .filter(|(id, l)| **id != self.id && l.is_some_and(|l| l.index >= target))
                .count()
        });
        Some((target, n))
    }

    /// Whether this node holds a replica of `group`.
    pub fn replicates(&self, group: u32) -> bool {
        self.groups.read().contains_key(&group)
    }

    /// The leader of `shard` as far as this node knows; a shard this node
    /// doesn't replicate is presumed led by its first replica, which
    /// redirects again if that is wrong.
    pub fn leader_of(&self, shard: &ShardInfo) -> Option<(u64, PeerNode)> {
        let meta = self.layout.borrow();
        let id = match self.raft_of(shard.group) {
            Some(r) => self.known_leader(&r)?,
            None => *shard.replicas.first()?,
        };
        meta.nodes.get(&id).map(|n| (id, n.clone()))
    }

    /// Replicates a write to `group` and returns its RESP3-encoded reply,
    /// once a majority has it and this node applied it. Writes that
    /// arrive while the shard's previous entries are being replicated are
    /// gathered into one entry (group commit), so concurrent clients share
    /// the cost of a log append and a replication round trip.
    pub async fn propose(
        &self,
        group: u32,
        db: u8,
        args: Vec<Bytes>,
    ) -> Result<Committed, ClusterError> {
        let _pass = self.gates.enter(group).await;
        let raft = self.ready_to_write(group)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queue = {
            let mut committers = self.committers.lock();
            committers
                .entry(group)
                .or_insert_with(|| {
                    let (qtx, qrx) = tokio::sync::mpsc::unbounded_channel();
                    tokio::spawn(commit_loop(group, raft, qrx, self.stop.clone()));
                    qtx
                })
                .clone()
        };
        queue
            .send(Pending { db, args, tx })
            .map_err(|_| ClusterError::InFlight { group })?;
        let done = rx.await.unwrap_or(Err(ClusterError::InFlight { group }))?;
        self.cache_fence().await;
        Ok(done)
    }

    /// Replicates several writes to `group` as one entry, applied in order;
    /// returns a RESP3 array of their replies.
    pub async fn propose_batch(
        &self,
        group: u32,
        db: u8,
        cmds: Vec<Vec<Bytes>>,
    ) -> Result<Bytes, ClusterError> {
        let _pass = self.gates.enter(group).await;
        let raft = self.ready_to_write(group)?;
        let req = Request::Batch {
            db,
            at_ms: crate::storage::now_ms(),
            cmds,
        };
        let done = write_entry(group, &raft, req).await?;
        self.cache_fence().await;
        Ok(done.reply)
    }

    /// The Raft instance of `group` if this node may propose to it now.
    fn ready_to_write(&self, group: u32) -> Result<Raft<RaftTypes>, ClusterError> {
        let raft = self.leading(group)?;
        if !self.quorum_fresh(group, &raft) {
            return Err(ClusterError::NoQuorum { group });
        }
        Ok(raft)
    }

    /// The Raft instance of `group` if this node leads it; otherwise the
    /// leader as far as this node knows.
    fn leading(&self, group: u32) -> Result<Raft<RaftTypes>, ClusterError> {
        match self.raft_of(group) {
            Some(raft) if self.is_leader(group) => Ok(raft),
            _ => Err(ClusterError::NotLeader {
                group,
                leader: self.shard_leader_by_group(group),
            }),
        }
    }

    /// Waits until this node, as leader of `group`, has confirmed its
    /// leadership with a majority and applied everything committed before
    /// now: a read after it is linearizable.
    pub async fn read_barrier(&self, group: u32) -> Result<(), ClusterError> {
        let _pass = self.gates.enter(group).await;
        let raft = self.leading(group)?;
        if self.lease_valid(group, &raft) {
            return Ok(());
        }
        if !self.quorum_fresh(group, &raft) {
            return Err(ClusterError::NoQuorum { group });
        }
        match tokio::time::timeout(QUORUM_WAIT, raft.ensure_linearizable()).await {
            Err(_) => Err(ClusterError::NoQuorum { group }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                f,
            )))) => Err(ClusterError::NotLeader {
                group,
                leader: f.leader_id.zip(f.leader_node),
            }),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(
                _,
            )))) => Err(ClusterError::NoQuorum { group }),
            Ok(Err(e)) => Err(ClusterError::Peer(e.to_string())),
        }
    }

    /// Resolves once this node sees `group` led by someone other than
    /// `from` (never, for a group this node doesn't replicate).
    pub async fn leader_changed(&self, group: u32, from: u64) {
        let Some(raft) = self.raft_of(group) else {
            return std::future::pending().await;
        };
        let mut rx = raft.metrics();
        loop {
            let now = {
                let m = rx.borrow_and_update();
                m.current_leader
            };
            if now.is_some_and(|l| l != from) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    fn shard_leader_by_group(&self, group: u32) -> Option<(u64, PeerNode)> {
        self.leader_of(&self.shard_by_group(group)?)
    }

    /// The shard that `group` replicates, in the layout as this node knows it.
    fn shard_by_group(&self, group: u32) -> Option<ShardInfo> {
        self.layout
            .borrow()
            .shards
            .iter()
            .find(|s| s.group == group)
            .cloned()
    }

    /// Sends a command to `node`, which executes it as its own client
    /// would; returns the RESP3-encoded reply.
    pub async fn forward(
        &self,
        node: &PeerNode,
        db: u8,
        args: Vec<Bytes>,
        holders: bool,
    ) -> Result<ForwardReply, ClusterError> {
        let req = bincode::serialize(&PeerRequest::Forward { db, args, holders })
            .map_err(|e| ClusterError::Peer(e.to_string()))?;
        let answer = self
            .peers
            .call(&node.cluster, &req, QUORUM_WAIT + Duration::from_secs(1))
            .await
            .map_err(|e| ClusterError::Peer(e.to_string()))?;
        bincode::deserialize(&answer)
            .map_err(|e| ClusterError::Peer(format!("malformed forwarded reply: {e}")))
    }

    /// Forms a new cluster of `nodes` (this node among them) with
    /// `shards` shards (at least one per node) and `replicas` copies of
    /// each. Returns the layout.
    pub async fn create(
        &self,
        replicas: usize,
        shards: usize,
        nodes: BTreeMap<u64, PeerNode>,
    ) -> Result<ClusterMeta, ClusterError> {
        if !nodes.contains_key(&self.id) {
            return Err(ClusterError::Create(
                "this node must be one of the members".into(),
            ));
        }
        if replicas == 0 || replicas > nodes.len() {
            return Err(ClusterError::Create(format!(
                "replicas must be between 1 and the number of nodes ({})",
                nodes.len()
            )));
        }
        if !self.layout.borrow().shards.is_empty() {
            return Err(ClusterError::Create(
                "this node is already part of a cluster".into(),
            ));
        }
        match self.meta.initialize(nodes.clone()).await {
            Ok(()) => {}
            Err(e) => return Err(ClusterError::Create(format!("initializing metadata: {e}"))),
        }
        let layout = ClusterMeta::initial(nodes, replicas, shards);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .meta
                .client_write(Request::Layout(layout.clone()))
                .await
            {
                Ok(_) => return Ok(layout),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for the metadata group's leader");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(ClusterError::Create(format!("storing the layout: {e}"))),
            }
        }
    }

    /// Shard groups with a known leader, and the total.
    pub fn shards_served(&self) -> (usize, usize) {
        let meta = self.layout.borrow().clone();
        let led = meta
            .shards
            .iter()
            .filter(|s| self.leader_of(s).is_some() && self.replicates(s.group))
            .count();
        (led, meta.shards.len())
    }

    /// The members this node has heard of.
    pub fn members(&self) -> BTreeSet<u64> {
        self.layout.borrow().nodes.keys().copied().collect()
    }

    /// Stops every Raft group.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let groups: Vec<Raft<RaftTypes>> = self.groups.read().values().cloned().collect();
        for r in groups {
            let _ = r.shutdown().await;
        }
        let _ = self.meta.shutdown().await;
    }
}

/// Serves peers: Raft RPCs for every group, and forwarded commands.
struct NodeService(Weak<Cluster>);

impl Service for NodeService {
    fn call(
        &self,
        from: u64,
        request: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send + 'static>> {
        let cluster = self.0.clone();
        Box::pin(async move {
            let cluster = cluster.upgrade().ok_or("node is shutting down")?;
            cluster.saw(from);
            let req: PeerRequest =
                bincode::deserialize(&request).map_err(|e| format!("malformed request: {e}"))?;
            let missing = |g: u32| format!("group {g} is not served here (yet)");
            let encode =
                |r: Result<Vec<u8>, bincode::Error>| r.map(Bytes::from).map_err(|e| e.to_string());
            match req {
                PeerRequest::Append(g, rpc) => {
                    let raft = cluster.raft_of(g).ok_or_else(|| missing(g))?;
                    encode(bincode::serialize(&raft.append_entries(rpc).await))
                }
                PeerRequest::Vote(g, rpc) => {
                    let raft = cluster.raft_of(g).ok_or_else(|| missing(g))?;
                    encode(bincode::serialize(&raft.vote(rpc).await))
                }
                PeerRequest::Snapshot(g, rpc) => {
                    let raft = cluster.raft_of(g).ok_or_else(|| missing(g))?;
                    encode(bincode::serialize(&raft.install_snapshot(rpc).await))
                }
                PeerRequest::Forward { db, args, holders } => {
                    let f = cluster.forwarded.get().ok_or("node is starting")?.clone();
                    encode(bincode::serialize(&f.execute(db, args, holders).await))
                }
                PeerRequest::Ping => membership::answer_ping(&cluster, from),
                PeerRequest::CacheFetch { group, db, keys } => cluster
                    .grant_cached(from, group, db, keys)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|reads| encode(bincode::serialize(&reads))),
                PeerRequest::Dump(req) => cluster.serve_dump(req).await,
                PeerRequest::CacheDrop { db, keys } => {
                    for key in keys {
                        cluster.read_cache.invalidate(db, &key);
                    }
                    Ok(Bytes::new())
                }
                PeerRequest::HandOff { group, to } => {
                    membership::answer(&cluster.transfer_leadership(group, to).await)
                }
                PeerRequest::Elect { group } => cluster.stand(group).await.map(|()| Bytes::new()),
                PeerRequest::Reconfigure { group, add, voters } => {
                    membership::answer(&cluster.reconfigure(group, add, voters).await)
                }
                PeerRequest::Admin(req) => {
                    let r = cluster.admin(req).await.map_err(|e| match e {
                        ClusterError::Admin(m) => m,
                        other => other.to_string(),
                    });
                    membership::answer(&r)
                }
            }
        })
    }
}
