//! Starting a server: bind the listener, take the data dir's lock, open (and on first start
//! bootstrap) the metadata, open the store. Serving stops gracefully with a flush.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use fs2::FileExt;
use lethe_meta::{MetaPlace, MetaStore, NewProject, NodeRole};
use lethe_store::{AckDeadline, DataDir, SegmentPlace, Store, WalPlace};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::cluster::{await_lease, keep_lease, Node};
use crate::rates::EventRates;
use crate::webhooks::Dispatcher;
use crate::{router, App, ServerConfig};
use lethe_delete::{QueueSignal, Worker};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another lethe server is already using the data dir {0} (it holds {0}/lethe.lock); stop it first or choose another --data-dir")]
    Locked(PathBuf),
    #[error("cannot use the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--cluster needs shared state: --segments s3://… and --meta postgres://…")]
    ClusterNeedsSharedState,
    #[error(transparent)]
    Meta(#[from] lethe_meta::MetaError),
    #[error(transparent)]
    Store(#[from] lethe_store::StoreError),
}

/// A started server, bound and ready to serve.
pub struct Running {
    /// The address actually bound (port 0 resolves here).
    pub addr: SocketAddr,
    /// Secrets created by a first start, to show once.
    pub first_start: Option<NewProject>,
    mode: Mode,
    listener: tokio::net::TcpListener,
    _lock: File,
}

/// How a started server serves.
enum Mode {
    /// The only node: its store is open.
    Single(App),
    /// A cluster's node: it opens the store once it is the writer.
    Cluster {
        node: Arc<Node>,
        /// The connection that renews the writer's lease.
        keeper: Arc<MetaStore>,
        parts: Box<Parts>,
    },
}

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Opens everything and binds the listener. A cluster node opens the store only once it
/// becomes the writer (`Running::serve`).
pub async fn start(config: ServerConfig) -> Result<Running, StartError> {
    // The recorder first: what opening the store records (replay, quarantined segments)
    // must reach /metrics.
    let metrics = metrics_handle();
    let dir = DataDir::new(&config.data_dir);
    let io_err = |source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    // Bind first: a start that cannot listen must create nothing, or a first start on a busy
    // port would make the organization and never show its keys.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    dir.create().map_err(io_err)?;
    let lock = File::create(dir.lock_file()).map_err(io_err)?;
    lock.try_lock_exclusive()
        .map_err(|_| StartError::Locked(config.data_dir.clone()))?;
    if config.cluster.is_some()
        && (!matches!(config.meta, MetaPlace::Postgres(_))
            || config.store.segments == SegmentPlace::DataDir)
    {
        return Err(StartError::ClusterNeedsSharedState);
    }
    let meta = Arc::new(MetaStore::open_at(&config.meta, &dir.meta_db())?);
    meta.claim_node(match config.cluster {
        Some(_) => NodeRole::ClusterMember,
        None => NodeRole::Sole,
    })?;
    let first_start = meta.bootstrap(&config.admin_email, config.admin_password.as_deref())?;
    // The receipt-signing key exists from the first start on.
    meta.deployment_keys()?;
    let addr = listener.local_addr().map_err(io_err)?;
    let node_id = match config.cluster {
        Some(_) => Some(node_id(&dir).map_err(io_err)?),
        None => None,
    };
    let cluster_secret = match config.cluster {
        Some(_) => Some(meta.cluster_secret(&uuid::Uuid::new_v4().simple().to_string())?),
        None => None,
    };
    let parts = Parts {
        config,
        dir,
        meta,
        metrics,
        cluster_secret,
    };
    let mode = match (
        parts.config.cluster.clone(),
        parts.cluster_secret.clone(),
        node_id,
    ) {
        (Some(cluster), Some(secret), Some(id)) => {
            let node = Node::new(
                id,
                cluster,
                addr,
                secret,
                parts.meta.clone(),
                parts.config.trusted_proxy,
            )
            .map_err(|source| StartError::DataDir {
                path: parts.config.data_dir.clone(),
                source,
            })?;
            // Renewals on a connection of their own, never queued behind a long statement.
            let keeper = MetaStore::open_at(&parts.config.meta, &parts.dir.meta_db())?;
            Mode::Cluster {
                node: Arc::new(node),
                keeper: Arc::new(keeper),
                parts: Box::new(parts),
            }
        }
        _ => Mode::Single(parts.open(None).await?),
    };
    Ok(Running {
        addr,
        first_start,
        mode,
        listener,
        _lock: lock,
    })
}

/// This node's id in a cluster: made at its data dir's first start, kept there.
fn node_id(dir: &DataDir) -> std::io::Result<String> {
    let path = dir.root().join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) => Ok(id.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

/// What opening the store takes.
struct Parts {
    config: ServerConfig,
    dir: DataDir,
    meta: Arc<MetaStore>,
    metrics: PrometheusHandle,
    /// A cluster's shared secret (`None` on a single node).
    cluster_secret: Option<String>,
}

impl Parts {
    /// Opens the store (replaying the WAL) and makes the handlers' state; a cluster's
    /// writer acknowledges writes only until `ack_deadline`.
    async fn open(&self, ack_deadline: Option<AckDeadline>) -> Result<App, StartError> {
        let mut store_config = self.config.store.clone();
        if self.cluster_secret.is_some() {
            // The next writer must find every acknowledged batch: the WAL is in the bucket.
            store_config.wal = WalPlace::Segments;
            store_config.ack_deadline = ack_deadline;
        }
        let store = {
            let (dir, meta) = (self.dir.clone(), self.meta.clone());
            tokio::task::spawn_blocking(move || Store::open(dir, meta, store_config))
                .await
                .map_err(|e| StartError::DataDir {
                    path: self.config.data_dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })??
        };
        Ok(App {
            meta: self.meta.clone(),
            store,
            queue: QueueSignal::default(),
            privacy_grace: self.config.privacy_grace,
            worker: lethe_delete::WorkerSettings {
                access_window: self.config.access_window,
                task_memory: self.config.task_memory,
            },
            webhook_retry: self.config.webhook_retry,
            metrics: self.metrics.clone(),
            throttle: Default::default(),
            cors: self.config.cors.clone(),
            trusted_proxy: self.config.trusted_proxy,
            rates: Arc::new(EventRates::new(self.config.rates)),
            cluster_secret: self.cluster_secret.clone(),
        })
    }
}

/// What runs beside the handlers of the node that holds the store: the deletion queue's
/// worker and the webhooks' dispatcher.
struct Background {
    worker: Worker,
    webhooks: Dispatcher,
    store: Store,
}

impl Background {
    fn start(app: &App) -> std::io::Result<Background> {
        Ok(Background {
            worker: Worker::start(
                app.meta.clone(),
                app.store.clone(),
                app.queue.clone(),
                app.worker,
            )?,
            webhooks: Dispatcher::start(app.meta.clone(), app.webhook_retry)?,
            store: app.store.clone(),
        })
    }

    /// Stops the dispatcher (after the delivery in flight) and the worker, then flushes and
    /// closes the store.
    async fn stop(self) -> std::io::Result<()> {
        self.webhooks.stop().await;
        let (worker, store) = (self.worker, self.store);
        tokio::task::spawn_blocking(move || {
            worker.stop();
            store.shutdown()
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)
    }
}

impl Running {
    /// Serves (and works the deletion queue) until `shutdown` resolves, then stops the
    /// worker, flushes the memtable and stops. A cluster node stands by, forwarding, until
    /// it takes the writer's lease; then it opens the store and serves as the writer.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self.mode {
            Mode::Single(app) => {
                let background = Background::start(&app)?;
                let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(self.listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await?;
                background.stop().await
            }
            Mode::Cluster {
                node,
                keeper,
                parts,
            } => {
                let writer = tokio::spawn(run_for_writer(node.clone(), keeper, parts));
                let service = crate::cluster::routes(node.clone())
                    .into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(self.listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await?;
                node.stopping.store(true, Ordering::Release);
                writer.await.map_err(std::io::Error::other)?
            }
        }
    }
}

/// A cluster node's life beyond its listener: waits for the writer's lease, then opens the
/// store and serves as the writer; at the stop, flushes and resigns the lease.
async fn run_for_writer(
    node: Arc<Node>,
    keeper: Arc<MetaStore>,
    parts: Box<Parts>,
) -> std::io::Result<()> {
    let epoch = {
        let (node, keeper, meta) = (node.clone(), keeper.clone(), parts.meta.clone());
        tokio::task::spawn_blocking(move || await_lease(&keeper, &meta, &node))
            .await
            .map_err(std::io::Error::other)?
    };
    let Some(epoch) = epoch else {
        return Ok(());
    };
    let renewing = Arc::new(AtomicBool::new(true));
    let lease = {
        let (node, renewing) = (node.clone(), renewing.clone());
        std::thread::Builder::new()
            .name("lethe-lease".into())
            .spawn(move || keep_lease(&keeper, &node, epoch, &renewing))?
    };
    let opening = std::time::Instant::now();
    let app = match parts.open(Some(node.ack_deadline.clone())).await {
        Ok(app) => app,
        Err(e) => {
            // Another node may manage where this one cannot (its lease lapses on its own).
            tracing::error!(error = %e, "the new writer cannot open the store: stopping");
            std::process::exit(1);
        }
    };
    let background = Background::start(&app)?;
    node.become_writer(router(app));
    tracing::info!(
        epoch,
        ms = opening.elapsed().as_millis() as u64,
        "the store is open: serving as the writer"
    );
    while !node.stopping.load(Ordering::Acquire) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let stopped = background.stop().await;
    renewing.store(false, Ordering::Release);
    let _ = tokio::task::spawn_blocking(move || lease.join()).await;
    stopped
}
