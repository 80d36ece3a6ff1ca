//! Client-side caching (CLIENT TRACKING): which connection may hold which
//! key in its local cache, and the invalidation messages that tell it a
//! key changed.
//!
//! In the default mode the node remembers the keys each tracking
//! connection read, and forgets a key once it has said it changed, as
//! Redis does: the client reads it again to be told again. In broadcast
//! mode (BCAST) a connection is told of every change to keys under its
//! prefixes and nothing is remembered. Keys are tracked by name across
//! databases, like Redis. The table holds at most
//! `tracking-table-max-keys` keys; past that, the oldest-looking ones are
//! invalidated to make room, so clients drop them instead of the node
//! growing without bound.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::pubsub::{Limits, Message, Subscriber};

/// How a connection tracks keys (CLIENT TRACKING ON options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mode {
    /// BCAST: every change under `prefixes`, nothing remembered.
    pub bcast: bool,
    /// OPTIN: only keys read right after CLIENT CACHING YES.
    pub optin: bool,
    /// OPTOUT: every key read, except right after CLIENT CACHING NO.
    pub optout: bool,
    /// NOLOOP: not told of its own changes.
    pub noloop: bool,
    /// The client id invalidations go to (0: this connection).
    pub redirect: u64,
    /// BCAST prefixes (none: every key).
    pub prefixes: Vec<Bytes>,
}

struct Client {
    mode: Mode,
    /// This connection's inbox.
    own: Subscriber,
    /// The redirect target's inbox.
    target: Option<Subscriber>,
    /// The redirect target went away.
    broken: bool,
}

#[derive(Default)]
struct Table {
    /// Default mode: who may cache each key.
    keys: HashMap<Bytes, HashSet<u64>>,
    /// (key, client) pairs in `keys`.
    items: usize,
    clients: HashMap<u64, Client>,
}

/// The node's tracking table.
#[derive(Default)]
pub struct Tracking {
    /// Connections with tracking on: zero keeps the command path free of
    /// any tracking work.
    on: AtomicUsize,
    table: Mutex<Table>,
}

/// Counters for INFO.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Connections with tracking on.
    pub clients: usize,
    /// Keys remembered.
    pub keys: usize,
    /// (key, client) pairs remembered.
    pub items: usize,
    /// BCAST prefixes registered.
    pub prefixes: usize,
}

/// The error for a prefix that overlaps another of the same client.
pub fn overlap(existing: &[Bytes], new: &[Bytes]) -> Option<String> {
    let overlaps = |a: &[u8], b: &[u8]| a.starts_with(b) || b.starts_with(a);
    for (i, p) in new.iter().enumerate() {
        if let Some(e) = existing.iter().find(|e| overlaps(e, p)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(e)
            ));
        }
        if let Some(o) = new[i + 1..].iter().find(|o| overlaps(o, p)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(o)
            ));
        }
    }
    None
}

impl Tracking {
    /// Whether any connection tracks keys.
    pub fn active(&self) -> bool {
        self.on.load(Ordering::Relaxed) > 0
    }

    /// Turns tracking on (or changes its options) for client `id`. BCAST
    /// prefixes add to those it already has.
    pub fn enable(&self, id: u64, mut mode: Mode, own: Subscriber, target: Option<Subscriber>) {
        let mut t = self.table.lock();
        if let Some(old) = t.clients.remove(&id) {
            let mut prefixes = old.mode.prefixes;
            prefixes.append(&mut mode.prefixes);
            mode.prefixes = prefixes;
        } else {
            self.on.fetch_add(1, Ordering::Relaxed);
        }
        t.clients.insert(
            id,
            Client {
                mode,
                own,
                target,
                broken: false,
            },
        );
    }

