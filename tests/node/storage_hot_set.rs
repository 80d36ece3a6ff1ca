//! The read-hot set lives in memory: after the tier filled with recent
//! writes, keys that are read again and again come back from disk and
//! displace entries nobody reads, and the offloader leaves them alone.

use crate::storage_common;

use crate::storage_common::{config, get_str};
use rand::seq::SliceRandom;
use strata::storage::{Store, Tier};

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("{i:010}").into_bytes();
    v.resize(100, b'v');
    v
}

#[test]
fn read_hot_keys_return_to_memory_and_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), 64 << 20);
    cfg.offload_force_min_age_secs = 1;
    let store = Store::open(cfg).expect("open");

    // About 2.5x the memory tier: the first-written keys are all on disk,
    // and the tier is full of the newest writes.
    let n = 600_000u32;
    for i in 0..n {
        store
            .put(
                0,
                format!("key:{i}").as_bytes(),
                storage_common::string(&value(i), None),
            )
            .expect("put");
    }
    store.spill().expect("spill");
    // A hot set of the oldest keys, larger than the headroom between the
    // spill's low watermark and its threshold, so promotion must displace.
    let mut hot: Vec<u32> = (0..30_000).collect();
    let in_memory = |store: &Store, keys: &[u32]| {
        keys.iter()
            .filter(|&&i| {
                let p = store
                    .placement(0, format!("key:{i}").as_bytes())
                    .expect("placement");
                p.map(|p| p.tier) == Some(Tier::Memory)
            })
            .count()
    };
    let start_in = in_memory(&store, &hot);
    println!(
        "before reading: {start_in} of {} hot keys in memory",
        hot.len()
    );
    assert!(
        start_in < hot.len() / 2,
        "the hot set should start mostly on disk"
    );

    let mut rng = rand::rng();
    let mut read_round = |store: &Store| {
        hot.shuffle(&mut rng);
        for &i in &hot {
            let got = get_str(store, 0, format!("key:{i}").as_bytes());
            assert_eq!(got.as_deref(), Some(&value(i)[..]), "key:{i}");
        }
    };
    // Warm up: two reads bring a key in.
    for _ in 0..3 {
        read_round(&store);
    }
    let before = store.stats();
    for _ in 0..10 {
        read_round(&store);
    }
    let after = store.stats();
    let mem = after.hits_memory - before.hits_memory;
    let disk = after.hits_disk - before.hits_disk;
    let ratio = mem as f64 / (mem + disk) as f64;
    println!(
        "hot-set reads once warm: {mem} from memory, {disk} from disk ({:.2}% memory); promotions {}",
        ratio * 100.0,
        after.promotions
    );
    assert!(
        ratio >= 0.95,
        "only {:.2}% of hot-set reads came from memory",
        ratio * 100.0
    );
    assert!(after.used_bytes <= after.tier_cap_bytes);

    // The aggressive offloader (memory above its force ratio) moves keys
    // not written for a second, but not ones read just now.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    read_round(&store);
    let report = store.offload();
    assert!(
        report.force_by_mem,
        "memory should be above the force ratio: {report:?}"
    );
    assert!(report.moved > 0, "the offloader moved nothing: {report:?}");
    let still_in = in_memory(&store, &hot);
    println!(
        "after an offload run that moved {}: {still_in} of {} hot keys in memory",
        report.moved,
        hot.len()
    );
    assert!(
        still_in as f64 >= hot.len() as f64 * 0.95,
        "the offloader pushed read-hot keys out: {still_in} of {} left",
        hot.len()
    );
    // Every key is still readable.
    for i in (0..n).step_by(997) {
        assert_eq!(
            get_str(&store, 0, format!("key:{i}").as_bytes()).as_deref(),
            Some(&value(i)[..])
        );
    }
}
