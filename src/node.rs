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
    /// Where messages for it go (pub/sub, invalidations redirected to it).
    pub outbox: OnceLock<crate::pubsub::Subscriber>,
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
            outbox: OnceLock::new(),
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
    /// Channels subscribed to.
    pub channels: usize,
    /// Patterns subscribed to.
    pub patterns: usize,
    /// Shard channels subscribed to.
    pub shard_channels: usize,
    /// Commands queued since MULTI.
    pub queued: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// How CLIENT UNBLOCK asked the blocked command to end: with an error
    /// rather than as if it had timed out.
    pub unblock_error: bool,
    /// The ACL user it is logged in as (empty before it logs in).
    pub user: String,
    /// CLIENT NO-EVICT on.
    pub no_evict: bool,
    /// CLIENT NO-TOUCH on.
    pub no_touch: bool,
}

impl ClientState {
    /// Whether it is subscribed to anything.
    pub fn pubsub(&self) -> bool {
        self.channels + self.patterns + self.shard_channels > 0
    }
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
    /// MONITOR connections.
    pub monitors: crate::pubsub::Monitors,
    /// CLIENT TRACKING: who may cache which key.
    pub tracking: crate::tracking::Tracking,
    /// Access counts per key, and the hot ones.
    pub hotkeys: crate::ops::hotkeys::HotKeys,
    /// The metric pipeline's layout and counters.
    pub pipeline: crate::pipeline::Pipeline,
    /// Lua scripts and function libraries.
    pub scripts: crate::scripting::Scripts,
    /// The thread that runs scripts and transactions (see [`Runner`]).
    pub runner: Runner,
    /// Users and their permissions.
    pub acl: crate::acl::Acl,
    /// Keyspace notification classes on (see [`crate::pubsub::events`]).
    pub notify: std::sync::atomic::AtomicU32,
    /// SLOWLOG: the slowest recent commands, newest first.
    pub slowlog: Mutex<VecDeque<SlowEntry>>,
    /// Next slow log entry id.
    pub slowlog_ids: AtomicU64,
    /// `slowlog-log-slower-than` in microseconds (negative: off).
    pub slowlog_slower_than: std::sync::atomic::AtomicI64,
    /// `latency-monitor-threshold` in milliseconds (0: off).
    pub latency_threshold_ms: AtomicU64,
    /// The latency monitor's spikes, by event.
    pub latency: Mutex<BTreeMap<&'static str, LatencySeries>>,
    /// CLIENT PAUSE.
    pub pause: Pause,
    /// Health, alerts, samples for the dashboard, the autoscaler.
    pub monitor: crate::ops::Monitor,
}

/// CLIENT PAUSE: holds every client's commands (or only those that may
/// write) until a deadline or CLIENT UNPAUSE.
#[derive(Default)]
pub struct Pause {
    /// Set while a pause may be in force: the one check on the fast path.
    on: AtomicBool,
    /// Until when, and whether reads are held too.
    state: Mutex<Option<(Instant, bool)>>,
    changed: tokio::sync::Notify,
}

