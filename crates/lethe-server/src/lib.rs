//! The lethe HTTP server: Amplitude-compatible ingestion, export and taxonomy, the
//! management API, bulk import and operations endpoints, over one [`App`].

mod amplitude;
mod auth;
mod blocks;
mod cluster;
mod console;
mod dsar;
mod error;
mod export;
mod identify;
mod import;
mod ingest;
mod manage;
mod ops;
mod privacy;
mod profile;
mod rates;
mod retention;
mod routing;
mod segmentation;
mod startup;
mod tasks;
mod taxonomy;
mod throttle;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use lethe_meta::MetaStore;
use lethe_store::{Store, StoreConfig};

pub use cluster::ClusterConfig;
pub use error::ApiError;
pub use import::IMPORT_PART_BYTES;
pub use rates::RateLimits;
pub use startup::{start, Running, StartError};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_email: String,
    /// The first administrator's password; generated and printed once when absent.
    pub admin_password: Option<String>,
    /// Where the metadata and the deletion queue live: SQLite in the data dir, or PostgreSQL.
    pub meta: lethe_meta::MetaPlace,
    pub store: StoreConfig,
    /// How long a User Privacy API job stays `staging` before it runs.
    pub privacy_grace: std::time::Duration,
    /// How long an access request's file can be downloaded before it is deleted.
    pub access_window: std::time::Duration,
    /// Bytes of segments a running deletion task may hold in memory at once.
    pub task_memory: u64,
    /// How long after a failed webhook delivery it is first tried again (then doubling).
    pub webhook_retry: std::time::Duration,
    /// Which web origins browsers may send events from (the ingestion endpoints only).
    pub cors: CorsOrigins,
    /// lethe runs behind a proxy that sets `X-Forwarded-For`: the client's address is the
    /// first one there, not the connection's peer.
    pub trusted_proxy: bool,
    /// Per-device and per-user event rate limits of the ingestion endpoints.
    pub rates: RateLimits,
    /// One node of several on the same database and bucket (`cluster.rs`), or the only one.
    pub cluster: Option<ClusterConfig>,
}

/// The web origins allowed to call the ingestion endpoints from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin, as Amplitude's own endpoints allow.
    #[default]
    Any,
    /// Only these origins (`https://app.example.com`).
    List(Vec<String>),
}

/// Shared state of every request handler.
#[derive(Clone)]
pub struct App {
    pub meta: Arc<MetaStore>,
    pub store: Store,
    queue: lethe_delete::QueueSignal,
    privacy_grace: std::time::Duration,
    worker: lethe_delete::WorkerSettings,
    webhook_retry: std::time::Duration,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    throttle: Arc<throttle::Throttle>,
    cors: CorsOrigins,
    trusted_proxy: bool,
    rates: Arc<rates::EventRates>,
    /// A cluster's shared secret: requests another node forwards carry it, and the client
    /// address they name is trusted.
    cluster_secret: Option<String>,
}

impl App {
    /// The project `id`, or 404 naming it.
    pub(crate) fn existing_project(&self, id: i64) -> Result<lethe_meta::Project, ApiError> {
        self.meta
            .project(id)?
            .ok_or_else(|| ApiError::not_found("project"))
    }

    /// The address a request came from: the one a cluster node that forwarded it names, or
    /// else [`peer_address`].
    pub(crate) fn client_address(
        &self,
        headers: &axum::http::HeaderMap,
        extensions: &axum::http::Extensions,
    ) -> String {
        let forwarded_by_a_node = self.cluster_secret.as_deref().is_some_and(|secret| {
            headers
                .get(cluster::FORWARDED_BY)
                .is_some_and(|by| by.as_bytes() == secret.as_bytes())
        });
        let node_named = forwarded_by_a_node
            .then(|| headers.get(cluster::FORWARDED_CLIENT)?.to_str().ok())
            .flatten()
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok());
        match node_named {
            Some(client) => client.to_string(),
            None => peer_address(self.trusted_proxy, headers, extensions),
        }
    }
}

/// The address a request came from: the connection's peer, or behind a trusted proxy the
/// first address of the `X-Forwarded-For` it set. "unknown" when neither is known.
pub(crate) fn peer_address(
    trusted_proxy: bool,
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
) -> String {
    let forwarded = trusted_proxy
        .then(|| headers.get("x-forwarded-for")?.to_str().ok())
        .flatten()
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .filter(|v| v.parse::<std::net::IpAddr>().is_ok());
    forwarded.unwrap_or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string())
    })
}

/// Every route of the server.
pub fn router(app: App) -> Router {
    Router::new()
        .merge(ingest::routes(&app.cors))
        .merge(export::routes())
        .merge(taxonomy::routes())
        .merge(manage::routes())
        .merge(import::routes())
        .merge(ops::routes())
        .merge(tasks::routes())
        .merge(blocks::routes())
        .merge(retention::routes())
        .merge(webhooks::routes())
        .merge(dsar::routes())
        .merge(privacy::routes())
        .merge(profile::routes())
        .merge(segmentation::routes())
        .merge(console::routes())
        .layer(axum::middleware::from_fn(no_store))
        .with_state(app)
}

/// API answers (and user profiles) may carry keys, secrets, tokens or personal data: no cache, browser or proxy,
/// keeps a copy.
async fn no_store(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let api = path.starts_with("/api/") || path.starts_with("/v1/");
    let mut response = next.run(request).await;
    if api {
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    response
}

/// Runs a blocking store or metadata call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::internal("worker task failed"))?
}
