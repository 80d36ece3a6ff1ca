//! The state one node shares between its front ends: the store, the live
//! configuration, metrics, the client registry and the local hot-key cache.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::{now_ms, Store};

/// One connected RESP client, as CLIENT LIST shows it.
pub struct ClientHandle {
    /// Connection id.
    pub id: u64,
    /// Peer address.
    pub addr: String,
    /// Local address.
    pub laddr: String,
    /// When it connected.
    pub created: Instant,
    /// Mutable details.
    pub state: Mutex<ClientState>,
    /// Cancelled by CLIENT KILL or shutdown.
    pub kill: CancellationToken,
    /// Wakes the client from a blocking command (CLIENT UNBLOCK).
    pub unblock: tokio::sync::Notify,
}

impl ClientHandle {
    /// A handle for client `id` connected from `addr`.
    pub fn new(id: u64, addr: String, laddr: String, resp: u8) -> ClientHandle {
        ClientHandle {
            id,
            addr,
            laddr,
            created: Instant::now(),
            state: Mutex::new(ClientState {
                resp,
                ..ClientState::default()
            }),
            kill: CancellationToken::new(),
            unblock: tokio::sync::Notify::new(),
        }
    }
}

/// What a client is doing.
#[derive(Default, Clone)]
pub struct ClientState {
    /// CLIENT SETNAME.
    pub name: String,
    /// Selected database.
    pub db: usize,
    /// Last command name.
    pub last_cmd: String,
    /// When it last ran a command.
    pub last_active: Option<Instant>,
    /// RESP version.
    pub resp: u8,
    /// Blocked in a command (BLPOP, XREAD BLOCK, ...).
    pub blocked: bool,
    /// In MULTI.
    pub in_multi: bool,
    /// Keys watched.
    pub watching: usize,
    /// Channels and patterns subscribed to.
    pub subscriptions: i64,
    /// How CLIENT UNBLOCK asked the blocked command to end: with an error
    /// rather than as if it had timed out.
    pub unblock_error: bool,
}

/// Shared node state.
pub struct Node {
    /// The storage engine.
    pub store: Store,
    /// Live configuration (CONFIG SET changes it).
    pub cfg: RwLock<Config>,
    /// Metrics.
    pub metrics: Metrics,
    /// Connected RESP clients by id.
    pub clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    /// Next client id.
    pub next_client_id: AtomicU64,
    /// Process start.
    pub started: Instant,
    /// Hot values for the HTTP read path.
    pub local_cache: LocalCache,
    /// Where RESP listens.
    pub resp_addr: OnceLock<SocketAddr>,
    /// Where HTTP listens.
    pub http_addr: OnceLock<SocketAddr>,
    /// Cancelled to shut the node down.
    pub shutdown: CancellationToken,
    /// Commands processed.
    pub total_commands: AtomicU64,
    /// Stable identity of this node.
    pub node_id: String,
    /// This node's place in a cluster (cluster mode only).
    pub cluster: OnceLock<Arc<crate::cluster::Cluster>>,
    /// Counter values at the last CONFIG RESETSTAT.
    pub stat_baseline: Mutex<StatBaseline>,
    /// Error replies by their first word (INFO's Errorstats).
    pub errors_by_prefix: Mutex<BTreeMap<String, u64>>,
    /// Keeps transactions whole: see [`Gate`].
    pub gate: Gate,
    /// Clients blocked on keys.
    pub waiters: Waiters,
    /// Pub/sub subscriptions.
    pub pubsub: crate::pubsub::PubSub,
}

