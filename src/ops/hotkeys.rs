//! Hot keys (seed 000's hotkey manager): how often each key is used, from
//! a count-min sketch per minute, and the keys above
//! `hotkey_threshold_per_min`.
//!
//! Every access adds one to `DEPTH` counters of the current minute's
//! sketch, all in one cache line; a key's count is the smallest of its
//! counters: above the truth by collisions, below it only by the rare
//! update lost when two threads count one counter at the same instant.
//! Two sketches take turns: at each minute the older one is cleared and
//! becomes the current one, so a
//! key's rate is its count in the current or the last full minute,
//! whichever is higher. A key is remembered as a candidate when its count
//! reaches the threshold (and again at each power of two above it), so
//! the list of hot keys costs nothing on the path of ordinary keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Blocks of counters per sketch (a power of two). A key's counters all
/// lie in one block, one cache line, so counting an access costs one
/// cache miss rather than one per row.
const BLOCKS: usize = 1 << 12;
/// Rows: each key has one counter in each, in its own quarter of the
/// block, so each row is 16K counters wide.
const DEPTH: usize = 4;
/// Hot keys remembered at most.
const MAX_CANDIDATES: usize = 256;

#[repr(align(64))]
struct Block([AtomicU32; 16]);

struct Sketch {
    blocks: Box<[Block]>,
}

impl Sketch {
    fn new() -> Sketch {
        Sketch {
            blocks: (0..BLOCKS)
                .map(|_| Block(std::array::from_fn(|_| AtomicU32::new(0))))
                .collect(),
        }
    }

    /// The key's block and its counter in each row.
    fn cells(&self, hash: u64) -> (&Block, [usize; DEPTH]) {
        let block = &self.blocks[hash as usize & (BLOCKS - 1)];
        let mut at = [0; DEPTH];
        for (row, cell) in at.iter_mut().enumerate() {
            *cell = row * 4 + ((hash >> (12 + 2 * row)) as usize & 3);
        }
        (block, at)
    }

    /// Adds one; the key's count after it. Conservative update: only the
    /// counters at the key's current minimum are raised, so collisions
    /// inflate counts far less. Plain loads and stores rather than atomic
    /// adds: two threads counting the same counter at the same instant may
    /// lose one of the two, which an estimate can afford, and the common
    /// case avoids four locked instructions.
    fn add(&self, hash: u64) -> u32 {
        let (block, at) = self.cells(hash);
        let seen = at.map(|c| block.0[c].load(Ordering::Relaxed));
        let next = seen.iter().min().copied().unwrap_or(0).saturating_add(1);
        for (c, v) in at.iter().zip(seen) {
            if v < next {
                block.0[*c].store(next, Ordering::Relaxed);
            }
        }
        next
    }

