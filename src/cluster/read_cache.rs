//! Hot keys read on every node (seed 000's local cache of hot keys), kept
//! coherent with their shard's writes by leases that the shard's leader
//! grants.
//!
//! ```text
//! GET k on a node that doesn't lead k's shard, k hot on this node:
//!   cached, lease unexpired ─> answered here
//!   otherwise ─> fetch from the leader: it confirms its leadership, records this node as
//!                a holder of k, reads k ─> cached here until LEASE after the fetch was sent
//! a write to k applied on the leader ─> "drop k" to each holder ─> the write is acknowledged
//!   (a holder that doesn't answer: the leader waits until that holder's lease has run out)
//! a cached key still being read ─> its lease renewed in the background, in one batch per shard
//! ```
//!
//! A lease starts on the holder's clock when it sent the fetch, so a slow
//! answer only shortens it. A leader grants one only while its leadership
//! was confirmed by a majority less than the read lease ago, and those
//! followers elect no one else for `ELECTION_MAX_MS` after that. A lease
//! ends before then, so every lease a deposed leader granted has run out
//! before its successor can commit a write: a read served from this cache
//! never misses a write acknowledged before it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::types::{PeerNode, PeerRequest, ShardInfo};
use super::{Cluster, ClusterError, ELECTION_MAX_MS, LEASE};
use crate::slot::slot_of;

/// How long a cached key may be served after its fetch was sent: what is
/// left of the followers' refusal to vote once the read lease is used up,
/// less a margin for clock drift.
pub const CACHE_LEASE: Duration =
    Duration::from_millis(ELECTION_MAX_MS - LEASE.as_millis() as u64 - 100);

/// How often cached keys that are still read get their leases renewed.
pub(super) const RENEW_EVERY: Duration = Duration::from_millis(100);

/// A lease with less than this left is renewed if its key was read.
const RENEW_BEFORE: Duration = Duration::from_millis(200);

/// How long a fetch from the leader may take.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// A key's value as its shard's leader read it for a holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheRead {
    /// A string, with the time it has left to live.
    Value {
        /// The value.
        value: Bytes,
        /// Milliseconds left before it expires (None: it doesn't).
        ttl_ms: Option<u64>,
    },
    /// No such key.
    Absent,
    /// Not cached: the key holds another type, or its shard isn't led
    /// there.
    Uncacheable,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct CacheStats {
    /// Fetches sent to leaders (reads that missed and renewals).
    pub fetches: AtomicU64,
    /// Leases granted as a leader.
    pub granted: AtomicU64,
    /// Holders told to drop a changed key.
    pub dropped_told: AtomicU64,
    /// Holders that didn't answer a drop, whose lease was waited out.
    pub dropped_waited: AtomicU64,
}

/// A cached value.
struct Entry {
    value: Bytes,
    /// Served until then.
    until: Instant,
    group: u32,
    /// Read since it was fetched: worth renewing.
    read: bool,
}

#[derive(Default)]
struct Held {
    /// Per database: cached keys.
    entries: HashMap<u8, HashMap<Bytes, Entry>>,
    /// Fetches in flight: a drop that arrives meanwhile cancels them.
    pending: HashMap<(u8, Bytes), u64>,
    next_token: u64,
}

/// The holder's side: values of other shards' hot keys.
pub struct ReadCache {
    capacity: usize,
    nonempty: AtomicBool,
    held: Mutex<Held>,
}

