//! The values of sets and sorted sets. Both keep a running count of their
//! buffers' bytes, so charging them against `maxmemory` costs O(1) however
//! many members they hold.
//!
//! Cost model (n members, k touched by a command):
//! - a set is an insertion-ordered hash set: SADD, SREM, SISMEMBER, SPOP and
//!   SRANDMEMBER are O(1) per member;
//! - a sorted set is a hash map from member to score (O(1) ZSCORE, O(1)
//!   random picks) beside a B-tree ordered by (score, member): ZADD, ZREM,
//!   ZPOPMIN/MAX are O(log n) per member, a range by score or lex is
//!   O(log n + k), and a rank (ZRANK, ZRANGE by index) walks the tree,
//!   O(rank + k).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;

use indexmap::{IndexMap, IndexSet};
use rand::Rng;

use super::types::alloc_size;

/// A set's members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetMembers {
    members: IndexSet<Box<[u8]>>,
    bytes: usize,
}

impl SetMembers {
    /// An empty set.
    pub fn new() -> SetMembers {
        SetMembers::default()
    }

    /// An empty set with room for `n` members.
    pub fn with_capacity(n: usize) -> SetMembers {
        SetMembers {
            members: IndexSet::with_capacity(n),
            bytes: 0,
        }
    }

    /// Adds `m`; false if it was there.
    pub fn insert(&mut self, m: Box<[u8]>) -> bool {
        let len = m.len();
        let added = self.members.insert(m);
        if added {
            self.bytes += alloc_size(len);
        }
        added
    }

    /// Removes `m`; false if it was not there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        let removed = self.members.swap_remove(m);
        if removed {
            self.bytes -= alloc_size(m.len());
        }
        removed
    }

    /// Whether `m` is a member.
    pub fn contains(&self, m: &[u8]) -> bool {
        self.members.contains(m)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// All members, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.members.iter().map(|m| &m[..])
    }

    /// The member at position `i` of the set's internal order (for random
    /// picks), in O(1).
    pub fn get_index(&self, i: usize) -> Option<&[u8]> {
        self.members.get_index(i).map(|m| &m[..])
    }

    /// A uniformly random member, in O(1).
    pub fn random<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<&[u8]> {
        if self.members.is_empty() {
            return None;
        }
        let i = rng.random_range(0..self.members.len());
        self.members.get_index(i).map(|m| &m[..])
    }

    /// Removes and returns a uniformly random member, in O(1).
    pub fn pop_random<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Option<Box<[u8]>> {
        if self.members.is_empty() {
            return None;
        }
        let i = rng.random_range(0..self.members.len());
        let m = self.members.swap_remove_index(i)?;
        self.bytes -= alloc_size(m.len());
        Some(m)
    }

    pub(crate) fn heap_size(&self) -> usize {
        // Each slot: a hash and a boxed slice, plus an index and a control byte.
        alloc_size(self.members.capacity() * (24 + 9)) + self.bytes
    }
}

/// A score with the total order Redis sorts by (scores are never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Score) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Score) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// One end of a score range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreBound {
    /// The score.
    pub score: f64,
    /// Whether the score itself is outside the range (`(1.5`).
    pub exclusive: bool,
}

/// One end of a lexicographic range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexBound {
    /// `-` or `+`: unbounded.
    Open,
    /// `[m`
    Inclusive(Box<[u8]>),
    /// `(m`
    Exclusive(Box<[u8]>),
}

/// Members with their scores, in order, from either end.
pub type Members<'a> = Box<dyn DoubleEndedIterator<Item = (&'a [u8], f64)> + 'a>;

/// A sorted set: members with scores, ordered by (score, member).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortedSet {
    scores: IndexMap<Box<[u8]>, Score>,
    order: BTreeSet<(Score, Box<[u8]>)>,
    bytes: usize,
}

