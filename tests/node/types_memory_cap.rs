//! Lists, sets, sorted sets and streams far beyond `maxmemory`: nothing is
//! evicted, everything reads back, and the memory tier's accounted bytes
//! stay under its cap.

use crate::common::TestNode;
use redis::cmd;

#[test]
fn collections_fill_far_beyond_the_cap() {
    let node = TestNode::start(|cfg| cfg.storage.maxmemory = 8 << 20);
    let mut c = node.client();
    let groups = 300;
    let per = 100;
    let item = |g: usize, i: usize| format!("{g:05}-{i:05}-{}", "x".repeat(48));
    let check_cap = |node: &TestNode| {
        let s = node.h().node.store.stats();
        assert!(
            s.used_bytes <= s.tier_cap_bytes,
            "memory tier over its cap: {} > {}",
            s.used_bytes,
            s.tier_cap_bytes
        );
    };
    for g in 0..groups {
        let mut p = redis::pipe();
        for i in 0..per {
            let v = item(g, i);
            p.cmd("RPUSH").arg(format!("l{g}")).arg(&v).ignore();
            p.cmd("SADD").arg(format!("s{g}")).arg(&v).ignore();
            p.cmd("ZADD").arg(format!("z{g}")).arg(i).arg(&v).ignore();
            p.cmd("XADD")
                .arg(format!("x{g}"))
                .arg(format!("{}-1", i + 1))
                .arg("v")
                .arg(&v)
                .ignore();
        }
        let () = p.query(&mut c).expect("fill");
        if g % 50 == 0 {
            check_cap(&node);
        }
    }
    check_cap(&node);
    let s = node.h().node.store.stats();
    assert!(s.entries_disk > 0, "nothing went to disk");
    // About 4 × 300 × 100 × 90 bytes of members were written: far more
    // than the 8 MiB cap.
    println!(
        "accounted {} of cap {}; {} keys in memory, {} on disk",
        s.used_bytes, s.tier_cap_bytes, s.entries_memory, s.entries_disk
    );
    for g in 0..groups {
        let want: Vec<String> = (0..per).map(|i| item(g, i)).collect();
        let list: Vec<String> = cmd("LRANGE")
            .arg(format!("l{g}"))
            .arg(0)
            .arg(-1)
            .query(&mut c)
            .unwrap();
        assert_eq!(list, want, "list l{g}");
        let mut set: Vec<String> = cmd("SMEMBERS").arg(format!("s{g}")).query(&mut c).unwrap();
        set.sort();
        assert_eq!(set, want, "set s{g}");
        let zset: Vec<String> = cmd("ZRANGE")
            .arg(format!("z{g}"))
            .arg(0)
            .arg(-1)
            .query(&mut c)
            .unwrap();
        assert_eq!(zset, want, "sorted set z{g}");
        let n: usize = cmd("XLEN").arg(format!("x{g}")).query(&mut c).unwrap();
        assert_eq!(n, per, "stream x{g}");
    }
    check_cap(&node);
}
