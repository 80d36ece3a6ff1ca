//! Starting real nodes on loopback for black-box tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use strata::config::Config;
use strata::server::ServerHandle;

/// A node on free ports with its own data directory.
pub struct TestNode {
    pub handle: Option<ServerHandle>,
    pub dir: tempfile::TempDir,
    cfg: Config,
}

impl TestNode {
    pub fn start(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config {
            port: 0,
            http_port: 0,
            ..Config::default()
        };
        cfg.storage.data_dir = dir.path().to_path_buf();
        cfg.storage.maxmemory = 64 << 20;
        tweak(&mut cfg);
        let handle = ServerHandle::start(cfg.clone()).expect("start node");
        TestNode {
            handle: Some(handle),
            dir,
            cfg,
        }
    }

    /// Stops the node cleanly and starts it again on the same data (and
    /// new ports).
    pub fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
        self.handle = Some(ServerHandle::start(self.cfg.clone()).expect("restart node"));
    }

    pub fn h(&self) -> &ServerHandle {
        self.handle.as_ref().expect("node running")
    }

    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.h().resp_addr)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.redis_url())
            .expect("client")
            .get_connection()
            .expect("connect")
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.h().http_addr, path)
    }

    /// A raw TCP connection to the RESP port.
    pub fn raw(&self) -> Raw {
        let s = TcpStream::connect(self.h().resp_addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Raw(s)
    }
}

/// A raw RESP connection.
pub struct Raw(pub TcpStream);

impl Raw {
    pub fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).expect("write");
    }

    /// Reads until `n` bytes or the peer closes; returns what arrived.
    pub fn read_some(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 64 * 1024];
        match self.0.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// Reads until the reply ends with `suffix` (bounded by the timeout).
    pub fn read_until(&mut self, suffix: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..100 {
            let chunk = self.read_some();
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
            if out.ends_with(suffix) {
                break;
            }
        }
        out
    }

    /// Sends and reads one reply line-ish chunk.
    pub fn roundtrip(&mut self, bytes: &[u8]) -> String {
        self.send(bytes);
        String::from_utf8_lossy(&self.read_until(b"\r\n")).into_owned()
    }

    /// Whether the server closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0))
    }
}

/// Runs a command; panics with the command on an error reply.
pub fn q(c: &mut redis::Connection, args: &[&str]) -> redis::Value {
    let mut command = redis::cmd(args[0]);
    for a in &args[1..] {
        command.arg(*a);
    }
    match command.query(c) {
        Ok(v) => v,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

/// Runs a command that must fail; returns its error text.
pub fn qe(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut command = redis::cmd(args[0]);
    for a in &args[1..] {
        command.arg(*a);
    }
    let e = command
        .query::<redis::Value>(c)
        .expect_err(&format!("{args:?} should fail"));
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}
