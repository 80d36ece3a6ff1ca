//! The `strata` binary: a node server and its operator tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata::config::{parse_size, Config};
use strata::storage::AppendFsync;

/// strata: a tiered key-value store that speaks the Redis protocol and HTTP.
/// Hot data stays in memory; colder data moves to disk instead of being lost.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default when no subcommand is given).
    Server(ServerArgs),
    /// Load a Redis-protocol server (strata or Redis) or strata's HTTP API and
    /// report throughput and latency percentiles.
    Bench(strata::tools::bench::BenchArgs),
    /// Send the seed's ingest events (or metric events) at a steady rate with
    /// hot and cold keys, retrying failures with backoff.
    Generate(strata::tools::generate::GenerateArgs),
    /// Form a cluster from running nodes, or run a local one.
    #[command(subcommand)]
    Cluster(strata::tools::cluster::ClusterCommand),
}

#[derive(Args, Default)]
struct ServerArgs {
    /// TOML config file; environment variables and flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1).
    #[arg(long)]
    bind: Option<String>,
    /// RESP port (default 6379; 0 picks a free port).
    #[arg(long)]
    port: Option<u16>,
    /// HTTP port (default 8080; 0 picks a free port).
    #[arg(long)]
    http_port: Option<u16>,
    /// Data directory (default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Memory cap, e.g. 64mb or 2gb (default 1gb). Data beyond it moves to disk.
    #[arg(long, value_parser = parse_size_arg)]
    maxmemory: Option<u64>,
    /// Log fsync policy: always, everysec (default) or no.
    #[arg(long, value_parser = parse_fsync_arg)]
    appendfsync: Option<AppendFsync>,
    /// Password clients must send with AUTH.
    #[arg(long)]
    requirepass: Option<String>,
    /// Key for admin HTTP endpoints (X-API-Key header or ?apiKey=).
    #[arg(long)]
    api_key: Option<String>,
    /// Threads serving RESP connections (default: half the cores, at least one).
    #[arg(long)]
    io_threads: Option<usize>,
    /// Node-to-node port: starts the node in cluster mode (then form the
    /// cluster with `strata cluster create`).
    #[arg(long)]
    cluster_port: Option<u16>,
    /// Secret shared by the cluster's nodes (or STRATA_CLUSTER_SECRET).
    #[arg(long)]
    cluster_secret: Option<String>,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("{s:?} is not a size like 64mb, 512kb or 2gb"))
}

fn parse_fsync_arg(s: &str) -> Result<AppendFsync, String> {
    AppendFsync::parse(s).ok_or_else(|| format!("{s:?} is not always, everysec or no"))
}

