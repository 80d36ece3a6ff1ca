//! Apply batches are atomic with their mark: a child process applies
//! numbered batches (each bumps a counter and adds a key) without syncing,
//! with checkpoints running, and is killed with SIGKILL. After reopening,
//! the store holds exactly the batches up to its mark, none half done and
//! none twice, so a replication layer can resume right after the mark.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::storage_common::{config, get_str, string};
use strata::storage::{Record, Store, Value};

const CHILD_ENV: &str = "STRATA_BATCH_CHILD_DIR";
const GROUP: u32 = 7;
const WINDOW: u64 = 5000;

fn apply(store: &Store, i: u64) {
    store.apply_batch(GROUP, &i.to_le_bytes(), || {
        store
            .write(0, b"counter", |cur| {
                let n = match cur {
                    Some(Record {
                        value: Value::Str(v),
                        ..
                    }) => String::from_utf8_lossy(v).parse::<u64>().unwrap_or(0),
                    _ => 0,
                };
                *cur = Some(string((n + 1).to_string().as_bytes(), None));
                ((), true)
            })
            .expect("bump");
        store
            .put(
                0,
                format!("k{i}").as_bytes(),
                string(format!("v{i}").as_bytes(), None),
            )
            .expect("put");
        // Keep a window of the newest keys: most deletions hit disk copies.
        if let Some(old) = i.checked_sub(WINDOW) {
            store
                .delete(0, format!("k{old}").as_bytes())
                .expect("delete");
        }
    });
}

fn mark_of(store: &Store) -> Option<u64> {
    store
        .mark(GROUP)
        .map(|m| u64::from_le_bytes(m.try_into().expect("8-byte mark")))
}

/// The child: applies batches forever, resuming after the stored mark.
#[test]
fn child_applier() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut cfg = config(std::path::Path::new(&dir), 8 << 20);
    cfg.checkpoint_interval_secs = 1;
    let store = Store::open(cfg).expect("open");
    store.set_replicated(true);
    let start = mark_of(&store).map_or(0, |m| m + 1);
    for i in start.. {
        apply(&store, i);
        if i % 5000 == 0 {
            println!("APPLIED {i}");
        }
    }
}

#[test]
fn batches_survive_sigkill_whole_or_not_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut last_mark = None;
    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "recover_apply_batches::child_applier",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        // Long enough for checkpoints (every second) to run meanwhile.
        let target = 300_000 * (round + 1);
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read child");
            if let Some(n) = line.strip_prefix("APPLIED ") {
                seen = n.parse::<u64>().expect("number");
                if seen >= target {
                    break;
                }
            }
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(seen >= target, "child applied only {seen}");

        let store = Store::open(config(dir.path(), 8 << 20)).expect("reopen");
        let mark = mark_of(&store);
        println!("round {round}: child reached {seen}, store recovered up to batch {mark:?}");
        assert!(
            mark >= last_mark,
            "the mark went back from {last_mark:?} to {mark:?}"
        );
        let Some(mark) = mark else {
            assert_eq!(store.dbsize(0), 0, "writes recovered without their mark");
            continue;
        };
        // Every batch up to the mark, exactly once; nothing after it.
        let counter = get_str(&store, 0, b"counter").expect("counter");
        assert_eq!(String::from_utf8_lossy(&counter), (mark + 1).to_string());
        let first_kept = (mark + 1).saturating_sub(WINDOW);
        for i in (first_kept..=mark).step_by(7).chain([mark]) {
            assert_eq!(
                get_str(&store, 0, format!("k{i}").as_bytes()),
                Some(format!("v{i}").into_bytes()),
                "batch {i} lost"
            );
        }
        for i in (0..first_kept)
            .step_by(101)
            .chain(first_kept.checked_sub(1))
        {
            assert_eq!(
                get_str(&store, 0, format!("k{i}").as_bytes()),
                None,
                "k{i} was deleted by batch {}",
                i + WINDOW
            );
        }
        assert_eq!(
            get_str(&store, 0, format!("k{}", mark + 1).as_bytes()),
            None
        );
        assert_eq!(store.dbsize(0), (mark + 1).min(WINDOW) + 1);
        last_mark = Some(mark);
    }
    assert!(last_mark.is_some(), "no batch was ever recovered");
}
