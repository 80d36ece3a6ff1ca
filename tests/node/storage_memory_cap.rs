//! One million keys through a 64 MiB cap: every key reads back, and the
//! accounted memory never exceeds the cap.

use crate::storage_common::{get_str, open, string};
use strata::storage::Tier;

#[test]
fn million_keys_fit_through_64mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), 64 << 20);
    let n = 1_000_000u32;
    let value = |i: u32| {
        let mut v = format!("{i:010}").into_bytes();
        v.resize(100, b'x');
        v
    };
    let mut on_disk = 0u64;
    let mut peak = 0u64;
    let started = std::time::Instant::now();
    for i in 0..n {
        let w = store
            .put(0, format!("key:{i}").as_bytes(), string(&value(i), None))
            .expect("put");
        if w.stored == Some(Tier::Disk) {
            on_disk += 1;
        }
        if i % 10_000 == 0 {
            let s = store.stats();
            peak = peak.max(s.used_bytes);
            assert!(
                s.used_bytes <= s.tier_cap_bytes,
                "memory tier over its cap: {} > {}",
                s.used_bytes,
                s.tier_cap_bytes
            );
        }
    }
    let s = store.stats();
    assert!(s.used_bytes <= s.tier_cap_bytes);
    assert!(s.tier_cap_bytes < 64 << 20);
    assert_eq!(store.dbsize(0), u64::from(n));
    // 1M × ~240 charged bytes can't fit in 64 MiB: most keys must be on disk.
    assert!(
        s.entries_memory < u64::from(n) / 2,
        "{} entries in memory",
        s.entries_memory
    );
    println!(
        "peak accounted {peak} of cap {}; {} in memory, {} spilled, {on_disk} written straight to disk",
        s.tier_cap_bytes, s.entries_memory, s.spilled
    );
    println!("write phase {:?}", started.elapsed());
    for i in 0..n {
        let got = get_str(&store, 0, format!("key:{i}").as_bytes());
        assert_eq!(got.as_deref(), Some(&value(i)[..]), "key:{i}");
    }
    println!("read phase done {:?}", started.elapsed());
    assert!(store.stats().used_bytes <= store.stats().tier_cap_bytes);
}