    fn count(&self, hash: u64) -> u32 {
        let (block, at) = self.cells(hash);
        at.iter()
            .map(|&c| block.0[c].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    fn clear(&self) {
        for b in self.blocks.iter() {
            for c in &b.0 {
                c.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// A hot key as reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HotKey {
    /// Its database.
    pub db: usize,
    /// The key (lossy UTF-8 where it isn't text).
    pub key: String,
    /// Accesses in the current or the last full minute, whichever is more.
    pub per_min: u64,
}

/// The node's access counts.
pub struct HotKeys {
    sketches: [Sketch; 2],
    current: AtomicUsize,
    /// `hotkey_threshold_per_min` (0: counting off).
    threshold: AtomicU64,
    candidates: Mutex<HashMap<(usize, Vec<u8>), u64>>,
}

fn hash_of(db: usize, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, db as u64)
}

impl HotKeys {
    /// Counting with `threshold` accesses a minute as hot (0: off).
    pub fn new(threshold: u64) -> HotKeys {
        HotKeys {
            sketches: [Sketch::new(), Sketch::new()],
            current: AtomicUsize::new(0),
            threshold: AtomicU64::new(threshold),
            candidates: Mutex::new(HashMap::new()),
        }
    }

    /// Whether accesses are counted.
    pub fn enabled(&self) -> bool {
        self.threshold.load(Ordering::Relaxed) > 0
    }

    /// Changes the threshold (CONFIG SET).
    pub fn set_threshold(&self, threshold: u64) {
        self.threshold.store(threshold, Ordering::Relaxed);
    }

    /// The threshold in accesses per minute.
    pub fn threshold(&self) -> u64 {
        self.threshold.load(Ordering::Relaxed)
    }

    /// Counts one access to `key` of `db`.
    pub fn touch(&self, db: usize, key: &[u8]) {
        let threshold = self.threshold.load(Ordering::Relaxed);
        if threshold == 0 {
            return;
        }
        let now = self.sketches[self.current.load(Ordering::Relaxed)].add(hash_of(db, key));
        let now = u64::from(now);
        if now >= threshold && (now == threshold || now.is_power_of_two()) {
            let mut c = self.candidates.lock();
            if c.len() >= MAX_CANDIDATES && !c.contains_key(&(db, key.to_vec())) {
                // Make room by dropping the coolest one.
                if let Some(coolest) = c.iter().min_by_key(|(_, n)| **n).map(|(k, _)| k.clone()) {
                    c.remove(&coolest);
                }
            }
            c.insert((db, key.to_vec()), now);
        }
    }

    /// Accesses to `key` in the current or the last full minute.
    pub fn per_min(&self, db: usize, key: &[u8]) -> u64 {
        let h = hash_of(db, key);
        let cur = self.current.load(Ordering::Relaxed);
        u64::from(
            self.sketches[cur]
                .count(h)
                .max(self.sketches[1 - cur].count(h)),
        )
    }

    /// OBJECT FREQ: the count on Redis's logarithmic LFU scale (factor
    /// 10: about 10 after 100 accesses, 18 after 1000, 255 from 1M), so
    /// tools that rank keys by it (`redis-cli --hotkeys`) rank them alike.
    pub fn freq(&self, db: usize, key: &[u8]) -> u8 {
        let n = self.per_min(db, key) as f64;
        if n == 0.0 {
            return 0;
        }
        (5.0 + (n / 5.0).sqrt()).min(255.0) as u8
    }

    /// A minute has passed: the older sketch is cleared and counts the
    /// new minute.
    pub fn rotate(&self) {
        let next = 1 - self.current.load(Ordering::Relaxed);
        self.sketches[next].clear();
        self.current.store(next, Ordering::Relaxed);
    }

    /// The keys at or above the threshold now, hottest first. Candidates
    /// that cooled down are forgotten.
    pub fn hot(&self) -> Vec<HotKey> {
        let threshold = self.threshold();
        let mut c = self.candidates.lock();
        let mut out = Vec::new();
        c.retain(|(db, key), last| {
            let n = self.per_min(*db, key);
            *last = n;
            if threshold > 0 && n >= threshold {
                out.push(HotKey {
                    db: *db,
                    key: String::from_utf8_lossy(key).into_owned(),
                    per_min: n,
                });
                true
            } else {
                false
            }
        });
        out.sort_by(|a, b| b.per_min.cmp(&a.per_min).then(a.key.cmp(&b.key)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_above_the_threshold_is_hot_until_two_minutes_pass() {
        let h = HotKeys::new(100);
        // 150,000 accesses spread over 50,000 keys: none gets near 100.
        for round in 0..3 {
            for i in 0..50_000u32 {
                h.touch(round % 2, format!("cold:{i}").as_bytes());
            }
        }
        for _ in 0..150 {
            h.touch(0, b"hot");
        }
        for _ in 0..80 {
            h.touch(1, b"warm");
        }
        let hot = h.hot();
        assert_eq!(hot.len(), 1, "{hot:?}");
        assert_eq!(hot[0].key, "hot");
        assert!(hot[0].per_min >= 150);
        // Counts never fall below the truth.
        let warm = h.per_min(1, b"warm");
        assert!((80..100).contains(&warm), "{warm}");
        assert!(h.freq(0, b"hot") > h.freq(0, b"cold:1"));
        h.rotate();
        assert_eq!(h.hot().len(), 1, "the last full minute still counts");
        h.rotate();
        assert!(h.hot().is_empty());
        assert_eq!(h.freq(0, b"hot"), 0);
    }

    #[test]
    fn off_counts_nothing() {
        let h = HotKeys::new(0);
        h.touch(0, b"k");
        assert_eq!(h.per_min(0, b"k"), 0);
        assert!(h.hot().is_empty());
    }
}
