//! Starting a server: bind the listener, take the data dir's lock, open (and on first start
//! bootstrap) the metadata, open the store. Serving stops gracefully with a flush.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use fs2::FileExt;
use lethe_meta::{MetaStore, NewProject};
use lethe_store::{DataDir, Store};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::rates::EventRates;
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
    app: App,
    listener: tokio::net::TcpListener,
    _lock: File,
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

/// Opens everything and binds the listener.
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
    let meta = Arc::new(MetaStore::open_at(&config.meta, &dir.meta_db())?);
    meta.claim_sole_node()?;
    let first_start = meta.bootstrap(&config.admin_email, config.admin_password.as_deref())?;
    let store_config = config.store.clone();
    let store = {
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || Store::open(dir, meta, store_config))
            .await
            .map_err(|e| io_err(std::io::Error::other(e.to_string())))??
    };
    let addr = listener.local_addr().map_err(io_err)?;
    Ok(Running {
        addr,
        first_start,
        app: App {
            meta,
            store,
            queue: QueueSignal::default(),
            privacy_grace: config.privacy_grace,
            metrics,
            throttle: Default::default(),
            cors: config.cors.clone(),
            trusted_proxy: config.trusted_proxy,
            rates: Arc::new(EventRates::new(config.rates)),
        },
        listener,
        _lock: lock,
    })
}

impl Running {
    /// Serves (and works the deletion queue) until `shutdown` resolves, then stops the
    /// worker, flushes the memtable and stops.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let store = self.app.store.clone();
        let worker = Worker::start(self.app.meta.clone(), store.clone(), self.app.queue.clone())?;
        let app = router(self.app).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        tokio::task::spawn_blocking(move || {
            worker.stop();
            store.shutdown()
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)
    }
}
