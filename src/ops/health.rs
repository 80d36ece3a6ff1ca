//! The node's health score: 0-100 from weighted components, in seed
//! 001's bands (90-100 healthy, 70-89 warning, 0-69 critical).
//!
//! | component | weight | full marks | zero |
//! |---|---|---|---|
//! | `writes` | 20 | the log accepts writes | writes refused after a failed log write |
//! | `reachability` | 20 | every cluster member answers | none does |
//! | `quorum` | 20 | every shard has a leader | none has |
//! | `memory_tier` | 10 | at most 80% of the cap | 150% of the cap (spilling behind) |
//! | `disk` | 10 | 20% or more of the data directory's filesystem free | full |
//! | `system_memory` | 10 | 20% or more of the machine's memory available | none |
//! | `load` | 10 | load average at most 1 per core | 3 per core |
//! | `workers` | 10 | every partition this node aggregates has a working worker that keeps up | none has |
//!
//! A partition's worker counts as not keeping up once it has had unread
//! entries and no commit for a minute, or no working worker for ten
//! seconds. A single node has full marks for `reachability` and `quorum`. A
//! component that can't be measured on this system is left out and the
//! others' weights are scaled up.

use serde::Serialize;

/// What the score is computed from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The log accepts writes.
    pub writes_ok: bool,
    /// Cluster members that answer, and all of them (None: single node).
    pub members: Option<(usize, usize)>,
    /// Shards with a leader, and all of them (None: single node).
    pub shards: Option<(usize, usize)>,
    /// Memory tier use against its cap.
    pub memory_ratio: f64,
    /// Free fraction of the data directory's filesystem.
    pub disk_free: Option<f64>,
    /// Available fraction of the machine's memory.
    pub system_memory_free: Option<f64>,
    /// One-minute load average per core.
    pub load_per_core: Option<f64>,
    /// Partitions aggregated without trouble, and all those this node
    /// aggregates (None: workers off, or not looked at yet).
    pub workers: Option<(usize, usize)>,
}

/// One component of the score.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// Its name.
    pub name: &'static str,
    /// Its weight out of 100.
    pub weight: u32,
    /// Its own score, 0-100.
    pub score: u32,
    /// What it measured.
    pub detail: String,
}

/// The score and how it was reached.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// 0-100.
    pub score: u32,
    /// `healthy`, `warning` or `critical`.
    pub status: &'static str,
    /// Each component.
    pub components: Vec<Component>,
}

/// Seed 001's band for a score.
pub fn band(score: u32) -> &'static str {
    match score {
        90.. => "healthy",
        70..=89 => "warning",
        _ => "critical",
    }
}

/// 1 up to `good`, falling linearly to 0 at `bad` (either direction).
fn ramp(value: f64, good: f64, bad: f64) -> f64 {
    let t = (value - good) / (bad - good);
    (1.0 - t).clamp(0.0, 1.0)
}

fn fraction((have, of): (usize, usize)) -> f64 {
    if of == 0 {
        0.0
    } else {
        have as f64 / of as f64
    }
}

