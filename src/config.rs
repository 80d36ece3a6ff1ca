//! Node configuration: a TOML file, then environment variables, then
//! command-line flags, each overriding the one before. Unknown keys and bad
//! values are rejected with the field's name.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::storage::parse_size;
use crate::storage::{AppendFsync, StorageConfig};

/// Everything one node needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address both listeners bind to.
    pub bind: String,
    /// RESP port (0 picks a free one).
    pub port: u16,
    /// HTTP port (0 picks a free one).
    pub http_port: u16,
    /// Password for `AUTH` (Redis's `requirepass`); none by default.
    pub requirepass: Option<String>,
    /// The ACL file (Redis's `aclfile`): users and their rules, written
    /// through on every ACL SETUSER and DELUSER. Default:
    /// `<data_dir>/users.acl`.
    pub aclfile: Option<std::path::PathBuf>,
    /// Entries ACL LOG keeps (Redis's `acllog-max-len`).
    pub acllog_max_len: usize,
    /// Accesses a minute that make a key hot (seed 000's
    /// `HOTKEY_THRESHOLD_PER_MIN`); 0 turns access counting off.
    pub hotkey_threshold_per_min: u64,
    /// Keys the client-tracking table remembers before it invalidates
    /// some to make room (Redis's `tracking-table-max-keys`; 0: no limit).
    pub tracking_table_max_keys: usize,
    /// HTTP API keys and the ACL user each one acts as: a request with
    /// `X-API-Key: K` (or `?apiKey=K`) runs its commands as that user.
    pub http_api_keys: std::collections::BTreeMap<String, String>,
    /// Key required by admin and monitoring HTTP endpoints (`X-API-Key`
    /// header or `?apiKey=`); none by default.
    pub api_key: Option<String>,
    /// Most simultaneous RESP clients.
    pub maxclients: usize,
    /// Longest bulk string a request may carry.
    pub proto_max_bulk_len: usize,
    /// Most unparsed bytes buffered for one client.
    pub client_query_buffer_limit: usize,
    /// Largest HTTP request body.
    pub http_body_limit: usize,
    /// Keep a small LRU of hot keys' values in front of the store for
    /// the HTTP read path (seed 000's `LOCAL_CACHE_HOTKEYS`).
    pub local_cache_hotkeys: bool,
    /// Entries in that cache.
    pub local_cache_entries: usize,
    /// Threads serving RESP connections (0 = half the cores, at least one).
    pub io_threads: usize,
    /// Node-to-node port; setting it starts the node in cluster mode.
    pub cluster_port: Option<u16>,
    /// Secret every node of the cluster shares (`STRATA_CLUSTER_SECRET`).
    /// Required unless the node binds to a loopback address.
    pub cluster_secret: Option<String>,
    /// A shard's Raft group snapshots its slots (a checkpoint of both
    /// tiers) after this many log entries, and then truncates its log.
    pub raft_snapshot_every: u64,
    /// A member unreachable for this many seconds is replaced: its shard
    /// replicas are rebuilt on the other members, and it is removed.
    /// 0 turns replacement off.
    pub node_down_after: u64,
    /// How far a pub/sub subscriber may fall behind before it is
    /// disconnected (Redis's `client-output-buffer-limit pubsub`).
    pub pubsub_output_limit: OutputLimit,
    /// How long a script may run before other clients get `-BUSY`
    /// (Redis's `busy-reply-threshold`, formerly `lua-time-limit`), in ms.
    pub busy_reply_threshold_ms: u64,
    /// Keyspace notification classes (Redis's `notify-keyspace-events`
    /// letters, e.g. `KEA`); empty: off.
    pub notify_keyspace_events: String,
    /// Who may run DEBUG (Redis's `enable-debug-command`): `no`, `yes`,
    /// or `local` (clients on a loopback address).
    pub enable_debug_command: String,
    /// Commands at least this slow (microseconds) go to SLOWLOG; negative
    /// turns it off, 0 logs every command (`slowlog-log-slower-than`).
    pub slowlog_log_slower_than: i64,
    /// SLOWLOG entries kept (`slowlog-max-len`).
    pub slowlog_max_len: usize,
    /// Commands at least this slow (milliseconds) are latency spikes for
    /// LATENCY; 0 turns the monitor off (`latency-monitor-threshold`).
    pub latency_monitor_threshold: u64,
    /// Most memory the Lua VM may use, in bytes (0 = no limit).
    pub lua_memory_limit: u64,
    /// Storage settings.
    pub storage: StorageConfig,
    /// The metric pipeline: partitions, watermark, retention, scaling.
    pub streams: crate::pipeline::StreamsConfig,
    /// The monitor: its interval, the autoscaler, the alert history.
    pub monitoring: crate::ops::MonitoringConfig,
    /// Alert rules' settings by rule name (`[alerts.high_memory]`
    /// `threshold = 0.9`); see [`crate::ops::alerts`].
    pub alerts: crate::ops::alerts::AlertsConfig,
    /// Alerts are POSTed here as JSON, with retries (`http://` only).
    pub alert_webhook_url: Option<String>,
    /// Where backups go (seed 002's `BACKUP_DIR`); default
    /// `<data_dir>/backups`.
    pub backup_dir: Option<std::path::PathBuf>,
    /// Seconds between periodic backups (seed 002's `BACKUP_INTERVAL`); 0
    /// (the default) takes none. In a cluster, the metadata leader takes a
    /// backup of the whole cluster.
    pub backup_interval_secs: u64,
    /// Periodic backups keep this many, the newest.
    pub backup_keep: usize,
    /// Redis's encoding thresholds. strata's layouts don't depend on them;
    /// they are kept so clients and tools that set and read them work,
    /// and OBJECT ENCODING names encodings by them as Redis would.
    pub encoding: EncodingKnobs,
}

