//! The series store: per series, a ring buffer of one-minute points kept
//! as a hash in the tiered store (field = slot number, value = the point),
//! so cold series move to disk like any other cold key.
//!
//! Slot `i` holds the newest window whose start minute is `i` modulo
//! `retention_slots`; a newer window overwrites it. Each point carries its
//! own start time, so a query keeps only points inside the retained range,
//! the `retention_slots` minutes ending at the series' newest point, and
//! a slot left over from an older pass of the ring is never mistaken for
//! a recent one.

use super::window::Point;

/// Bytes of one encoded point.
pub const POINT_BYTES: usize = 64;
/// Seconds a point covers.
pub const STEP: i64 = 60;

/// The hash field of the slot holding the window starting at `ts`
/// (epoch seconds).
pub fn slot_field(ts: i64, retention_slots: u32) -> String {
    (ts.div_euclid(STEP)
        .rem_euclid(i64::from(retention_slots.max(1))))
    .to_string()
}

/// A point as stored: eight little-endian 8-byte numbers.
pub fn encode(p: &Point) -> Vec<u8> {
    let mut out = Vec::with_capacity(POINT_BYTES);
    out.extend_from_slice(&p.ts.to_le_bytes());
    out.extend_from_slice(&p.count.to_le_bytes());
    for x in [p.sum, p.min, p.max, p.p50, p.p95, p.p99] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Reads a stored point; `None` for bytes that are not one (a hash some
/// client wrote by hand).
pub fn decode(b: &[u8]) -> Option<Point> {
    if b.len() != POINT_BYTES {
        return None;
    }
    let word = |i: usize| -> [u8; 8] {
        let mut w = [0; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        w
    };
    let f = |i: usize| f64::from_le_bytes(word(i));
    Some(Point {
        ts: i64::from_le_bytes(word(0)),
        count: u64::from_le_bytes(word(1)),
        sum: f(2),
        min: f(3),
        max: f(4),
        p50: f(5),
        p95: f(6),
        p99: f(7),
    })
}

/// The retained points between `from` and `to` (epoch seconds, both
/// inclusive), oldest first.
pub fn select(mut points: Vec<Point>, retention_slots: u32, from: i64, to: i64) -> Vec<Point> {
    let Some(newest) = points.iter().map(|p| p.ts).max() else {
        return points;
    };
    let oldest_kept = newest - (i64::from(retention_slots) - 1) * STEP;
    points.retain(|p| p.ts >= oldest_kept && p.ts >= from && p.ts <= to);
    points.sort_by_key(|p| p.ts);
    points
}

/// A point as the API returns it.
pub fn to_json(p: &Point) -> serde_json::Value {
    serde_json::json!({
        "ts": p.ts,
        "count": p.count,
        "sum": p.sum,
        "min": p.min,
        "max": p.max,
        "avg": p.avg(),
        "p50": p.p50,
        "p95": p.p95,
        "p99": p.p99,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: i64) -> Point {
        Point {
            ts,
            count: 2,
            sum: 3.0,
            min: 1.0,
            max: 2.0,
            p50: 1.0,
            p95: 2.0,
            p99: 2.0,
        }
    }

    #[test]
    fn points_round_trip() {
        let p = point(1_700_000_040);
        assert_eq!(decode(&encode(&p)), Some(p));
        assert_eq!(decode(b"short"), None);
    }

    #[test]
    fn the_ring_overwrites_old_slots_and_queries_keep_the_retained_range() {
        // Five slots: the ring keeps the newest five minutes.
        let mut ring = std::collections::BTreeMap::new();
        for minute in 0..8 {
            let p = point(minute * 60);
            ring.insert(slot_field(p.ts, 5), p);
        }
        assert_eq!(ring.len(), 5);
        let all = select(ring.values().copied().collect(), 5, 0, i64::MAX);
        let ts: Vec<i64> = all.iter().map(|p| p.ts).collect();
        assert_eq!(ts, [180, 240, 300, 360, 420]);
        // A range reaching before the retained one gets what is retained.
        let some = select(ring.values().copied().collect(), 5, 0, 240);
        assert_eq!(some.iter().map(|p| p.ts).collect::<Vec<_>>(), [180, 240]);
        // A slot a gap left behind from an older pass is not shown.
        let mut stale = ring.clone();
        stale.insert("9".into(), point(-600));
        assert_eq!(
            select(stale.values().copied().collect(), 5, i64::MIN, i64::MAX).len(),
            5
        );
    }
}
