//! Client-side caching (CLIENT TRACKING) with a RESP3 client that takes
//! invalidation pushes, RESP2 redirection to a subscribed connection,
//! BCAST prefixes, NOLOOP, OPTIN; and MONITOR.

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{q, qe, TestNode};
use redis::{PushInfo, PushKind, Value};

/// A RESP3 connection whose pushes arrive on the returned channel.
fn resp3(node: &TestNode) -> (redis::Connection, mpsc::Receiver<PushInfo>) {
    let client =
        redis::Client::open(format!("{}?protocol=resp3", node.redis_url())).expect("client");
    let mut c = client.get_connection().expect("connect");
    let (tx, rx) = mpsc::channel();
    c.set_push_sender(tx);
    (c, rx)
}

/// The keys of the invalidations `c` has received, reading pushes that
/// are on their way with a few PINGs (each brings whatever the server
/// queued before it). None stands for "every key" (a flush).
fn invalidated(
    c: &mut redis::Connection,
    rx: &mpsc::Receiver<PushInfo>,
) -> Vec<Option<Vec<String>>> {
    let mut out = Vec::new();
    for _ in 0..5 {
        q(c, &["PING"]);
        while let Ok(p) = rx.try_recv() {
            if p.kind != PushKind::Invalidate {
                continue;
            }
            out.push(match &p.data[..] {
                [Value::Array(keys)] => Some(
                    keys.iter()
                        .map(|k| match k {
                            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                            other => panic!("key {other:?}"),
                        })
                        .collect(),
                ),
                [Value::Nil] => None,
                other => panic!("invalidate {other:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

fn keys(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn default_mode_invalidates_keys_read_once_each() {
    let node = TestNode::start(|_| {});
    let (mut t, rx) = resp3(&node);
    let mut w = node.client();
    assert_eq!(q(&mut t, &["CLIENT", "TRACKING", "ON"]), Value::Okay);
    assert_eq!(q(&mut t, &["CLIENT", "GETREDIR"]), Value::Int(0));
    q(&mut w, &["SET", "a", "1"]);
    q(&mut w, &["HSET", "h", "f", "v"]);
    q(&mut t, &["GET", "a"]);
    q(&mut t, &["HGET", "h", "f"]);
    q(&mut t, &["GET", "unread-by-t"]);
    // Writes to keys the client never read say nothing.
    q(&mut w, &["SET", "other", "x"]);
    q(&mut w, &["SET", "a", "2"]);
    assert_eq!(invalidated(&mut t, &rx), vec![keys(&["a"])]);
    // Told once: until it reads `a` again, further changes are silent.
    q(&mut w, &["SET", "a", "3"]);
    q(&mut w, &["HDEL", "h", "f"]);
    assert_eq!(invalidated(&mut t, &rx), vec![keys(&["h"])]);
    q(&mut t, &["GET", "a"]);
    // A key that expires is a change too.
    q(&mut w, &["PEXPIRE", "a", "30"]);
    assert_eq!(invalidated(&mut t, &rx), vec![keys(&["a"])]);
    q(&mut w, &["SET", "b", "1", "PX", "30"]);
    q(&mut t, &["GET", "b"]);
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(q(&mut w, &["GET", "b"]), Value::Nil);
    assert_eq!(invalidated(&mut t, &rx), vec![keys(&["b"])]);
    // A flush drops everything the client may hold.
    q(&mut w, &["FLUSHALL"]);
    assert_eq!(invalidated(&mut t, &rx), vec![None]);
    let info = String::from_utf8(
        redis::cmd("INFO")
            .arg("clients")
            .query::<Vec<u8>>(&mut w)
            .unwrap(),
    )
    .unwrap();
    assert!(info.contains("tracking_clients:1"), "{info}");
    // Its own writes are reported to it too, unless NOLOOP.
    q(&mut t, &["GET", "c"]);
    q(&mut t, &["SET", "c", "mine"]);
    assert_eq!(invalidated(&mut t, &rx), vec![keys(&["c"])]);
    assert_eq!(q(&mut t, &["CLIENT", "TRACKING", "OFF"]), Value::Okay);
    assert_eq!(q(&mut t, &["CLIENT", "GETREDIR"]), Value::Int(-1));
    q(&mut t, &["GET", "d"]);
    q(&mut w, &["SET", "d", "1"]);
    assert!(invalidated(&mut t, &rx).is_empty());
}

#[test]
fn broadcast_prefixes_noloop_and_optin() {
    let node = TestNode::start(|_| {});
    let (mut t, rx) = resp3(&node);
    let mut w = node.client();
    assert_eq!(
        q(
            &mut t,
            &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:", "PREFIX", "cart:", "NOLOOP"]
        ),
        Value::Okay
    );
    q(
        &mut w,
        &["MSET", "user:1", "a", "order:1", "b", "cart:9", "c"],
    );
    q(&mut t, &["SET", "user:2", "mine"]);
    let got = invalidated(&mut t, &rx);
    assert_eq!(got, vec![keys(&["cart:9", "user:1"])]);
    match q(&mut t, &["CLIENT", "TRACKINGINFO"]) {
        Value::Map(m) => {
            let text = format!("{m:?}");
            for want in ["bcast", "noloop", "user:", "cart:"] {
                assert!(text.contains(want), "{text}");
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(qe(
        &mut t,
        &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:9"]
    )
    .contains("overlaps with an existing prefix 'user:'"));
    assert!(qe(&mut t, &["CLIENT", "TRACKING", "ON"]).contains("switch BCAST mode"));
    q(&mut t, &["CLIENT", "TRACKING", "OFF"]);

    // OPTIN: only what is read right after CLIENT CACHING YES.
    q(&mut t, &["CLIENT", "TRACKING", "ON", "OPTIN"]);
    q(&mut t, &["GET", "x"]);
    assert_eq!(q(&mut t, &["CLIENT", "CACHING", "YES"]), Value::Okay);
    q(&mut t, &["GET", "y"]);
    q(&mut t, &["GET", "z"]);
    q(&mut w, &["MSET", "x", "1", "y", "1", "z", "1"]);
    assert_eq!(invalidated(&mut t, &rx), vec![keys(&["y"])]);
    assert!(qe(&mut t, &["CLIENT", "CACHING", "NO"]).contains("OPTOUT mode"));
}

#[test]
fn tracking_errors_are_redis_texts() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    for (args, want) in [
        (
            &["CLIENT", "TRACKING", "ON", "PREFIX", "a"][..],
            "PREFIX option requires BCAST mode to be enabled",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"][..],
            "You can't use both OPTIN and OPTOUT",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"][..],
            "OPTIN and OPTOUT are not compatible with BCAST",
        ),
        (
            &["CLIENT", "TRACKING", "ON", "REDIRECT", "987654"][..],
            "The client ID you want redirect to does not exist",
        ),
        (&["CLIENT", "TRACKING", "MAYBE"][..], "syntax error"),
        (
            &["CLIENT", "CACHING", "YES"][..],
            "CLIENT CACHING can be called only when the client is in tracking mode",
        ),
    ] {
        let e = qe(&mut c, args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // Nothing was turned on by the refused requests.
    assert_eq!(q(&mut c, &["CLIENT", "GETREDIR"]), Value::Int(-1));
}

/// Reads one RESP value from a raw connection.
fn read_value(parser: &mut redis::Parser, s: &mut TcpStream) -> Value {
    parser.parse_value(s).expect("a reply within the timeout")
}

#[test]
fn resp2_redirect_to_a_subscriber_and_a_broken_redirect() {
    let node = TestNode::start(|_| {});
    let sink = TcpStream::connect(node.h().resp_addr).unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink_w = sink.try_clone().unwrap();
    let mut sink_r = sink.try_clone().unwrap();
    let mut parser = redis::Parser::new();
    sink_w.write_all(b"CLIENT ID\r\n").unwrap();
    let Value::Int(sink_id) = read_value(&mut parser, &mut sink_r) else {
        panic!("id")
    };
    sink_w
        .write_all(b"SUBSCRIBE __redis__:invalidate\r\n")
        .unwrap();
    read_value(&mut parser, &mut sink_r);

    let mut t = node.client();
    let mut w = node.client();
    let sink_id = sink_id.to_string();
    q(&mut t, &["CLIENT", "TRACKING", "ON", "REDIRECT", &sink_id]);
    assert_eq!(
        q(&mut t, &["CLIENT", "GETREDIR"]),
        Value::Int(sink_id.parse().unwrap())
    );
    q(&mut t, &["GET", "k"]);
    q(&mut w, &["SET", "k", "v"]);
    match read_value(&mut parser, &mut sink_r) {
        Value::Array(parts) => {
            assert_eq!(parts[0], Value::BulkString(b"message".to_vec()));
            assert_eq!(
                parts[1],
                Value::BulkString(b"__redis__:invalidate".to_vec())
            );
            assert_eq!(
                parts[2],
                Value::Array(vec![Value::BulkString(b"k".to_vec())])
            );
        }
        other => panic!("{other:?}"),
    }
    let list = String::from_utf8(
        redis::cmd("CLIENT")
            .arg("LIST")
            .query::<Vec<u8>>(&mut w)
            .unwrap(),
    )
    .unwrap();
    assert!(
        list.lines()
            .any(|l| l.contains(&format!("redir={sink_id}")) && l.contains("flags=t")),
        "{list}"
    );
    drop((sink_w, sink_r, sink));
    // Once the target is gone, the next invalidation finds it missing.
    q(&mut t, &["GET", "k"]);
    let mut broken = false;
    for _ in 0..50 {
        q(&mut w, &["SET", "k", "again"]);
        let info = format!("{:?}", q(&mut t, &["CLIENT", "TRACKINGINFO"]));
        if info.contains("broken_redirect") {
            broken = true;
            break;
        }
        q(&mut t, &["GET", "k"]);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(broken, "the redirect was never reported broken");
}

#[test]
fn monitor_shows_commands_with_quoting_and_redaction() {
    let node = TestNode::start(|c| c.requirepass = Some("pw".into()));
    let mon = TcpStream::connect(node.h().resp_addr).unwrap();
    mon.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut mon_w = mon.try_clone().unwrap();
    let mut mon_r = mon.try_clone().unwrap();
    let mut parser = redis::Parser::new();
    mon_w.write_all(b"AUTH pw\r\nMONITOR\r\n").unwrap();
    assert_eq!(read_value(&mut parser, &mut mon_r), Value::Okay);
    assert_eq!(read_value(&mut parser, &mut mon_r), Value::Okay);

    let client = redis::Client::open(format!("redis://:pw@{}/", node.h().resp_addr)).unwrap();
    let mut c = client.get_connection().unwrap();
    q(&mut c, &["CONFIG", "SET", "slowlog-max-len", "10"]);
    q(&mut c, &["SET", "greeting", "hello \"world\"\n"]);
    q(
        &mut c,
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", "greeting"],
    );
    let mut lines: Vec<String> = Vec::new();
    while lines.len() < 20 && !lines.iter().any(|l| l.contains("\"EVAL\"")) {
        match read_value(&mut parser, &mut mon_r) {
            Value::SimpleString(s) => lines.push(s),
            other => panic!("{other:?}"),
        }
    }
    // The client's AUTH was redacted, CONFIG (an admin command) left out.
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("\"pw\"") && !l.contains("CONFIG")),
        "{lines:?}"
    );
    let set = lines
        .iter()
        .find(|l| l.contains("\"SET\""))
        .expect("the SET");
    assert!(
        set.ends_with(r#""SET" "greeting" "hello \"world\"\n""#),
        "{set}"
    );
    assert!(set.contains("[0 127.0.0.1:"), "{set}");
    let inner = lines
        .iter()
        .find(|l| l.contains("[0 lua]"))
        .expect("the script's call");
    assert!(inner.ends_with(r#""GET" "greeting""#), "{inner}");
    let list = String::from_utf8(
        redis::cmd("CLIENT")
            .arg("LIST")
            .query::<Vec<u8>>(&mut c)
            .unwrap(),
    )
    .unwrap();
    assert!(list.contains("flags=O"), "{list}");
    assert!(list.contains("cmd=client|list"), "{list}");
}