/// An output buffer limit: bytes waiting for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputLimit {
    /// Disconnect at once above this many bytes (0 = no limit).
    pub hard_bytes: u64,
    /// Disconnect after staying above this many bytes ...
    pub soft_bytes: u64,
    /// ... for this many seconds.
    pub soft_seconds: u64,
}

impl Default for OutputLimit {
    fn default() -> Self {
        OutputLimit {
            hard_bytes: 32 << 20,
            soft_bytes: 8 << 20,
            soft_seconds: 60,
        }
    }
}

/// Redis's per-type encoding thresholds (`CONFIG SET hash-max-listpack-entries`
/// and friends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncodingKnobs {
    /// `hash-max-listpack-entries` (alias `hash-max-ziplist-entries`).
    pub hash_max_listpack_entries: i64,
    /// `hash-max-listpack-value` (alias `hash-max-ziplist-value`).
    pub hash_max_listpack_value: i64,
    /// `list-max-listpack-size` (alias `list-max-ziplist-size`).
    pub list_max_listpack_size: i64,
    /// `list-compress-depth`.
    pub list_compress_depth: i64,
    /// `set-max-intset-entries`.
    pub set_max_intset_entries: i64,
    /// `set-max-listpack-entries`.
    pub set_max_listpack_entries: i64,
    /// `set-max-listpack-value`.
    pub set_max_listpack_value: i64,
    /// `zset-max-listpack-entries` (alias `zset-max-ziplist-entries`).
    pub zset_max_listpack_entries: i64,
    /// `zset-max-listpack-value` (alias `zset-max-ziplist-value`).
    pub zset_max_listpack_value: i64,
    /// `stream-node-max-bytes`.
    pub stream_node_max_bytes: i64,
    /// `stream-node-max-entries`.
    pub stream_node_max_entries: i64,
    /// `hll-sparse-max-bytes`.
    pub hll_sparse_max_bytes: i64,
}

impl Default for EncodingKnobs {
    fn default() -> Self {
        EncodingKnobs {
            hash_max_listpack_entries: 128,
            hash_max_listpack_value: 64,
            list_max_listpack_size: -2,
            list_compress_depth: 0,
            set_max_intset_entries: 512,
            set_max_listpack_entries: 128,
            set_max_listpack_value: 64,
            zset_max_listpack_entries: 128,
            zset_max_listpack_value: 64,
            stream_node_max_bytes: 4096,
            stream_node_max_entries: 100,
            hll_sparse_max_bytes: 3000,
        }
    }
}

