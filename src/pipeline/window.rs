//! Tumbling one-minute windows per series, closed by a watermark.
//!
//! This is the pure part of an aggregation worker: it knows nothing of
//! streams or storage, so it can be driven event by event in tests and,
//! after a restart, fed the same entries again to rebuild exactly the
//! state it had at its last commit.
//!
//! The watermark of a partition is the highest event time seen minus the
//! allowed lateness (raised further while the partition is idle, see
//! [`Windows::advance_idle`]). An event whose window already ended at the
//! watermark is late: it is counted and dropped. A window closes, and its
//! point is final, once the watermark reaches its end.

use std::collections::{BTreeMap, HashMap};

use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use super::event::{MetricEvent, SeriesId};

/// One window's length.
pub const WINDOW_MS: i64 = 60_000;
/// Values kept exactly before a window switches to a sketch: up to this
/// many, its percentiles are exact.
const EXACT_VALUES: usize = 64;

/// A stream entry's id (`ms-seq`), ordered as the stream orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// Parses `ms-seq`.
    pub fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A closed window's figures, as the series store keeps them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Window start, epoch seconds.
    pub ts: i64,
    /// Events in it.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Point {
    /// Mean value.
    pub fn avg(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

/// The running figures of one open window.
///
/// Up to [`EXACT_VALUES`] values, percentiles are exact, by nearest rank:
/// the q-quantile is the smallest value with at least q·n of the values at
/// or below it. Past that the values go into a DDSketch (mergeable), whose
/// estimate is within 1% relative error of the value at rank ⌊q·(n−1)⌋.
#[derive(Clone)]
pub struct Aggregate {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    exact: Vec<f64>,
    sketch: Option<Box<DDSketch>>,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            exact: Vec::new(),
            sketch: None,
        }
    }
}

impl Aggregate {
    /// Adds one value.
    pub fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        match &mut self.sketch {
            Some(s) => s.add(v),
            None if self.exact.len() < EXACT_VALUES => self.exact.push(v),
            None => {
                let mut s = DDSketch::new(SketchConfig::defaults());
                for &x in &self.exact {
                    s.add(x);
                }
                s.add(v);
                self.exact = Vec::new();
                self.sketch = Some(Box::new(s));
            }
        }
    }

    fn quantile(&self, q: f64) -> f64 {
        if let Some(s) = &self.sketch {
            // Clamped: the sketch's bucket value may lie a hair outside
            // the values actually seen.
            return s
                .quantile(q)
                .ok()
                .flatten()
                .unwrap_or(f64::NAN)
                .clamp(self.min, self.max);
        }
        let mut sorted = self.exact.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// The window's point, starting at `start_ms`.
    pub fn point(&self, start_ms: i64) -> Point {
        Point {
            ts: start_ms.div_euclid(1000),
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            p50: self.quantile(0.50),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
        }
    }
}

/// What became of an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Added to its window.
    Accepted,
    /// Its window had closed: dropped.
    Late,
}

struct Open {
    agg: Aggregate,
    /// The first entry that went into it: replay after a restart starts
    /// at the smallest of these.
    first: EntryId,
    /// That entry's position in the stream (entries read before it).
    first_read: u64,
}

/// One partition's open windows and watermark.
pub struct Windows {
    lateness_ms: i64,
    max_ts: Option<i64>,
    /// A floor under the watermark, raised while the partition is idle.
    floor: i64,
    open: BTreeMap<(i64, SeriesId), Open>,
    /// Late events per tenant since the last [`Windows::take_late`].
    late: HashMap<String, u64>,
}

/// The part of a partition's state that outlives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    /// Highest event time seen, ms.
    pub max_ts: Option<i64>,
    /// Watermark floor from idle advances, ms.
    pub floor: i64,
}

/// The start of the window holding `ts_ms`.
pub fn window_start(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(WINDOW_MS) * WINDOW_MS
}

impl Windows {
    /// Empty, with the clock of the last commit.
    pub fn new(lateness_ms: i64, clock: Clock) -> Windows {
        Windows {
            lateness_ms,
            max_ts: clock.max_ts,
            floor: clock.floor,
            open: BTreeMap::new(),
            late: HashMap::new(),
        }
    }

    /// The clock to persist.
    pub fn clock(&self) -> Clock {
        Clock {
            max_ts: self.max_ts,
            floor: self.floor,
        }
    }