impl Pause {
    /// Whether a pause may be in force.
    pub fn active(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Pauses until `until`; a pause already in force keeps the later
    /// deadline and the stricter mode, as in Redis.
    pub fn start(&self, until: Instant, all: bool) {
        let mut st = self.state.lock();
        let next = match *st {
            Some((u, a)) => (u.max(until), a || all),
            None => (until, all),
        };
        *st = Some(next);
        self.on.store(true, Ordering::Release);
        drop(st);
        self.changed.notify_waiters();
    }

    /// CLIENT UNPAUSE.
    pub fn stop(&self) {
        *self.state.lock() = None;
        self.on.store(false, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Waits while a pause holds a command (`pausable`: see
    /// `commands::pausable`; None is never held).
    pub async fn wait(&self, pausable: Option<bool>) {
        let Some(writes) = pausable else {
            return;
        };
        loop {
            let changed = self.changed.notified();
            let Some((until, all)) = *self.state.lock() else {
                return;
            };
            if Instant::now() >= until {
                self.stop();
                return;
            }
            if !all && !writes {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                () = changed => {}
            }
        }
    }
}

/// One SLOWLOG entry.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    /// Unique, increasing.
    pub id: u64,
    /// When the command ran, Unix seconds.
    pub unix_secs: u64,
    /// How long it took.
    pub micros: u64,
    /// Its arguments, shortened.
    pub args: Vec<bytes::Bytes>,
    /// The client's address.
    pub addr: String,
    /// The client's name.
    pub name: String,
}

/// One latency monitor event's spikes: one sample per second, the latest
/// 160, and the worst ever.
#[derive(Debug, Clone, Default)]
pub struct LatencySeries {
    /// (Unix seconds, milliseconds).
    pub samples: VecDeque<(u64, u64)>,
    /// The worst, milliseconds.
    pub max: u64,
}

impl Node {
    /// The keyspace notification classes that are on; 0 when none would
    /// be published (neither `K` nor `E`).
    pub fn notify_flags(&self) -> u32 {
        let f = self.notify.load(Ordering::Relaxed);
        let targets = crate::pubsub::events::KEYSPACE | crate::pubsub::events::KEYEVENT;
        if f & targets == 0 {
            0
        } else {
            f
        }
    }

    /// Wraps an open store.
    pub fn new(store: Store, cfg: Config, acl: crate::acl::Acl) -> Node {
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
        let cfg_dir = cfg.storage.data_dir.clone();
        let persist = cfg_dir.is_dir();
        let lua_memory = cfg.lua_memory_limit as usize;
        let hotkeys = crate::ops::hotkeys::HotKeys::new(cfg.hotkey_threshold_per_min);
        let pipeline = crate::pipeline::Pipeline::new(&cfg.streams);
        let monitor = crate::ops::Monitor::new(&cfg, &node_id);
        let notify = crate::pubsub::events::parse(&cfg.notify_keyspace_events).unwrap_or(0);
        let slowlog_slower_than = cfg.slowlog_log_slower_than;
        let latency_threshold_ms = cfg.latency_monitor_threshold;
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
            monitors: crate::pubsub::Monitors::default(),
            tracking: crate::tracking::Tracking::default(),
            hotkeys,
            pipeline,
            scripts: crate::scripting::Scripts::new(
                Some(cfg_dir.join("functions.json")).filter(|_| persist),
                lua_memory,
            ),
            runner: Runner::default(),
            acl,
            notify: std::sync::atomic::AtomicU32::new(notify),
            slowlog: Mutex::new(VecDeque::new()),
            slowlog_ids: AtomicU64::new(0),
            slowlog_slower_than: std::sync::atomic::AtomicI64::new(slowlog_slower_than),
            latency_threshold_ms: AtomicU64::new(latency_threshold_ms),
            latency: Mutex::new(BTreeMap::new()),
            pause: Pause::default(),
            monitor,
        }
    }
}

thread_local! {
    /// Whether this thread holds the gate (shared or exclusive).
    static GATE_HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What keeps a transaction or script whole: every command runs holding
/// the gate shared, and EXEC and scripts hold it exclusively, so no other
/// client's command runs between their commands. Commands run inside one
/// (queued commands, a script's calls) don't take it again.
///
/// A script that runs past `busy-reply-threshold` makes the gate answer
/// `-BUSY` instead of waiting, as Redis does.
#[derive(Default)]
pub struct Gate {
    lock: RwLock<()>,
    /// Someone holds the gate alone.
    closed: AtomicBool,
    /// Rung when the one holding the gate alone lets go.
    opened: tokio::sync::Notify,
    /// The script holding the gate now: when it started, its BUSY text,
    /// and after how long that applies.
    script: Mutex<Option<(Instant, &'static str, std::time::Duration)>>,
}

/// A hold on the [`Gate`], released on drop.
pub struct GateGuard<'a> {
    gate: &'a Gate,
    _shared: Option<parking_lot::RwLockReadGuard<'a, ()>>,
    _exclusive: Option<parking_lot::RwLockWriteGuard<'a, ()>>,
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        GATE_HELD.with(|h| h.set(false));
        if self._exclusive.is_some() {
            *self.gate.script.lock() = None;
            self.gate.closed.store(false, Ordering::Release);
            self.gate.opened.notify_waiters();
        }
    }
}

impl Gate {
    /// Holds the gate shared; None if this thread already holds it. While
    /// a script has run past its threshold, the `-BUSY` text instead.
    pub fn shared(&self) -> Result<Option<GateGuard<'_>>, &'static str> {
        if GATE_HELD.with(std::cell::Cell::get) {
            return Ok(None);
        }
        loop {
            if let Some(g) = self.lock.try_read_for(std::time::Duration::from_millis(20)) {
                GATE_HELD.with(|h| h.set(true));
                return Ok(Some(GateGuard {
                    gate: self,
                    _shared: Some(g),
                    _exclusive: None,
                }));
            }
            if let Some(busy) = self.busy() {
                return Err(busy);
            }
        }
    }

    /// Holds the gate alone; None if this thread already holds it.
    pub fn exclusive(&self) -> Option<GateGuard<'_>> {
        if GATE_HELD.with(std::cell::Cell::get) {
            return None;
        }
        let g = self.lock.write();
        self.closed.store(true, Ordering::Release);
        GATE_HELD.with(|h| h.set(true));
        Some(GateGuard {
            gate: self,
            _shared: None,
            _exclusive: Some(g),
        })
    }

    /// Says that a script runs under the exclusive hold, so that after
    /// `threshold` others get `busy` rather than wait.
    pub fn script_started(&self, busy: &'static str, threshold: std::time::Duration) {
        *self.script.lock() = Some((Instant::now(), busy, threshold));
    }

    /// The `-BUSY` text, while a script has held the gate past its
    /// threshold.
    pub fn busy(&self) -> Option<&'static str> {
        let s = self.script.lock();
        let (started, text, threshold) = (*s)?;
        (started.elapsed() >= threshold).then_some(text)
    }

