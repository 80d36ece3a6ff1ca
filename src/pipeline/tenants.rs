//! Tenants of the metric pipeline (seed 004's multi-tenancy): API keys
//! that act for one tenant, a quota of events per second for each, and
//! counters per tenant.
//!
//! ```text
//! POST /v1/metrics with a tenant's key ─> every event is that tenant's (an event of another: 403, nothing stored)
//!                                     ─> the tenant's bucket has room for the batch? no: 429 + Retry-After, nothing stored
//!                                     ─> appended; accepted / rejected counted for the tenant
//! GET /v1/series with a tenant's key ─> that tenant's series only (403 otherwise)
//! ```
//!
//! Quotas are enforced by each node on what it receives: a tenant whose
//! agents spread over N nodes may send up to N times its quota.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One tenant's settings (`[streams.tenants.<name>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Keys that act for this tenant (`X-API-Key` or `?apiKey=`).
    pub api_keys: Vec<String>,
    /// Events a second this tenant may send to one node (0: no limit).
    pub events_per_sec: u64,
    /// Seconds of quota a quiet tenant may save up and send at once, so a
    /// batch of that many seconds of events passes (seed 004's agents send
    /// every 15 s).
    pub burst_secs: u64,
    /// Series this tenant may have live at once, across the cluster (0: no
    /// limit). A series is live while its ring holds points.
    pub max_series: u64,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            api_keys: Vec::new(),
            events_per_sec: 0,
            burst_secs: 15,
            max_series: 0,
        }
    }
}

/// Every tenant's settings, by name.
pub type TenantsConfig = BTreeMap<String, TenantConfig>;

/// Checks the tenants' settings; the error names the field.
pub fn validate(tenants: &TenantsConfig) -> Result<(), (String, String)> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (name, t) in tenants {
        let field = |f: &str| format!("streams.tenants.{name}.{f}");
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err((
                format!("streams.tenants.{name}"),
                "a tenant name is 1 to 128 printable characters".into(),
            ));
        }
        if t.api_keys.is_empty() {
            return Err((
                field("api_keys"),
                "a tenant needs at least one API key".into(),
            ));
        }
        for k in &t.api_keys {
            if k.len() < 8 {
                return Err((
                    field("api_keys"),
                    "an API key has at least 8 characters".into(),
                ));
            }
            if let Some(other) = seen.insert(k, name) {
                return Err((
                    field("api_keys"),
                    format!("a key of this tenant is also a key of tenant '{other}'"),
                ));
            }
        }
        if !(1..=3600).contains(&t.burst_secs) {
            return Err((field("burst_secs"), "must be from 1 to 3600".into()));
        }
    }
    Ok(())
}

/// The tenant a key acts for, if any.
pub fn tenant_of<'a>(tenants: &'a TenantsConfig, key: &str) -> Option<&'a str> {
    tenants
        .iter()
        .find(|(_, t)| t.api_keys.iter().any(|k| k == key))
        .map(|(name, _)| name.as_str())
}

/// One tenant's counts on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TenantCounts {
    /// Events appended.
    pub accepted: u64,
    /// Events refused one by one (schema, bad values).
    pub rejected: u64,
    /// Events refused for the tenant's quota.
    pub throttled: u64,
}

/// Why a batch was not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The tenant's bucket has room for the batch after this long.
    Wait(Duration),
    /// The batch is bigger than the tenant's whole bucket.
    TooBig {
        /// The tenant.
        tenant: String,
        /// Events its bucket holds at most.
        burst: u64,
    },
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Quota buckets and counters of every tenant, on this node.
#[derive(Default)]
pub struct Tenants {
    buckets: Mutex<HashMap<String, Bucket>>,
    counts: Mutex<BTreeMap<String, TenantCounts>>,
}