/// Computes the score.
pub fn score(i: &Inputs) -> Health {
    let mut parts: Vec<(&'static str, u32, f64, String)> = vec![(
        "writes",
        20,
        if i.writes_ok { 1.0 } else { 0.0 },
        if i.writes_ok {
            "the log accepts writes".into()
        } else {
            "writes refused after a failed log write".into()
        },
    )];
    match i.members {
        Some(m) => parts.push((
            "reachability",
            20,
            fraction(m),
            format!("{} of {} members answer", m.0, m.1),
        )),
        None => parts.push(("reachability", 20, 1.0, "single node".into())),
    }
    match i.shards {
        Some(s) => parts.push((
            "quorum",
            20,
            fraction(s),
            format!("{} of {} shards have a leader", s.0, s.1),
        )),
        None => parts.push(("quorum", 20, 1.0, "single node".into())),
    }
    let m = i.memory_ratio;
    let memory = if m <= 0.8 {
        1.0
    } else if m <= 1.0 {
        1.0 - (m - 0.8) * 2.5
    } else {
        0.5 * ramp(m, 1.0, 1.5)
    };
    parts.push((
        "memory_tier",
        10,
        memory,
        format!("{:.0}% of the cap", m * 100.0),
    ));
    if let Some(free) = i.disk_free {
        parts.push((
            "disk",
            10,
            ramp(free, 0.2, 0.0),
            format!("{:.0}% free", free * 100.0),
        ));
    }
    if let Some(free) = i.system_memory_free {
        parts.push((
            "system_memory",
            10,
            ramp(free, 0.2, 0.0),
            format!("{:.0}% available", free * 100.0),
        ));
    }
    if let Some(load) = i.load_per_core {
        parts.push((
            "load",
            10,
            ramp(load, 1.0, 3.0),
            format!("{load:.2} per core"),
        ));
    }
    if let Some(w) = i.workers.filter(|w| w.1 > 0) {
        parts.push((
            "workers",
            10,
            fraction(w),
            format!("{} of {} partitions' workers keep up", w.0, w.1),
        ));
    }
    let total: u32 = parts.iter().map(|p| p.1).sum();
    let weighted: f64 = parts.iter().map(|p| f64::from(p.1) * p.2).sum();
    let score = (100.0 * weighted / f64::from(total.max(1))).round() as u32;
    Health {
        score,
        status: band(score),
        components: parts
            .into_iter()
            .map(|(name, weight, s, detail)| Component {
                name,
                weight,
                score: (s * 100.0).round() as u32,
                detail,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fine() -> Inputs {
        Inputs {
            writes_ok: true,
            members: None,
            shards: None,
            memory_ratio: 0.3,
            disk_free: Some(0.5),
            system_memory_free: Some(0.6),
            load_per_core: Some(0.2),
            workers: None,
        }
    }

    #[test]
    fn a_fine_node_scores_100() {
        let h = score(&fine());
        assert_eq!((h.score, h.status), (100, "healthy"));
        assert_eq!(h.components.len(), 7);
    }

    #[test]
    fn each_component_moves_the_score_by_its_weight() {
        let mut i = fine();
        i.writes_ok = false;
        assert_eq!(score(&i).score, 80);
        assert_eq!(score(&i).status, "warning");
        let mut i = fine();
        i.members = Some((2, 3));
        i.shards = Some((1, 3));
        // 20 * 2/3 + 20 * 1/3 lost 20 of 40.
        assert_eq!(score(&i).score, 80);
        let mut i = fine();
        i.memory_ratio = 1.0;
        assert_eq!(score(&i).score, 95);
        i.memory_ratio = 1.5;
        assert_eq!(score(&i).score, 90);
        let mut i = fine();
        i.disk_free = Some(0.1);
        i.system_memory_free = Some(0.0);
        i.load_per_core = Some(3.0);
        assert_eq!(score(&i).score, 75);
        let mut i = fine();
        i.writes_ok = false;
        i.shards = Some((0, 3));
        i.members = Some((1, 3));
        assert!(score(&i).score < 50);
        assert_eq!(score(&i).status, "critical");
    }

    #[test]
    fn workers_that_fall_behind_cost_their_share() {
        let mut i = fine();
        i.workers = Some((16, 16));
        assert_eq!(score(&i).score, 100);
        assert_eq!(score(&i).components.len(), 8);
        i.workers = Some((8, 16));
        // 5 of 110 lost.
        assert_eq!(score(&i).score, 95);
        i.workers = Some((0, 0));
        assert_eq!(score(&i).components.len(), 7);
    }

    #[test]
    fn unmeasured_components_are_left_out() {
        let mut i = fine();
        i.disk_free = None;
        i.system_memory_free = None;
        i.load_per_core = None;
        i.writes_ok = false;
        let h = score(&i);
        assert_eq!(h.components.len(), 4);
        // 20 of 70 lost.
        assert_eq!(h.score, 71);
    }

    #[test]
    fn bands_are_seed_001s() {
        assert_eq!(band(90), "healthy");
        assert_eq!(band(89), "warning");
        assert_eq!(band(70), "warning");
        assert_eq!(band(69), "critical");
    }
}
