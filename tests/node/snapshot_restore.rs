//! Snapshots cover both tiers; restoring one replaces the store; a bad file
//! changes nothing.

use crate::storage_common::{get_str, open, string};
use strata::storage::{FieldMap, Record, StorageError, Value, Version};

#[test]
fn snapshot_round_trip_across_tiers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a"), 16 << 20);
    for i in 0..2000 {
        store
            .put(
                i % 3,
                format!("k{i}").as_bytes(),
                string(format!("v{i}").as_bytes(), None),
            )
            .expect("put");
    }
    let mut map = FieldMap::new();
    map.insert(b"f"[..].into(), b"1"[..].into());
    store
        .put(
            0,
            b"h",
            Record {
                value: Value::Hash(Box::new(map)),
                expire_at_ms: None,
                version: Version::default(),
                written_secs: 0,
            },
        )
        .expect("put hash");
    // Half the keys on disk.
    for i in (0..2000).step_by(2) {
        store
            .demote_key(i % 3, format!("k{i}").as_bytes())
            .expect("demote");
    }
    let file = dir.path().join("snap.bin");
    let info = store.snapshot_to(&file).expect("snapshot");
    assert_eq!(info.keys, 2001);

    // Changes after the snapshot are undone by restoring it.
    store.put(0, b"k0", string(b"changed", None)).expect("put");
    store.put(0, b"new", string(b"x", None)).expect("put");
    let other = open(&dir.path().join("b"), 16 << 20);
    other.put(5, b"gone", string(b"x", None)).expect("put");
    for s in [&store, &other] {
        let restored = s.restore_from(&file).expect("restore");
        assert_eq!(restored.keys, 2001);
        for i in 0..2000 {
            assert_eq!(
                get_str(s, i % 3, format!("k{i}").as_bytes()),
                Some(format!("v{i}").into_bytes())
            );
        }
        assert_eq!(get_str(s, 0, b"new"), None);
        assert_eq!(get_str(s, 5, b"gone"), None);
        assert_eq!(s.dbsize(0) + s.dbsize(1) + s.dbsize(2), 2001);
    }
}

#[test]
fn bad_snapshot_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a"), 16 << 20);
    for i in 0..100 {
        store
            .put(0, format!("k{i}").as_bytes(), string(b"v", None))
            .expect("put");
    }
    let file = dir.path().join("snap.bin");
    store.snapshot_to(&file).expect("snapshot");
    let good = std::fs::read(&file).expect("read");

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 7].to_vec()),
        ("bit flip", flipped),
        (
            "not a snapshot",
            b"hello world, this is not a snapshot".to_vec(),
        ),
        ("empty", Vec::new()),
    ];
    store.put(0, b"extra", string(b"stays", None)).expect("put");
    for (name, bytes) in cases {
        let bad = dir.path().join("bad.bin");
        std::fs::write(&bad, bytes).expect("write");
        let err = store.restore_from(&bad).expect_err(name);
        assert!(
            matches!(err, StorageError::BadSnapshot { .. }),
            "{name}: {err}"
        );
        assert_eq!(store.dbsize(0), 101, "{name} changed the store");
        assert_eq!(get_str(&store, 0, b"extra").as_deref(), Some(&b"stays"[..]));
    }
}

/// `backup_interval_secs` takes a snapshot file of the node on its own,
/// keeps the newest `backup_keep`, and `POST /restore` with no file
/// restores the newest.
#[test]
fn periodic_backups_keep_the_newest_and_restore_takes_the_newest() {
    use crate::alert_kit::wait_for;
    use redis::Commands;

    let node = crate::common::TestNode::start(|c| {
        c.backup_interval_secs = 1;
        c.backup_keep = 2;
    });
    let mut c = node.client();
    let () = c.set("kept", "before").expect("set");
    let dir = node.dir.path().join("backups");
    let snaps = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".snap"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let metric = |name: &str| -> u64 {
        let text = ureq::get(&node.http("/metrics"))
            .call()
            .expect("metrics")
            .into_body()
            .read_to_string()
            .expect("body");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|v| v.trim().parse::<f64>().unwrap_or(0.0))
            })
            .unwrap_or(0.0) as u64
    };
    wait_for(30, "4 periodic backups", || {
        (metric("strata_backups_total{outcome=\"ok\"} ") >= 4).then_some(())
    });
    let kept = snaps();
    assert!(
        (1..=2).contains(&kept.len()),
        "backup_keep = 2 keeps the newest two: {kept:?}"
    );
    assert!(metric("strata_last_backup_timestamp_seconds ") > 1_700_000_000);

    let () = c.set("kept", "after").expect("set");
    // Wait for a backup taken after the change, then change it again.
    let taken = metric("strata_backups_total{outcome=\"ok\"} ");
    wait_for(30, "a backup after the change", || {
        (metric("strata_backups_total{outcome=\"ok\"} ") >= taken + 2).then_some(())
    });
    let changed_at = std::time::SystemTime::now();
    let () = c.set("kept", "lost").expect("set");
    let r = ureq::post(&node.http("/restore"))
        .send_empty()
        .expect("restore");
    assert_eq!(r.status(), 200);
    let v: String = c.get("kept").expect("get");
    // The newest backup is the one restored: from before the last change
    // unless a periodic one was taken in between.
    let newest_at = std::fs::read_dir(&dir)
        .expect("backups")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .expect("a backup");
    if newest_at < changed_at {
        assert_eq!(v, "after", "the newest backup was restored");
    } else {
        println!("a periodic backup landed during the last change; restored {v:?}");
    }
}