impl Tenants {
    /// Takes room for `want[t]` events of each tenant `t`, all or none.
    /// Tenants without a quota (or not configured) always have room.
    pub fn admit(
        &self,
        cfg: &TenantsConfig,
        want: &BTreeMap<String, u64>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let mut buckets = self.buckets.lock();
        let mut wait = Duration::ZERO;
        for (tenant, &n) in want {
            let Some(t) = cfg.get(tenant).filter(|t| t.events_per_sec > 0) else {
                continue;
            };
            let rate = t.events_per_sec as f64;
            let cap = rate * t.burst_secs as f64;
            let b = buckets.entry(tenant.clone()).or_insert(Bucket {
                tokens: cap,
                at: now,
            });
            b.tokens =
                (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(cap);
            b.at = now;
            let n = n as f64;
            if n > cap {
                return Err(Refusal::TooBig {
                    tenant: tenant.clone(),
                    burst: cap as u64,
                });
            }
            if n > b.tokens {
                wait = wait.max(Duration::from_secs_f64(((n - b.tokens) / rate).max(0.001)));
            }
        }
        if !wait.is_zero() {
            return Err(Refusal::Wait(wait));
        }
        for (tenant, &n) in want {
            if let Some(b) = buckets.get_mut(tenant) {
                b.tokens -= n as f64;
            }
        }
        Ok(())
    }

    /// Adds to a tenant's counts.
    pub fn count(&self, tenant: &str, add: TenantCounts) {
        let mut counts = self.counts.lock();
        let c = counts.entry(tenant.to_string()).or_default();
        c.accepted += add.accepted;
        c.rejected += add.rejected;
        c.throttled += add.throttled;
    }

    /// Every tenant's counts so far.
    pub fn counts(&self) -> BTreeMap<String, TenantCounts> {
        self.counts.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rate: u64, burst: u64) -> TenantsConfig {
        let mut t = TenantsConfig::new();
        t.insert(
            "acme".into(),
            TenantConfig {
                api_keys: vec!["acme-key-1".into()],
                events_per_sec: rate,
                burst_secs: burst,
                max_series: 0,
            },
        );
        t
    }

    fn want(n: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("acme".to_string(), n), ("free".to_string(), 1_000_000)])
    }

    #[test]
    fn a_bucket_admits_its_burst_then_refills_at_the_rate() {
        let (c, t) = (cfg(100, 2), Tenants::default());
        let t0 = Instant::now();
        assert!(t.admit(&c, &want(150), t0).is_ok());
        let Err(Refusal::Wait(wait)) = t.admit(&c, &want(100), t0) else {
            panic!("a batch beyond the bucket's level waits");
        };
        assert!((0.49..0.51).contains(&wait.as_secs_f64()), "{wait:?}");
        // Refused batches take nothing.
        assert!(t.admit(&c, &want(50), t0).is_ok());
        assert!(t.admit(&c, &want(1), t0).is_err());
        assert!(t.admit(&c, &want(100), t0 + Duration::from_secs(1)).is_ok());
        // Never more than the burst is saved up.
        let later = t0 + Duration::from_secs(3600);
        assert!(t.admit(&c, &want(200), later).is_ok());
        assert!(t.admit(&c, &want(1), later).is_err());
    }

    #[test]
    fn a_batch_bigger_than_the_bucket_is_refused_as_such() {
        let (c, t) = (cfg(10, 2), Tenants::default());
        let t0 = Instant::now();
        assert_eq!(
            t.admit(&c, &want(21), t0),
            Err(Refusal::TooBig {
                tenant: "acme".into(),
                burst: 20
            })
        );
        assert!(t.admit(&c, &want(20), t0).is_ok());
    }

    #[test]
    fn settings_are_checked_by_name() {
        assert!(validate(&cfg(0, 15)).is_ok());
        let mut dup = cfg(0, 15);
        dup.insert(
            "other".into(),
            TenantConfig {
                api_keys: vec!["acme-key-1".into()],
                ..TenantConfig::default()
            },
        );
        let (field, why) = validate(&dup).unwrap_err();
        assert!(field.starts_with("streams.tenants."), "{field}");
        assert!(why.contains("also a key"), "{why}");
        let mut short = cfg(0, 15);
        short.get_mut("acme").unwrap().api_keys = vec!["abc".into()];
        assert_eq!(
            validate(&short).unwrap_err().0,
            "streams.tenants.acme.api_keys"
        );
        assert_eq!(
            validate(&cfg(5, 0)).unwrap_err().0,
            "streams.tenants.acme.burst_secs"
        );
        assert_eq!(tenant_of(&cfg(0, 1), "acme-key-1"), Some("acme"));
        assert_eq!(tenant_of(&cfg(0, 1), "nope-nope"), None);
    }
}
