//! The metric event and its built-in schema, checked twice: at the door
//! (`POST /v1/metrics`) and again by the worker, since anyone may XADD to
//! a partition stream over RESP.
//!
//! The schema, as seed 004's agents send it:
//!
//! | field | type | rule |
//! |---|---|---|
//! | `tenant`, `server_id`, `metric` | string | 1 to 256 bytes, no control characters |
//! | `value` | number | finite |
//! | `ts` | number | epoch seconds (fractional allowed), from 0 to at most 5 minutes ahead of the node's clock |
//!
//! Other fields are ignored.

use serde_json::Value;

/// Longest tenant, server id or metric name, in bytes.
pub const MAX_NAME: usize = 256;
/// How far ahead of the receiving node's clock an event may be stamped:
/// a clock far in the future would close every window early.
pub const MAX_FUTURE_MS: i64 = 300_000;

/// Which series an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesId {
    /// Tenant.
    pub tenant: String,
    /// Server (agent) id.
    pub server_id: String,
    /// Metric name.
    pub metric: String,
}

/// One checked metric event.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricEvent {
    /// Its series.
    pub series: SeriesId,
    /// The value.
    pub value: f64,
    /// Event time, epoch ms (rounded down).
    pub ts_ms: i64,
}

fn name(field: &str, v: Option<&str>) -> Result<String, String> {
    let s = v.ok_or_else(|| format!("missing field '{field}'"))?;
    if s.is_empty() {
        return Err(format!("field '{field}' must not be empty"));
    }
    if s.len() > MAX_NAME {
        return Err(format!("field '{field}' is longer than {MAX_NAME} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("field '{field}' contains a control character"));
    }
    Ok(s.to_string())
}

fn timestamp(ts: f64, now_ms: i64) -> Result<i64, String> {
    if !ts.is_finite() || ts < 0.0 {
        return Err("field 'ts' must be epoch seconds, not negative".into());
    }
    let ms = (ts * 1000.0).floor();
    if ms > (now_ms + MAX_FUTURE_MS) as f64 {
        return Err(format!(
            "field 'ts' is more than {} s ahead of the server's clock",
            MAX_FUTURE_MS / 1000
        ));
    }
    Ok(ms as i64)
}

impl SeriesId {
    /// Checks the three names `field` finds.
    fn named<'a>(
        field: &impl Fn(&str) -> Result<Option<&'a str>, String>,
    ) -> Result<SeriesId, String> {
        Ok(SeriesId {
            tenant: name("tenant", field("tenant")?)?,
            server_id: name("server_id", field("server_id")?)?,
            metric: name("metric", field("metric")?)?,
        })
    }
}

impl MetricEvent {
    /// Checks one JSON event against the schema; `now_ms` is the clock
    /// future timestamps are judged by.
    pub fn from_json(v: &Value, now_ms: i64) -> Result<MetricEvent, String> {
        let Value::Object(m) = v else {
            return Err("an event must be a JSON object".into());
        };
        let text = |f: &str| -> Result<Option<&str>, String> {
            match m.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("field '{f}' must be a string")),
            }
        };
        let series = SeriesId::named(&text)?;
        let number = |f: &str| -> Result<f64, String> {
            match m.get(f) {
                None | Some(Value::Null) => Err(format!("missing field '{f}'")),
                Some(Value::Number(n)) => n
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("field '{f}' is out of range")),
                Some(_) => Err(format!("field '{f}' must be a number")),
            }
        };
        let value = number("value")?;
        let ts_ms = timestamp(number("ts")?, now_ms)?;
        Ok(MetricEvent {
            series,
            value,
            ts_ms,
        })
    }

    /// Checks a stream entry's field-value pairs against the schema;
    /// `arrived_ms` (the entry id's time) is the clock future timestamps
    /// are judged by, so the check gives the same answer every time the
    /// entry is read.
    pub fn from_fields(pairs: &[(&[u8], &[u8])], arrived_ms: i64) -> Result<MetricEvent, String> {
        let get = |f: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == f.as_bytes())
                .map(|(_, v)| {
                    std::str::from_utf8(v).map_err(|_| format!("field '{f}' is not UTF-8"))
                })
                .transpose()
        };
        let series = SeriesId::named(&get)?;
        let number = |f: &str| -> Result<f64, String> {
            let s = get(f)?.ok_or_else(|| format!("missing field '{f}'"))?;
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("field '{f}' must be a number"))
        };
        let value = number("value")?;
        let ts_ms = timestamp(number("ts")?, arrived_ms)?;
        Ok(MetricEvent {
            series,
            value,
            ts_ms,
        })
    }

    /// Checks a stream entry: the five fields of the built-in schema, or,
    /// when the entry names a registered schema version (see
    /// [`Versioned`]), its `event` JSON against both. `check` checks an
    /// event against a topic's version; `arrived_ms` is as for
    /// [`MetricEvent::from_fields`].
    pub fn from_entry(
        pairs: &[(&[u8], &[u8])],
        arrived_ms: i64,
        check: impl Fn(&str, u32, &Value) -> Result<(), String>,
    ) -> Result<MetricEvent, String> {
        match Versioned::of(pairs)? {
            None => MetricEvent::from_fields(pairs, arrived_ms),
            Some(v) => {
                let ev = MetricEvent::from_json(&v.event, arrived_ms)?;
                check(&v.topic, v.version, &v.event)?;
                Ok(ev)
            }
        }
    }

    /// The stream entry's fields, as `from_fields` reads them.
    pub fn fields(&self, ts: f64) -> [(&'static str, String); 5] {
        [
            ("tenant", self.series.tenant.clone()),
            ("server_id", self.series.server_id.clone()),
            ("metric", self.series.metric.clone()),
            ("value", format!("{}", self.value)),
            ("ts", format!("{ts}")),
        ]
    }
}

