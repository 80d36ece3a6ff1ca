//! The aggregation worker pool and its autoscaler (seed 001's scaling
//! rules, applied to the metrics topic).
//!
//! Each partition has its own worker task, since a partition is read in
//! order. The pool decides how many of them may work on a batch at the
//! same time on this node: a worker holds one of the pool's permits from
//! reading a batch until its commit is stored. Commits wait for the log
//! (and, in a cluster, for a Raft majority), so more workers than cores
//! still adds throughput.
//!
//! The autoscaler follows seed 001's logic, with its terms mapped:
//! - waiting jobs: entries of the topic not yet read by the workers (the
//!   consumer group's lag, over the partitions this node aggregates);
//! - load factor: the fraction of the pool's permits in use, averaged
//!   over the last interval;
//! - scale up when waiting > target × `scale_up_threshold`, or the load
//!   factor is above 0.8 with entries waiting, below `max_workers`: to
//!   ceil(waiting / target) workers, at least one more;
//! - scale down by one when nothing waits and the load factor is below
//!   0.2, or waiting < target × `scale_down_threshold`, above
//!   `min_workers`;
//! - at most one action per `cooldown_secs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most workers a pool may have.
pub const MAX_POOL: u32 = 1024;

/// Scaling settings of the metrics topic (`[streams.scaling]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingConfig {
    /// Whether the autoscaler may change the pool.
    pub enabled: bool,
    /// Fewest workers (0: the number of cores).
    pub min_workers: u32,
    /// Most workers (0: the number of partitions).
    pub max_workers: u32,
    /// Waiting entries one worker is expected to keep up with.
    pub target_waiting: u64,
    /// Scale up when waiting > target × this.
    pub scale_up_threshold: f64,
    /// Scale down when waiting < target × this.
    pub scale_down_threshold: f64,
    /// Seconds between two actions.
    pub cooldown_secs: u64,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            enabled: true,
            min_workers: 0,
            max_workers: 0,
            target_waiting: 10_000,
            scale_up_threshold: 2.0,
            scale_down_threshold: 0.3,
            cooldown_secs: 300,
        }
    }
}

impl ScalingConfig {
    /// Checks every field; the error names the bad one.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, why: &str| Err((format!("streams.scaling.{f}"), why.to_string()));
        if self.min_workers > MAX_POOL {
            return bad("min_workers", "must be at most 1024");
        }
        if self.max_workers > MAX_POOL {
            return bad("max_workers", "must be at most 1024");
        }
        if self.max_workers != 0 && self.min_workers > self.max_workers {
            return bad("min_workers", "must not be above max_workers");
        }
        if self.target_waiting == 0 {
            return bad("target_waiting", "must be at least 1");
        }
        if !(self.scale_up_threshold.is_finite() && self.scale_up_threshold > 0.0) {
            return bad("scale_up_threshold", "must be a number above 0");
        }
        if !(self.scale_down_threshold.is_finite() && self.scale_down_threshold >= 0.0) {
            return bad("scale_down_threshold", "must be a number of 0 or more");
        }
        if self.scale_down_threshold >= self.scale_up_threshold {
            return bad("scale_down_threshold", "must be below scale_up_threshold");
        }
        if self.cooldown_secs > 86_400 {
            return bad("cooldown_secs", "must be at most 86400");
        }
        Ok(())
    }

    /// The bounds with their defaults filled in.
    pub fn bounds(&self, partitions: usize) -> (u32, u32) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let max = if self.max_workers == 0 {
            (partitions as u32).clamp(1, MAX_POOL)
        } else {
            self.max_workers
        };
        let min = if self.min_workers == 0 {
            cores.min(max)
        } else {
            self.min_workers
        };
        (min.min(max), max)
    }
}

/// What the autoscaler decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Workers to have.
    pub to: u32,
    /// Why.
    pub reason: String,
}

/// Seed 001's scaling logic: what to do with `current` workers.
pub fn decide(
    cfg: &ScalingConfig,
    (min, max): (u32, u32),
    current: u32,
    waiting: u64,
    load: f64,
) -> Option<Decision> {
    let target = cfg.target_waiting as f64;
    let w = waiting as f64;
    if current < min {
        return Some(Decision {
            to: min,
            reason: format!("below min_workers ({min})"),
        });
    }
    if current > max {
        return Some(Decision {
            to: max,
            reason: format!("above max_workers ({max})"),
        });
    }
    let up = w > target * cfg.scale_up_threshold || (load > 0.8 && waiting > 0);
    if up && current < max {
        let want = (w / target).ceil() as u32;
        let to = want.clamp(current + 1, max);
        return Some(Decision {
            to,
            reason: format!(
                "{waiting} entries waiting (target {}), load factor {load:.2}",
                cfg.target_waiting
            ),
        });
    }
    let down = (waiting == 0 && load < 0.2) || w < target * cfg.scale_down_threshold;
    if down && !up && current > min {
        return Some(Decision {
            to: current - 1,
            reason: format!("{waiting} entries waiting, load factor {load:.2}"),
        });
    }
    None
}

/// One change of the pool's size.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// When, epoch ms.
    pub timestamp: u64,
    /// Workers before.
    pub from: u32,
    /// Workers after.
    pub to: u32,
    /// Why.
    pub reason: String,
    /// `auto` or `manual`.
    pub source: &'static str,
}

/// The pool of permits partition workers take to process a batch.
pub struct Pool {
    permits: Arc<Semaphore>,
    size: AtomicUsize,
    /// Permits to drop as they come back, after a shrink found them in use.
    debt: AtomicUsize,
    busy: AtomicUsize,
    busy_nanos: AtomicU64,
    started: Instant,
    /// Changes of size, newest last (bounded).
    pub actions: Mutex<VecDeque<Action>>,
    /// When the size last changed.
    pub last_change: Mutex<Option<Instant>>,
}