impl SortedSet {
    /// An empty sorted set.
    pub fn new() -> SortedSet {
        SortedSet::default()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The score of `m`.
    pub fn score(&self, m: &[u8]) -> Option<f64> {
        self.scores.get(m).map(|s| s.0)
    }

    /// Sets the score of `m`; returns the previous score.
    pub fn insert(&mut self, m: &[u8], score: f64) -> Option<f64> {
        match self.scores.get_mut(m) {
            Some(old) => {
                let prev = old.0;
                if prev.to_bits() != score.to_bits() {
                    *old = Score(score);
                    let (_, member) = self
                        .order
                        .take(&(Score(prev), Box::from(m)))
                        .expect("a sorted set's two indexes agree");
                    self.order.insert((Score(score), member));
                }
                Some(prev)
            }
            None => {
                self.scores.insert(m.into(), Score(score));
                self.order.insert((Score(score), m.into()));
                self.bytes += 2 * alloc_size(m.len());
                None
            }
        }
    }

    /// Removes `m`; returns its score.
    pub fn remove(&mut self, m: &[u8]) -> Option<f64> {
        let (_, score) = self.scores.swap_remove_entry(m)?;
        self.order.remove(&(score, Box::from(m)));
        self.bytes -= 2 * alloc_size(m.len());
        Some(score.0)
    }

    /// Members with scores from the lowest score up.
    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator + Clone {
        self.order.iter().map(|(s, m)| (&m[..], s.0))
    }

    /// The 0-based rank of `m` from the lowest score.
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        let score = *self.scores.get(m)?;
        Some(self.order.range(..(score, Box::from(m))).count())
    }

