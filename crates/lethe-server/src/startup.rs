//! Starting a server: bind the listener, take the data dir's lock, open (and on first start
//! bootstrap) the metadata, open the store. Serving stops gracefully with a flush.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use fs2::FileExt;
use lethe_meta::{MetaPlace, MetaStore, NewProject, NodeRole, Shard};
use lethe_store::{AckDeadline, DataDir, SegmentPlace, Store, WalPlace};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::cluster::{keep_lease, next_move, Move, Node, Taken};
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
    #[error("the cluster's projects fall into {recorded} shards (set by its first node); start with --shards {recorded} or without --shards")]
    ShardCount { recorded: u32 },
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
    /// A cluster's node: it opens a shard's store once it is the shard's writer.
    Cluster {
        node: Arc<Node>,
        /// The connection that takes and renews the writers' leases.
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
            let shards = parts.meta.cluster_shards(cluster.shards)?;
            if cluster.shards.is_some_and(|asked| asked != shards) {
                return Err(StartError::ShardCount { recorded: shards });
            }
            let node = Node::new(
                id,
                cluster,
                addr,
                (secret, shards),
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
        _ => Mode::Single(parts.open(parts.meta.clone(), None).await?),
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
    /// Opens the store (replaying the WAL) and makes the handlers' state over `meta`; a
    /// cluster's writer passes its shard (the shard `meta` is fenced to, and how many there
    /// are) and acknowledges writes only until `ack_deadline`.
    async fn open(
        &self,
        meta: Arc<MetaStore>,
        writer: Option<(u32, AckDeadline)>,
    ) -> Result<App, StartError> {
        let mut store_config = self.config.store.clone();
        if let Some((shards, ack_deadline)) = writer {
            // The next writer must find every acknowledged batch: the WAL is in the bucket.
            store_config.wal = WalPlace::Segments;
            store_config.ack_deadline = Some(ack_deadline);
            store_config.shard_count = shards;
        }
        let store = {
            let (dir, meta) = (self.dir.clone(), meta.clone());
            tokio::task::spawn_blocking(move || Store::open(dir, meta, store_config))
                .await
                .map_err(|e| StartError::DataDir {
                    path: self.config.data_dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })??
        };
        Ok(App {
            meta,
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

/// What runs beside the handlers of a node that holds a store: the deletion queue's worker
/// (of the store's projects) and, on the node that writes for shard 0 (or the only node),
/// the webhooks' dispatcher, which is the organization's.
struct Background {
    worker: Worker,
    webhooks: Option<Dispatcher>,
    store: Store,
}

impl Background {
    fn start(app: &App) -> std::io::Result<Background> {
        let dispatches = app.store.scope().shard == Shard::default();
        Ok(Background {
            worker: Worker::start(
                app.meta.clone(),
                app.store.clone(),
                app.queue.clone(),
                app.worker,
            )?,
            webhooks: match dispatches {
                true => Some(Dispatcher::start(app.meta.clone(), app.webhook_retry)?),
                false => None,
            },
            store: app.store.clone(),
        })
    }

    /// Stops the dispatcher (after the delivery in flight) and the worker, then flushes and
    /// closes the store.
    async fn stop(self) -> std::io::Result<()> {
        if let Some(webhooks) = self.webhooks {
            webhooks.stop().await;
        }
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
                let writer = tokio::spawn(run_shards(node.clone(), keeper, parts));
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

/// A shard this node writes for: what serves it, and its lease's keeper.
struct Writing {
    shard: Shard,
    background: Background,
    renewing: Arc<AtomicBool>,
    lease: std::thread::JoinHandle<()>,
}

impl Writing {
    /// Stops the shard's worker, flushes and closes its store, then resigns its lease.
    async fn stop(self) -> std::io::Result<()> {
        let stopped = self.background.stop().await;
        self.renewing.store(false, Ordering::Release);
        let lease = self.lease;
        let _ = tokio::task::spawn_blocking(move || lease.join()).await;
        stopped
    }
}

/// How long a shard handed over waits for the requests it is serving to be answered.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// A cluster node's life beyond its listener: takes the lease of each shard it should
/// write for, as they lapse, then opens the shard's store and serves it; hands a shard over
/// when it writes for more than its share; at the stop, flushes each, resigns its lease and
/// leaves the live nodes.
async fn run_shards(
    node: Arc<Node>,
    keeper: Arc<MetaStore>,
    parts: Box<Parts>,
) -> std::io::Result<()> {
    let mut writing: Vec<Writing> = Vec::new();
    let look = (node.lease / 8).max(std::time::Duration::from_millis(100));
    while !node.stopping.load(Ordering::Acquire) {
        let next = {
            let (node, keeper) = (node.clone(), keeper.clone());
            tokio::task::spawn_blocking(move || next_move(&keeper, &node))
                .await
                .map_err(std::io::Error::other)?
        };
        match next {
            Some(Move::Take(taken)) => {
                writing.push(write_for(&node, &keeper, &parts, taken).await?)
            }
            Some(Move::Give(shard)) => {
                if let Some(i) = writing.iter().position(|w| w.shard == shard) {
                    hand_over(&node, writing.swap_remove(i)).await;
                }
            }
            None => tokio::time::sleep(look).await,
        }
    }
    let mut stopped = Ok(());
    for shard in writing {
        stopped = stopped.and(shard.stop().await);
    }
    let id = node.id.clone();
    let left = tokio::task::spawn_blocking(move || keeper.leave(&id)).await;
    if let Ok(Err(e)) = left {
        tracing::warn!(error = %e, "cannot leave the live nodes; this node's row lapses on its own");
    }
    stopped
}

/// Hands `writing`'s shard over to a node with fewer: serves none of its requests from now
/// on (they wait for the next writer), lets those in flight be answered, then stops it as
/// at a stop, resigning its lease for the node with fewest to take at once.
async fn hand_over(node: &Node, writing: Writing) {
    let shard = writing.shard;
    let started = std::time::Instant::now();
    if let Some(serving) = node.stop_serving(shard) {
        while Arc::strong_count(&serving) > 1 && started.elapsed() < DRAIN {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    match writing.stop().await {
        // Whatever it acknowledged and did not flush is in the bucket's WAL: the next
        // writer replays it.
        Err(e) => {
            tracing::warn!(error = %e, shard = shard.0, "a shard handed over could not flush")
        }
        Ok(()) => tracing::info!(
            shard = shard.0,
            ms = started.elapsed().as_millis() as u64,
            "handed the shard over to a node with fewer"
        ),
    }
}

/// Starts writing for the shard this node just `taken`: keeps its lease, opens its store
/// on a connection fenced by its epoch, and serves its requests from then on.
async fn write_for(
    node: &Arc<Node>,
    keeper: &Arc<MetaStore>,
    parts: &Parts,
    taken: Taken,
) -> std::io::Result<Writing> {
    let (shard, epoch) = (taken.shard, taken.epoch);
    let ack_deadline = taken.ack_deadline.clone();
    let renewing = Arc::new(AtomicBool::new(true));
    let lease = {
        let (node, keeper, renewing) = (node.clone(), keeper.clone(), renewing.clone());
        std::thread::Builder::new()
            .name("lethe-lease".into())
            .spawn(move || keep_lease(&keeper, &node, &taken, &renewing))?
    };
    let opening = std::time::Instant::now();
    let opened = async {
        let meta = match shard == Shard::default() {
            // Shard 0's writer shares the node's first connection, as a single writer did.
            true => parts.meta.clone(),
            false => Arc::new(MetaStore::open_at(
                &parts.config.meta,
                &parts.dir.meta_db(),
            )?),
        };
        meta.fence(shard, epoch);
        parts.open(meta, Some((node.shards, ack_deadline))).await
    };
    let app = match opened.await {
        Ok(app) => app,
        Err(e) => {
            // Another node may manage where this one cannot (its lease lapses on its own).
            tracing::error!(error = %e, shard = shard.0, "the new writer cannot open the store: stopping");
            std::process::exit(1);
        }
    };
    let background = Background::start(&app)?;
    node.become_writer(shard, router(app));
    tracing::info!(
        shard = shard.0,
        epoch,
        ms = opening.elapsed().as_millis() as u64,
        "the store is open: serving as the shard's writer"
    );
    Ok(Writing {
        shard,
        background,
        renewing,
        lease,
    })
}
