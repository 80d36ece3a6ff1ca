//! Node assembly: open the store, bind the RESP and HTTP listeners, serve
//! until told to stop, then drain and close.
//!
//! Shutdown is one [`CancellationToken`](tokio_util::sync::CancellationToken)
//! (`Node::shutdown`): listeners stop accepting, connections finish the
//! batch in hand and close, a [`TaskTracker`] waits for them (bounded), and
//! dropping the store takes a final checkpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::acl::Acl;
use crate::cluster::{Cluster, ClusterConfig, PeerNode};
use crate::commands::{Applier, Forwarder};
use crate::config::{Config, ConfigError};
use crate::frontend::{connection, http};
use crate::node::Node;
use crate::storage::{StorageError, Store};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store would not open.
    #[error("opening storage: {0}")]
    Storage(#[from] StorageError),
    /// A listener would not bind.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The ACL file could not be loaded.
    #[error("loading users: {0}")]
    Acl(String),
    /// The cluster layer would not start.
    #[error("starting the cluster layer: {0}")]
    Cluster(String),
    /// The runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Opens the store and binds both listeners.
pub async fn bind(cfg: Config) -> Result<(Arc<Node>, TcpListener, TcpListener), ServerError> {
    cfg.validate()?;
    let resp_at = format!("{}:{}", cfg.bind, cfg.port);
    let http_at = format!("{}:{}", cfg.bind, cfg.http_port);
    let resp = TcpListener::bind(&resp_at)
        .await
        .map_err(|source| ServerError::Bind {
            addr: resp_at,
            source,
        })?;
    let http = TcpListener::bind(&http_at)
        .await
        .map_err(|source| ServerError::Bind {
            addr: http_at,
            source,
        })?;
    let storage = cfg.storage.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(storage))
        .await
        .map_err(|e| ServerError::Runtime(std::io::Error::other(e)))??;
    let aclfile = cfg
        .aclfile
        .clone()
        .unwrap_or_else(|| cfg.storage.data_dir.join("users.acl"));
    let acl = Acl::open(
        crate::commands::acl_catalogue(),
        aclfile,
        cfg.requirepass.as_deref(),
    )
    .map_err(|e| ServerError::Acl(e.to_string()))?;
    let node = Arc::new(Node::new(store, cfg.clone(), acl));
    let weak = Arc::downgrade(&node);
    node.store.on_expired(Box::new(move |db, key| {
        if let Some(node) = weak.upgrade() {
            crate::commands::notify::expired(&node, db, key);
        }
    }));
    if let Ok(a) = resp.local_addr() {
        let _ = node.resp_addr.set(a);
    }
    if let Ok(a) = http.local_addr() {
        let _ = node.http_addr.set(a);
    }
    if let Some(cport) = cfg.cluster_port {
        join_cluster(&node, &cfg, cport).await?;
    }
    Ok((node, resp, http))
}

/// Starts the node's cluster layer on `cport`.
async fn join_cluster(node: &Arc<Node>, cfg: &Config, cport: u16) -> Result<(), ServerError> {
    let at = format!("{}:{cport}", cfg.bind);
    let listener = TcpListener::bind(&at)
        .await
        .map_err(|source| ServerError::Bind { addr: at, source })?;
    let addr = |a: Option<SocketAddr>| a.map_or_else(String::new, |a| a.to_string());
    let me = PeerNode {
        cluster: addr(listener.local_addr().ok()),
        resp: addr(node.resp_addr.get().copied()),
        http: addr(node.http_addr.get().copied()),
    };
    // Loopback-only clusters may run without a secret (config validation
    // refuses that anywhere else).
    let secret = cfg
        .cluster_secret
        .clone()
        .unwrap_or_else(|| "strata-loopback-cluster".into());
    let cluster = Cluster::start(
        ClusterConfig {
            data_dir: cfg.storage.data_dir.clone(),
            me,
            secret: Arc::from(secret.as_bytes()),
            appendfsync: cfg.storage.appendfsync,
            snapshot_every: cfg.raft_snapshot_every,
            node_down_after: (cfg.node_down_after > 0)
                .then(|| std::time::Duration::from_secs(cfg.node_down_after)),
            read_cache_entries: if cfg.local_cache_hotkeys && cfg.hotkey_threshold_per_min > 0 {
                cfg.local_cache_entries
            } else {
                0
            },
        },
        node.store.clone(),
        Arc::new(Applier(Arc::downgrade(node))),
        listener,
        node.shutdown.clone(),
    )
    .await
    .map_err(ServerError::Cluster)?;
    cluster.set_forwarded(Arc::new(Forwarder(Arc::downgrade(node))));
    tracing::info!(node_id = format!("{:016x}", cluster.id), cluster = %cluster.me.cluster, "cluster mode");
    let _ = node.cluster.set(cluster);
    Ok(())
}

