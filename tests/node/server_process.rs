//! The real `strata` binary: graceful restart keeps data, and bad
//! configuration is refused with the field's name.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::cmd;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn spawn(dir: &std::path::Path, port: u16, http: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "server",
            "--port",
            &port.to_string(),
            "--http-port",
            &http.to_string(),
            "--maxmemory",
            "64mb",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strata")
}

pub fn connect(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    for _ in 0..200 {
        if let Ok(c) = client.get_connection() {
            return c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("strata did not start listening on {port}");
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("strata did not exit within 10 s of SIGTERM");
}

#[test]
fn data_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let mut child = spawn(dir.path(), port, http);
    let mut c = connect(port);
    for i in 0..2000 {
        let _: () = cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query(&mut c)
            .unwrap();
    }
    let _: () = cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let _: () = cmd("SELECT").arg(2).query(&mut c).unwrap();
    let _: () = cmd("SET").arg("in-db2").arg("yes").query(&mut c).unwrap();
    let status = sigterm(&mut child);
    assert!(status.success(), "exit status {status}");

    let (port, http) = (free_port(), free_port());
    let mut child = spawn(dir.path(), port, http);
    let mut c = connect(port);
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 2001);
    for i in (0..2000).step_by(97) {
        assert_eq!(
            cmd("GET")
                .arg(format!("k{i}"))
                .query::<String>(&mut c)
                .unwrap(),
            format!("v{i}")
        );
    }
    assert_eq!(
        cmd("HGET")
            .arg("h")
            .arg("f")
            .query::<String>(&mut c)
            .unwrap(),
        "1"
    );
    let _: () = cmd("SELECT").arg(2).query(&mut c).unwrap();
    assert_eq!(
        cmd("GET").arg("in-db2").query::<String>(&mut c).unwrap(),
        "yes"
    );
    assert!(sigterm(&mut child).success());
}

fn run_err(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_config_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_err(&["server", "--maxmemory", "lots"], &[]);
    assert!(err.contains("--maxmemory") && err.contains("lots"), "{err}");
    let err = run_err(&["server", "--appendfsync", "sometimes"], &[]);
    assert!(err.contains("sometimes"), "{err}");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "port = 7000\nmaxmemroy = 5\n").unwrap();
    let err = run_err(&["server", "--config", file.to_str().unwrap()], &[]);
    assert!(err.contains("maxmemroy"), "{err}");
    // A config file on free ports: the error it is refused with.
    let refused = |toml: &str| {
        std::fs::write(&file, toml).unwrap();
        let path = file.to_str().unwrap();
        run_err(
            &[
                "server",
                "--config",
                path,
                "--port",
                "0",
                "--http-port",
                "0",
            ],
            &[],
        )
    };
    for (toml, field) in [
        (
            "[storage]\noverflow_ratio = 1.5\n",
            "storage.overflow_ratio",
        ),
        (
            "[alerts.hgh_memory]\nthreshold = 0.9\n",
            "alerts.hgh_memory",
        ),
        (
            "[alerts.high_load]\nseverity = \"urgent\"\n",
            "alerts.high_load.severity",
        ),
        (
            "[alerts.system_memory_low]\nthreshold = 2\n",
            "alerts.system_memory_low.threshold",
        ),
        (
            "alert_webhook_url = \"https://hooks.example/x\"\n",
            "alert_webhook_url",
        ),
        (
            "[monitoring]\ninterval_secs = 0\n",
            "monitoring.interval_secs",
        ),
        (
            "[streams.scaling]\nmin_workers = 9\nmax_workers = 2\n",
            "streams.scaling.min_workers",
        ),
    ] {
        let err = refused(toml);
        assert!(err.contains(field), "{toml}: {err}");
    }
    let err = run_err(
        &["server", "--port", "0", "--http-port", "0"],
        &[("OFFLOAD_AFTER_SECONDS", "soon")],
    );
    assert!(err.contains("OFFLOAD_AFTER_SECONDS"), "{err}");
    let err = run_err(
        &[
            "server",
            "--port",
            "0",
            "--http-port",
            "0",
            "--bind",
            "not-an-ip",
        ],
        &[],
    );
    assert!(err.contains("bind"), "{err}");
}
