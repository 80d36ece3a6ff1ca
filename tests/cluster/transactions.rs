//! Transactions and blocking commands on a 3-node cluster of real
//! `strata` processes: MULTI/EXEC through any node runs as one replicated
//! entry on the keys' shard, keys of several slots are refused, WATCH
//! sees a write made through another node, a client blocked on one
//! node is served by a push through another, and a message published on
//! one node reaches subscribers on another. Every replica ends with the
//! same state. Scripts and function libraries run once per replica on the
//! keys' shard, through any node. Waits are bounded; no timing is asserted.

use std::time::{Duration, Instant};

use crate::procs::*;
use redis::{cmd, Value};

fn run(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut command = cmd(args[0]);
    for a in &args[1..] {
        command.arg(*a);
    }
    command.query(c)
}

/// Runs a command, retrying while the shard has no leader yet.
fn q(c: &mut redis::Connection, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match run(c, args) {
            Ok(v) => return v,
            Err(e) if matches!(e.code(), Some("CLUSTERDOWN" | "TRYAGAIN")) => {
                assert!(Instant::now() < deadline, "{args:?}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{args:?}: {e}"),
        }
    }
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn transactions_and_blocking_across_nodes() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(root.path());
    let (mut a, mut b) = (nodes[0].client(), nodes[1].client());

    // A transaction through a node that may not lead the shard.
    for via in [&mut a, &mut b] {
        q(via, &["DEL", "{t}n", "{t}l"]);
        assert_eq!(q(via, &["MULTI"]), Value::Okay);
        q(via, &["INCRBY", "{t}n", "5"]);
        q(via, &["RPUSH", "{t}l", "x", "y"]);
        q(via, &["INCR", "{t}n"]);
        assert_eq!(
            q(via, &["EXEC"]),
            Value::Array(vec![Value::Int(5), Value::Int(2), Value::Int(6)])
        );
    }
    // Keys of several slots can't form one transaction.
    q(&mut a, &["MULTI"]);
    q(&mut a, &["SET", "one", "1"]);
    q(&mut a, &["SET", "two", "2"]);
    let e = run(&mut a, &["EXEC"]).expect_err("CROSSSLOT");
    assert_eq!(e.code(), Some("CROSSSLOT"));
    assert_eq!(q(&mut a, &["EXISTS", "one"]), Value::Int(0));
    assert_eq!(q(&mut a, &["EXISTS", "two"]), Value::Int(0));

    // WATCH on one node sees a write made through another.
    q(&mut a, &["SET", "{t}w", "1"]);
    assert_eq!(q(&mut a, &["WATCH", "{t}w"]), Value::Okay);
    q(&mut b, &["SET", "{t}w", "2"]);
    q(&mut a, &["MULTI"]);
    q(&mut a, &["SET", "{t}w", "mine"]);
    assert_eq!(q(&mut a, &["EXEC"]), Value::Nil);
    assert_eq!(q(&mut b, &["GET", "{t}w"]), bulk("2"));
    // And lets the transaction run when nobody wrote.
    q(&mut a, &["WATCH", "{t}w"]);
    q(&mut a, &["MULTI"]);
    q(&mut a, &["SET", "{t}w", "mine"]);
    assert_eq!(q(&mut a, &["EXEC"]), Value::Array(vec![Value::Okay]));

    // A client blocked on node 2 is served by a push through node 0.
    let mut waiter = nodes[2].client();
    let blocked =
        std::thread::spawn(move || run(&mut waiter, &["BLPOP", "{t}jobs", "30"]).expect("BLPOP"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = cmd("INFO")
            .arg("clients")
            .query(&mut nodes[2].client())
            .unwrap();
        if info.contains("blocked_clients:1") {
            break;
        }
        assert!(Instant::now() < deadline, "the BLPOP never blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
    q(&mut a, &["RPUSH", "{t}jobs", "job-1", "job-2"]);
    assert_eq!(
        blocked.join().unwrap(),
        Value::Array(vec![bulk("{t}jobs"), bulk("job-1")])
    );

    // A message published through one node reaches subscribers on the
    // others.
    let mut subscriber = nodes[2].client();
    let mut sub = subscriber.as_pubsub();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.subscribe("events").unwrap();
    sub.psubscribe("ev*").unwrap();
    q(&mut a, &["PUBLISH", "events", "e1"]);
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = sub.get_message().expect("a message from another node");
        got.push((
            m.get_channel_name().to_string(),
            m.get_payload::<String>().unwrap(),
        ));
    }
    assert_eq!(got, vec![("events".into(), "e1".into()); 2]);
    drop(sub);

    // Every replica holds the same result (READONLY reads its own copy).
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in &nodes {
        let mut c = p.client();
        q(&mut c, &["READONLY"]);
        loop {
            let state = (
                q(&mut c, &["GET", "{t}n"]),
                q(&mut c, &["LRANGE", "{t}jobs", "0", "-1"]),
                q(&mut c, &["GET", "{t}w"]),
            );
            if state == (bulk("6"), Value::Array(vec![bulk("job-2")]), bulk("mine")) {
                break;
            }
            assert!(Instant::now() < deadline, "replica differs: {state:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // An ACL user made on one node logs in on every node, and is checked
    // where the client talks, whichever node leads the key's shard.
    q(
        &mut a,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">pw",
            "~{s}*",
            "+@all",
            "-@dangerous",
        ],
    );
    for p in &nodes {
        let url = format!("redis://app:pw@{}/", p.addr());
        let mut c = loop {
            match redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "log in as app: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert_eq!(q(&mut c, &["SET", "{s}acl", "v"]), Value::Okay);
        let e = run(&mut c, &["GET", "other"]).expect_err("key out of reach");
        assert_eq!(e.code(), Some("NOPERM"));
        let e = run(&mut c, &["FLUSHALL"]).expect_err("dangerous");
        assert_eq!(e.code(), Some("NOPERM"));
    }
}

#[test]
fn scripts_and_functions_across_nodes() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(root.path());
    let (mut a, mut b) = (nodes[0].client(), nodes[1].client());
    let script = "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) \
                  redis.call('RPUSH', KEYS[2], 'seen-' .. n) return n";
    // EVAL through either node runs once, on the keys' shard, replicated.
    assert_eq!(
        q(&mut a, &["EVAL", script, "2", "{s}n", "{s}log", "5"]),
        Value::Int(5)
    );
    assert_eq!(
        q(&mut b, &["EVAL", script, "2", "{s}n", "{s}log", "2"]),
        Value::Int(7)
    );
    // EVALSHA of a script one node knows works through that node, even
    // when another node leads the shard.
    let Value::BulkString(sha) = q(&mut b, &["SCRIPT", "LOAD", script]) else {
        panic!("SCRIPT LOAD answers the SHA1");
    };
    let sha = String::from_utf8(sha).unwrap();
    for via in [&mut b] {
        assert_eq!(
            q(via, &["EVALSHA", &sha, "2", "{s}n", "{s}log", "1"]),
            Value::Int(8)
        );
    }
    // Keys of several slots, or keys a keyless script reaches for, are
    // refused.
    let e = run(&mut a, &["EVAL", "return 1", "2", "one", "two"]).expect_err("CROSSSLOT");
    assert_eq!(e.code(), Some("CROSSSLOT"));
    let e = run(
        &mut a,
        &["EVAL", "return redis.call('GET', 'elsewhere')", "1", "{s}n"],
    )
    .expect_err("non-local key");
    assert!(e.to_string().contains("non local key"), "{e}");
    // A library loaded on one node is callable through every node.
    let lib = "#!lua name=jobs\nredis.register_function('push', function(keys, args) \
               return redis.call('RPUSH', keys[1], args[1]) end)";
    assert_eq!(q(&mut a, &["FUNCTION", "LOAD", lib]), bulk("jobs"));
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in &nodes {
        let mut c = p.client();
        loop {
            match run(&mut c, &["FCALL", "push", "1", "{s}log", "via-function"]) {
                Ok(Value::Int(_)) => break,
                other => {
                    assert!(Instant::now() < deadline, "FCALL through a peer: {other:?}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    // Every replica ran the same scripts to the same state.
    let want = (
        bulk("8"),
        Value::Array(
            ["seen-5", "seen-7", "seen-8"]
                .into_iter()
                .map(bulk)
                .chain(std::iter::repeat_n(bulk("via-function"), 3))
                .collect(),
        ),
    );
    for p in &nodes {
        let mut c = p.client();
        q(&mut c, &["READONLY"]);
        loop {
            let state = (
                q(&mut c, &["GET", "{s}n"]),
                q(&mut c, &["LRANGE", "{s}log", "0", "-1"]),
            );
            if state == want {
                break;
            }
            assert!(Instant::now() < deadline, "replica differs: {state:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // An ACL user made on one node logs in on every node, and is checked
    // where the client talks, whichever node leads the key's shard.
    q(
        &mut a,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">pw",
            "~{s}*",
            "+@all",
            "-@dangerous",
        ],
    );
    for p in &nodes {
        let url = format!("redis://app:pw@{}/", p.addr());
        let mut c = loop {
            match redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "log in as app: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert_eq!(q(&mut c, &["SET", "{s}acl", "v"]), Value::Okay);
        let e = run(&mut c, &["GET", "other"]).expect_err("key out of reach");
        assert_eq!(e.code(), Some("NOPERM"));
        let e = run(&mut c, &["FLUSHALL"]).expect_err("dangerous");
        assert_eq!(e.code(), Some("NOPERM"));
    }
}

#[test]
fn tracking_clients_hear_of_writes_made_through_other_nodes() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(root.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("redis://{}/?protocol=resp3", nodes[0].addr());
    let mut t = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    t.set_push_sender(tx);
    q(&mut t, &["CLIENT", "TRACKING", "ON"]);
    let mut w = nodes[2].client();
    // Keys on every shard: each is read through node 0 and changed
    // through node 2.
    let keys: Vec<String> = (0..12).map(|i| format!("tracked:{i}")).collect();
    for k in &keys {
        q(&mut w, &["SET", k, "1"]);
        q(&mut t, &["GET", k]);
    }
    for k in &keys {
        q(&mut w, &["SET", k, "2"]);
    }
    // Both other replicas of the last write's shard have it once WAIT
    // says so; asking for more than there are ends at the timeout.
    assert_eq!(q(&mut w, &["WAIT", "2", "0"]), Value::Int(2));
    assert_eq!(q(&mut w, &["WAIT", "3", "100"]), Value::Int(2));
    let mut told = std::collections::BTreeSet::new();
    while told.len() < keys.len() {
        assert!(Instant::now() < deadline, "invalidated so far: {told:?}");
        q(&mut t, &["PING"]);
        while let Ok(p) = rx.try_recv() {
            if let [Value::Array(ks)] = &p.data[..] {
                for k in ks {
                    if let Value::BulkString(b) = k {
                        told.insert(String::from_utf8_lossy(b).into_owned());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(told, keys.iter().cloned().collect());
}