/// A permit; gives itself back (or pays a shrink's debt) when dropped.
pub struct Permit<'a> {
    pool: &'a Pool,
    permit: Option<OwnedSemaphorePermit>,
    since: Instant,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let pool = self.pool;
        pool.busy.fetch_sub(1, Ordering::Relaxed);
        pool.busy_nanos
            .fetch_add(self.since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Some(p) = self.permit.take() {
            let owed = pool
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1));
            if owed.is_ok() {
                p.forget();
            }
        }
    }
}

impl Pool {
    /// A pool of `size` workers.
    pub fn new(size: u32) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(size as usize)),
            size: AtomicUsize::new(size as usize),
            debt: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            busy_nanos: AtomicU64::new(0),
            started: Instant::now(),
            actions: Mutex::new(VecDeque::new()),
            last_change: Mutex::new(None),
        }
    }

    /// Waits for a free worker.
    pub async fn acquire(&self) -> Permit<'_> {
        let permit = self.permits.clone().acquire_owned().await.ok();
        self.busy.fetch_add(1, Ordering::Relaxed);
        Permit {
            pool: self,
            permit,
            since: Instant::now(),
        }
    }

    /// Workers in the pool.
    pub fn size(&self) -> u32 {
        self.size.load(Ordering::Relaxed) as u32
    }

    /// Workers processing a batch now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Total worker-seconds spent on batches, and seconds since start:
    /// two readings make a load factor.
    pub fn busy_seconds(&self) -> (f64, f64) {
        (
            self.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            self.started.elapsed().as_secs_f64(),
        )
    }

    /// Changes the pool to `to` workers and records why.
    pub fn resize(&self, to: u32, reason: String, source: &'static str) {
        let to = to.clamp(1, MAX_POOL) as usize;
        let from = self.size.swap(to, Ordering::AcqRel);
        if to > from {
            let mut add = to - from;
            // Cancel debt first: permits in use that were to be dropped.
            while add > 0
                && self
                    .debt
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                    .is_ok()
            {
                add -= 1;
            }
            self.permits.add_permits(add);
        } else if to < from {
            let cut = from - to;
            let forgotten = self.permits.forget_permits(cut);
            self.debt.fetch_add(cut - forgotten, Ordering::AcqRel);
        }
        *self.last_change.lock() = Some(Instant::now());
        if from != to {
            tracing::info!(from, to, source, %reason, "aggregation worker pool resized");
            let mut actions = self.actions.lock();
            actions.push_back(Action {
                timestamp: crate::storage::now_ms(),
                from: from as u32,
                to: to as u32,
                reason,
                source,
            });
            while actions.len() > 100 {
                actions.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_up_with_the_backlog_and_down_when_idle() {
        let cfg = ScalingConfig {
            target_waiting: 100,
            ..ScalingConfig::default()
        };
        let b = (2, 16);
        // 2x target is the line.
        assert_eq!(decide(&cfg, b, 4, 200, 0.5), None);
        assert_eq!(decide(&cfg, b, 4, 201, 0.5).unwrap().to, 5);
        assert_eq!(decide(&cfg, b, 4, 1000, 0.5).unwrap().to, 10);
        assert_eq!(decide(&cfg, b, 4, 100_000, 0.5).unwrap().to, 16);
        assert_eq!(decide(&cfg, b, 16, 100_000, 1.0), None);
        // Busy with anything waiting.
        assert_eq!(decide(&cfg, b, 4, 50, 0.9).unwrap().to, 5);
        // Idle: down one at a time, not below min.
        assert_eq!(decide(&cfg, b, 4, 0, 0.1).unwrap().to, 3);
        assert_eq!(decide(&cfg, b, 4, 29, 0.5).unwrap().to, 3);
        assert_eq!(decide(&cfg, b, 2, 0, 0.0), None);
        assert_eq!(decide(&cfg, b, 4, 50, 0.5), None);
        // Out of bounds after a config change.
        assert_eq!(decide(&cfg, b, 1, 0, 0.0).unwrap().to, 2);
        assert_eq!(decide(&cfg, b, 20, 0, 0.0).unwrap().to, 16);
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = |c: ScalingConfig| c.validate().unwrap_err().0;
        assert_eq!(
            bad(ScalingConfig {
                min_workers: 8,
                max_workers: 4,
                ..ScalingConfig::default()
            }),
            "streams.scaling.min_workers"
        );
        assert_eq!(
            bad(ScalingConfig {
                scale_down_threshold: 3.0,
                ..ScalingConfig::default()
            }),
            "streams.scaling.scale_down_threshold"
        );
        assert!(ScalingConfig::default().validate().is_ok());
    }

    #[tokio::test]
    async fn a_shrunk_pool_lets_fewer_workers_in() {
        let pool = Pool::new(3);
        let a = pool.acquire().await;
        let b = pool.acquire().await;
        assert_eq!(pool.busy(), 2);
        // Shrink to 1 while two are in use: both come back as debt.
        pool.resize(1, "test".into(), "manual");
        drop(a);
        assert!(pool.permits.available_permits() == 0);
        drop(b);
        assert_eq!(pool.permits.available_permits(), 1);
        let _c = pool.acquire().await;
        assert_eq!(pool.permits.available_permits(), 0);
        pool.resize(4, "test".into(), "manual");
        assert_eq!(pool.permits.available_permits(), 3);
        assert_eq!(pool.size(), 4);
        assert_eq!(pool.actions.lock().len(), 2);
    }
}
