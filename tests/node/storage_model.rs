//! The engine against a plain map with expiry, under random operations
//! mixed with forced spills, offloads, checkpoints and reopenings.

use std::collections::BTreeMap;

use crate::storage_common::{config, get_str, string};
use proptest::prelude::*;
use strata::storage::{now_ms, FieldMap, Record, Store, Value, Version};

#[derive(Debug, Clone)]
enum Op {
    Set { key: u8, val: Vec<u8>, ttl: Ttl },
    HSet { key: u8, field: u8, val: u8 },
    Del { key: u8 },
    Get { key: u8 },
    Spill,
    SpillAll,
    Offload,
    Checkpoint,
    Reopen,
}

#[derive(Debug, Clone, Copy)]
enum Ttl {
    None,
    Past,
    Future,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..24;
    prop_oneof![
        6 => (key.clone(), proptest::collection::vec(any::<u8>(), 0..40), prop_oneof![Just(Ttl::None), Just(Ttl::Past), Just(Ttl::Future)])
            .prop_map(|(key, val, ttl)| Op::Set { key, val, ttl }),
        3 => (key.clone(), 0u8..4, any::<u8>()).prop_map(|(key, field, val)| Op::HSet { key, field, val }),
        2 => key.clone().prop_map(|key| Op::Del { key }),
        5 => key.prop_map(|key| Op::Get { key }),
        1 => Just(Op::Spill),
        1 => Just(Op::SpillAll),
        1 => Just(Op::Offload),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

/// A store that keeps even two-field hashes in pieces, so the model also
/// covers pieces replaced by strings, deleted, and laid out again.
fn open_chunked(dir: &std::path::Path) -> Store {
    let cfg = strata::storage::StorageConfig {
        chunk_min_elements: 2,
        ..config(dir, 8 << 20)
    };
    Store::open(cfg).expect("open store")
}

fn name(k: u8) -> Vec<u8> {
    format!("key:{k}").into_bytes()
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Some(open_chunked(dir.path()));
    // key -> value; expired keys are removed from the model at write time.
    let mut model: BTreeMap<u8, Value> = BTreeMap::new();
    let db = 3;
    for op in ops {
        let s: &Store = store.as_ref().expect("store open");
        match op {
            Op::Set { key, val, ttl } => {
                let expire = match ttl {
                    Ttl::None => None,
                    Ttl::Past => Some(now_ms() - 1),
                    Ttl::Future => Some(now_ms() + 3_600_000),
                };
                s.put(db, &name(key), string(&val, expire)).expect("put");
                match ttl {
                    Ttl::Past => model.remove(&key),
                    _ => model.insert(key, Value::Str(val)),
                };
            }
            Op::HSet { key, field, val } => {
                let wrong = s
                    .write(db, &name(key), |cur| match cur {
                        Some(Record {
                            value: Value::Hash(map),
                            ..
                        }) => {
                            map.insert(vec![field].into(), vec![val].into());
                            (false, true)
                        }
                        Some(_) => (true, false),
                        None => {
                            let mut map = FieldMap::new();
                            map.insert(vec![field].into(), vec![val].into());
                            *cur = Some(Record {
                                value: Value::Hash(Box::new(map)),
                                expire_at_ms: None,
                                version: Version::default(),
                                written_secs: 0,
                            });
                            (false, true)
                        }
                    })
                    .expect("hset")
                    .value;
                match model.get_mut(&key) {
                    Some(Value::Hash(map)) => {
                        map.insert(vec![field].into(), vec![val].into());
                    }
                    Some(_) => assert!(wrong, "engine missed a type mismatch"),
                    None => {
                        let mut map = FieldMap::new();
                        map.insert(vec![field].into(), vec![val].into());
                        model.insert(key, Value::Hash(Box::new(map)));
                    }
                }
            }
            Op::Del { key } => {
                let existed = s.delete(db, &name(key)).expect("del").value;
                assert_eq!(
                    existed,
                    model.remove(&key).is_some(),
                    "DEL result for {key}"
                );
            }
            Op::Get { key } => {
                let got = s
                    .read(db, &name(key), Default::default(), |r| {
                        r.map(|(rec, _)| rec.value.clone())
                    })
                    .expect("get");
                assert_eq!(got.as_ref(), model.get(&key), "GET {key}");
            }
            Op::Spill => {
                s.spill().expect("spill");
            }
            Op::SpillAll => {
                s.spill_all().expect("spill all");
            }
            Op::Offload => {
                s.offload();
            }
            Op::Checkpoint => s.checkpoint().expect("checkpoint"),
            Op::Reopen => {
                drop(store.take());
                store = Some(open_chunked(dir.path()));
            }
        }
        let s = store.as_ref().expect("store open");
        // Every key of the model, and nothing else, is visible.
        for k in 0u8..24 {
            let present = s
                .read(db, &name(k), strata::storage::ReadHint::Peek, |r| {
                    r.is_some()
                })
                .expect("peek");
            assert_eq!(present, model.contains_key(&k), "presence of {k}");
        }
    }
    let s = store.as_ref().expect("store open");
    // SCAN over both tiers returns exactly the model's keys.
    let mut cursor = 0;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let (next, items) = s.scan(db, cursor, 5, None, None).expect("scan");
        seen.extend(items.into_iter().map(|i| i.key));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let want: std::collections::BTreeSet<Vec<u8>> = model.keys().map(|&k| name(k)).collect();
    assert_eq!(seen, want);
    let _ = get_str;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