impl Node {
    /// Wraps an open store.
    pub fn new(store: Store, cfg: Config) -> Node {
        let cache = LocalCache::new(if cfg.local_cache_hotkeys {
            cfg.local_cache_entries
        } else {
            0
        });
        // The same id the cluster layer uses, stable across restarts.
        let node_id = match crate::cluster::node_id(&cfg.storage.data_dir) {
            Ok(id) => format!("{id:016x}"),
            Err(_) => format!(
                "{:016x}",
                xxhash_rust::xxh3::xxh3_64(cfg.storage.data_dir.to_string_lossy().as_bytes())
                    ^ now_ms()
            ),
        };
        Node {
            store,
            cfg: RwLock::new(cfg),
            metrics: Metrics::default(),
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            started: Instant::now(),
            local_cache: cache,
            resp_addr: OnceLock::new(),
            http_addr: OnceLock::new(),
            shutdown: CancellationToken::new(),
            total_commands: AtomicU64::new(0),
            node_id,
            stat_baseline: Mutex::new(StatBaseline::default()),
            errors_by_prefix: Mutex::new(BTreeMap::new()),
            cluster: OnceLock::new(),
            gate: Gate::default(),
            waiters: Waiters::default(),
            pubsub: crate::pubsub::PubSub::default(),
        }
    }
}

thread_local! {
    /// Whether this thread holds the gate (shared or exclusive).
    static GATE_HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What keeps a transaction or script whole: every command runs holding
/// the gate shared, and EXEC holds it exclusively, so no other client's
/// command runs between the commands of a transaction. Commands run
/// inside one (queued commands, nested calls) don't take it again.
#[derive(Default)]
pub struct Gate {
    lock: RwLock<()>,
}

/// A hold on the [`Gate`], released on drop.
pub struct GateGuard<'a> {
    _shared: Option<parking_lot::RwLockReadGuard<'a, ()>>,
    _exclusive: Option<parking_lot::RwLockWriteGuard<'a, ()>>,
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        GATE_HELD.with(|h| h.set(false));
    }
}

impl Gate {
    /// Holds the gate shared; None if this thread already holds it.
    pub fn shared(&self) -> Option<GateGuard<'_>> {
        if GATE_HELD.with(std::cell::Cell::get) {
            return None;
        }
        let g = self.lock.read();
        GATE_HELD.with(|h| h.set(true));
        Some(GateGuard {
            _shared: Some(g),
            _exclusive: None,
        })
    }

    /// Holds the gate alone; None if this thread already holds it.
    pub fn exclusive(&self) -> Option<GateGuard<'_>> {
        if GATE_HELD.with(std::cell::Cell::get) {
            return None;
        }
        let g = self.lock.write();
        GATE_HELD.with(|h| h.set(true));
        Some(GateGuard {
            _shared: None,
            _exclusive: Some(g),
        })
    }
}

/// One blocked client's place in the queues of the keys it waits on.
pub struct WaitSlot {
    /// Rung when a key it waits on may have something for it.
    pub ready: tokio::sync::Notify,
}

/// Clients blocked on keys, first come first served per key. A write
/// that creates a key (or XADD) wakes the first client waiting on it;
/// a client that got what it waited for, gave up or left wakes the next,
/// so a push of several items serves several clients in order.
#[derive(Default)]
pub struct Waiters {
    count: std::sync::atomic::AtomicUsize,
    queues: Mutex<HashMap<(usize, Vec<u8>), VecDeque<Arc<WaitSlot>>>>,
}

/// A client's registration in [`Waiters`], removed on drop.
pub struct Waiting<'a> {
    waiters: &'a Waiters,
    keys: Vec<(usize, Vec<u8>)>,
    /// The client's slot.
    pub slot: Arc<WaitSlot>,
}

impl Waiters {
    /// Queues a client behind the ones already waiting on `keys`.
    pub fn wait(&self, keys: Vec<(usize, Vec<u8>)>) -> Waiting<'_> {
        let slot = Arc::new(WaitSlot {
            ready: tokio::sync::Notify::new(),
        });
        let mut q = self.queues.lock();
        for k in &keys {
            q.entry(k.clone()).or_default().push_back(slot.clone());
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        Waiting {
            waiters: self,
            keys,
            slot,
        }
    }

