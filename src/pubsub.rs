//! Pub/sub delivery: which connection listens to which channel, pattern
//! or shard channel, and a bounded queue of messages per subscriber.
//!
//! A publisher never waits for a subscriber. Each subscriber's queue
//! counts the bytes waiting in it; one that passes the hard limit, or
//! stays above the soft limit longer than allowed (Redis's
//! `client-output-buffer-limit pubsub`), is disconnected instead of
//! letting memory grow without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::storage::{glob_match, now_ms};

/// One message on its way to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A pub/sub push: its parts, for example `message`, channel, payload.
    Parts(Vec<Bytes>),
    /// Client-side caching: these keys changed (None: every key, after a
    /// flush). RESP3 connections get an `invalidate` push; RESP2 ones get
    /// it as a message on `__redis__:invalidate` if they are subscribed.
    Invalidate(Option<Vec<Bytes>>),
    /// The client this connection's invalidations were redirected to is
    /// gone (RESP3 only).
    RedirectBroken(u64),
    /// A line for a MONITOR connection.
    Monitor(String),
}

pub use crate::config::OutputLimit as Limits;

/// The sending end of one subscriber's queue.
#[derive(Clone)]
pub struct Subscriber {
    tx: mpsc::UnboundedSender<Message>,
    queued: Arc<AtomicUsize>,
    over_since_ms: Arc<AtomicU64>,
    kill: CancellationToken,
}

/// What a connection keeps to receive its messages.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Message>,
    queued: Arc<AtomicUsize>,
    /// The handle registered with [`PubSub`].
    pub subscriber: Subscriber,
}

fn size_of(m: &Message) -> usize {
    let parts = |p: &[Bytes]| p.iter().map(|p| p.len() + 16).sum::<usize>();
    16 + match m {
        Message::Parts(p) => parts(p),
        Message::Invalidate(keys) => 32 + keys.as_deref().map_or(0, parts),
        Message::RedirectBroken(_) => 32,
        Message::Monitor(line) => line.len(),
    }
}

impl Inbox {
    /// A new queue; `kill` disconnects the client when it overflows.
    pub fn new(kill: CancellationToken) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        Inbox {
            rx,
            queued: queued.clone(),
            subscriber: Subscriber {
                tx,
                queued,
                over_since_ms: Arc::new(AtomicU64::new(0)),
                kill,
            },
        }
    }

    /// The next message (waits for one).
    pub async fn recv(&mut self) -> Option<Message> {
        let m = self.rx.recv().await?;
        self.queued.fetch_sub(size_of(&m), Ordering::Relaxed);
        Some(m)
    }

    /// A message already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Message> {
        let m = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(size_of(&m), Ordering::Relaxed);
        Some(m)
    }
}