    /// Waits, without blocking the thread, until nobody holds the gate
    /// alone or a script holding it has run past its threshold.
    pub async fn wait_open(&self) {
        while self.closed.load(Ordering::Acquire) && self.busy().is_none() {
            let opened = self.opened.notified();
            if !self.closed.load(Ordering::Acquire) {
                return;
            }
            // Re-checked now and then: the threshold passes silently.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(50), opened).await;
        }
    }
}

/// Work for the [`Runner`].
type Job = Box<dyn FnOnce() + Send>;

/// One thread that runs the work holding the gate alone (scripts, EXEC)
/// for connections, so a long script never stalls an I/O thread: other
/// clients on it keep getting answers (`-BUSY`, SCRIPT KILL).
#[derive(Default)]
pub struct Runner {
    queue: OnceLock<Mutex<std::sync::mpsc::Sender<Job>>>,
}

impl Runner {
    /// Runs `job` on the runner thread and waits for its result; None if
    /// the job failed (panicked) or the thread is gone.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let work: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("strata-scripts".into())
                .stack_size(crate::scripting::STACK_BYTES)
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!(
                                "a script or transaction panicked; its client is disconnected"
                            );
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting the script thread failed");
            }
            Mutex::new(tx)
        });
        queue.lock().send(work).ok()?;
        rx.await.ok()
    }
}

/// One blocked client's place in the queues of the keys it waits on.
pub struct WaitSlot {
    /// Rung when a key it waits on may have something for it.
    pub ready: tokio::sync::Notify,
    /// The node's own wait, not a client's.
    internal: bool,
}

/// Clients blocked on keys, first come first served per key. A write
/// that creates a key (or XADD) wakes the first client waiting on it;
/// a client that got what it waited for, gave up or left wakes the next,
/// so a push of several items serves several clients in order.
#[derive(Default)]
pub struct Waiters {
    count: std::sync::atomic::AtomicUsize,
    /// The node's own waits (pipeline workers), not clients: they are
    /// woken the same way but not reported as blocked clients.
    internal: std::sync::atomic::AtomicUsize,
    queues: Mutex<HashMap<(usize, Vec<u8>), VecDeque<Arc<WaitSlot>>>>,
}

/// A client's registration in [`Waiters`], removed on drop.
pub struct Waiting<'a> {
    waiters: &'a Waiters,
    internal: bool,
    keys: Vec<(usize, Vec<u8>)>,
    /// The client's slot.
    pub slot: Arc<WaitSlot>,
}

impl Waiters {
    /// Queues a client behind the ones already waiting on `keys`.
    pub fn wait(&self, keys: Vec<(usize, Vec<u8>)>) -> Waiting<'_> {
        self.enqueue(keys, false)
    }

    /// Waits on `keys` for the node itself (a pipeline worker): woken
    /// like a client, not counted as one.
    pub fn wait_internal(&self, keys: Vec<(usize, Vec<u8>)>) -> Waiting<'_> {
        self.enqueue(keys, true)
    }

    fn enqueue(&self, keys: Vec<(usize, Vec<u8>)>, internal: bool) -> Waiting<'_> {
        let slot = Arc::new(WaitSlot {
            ready: tokio::sync::Notify::new(),
            internal,
        });
        let mut q = self.queues.lock();
        for k in &keys {
            q.entry(k.clone()).or_default().push_back(slot.clone());
        }
        self.counter(internal).fetch_add(1, Ordering::Relaxed);
        Waiting {
            waiters: self,
            internal,
            keys,
            slot,
        }
    }

    fn counter(&self, internal: bool) -> &std::sync::atomic::AtomicUsize {
        if internal {
            &self.internal
        } else {
            &self.count
        }
    }

    fn nobody(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0 && self.internal.load(Ordering::Relaxed) == 0
    }

    /// Something may be waiting for `key`: wake the first client in line.
    pub fn signal(&self, db: usize, key: &[u8]) {
        if self.nobody() {
            return;
        }
        let q = self.queues.lock();
        if let Some(first) = q.get(&(db, key.to_vec())).and_then(VecDeque::front) {
            first.ready.notify_one();
        }
    }

    /// Every key of `db` may hold something new (SWAPDB): wakes the first
    /// client in line on each.
    pub fn signal_db(&self, db: usize) {
        if self.nobody() {
            return;
        }
        let q = self.queues.lock();
        for ((d, _), line) in q.iter() {
            if *d == db {
                if let Some(first) = line.front() {
                    first.ready.notify_one();
                }
            }
        }
    }

    /// Clients blocked right now.
    pub fn blocked(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Keys some client is blocked on.
    pub fn keys(&self) -> usize {
        self.queues
            .lock()
            .values()
            .filter(|line| line.iter().any(|s| !s.internal))
            .count()
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
        self.waiters
            .counter(self.internal)
            .fetch_sub(1, Ordering::Relaxed);
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
