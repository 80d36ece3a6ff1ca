//! A kit for the operations tests: a webhook receiver (a real HTTP
//! listener on loopback that records each POST body and answers 500 to
//! the first `fail_first` requests, to exercise retries, 200 after), and
//! bounded polling.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `f` every 100 ms for up to `secs` until it returns Some.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Webhook {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhook {
    pub fn start(fail_first: usize) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bodies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut served = 0usize;
            while !s.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                conn.set_nonblocking(false).ok();
                conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut reader = BufReader::new(conn);
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length.min(1 << 20)];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                served += 1;
                let status = if served <= fail_first {
                    "500 Internal Server Error"
                } else {
                    b.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                    "200 OK"
                };
                let mut conn = reader.into_inner();
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Webhook {
            url,
            bodies,
            stop,
            thread: Some(thread),
        }
    }

    /// Alerts received (after the failed attempts) for `rule` with `status`.
    pub fn received(&self, rule: &str, status: &str) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["alert"]["rule"] == rule && b["alert"]["status"] == status)
            .cloned()
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
