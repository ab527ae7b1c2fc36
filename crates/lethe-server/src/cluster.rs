//! Several nodes on one PostgreSQL database and one bucket (`lethe serve --cluster`).
//!
//! Every node accepts every request. One node at a time is the writer: it holds the lease in
//! the metadata (`lethe_meta::Writer`), opens the store (its WAL is objects in the bucket, so
//! a 200 means the batch is there) and works the deletion queue, so identity resolution,
//! flushes, compaction, garbage collection and tasks each have one owner, as on one node.
//! The other nodes are standbys: they forward each request to the writer, streaming it both
//! ways, and try to take the lease whenever it lapses. A new writer replays the WAL objects
//! its predecessor acknowledged and resumes the task it was running.
//!
//! A writer that cannot renew its lease within three quarters of it stops the process
//! before anyone may take over; one whose lease was taken over commits nothing more (the
//! metadata fences every transaction by its epoch).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use lethe_meta::{now_ms, MetaError, MetaStore, Shard, Writer};
use lethe_store::AckDeadline;
use serde_json::json;
use tower::ServiceExt;

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The URL other nodes forward requests to (`http://host:port`); by default `http://`
    /// and the address the node listens on.
    pub advertise: Option<String>,
    /// How long the writer's lease lasts unless renewed: a dead writer's work resumes
    /// elsewhere within about this long.
    pub lease: Duration,
}

/// The shard whose writer a node becomes: a cluster's projects are all in one, so one node
/// at a time writes.
const SHARD: Shard = Shard(0);

/// The header a node forwards a request with: the cluster's shared secret, so that the
/// writer trusts the client address it names.
pub(crate) const FORWARDED_BY: &str = "x-lethe-forwarded-by";
/// The header naming the address of the client whose request a node forwards.
pub(crate) const FORWARDED_CLIENT: &str = "x-lethe-client";

/// Headers that belong to one connection, not to the request: never forwarded.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// This node's part in the cluster, shared by every request.
pub(crate) struct Node {
    /// This node's id (its data dir's).
    pub id: String,
    /// The URL the other nodes reach this one at.
    advertise: String,
    lease: Duration,
    /// The shared secret of the cluster's nodes.
    pub secret: String,
    /// The writer's routes, once this node is the writer.
    role: RwLock<Option<Router>>,
    meta: Arc<MetaStore>,
    /// The writer as last read, and when.
    writer: Mutex<Option<(Instant, Writer)>>,
    client: reqwest::Client,
    /// Set to stop the lease keeper (a graceful stop resigns the lease).
    pub stopping: AtomicBool,
    /// Whether a client address in `X-Forwarded-For` is trusted (`--trusted-proxy`).
    trusted_proxy: bool,
    /// The epoch of the last writer found unreachable (warned about once).
    unreachable: AtomicI64,
    /// Until when this node, as the writer, may acknowledge writes.
    pub ack_deadline: AckDeadline,
}

impl Node {
    pub fn new(
        id: String,
        config: ClusterConfig,
        listening: std::net::SocketAddr,
        secret: String,
        meta: Arc<MetaStore>,
        trusted_proxy: bool,
    ) -> std::io::Result<Node> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Node {
            id,
            advertise: config
                .advertise
                .unwrap_or_else(|| format!("http://{listening}")),
            lease: config.lease,
            secret,
            role: RwLock::new(None),
            meta,
            writer: Mutex::new(None),
            client,
            stopping: AtomicBool::new(false),
            trusted_proxy,
            unreachable: AtomicI64::new(0),
            ack_deadline: AckDeadline::default(),
        })
    }

    /// From now on this node serves every request itself with `routes`.
    pub fn become_writer(&self, routes: Router) {
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = Some(routes);
    }

    fn routes(&self) -> Option<Router> {
        self.role.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current writer, read at most once a second.
    async fn writer(&self) -> Option<Writer> {
        {
            let cached = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((read, writer)) = &*cached {
                if read.elapsed() < Duration::from_secs(1) {
                    return Some(writer.clone());
                }
            }
        }
        let meta = self.meta.clone();
        let read = tokio::task::spawn_blocking(move || meta.writer(SHARD))
            .await
            .ok()?;
        match read {
            Ok(Some(writer)) => {
                *self.writer.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), writer.clone()));
                Some(writer)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's writer");
                None
            }
        }
    }

    /// Forgets the writer read last, so that the next look reads the lease again.
    fn forget_writer(&self) {
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Sends the request to `writer` and streams its answer back; `None` if the writer
    /// could not be reached (nothing was sent when the payload is still whole).
    async fn send(
        &self,
        parts: &axum::http::request::Parts,
        payload: &mut Payload,
        writer: &Writer,
        client: &str,
    ) -> Option<Response> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = parts.headers.clone();
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        headers.insert(FORWARDED_BY, HeaderValue::from_str(&self.secret).ok()?);
        headers.insert(FORWARDED_CLIENT, HeaderValue::from_str(client).ok()?);
        let body = match payload {
            Payload::Whole(bytes) => reqwest::Body::from(bytes.clone()),
            Payload::Streamed(body) => {
                let body = std::mem::take(body);
                reqwest::Body::wrap_stream(body.into_data_stream())
            }
        };
        let sent = self
            .client
            .request(parts.method.clone(), format!("{}{path}", writer.address))
            .headers(headers)
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(e) => {
                // Once per writer, not once per request.
                if self.unreachable.swap(writer.epoch, Ordering::AcqRel) != writer.epoch {
                    // Without the URL: its path and query are the client's (a user_id, say).
                    tracing::warn!(error = %e.without_url(), writer = %writer.address, "cannot reach the writer");
                }
                self.forget_writer();
                return None;
            }
        };
        let status = answer.status();
        let mut headers = answer.headers().clone();
        for name in HOP_BY_HOP.iter().chain([&header::CONTENT_LENGTH]) {
            headers.remove(name);
        }
        let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Some(response)
    }
}