/// Serves until `node.shutdown` is cancelled, then drains connections.
///
/// RESP connections run thread-per-core: one acceptor hands each new
/// connection to the next I/O thread, and each I/O thread runs its own
/// single-threaded runtime, so a connection never migrates. Measured against
/// one work-stealing runtime, this removes the cross-thread wake-ups that
/// dominated the profile of pipelined traffic.
pub async fn serve(node: Arc<Node>, resp: TcpListener, http_listener: TcpListener) {
    let threads = match node.cfg.read().io_threads {
        // Half the cores: the rest run the log, the spiller, the LSM's
        // flushes and compactions, and HTTP.
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    };
    let mut io = Vec::with_capacity(threads);
    let mut inboxes = Vec::with_capacity(threads);
    for i in 0..threads {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = node.clone();
        match std::thread::Builder::new()
            .name(format!("strata-io-{i}"))
            .stack_size(crate::scripting::STACK_BYTES)
            .spawn(move || io_thread(worker, rx))
        {
            Ok(t) => {
                io.push(t);
                inboxes.push(tx);
            }
            Err(e) => tracing::error!(error = %e, "starting an I/O thread failed"),
        }
    }
    let acceptor = tokio::spawn(connection::accept_loop(node.clone(), resp, inboxes));
    // Hot-key counts are per minute.
    let minutes = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => node.hotkeys.rotate(),
                    () = node.shutdown.cancelled() => break,
                }
            }
        })
    };
    // Aggregation workers for the partitions this node leads.
    let pipeline = tokio::spawn(crate::pipeline::supervise(node.clone()));
    // Health, alerts, dashboard samples and the worker autoscaler.
    let monitor = tokio::spawn(crate::ops::run(node.clone()));
    // Periodic backups (`backup_interval_secs`), when set.
    tokio::spawn(crate::ops::backup::periodic(node.clone()));
    let app = http::router(node.clone());
    let stop = node.shutdown.clone();
    let http_task = tokio::spawn(async move {
        let server = axum::serve(http_listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    node.shutdown.cancelled().await;
    node.scripts.stop();
    let _ = acceptor.await;
    let _ = minutes.await;
    let _ = pipeline.await;
    let _ = monitor.await;
    if let Some(cluster) = node.cluster.get() {
        cluster.shutdown().await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        for t in io {
            let _ = t.join();
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
}

fn io_thread(node: Arc<Node>, inbox: tokio::sync::mpsc::UnboundedReceiver<connection::Handoff>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting an I/O runtime failed");
            node.shutdown.cancel();
            return;
        }
    };
    rt.block_on(async move {
        let tracker = TaskTracker::new();
        connection::worker_loop(node, inbox, tracker.clone()).await;
        tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within 5 s");
        }
    });
}

/// A node running on its own runtime thread (for tests and the local
/// cluster tool). Stopping it (or dropping the handle) shuts it down
/// gracefully and waits until the store is closed.
pub struct ServerHandle {
    /// The node's shared state.
    pub node: Arc<Node>,
    /// RESP address.
    pub resp_addr: SocketAddr,
    /// HTTP address.
    pub http_addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Starts a node in the background and returns once it listens.
    pub fn start(cfg: Config) -> Result<ServerHandle, ServerError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-rt")
            .thread_stack_size(crate::scripting::STACK_BYTES)
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let (node, resp, http) = rt.block_on(bind(cfg))?;
        let (resp_addr, http_addr) = (
            resp.local_addr().map_err(ServerError::Runtime)?,
            http.local_addr().map_err(ServerError::Runtime)?,
        );
        let n = node.clone();
        let thread = std::thread::Builder::new()
            .name("strata-node".into())
            .spawn(move || {
                rt.block_on(serve(n, resp, http));
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(ServerError::Runtime)?;
        Ok(ServerHandle {
            node,
            resp_addr,
            http_addr,
            thread: Some(thread),
        })
    }

    /// Shuts the node down and waits for it.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.node.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}
