//! A network partition between real `strata` processes, each alone in its
//! own network namespace. Every pair of nodes is joined by a veth pair;
//! the test process reaches each node over one more. Taking down the
//! links from a shard leader to its peers (but not to its clients)
//! isolates it: it must refuse writes, the majority must elect a leader
//! and serve, and after the links come back every acknowledged write is
//! readable on every node. Skips, saying why, where namespaces can't be
//! created.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procs::*;
use redis::Commands;

/// Namespaces and links made for one test run; removed on drop.
struct Net {
    tag: String,
    /// Second octet of every address this run uses (10.B.x.y).
    b: u32,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// `n` namespaces, fully meshed.
    fn create(n: usize) -> Result<Net, String> {
        let pid = std::process::id();
        let mut net = Net {
            tag: format!("{:x}", pid % 0xfff),
            b: 100 + pid % 100,
            namespaces: Vec::new(),
        };
        for i in 0..n {
            let ns = format!("strata-{}-{i}", net.tag);
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/32", net.host(i)),
                "dev",
                "lo",
            ])?;
            // The client link from this namespace (the test) to the node.
            let (outside, inside) = (format!("sc{}{i}", net.tag), format!("sc{}{i}n", net.tag));
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            let (o_addr, i_addr) = net.client_link(i);
            ip(&["addr", "add", &format!("{o_addr}/30"), "dev", &outside])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{i_addr}/30"),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&[
                "route",
                "add",
                &format!("{}/32", net.host(i)),
                "via",
                &i_addr,
            ])?;
        }
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (net.peer_dev(i, j), net.peer_dev(j, i));
                ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
                ip(&["link", "set", &a, "netns", &net.namespaces[i]])?;
                ip(&["link", "set", &b, "netns", &net.namespaces[j]])?;
                for (x, y) in [(i, j), (j, i)] {
                    let ns = &net.namespaces[x];
                    let dev = net.peer_dev(x, y);
                    ip(&[
                        "-n",
                        ns,
                        "addr",
                        "add",
                        &format!("{}/30", net.peer_addr(x, y)),
                        "dev",
                        &dev,
                    ])?;
                    ip(&["-n", ns, "link", "set", &dev, "up"])?;
                }
                net.route(i, j)?;
                net.route(j, i)?;
            }
        }
        Ok(net)
    }

    /// Node `i`'s address.
    fn host(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.b, i + 1)
    }

    /// The test's and node `i`'s ends of their link.
    fn client_link(&self, i: usize) -> (String, String) {
        (
            format!("10.{}.1.{}", self.b, 4 * i + 1),
            format!("10.{}.1.{}", self.b, 4 * i + 2),
        )
    }

    /// The device in `i`'s namespace that leads to `j`.
    fn peer_dev(&self, i: usize, j: usize) -> String {
        format!("sp{}{i}{j}", self.tag)
    }

    /// The address of `i`'s end of the link between `i` and `j`.
    fn peer_addr(&self, i: usize, j: usize) -> String {
        let k = (i.min(j) * 8 + i.max(j)) as u32;
        let end = if i < j { 1 } else { 2 };
        format!("10.{}.2.{}", self.b, 4 * k + end)
    }

    /// `i` reaches `j`'s address over their link.
    fn route(&self, i: usize, j: usize) -> Result<(), String> {
        ip(&[
            "-n",
            &self.namespaces[i],
            "route",
            "replace",
            &format!("{}/32", self.host(j)),
            "via",
            &self.peer_addr(j, i),
        ])
    }

    /// Takes down (or brings back) every link between `i` and its peers.
    fn isolate(&self, i: usize, cut: bool) -> Result<(), String> {
        for j in 0..self.namespaces.len() {
            if j == i {
                continue;
            }
            let state = if cut { "down" } else { "up" };
            ip(&[
                "-n",
                &self.namespaces[i],
                "link",
                "set",
                &self.peer_dev(i, j),
                state,
            ])?;
            if !cut {
                // A link taken down lost its routes.
                self.route(i, j)?;
                self.route(j, i)?;
            }
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and with them their
        // peers and routes outside it.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A key prefix (a hash tag) whose shard is led by node `leader`.
fn tag_led_by(nodes: &[Proc], leader: usize) -> String {
    for n in 0..10_000 {
        let tag = format!("{{part{n}}}");
        if leader_of(nodes, &tag) == leader {
            return tag;
        }
    }
    panic!("no shard led by node {leader}");
}

#[test]
fn isolated_leader_refuses_writes_and_the_majority_serves() {
    let net = match Net::create(3) {
        Ok(net) => net,
        Err(e) => {
            println!("SKIPPED: network namespaces are not available here ({e})");
            return;
        }
    };
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Proc> = (0..3)
        .map(|i| Proc::in_netns(root.path(), i, &net.namespaces[i], &net.host(i)))
        .collect();
    create_cluster(&mut nodes);

    let victim = leader_of(&nodes, "{part0}");
    let tag = tag_led_by(&nodes, victim);
    let other = (victim + 1) % 3;
    // Writers on both sides of the coming partition, to the same shard.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let minority_prefix: &'static str = Box::leak(format!("{tag}:minority").into_boxed_str());
    let majority_prefix: &'static str = Box::leak(format!("{tag}:majority").into_boxed_str());
    let w_min = writer(
        nodes[victim].addr(),
        minority_prefix,
        stop.clone(),
        acked.clone(),
    );
    let w_maj = writer(
        nodes[other].addr(),
        majority_prefix,
        stop.clone(),
        acked.clone(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let before = acked.lock().expect("acked").len();

    net.isolate(victim, true).expect("cut the leader's links");
    let cut_at = Instant::now();
    let mut c = nodes[other].client();
    let probe = format!("{tag}:probe");
    let served = loop {
        if c.set::<_, _, String>(&probe, "majority").is_ok() {
            break cut_at.elapsed();
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(30),
            "the majority elected no leader within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("partition: the majority took writes for the shard again after {served:?}");
    // The isolated node refuses writes: it can't reach a majority.
    std::thread::sleep(Duration::from_millis(2000));
    let mut isolated = nodes[victim].client();
    let refused_key = format!("{tag}:refused");
    let e = isolated
        .set::<_, _, ()>(&refused_key, "minority")
        .expect_err("the isolated node acknowledged a write");
    println!("partition: write on the isolated node refused: {e}");
    let code = e.code().unwrap_or_default().to_string();
    assert!(
        ["NOQUORUM", "CLUSTERDOWN", "TRYAGAIN"].contains(&code.as_str()),
        "unexpected error {e}"
    );
    let during = acked.lock().expect("acked").len();
    std::thread::sleep(Duration::from_millis(2000));

    net.isolate(victim, false).expect("heal the partition");
    let refs: Vec<&Proc> = nodes.iter().collect();
    let healed = wait_ok(&refs, "after healing");
    println!("partition healed: every node reports every shard led after {healed:?}");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let errors = w_min.join().expect("minority writer") + w_maj.join().expect("majority writer");
    let all = acked.lock().expect("acked").clone();
    println!(
        "{} writes acknowledged ({before} before the cut, {} during it), {errors} refused or failed",
        all.len(),
        during - before
    );
    assert!(all.len() > 100, "too few writes acknowledged");
    check_all(&nodes, &all);
    // A write refused before anything was proposed never appears.
    if code == "NOQUORUM" {
        let v: Option<String> = get_settled(&mut nodes[other].client(), &refused_key);
        assert_eq!(v, None, "a refused write was applied");
    }
    drop(nodes);
    drop(net);
}
