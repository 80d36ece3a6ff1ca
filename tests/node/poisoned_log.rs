//! An injected log write or fsync failure poisons the store: writes get a
//! clear error, and what was on disk is readable after a restart.

use crate::storage_common::{config, get_str, string};
use strata::storage::{AppendFsync, FailPoint, StorageError, Store};

fn poisons_on(point: FailPoint) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 16 << 20);
    cfg.appendfsync = AppendFsync::Always;
    {
        let store = Store::open(cfg.clone()).expect("open");
        for i in 0..100 {
            let w = store
                .put(0, format!("k{i}").as_bytes(), string(b"v", None))
                .expect("put");
            store.sync(w.lsn.expect("lsn")).expect("sync");
        }
        store.inject_failure(point);
        let w = store
            .put(0, b"doomed", string(b"x", None))
            .expect("append is in memory");
        let err = store.sync(w.lsn.expect("lsn")).expect_err("sync must fail");
        assert!(matches!(err, StorageError::Poisoned { .. }), "{err}");
        assert!(err.to_string().contains("read-only"), "{err}");
        // Every later write is refused, with the same clear error.
        let err = store
            .put(0, b"later", string(b"y", None))
            .expect_err("poisoned");
        assert!(matches!(err, StorageError::Poisoned { .. }));
        assert!(store.stats().poisoned.is_some());
        // Reads still work.
        assert_eq!(get_str(&store, 0, b"k5").as_deref(), Some(&b"v"[..]));
    }
    let store = Store::open(cfg).expect("reopen");
    for i in 0..100 {
        assert_eq!(
            get_str(&store, 0, format!("k{i}").as_bytes()).as_deref(),
            Some(&b"v"[..]),
            "k{i}"
        );
    }
    assert_eq!(get_str(&store, 0, b"later"), None);
    store
        .put(0, b"after", string(b"z", None))
        .expect("writes work after a restart");
}

#[test]
fn failed_log_write_poisons() {
    poisons_on(FailPoint::WalWrite);
}

#[test]
fn failed_fsync_poisons() {
    poisons_on(FailPoint::WalFsync);
}