    /// Members whose scores lie between `min` and `max`, lowest first.
    pub fn range_by_score(&self, min: ScoreBound, max: ScoreBound) -> Members<'_> {
        let empty: Members<'_> = Box::new(std::iter::empty());
        if min.score.is_nan() || max.score.is_nan() {
            return empty;
        }
        // Strict bounds become inclusive ones on the next float, so the
        // tree's own range does the work.
        let lo = match min {
            ScoreBound {
                score,
                exclusive: true,
            } if score == f64::INFINITY => return empty,
            ScoreBound {
                score,
                exclusive: true,
            } => score.next_up(),
            ScoreBound { score, .. } => score,
        };
        let hi = match max {
            ScoreBound {
                score,
                exclusive: true,
            } => Some(score),
            ScoreBound { score, .. } if score == f64::INFINITY => None,
            ScoreBound { score, .. } => Some(score.next_up()),
        };
        if hi.is_some_and(|hi| Score(lo) > Score(hi)) {
            return empty;
        }
        let start = Bound::Included((Score(lo), Box::from(&[][..])));
        let end = hi.map_or(Bound::Unbounded, |hi| {
            Bound::Excluded((Score(hi), Box::from(&[][..])))
        });
        Box::new(self.order.range((start, end)).map(|(s, m)| (&m[..], s.0)))
    }

    /// Members between two lexicographic bounds, in order. Meaningful when
    /// all members share one score, as in Redis.
    pub fn range_by_lex<'a>(&'a self, min: &'a LexBound, max: &'a LexBound) -> Members<'a> {
        let in_range = move |m: &[u8]| {
            let above = match min {
                LexBound::Open => true,
                LexBound::Inclusive(b) => m >= &b[..],
                LexBound::Exclusive(b) => m > &b[..],
            };
            let below = match max {
                LexBound::Open => true,
                LexBound::Inclusive(b) => m <= &b[..],
                LexBound::Exclusive(b) => m < &b[..],
            };
            above && below
        };
        let (Some(first), Some(last)) = (self.order.first(), self.order.last()) else {
            return Box::new(std::iter::empty());
        };
        if first.0 != last.0 {
            // Mixed scores: no single run of the tree to cut.
            return Box::new(
                self.order
                    .iter()
                    .filter(move |(_, m)| in_range(m))
                    .map(|(s, m)| (&m[..], s.0)),
            );
        }
        let score = first.0;
        let start = match min {
            LexBound::Open => Bound::Unbounded,
            LexBound::Inclusive(b) => Bound::Included((score, b.clone())),
            LexBound::Exclusive(b) => Bound::Excluded((score, b.clone())),
        };
        let end = match max {
            LexBound::Open => Bound::Unbounded,
            LexBound::Inclusive(b) => Bound::Included((score, b.clone())),
            LexBound::Exclusive(b) => Bound::Excluded((score, b.clone())),
        };
        let ordered = match (&start, &end) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a < b
                    || (a == b
                        && matches!((&start, &end), (Bound::Included(_), Bound::Included(_))))
            }
            _ => true,
        };
        if !ordered {
            return Box::new(std::iter::empty());
        }
        Box::new(self.order.range((start, end)).map(|(s, m)| (&m[..], s.0)))
    }

    /// The member at position `i` of the map's internal order (for random
    /// picks), in O(1).
    pub fn get_index(&self, i: usize) -> Option<(&[u8], f64)> {
        self.scores.get_index(i).map(|(m, s)| (&m[..], s.0))
    }

    /// A uniformly random member with its score, in O(1).
    pub fn random<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<(&[u8], f64)> {
        if self.scores.is_empty() {
            return None;
        }
        let i = rng.random_range(0..self.scores.len());
        self.scores.get_index(i).map(|(m, s)| (&m[..], s.0))
    }

    /// Removes and returns the member with the lowest (or highest) score.
    pub fn pop(&mut self, highest: bool) -> Option<(Box<[u8]>, f64)> {
        let (score, m) = if highest {
            self.order.pop_last()?
        } else {
            self.order.pop_first()?
        };
        self.scores.swap_remove(&m[..]);
        self.bytes -= 2 * alloc_size(m.len());
        Some((m, score.0))
    }

    pub(crate) fn heap_size(&self) -> usize {
        // The map: a hash, a boxed slice and a score per slot, plus an index
        // and a control byte; the tree: a score and a boxed slice per member
        // with about a third more for its nodes.
        alloc_size(self.scores.capacity() * (32 + 9)) + self.order.len() * 32 + self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> ScoreBound {
        ScoreBound {
            score: s.trim_start_matches('(').parse().unwrap(),
            exclusive: s.starts_with('('),
        }
    }

    #[test]
    fn sorted_set_orders_by_score_then_member() {
        let mut z = SortedSet::new();
        z.insert(b"b", 1.0);
        z.insert(b"a", 1.0);
        z.insert(b"c", 0.5);
        assert_eq!(z.insert(b"c", 2.0), Some(0.5));
        let order: Vec<&[u8]> = z.iter().map(|(m, _)| m).collect();
        assert_eq!(order, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(z.rank(b"c"), Some(2));
        assert_eq!(z.range_by_score(b("1"), b("(2")).count(), 2);
        assert_eq!(z.range_by_score(b("(1"), b("2")).count(), 1);
        assert_eq!(z.range_by_score(b("3"), b("1")).count(), 0);
        assert_eq!(z.remove(b"a"), Some(1.0));
        assert_eq!(z.pop(true), Some((Box::from(&b"c"[..]), 2.0)));
        assert_eq!(z.len(), 1);
        assert_eq!(z.bytes, 2 * 16);
    }

    #[test]
    fn set_pops_every_member_once() {
        let mut s = SetMembers::new();
        for i in 0..100u32 {
            assert!(s.insert(i.to_string().into_bytes().into()));
        }
        assert!(!s.insert(b"7"[..].into()));
        let mut rng = rand::rng();
        let mut seen = std::collections::HashSet::new();
        while let Some(m) = s.pop_random(&mut rng) {
            assert!(seen.insert(m));
        }
        assert_eq!(seen.len(), 100);
        assert_eq!(s.bytes, 0);
    }
}