impl Subscriber {
    /// Bytes waiting to be written to the client.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether the connection behind it has ended.
    pub fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues `m`; false if the subscriber is gone or was just cut off
    /// for exceeding `limits`.
    pub fn send(&self, m: Message, limits: Limits) -> bool {
        let size = size_of(&m);
        let queued = (self.queued.fetch_add(size, Ordering::Relaxed) + size) as u64;
        let now = now_ms();
        let over_hard = limits.hard_bytes > 0 && queued > limits.hard_bytes;
        let over_soft = limits.soft_bytes > 0 && queued > limits.soft_bytes;
        let soft_for = if over_soft {
            let since = match self.over_since_ms.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => now,
                Err(t) => t,
            };
            now.saturating_sub(since)
        } else {
            self.over_since_ms.store(0, Ordering::Relaxed);
            0
        };
        if over_hard || (over_soft && soft_for >= limits.soft_seconds.saturating_mul(1000)) {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            if !self.kill.is_cancelled() {
                tracing::warn!(
                    queued,
                    "closing a subscriber: client-output-buffer-limit pubsub exceeded"
                );
                self.kill.cancel();
            }
            return false;
        }
        if self.tx.send(m).is_err() {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// The connections in MONITOR mode.
#[derive(Default)]
pub struct Monitors {
    count: AtomicUsize,
    subs: Mutex<HashMap<u64, Subscriber>>,
}

impl Monitors {
    /// Whether any connection is monitoring.
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Client `id` starts monitoring.
    pub fn add(&self, id: u64, sub: Subscriber) {
        let mut subs = self.subs.lock();
        subs.insert(id, sub);
        self.count.store(subs.len(), Ordering::Relaxed);
    }

    /// Client `id` stops (it disconnected or said RESET).
    pub fn remove(&self, id: u64) {
        let mut subs = self.subs.lock();
        if subs.remove(&id).is_some() {
            self.count.store(subs.len(), Ordering::Relaxed);
        }
    }

    /// Whether client `id` is monitoring.
    pub fn contains(&self, id: u64) -> bool {
        self.active() && self.subs.lock().contains_key(&id)
    }

    /// Sends `line` to every monitor; one that falls behind `limits` is
    /// disconnected like a slow subscriber.
    pub fn feed(&self, line: &str, limits: Limits) {
        let subs: Vec<Subscriber> = self.subs.lock().values().cloned().collect();
        for s in subs {
            s.send(Message::Monitor(line.to_string()), limits);
        }
    }
}

/// Which kind of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SUBSCRIBE: an exact channel name.
    Channel,
    /// PSUBSCRIBE: a glob pattern.
    Pattern,
    /// SSUBSCRIBE: a shard channel.
    Shard,
}

type Table = HashMap<Bytes, HashMap<u64, Subscriber>>;

/// Every subscription on this node.
#[derive(Default)]
pub struct PubSub {
    channels: Mutex<Table>,
    patterns: Mutex<Table>,
    shard: Mutex<Table>,
}

impl PubSub {
    fn table(&self, kind: Kind) -> &Mutex<Table> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard,
        }
    }

    /// Subscribes client `id` to `name`.
    pub fn subscribe(&self, kind: Kind, name: &Bytes, id: u64, sub: &Subscriber) {
        self.table(kind)
            .lock()
            .entry(name.clone())
            .or_default()
            .insert(id, sub.clone());
    }

    /// Unsubscribes client `id` from `name`.
    pub fn unsubscribe(&self, kind: Kind, name: &[u8], id: u64) {
        let mut t = self.table(kind).lock();
        if let Some(subs) = t.get_mut(name) {
            subs.remove(&id);
            if subs.is_empty() {
                t.remove(name);
            }
        }
    }

    /// Delivers a message to this node's subscribers of `channel` (and of
    /// matching patterns); returns how many received it. A subscriber
    /// that falls further behind than `limits` allow is disconnected.
    pub fn publish(&self, channel: &Bytes, payload: &Bytes, limits: Limits) -> usize {
        let mut n = 0;
        let direct: Vec<Subscriber> = self
            .channels
            .lock()
            .get(channel)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        for s in direct {
            let m = Message::Parts(vec![
                Bytes::from_static(b"message"),
                channel.clone(),
                payload.clone(),
            ]);
            n += usize::from(s.send(m, limits));
        }
        let matching: Vec<(Bytes, Subscriber)> = self
            .patterns
            .lock()
            .iter()
            .filter(|(p, _)| glob_match(p, channel))
            .flat_map(|(p, subs)| subs.values().map(move |s| (p.clone(), s.clone())))
            .collect();
        for (pattern, s) in matching {
            let m = Message::Parts(vec![
                Bytes::from_static(b"pmessage"),
                pattern,
                channel.clone(),
                payload.clone(),
            ]);
            n += usize::from(s.send(m, limits));
        }
        n
    }

    /// Delivers a shard message (SPUBLISH) to this node's subscribers.
    pub fn publish_shard(&self, channel: &Bytes, payload: &Bytes, limits: Limits) -> usize {
        let subs: Vec<Subscriber> = self
            .shard
            .lock()
            .get(channel)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        subs.into_iter()
            .map(|s| {
                let m = Message::Parts(vec![
                    Bytes::from_static(b"smessage"),
                    channel.clone(),
                    payload.clone(),
                ]);
                usize::from(s.send(m, limits))
            })
            .sum()
    }

    /// Channels (or shard channels) with subscribers, optionally matching
    /// a pattern.
    pub fn active(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.table(kind)
            .lock()
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c)))
            .cloned()
            .collect()
    }

    /// Subscribers of `name`.
    pub fn count(&self, kind: Kind, name: &[u8]) -> usize {
        self.table(kind).lock().get(name).map_or(0, HashMap::len)
    }

    /// Distinct patterns subscribed to.
    pub fn patterns(&self) -> usize {
        self.patterns.lock().len()
    }
}