    /// The watermark, ms (`i64::MIN` before any event).
    pub fn watermark(&self) -> i64 {
        let seen = self.max_ts.map_or(i64::MIN, |t| t - self.lateness_ms);
        seen.max(self.floor)
    }

    /// Offers entry `id` (the `read`-th entry of the stream) holding `ev`.
    pub fn offer(&mut self, id: EntryId, read: u64, ev: &MetricEvent) -> Offer {
        let start = window_start(ev.ts_ms);
        if start + WINDOW_MS <= self.watermark() {
            *self.late.entry(ev.series.tenant.clone()).or_default() += 1;
            return Offer::Late;
        }
        self.add(id, read, start, ev);
        self.max_ts = Some(self.max_ts.map_or(ev.ts_ms, |m| m.max(ev.ts_ms)));
        Offer::Accepted
    }

    /// Re-adds an entry read again after a restart, with the clock of the
    /// last commit: it belongs to a window still open then (and so was
    /// accepted when first read), or it was already accounted for.
    pub fn restore(&mut self, id: EntryId, read: u64, ev: &MetricEvent) {
        let start = window_start(ev.ts_ms);
        if start + WINDOW_MS > self.watermark() {
            self.add(id, read, start, ev);
        }
    }

    fn add(&mut self, id: EntryId, read: u64, start: i64, ev: &MetricEvent) {
        let open = self
            .open
            .entry((start, ev.series.clone()))
            .or_insert_with(|| Open {
                agg: Aggregate::default(),
                first: id,
                first_read: read,
            });
        if id < open.first {
            open.first = id;
            open.first_read = read;
        }
        open.agg.add(ev.value);
    }

    /// Raises the watermark of a partition that has been quiet for
    /// `quiet_ms`: its event clock is taken to run on with the wall clock
    /// from the newest event seen. The floor moves only when that closes
    /// a window, whose points are returned, so a quiet partition's clock
    /// changes only along with a commit.
    pub fn advance_idle(&mut self, quiet_ms: i64) -> Vec<(SeriesId, Point)> {
        let Some(max) = self.max_ts else {
            return Vec::new();
        };
        let floor = max.saturating_add(quiet_ms) - self.lateness_ms;
        let closes = self
            .open
            .keys()
            .next()
            .is_some_and(|(start, _)| start + WINDOW_MS <= floor.max(self.watermark()));
        if !closes {
            return Vec::new();
        }
        self.floor = self.floor.max(floor);
        self.close()
    }

