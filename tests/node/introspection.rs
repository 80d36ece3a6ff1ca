//! What operators and clients ask a node about itself: SLOWLOG, LATENCY,
//! MEMORY, and CLIENT REPLY / PAUSE / NO-TOUCH / NO-EVICT.

use std::time::Duration;

use crate::common::{q, qe, TestNode};
use redis::Value;

fn int(v: Value) -> i64 {
    match v {
        Value::Int(i) => i,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn slowlog_latency_and_memory() {
    let node = TestNode::start(|c| c.slowlog_log_slower_than = 0);
    let mut c = node.client();
    q(&mut c, &["CLIENT", "SETNAME", "probe"]);
    let long = "v".repeat(300);
    q(&mut c, &["SET", "k", &long]);
    // The default user needs no password, so any password logs in.
    q(&mut c, &["AUTH", "default", "secret-that-must-not-show"]);
    let Value::Array(entries) = q(&mut c, &["SLOWLOG", "GET", "-1"]) else {
        panic!("SLOWLOG GET is an array")
    };
    // Newest first: AUTH (redacted), SET (shortened), CLIENT SETNAME.
    let fields = |e: &Value| match e {
        Value::Array(f) => f.clone(),
        other => panic!("entry {other:?}"),
    };
    let auth = fields(&entries[0]);
    assert_eq!(
        auth[3],
        Value::Array(vec![
            Value::BulkString(b"AUTH".to_vec()),
            Value::BulkString(b"(redacted)".to_vec()),
            Value::BulkString(b"(redacted)".to_vec()),
        ])
    );
    let set = fields(&entries[1]);
    let Value::Array(args) = &set[3] else {
        panic!("args")
    };
    assert_eq!(
        args[2],
        Value::BulkString(format!("{}... (172 more bytes)", "v".repeat(128)).into_bytes())
    );
    assert_eq!(set[5], Value::BulkString(b"probe".to_vec()));
    assert!(int(set[0].clone()) < int(auth[0].clone()), "ids increase");
    assert!(int(q(&mut c, &["SLOWLOG", "LEN"])) >= 3);
    q(&mut c, &["SLOWLOG", "RESET"]);
    // RESET itself is logged after the reset.
    assert!(int(q(&mut c, &["SLOWLOG", "LEN"])) <= 2);
    q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    q(&mut c, &["SLOWLOG", "RESET"]);
    q(&mut c, &["GET", "k"]);
    assert_eq!(int(q(&mut c, &["SLOWLOG", "LEN"])), 0);

    // The latency monitor: a script that runs 30 ms is a spike above 10.
    q(
        &mut c,
        &["CONFIG", "SET", "latency-monitor-threshold", "10"],
    );
    let spin = "local t = redis.call('TIME') local s = t[1]*1000000 + t[2] \
                repeat local n = redis.call('TIME') until n[1]*1000000 + n[2] - s > 30000 return 1";
    q(&mut c, &["EVAL", spin, "0"]);
    let Value::Array(latest) = q(&mut c, &["LATENCY", "LATEST"]) else {
        panic!("LATENCY LATEST is an array")
    };
    let Value::Array(command) = &latest[0] else {
        panic!("event")
    };
    assert_eq!(command[0], Value::BulkString(b"command".to_vec()));
    assert!(int(command[2].clone()) >= 10);
    let Value::Array(history) = q(&mut c, &["LATENCY", "HISTORY", "command"]) else {
        panic!("history")
    };
    assert_eq!(history.len(), 1);
    assert_eq!(int(q(&mut c, &["LATENCY", "RESET"])), 1);
    assert_eq!(q(&mut c, &["LATENCY", "LATEST"]), Value::Array(vec![]));

    // MEMORY USAGE grows with the value; a missing key is nil.
    q(&mut c, &["SET", "small", "x"]);
    let small = int(q(&mut c, &["MEMORY", "USAGE", "small"]));
    let big = int(q(&mut c, &["MEMORY", "USAGE", "k"]));
    assert!(small > 0 && big > small + 250, "{small} {big}");
    assert_eq!(q(&mut c, &["MEMORY", "USAGE", "none"]), Value::Nil);
    let Value::Array(stats) = q(&mut c, &["MEMORY", "STATS"]) else {
        panic!("MEMORY STATS is a map, flat in RESP2")
    };
    let at = stats
        .iter()
        .position(|v| *v == Value::BulkString(b"keys.count".to_vec()))
        .expect("keys.count");
    assert_eq!(stats[at + 1], Value::Int(2));
}

#[test]
fn client_reply_pause_and_flags() {
    let node = TestNode::start(|_| {});
    let mut raw = node.raw();
    // OFF: no replies at all, and the commands still run; ON answers again.
    raw.send(b"CLIENT REPLY OFF\r\nSET a 1\r\nSET b 2\r\nCLIENT REPLY ON\r\n");
    assert_eq!(raw.read_until(b"\r\n"), b"+OK\r\n");
    // SKIP leaves out only the next command's reply.
    raw.send(b"CLIENT REPLY SKIP\r\nSET c 3\r\nGET a\r\n");
    assert_eq!(raw.read_until(b"1\r\n"), b"$1\r\n1\r\n");
    let mut c = node.client();
    assert_eq!(
        q(&mut c, &["MGET", "a", "b", "c"]),
        Value::Array(vec![
            Value::BulkString(b"1".to_vec()),
            Value::BulkString(b"2".to_vec()),
            Value::BulkString(b"3".to_vec()),
        ])
    );
    // NO-EVICT and NO-TOUCH show in CLIENT LIST's flags.
    q(&mut c, &["CLIENT", "NO-EVICT", "on"]);
    q(&mut c, &["CLIENT", "NO-TOUCH", "on"]);
    let Value::BulkString(info) = q(&mut c, &["CLIENT", "INFO"]) else {
        panic!("CLIENT INFO")
    };
    assert!(String::from_utf8_lossy(&info).contains("flags=eT"));
    assert_eq!(
        qe(&mut c, &["CLIENT", "NO-TOUCH", "maybe"]),
        "ERR syntax error"
    );

    // PAUSE WRITE holds writes and lets reads through until UNPAUSE.
    q(&mut c, &["CLIENT", "PAUSE", "100000", "WRITE"]);
    let url = node.redis_url();
    let writer = std::thread::spawn(move || {
        let mut w = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("SET").arg("held").arg("v").exec(&mut w).unwrap();
    });
    let mut reader = node.client();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        q(&mut reader, &["GET", "held"]),
        Value::Nil,
        "the write waits"
    );
    assert!(!writer.is_finished());
    q(&mut c, &["CLIENT", "UNPAUSE"]);
    writer.join().unwrap();
    assert_eq!(
        q(&mut reader, &["GET", "held"]),
        Value::BulkString(b"v".to_vec())
    );
}

#[test]
fn wait_on_a_single_node_counts_no_replicas() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    q(&mut c, &["SET", "k", "v"]);
    assert_eq!(q(&mut c, &["WAIT", "0", "0"]), Value::Int(0));
    // More replicas than exist: the count reached when the timeout ends.
    assert_eq!(q(&mut c, &["WAIT", "1", "20"]), Value::Int(0));
    assert!(qe(&mut c, &["WAIT", "1", "-1"]).contains("timeout is negative"));
    assert!(qe(&mut c, &["WAIT", "x", "1"]).contains("not an integer"));
    // WAIT forever ends with CLIENT UNBLOCK.
    let id = int(q(&mut c, &["CLIENT", "ID"]));
    let mut other = node.client();
    let waiter = std::thread::spawn(move || q(&mut c, &["WAIT", "1", "0"]));
    let mut unblocked = 0;
    for _ in 0..200 {
        unblocked = int(q(&mut other, &["CLIENT", "UNBLOCK", &id.to_string()]));
        if unblocked == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(unblocked, 1);
    assert_eq!(waiter.join().unwrap(), Value::Int(0));
}

#[test]
fn debug_object_sleep_reload_and_who_may_use_them() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    q(&mut c, &["SET", "n", "12345"]);
    q(&mut c, &["RPUSH", "l", "a", "b"]);
    let Value::SimpleString(obj) = q(&mut c, &["DEBUG", "OBJECT", "n"]) else {
        panic!("DEBUG OBJECT answers a status line")
    };
    assert!(obj.contains("encoding:int"), "{obj}");
    assert!(obj.contains("tier:memory"), "{obj}");
    assert!(obj.contains("serializedlength:"), "{obj}");
    let Value::SimpleString(obj) = q(&mut c, &["DEBUG", "OBJECT", "l"]) else {
        panic!("DEBUG OBJECT answers a status line")
    };
    assert!(obj.contains("encoding:quicklist"), "{obj}");
    assert_eq!(qe(&mut c, &["DEBUG", "OBJECT", "nope"]), "ERR no such key");
    assert_eq!(q(&mut c, &["DEBUG", "SLEEP", "0.01"]), Value::Okay);
    assert!(qe(&mut c, &["DEBUG", "SLEEP", "soon"]).contains("not a valid float"));
    assert_eq!(q(&mut c, &["DEBUG", "RELOAD"]), Value::Okay);
    assert_eq!(
        q(&mut c, &["GET", "n"]),
        Value::BulkString(b"12345".to_vec())
    );
    assert!(qe(&mut c, &["DEBUG", "JMAP"]).contains("unknown subcommand"));
    // Refused unless enable-debug-command allows it.
    let closed = TestNode::start(|c| c.enable_debug_command = "no".into());
    let mut c = closed.client();
    assert!(qe(&mut c, &["DEBUG", "SLEEP", "0"]).contains("DEBUG command not allowed"));
}
