//! An expired key is gone whichever tier it was in.

use std::time::Duration;

use crate::storage_common::{get_str, open, string};
use strata::storage::{now_ms, ReadHint, Tier};

#[test]
fn expired_keys_vanish_from_both_tiers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 16 << 20);
    let soon = now_ms() + 300;
    store.put(0, b"mem", string(b"a", Some(soon))).expect("put");
    store
        .put(0, b"disk", string(b"b", Some(soon)))
        .expect("put");
    store.put(0, b"stays", string(b"c", None)).expect("put");
    assert!(store.demote_key(0, b"disk").expect("demote"));
    assert_eq!(
        store
            .placement(0, b"disk")
            .expect("placement")
            .map(|p| p.tier),
        Some(Tier::Disk)
    );
    assert_eq!(
        store
            .placement(0, b"mem")
            .expect("placement")
            .map(|p| p.tier),
        Some(Tier::Memory)
    );
    assert_eq!(get_str(&store, 0, b"disk").as_deref(), Some(&b"b"[..]));
    std::thread::sleep(Duration::from_millis(400));
    for key in [&b"mem"[..], b"disk"] {
        assert!(store
            .read(0, key, ReadHint::Peek, |r| r.is_none())
            .expect("read"));
        assert_eq!(get_str(&store, 0, key), None);
    }
    assert_eq!(get_str(&store, 0, b"stays").as_deref(), Some(&b"c"[..]));
    assert_eq!(store.dbsize(0), 1, "expired keys are reclaimed on access");
    let (cursor, keys) = store.scan(0, 0, 100, None, None).expect("scan");
    assert_eq!((cursor, keys.len()), (0, 1));
}

#[test]
fn active_expiry_reclaims_untouched_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 16 << 20);
    let soon = now_ms() + 100;
    for i in 0..500 {
        store
            .put(0, format!("k{i}").as_bytes(), string(b"v", Some(soon)))
            .expect("put");
    }
    // The background sweep reclaims them without any access (bounded wait).
    for _ in 0..100 {
        if store.dbsize(0) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(store.dbsize(0), 0);
    assert_eq!(store.stats().expired, 500);
    assert_eq!(store.stats().used_bytes, 0);
}

#[test]
fn expired_keys_do_not_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), 16 << 20);
        store
            .put(0, b"short", string(b"x", Some(now_ms() + 200)))
            .expect("put");
        store
            .put(0, b"long", string(b"y", Some(now_ms() + 3_600_000)))
            .expect("put");
    }
    std::thread::sleep(Duration::from_millis(300));
    let store = open(dir.path(), 16 << 20);
    assert_eq!(get_str(&store, 0, b"short"), None);
    assert_eq!(get_str(&store, 0, b"long").as_deref(), Some(&b"y"[..]));
    assert_eq!(store.dbsize(0), 1);
}
