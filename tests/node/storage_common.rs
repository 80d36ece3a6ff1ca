//! Helpers shared by the storage scenario tests (included with `mod`).
#![allow(dead_code)]

use std::path::Path;

use strata::storage::{Record, StorageConfig, Store, Value, Version};

pub fn config(dir: &Path, maxmemory: u64) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        maxmemory,
        ..StorageConfig::default()
    }
}

pub fn open(dir: &Path, maxmemory: u64) -> Store {
    Store::open(config(dir, maxmemory)).expect("open store")
}

pub fn string(v: &[u8], expire_at_ms: Option<u64>) -> Record {
    Record {
        value: Value::Str(v.to_vec()),
        expire_at_ms,
        version: Version::default(),
        written_secs: 0,
    }
}

pub fn get_str(store: &Store, db: usize, key: &[u8]) -> Option<Vec<u8>> {
    store
        .read(db, key, Default::default(), |r| {
            r.map(|(rec, _)| match &rec.value {
                Value::Str(v) => v.clone(),
                other => panic!("expected a string, found {other:?}"),
            })
        })
        .expect("read")
}
