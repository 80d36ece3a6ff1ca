//! A tenant's cap on series (`max_series`): at the door, an event that
//! would start a series beyond the tenant's cap is refused, with the
//! reason, and the rest of the batch is kept.
//!
//! The tenant's live series are one sorted set per tenant, member
//! `server_id:metric` scored by when an event of it last came in. A series
//! counts while its ring still holds points (`retention_slots` minutes
//! since its last event). One script checks and adds a batch's series
//! atomically on the set's shard, so doors on every node of a cluster
//! share one count and two of them can't both take the last place. Each
//! node remembers the series it admitted and asks again about one only
//! once a minute, to keep its score fresh.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;

use super::escape;
use super::event::SeriesId;
use super::schemas::Unavailable;
use crate::commands::{dispatch, Reply, Session};
use crate::node::Node;
use crate::storage::now_ms;

/// How often an admitted series' last-seen time is written again, ms.
const REFRESH_MS: u64 = 60_000;
/// Admitted series remembered per node before the memory starts over.
const REMEMBERED: usize = 1_000_000;

/// Checks and adds series: KEYS[1] the tenant's set; ARGV: now (ms), the
/// horizon (ms), the cap, then the series. Answers 1 (admitted) or 0 per
/// series, in order.
const SCRIPT: &str = r"
local key = KEYS[1]
local now, horizon, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - horizon))
local n = redis.call('ZCARD', key)
local out = {}
for i = 4, #ARGV do
  local s = ARGV[i]
  if redis.call('ZSCORE', key, s) then
    redis.call('ZADD', key, 'GT', now, s)
    out[#out + 1] = 1
  elseif n < cap then
    redis.call('ZADD', key, now, s)
    n = n + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
redis.call('PEXPIRE', key, horizon)
return out
";

/// The set of a tenant's live series.
pub fn key(tenant: &str) -> String {
    format!("strata:tenant-series:{}", escape(tenant))
}

fn member(s: &SeriesId) -> String {
    format!("{}:{}", escape(&s.server_id), escape(&s.metric))
}

/// The series this node admitted lately, with when it last asked.
#[derive(Default)]
pub struct SeriesCap {
    admitted: Mutex<HashMap<SeriesId, u64>>,
}

impl SeriesCap {
    /// Which of `series` (one tenant's, distinct) may take events: those
    /// already live, and new ones while the tenant has fewer than `cap`.
    /// `horizon_ms` is how long a series stays live after its last event.
    pub async fn admit(
        &self,
        node: &Node,
        session: &mut Session,
        tenant: &str,
        cap: u64,
        horizon_ms: u64,
        series: &[SeriesId],
    ) -> Result<Vec<bool>, Unavailable> {
        let now_ms = now_ms();
        let ask: Vec<usize> = {
            let admitted = self.admitted.lock();
            (0..series.len())
                .filter(|&i| {
                    admitted
                        .get(&series[i])
                        .is_none_or(|&at| now_ms.saturating_sub(at) >= REFRESH_MS)
                })
                .collect()
        };
        let mut out = vec![true; series.len()];
        if ask.is_empty() {
            return Ok(out);
        }
        let mut args: Vec<Bytes> = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::from_static(SCRIPT.as_bytes()),
            Bytes::from_static(b"1"),
            Bytes::from(key(tenant)),
            Bytes::from(now_ms.to_string()),
            Bytes::from(horizon_ms.to_string()),
            Bytes::from(cap.to_string()),
        ];
        args.extend(ask.iter().map(|&i| Bytes::from(member(&series[i]))));
        let answers = match dispatch(node, session, &args).await {
            Reply::Array(a) if a.len() == ask.len() => a,
            Reply::Error(e) => return Err(Unavailable(e)),
            other => {
                return Err(Unavailable(format!(
                    "ERR the series cap answered {other:?}"
                )))
            }
        };
        let mut admitted = self.admitted.lock();
        if admitted.len() >= REMEMBERED {
            admitted.clear();
        }
        for (&i, a) in ask.iter().zip(answers) {
            let yes = matches!(a, Reply::Int(1));
            out[i] = yes;
            if yes {
                admitted.insert(series[i].clone(), now_ms);
            } else {
                admitted.remove(&series[i]);
            }
        }
        Ok(out)
    }

    /// How many live series `tenant` has.
    pub async fn live(
        &self,
        node: &Node,
        session: &mut Session,
        tenant: &str,
        horizon_ms: u64,
    ) -> Result<u64, Unavailable> {
        let now_ms = now_ms();
        let args = [
            Bytes::from_static(b"ZCOUNT"),
            Bytes::from(key(tenant)),
            Bytes::from(now_ms.saturating_sub(horizon_ms).to_string()),
            Bytes::from_static(b"+inf"),
        ];
        match dispatch(node, session, &args).await {
            Reply::Int(n) => Ok(n.max(0) as u64),
            Reply::Error(e) => Err(Unavailable(e)),
            _ => Ok(0),
        }
    }
}
