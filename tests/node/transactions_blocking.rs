//! Transactions and blocking commands, black-box over RESP with the
//! `redis` crate: MULTI/EXEC/DISCARD, EXECABORT, WATCH against another
//! client's write, an expiry and a FLUSH; BLPOP and friends served in
//! arrival order, timeouts, CLIENT UNBLOCK, a client that hangs up while
//! blocked, XREAD / XREADGROUP BLOCK, and a push inside MULTI waking a
//! blocked client only once the transaction has run. Waits are bounded
//! and no timing is asserted.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{q, qe, TestNode};
use redis::Value;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn ok() -> Value {
    Value::Okay
}

fn queued() -> Value {
    Value::SimpleString("QUEUED".into())
}

/// One INFO field of the node.
fn info_field(c: &mut redis::Connection, name: &str) -> String {
    let Value::BulkString(text) = q(c, &["INFO", "clients"]) else {
        panic!("INFO is a bulk string")
    };
    let text = String::from_utf8(text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .to_string()
}

/// Waits (bounded) until `n` clients are blocked.
fn wait_blocked(c: &mut redis::Connection, n: usize) {
    let until = Instant::now() + Duration::from_secs(20);
    while info_field(c, "blocked_clients") != n.to_string() {
        assert!(Instant::now() < until, "never saw {n} blocked clients");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command on a fresh connection in a thread.
fn spawn(node: &TestNode, args: &[&str]) -> thread::JoinHandle<redis::RedisResult<Value>> {
    let mut c = node.client();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    thread::spawn(move || {
        let mut command = redis::cmd(&args[0]);
        for a in &args[1..] {
            command.arg(a);
        }
        command.query(&mut c)
    })
}

#[test]
fn multi_exec_discard_and_execabort() {
    let node = TestNode::start(|_| {});
    // Replies in order; a failing command doesn't stop the others (read
    // raw: the client library turns an error inside EXEC into a failure).
    let mut raw = node.raw();
    let cmd = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        out
    };
    let mut script = String::new();
    for args in [
        &["MULTI"][..],
        &["SET", "a", "1"],
        &["INCR", "a"],
        &["LPUSH", "a", "x"],
        &["GET", "a"],
        &["MULTI"],
        &["WATCH", "a"],
        &["EXEC"],
    ] {
        script.push_str(&cmd(args));
    }
    raw.send(script.as_bytes());
    let got = String::from_utf8(raw.read_until(b"$1\r\n2\r\n")).unwrap();
    assert_eq!(
        got,
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
         -ERR MULTI calls can not be nested\r\n-ERR WATCH inside MULTI is not allowed\r\n\
         *4\r\n+OK\r\n:2\r\n\
         -WRONGTYPE Operation against a key holding the wrong kind of value\r\n$1\r\n2\r\n"
    );
    let mut c = node.client();
    let c = &mut c;

    // A command refused while queuing dooms the transaction.
    assert_eq!(q(c, &["MULTI"]), ok());
    assert_eq!(q(c, &["SET", "b", "1"]), queued());
    assert!(qe(c, &["NOSUCHCOMMAND"]).starts_with("ERR unknown command 'NOSUCHCOMMAND'"));
    assert_eq!(
        qe(c, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        qe(c, &["EXEC"]),
        "EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(q(c, &["EXISTS", "b"]), Value::Int(0));

    // DISCARD drops the queue.
    assert_eq!(q(c, &["MULTI"]), ok());
    assert_eq!(q(c, &["SET", "b", "1"]), queued());
    assert_eq!(q(c, &["DISCARD"]), ok());
    assert_eq!(q(c, &["EXISTS", "b"]), Value::Int(0));
    assert_eq!(qe(c, &["EXEC"]), "ERR EXEC without MULTI");
    assert_eq!(qe(c, &["DISCARD"]), "ERR DISCARD without MULTI");

    // The redis crate's atomic pipeline.
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCRBY")
        .arg("n")
        .arg(5)
        .cmd("INCRBY")
        .arg("n")
        .arg(6)
        .query(c)
        .unwrap();
    assert_eq!((x, y), (5, 11));
}

#[test]
fn watch_sees_other_clients_expiry_and_flush() {
    let node = TestNode::start(|_| {});
    let (mut c, mut d) = (node.client(), node.client());
    let (c, d) = (&mut c, &mut d);

    // Untouched: EXEC runs.
    q(c, &["SET", "k", "1"]);
    assert_eq!(q(c, &["WATCH", "k"]), ok());
    q(c, &["MULTI"]);
    q(c, &["INCR", "k"]);
    assert_eq!(q(c, &["EXEC"]), Value::Array(vec![Value::Int(2)]));

    // Another client writes the key: EXEC runs nothing.
    q(c, &["WATCH", "k"]);
    q(d, &["SET", "k", "100"]);
    q(c, &["MULTI"]);
    q(c, &["INCR", "k"]);
    assert_eq!(q(c, &["EXEC"]), Value::Nil);
    assert_eq!(q(c, &["GET", "k"]), bulk("100"));

    // Even writing the same value counts as a change.
    q(c, &["WATCH", "k"]);
    q(d, &["SET", "k", "100"]);
    q(c, &["MULTI"]);
    q(c, &["SET", "k", "mine"]);
    assert_eq!(q(c, &["EXEC"]), Value::Nil);

    // A key absent when watched and created since.
    q(c, &["WATCH", "fresh"]);
    q(d, &["SET", "fresh", "1"]);
    q(c, &["MULTI"]);
    q(c, &["SET", "fresh", "2"]);
    assert_eq!(q(c, &["EXEC"]), Value::Nil);

    // UNWATCH forgets.
    q(c, &["WATCH", "k"]);
    q(d, &["SET", "k", "200"]);
    q(c, &["UNWATCH"]);
    q(c, &["MULTI"]);
    q(c, &["SET", "k", "mine"]);
    assert_eq!(q(c, &["EXEC"]), Value::Array(vec![ok()]));

    // A watched key that expires.
    q(c, &["SET", "t", "1", "PX", "50"]);
    q(c, &["WATCH", "t"]);
    thread::sleep(Duration::from_millis(120));
    q(c, &["MULTI"]);
    q(c, &["SET", "t", "2"]);
    assert_eq!(q(c, &["EXEC"]), Value::Nil);

    // FLUSHALL by another client.
    q(c, &["SET", "f", "1"]);
    q(c, &["WATCH", "f"]);
    q(d, &["FLUSHALL"]);
    q(c, &["MULTI"]);
    q(c, &["SET", "f", "2"]);
    assert_eq!(q(c, &["EXEC"]), Value::Nil);

    // Each of two racing clients increments only if nobody else did in
    // between; retried, every increment lands exactly once.
    q(c, &["SET", "counter", "0"]);
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let mut r = node.client();
            thread::spawn(move || {
                let mut done = 0;
                let mut attempts = 0;
                while done < 50 {
                    attempts += 1;
                    assert!(attempts < 10_000, "WATCH retries never converge");
                    q(&mut r, &["WATCH", "counter"]);
                    let Value::BulkString(v) = q(&mut r, &["GET", "counter"]) else {
                        panic!()
                    };
                    let n: i64 = String::from_utf8(v).unwrap().parse().unwrap();
                    q(&mut r, &["MULTI"]);
                    q(&mut r, &["SET", "counter", &(n + 1).to_string()]);
                    if q(&mut r, &["EXEC"]) != Value::Nil {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    for r in racers {
        r.join().unwrap();
    }
    assert_eq!(q(c, &["GET", "counter"]), bulk("100"));
}

#[test]
fn transactions_survive_restart_whole() {
    let mut node =
        TestNode::start(|cfg| cfg.storage.appendfsync = strata::storage::AppendFsync::Always);
    {
        let mut c = node.client();
        let c = &mut c;
        q(c, &["MULTI"]);
        for i in 0..20 {
            q(c, &["RPUSH", "jobs", &i.to_string()]);
            q(c, &["HSET", "job:meta", &i.to_string(), "queued"]);
        }
        let Value::Array(r) = q(c, &["EXEC"]) else {
            panic!()
        };
        assert_eq!(r.len(), 40);
    }
    node.restart();
    let mut c = node.client();
    assert_eq!(q(&mut c, &["LLEN", "jobs"]), Value::Int(20));
    assert_eq!(q(&mut c, &["HLEN", "job:meta"]), Value::Int(20));
}

#[test]
fn blocked_pops_are_served_in_arrival_order() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    let first = spawn(&node, &["BLPOP", "q", "10"]);
    wait_blocked(c, 1);
    let second = spawn(&node, &["BLPOP", "other", "q", "10"]);
    wait_blocked(c, 2);
    assert_eq!(info_field(c, "total_blocking_keys"), "2");
    q(c, &["RPUSH", "q", "a", "b", "c"]);
    let got: (String, String) = redis::from_redis_value(&first.join().unwrap().unwrap()).unwrap();
    assert_eq!(got, ("q".into(), "a".into()));
    let got: (String, String) = redis::from_redis_value(&second.join().unwrap().unwrap()).unwrap();
    assert_eq!(got, ("q".into(), "b".into()));
    assert_eq!(
        q(c, &["LRANGE", "q", "0", "-1"]),
        Value::Array(vec![bulk("c")])
    );
    wait_blocked(c, 0);
    assert_eq!(info_field(c, "total_blocking_keys"), "0");

    // Served at once when there is something; nil after the timeout.
    let v: (String, String) = redis::from_redis_value(&q(c, &["BRPOP", "q", "1"])).unwrap();
    assert_eq!(v, ("q".into(), "c".into()));
    assert_eq!(q(c, &["BLPOP", "q", "0.05"]), Value::Nil);
    assert_eq!(
        q(c, &["BLMOVE", "q", "d", "LEFT", "RIGHT", "0.05"]),
        Value::Nil
    );
    assert_eq!(qe(c, &["BLPOP", "q", "-1"]), "ERR timeout is negative");
    assert_eq!(
        qe(c, &["BLPOP", "q", "soon"]),
        "ERR timeout is not a float or out of range"
    );
    q(c, &["SET", "str", "x"]);
    assert_eq!(
        qe(c, &["BLPOP", "str", "1"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );

    // BLMOVE and BRPOPLPUSH wait on the source.
    let mover = spawn(&node, &["BLMOVE", "src", "dst", "RIGHT", "LEFT", "10"]);
    wait_blocked(c, 1);
    q(c, &["LPUSH", "src", "job"]);
    assert_eq!(mover.join().unwrap().unwrap(), bulk("job"));
    assert_eq!(
        q(c, &["LRANGE", "dst", "0", "-1"]),
        Value::Array(vec![bulk("job")])
    );

    // BLMPOP with a count.
    let mpop = spawn(
        &node,
        &["BLMPOP", "10", "2", "l1", "l2", "LEFT", "COUNT", "2"],
    );
    wait_blocked(c, 1);
    q(c, &["RPUSH", "l2", "x", "y", "z"]);
    let v: (String, Vec<String>) = redis::from_redis_value(&mpop.join().unwrap().unwrap()).unwrap();
    assert_eq!(v, ("l2".into(), vec!["x".into(), "y".into()]));

    // Sorted sets, with a fractional timeout.
    let zpop = spawn(&node, &["BZPOPMIN", "z", "5.5"]);
    wait_blocked(c, 1);
    q(c, &["ZADD", "z", "3", "c", "1", "a"]);
    let v: (String, String, String) =
        redis::from_redis_value(&zpop.join().unwrap().unwrap()).unwrap();
    assert_eq!(v, ("z".into(), "a".into(), "1".into()));
    assert_eq!(
        q(c, &["BZPOPMAX", "z", "0.01"]),
        Value::Array(vec![bulk("z"), bulk("c"), bulk("3")])
    );
    assert_eq!(q(c, &["BZPOPMIN", "z", "0.01"]), Value::Nil);
    let zm = spawn(&node, &["BZMPOP", "10", "1", "z", "MAX"]);
    wait_blocked(c, 1);
    q(c, &["ZADD", "z", "7", "seven"]);
    let v: (String, Vec<(String, f64)>) =
        redis::from_redis_value(&zm.join().unwrap().unwrap()).unwrap();
    assert_eq!(v, ("z".into(), vec![("seven".into(), 7.0)]));
}

#[test]
fn unblock_disconnect_and_transactions() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;

    // CLIENT UNBLOCK: as a timeout, or with an error.
    let mut b = node.client();
    let id: i64 = redis::from_redis_value(&q(&mut b, &["CLIENT", "ID"])).unwrap();
    let waiter = thread::spawn(move || redis::cmd("BLPOP").arg("u").arg(0).query::<Value>(&mut b));
    wait_blocked(c, 1);
    let line: String = redis::from_redis_value(&q(c, &["CLIENT", "LIST"])).unwrap();
    assert!(line.contains("flags=b"), "{line}");
    assert_eq!(q(c, &["CLIENT", "UNBLOCK", &id.to_string()]), Value::Int(1));
    assert_eq!(waiter.join().unwrap().unwrap(), Value::Nil);
    assert_eq!(q(c, &["CLIENT", "UNBLOCK", &id.to_string()]), Value::Int(0));

    let mut b = node.client();
    let id: i64 = redis::from_redis_value(&q(&mut b, &["CLIENT", "ID"])).unwrap();
    let waiter = thread::spawn(move || redis::cmd("BLPOP").arg("u").arg(0).query::<Value>(&mut b));
    wait_blocked(c, 1);
    assert_eq!(
        q(c, &["CLIENT", "UNBLOCK", &id.to_string(), "ERROR"]),
        Value::Int(1)
    );
    let e = waiter.join().unwrap().expect_err("unblocked with an error");
    assert_eq!(e.code(), Some("UNBLOCKED"));

    // A client that hangs up while blocked leaves nothing behind: the next
    // push goes to the one still waiting.
    let mut raw = node.raw();
    raw.send(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nw\r\n$1\r\n0\r\n");
    wait_blocked(c, 1);
    let stays = spawn(&node, &["BLPOP", "w", "10"]);
    wait_blocked(c, 2);
    drop(raw);
    wait_blocked(c, 1);
    q(c, &["RPUSH", "w", "only"]);
    let v: (String, String) = redis::from_redis_value(&stays.join().unwrap().unwrap()).unwrap();
    assert_eq!(v.1, "only");
    wait_blocked(c, 0);

    // Inside MULTI a blocking command doesn't wait.
    q(c, &["MULTI"]);
    q(c, &["BLPOP", "empty", "0"]);
    assert_eq!(q(c, &["EXEC"]), Value::Array(vec![Value::Nil]));

    // A push inside MULTI wakes the blocked client after EXEC, which sees
    // the transaction's final state.
    let w = spawn(&node, &["BLPOP", "tx", "10"]);
    wait_blocked(c, 1);
    q(c, &["MULTI"]);
    q(c, &["RPUSH", "tx", "first"]);
    q(c, &["LPUSH", "tx", "zeroth"]);
    q(c, &["EXEC"]);
    let v: (String, String) = redis::from_redis_value(&w.join().unwrap().unwrap()).unwrap();
    assert_eq!(v.1, "zeroth");
}

#[test]
fn stream_reads_block() {
    let node = TestNode::start(|_| {});
    let mut c = node.client();
    let c = &mut c;
    q(c, &["XADD", "s", "1-0", "old", "1"]);
    // `$`: only entries added after the call.
    let reader = spawn(&node, &["XREAD", "BLOCK", "10000", "STREAMS", "s", "$"]);
    wait_blocked(c, 1);
    q(c, &["XADD", "s", "2-0", "new", "1"]);
    let v: Vec<(String, Vec<(String, Vec<String>)>)> =
        redis::from_redis_value(&reader.join().unwrap().unwrap()).unwrap();
    assert_eq!(v[0].1.len(), 1);
    assert_eq!(v[0].1[0].0, "2-0");
    assert_eq!(
        q(c, &["XREAD", "BLOCK", "50", "STREAMS", "s", "$"]),
        Value::Nil
    );
    assert_eq!(
        qe(c, &["XREAD", "BLOCK", "-1", "STREAMS", "s", "$"]),
        "ERR timeout is negative"
    );

    // A consumer group reader waits for new entries and gets them pending.
    q(c, &["XGROUP", "CREATE", "s", "g", "$"]);
    let member = spawn(
        &node,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "BLOCK",
            "10000",
            "STREAMS",
            "s",
            ">",
        ],
    );
    wait_blocked(c, 1);
    q(c, &["XADD", "s", "3-0", "job", "x"]);
    let v: Vec<(String, Vec<(String, Vec<String>)>)> =
        redis::from_redis_value(&member.join().unwrap().unwrap()).unwrap();
    assert_eq!(v[0].1[0].0, "3-0");
    let pending: (i64, String, String, Vec<(String, String)>) =
        redis::from_redis_value(&q(c, &["XPENDING", "s", "g"])).unwrap();
    assert_eq!(pending.0, 1);
    // Nothing new: nil after the timeout, and the wait wrote nothing
    // that would wake other readers.
    assert_eq!(
        q(
            c,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "bob",
                "BLOCK",
                "50",
                "STREAMS",
                "s",
                ">"
            ]
        ),
        Value::Nil
    );
}
