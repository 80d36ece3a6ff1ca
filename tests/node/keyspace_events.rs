//! Keyspace notifications: `notify-keyspace-events` classes, the events
//! each type's commands raise, deletion by emptying, expiry, key misses,
//! and events from inside MULTI and scripts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{q, qe, TestNode};
use redis::Value;

/// A raw subscriber connection.
struct Sub(BufReader<TcpStream>);

impl Sub {
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.0
            .read_line(&mut l)
            .expect("an event within the timeout");
        l.trim_end().to_string()
    }

    /// One RESP2 array of bulk strings.
    fn array(&mut self) -> Vec<String> {
        let head = self.line();
        let n: usize = head
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .expect(&head);
        (0..n)
            .map(|_| {
                let h = self.line();
                if let Some(len) = h.strip_prefix('$') {
                    let len: usize = len.parse().expect("length");
                    let mut buf = vec![0u8; len + 2];
                    self.0.read_exact(&mut buf).expect("bulk");
                    String::from_utf8_lossy(&buf[..len]).into_owned()
                } else {
                    h[1..].to_string()
                }
            })
            .collect()
    }
}

/// Subscribes to `pattern` (which must match `probe`) and returns the
/// subscriber once a message published on `probe` reaches it.
fn listen(node: &TestNode, pattern: &str, probe: &str) -> Sub {
    let s = TcpStream::connect(node.h().resp_addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    write!(w, "PSUBSCRIBE {pattern}\r\n").unwrap();
    let mut sub = Sub(BufReader::new(s));
    assert_eq!(sub.array()[0], "psubscribe");
    let mut publisher = node.client();
    assert_eq!(
        q(&mut publisher, &["PUBLISH", probe, "probe"]),
        Value::Int(1)
    );
    assert_eq!(next(&mut sub, 1)[0].1, "probe");
    sub
}

/// The next `n` messages as (channel, payload).
fn next(sub: &mut Sub, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            let m = sub.array();
            assert_eq!(m[0], "pmessage", "{m:?}");
            (m[2].clone(), m[3].clone())
        })
        .collect()
}

fn events(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(ch, payload)| {
            let ev = ch.rsplit(':').next().unwrap_or_default();
            format!("{ev} {payload}")
        })
        .collect()
}

#[test]
fn commands_raise_redis_events() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    assert_eq!(
        qe(&mut c, &["CONFIG", "SET", "notify-keyspace-events", "KQ"]),
        "ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'."
    );
    q(&mut c, &["CONFIG", "SET", "notify-keyspace-events", "EA"]);
    let got = q(&mut c, &["CONFIG", "GET", "notify-keyspace-events"]);
    assert_eq!(
        got,
        Value::Array(vec![
            Value::BulkString(b"notify-keyspace-events".to_vec()),
            Value::BulkString(b"AE".to_vec())
        ])
    );
    let mut sub = listen(&node, "__keyevent@0__:*", "__keyevent@0__:probe");
    let script: &[&[&str]] = &[
        &["SET", "s", "1"],
        &["INCR", "s"],
        &["APPEND", "s", "x"],
        &["EXPIRE", "s", "100"],
        &["PERSIST", "s"],
        &["RENAME", "s", "s2"],
        &["DEL", "s2", "missing"],
        &["RPUSH", "l", "a", "b"],
        &["LPOP", "l"],
        &["RPOP", "l"],
        &["HSET", "h", "f", "v"],
        &["HINCRBY", "h", "n", "2"],
        &["HDEL", "h", "f", "n"],
        &["SADD", "st", "a", "b"],
        &["SMOVE", "st", "st2", "a"],
        &["ZADD", "z", "1", "m"],
        &["ZINCRBY", "z", "2", "m"],
        &["ZPOPMIN", "z"],
        &["XADD", "x", "*", "f", "v"],
        &["XGROUP", "CREATE", "x", "g", "0"],
        &["SET", "gone", "v"],
        &["EXPIRE", "gone", "-1"],
    ];
    for cmd in script {
        q(&mut c, cmd);
    }
    let want = [
        "set s",
        "incrby s",
        "append s",
        "expire s",
        "persist s",
        "rename_from s",
        "rename_to s2",
        "del s2",
        "rpush l",
        "lpop l",
        // The last element gone: the key is deleted.
        "rpop l",
        "del l",
        "hset h",
        "hincrby h",
        "hdel h",
        "del h",
        "sadd st",
        "srem st",
        "sadd st2",
        "zadd z",
        "zincr z",
        "zpopmin z",
        "del z",
        "xadd x",
        "xgroup-create x",
        "set gone",
        // An expiry in the past deletes the key.
        "del gone",
    ];
    assert_eq!(events(&next(&mut sub, want.len())), want);
    // Nothing is raised for a command that changed nothing (DEL of a
    // missing key above, a no-op SADD here); the next event is the SET.
    q(&mut c, &["SADD", "st2", "a"]);
    q(&mut c, &["SET", "after", "1"]);
    assert_eq!(events(&next(&mut sub, 1)), ["set after"]);
}

#[test]
fn keyspace_channels_transactions_scripts_and_expiry() {
    let node = TestNode::start(|c| c.notify_keyspace_events = "KA".into());
    let mut c = node.client();
    let mut sub = listen(&node, "__keyspace@0__:*", "__keyspace@0__:probe");
    q(&mut c, &["MULTI"]);
    q(&mut c, &["SET", "a", "1"]);
    q(&mut c, &["LPUSH", "b", "x"]);
    q(&mut c, &["EXEC"]);
    q(
        &mut c,
        &[
            "EVAL",
            "redis.call('hset', KEYS[1], 'f', 'v') return 1",
            "1",
            "c",
        ],
    );
    q(&mut c, &["SET", "short", "v", "PX", "30"]);
    std::thread::sleep(Duration::from_millis(80));
    // Reading it after it expired removes it: "expired".
    assert_eq!(q(&mut c, &["GET", "short"]), Value::Nil);
    let got = next(&mut sub, 5);
    assert_eq!(
        got,
        [
            ("__keyspace@0__:a".to_string(), "set".to_string()),
            ("__keyspace@0__:b".to_string(), "lpush".to_string()),
            ("__keyspace@0__:c".to_string(), "hset".to_string()),
            ("__keyspace@0__:short".to_string(), "set".to_string()),
            ("__keyspace@0__:short".to_string(), "expired".to_string()),
        ]
    );
    // `n` (new keys) and `m` (misses) are off unless asked for.
    q(&mut c, &["CONFIG", "SET", "notify-keyspace-events", "KEnm"]);
    let mut sub2 = listen(&node, "__keyevent@0__:*", "__keyevent@0__:probe");
    q(&mut c, &["SET", "fresh", "1"]);
    assert_eq!(q(&mut c, &["GET", "nothing"]), Value::Nil);
    assert_eq!(
        events(&next(&mut sub2, 2)),
        ["new fresh", "keymiss nothing"]
    );
}
