//! Background workers: the spiller and active expiry, the log flusher, and
//! the maintenance loop (offloader, checkpoints, disk-tier expiry).
//!
//! Each is a plain thread: they do blocking disk I/O and must keep running
//! however busy the async front end is. One stop flag reaches all of them;
//! dropping [`Workers`] stops them, then takes a final checkpoint so a clean
//! shutdown leaves an empty log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{AppendFsync, Inner};

struct Signal {
    stop: AtomicBool,
    wake: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    /// Sleeps up to `d` or until woken; returns false once stopping.
    fn wait(&self, d: Duration) -> bool {
        let mut woken = self.wake.lock();
        if !*woken && !self.stop.load(Ordering::Acquire) {
            self.cv.wait_for(&mut woken, d);
        }
        *woken = false;
        !self.stop.load(Ordering::Acquire)
    }
}

pub(crate) struct Workers {
    inner: Arc<Inner>,
    spill: Arc<Signal>,
    others: Arc<Signal>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn new_signal() -> Arc<Signal> {
    Arc::new(Signal {
        stop: AtomicBool::new(false),
        wake: Mutex::new(false),
        cv: Condvar::new(),
    })
}

impl Workers {
    pub fn start(inner: Arc<Inner>) -> Workers {
        let spill = new_signal();
        let others = new_signal();
        let mut threads = Vec::new();
        {
            let (inner, sig) = (inner.clone(), spill.clone());
            threads.push(spawn("strata-spill", move || spill_loop(&inner, &sig)));
        }
        {
            let (inner, sig) = (inner.clone(), others.clone());
            threads.push(spawn("strata-wal", move || wal_loop(&inner, &sig)));
        }
        {
            let (inner, sig) = (inner.clone(), others.clone());
            threads.push(spawn("strata-maint", move || {
                maintenance_loop(&inner, &sig)
            }));
        }
        Workers {
            inner,
            spill,
            others,
            threads: Mutex::new(threads),
        }
    }

    pub fn wake_spiller(&self) {
        *self.spill.wake.lock() = true;
        self.spill.cv.notify_one();
    }

    pub fn maybe_wake_spiller(&self, inner: &Inner) {
        if inner.used.load(Ordering::Relaxed) > inner.spill_threshold() {
            self.wake_spiller();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for sig in [&self.spill, &self.others] {
            sig.stop.store(true, Ordering::Release);
            *sig.wake.lock() = true;
            sig.cv.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        if self.inner.wal.poisoned().is_none() {
            if let Err(e) = self.inner.checkpoint() {
                tracing::error!(error = %e, "final checkpoint failed; the log will be replayed at next open");
            }
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a storage worker thread")
}

fn spill_loop(inner: &Inner, sig: &Signal) {
    let mut last_expiry = Instant::now();
    while sig.wait(Duration::from_millis(20)) {
        inner.tick_clock();
        if inner.used.load(Ordering::Relaxed) > inner.spill_threshold() {
            if let Err(e) = inner.spill_to(inner.spill_low()) {
                tracing::warn!(error = %e, "spill failed; retrying");
            }
        }
        if last_expiry.elapsed() >= Duration::from_millis(100) {
            inner.expire_cycle(64);
            last_expiry = Instant::now();
        }
    }
}

fn wal_loop(inner: &Inner, sig: &Signal) {
    while sig.wait(Duration::from_secs(1)) {
        let policy = inner.cfg.read().appendfsync;
        let lsn = inner.wal.appended();
        let result = match policy {
            AppendFsync::Everysec => inner.wal.sync(lsn, AppendFsync::Always),
            AppendFsync::No => inner.wal.sync(lsn, AppendFsync::No),
            AppendFsync::Always => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "background log flush failed");
        }
    }
}

fn maintenance_loop(inner: &Inner, sig: &Signal) {
    let mut last_offload = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut disk_cursor: (usize, u64) = (0, 0);
    while sig.wait(Duration::from_secs(1)) {
        let cfg = inner.cfg.read().clone();
        if last_offload.elapsed() >= Duration::from_secs(cfg.offload_interval_secs) {
            inner.offload();
            last_offload = Instant::now();
        }
        let log_big = inner.wal.segment_bytes() >= cfg.checkpoint_wal_bytes;
        if log_big || last_checkpoint.elapsed() >= Duration::from_secs(cfg.checkpoint_interval_secs)
        {
            if inner.wal.poisoned().is_none() {
                if let Err(e) = inner.checkpoint() {
                    tracing::error!(error = %e, "checkpoint failed");
                }
            }
            last_checkpoint = Instant::now();
        }
        if let Err(e) = inner.disk.tidy() {
            tracing::warn!(error = %e, "freeing flushed write buffers failed");
        }
        // Active expiry for the disk tier, a bounded step per second.
        let (db, from) = disk_cursor;
        disk_cursor = match inner.expire_disk(db, from, 2000) {
            Ok(Some(next)) => (db, next),
            Ok(None) => ((db + 1) % inner.counts.len(), 0),
            Err(e) => {
                tracing::warn!(error = %e, "disk expiry sweep failed");
                (db, from)
            }
        };
    }
}