fn load_config(a: &ServerArgs) -> anyhow::Result<Config> {
    let mut cfg = match &a.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(v) = &a.bind {
        cfg.bind = v.clone();
    }
    if let Some(v) = a.port {
        cfg.port = v;
    }
    if let Some(v) = a.http_port {
        cfg.http_port = v;
    }
    if let Some(v) = &a.data_dir {
        cfg.storage.data_dir = v.clone();
    }
    if let Some(v) = a.maxmemory {
        cfg.storage.maxmemory = v;
    }
    if let Some(v) = a.appendfsync {
        cfg.storage.appendfsync = v;
    }
    if let Some(v) = &a.requirepass {
        cfg.requirepass = Some(v.clone());
    }
    if let Some(v) = &a.api_key {
        cfg.api_key = Some(v.clone());
    }
    if let Some(v) = a.io_threads {
        cfg.io_threads = v;
    }
    if let Some(v) = a.cluster_port {
        cfg.cluster_port = Some(v);
    }
    if let Some(v) = &a.cluster_secret {
        cfg.cluster_secret = Some(v.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

fn run_server(a: &ServerArgs) -> anyhow::Result<()> {
    let cfg = load_config(a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-rt")
        .thread_stack_size(strata::scripting::STACK_BYTES)
        .build()?;
    rt.block_on(async move {
        let (node, resp, http) = strata::server::bind(cfg.clone()).await?;
        let (r, h) = (node.resp_addr.get().copied(), node.http_addr.get().copied());
        tracing::info!(resp = ?r, http = ?h, data_dir = %cfg.storage.data_dir.display(), maxmemory = cfg.storage.maxmemory, "strata is ready");
        println!(
            "strata {} ready: RESP on {} (redis-cli -p {}), HTTP on http://{}, data in {}",
            env!("CARGO_PKG_VERSION"),
            r.map_or_else(String::new, |a| a.to_string()),
            r.map_or(0, |a| a.port()),
            h.map_or_else(String::new, |a| a.to_string()),
            cfg.storage.data_dir.display()
        );
        let stop = node.shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: draining connections and checkpointing");
            stop.cancel();
        });
        strata::server::serve(node.clone(), resp, http).await;
        drop(node);
        anyhow::Ok(())
    })?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread, as redis-benchmark uses: the tool must not be the bottleneck
    // nor steal the server's cores on a small machine.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run_bench(a: strata::tools::bench::BenchArgs) -> anyhow::Result<()> {
    a.validate().map_err(anyhow::Error::msg)?;
    let report = client_runtime()?
        .block_on(strata::tools::bench::run(a.clone()))
        .map_err(anyhow::Error::msg)?;
    println!("{}", strata::tools::bench::render(&a, &report));
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn run_generate(a: strata::tools::generate::GenerateArgs) -> anyhow::Result<()> {
    a.validate().map_err(anyhow::Error::msg)?;
    let json = a.json;
    let r = client_runtime()?
        .block_on(strata::tools::generate::run(a))
        .map_err(anyhow::Error::msg)?;
    if r.batches > 0 {
        println!(
            "generate: events sent={} accepted={} rejected={} (late on purpose {}) failed={} in {} requests, {} retried, {:.1} s, {:.0} accepted/s",
            r.sent, r.ok, r.rejected, r.late, r.failed, r.batches, r.retried, r.seconds,
            r.ok as f64 / r.seconds.max(1e-9)
        );
    } else {
        println!(
            "generate: sent={} ok={} failed={} retried={} hot={} in {:.1} s",
            r.sent, r.ok, r.failed, r.retried, r.hot, r.seconds
        );
    }
    if json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// mimalloc reads its options once, when it starts, which is before `main`.
/// Two of its defaults cost a long-running server resident memory: it
/// commits its arena eagerly (an idle node held 31 MiB instead of 15 MiB),
/// and it returns freed pages to the system only after a second (a write
/// flood into a 64 MiB cap peaked at 146 MiB of RSS, 98.5 MiB without the
/// two). A server started without these options in its environment sets
/// them and replaces itself with the same command line, once; options the
/// operator set are kept.
fn tune_allocator() {
    use std::os::unix::process::CommandExt;
    const OPTIONS: [(&str, &str); 2] = [
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        ("MIMALLOC_PURGE_DELAY", "10"),
    ];
    if OPTIONS.iter().all(|(k, _)| std::env::var_os(k).is_some()) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    cmd.args(args);
    for (k, v) in OPTIONS {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    // Returns only if the replacement failed; the server then runs as is.
    let err = cmd.exec();
    eprintln!("strata: running with the allocator's default options ({err})");
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, None | Some(Command::Server(_))) {
        tune_allocator();
    }
    let result = match cli.command {
        None => run_server(&ServerArgs::default()),
        Some(Command::Server(a)) => run_server(&a),
        Some(Command::Bench(a)) => run_bench(a),
        Some(Command::Generate(a)) => run_generate(a),
        Some(Command::Cluster(c)) => strata::tools::cluster::run(&c).map_err(anyhow::Error::msg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            ExitCode::FAILURE
        }
    }
}