/// A request's body on its way to the writer: whole, so that it can be sent again after the
/// writer changes, unless it is too large to hold (then it goes once, streamed).
enum Payload {
    Whole(axum::body::Bytes),
    Streamed(Body),
}

/// The largest body a node holds to send again after a failover: ingestion's and the
/// import tool's requests fit.
const HELD_BODY_BYTES: usize = 64 << 20;

/// 503 with `Retry-After`: nothing was done, and the request can be sent again.
fn no_writer() -> Response {
    let body = json!({
        "code": 503,
        "error": "the cluster is choosing its writer; retry shortly",
        "reason": "no_writer",
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

/// Every request of a cluster node: served by the writer's routes on the writer, else
/// forwarded to it (a standby answers `/healthz` itself).
pub(crate) fn routes(node: Arc<Node>) -> Router {
    Router::new().fallback(serve).with_state(node)
}

async fn serve(State(node): State<Arc<Node>>, request: Request) -> Response {
    if let Some(routes) = node.routes() {
        return routes
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
    }
    if request.uri().path() == "/healthz" {
        let writer = node.writer().await.map(|w| w.address);
        return Json(json!({ "status": "ok", "role": "standby", "writer": writer }))
            .into_response();
    }
    let client = crate::peer_address(node.trusted_proxy, request.headers(), request.extensions());
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let mut payload = match declared {
        Some(bytes) if bytes > HELD_BODY_BYTES => Payload::Streamed(body),
        _ => match axum::body::to_bytes(body, HELD_BODY_BYTES).await {
            Ok(bytes) => Payload::Whole(bytes),
            Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        },
    };
    // While the writer changes (its lease lapsing, the next one opening the store), the
    // request waits rather than fail: an SDK retries a 503 only a few times, quickly.
    let deadline = Instant::now() + node.lease + Duration::from_secs(5);
    loop {
        if let Some(routes) = node.routes() {
            let body = match payload {
                Payload::Whole(bytes) => Body::from(bytes),
                Payload::Streamed(body) => body,
            };
            let request = Request::from_parts(parts, body);
            return routes
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {});
        }
        match node.writer().await {
            Some(w) if w.node != node.id && w.lease_until >= now_ms() => {
                if let Some(answer) = node.send(&parts, &mut payload, &w, &client).await {
                    return answer;
                }
                if matches!(payload, Payload::Streamed(_)) {
                    return no_writer();
                }
            }
            _ => node.forget_writer(),
        }
        if Instant::now() > deadline {
            return no_writer();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tries to take the writer's lease (through `keeper`, the lease's own connection) until it
/// does or the node stops; then fences `meta`, the store's connection, by its epoch.
pub(crate) fn await_lease(keeper: &MetaStore, meta: &MetaStore, node: &Node) -> Option<i64> {
    let lease = node.lease;
    let mut announced = false;
    while !node.stopping.load(Ordering::Acquire) {
        let attempt = Instant::now();
        match keeper.take_writer(
            SHARD,
            &node.id,
            &node.advertise,
            now_ms(),
            lease.as_millis() as i64,
        ) {
            Ok(Some(epoch)) => {
                meta.fence(SHARD, epoch);
                node.ack_deadline.extend_to(attempt + lease * 3 / 4);
                tracing::info!(epoch, "this node is the cluster's writer");
                return Some(epoch);
            }
            Ok(None) if !announced => {
                tracing::info!("standing by: another node is the cluster's writer");
                announced = true;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the writer's lease"),
        }
        std::thread::sleep((lease / 8).max(Duration::from_millis(100)));
    }
    None
}

/// Renews the lease of `epoch` eight times per lease while `renewing` (until the store is
/// flushed and closed at a stop), then resigns it. A writer that was taken over, or could not renew for three quarters of the lease,
/// stops the process: acknowledging a write then could lose it.
pub(crate) fn keep_lease(keeper: &MetaStore, node: &Node, epoch: i64, renewing: &AtomicBool) {
    let lease = node.lease;
    let mut renewed = Instant::now();
    while renewing.load(Ordering::Acquire) {
        let attempt = Instant::now();
        match keeper.renew_writer(SHARD, epoch, now_ms() + lease.as_millis() as i64) {
            Ok(()) => {
                renewed = attempt;
                node.ack_deadline.extend_to(attempt + lease * 3 / 4);
            }
            Err(MetaError::Fenced(_)) => lost_lease("another node took the writer's lease over"),
            Err(e) => tracing::warn!(error = %e, "cannot renew the writer's lease"),
        }
        if renewed.elapsed() > lease * 3 / 4 {
            lost_lease("the writer's lease could not be renewed in time");
        }
        std::thread::sleep(lease / 8);
    }
    if let Err(e) = keeper.resign_writer(SHARD, epoch) {
        tracing::warn!(error = %e, "cannot resign the writer's lease; it lapses on its own");
    }
}

fn lost_lease(why: &str) -> ! {
    tracing::error!(
        "{why}: stopping this node (restarted, it stands by); its acknowledged events are in \
         the bucket's WAL"
    );
    std::process::exit(75)
}
