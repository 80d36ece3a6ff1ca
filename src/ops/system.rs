//! The machine's figures (seed 001's system metrics): CPU, load, memory,
//! disk, network and the process, read with `sysinfo`.

use std::path::Path;

use serde::Serialize;

/// One reading of the machine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemSample {
    /// CPU use over the last interval, percent of all cores.
    pub cpu_percent: f64,
    /// Cores.
    pub cores: usize,
    /// Load average over 1, 5 and 15 minutes.
    pub load_average: [f64; 3],
    /// Machine memory, bytes.
    pub memory_total: u64,
    /// Memory available to new work, bytes.
    pub memory_available: u64,
    /// The data directory's filesystem: size and free bytes.
    pub disk_total: u64,
    /// Free bytes on it.
    pub disk_available: u64,
    /// Bytes received and sent by every interface since boot.
    pub network_received: u64,
    /// Bytes sent since boot.
    pub network_transmitted: u64,
    /// Bytes received per second over the last interval.
    pub network_rx_per_sec: f64,
    /// Bytes sent per second over the last interval.
    pub network_tx_per_sec: f64,
    /// This process's resident memory, bytes.
    pub process_rss: u64,
    /// Seconds since the machine booted.
    pub system_uptime_secs: u64,
}

impl SystemSample {
    /// Free fraction of the data directory's filesystem.
    pub fn disk_free(&self) -> Option<f64> {
        (self.disk_total > 0).then(|| self.disk_available as f64 / self.disk_total as f64)
    }

    /// Available fraction of memory.
    pub fn memory_free(&self) -> Option<f64> {
        (self.memory_total > 0).then(|| self.memory_available as f64 / self.memory_total as f64)
    }

    /// One-minute load per core.
    pub fn load_per_core(&self) -> Option<f64> {
        let l = self.load_average[0];
        (l.is_finite() && l >= 0.0).then(|| l / self.cores.max(1) as f64)
    }
}

/// Keeps what successive readings need (CPU times, network counters).
pub struct Sampler {
    sys: sysinfo::System,
    networks: sysinfo::Networks,
    last: Option<(std::time::Instant, u64, u64)>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new()
    }
}

impl Sampler {
    /// A sampler; its first CPU reading covers the time since this call.
    pub fn new() -> Sampler {
        let mut sys = sysinfo::System::new();
        sys.refresh_cpu_usage();
        Sampler {
            sys,
            networks: sysinfo::Networks::new_with_refreshed_list(),
            last: None,
        }
    }

    /// Reads the machine; `dir` picks the filesystem.
    pub fn sample(&mut self, dir: &Path) -> SystemSample {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.networks.refresh(true);
        let (rx, tx) = self
            .networks
            .list()
            .iter()
            .filter(|(name, _)| name.as_str() != "lo")
            .fold((0, 0), |(r, t), (_, n)| {
                (r + n.total_received(), t + n.total_transmitted())
            });
        let now = std::time::Instant::now();
        let (rx_rate, tx_rate) = match self.last {
            Some((at, r0, t0)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                (
                    rx.saturating_sub(r0) as f64 / secs,
                    tx.saturating_sub(t0) as f64 / secs,
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, rx, tx));
        let (disk_total, disk_available) = disk(dir);
        let load = sysinfo::System::load_average();
        SystemSample {
            cpu_percent: f64::from(self.sys.global_cpu_usage()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average: [load.one, load.five, load.fifteen],
            memory_total: self.sys.total_memory(),
            memory_available: self.sys.available_memory(),
            disk_total,
            disk_available,
            network_received: rx,
            network_transmitted: tx,
            network_rx_per_sec: rx_rate,
            network_tx_per_sec: tx_rate,
            process_rss: crate::metrics::process_rss_bytes(),
            system_uptime_secs: sysinfo::System::uptime(),
        }
    }
}

/// Size and free bytes of the filesystem holding `dir`.
pub fn disk(dir: &Path) -> (u64, u64) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let disks = sysinfo::Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()) && d.total_space() > 0)
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or((0, 0), |d| (d.total_space(), d.available_space()))
}