    /// Removes and returns the windows the watermark has closed, oldest
    /// first.
    pub fn close(&mut self) -> Vec<(SeriesId, Point)> {
        let wm = self.watermark();
        let mut done = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let (start, _) = *entry.key();
            if start + WINDOW_MS > wm {
                break;
            }
            let ((start, series), open) = entry.remove_entry();
            done.push((series, open.agg.point(start)));
        }
        done
    }

    /// Where a restart must start reading again to rebuild the open
    /// windows: the first entry of any, with its stream position.
    pub fn replay_from(&self) -> Option<(EntryId, u64)> {
        self.open
            .values()
            .map(|o| (o.first, o.first_read))
            .min_by_key(|(id, _)| *id)
    }

    /// Open windows.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Late events per tenant since the last call.
    pub fn take_late(&mut self) -> HashMap<String, u64> {
        std::mem::take(&mut self.late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(server: &str, ts_s: f64, value: f64) -> MetricEvent {
        MetricEvent {
            series: SeriesId {
                tenant: "t".into(),
                server_id: server.into(),
                metric: "cpu".into(),
            },
            value,
            ts_ms: (ts_s * 1000.0).floor() as i64,
        }
    }

    fn id(n: u64) -> EntryId {
        EntryId { ms: n, seq: 0 }
    }

    #[test]
    fn windows_close_at_the_watermark_and_late_events_are_dropped() {
        let mut w = Windows::new(10_000, Clock::default());
        assert_eq!(w.offer(id(1), 0, &ev("a", 600.0, 1.0)), Offer::Accepted);
        assert_eq!(w.offer(id(2), 1, &ev("a", 659.9, 3.0)), Offer::Accepted);
        // Watermark 659.9 - 10 = 649.9: the [600, 660) window is open.
        assert!(w.close().is_empty());
        assert_eq!(w.offer(id(3), 2, &ev("a", 669.0, 5.0)), Offer::Accepted);
        assert!(w.close().is_empty(), "watermark 659 < 660");
        // Still inside the lateness: joins its window.
        assert_eq!(w.offer(id(4), 3, &ev("a", 620.0, 2.0)), Offer::Accepted);
        assert_eq!(w.offer(id(5), 4, &ev("a", 671.0, 4.0)), Offer::Accepted);
        let closed = w.close();
        assert_eq!(closed.len(), 1);
        let p = closed[0].1;
        assert_eq!(
            (p.ts, p.count, p.sum, p.min, p.max),
            (600, 3, 6.0, 1.0, 3.0)
        );
        assert_eq!((p.p50, p.p95, p.p99), (2.0, 3.0, 3.0));
        // Past the watermark: late, counted for its tenant.
        assert_eq!(w.offer(id(6), 5, &ev("a", 630.0, 9.0)), Offer::Late);
        assert_eq!(w.take_late().get("t"), Some(&1));
        assert_eq!(w.replay_from(), Some((id(3), 2)));
    }

    #[test]
    fn a_restart_rebuilds_the_open_windows_from_the_replayed_entries() {
        let events = [
            ev("a", 600.0, 1.0),
            ev("b", 610.0, 2.0),
            ev("a", 700.0, 3.0),
            ev("a", 605.0, 4.0), // late by then? watermark 690: yes
            ev("b", 690.0, 5.0),
            ev("a", 730.0, 6.0),
            ev("b", 725.0, 7.0),
        ];
        // Uninterrupted.
        let mut whole = Windows::new(10_000, Clock::default());
        let mut points = Vec::new();
        for (i, e) in events.iter().enumerate() {
            whole.offer(id(i as u64 + 1), i as u64, e);
            points.extend(whole.close());
        }
        points.extend(whole.advance_idle(200_000));
        // Interrupted after the fourth entry: a commit there keeps the
        // clock and the replay start; the open windows are rebuilt.
        let mut first = Windows::new(10_000, Clock::default());
        let mut got = Vec::new();
        for (i, e) in events.iter().enumerate().take(4) {
            first.offer(id(i as u64 + 1), i as u64, e);
            got.extend(first.close());
        }
        let clock = first.clock();
        let (from, from_read) = first.replay_from().expect("windows open");
        let mut again = Windows::new(10_000, clock);
        for (i, e) in events.iter().enumerate().take(4) {
            let n = i as u64 + 1;
            if id(n) >= from {
                again.restore(id(n), i as u64, e);
            }
        }
        assert_eq!(again.replay_from(), Some((from, from_read)));
        for (i, e) in events.iter().enumerate().skip(4) {
            again.offer(id(i as u64 + 1), i as u64, e);
            got.extend(again.close());
        }
        got.extend(again.advance_idle(200_000));
        assert_eq!(got, points);
        assert_eq!(points.len(), 6);
    }

    #[test]
    fn percentiles_are_exact_for_small_windows_and_close_for_large_ones() {
        let mut small = Aggregate::default();
        for v in [5.0, 1.0, 4.0, 2.0, 3.0] {
            small.add(v);
        }
        let p = small.point(0);
        assert_eq!((p.p50, p.p95, p.p99), (3.0, 5.0, 5.0));
        let mut big = Aggregate::default();
        for v in 1..=10_000 {
            big.add(v as f64);
        }
        let p = big.point(0);
        assert_eq!((p.count, p.min, p.max), (10_000, 1.0, 10_000.0));
        for (got, want) in [(p.p50, 5_000.0), (p.p95, 9_500.0), (p.p99, 9_900.0)] {
            assert!((got - want).abs() / want < 0.02, "{got} vs {want}");
        }
    }

    #[test]
    fn an_idle_partition_closes_its_windows_as_the_wall_clock_runs() {
        let mut w = Windows::new(10_000, Clock::default());
        w.offer(id(1), 0, &ev("a", 600.0, 1.0));
        assert!(w.advance_idle(30_000).is_empty(), "watermark 620");
        assert_eq!(w.clock().floor, 0, "the floor moves only with a close");
        assert_eq!(w.advance_idle(70_000).len(), 1, "watermark 660");
    }
}