    /// Something may be waiting for `key`: wake the first client in line.
    pub fn signal(&self, db: usize, key: &[u8]) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let q = self.queues.lock();
        if let Some(first) = q.get(&(db, key.to_vec())).and_then(VecDeque::front) {
            first.ready.notify_one();
        }
    }

    /// Clients blocked right now.
    pub fn blocked(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Keys someone is blocked on.
    pub fn keys(&self) -> usize {
        self.queues.lock().len()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut q = self.waiters.queues.lock();
        for k in &self.keys {
            let Some(line) = q.get_mut(k) else { continue };
            line.retain(|s| !Arc::ptr_eq(s, &self.slot));
            match line.front() {
                // Whatever this client did or did not take, the next in
                // line looks for itself.
                Some(next) => next.ready.notify_one(),
                None => {
                    q.remove(k);
                }
            }
        }
        self.waiters.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// INFO counters are shown relative to these (CONFIG RESETSTAT);
/// Prometheus counters never reset.
#[derive(Default, Clone)]
pub struct StatBaseline {
    /// Connections accepted.
    pub connections: u64,
    /// Commands processed.
    pub commands: u64,
    /// Connections rejected.
    pub rejected: u64,
    /// Keys expired.
    pub expired: u64,
    /// Keyspace hits.
    pub hits: u64,
    /// Keyspace misses.
    pub misses: u64,
}

/// An exact LRU of hot values (database 0) for the HTTP read path, as seed
/// 000's ingestor keeps in front of its cache. Every write to a key
/// invalidates it, so it never serves a stale value.
pub struct LocalCache {
    capacity: usize,
    nonempty: AtomicBool,
    inner: Mutex<LruInner>,
}

#[derive(Default)]
struct LruInner {
    map: HashMap<Vec<u8>, (String, Option<u64>, u64)>,
    order: VecDeque<(Vec<u8>, u64)>,
    tick: u64,
}

impl LocalCache {
    /// A cache of `capacity` entries (0 disables it).
    pub fn new(capacity: usize) -> LocalCache {
        LocalCache {
            capacity,
            nonempty: AtomicBool::new(false),
            inner: Mutex::new(LruInner::default()),
        }
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The value of `key` if cached and unexpired.
    pub fn get(&self, key: &[u8]) -> Option<String> {
        if !self.nonempty.load(Ordering::Acquire) {
            return None;
        }
        let mut g = self.inner.lock();
        let now = now_ms();
        g.tick += 1;
        let tick = g.tick;
        let hit = match g.map.get_mut(key) {
            Some((_, Some(at), _)) if *at <= now => None,
            Some((v, _, t)) => {
                *t = tick;
                Some(v.clone())
            }
            None => return None,
        };
        match hit {
            Some(v) => {
                g.order.push_back((key.to_vec(), tick));
                Some(v)
            }
            None => {
                g.map.remove(key);
                None
            }
        }
    }

    /// Caches `value` for `key`.
    pub fn put(&self, key: &[u8], value: String, expire_at_ms: Option<u64>) {
        if self.capacity == 0 {
            return;
        }
        let mut g = self.inner.lock();
        g.tick += 1;
        let tick = g.tick;
        g.map.insert(key.to_vec(), (value, expire_at_ms, tick));
        g.order.push_back((key.to_vec(), tick));
        while g.map.len() > self.capacity {
            let Some((k, t)) = g.order.pop_front() else {
                break;
            };
            if g.map.get(&k).is_some_and(|e| e.2 == t) {
                g.map.remove(&k);
            }
        }
        if g.order.len() > 4 * self.capacity + 16 {
            let LruInner { map, order, .. } = &mut *g;
            order.retain(|(k, t)| map.get(k).is_some_and(|e| e.2 == *t));
        }
        self.nonempty.store(true, Ordering::Release);
    }

    /// Drops `key` (called on every write to it).
    pub fn invalidate(&self, key: &[u8]) {
        if self.nonempty.load(Ordering::Acquire) {
            self.inner.lock().map.remove(key);
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut g = self.inner.lock();
        g.map.clear();
        g.order.clear();
        self.nonempty.store(false, Ordering::Release);
    }
}
