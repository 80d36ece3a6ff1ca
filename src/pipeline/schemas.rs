//! The schema registry: JSON Schemas that events of a topic must satisfy
//! on top of the built-in metric event schema.
//!
//! A topic's schemas are numbered versions, and a version never changes
//! once written. `PUT /v1/schemas/{topic}` adds a version (or returns the
//! latest, when it is the same schema); the topic's events are checked
//! against its latest version at the door and carry that version's
//! number into the log. The worker checks each entry again against the
//! version the entry names, not against whatever is latest when it reads
//! it. So a schema change never turns an entry that was counted into a
//! dead letter, or back, when a restarted worker reads it again, and
//! producer and worker agree on what an entry means (seed 004's schema
//! registry, as Kafka's serializers stamp a schema id on each record).
//!
//! The registry is one hash key, [`KEY`]: field `{topic}` holds the latest
//! version, field `{topic}@{version}` the schema's JSON. Being an
//! ordinary key, it is logged and, in a cluster, replicated; every node
//! reads it through the command layer and keeps the compiled versions it
//! used (they never change).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;

use crate::commands::{dispatch, Reply, Session};
use crate::node::Node;

/// The registry's key.
pub const KEY: &str = "strata:schemas";
/// Largest schema accepted, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Longest topic name.
pub const MAX_TOPIC: usize = 128;
/// Schema errors listed per event before the rest are summed up.
const ERRORS_LISTED: usize = 3;
/// Compiled versions kept per node before the cache starts over.
const CACHED: usize = 10_000;

/// One compiled schema version.
pub struct Compiled {
    /// Its topic.
    pub topic: String,
    /// Its number.
    pub version: u32,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema version {} of topic '{}'",
            self.version, self.topic
        )
    }
}

impl Compiled {
    /// Checks an event; the error lists the first few failures with where
    /// in the event they are.
    pub fn check(&self, event: &Value) -> Result<(), String> {
        let mut errors = self.validator.iter_errors(event);
        let Some(first) = errors.next() else {
            return Ok(());
        };
        let mut listed = vec![failure(&first)];
        let mut more = 0usize;
        for e in errors {
            if listed.len() < ERRORS_LISTED {
                listed.push(failure(&e));
            } else {
                more += 1;
            }
        }
        let mut msg = format!(
            "schema version {} of topic '{}': {}",
            self.version,
            self.topic,
            listed.join("; ")
        );
        if more > 0 {
            msg.push_str(&format!(" (and {more} more)"));
        }
        Err(msg)
    }
}

fn failure(e: &jsonschema::ValidationError<'_>) -> String {
    let at = e.instance_path().to_string();
    if at.is_empty() {
        e.to_string()
    } else {
        format!("{at}: {e}")
    }
}

/// Compiles a schema; the error says why it is not one. References are
/// resolved only inside the document: a schema can't make the node fetch
/// anything.
pub fn compile(topic: &str, version: u32, schema: &Value) -> Result<Compiled, String> {
    if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
        return Err("a JSON Schema is an object (or true/false)".into());
    }
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
    Ok(Compiled {
        topic: topic.to_string(),
        version,
        validator,
    })
}

/// Checks a topic name: 1 to 128 of `A-Z a-z 0-9 . _ -`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a topic name is 1 to {MAX_TOPIC} letters, digits, '.', '_' or '-'"
        ))
    }
}

/// The registry's field of a version.
fn version_field(topic: &str, version: u32) -> String {
    format!("{topic}@{version}")
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new version.
    Created(u32),
    /// The latest version already was this schema.
    Unchanged(u32),
}

/// A failure to reach the registry (no quorum, a failed read): the
/// caller should try again, not judge an event by it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A version as the registry holds it: compiled, or why it can't be.
pub type Found = Arc<Result<Compiled, String>>;

/// The node's view of the registry.
#[derive(Default)]
pub struct Registry {
    compiled: Mutex<HashMap<(String, u32), Found>>,
}

fn b(s: impl Into<Bytes>) -> Bytes {
    s.into()
}

async fn run(node: &Node, session: &mut Session, args: Vec<Bytes>) -> Result<Reply, Unavailable> {
    match dispatch(node, session, &args).await {
        Reply::Error(e) => Err(Unavailable(e)),
        r => Ok(r),
    }
}

fn number(r: &Reply) -> Option<u32> {
    match r {
        Reply::Bulk(v) => std::str::from_utf8(v).ok()?.parse().ok(),
        _ => None,
    }
}

impl Registry {
    /// The latest version of `topic` (None: it has no schema).
    pub async fn latest(
        &self,
        node: &Node,
        session: &mut Session,
        topic: &str,
    ) -> Result<Option<u32>, Unavailable> {
        let r = run(node, session, vec![b("HGET"), b(KEY), b(topic.to_string())]).await?;
        Ok(number(&r))
    }

