//! SWAPDB: databases exchange their data for every client at once, blocked
//! clients look again, WATCH sees it, and the exchange survives restarts
//! and a log replayed after a crash (more than once).

use std::time::Duration;

use crate::common::{q, qe, TestNode};
use crate::storage_common::{get_str, open, string};
use redis::Value;

#[test]
fn swapdb_exchanges_data_for_every_client() {
    let node = TestNode::start(|_| {});
    let mut c0 = node.client();
    let mut c1 = node.client();
    q(&mut c1, &["SELECT", "1"]);
    q(&mut c0, &["SET", "a", "in-0"]);
    q(&mut c1, &["SET", "b", "in-1"]);
    q(&mut c1, &["RPUSH", "l", "x"]);
    // A client blocked on a key of database 0 that only database 1 has.
    let mut blocked = node.client();
    let waiter = std::thread::spawn(move || q(&mut blocked, &["BLPOP", "l", "10"]));
    // WATCHed keys change under a transaction.
    let mut tx = node.client();
    q(&mut tx, &["WATCH", "a"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(q(&mut c0, &["SWAPDB", "0", "1"]), Value::Okay);
    assert_eq!(
        waiter.join().unwrap(),
        Value::Array(vec![
            Value::BulkString(b"l".to_vec()),
            Value::BulkString(b"x".to_vec())
        ])
    );
    q(&mut tx, &["MULTI"]);
    q(&mut tx, &["SET", "a", "late"]);
    assert_eq!(q(&mut tx, &["EXEC"]), Value::Nil);
    assert_eq!(
        q(&mut c0, &["GET", "b"]),
        Value::BulkString(b"in-1".to_vec())
    );
    assert_eq!(q(&mut c0, &["GET", "a"]), Value::Nil);
    assert_eq!(
        q(&mut c1, &["GET", "a"]),
        Value::BulkString(b"in-0".to_vec())
    );
    assert_eq!(q(&mut c1, &["DBSIZE"]), Value::Int(1));
    assert_eq!(
        qe(&mut c0, &["SWAPDB", "0", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        qe(&mut c0, &["SWAPDB", "x", "1"]),
        "ERR invalid first DB index"
    );
    assert_eq!(
        qe(&mut c0, &["SWAPDB", "1", "y"]),
        "ERR invalid second DB index"
    );
    assert_eq!(q(&mut c0, &["SWAPDB", "3", "3"]), Value::Okay);
}

#[test]
fn swapdb_survives_restart_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), 64 << 20);
        store.put(0, b"k0", string(b"zero", None)).unwrap();
        store.put(1, b"k1", string(b"one", None)).unwrap();
        store.swap_db(0, 1).unwrap();
        // Written after the swap: lands in what database 0 names now.
        store.put(0, b"after", string(b"swap", None)).unwrap();
        store.sync_all().unwrap();
        // Dropped without a checkpoint: reopening replays the log.
    }
    for _ in 0..2 {
        // The last log segment is replayed again on the next open: the
        // swap must not flip back.
        let store = open(dir.path(), 64 << 20);
        assert_eq!(get_str(&store, 0, b"k1"), Some(b"one".to_vec()));
        assert_eq!(get_str(&store, 0, b"after"), Some(b"swap".to_vec()));
        assert_eq!(get_str(&store, 1, b"k0"), Some(b"zero".to_vec()));
        assert_eq!(get_str(&store, 0, b"k0"), None);
        assert_eq!(store.dbsize(0), 2);
    }
    {
        let store = open(dir.path(), 64 << 20);
        store.checkpoint().unwrap();
        store.swap_db(1, 2).unwrap();
        store.sync_all().unwrap();
    }
    let store = open(dir.path(), 64 << 20);
    assert_eq!(get_str(&store, 2, b"k0"), Some(b"zero".to_vec()));
    assert_eq!(get_str(&store, 1, b"k0"), None);
    assert_eq!(get_str(&store, 0, b"k1"), Some(b"one".to_vec()));
    // A snapshot names databases as clients do.
    let snap = dir.path().join("snap.bin");
    store.snapshot_to(&snap).unwrap();
    store.put(2, b"k0", string(b"changed", None)).unwrap();
    store.restore_from(&snap).unwrap();
    assert_eq!(get_str(&store, 2, b"k0"), Some(b"zero".to_vec()));
}