/// An entry of a topic with a registered schema: fields `topic`,
/// `schema` (the version number the door checked it against) and `event`
/// (the event's JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// The topic.
    pub topic: String,
    /// The schema version it names.
    pub version: u32,
    /// The event.
    pub event: Value,
}

impl Versioned {
    /// The entry's fields.
    pub fn fields(topic: &str, version: u32, event: &Value) -> [(&'static str, String); 3] {
        [
            ("topic", topic.to_string()),
            ("schema", version.to_string()),
            ("event", event.to_string()),
        ]
    }

    /// Reads an entry that names a schema version (None: it names none,
    /// so the built-in schema alone applies).
    pub fn of(pairs: &[(&[u8], &[u8])]) -> Result<Option<Versioned>, String> {
        let get = |f: &str| pairs.iter().find(|(k, _)| *k == f.as_bytes()).map(|p| p.1);
        let Some(version) = get("schema") else {
            return Ok(None);
        };
        let version = std::str::from_utf8(version)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or("field 'schema' must be a schema version number")?;
        let topic = get("topic")
            .and_then(|t| std::str::from_utf8(t).ok())
            .filter(|t| !t.is_empty())
            .ok_or("an entry naming a schema version needs field 'topic'")?;
        let event = get("event").ok_or("an entry naming a schema version needs field 'event'")?;
        let event =
            serde_json::from_slice(event).map_err(|e| format!("field 'event' is not JSON: {e}"))?;
        Ok(Some(Versioned {
            topic: topic.to_string(),
            version,
            event,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_names_what_is_wrong() {
        let now = 1_700_000_000_000;
        let ok = json!({"tenant": "acme", "server_id": "s-1", "metric": "cpu", "value": 0.5, "ts": 1_699_999_999.5});
        let e = MetricEvent::from_json(&ok, now).unwrap();
        assert_eq!(e.ts_ms, 1_699_999_999_500);
        let cases = [
            (json!(5), "an event must be a JSON object"),
            (
                json!({"server_id": "s", "metric": "m", "value": 1, "ts": 1}),
                "missing field 'tenant'",
            ),
            (
                json!({"tenant": "", "server_id": "s", "metric": "m", "value": 1, "ts": 1}),
                "field 'tenant' must not be empty",
            ),
            (
                json!({"tenant": 3, "server_id": "s", "metric": "m", "value": 1, "ts": 1}),
                "field 'tenant' must be a string",
            ),
            (
                json!({"tenant": "t", "server_id": "s", "metric": "m", "value": "1", "ts": 1}),
                "field 'value' must be a number",
            ),
            (
                json!({"tenant": "t", "server_id": "s", "metric": "m", "value": 1}),
                "missing field 'ts'",
            ),
            (
                json!({"tenant": "t", "server_id": "s", "metric": "m", "value": 1, "ts": -1}),
                "field 'ts' must be epoch seconds, not negative",
            ),
            (
                json!({"tenant": "t", "server_id": "s", "metric": "m", "value": 1, "ts": 1_800_000_000}),
                "field 'ts' is more than 300 s ahead of the server's clock",
            ),
            (
                json!({"tenant": "t\n", "server_id": "s", "metric": "m", "value": 1, "ts": 1}),
                "field 'tenant' contains a control character",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(MetricEvent::from_json(&v, now).unwrap_err(), want, "{v}");
        }
    }

    #[test]
    fn stream_fields_round_trip() {
        let e = MetricEvent::from_json(
            &json!({"tenant": "a:b", "server_id": "{s}", "metric": "m", "value": -2.25, "ts": 12.5}),
            0,
        )
        .unwrap();
        let fields = e.fields(12.5);
        let pairs: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(MetricEvent::from_fields(&pairs, 0).unwrap(), e);
        let bad: Vec<(&[u8], &[u8])> = vec![
            (b"tenant", b"t"),
            (b"server_id", b"s"),
            (b"metric", b"m"),
            (b"value", b"x"),
            (b"ts", b"1"),
        ];
        assert_eq!(
            MetricEvent::from_fields(&bad, 0).unwrap_err(),
            "field 'value' must be a number"
        );
    }
}