    /// Every topic with its latest version.
    pub async fn topics(
        &self,
        node: &Node,
        session: &mut Session,
    ) -> Result<Vec<(String, u32)>, Unavailable> {
        let r = run(node, session, vec![b("HGETALL"), b(KEY)]).await?;
        let items: Vec<Reply> = match r {
            Reply::Array(a) => a,
            Reply::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        };
        let mut out: Vec<(String, u32)> = items
            .chunks_exact(2)
            .filter_map(|kv| match &kv[0] {
                Reply::Bulk(f) if !f.contains(&b'@') => {
                    Some((String::from_utf8_lossy(f).into_owned(), number(&kv[1])?))
                }
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The JSON of one version (None: no such version).
    pub async fn source(
        &self,
        node: &Node,
        session: &mut Session,
        topic: &str,
        version: u32,
    ) -> Result<Option<Value>, Unavailable> {
        let field = version_field(topic, version);
        match run(node, session, vec![b("HGET"), b(KEY), b(field)]).await? {
            Reply::Bulk(raw) => Ok(Some(
                serde_json::from_slice(&raw)
                    .unwrap_or(Value::String(String::from_utf8_lossy(&raw).into_owned())),
            )),
            _ => Ok(None),
        }
    }

    /// One version, compiled. `Ok(Err(why))` when the version does not
    /// exist or what is stored is not a schema: an entry naming it is
    /// judged bad, the same way on every read.
    pub async fn version(
        &self,
        node: &Node,
        session: &mut Session,
        topic: &str,
        version: u32,
    ) -> Result<Found, Unavailable> {
        let k = (topic.to_string(), version);
        if let Some(c) = self.compiled.lock().get(&k) {
            return Ok(c.clone());
        }
        let compiled = match self.source(node, session, topic, version).await? {
            None => Err(format!(
                "topic '{topic}' has no schema version {version} in the registry"
            )),
            Some(schema) => compile(topic, version, &schema)
                .map_err(|e| format!("schema version {version} of topic '{topic}': {e}")),
        };
        let compiled = Arc::new(compiled);
        let mut cache = self.compiled.lock();
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(k, compiled.clone());
        Ok(compiled)
    }

    /// The latest version of `topic`, compiled (None: no schema).
    pub async fn current(
        &self,
        node: &Node,
        session: &mut Session,
        topic: &str,
    ) -> Result<Option<Found>, Unavailable> {
        match self.latest(node, session, topic).await? {
            None => Ok(None),
            Some(v) => Ok(Some(self.version(node, session, topic, v).await?)),
        }
    }

    /// Registers `schema` as `topic`'s latest version, unless it already
    /// is. The schema must compile (the error says why not). Concurrent
    /// registrations each get their own version.
    pub async fn register(
        &self,
        node: &Node,
        session: &mut Session,
        topic: &str,
        schema: &Value,
    ) -> Result<Result<Registered, String>, Unavailable> {
        if let Err(e) = check_topic(topic).and_then(|()| compile(topic, 0, schema).map(|_| ())) {
            return Ok(Err(e));
        }
        let text = serde_json::to_string(schema).expect("a JSON value serializes");
        for _ in 0..16 {
            run(node, session, vec![b("WATCH"), b(KEY)]).await?;
            let latest = self.latest(node, session, topic).await?;
            if let Some(v) = latest {
                let same = match run(
                    node,
                    session,
                    vec![b("HGET"), b(KEY), b(version_field(topic, v))],
                )
                .await?
                {
                    Reply::Bulk(raw) => raw == text.as_bytes(),
                    _ => false,
                };
                if same {
                    run(node, session, vec![b("UNWATCH")]).await?;
                    return Ok(Ok(Registered::Unchanged(v)));
                }
            }
            let next = latest.unwrap_or(0) + 1;
            run(node, session, vec![b("MULTI")]).await?;
            run(
                node,
                session,
                vec![
                    b("HSET"),
                    b(KEY),
                    b(version_field(topic, next)),
                    b(text.clone()),
                    b(topic.to_string()),
                    b(next.to_string()),
                ],
            )
            .await?;
            match run(node, session, vec![b("EXEC")]).await? {
                Reply::Array(_) => return Ok(Ok(Registered::Created(next))),
                // Someone else registered meanwhile: look again.
                _ => continue,
            }
        }
        Err(Unavailable(
            "the schema registry kept changing; try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_names_each_failure_and_where() {
        let schema = json!({
            "type": "object",
            "properties": {
                "unit": {"enum": ["pct", "ms"]},
                "value": {"type": "number", "maximum": 100},
            },
            "required": ["unit"],
        });
        let c = compile("cpu", 3, &schema).unwrap();
        assert!(c.check(&json!({"unit": "pct", "value": 5})).is_ok());
        let err = c.check(&json!({"unit": "x", "value": 150})).unwrap_err();
        assert!(
            err.starts_with("schema version 3 of topic 'cpu': "),
            "{err}"
        );
        assert!(err.contains("/unit: \"x\" is not one of"), "{err}");
        assert!(
            err.contains("/value: 150 is greater than the maximum of 100"),
            "{err}"
        );
        let err = c.check(&json!({"value": 1})).unwrap_err();
        assert!(err.contains("\"unit\" is a required property"), "{err}");
    }

    #[test]
    fn bad_schemas_and_names_are_refused() {
        assert!(compile("t", 1, &json!([1])).is_err());
        let e = compile("t", 1, &json!({"type": "no-such-type"})).unwrap_err();
        assert!(e.starts_with("not a valid JSON Schema"), "{e}");
        // Nothing is fetched: a remote reference does not resolve.
        assert!(compile("t", 1, &json!({"$ref": "http://127.0.0.1:1/x.json"})).is_err());
        assert!(check_topic("cpu.load_1-m").is_ok());
        for bad in ["", "a b", "a@1", "a:b", &"x".repeat(129)] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }
}