    /// Turns tracking off for client `id` (also when it disconnects). Keys
    /// it read stay in the table until they change, without it.
    pub fn disable(&self, id: u64) {
        if self.table.lock().clients.remove(&id).is_some() {
            self.on.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Client `id`'s options and whether its redirect target is gone.
    pub fn mode_of(&self, id: u64) -> Option<(Mode, bool)> {
        let t = self.table.lock();
        t.clients.get(&id).map(|c| (c.mode.clone(), c.broken))
    }

    /// Remembers that client `id` read `keys`. Past `max_keys` (0: no
    /// limit) other keys are invalidated to make room.
    pub fn remember<'a>(
        &self,
        id: u64,
        keys: impl Iterator<Item = &'a Bytes>,
        max_keys: usize,
        limits: Limits,
    ) {
        let mut t = self.table.lock();
        for key in keys {
            let added = t.keys.entry(key.clone()).or_default().insert(id);
            t.items += usize::from(added);
        }
        if max_keys == 0 || t.keys.len() <= max_keys {
            return;
        }
        let excess = t.keys.len() - max_keys;
        let victims: Vec<Bytes> = t.keys.keys().take(excess).cloned().collect();
        let mut out: HashMap<u64, Vec<Bytes>> = HashMap::new();
        for key in victims {
            Self::take_key(&mut t, &key, None, &mut out);
        }
        Self::deliver(&mut t, out, limits);
    }

    /// Removes `key` from the table, noting it for each client that may
    /// cache it (but `by` if that client asked for NOLOOP).
    fn take_key(t: &mut Table, key: &Bytes, by: Option<u64>, out: &mut HashMap<u64, Vec<Bytes>>) {
        let Some(ids) = t.keys.remove(key) else {
            return;
        };
        t.items -= ids.len();
        for id in ids {
            let Some(c) = t.clients.get(&id) else {
                continue;
            };
            if c.mode.bcast || (c.mode.noloop && by == Some(id)) {
                continue;
            }
            out.entry(id).or_default().push(key.clone());
        }
    }

    /// `keys` changed, by client `by` (0: by the node itself, or through
    /// replication): tells every client that may cache them.
    pub fn invalidate(&self, keys: &[Bytes], by: u64, limits: Limits) {
        if !self.active() || keys.is_empty() {
            return;
        }
        let mut t = self.table.lock();
        let mut out: HashMap<u64, Vec<Bytes>> = HashMap::new();
        for key in keys {
            Self::take_key(&mut t, key, Some(by), &mut out);
        }
        for (&id, c) in &t.clients {
            if !c.mode.bcast || (c.mode.noloop && id == by) {
                continue;
            }
            let under = |k: &Bytes| {
                c.mode.prefixes.is_empty() || c.mode.prefixes.iter().any(|p| k.starts_with(p))
            };
            let hit: Vec<Bytes> = keys.iter().filter(|k| under(k)).cloned().collect();
            if !hit.is_empty() {
                out.entry(id).or_default().extend(hit);
            }
        }
        Self::deliver(&mut t, out, limits);
    }

    /// Every key may have changed (FLUSHALL, FLUSHDB, SWAPDB): every
    /// tracking client drops its whole cache.
    pub fn flush(&self, limits: Limits) {
        if !self.active() {
            return;
        }
        let mut t = self.table.lock();
        t.keys.clear();
        t.items = 0;
        let ids: Vec<u64> = t.clients.keys().copied().collect();
        for id in ids {
            Self::send(&mut t, id, Message::Invalidate(None), limits);
        }
    }

    fn deliver(t: &mut Table, out: HashMap<u64, Vec<Bytes>>, limits: Limits) {
        for (id, mut keys) in out {
            keys.sort_unstable();
            keys.dedup();
            Self::send(t, id, Message::Invalidate(Some(keys)), limits);
        }
    }

    /// Sends `m` to client `id`, or to where it redirects; a redirect to a
    /// client that is gone is reported to `id` instead.
    fn send(t: &mut Table, id: u64, m: Message, limits: Limits) {
        let Some(c) = t.clients.get_mut(&id) else {
            return;
        };
        match &c.target {
            Some(target) if !target.is_gone() => {
                target.send(m, limits);
            }
            Some(_) => {
                c.broken = true;
                c.own.send(Message::RedirectBroken(c.mode.redirect), limits);
            }
            None => {
                c.own.send(m, limits);
            }
        }
    }

    /// INFO's tracking counters.
    pub fn stats(&self) -> Stats {
        let t = self.table.lock();
        Stats {
            clients: t.clients.len(),
            keys: t.keys.len(),
            items: t.items,
            prefixes: t
                .clients
                .values()
                .filter(|c| c.mode.bcast)
                .map(|c| c.mode.prefixes.len().max(1))
                .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_prefixes_are_named() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert!(overlap(&[b("user:")], &[b("order:")]).is_none());
        let e = overlap(&[b("user:")], &[b("user:1")]).unwrap();
        assert!(
            e.contains("'user:1' overlaps with an existing prefix 'user:'"),
            "{e}"
        );
        let e = overlap(&[], &[b("a"), b("ab")]).unwrap();
        assert!(e.contains("another provided prefix 'ab'"), "{e}");
    }
}