impl EncodingKnobs {
    /// Every knob's Redis name (aliases included) with its value.
    pub fn list(&self) -> Vec<(&'static str, i64)> {
        KNOB_NAMES
            .iter()
            .map(|&name| {
                let mut copy = self.clone();
                let v = *copy.knob_mut(name).expect("listed knob");
                (name, v)
            })
            .collect()
    }

    /// The knob Redis calls `name`.
    pub fn knob_mut(&mut self, name: &str) -> Option<&mut i64> {
        Some(match name {
            "hash-max-listpack-entries" | "hash-max-ziplist-entries" => {
                &mut self.hash_max_listpack_entries
            }
            "hash-max-listpack-value" | "hash-max-ziplist-value" => {
                &mut self.hash_max_listpack_value
            }
            "list-max-listpack-size" | "list-max-ziplist-size" => &mut self.list_max_listpack_size,
            "list-compress-depth" => &mut self.list_compress_depth,
            "set-max-intset-entries" => &mut self.set_max_intset_entries,
            "set-max-listpack-entries" => &mut self.set_max_listpack_entries,
            "set-max-listpack-value" => &mut self.set_max_listpack_value,
            "zset-max-listpack-entries" | "zset-max-ziplist-entries" => {
                &mut self.zset_max_listpack_entries
            }
            "zset-max-listpack-value" | "zset-max-ziplist-value" => {
                &mut self.zset_max_listpack_value
            }
            "stream-node-max-bytes" => &mut self.stream_node_max_bytes,
            "stream-node-max-entries" => &mut self.stream_node_max_entries,
            "hll-sparse-max-bytes" => &mut self.hll_sparse_max_bytes,
            _ => return None,
        })
    }
}

const KNOB_NAMES: &[&str] = &[
    "hash-max-listpack-entries",
    "hash-max-ziplist-entries",
    "hash-max-listpack-value",
    "hash-max-ziplist-value",
    "list-max-listpack-size",
    "list-max-ziplist-size",
    "list-compress-depth",
    "set-max-intset-entries",
    "set-max-listpack-entries",
    "set-max-listpack-value",
    "zset-max-listpack-entries",
    "zset-max-ziplist-entries",
    "zset-max-listpack-value",
    "zset-max-ziplist-value",
    "stream-node-max-bytes",
    "stream-node-max-entries",
    "hll-sparse-max-bytes",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1".into(),
            port: 6379,
            http_port: 8080,
            requirepass: None,
            aclfile: None,
            acllog_max_len: 128,
            tracking_table_max_keys: 1_000_000,
            hotkey_threshold_per_min: 2000,
            http_api_keys: Default::default(),
            api_key: None,
            maxclients: 10_000,
            proto_max_bulk_len: 512 << 20,
            client_query_buffer_limit: 1 << 30,
            http_body_limit: 16 << 20,
            local_cache_hotkeys: true,
            local_cache_entries: 10_000,
            io_threads: 0,
            cluster_port: None,
            cluster_secret: None,
            raft_snapshot_every: 100_000,
            node_down_after: 300,
            storage: StorageConfig::default(),
            streams: crate::pipeline::StreamsConfig::default(),
            monitoring: crate::ops::MonitoringConfig::default(),
            alerts: crate::ops::alerts::AlertsConfig::new(),
            alert_webhook_url: None,
            backup_dir: None,
            backup_interval_secs: 0,
            backup_keep: 7,
            pubsub_output_limit: OutputLimit::default(),
            busy_reply_threshold_ms: 5000,
            lua_memory_limit: 1 << 30,
            notify_keyspace_events: String::new(),
            enable_debug_command: "local".into(),
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
            latency_monitor_threshold: 0,
            encoding: EncodingKnobs::default(),
        }
    }
}

/// A configuration problem, naming where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A bad value for a named field or variable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or environment variable.
        field: String,
        /// Why.
        reason: String,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn parse_ratio(field: &str, v: &str) -> Result<f64, ConfigError> {
    v.trim()
        .parse::<f64>()
        .map_err(|_| invalid(field, format!("{v:?} is not a number")))
}

