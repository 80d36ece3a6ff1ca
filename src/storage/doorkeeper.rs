//! The doorkeeper: which disk-tier keys were read recently.
//!
//! A disk hit promotes a key only if the doorkeeper has seen it before, so
//! one pass over cold data doesn't churn the memory tier, while a key read
//! twice within a window comes back to memory. It is a Bloom filter of
//! about a million bits with two probes per key, cleared after a fixed
//! number of insertions so old history ages out.
//!
//! A one-slot-per-position table was tried first: two hot keys sharing a
//! slot evict each other's mark, and with a hot set of tens of thousands
//! of keys a third of them never came back to memory.

use std::sync::atomic::{AtomicU64, Ordering};

const WORDS: usize = 1 << 14;
const BITS: u64 = (WORDS * 64) as u64;
/// Insertions before the filter is cleared: at this fill about 22% of the
/// bits are set and a never-seen key passes with probability ~5%.
const RESET_AFTER: u64 = BITS / 8;

pub(crate) struct Doorkeeper {
    words: Box<[AtomicU64]>,
    inserted: AtomicU64,
}

impl Doorkeeper {
    pub fn new() -> Doorkeeper {
        Doorkeeper {
            words: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            inserted: AtomicU64::new(0),
        }
    }

    /// Records a read of the key at `pos`; true if it was seen before.
    pub fn seen_before(&self, pos: u64) -> bool {
        // Positions are already hashes; remix so the slot bits take part.
        let h = (pos ^ (pos >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let a = h % BITS;
        let b = (h >> 32).wrapping_mul(0xBF58_476D_1CE4_E5B9) % BITS;
        let had_a = self.set(a);
        let had_b = self.set(b);
        if had_a && had_b {
            return true;
        }
        if self.inserted.fetch_add(1, Ordering::Relaxed) + 1 >= RESET_AFTER {
            self.inserted.store(0, Ordering::Relaxed);
            for w in self.words.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        false
    }

    fn set(&self, bit: u64) -> bool {
        let mask = 1u64 << (bit % 64);
        self.words[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed) & mask != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_read_is_seen_and_first_mostly_not() {
        let d = Doorkeeper::new();
        let keys: Vec<u64> = (0..20_000u64)
            .map(|i| i.wrapping_mul(0x2545_F491_4F6C_DD1D))
            .collect();
        let false_hits = keys.iter().filter(|&&k| d.seen_before(k)).count();
        assert!(false_hits < 200, "{false_hits} never-seen keys passed");
        assert!(keys.iter().all(|&k| d.seen_before(k)));
    }
}