/// Keyspace notification classes (`notify-keyspace-events`), one bit per
/// letter of Redis's setting.
pub mod events {
    /// `K`: publish on `__keyspace@<db>__:<key>`.
    pub const KEYSPACE: u32 = 1 << 0;
    /// `E`: publish on `__keyevent@<db>__:<event>`.
    pub const KEYEVENT: u32 = 1 << 1;
    /// `g`: generic commands (DEL, EXPIRE, RENAME, ...).
    pub const GENERIC: u32 = 1 << 2;
    /// `$`: strings.
    pub const STRING: u32 = 1 << 3;
    /// `l`: lists.
    pub const LIST: u32 = 1 << 4;
    /// `s`: sets.
    pub const SET: u32 = 1 << 5;
    /// `h`: hashes.
    pub const HASH: u32 = 1 << 6;
    /// `z`: sorted sets.
    pub const ZSET: u32 = 1 << 7;
    /// `x`: keys removed because they expired.
    pub const EXPIRED: u32 = 1 << 8;
    /// `e`: keys evicted (strata moves keys to disk instead, so never).
    pub const EVICTED: u32 = 1 << 9;
    /// `t`: streams.
    pub const STREAM: u32 = 1 << 10;
    /// `m`: reads of keys that don't exist.
    pub const KEY_MISS: u32 = 1 << 11;
    /// `d`: module types (none in strata).
    pub const MODULE: u32 = 1 << 12;
    /// `n`: keys created.
    pub const NEW: u32 = 1 << 13;
    /// `A`: every class but `m` and `n`.
    pub const ALL: u32 =
        GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

    const LETTERS: [(char, u32); 10] = [
        ('g', GENERIC),
        ('$', STRING),
        ('l', LIST),
        ('s', SET),
        ('h', HASH),
        ('z', ZSET),
        ('x', EXPIRED),
        ('e', EVICTED),
        ('t', STREAM),
        ('d', MODULE),
    ];

    /// Reads Redis's letters; an unknown one is an error.
    pub fn parse(s: &str) -> Result<u32, String> {
        let mut flags = 0;
        for c in s.chars() {
            flags |= match c {
                'A' => ALL,
                'K' => KEYSPACE,
                'E' => KEYEVENT,
                'm' => KEY_MISS,
                'n' => NEW,
                c => LETTERS
                    .iter()
                    .find(|(l, _)| *l == c)
                    .map(|(_, b)| *b)
                    .ok_or_else(|| {
                        "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".to_string()
                    })?,
            };
        }
        Ok(flags)
    }

    /// Writes flags back as Redis does (`A` for all the classes it covers).
    pub fn format(flags: u32) -> String {
        let mut out = String::new();
        if flags & ALL == ALL {
            out.push('A');
        } else {
            for (l, b) in LETTERS {
                if flags & b != 0 {
                    out.push(l);
                }
            }
        }
        for (l, b) in [
            ('K', KEYSPACE),
            ('E', KEYEVENT),
            ('m', KEY_MISS),
            ('n', NEW),
        ] {
            if flags & b != 0 {
                out.push(l);
            }
        }
        out
    }
}