impl ReadCache {
    /// A cache of at most `capacity` keys (0: off).
    pub fn new(capacity: usize) -> ReadCache {
        ReadCache {
            capacity,
            nonempty: AtomicBool::new(false),
            held: Mutex::new(Held::default()),
        }
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Keys cached now.
    pub fn len(&self) -> usize {
        self.held.lock().entries.values().map(HashMap::len).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key` if cached under a live lease.
    pub fn get(&self, db: u8, key: &[u8]) -> Option<Bytes> {
        if !self.nonempty.load(Ordering::Acquire) {
            return None;
        }
        let mut held = self.held.lock();
        let e = held.entries.get_mut(&db)?.get_mut(key)?;
        if e.until <= Instant::now() {
            return None;
        }
        e.read = true;
        Some(e.value.clone())
    }

    /// Notes a fetch of `key` about to be sent; None if the cache is full.
    fn begin(&self, db: u8, key: &Bytes) -> Option<u64> {
        let mut held = self.held.lock();
        let cached = held.entries.get(&db).is_some_and(|m| m.contains_key(key));
        if !cached
            && held.entries.values().map(HashMap::len).sum::<usize>() + held.pending.len()
                >= self.capacity
        {
            return None;
        }
        held.next_token += 1;
        let token = held.next_token;
        held.pending.insert((db, key.clone()), token);
        Some(token)
    }

    /// Caches what fetch `token` brought, unless `key` was dropped since
    /// the fetch was sent.
    fn install(
        &self,
        db: u8,
        key: Bytes,
        token: u64,
        read: &CacheRead,
        until: Instant,
        group: u32,
    ) {
        let mut held = self.held.lock();
        let k = (db, key);
        if held.pending.get(&k) != Some(&token) {
            return;
        }
        held.pending.remove(&k);
        let (db, key) = k;
        match read {
            CacheRead::Value { value, .. } if until > Instant::now() => {
                held.entries.entry(db).or_default().insert(
                    key,
                    Entry {
                        value: value.clone(),
                        until,
                        group,
                        read: false,
                    },
                );
                self.nonempty.store(true, Ordering::Release);
            }
            _ => {
                if let Some(m) = held.entries.get_mut(&db) {
                    m.remove(&key);
                }
            }
        }
    }

    /// Forgets fetch `token` of `key` (it failed).
    fn abort(&self, db: u8, key: Bytes, token: u64) {
        let mut held = self.held.lock();
        let k = (db, key);
        if held.pending.get(&k) == Some(&token) {
            held.pending.remove(&k);
        }
    }

    /// Drops `key`: it changed.
    pub fn invalidate(&self, db: u8, key: &[u8]) {
        if !self.nonempty.load(Ordering::Acquire) && self.held.lock().pending.is_empty() {
            return;
        }
        let mut held = self.held.lock();
        if let Some(m) = held.entries.get_mut(&db) {
            m.remove(key);
        }
        held.pending.remove(&(db, Bytes::copy_from_slice(key)));
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut held = self.held.lock();
        held.entries.clear();
        held.pending.clear();
        self.nonempty.store(false, Ordering::Release);
    }

    /// The keys to renew now, per group and database, each with its
    /// fetch token; forgets expired keys nobody read.
    fn due(&self, now: Instant) -> HashMap<(u32, u8), Vec<(Bytes, u64)>> {
        let mut out: HashMap<(u32, u8), Vec<(Bytes, u64)>> = HashMap::new();
        let mut held = self.held.lock();
        let mut renew = Vec::new();
        for (db, m) in &mut held.entries {
            m.retain(|key, e| {
                if e.read && e.until <= now + RENEW_BEFORE {
                    e.read = false;
                    renew.push((e.group, *db, key.clone()));
                }
                e.until > now || renew.last().is_some_and(|r| r.2 == *key)
            });
        }
        for (group, db, key) in renew {
            held.next_token += 1;
            let token = held.next_token;
            held.pending.insert((db, key.clone()), token);
            out.entry((group, db)).or_default().push((key, token));
        }
        if held.entries.values().all(HashMap::is_empty) {
            self.nonempty.store(false, Ordering::Release);
        }
        out
    }
}

/// Holders per database and key.
#[derive(Default)]
struct Granted {
    keys: HashMap<u8, HashMap<Bytes, Vec<(u64, Instant)>>>,
    /// Past this many keys, those whose leases all ran out are forgotten.
    prune_at: usize,
}

/// The leader's side: who caches which keys, and drops in flight.
#[derive(Default)]
pub struct Leases {
    /// Keys with holders.
    count: AtomicUsize,
    held: Mutex<Granted>,
    /// Drops being delivered, by sequence number.
    dropping: Mutex<BTreeSet<u64>>,
    next_drop: AtomicU64,
    dropped: tokio::sync::Notify,
}

impl Leases {
    /// Records `node` as a holder of `key` until `until`.
    fn grant(&self, db: u8, key: Bytes, node: u64, until: Instant) {
        let mut held = self.held.lock();
        let n: usize = held.keys.values().map(HashMap::len).sum();
        if n >= held.prune_at.max(1024) {
            let now = Instant::now();
            for m in held.keys.values_mut() {
                m.retain(|_, hs| {
                    hs.retain(|h| h.1 > now);
                    !hs.is_empty()
                });
            }
            held.prune_at = 2 * held.keys.values().map(HashMap::len).sum::<usize>();
        }
        let holders = held.keys.entry(db).or_default().entry(key).or_default();
        match holders.iter_mut().find(|h| h.0 == node) {
            Some(h) => h.1 = h.1.max(until),
            None => holders.push((node, until)),
        }
        let n = held.keys.values().map(HashMap::len).sum();
        self.count.store(n, Ordering::Release);
    }

    /// Takes the holders of `key` whose lease still runs.
    fn take(&self, db: u8, key: &[u8]) -> Vec<(u64, Instant)> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let mut held = self.held.lock();
        let Some(holders) = held.keys.get_mut(&db).and_then(|m| m.remove(key)) else {
            return Vec::new();
        };
        let n = held.keys.values().map(HashMap::len).sum();
        self.count.store(n, Ordering::Release);
        let now = Instant::now();
        holders.into_iter().filter(|h| h.1 > now).collect()
    }

    fn begin_drop(&self) -> u64 {
        let seq = self.next_drop.fetch_add(1, Ordering::AcqRel);
        self.dropping.lock().insert(seq);
        seq
    }

    fn end_drop(&self, seq: u64) {
        self.dropping.lock().remove(&seq);
        self.dropped.notify_waiters();
    }

    /// Resolves once every drop begun before the call is delivered.
    async fn fence(&self) {
        if self.dropping.lock().is_empty() {
            return;
        }
        let upto = self.next_drop.load(Ordering::Acquire);
        loop {
            let notified = self.dropped.notified();
            if self.dropping.lock().first().is_none_or(|s| *s >= upto) {
                return;
            }
            notified.await;
        }
    }
}

impl Cluster {
    /// `key` was changed here: drop it from this node's cache and, as its
    /// shard's leader, from every node that caches it. The write's client
    /// is answered after that (see [`Cluster::cache_fence`]).
    pub fn written(self: &Arc<Self>, db: u8, key: &[u8]) {
        self.read_cache.invalidate(db, key);
        let holders = self.cache_leases.take(db, key);
        if holders.is_empty() {
            return;
        }
        let seq = self.cache_leases.begin_drop();
        let me = self.clone();
        let key = Bytes::copy_from_slice(key);
        self.runtime.spawn(async move {
            let Ok(req) = bincode::serialize(&PeerRequest::CacheDrop {
                db,
                keys: vec![key],
            }) else {
                me.cache_leases.end_drop(seq);
                return;
            };
            let addrs = me.layout.borrow().nodes.clone();
            let tell = holders.into_iter().map(|(id, until)| {
                let addr = addrs.get(&id).map(|n| n.cluster.clone());
                let (me, req) = (me.clone(), req.clone());
                async move {
                    let left = until.saturating_duration_since(Instant::now());
                    let told = match addr {
                        Some(addr) => me.peers.call(&addr, &req, left).await.is_ok(),
                        None => false,
                    };
                    if told {
                        me.cache_stats.dropped_told.fetch_add(1, Ordering::Relaxed);
                    } else {
                        // Unreachable, paused or gone: it stops serving
                        // the key when its lease runs out.
                        tokio::time::sleep_until(until.into()).await;
                        me.cache_stats
                            .dropped_waited
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            futures_util::future::join_all(tell).await;
            me.cache_leases.end_drop(seq);
        });
    }

    /// Waits until every node caching a key changed by writes applied so
    /// far has dropped it (or its lease ran out).
    pub(super) async fn cache_fence(&self) {
        self.cache_leases.fence().await;
    }

    /// The value of `key` if this node caches it under a live lease.
    pub fn cached(&self, db: u8, key: &[u8]) -> Option<Bytes> {
        self.read_cache.get(db, key)
    }

    /// Whether this node caches other shards' hot keys.
    pub fn caches(&self) -> bool {
        self.read_cache.enabled()
    }

    /// Keys cached here now.
    pub fn cached_keys(&self) -> usize {
        self.read_cache.len()
    }

    /// Reads `key` from its shard's leader and caches it here under a
    /// lease; None if that failed (the caller reads it the usual way).
    pub async fn fetch_cached(&self, shard: &ShardInfo, db: u8, key: &Bytes) -> Option<CacheRead> {
        let (id, peer) = self.leader_of(shard)?;
        if id == self.id {
            return None;
        }
        let token = self.read_cache.begin(db, key)?;
        let sent = Instant::now();
        match self
            .fetch(&peer, shard.group, db, vec![key.clone()])
            .await
            .map(|mut v| v.pop().filter(|_| v.is_empty()))
        {
            Ok(Some(read)) => {
                let until = lease_end(sent, &read);
                self.read_cache
                    .install(db, key.clone(), token, &read, until, shard.group);
                Some(read)
            }
            _ => {
                self.read_cache.abort(db, key.clone(), token);
                None
            }
        }
    }

    async fn fetch(
        &self,
        leader: &PeerNode,
        group: u32,
        db: u8,
        keys: Vec<Bytes>,
    ) -> Result<Vec<CacheRead>, String> {
        self.cache_stats.fetches.fetch_add(1, Ordering::Relaxed);
        let n = keys.len();
        let req = bincode::serialize(&PeerRequest::CacheFetch { group, db, keys })
            .map_err(|e| e.to_string())?;
        let answer = self
            .peers
            .call(&leader.cluster, &req, FETCH_WAIT)
            .await
            .map_err(|e| e.to_string())?;
        let reads: Vec<CacheRead> = bincode::deserialize(&answer).map_err(|e| e.to_string())?;
        if reads.len() != n {
            return Err("a fetch answered for the wrong number of keys".into());
        }
        Ok(reads)
    }

    /// Renews the leases of cached keys that are still read.
    pub(super) async fn renew_cached(self: &Arc<Self>) {
        if !self.read_cache.enabled() {
            return;
        }
        let due = self.read_cache.due(Instant::now());
        for ((group, db), keys) in due {
            let me = self.clone();
            tokio::spawn(async move {
                let leader = me.shard_leader_by_group(group).filter(|l| l.0 != me.id);
                let sent = Instant::now();
                let names: Vec<Bytes> = keys.iter().map(|k| k.0.clone()).collect();
                let reads = match &leader {
                    Some((_, peer)) => me.fetch(peer, group, db, names).await.ok(),
                    None => None,
                };
                match reads {
                    Some(reads) => {
                        for ((key, token), read) in keys.into_iter().zip(reads) {
                            let until = lease_end(sent, &read);
                            me.read_cache.install(db, key, token, &read, until, group);
                        }
                    }
                    None => {
                        for (key, token) in keys {
                            me.read_cache.abort(db, key, token);
                        }
                    }
                }
            });
        }
    }

    /// As `group`'s leader: records `from` as a holder of `keys` and reads
    /// them for it.
    pub(super) async fn grant_cached(
        &self,
        from: u64,
        group: u32,
        db: u8,
        keys: Vec<Bytes>,
    ) -> Result<Vec<CacheRead>, ClusterError> {
        self.read_barrier(group).await?;
        let f = self
            .forwarded
            .get()
            .ok_or_else(|| ClusterError::Peer("node is starting".into()))?
            .clone();
        let shard = self.shard_by_group(group);
        // Counted from before the read barrier's confirmation could be
        // older: the holder's own clock started earlier still.
        let until = Instant::now() + CACHE_LEASE;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if !shard.as_ref().is_some_and(|s| s.owns(slot_of(&key))) {
                out.push(CacheRead::Uncacheable);
                continue;
            }
            // Recorded before the read: a write applied after the read
            // finds the holder and tells it.
            self.cache_leases.grant(db, key.clone(), from, until);
            out.push(f.cache_read(db, &key));
        }
        self.cache_stats
            .granted
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }
}

/// When a lease fetched at `sent` ends: [`CACHE_LEASE`] later, or when
/// the key expires if sooner.
fn lease_end(sent: Instant, read: &CacheRead) -> Instant {
    let ttl = match read {
        CacheRead::Value {
            ttl_ms: Some(ms), ..
        } => Duration::from_millis(*ms),
        _ => CACHE_LEASE,
    };
    sent + CACHE_LEASE.min(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &'static str) -> CacheRead {
        CacheRead::Value {
            value: Bytes::from_static(v.as_bytes()),
            ttl_ms: None,
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn a_fetch_installs_and_a_drop_removes() {
        let c = ReadCache::new(10);
        let k = Bytes::from_static(b"k");
        assert_eq!(c.get(0, b"k"), None);
        let t = c.begin(0, &k).expect("room");
        c.install(0, k.clone(), t, &value("v1"), later(), 3);
        assert_eq!(c.get(0, b"k"), Some(Bytes::from_static(b"v1")));
        assert_eq!(c.get(1, b"k"), None, "databases are apart");
        c.invalidate(0, b"k");
        assert_eq!(c.get(0, b"k"), None);
    }

    #[test]
    fn a_drop_during_the_fetch_cancels_it() {
        let c = ReadCache::new(10);
        let k = Bytes::from_static(b"k");
        let t = c.begin(0, &k).expect("room");
        c.invalidate(0, b"k");
        c.install(0, k.clone(), t, &value("old"), later(), 3);
        assert_eq!(
            c.get(0, b"k"),
            None,
            "a value fetched before a drop is not kept"
        );
        // A later fetch is kept.
        let t2 = c.begin(0, &k).expect("room");
        c.install(0, k, t2, &value("new"), later(), 3);
        assert_eq!(c.get(0, b"k"), Some(Bytes::from_static(b"new")));
    }

    #[test]
    fn an_expired_lease_is_not_served() {
        let c = ReadCache::new(10);
        let k = Bytes::from_static(b"k");
        let t = c.begin(0, &k).expect("room");
        c.install(
            0,
            k.clone(),
            t,
            &value("v"),
            Instant::now() - Duration::from_millis(1),
            3,
        );
        assert_eq!(c.get(0, b"k"), None);
        let t = c.begin(0, &k).expect("room");
        c.install(
            0,
            k,
            t,
            &value("v"),
            Instant::now() + Duration::from_millis(30),
            3,
        );
        assert!(c.get(0, b"k").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(0, b"k"), None);
    }

    #[test]
    fn only_keys_read_since_their_fetch_are_renewed() {
        let c = ReadCache::new(10);
        for (k, g) in [("a", 1), ("b", 1), ("c", 2)] {
            let k = Bytes::from_static(k.as_bytes());
            let t = c.begin(0, &k).expect("room");
            c.install(
                0,
                k,
                t,
                &value("v"),
                Instant::now() + Duration::from_millis(100),
                g,
            );
        }
        c.get(0, b"a");
        c.get(0, b"c");
        let due = c.due(Instant::now());
        let names = |g: u32| -> Vec<Bytes> {
            due.get(&(g, 0))
                .map(|v| v.iter().map(|k| k.0.clone()).collect())
                .unwrap_or_default()
        };
        assert_eq!(names(1), vec![Bytes::from_static(b"a")]);
        assert_eq!(names(2), vec![Bytes::from_static(b"c")]);
        // Unread and expired: forgotten.
        let later = c.due(Instant::now() + Duration::from_secs(1));
        assert!(later.is_empty());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_full_cache_fetches_nothing_new() {
        let c = ReadCache::new(1);
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        let t = c.begin(0, &a).expect("room");
        c.install(0, a.clone(), t, &value("v"), later(), 1);
        assert!(c.begin(0, &b).is_none());
        assert!(c.begin(0, &a).is_some(), "a cached key can be renewed");
    }

    #[test]
    fn leases_are_taken_once_and_only_while_they_run() {
        let l = Leases::default();
        assert!(l.take(0, b"k").is_empty());
        l.grant(0, Bytes::from_static(b"k"), 7, later());
        l.grant(
            0,
            Bytes::from_static(b"k"),
            9,
            Instant::now() - Duration::from_millis(1),
        );
        l.grant(0, Bytes::from_static(b"k"), 7, Instant::now());
        let holders: Vec<u64> = l.take(0, b"k").into_iter().map(|h| h.0).collect();
        assert_eq!(
            holders,
            vec![7],
            "the expired holder is left out, a renewal keeps the later end"
        );
        assert!(l.take(0, b"k").is_empty(), "a drop is sent once per grant");
    }

    #[tokio::test]
    async fn the_fence_waits_for_drops_begun_before_it() {
        let l = Arc::new(Leases::default());
        l.fence().await;
        let first = l.begin_drop();
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.fence().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = l.begin_drop();
        assert!(!waiter.is_finished(), "a drop in flight holds the fence");
        l.end_drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a drop begun after the fence doesn't hold it")
            .expect("fence");
        l.end_drop(second);
    }
}