fn parse_secs(field: &str, v: &str) -> Result<u64, ConfigError> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| invalid(field, format!("{v:?} is not a whole number of seconds")))
}

/// Webhooks are plain `http://host[:port]/path` URLs.
fn check_webhook_url(url: &str) -> Result<(), ConfigError> {
    let field = "alert_webhook_url";
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(invalid(
            field,
            format!("{url:?} must start with http:// (https is not supported; put a TLS proxy in front)"),
        ));
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid(field, format!("{url:?} has no host")));
    }
    Ok(())
}

fn parse_bool(field: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(
            field,
            format!("{v:?} is not a boolean (1/0, true/false)"),
        )),
    }
}

impl Config {
    /// Reads a TOML file. Sizes may be written as numbers of bytes.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Applies environment variables: `STRATA_*` and the seeds' names.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let s = &mut self.storage;
        if let Some(v) = get("STRATA_BIND") {
            self.bind = v;
        }
        for (var, slot) in [
            ("STRATA_PORT", &mut self.port),
            ("STRATA_HTTP_PORT", &mut self.http_port),
        ] {
            if let Some(v) = get(var) {
                *slot = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(var, format!("{v:?} is not a port number")))?;
            }
        }
        if let Some(v) = get("STRATA_IO_THREADS") {
            self.io_threads = v
                .trim()
                .parse()
                .map_err(|_| invalid("STRATA_IO_THREADS", format!("{v:?} is not a number")))?;
        }
        if let Some(v) = get("STRATA_DATA_DIR") {
            s.data_dir = v.into();
        }
        if let Some(v) = get("STRATA_MAXMEMORY") {
            s.maxmemory = parse_size(&v).ok_or_else(|| {
                invalid("STRATA_MAXMEMORY", format!("{v:?} is not a size like 64mb"))
            })?;
        }
        if let Some(v) = get("STRATA_APPENDFSYNC") {
            s.appendfsync = AppendFsync::parse(&v).ok_or_else(|| {
                invalid(
                    "STRATA_APPENDFSYNC",
                    format!("{v:?} is not always, everysec or no"),
                )
            })?;
        }
        if let Some(v) = get("STRATA_REQUIREPASS") {
            self.requirepass = Some(v).filter(|p| !p.is_empty());
        }
        if let Some(v) = get("STRATA_CLUSTER_SECRET") {
            self.cluster_secret = Some(v).filter(|p| !p.is_empty());
        }
        if let Some(v) = get("STRATA_CLUSTER_PORT") {
            self.cluster_port = Some(v.trim().parse().map_err(|_| {
                invalid("STRATA_CLUSTER_PORT", format!("{v:?} is not a port number"))
            })?);
        }
        if let Some(v) = get("STRATA_RAFT_SNAPSHOT_EVERY") {
            self.raft_snapshot_every = v.trim().parse().map_err(|_| {
                invalid(
                    "STRATA_RAFT_SNAPSHOT_EVERY",
                    format!("{v:?} is not a number of log entries"),
                )
            })?;
        }
        if let Some(v) = get("STRATA_NODE_DOWN_AFTER") {
            self.node_down_after = v.trim().parse().map_err(|_| {
                invalid(
                    "STRATA_NODE_DOWN_AFTER",
                    format!("{v:?} is not a number of seconds"),
                )
            })?;
        }
        for var in [
            "STRATA_HOTKEY_THRESHOLD_PER_MIN",
            "HOTKEY_THRESHOLD_PER_MIN",
        ] {
            if let Some(v) = get(var) {
                self.hotkey_threshold_per_min = v.trim().parse().map_err(|_| {
                    invalid(var, format!("{v:?} is not a number of accesses a minute"))
                })?;
            }
        }
        // Seed 001 names the monitoring API's key CRON_API_KEY.
        for var in ["CRON_API_KEY", "STRATA_API_KEY"] {
            if let Some(v) = get(var) {
                self.api_key = Some(v).filter(|p| !p.is_empty());
            }
        }
        for var in ["STRATA_OVERFLOW_RATIO", "REDIS_MAXMEM_SOFT"] {
            if let Some(v) = get(var) {
                s.overflow_ratio = parse_ratio(var, &v)?;
            }
        }
        for var in ["STRATA_OFFLOAD_FORCE_RATIO", "OFFLOAD_FORCE_MEM_RATIO"] {
            if let Some(v) = get(var) {
                s.offload_force_ratio = parse_ratio(var, &v)?;
            }
        }
        let secs: [(&str, &str, &mut u64); 3] = [
            (
                "STRATA_OFFLOAD_AFTER_SECS",
                "OFFLOAD_AFTER_SECONDS",
                &mut s.offload_after_secs,
            ),
            (
                "STRATA_OFFLOAD_INTERVAL_SECS",
                "OFFLOAD_INTERVAL_SECONDS",
                &mut s.offload_interval_secs,
            ),
            (
                "STRATA_OFFLOAD_FORCE_MIN_AGE_SECS",
                "OFFLOAD_FORCE_MIN_AGE_SECONDS",
                &mut s.offload_force_min_age_secs,
            ),
        ];
        for (ours, seed, slot) in secs {
            for var in [ours, seed] {
                if let Some(v) = get(var) {
                    *slot = parse_secs(var, &v)?;
                }
            }
        }
        for var in ["STRATA_LOCAL_CACHE_HOTKEYS", "LOCAL_CACHE_HOTKEYS"] {
            if let Some(v) = get(var) {
                self.local_cache_hotkeys = parse_bool(var, &v)?;
            }
        }
        let st = &mut self.streams;
        let streams: [(&str, &mut u64); 3] = [
            (
                "STRATA_STREAMS_ALLOWED_LATENESS_SECS",
                &mut st.allowed_lateness_secs,
            ),
            (
                "STRATA_STREAMS_IDLE_ADVANCE_SECS",
                &mut st.idle_advance_secs,
            ),
            (
                "STRATA_STREAMS_LOG_RETENTION_SECS",
                &mut st.log_retention_secs,
            ),
        ];
        for (var, slot) in streams {
            if let Some(v) = get(var) {
                *slot = parse_secs(var, &v)?;
            }
        }
        let counts: [(&str, &mut u32); 2] = [
            ("STRATA_STREAMS_PARTITIONS", &mut st.partitions),
            ("STRATA_STREAMS_RETENTION_SLOTS", &mut st.retention_slots),
        ];
        for (var, slot) in counts {
            if let Some(v) = get(var) {
                *slot = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(var, format!("{v:?} is not a count")))?;
            }
        }
        if let Some(v) = get("STRATA_STREAMS_WORKERS") {
            st.workers = parse_bool("STRATA_STREAMS_WORKERS", &v)?;
        }
        for var in ["STRATA_MONITORING", "ENABLE_SYSTEM_MONITORING"] {
            if let Some(v) = get(var) {
                self.monitoring.enabled = parse_bool(var, &v)?;
            }
        }
        for var in ["STRATA_AUTOSCALING", "ENABLE_AUTO_SCALING"] {
            if let Some(v) = get(var) {
                self.monitoring.autoscaling = parse_bool(var, &v)?;
            }
        }
        if let Some(v) = get("STRATA_MONITORING_INTERVAL_SECS") {
            self.monitoring.interval_secs = v.trim().parse().map_err(|_| {
                invalid(
                    "STRATA_MONITORING_INTERVAL_SECS",
                    format!("{v:?} is not a number of seconds"),
                )
            })?;
        }
        if let Some(v) = get("STRATA_ALERT_WEBHOOK_URL") {
            self.alert_webhook_url = Some(v).filter(|v| !v.is_empty());
        }
        for var in ["STRATA_BACKUP_DIR", "BACKUP_DIR"] {
            if let Some(v) = get(var) {
                self.backup_dir =
                    Some(v.into()).filter(|p: &std::path::PathBuf| !p.as_os_str().is_empty());
            }
        }
        for var in ["STRATA_BACKUP_INTERVAL_SECS", "BACKUP_INTERVAL"] {
            if let Some(v) = get(var) {
                self.backup_interval_secs = v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(var, format!("{v:?} is not a number of seconds")))?;
            }
        }
        if let Some(v) = get("STRATA_BACKUP_KEEP") {
            self.backup_keep = v.trim().parse().map_err(|_| {
                invalid(
                    "STRATA_BACKUP_KEEP",
                    format!("{v:?} is not a number of backups"),
                )
            })?;
        }
        Ok(())
    }

    /// Checks the whole configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.storage.validate().map_err(|e| match e {
            crate::storage::StorageError::Config { field, reason } => {
                invalid(&format!("storage.{field}"), reason)
            }
            other => invalid("storage", other.to_string()),
        })?;
        self.streams
            .validate()
            .map_err(|(field, why)| invalid(&field, why))?;
        self.monitoring
            .validate()
            .map_err(|(field, why)| invalid(&field, why))?;
        crate::ops::alerts::validate(&self.alerts).map_err(|(field, why)| invalid(&field, why))?;
        if let Some(url) = &self.alert_webhook_url {
            check_webhook_url(url)?;
        }
        if self.backup_keep == 0 {
            return Err(invalid(
                "backup_keep",
                "must keep at least one backup".to_string(),
            ));
        }
        crate::pubsub::events::parse(&self.notify_keyspace_events)
            .map_err(|why| invalid("notify_keyspace_events", why))?;
        if !matches!(self.enable_debug_command.as_str(), "no" | "yes" | "local") {
            return Err(invalid(
                "enable_debug_command",
                format!(
                    "{:?} is not one of no, yes, local",
                    self.enable_debug_command
                ),
            ));
        }
        if self.bind.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "bind",
                format!("{:?} is not an IP address", self.bind),
            ));
        }
        if self.cluster_port.is_some() && self.cluster_secret.is_none() {
            let loopback = self
                .bind
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
            if !loopback {
                return Err(invalid(
                    "cluster_secret",
                    "a cluster node that listens beyond loopback needs a shared secret (STRATA_CLUSTER_SECRET)",
                ));
            }
        }
        if self.raft_snapshot_every < 10 {
            return Err(invalid(
                "raft_snapshot_every",
                "must be at least 10 log entries",
            ));
        }
        if self.cluster_secret.as_deref().is_some_and(|s| s.len() < 8) {
            return Err(invalid("cluster_secret", "must be at least 8 characters"));
        }
        if self.maxclients == 0 {
            return Err(invalid("maxclients", "must be at least 1"));
        }
        if self.proto_max_bulk_len < 1024 {
            return Err(invalid("proto_max_bulk_len", "must be at least 1024"));
        }
        if self.client_query_buffer_limit < 1 << 20 {
            return Err(invalid("client_query_buffer_limit", "must be at least 1mb"));
        }
        if self.http_body_limit < 1024 {
            return Err(invalid("http_body_limit", "must be at least 1024"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64mb"), Some(64 << 20));
        assert_eq!(parse_size("1k"), Some(1000));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("12xb"), None);
        assert_eq!(parse_size("mb"), None);
    }

    #[test]
    fn env_overrides_and_names_bad_values() {
        let mut c = Config::default();
        let env = |k: &str| match k {
            "REDIS_MAXMEM_SOFT" => Some("0.9".to_string()),
            "OFFLOAD_AFTER_SECONDS" => Some("120".to_string()),
            "STRATA_MAXMEMORY" => Some("64mb".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.storage.overflow_ratio, 0.9);
        assert_eq!(c.storage.offload_after_secs, 120);
        assert_eq!(c.storage.maxmemory, 64 << 20);
        let err = c
            .apply_env(|k| (k == "OFFLOAD_INTERVAL_SECONDS").then(|| "soon".to_string()))
            .unwrap_err();
        assert!(
            err.to_string().contains("OFFLOAD_INTERVAL_SECONDS"),
            "{err}"
        );
    }

    #[test]
    fn toml_rejects_unknown_keys() {
        let err = toml::from_str::<Config>("port = 1\nbogus = 2\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let c: Config = toml::from_str("port = 7000\n[storage]\nmaxmemory = 67108864\n").unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.storage.maxmemory, 64 << 20);
    }
}
