//! Several nodes on one PostgreSQL database and one bucket (`lethe serve --cluster`).
//!
//! Every node accepts every request. A cluster's projects fall into shards (`--shards`,
//! fixed when the cluster is made; one by default), and one node at a time is each shard's
//! writer: it holds the shard's lease in the metadata (`lethe_meta::Writer`), opens a store
//! of the shard's projects (its WAL is objects in the bucket, so a 200 means the batch is
//! there) and works their deletion queue, so identity resolution, flushes, compaction,
//! garbage collection and tasks of each project have one owner, as on one node. A node
//! serves a request itself when it writes for the request's shard (`routing.rs` finds it),
//! and otherwise forwards it to that shard's writer, streaming it both ways.
//!
//! The shards spread over the live nodes (each renews a heartbeat row while it runs). A
//! node takes a shard whose lease lapses: at once when it writes for none, after a grace
//! when it already writes for some, longer when another live node writes for fewer, so
//! that a node with none (a new one, a restarted one) gets it first. A node that writes
//! for two more shards than the node with fewest hands one over: it stops serving it, lets
//! the requests in flight finish, flushes and closes its store and resigns its lease, and
//! the node with fewest takes it. A new writer replays the WAL objects its predecessor
//! acknowledged and resumes the task it was running.
//!
//! A writer that cannot renew a lease within three quarters of it stops the process
//! before anyone may take over; one whose lease was taken over commits nothing more (the
//! metadata fences every transaction by its shard's epoch).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use lethe_meta::{now_ms, MetaError, MetaStore, Shard, Writer, RESIGNED};
use lethe_store::AckDeadline;
use serde_json::json;
use tower::ServiceExt;

use crate::routing::{named_project, Named};

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The URL other nodes forward requests to (`http://host:port`); by default `http://`
    /// and the address the node listens on.
    pub advertise: Option<String>,
    /// How long a writer's lease lasts unless renewed: a dead writer's work resumes
    /// elsewhere within about this long.
    pub lease: Duration,
    /// How many shards the projects fall into, for the cluster's first node (a later node
    /// must ask for as many, or not ask): as many writers ingest side by side.
    pub shards: Option<u32>,
}

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
    /// How long a writer's lease lasts unless renewed.
    pub lease: Duration,
    /// The shared secret of the cluster's nodes.
    pub secret: String,
    /// How many shards the cluster's projects fall into.
    pub shards: u32,
    /// What serves each shard this node writes for.
    roles: RwLock<BTreeMap<Shard, Role>>,
    meta: Arc<MetaStore>,
    /// Every shard's writer as last read, and when.
    writers: Mutex<Option<(Instant, Vec<Writer>)>>,
    /// Projects by API key, as routing found them (a key never moves to another project).
    projects_by_key: Mutex<HashMap<String, i64>>,
    /// When this node first saw each shard without a writer (`next_move`).
    free_since: Mutex<HashMap<Shard, Instant>>,
    /// When this node last took or handed over a shard (or started): it hands one over
    /// only once its shards have settled.
    settled: Mutex<Instant>,
    client: reqwest::Client,
    /// Set to stop taking and keeping leases (a graceful stop resigns them).
    pub stopping: AtomicBool,
    /// Whether a client address in `X-Forwarded-For` is trusted (`--trusted-proxy`).
    trusted_proxy: bool,
    /// The last writer found unreachable (warned about once).
    unreachable: Mutex<Option<(Shard, i64)>>,
}

impl Node {
    pub fn new(
        id: String,
        config: ClusterConfig,
        listening: std::net::SocketAddr,
        (secret, shards): (String, u32),
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
            shards,
            roles: RwLock::new(BTreeMap::new()),
            meta,
            writers: Mutex::new(None),
            projects_by_key: Mutex::new(HashMap::new()),
            free_since: Mutex::new(HashMap::new()),
            settled: Mutex::new(Instant::now()),
            client,
            stopping: AtomicBool::new(false),
            trusted_proxy,
            unreachable: Mutex::new(None),
        })
    }

    /// From now on this node serves the requests of `shard` itself, with `routes`.
    pub fn become_writer(&self, shard: Shard, routes: Router) {
        let role = Role {
            routes,
            serving: Arc::new(()),
        };
        self.roles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard, role);
    }

    /// From now on this node serves no request of `shard` (it hands the shard over); what
    /// counts the requests its routes still serve.
    pub fn stop_serving(&self, shard: Shard) -> Option<Arc<()>> {
        let mut roles = self.roles.write().unwrap_or_else(|p| p.into_inner());
        roles.remove(&shard).map(|role| role.serving)
    }

    /// What serves `shard` if this node writes for it; for a request of no project
    /// (`None`), what serves any shard it writes for.
    fn role(&self, shard: Option<Shard>) -> Option<Role> {
        let roles = self.roles.read().unwrap_or_else(|p| p.into_inner());
        match shard {
            Some(shard) => roles.get(&shard).cloned(),
            None => roles.values().next().cloned(),
        }
    }

    /// The shards this node writes for.
    fn held(&self) -> Vec<Shard> {
        let roles = self.roles.read().unwrap_or_else(|p| p.into_inner());
        roles.keys().copied().collect()
    }

    /// The routes of every shard this node writes for.
    fn every_role(&self) -> Vec<(Shard, Router)> {
        let roles = self.roles.read().unwrap_or_else(|p| p.into_inner());
        roles.iter().map(|(s, r)| (*s, r.routes.clone())).collect()
    }

    /// Every shard's writer, read at most once a second.
    async fn writers(&self) -> Vec<Writer> {
        let cached = lock(&self.writers).clone();
        if let Some((read, writers)) = cached {
            if read.elapsed() < Duration::from_secs(1) {
                return writers;
            }
        }
        let meta = self.meta.clone();
        match tokio::task::spawn_blocking(move || meta.writers()).await {
            Ok(Ok(writers)) => {
                *lock(&self.writers) = Some((Instant::now(), writers.clone()));
                writers
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the cluster's writers");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Forgets the writers read last, so that the next look reads the leases again.
    fn forget_writers(&self) {
        *lock(&self.writers) = None;
    }

    /// The shard a request is for: its project's, or `None` when it names no project (a
    /// sign-in, the organization's users) or one that does not exist (any writer answers
    /// that as one node does). A cluster of one shard reads nothing.
    async fn shard_of(
        &self,
        parts: &axum::http::request::Parts,
        body: Option<&[u8]>,
    ) -> Option<Shard> {
        if self.shards == 1 {
            return Some(Shard::default());
        }
        let project = match named_project(parts, body)? {
            Named::Project(id) => id,
            Named::Task(id) => {
                self.look_up(move |m| Ok(m.task(id)?.map(|t| t.project_id)))
                    .await?
            }
            Named::ApiKey(key) => {
                let known = lock(&self.projects_by_key).get(&key).copied();
                match known {
                    Some(id) => id,
                    None => {
                        let k = key.clone();
                        let id = self
                            .look_up(move |m| Ok(m.project_by_api_key(&k)?.map(|p| p.id)))
                            .await?;
                        lock(&self.projects_by_key).insert(key, id);
                        id
                    }
                }
            }
            Named::SecretKey(secret) => {
                self.look_up(move |m| Ok(m.project_by_secret(&secret)?.map(|p| p.id)))
                    .await?
            }
        };
        Some(Shard::of(project, self.shards))
    }

    /// A project id from the metadata, off the async workers.
    async fn look_up(
        &self,
        find: impl FnOnce(&MetaStore) -> lethe_meta::Result<Option<i64>> + Send + 'static,
    ) -> Option<i64> {
        let meta = self.meta.clone();
        match tokio::task::spawn_blocking(move || find(&meta)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot look up a request's project");
                None
            }
            Err(_) => None,
        }
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
                let this = Some((writer.shard, writer.epoch));
                if std::mem::replace(&mut *lock(&self.unreachable), this) != this {
                    // Without the URL: its path and query are the client's (a user_id, say).
                    tracing::warn!(error = %e.without_url(), writer = %writer.address,
                        shard = writer.shard.0, "cannot reach a writer");
                }
                self.forget_writers();
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

/// What serves one shard on its writer.
#[derive(Clone)]
struct Role {
    routes: Router,
    /// Held by every request the routes serve: a shard is handed over once none is left.
    serving: Arc<()>,
}

impl Role {
    /// Serves `request`, counted as in flight until it is answered.
    async fn serve(self, request: Request) -> Response {
        let _serving = self.serving;
        self.routes
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {})
    }
}

/// A request's body on its way to the writer: whole, so that it can be sent again after the
/// writer changes, unless it is too large to hold (then it goes once, streamed).
enum Payload {
    Whole(axum::body::Bytes),
    Streamed(Body),
}

impl Payload {
    /// The body, when it is held whole.
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Payload::Whole(bytes) => Some(bytes),
            Payload::Streamed(_) => None,
        }
    }
}

/// The largest body a node holds to send again after a failover: ingestion's and the
/// import tool's requests fit.
const HELD_BODY_BYTES: usize = 64 << 20;

/// 503 with `Retry-After`: nothing was done, and the request can be sent again.
fn no_writer() -> Response {
    let body = json!({
        "code": 503,
        "error": "the cluster is choosing the writer of this request's shard; retry shortly",
        "reason": "no_writer",
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

/// 421: a node got a forwarded request for a shard it does not write for; the node that
/// forwarded it looks for the shard's writer again.
fn misdirected() -> Response {
    let body = json!({
        "code": 421,
        "error": "this node does not write for the request's shard",
        "reason": "not_writer",
    });
    (StatusCode::MISDIRECTED_REQUEST, Json(body)).into_response()
}

/// Every request of a cluster node: served by its shard's routes on that shard's writer,
/// else forwarded there (a node that writes for no shard answers `/healthz` itself).
pub(crate) fn routes(node: Arc<Node>) -> Router {
    Router::new().fallback(serve).with_state(node)
}

async fn serve(State(node): State<Arc<Node>>, request: Request) -> Response {
    if request.uri().path() == "/healthz" {
        return health(&node).await;
    }
    if request.uri().path() == "/metrics" && node.shards > 1 {
        if let Some(role) = node.role(None) {
            return metrics(&node, role, request).await;
        }
    }
    if node.shards == 1 {
        if let Some(role) = node.role(None) {
            return role.serve(request).await;
        }
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
    let shard = node.shard_of(&parts, payload.bytes()).await;
    // A request another node forwarded is never forwarded again: when this node does not
    // write for its shard (the other's view of the leases was a moment old), it says so,
    // and the other looks again. No request goes round between nodes.
    let forwarded = parts
        .headers
        .get(FORWARDED_BY)
        .is_some_and(|by| by.as_bytes() == node.secret.as_bytes());
    // While the writer changes (its lease lapsing, a busy node's grace before it takes
    // another shard, a handover, the next writer opening the store), the request waits:
    // an SDK retries a 503 only a few times, quickly.
    let deadline = Instant::now() + node.lease * TAKEOVER_LEASES + Duration::from_secs(5);
    loop {
        if let Some(role) = node.role(shard) {
            let body = match payload {
                Payload::Whole(bytes) => Body::from(bytes),
                Payload::Streamed(body) => body,
            };
            return role.serve(Request::from_parts(parts, body)).await;
        }
        if forwarded {
            return misdirected();
        }
        // A request of no project goes to shard 0's writer.
        let target = shard.unwrap_or_default();
        let writer = node.writers().await.into_iter().find(|w| w.shard == target);
        match writer {
            Some(w) if w.node != node.id && w.lease_until >= now_ms() => {
                match node.send(&parts, &mut payload, &w, &client).await {
                    Some(answer) if answer.status() != StatusCode::MISDIRECTED_REQUEST => {
                        return answer
                    }
                    // That node no longer (or not yet) writes for the shard.
                    Some(_) => node.forget_writers(),
                    None => {}
                }
                if matches!(payload, Payload::Streamed(_)) {
                    return no_writer();
                }
            }
            _ => node.forget_writers(),
        }
        if Instant::now() > deadline {
            return no_writer();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node's metrics, without the series of shards it no longer writes for: the recorder
/// is the process's, and keeps the last values of a store that was handed over.
async fn metrics(node: &Node, role: Role, request: Request) -> Response {
    let answer = role.serve(request).await;
    if !answer.status().is_success() {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let Ok(text) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let held: Vec<String> = (node.held().iter())
        .map(|shard| format!("shard=\"{}\"", shard.0))
        .collect();
    let ours = |line: &&str| !line.contains("shard=\"") || held.iter().any(|h| line.contains(h));
    let kept: String = (String::from_utf8_lossy(&text).lines())
        .filter(ours)
        .flat_map(|line| [line, "\n"])
        .collect();
    Response::from_parts(parts, Body::from(kept))
}

/// A node's health: that of each store it writes for, the worst status first and what each
/// store reports beside it, with the shards it writes for; a node that writes for none
/// stands by and names shard 0's writer.
async fn health(node: &Node) -> Response {
    let roles = node.every_role();
    if roles.is_empty() {
        let writers = node.writers().await;
        let writer = writers.into_iter().find(|w| w.shard == Shard::default());
        let body =
            json!({ "status": "ok", "role": "standby", "writer": writer.map(|w| w.address) });
        return Json(body).into_response();
    }
    let mut merged = json!({ "status": "ok", "role": "writer" });
    let mut shards = Vec::new();
    for (shard, routes) in roles {
        shards.push(shard.0);
        let request = Request::get("/healthz").body(Body::empty());
        let Ok(request) = request else { continue };
        let answer = routes
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20).await;
        let Ok(serde_json::Value::Object(body)) =
            bytes.map(|b| serde_json::from_slice(&b).unwrap_or_default())
        else {
            continue;
        };
        for (key, value) in body {
            match key.as_str() {
                "status" if value != "ok" => merged["status"] = value,
                "status" | "role" => {}
                _ => merged[key] = value,
            }
        }
    }
    merged["shards"] = json!(shards);
    Json(merged).into_response()
}

/// How many leases a shard may go without a writer when its node dies and every other
/// node writes for a shard already: its lease lapsing, then two more before a node with
/// the fewest shards takes it (a node that writes for none takes it at once).
const TAKEOVER_LEASES: u32 = 3;

/// How many leases a node's shards must have stayed as they are before it hands one over:
/// time for the nodes' views of each other to settle after every move.
const SETTLE_LEASES: u32 = 2;

/// A shard this node took: its epoch, and until when its store may acknowledge writes.
pub(crate) struct Taken {
    pub shard: Shard,
    pub epoch: i64,
    pub ack_deadline: AckDeadline,
}

/// What a node does next about the shards.
pub(crate) enum Move {
    /// It took this shard's lease: it opens the shard's store and serves it.
    Take(Taken),
    /// It writes for two more shards than a live node with fewest: it hands this one over.
    Give(Shard),
}

/// The next move of this node, through `keeper` (the leases' own connection), which also
/// renews the node's heartbeat. It hands a shard over when it writes for two more than a
/// live node with fewest and its shards have settled. Else it takes a shard whose lease
/// lapsed (or that no node wrote for yet, or whose lease is still this node's from before
/// a restart): at once when it writes for none; when no live node writes for fewer, at
/// once if the lease was resigned, else after two leases; after four when another node
/// writes for fewer, which should take it first. `None` when there is nothing to do now.
pub(crate) fn next_move(keeper: &MetaStore, node: &Node) -> Option<Move> {
    let lease = node.lease;
    let now = now_ms();
    let lease_ms = lease.as_millis() as i64;
    let looked = keeper.writers().and_then(|writers| {
        let live = keeper.heartbeat(&node.id, now, now + lease_ms)?;
        Ok((writers, live))
    });
    let (writers, live) = match looked {
        Ok(looked) => looked,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the writers' leases");
            return None;
        }
    };
    let held = node.held();
    // Nodes start their look at different shards, so that nodes starting together rarely
    // reach for the same one.
    let offset = node.id.bytes().map(u32::from).sum::<u32>() % node.shards;
    let view = View {
        me: &node.id,
        held: &held,
        shards: node.shards,
        writers: &writers,
        live: &live,
        now,
    };
    let due = due(&view, offset);
    let mut settled = lock(&node.settled);
    if let Some(shard) = due.give {
        if settled.elapsed() >= lease * SETTLE_LEASES {
            *settled = Instant::now();
            return Some(Move::Give(shard));
        }
    }
    let mut free_since = lock(&node.free_since);
    free_since.retain(|shard, _| due.take.iter().any(|(free, _)| free == shard));
    for (shard, grace) in due.take {
        let since = *free_since.entry(shard).or_insert_with(Instant::now);
        if since.elapsed() < lease * grace {
            continue;
        }
        let attempt = Instant::now();
        match keeper.take_writer(shard, &node.id, &node.advertise, now_ms(), lease_ms) {
            Ok(Some(epoch)) => {
                free_since.remove(&shard);
                *settled = Instant::now();
                let ack_deadline = AckDeadline::default();
                ack_deadline.extend_to(attempt + lease * 3 / 4);
                tracing::info!(shard = shard.0, epoch, "this node is the shard's writer");
                return Some(Move::Take(Taken {
                    shard,
                    epoch,
                    ack_deadline,
                }));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot take a writer's lease"),
        }
    }
    None
}

/// What one node knows when it decides its next move.
struct View<'a> {
    /// This node's id.
    me: &'a str,
    /// The shards it serves.
    held: &'a [Shard],
    /// How many shards the projects fall into.
    shards: u32,
    /// Every shard's writer, as the rows name them.
    writers: &'a [Writer],
    /// The live nodes, this one included.
    live: &'a [String],
    /// Now, by the clock the leases are written in (ms since the epoch).
    now: i64,
}

/// What the leases and the live nodes ask of a node, before the time it waits for.
struct Due {
    /// The shard to hand over: it writes for two more than a live node with fewest.
    give: Option<Shard>,
    /// Each shard it may take, with how many leases the shard must first have been free.
    take: Vec<(Shard, u32)>,
}

/// The rules of [`next_move`], without the clock: the shards free to take (looked at from
/// `offset` on) and the grace of each, and the shard to hand over if there is one.
fn due(view: &View, offset: u32) -> Due {
    let fewest = fewest_held(
        view.writers,
        view.live,
        (view.me, view.held.len()),
        view.now,
    );
    let give = match view.held.len() >= fewest + 2 {
        true => view.held.last().copied(),
        false => None,
    };
    let mut take = Vec::new();
    for n in 0..view.shards {
        let shard = Shard((offset + n) % view.shards);
        if view.held.contains(&shard) {
            continue;
        }
        let writer = view.writers.iter().find(|w| w.shard == shard);
        let running = writer.filter(|w| w.lease_until >= view.now);
        let mine = running.is_some_and(|w| w.node == view.me);
        if running.is_some() && !mine {
            continue;
        }
        // A lease resigned (a node handing the shard over, or stopping) is not a node
        // that may come back: a node with fewest takes it at once.
        let resigned = writer.is_some_and(|w| w.lease_until == RESIGNED);
        let grace = match () {
            _ if view.held.is_empty() || mine => 0,
            _ if view.held.len() == fewest && resigned => 0,
            _ if view.held.len() == fewest => TAKEOVER_LEASES - 1,
            _ => 2 * (TAKEOVER_LEASES - 1),
        };
        take.push((shard, grace));
    }
    Due { give, take }
}

/// The fewest shards any of the `live` nodes writes for by the leases running at `now`, this
/// node (`me`) counting what it serves.
fn fewest_held(writers: &[Writer], live: &[String], me: (&str, usize), now: i64) -> usize {
    let held = |node: &String| match node == me.0 {
        true => me.1,
        false => (writers.iter())
            .filter(|w| &w.node == node && w.lease_until >= now)
            .count(),
    };
    live.iter().map(held).min().unwrap_or(me.1)
}

/// Renews `taken`'s lease eight times per lease while `renewing` (until the shard's store
/// is flushed and closed at a stop), then resigns it. A writer that was taken over, or
/// could not renew for three quarters of the lease, stops the process: acknowledging a
/// write then could lose it.
pub(crate) fn keep_lease(keeper: &MetaStore, node: &Node, taken: &Taken, renewing: &AtomicBool) {
    let (lease, shard, epoch) = (node.lease, taken.shard, taken.epoch);
    let mut renewed = Instant::now();
    while renewing.load(Ordering::Acquire) {
        let attempt = Instant::now();
        match keeper.renew_writer(shard, epoch, now_ms() + lease.as_millis() as i64) {
            Ok(()) => {
                renewed = attempt;
                taken.ack_deadline.extend_to(attempt + lease * 3 / 4);
            }
            Err(MetaError::Fenced(_)) => lost_lease("another node took a writer's lease over"),
            Err(e) => tracing::warn!(error = %e, shard = shard.0, "cannot renew a writer's lease"),
        }
        if renewed.elapsed() > lease * 3 / 4 {
            lost_lease("a writer's lease could not be renewed in time");
        }
        std::thread::sleep(lease / 8);
    }
    if let Err(e) = keeper.resign_writer(shard, epoch) {
        tracing::warn!(error = %e, "cannot resign a writer's lease; it lapses on its own");
    }
}

fn lost_lease(why: &str) -> ! {
    tracing::error!(
        "{why}: stopping this node (restarted, it stands by); its acknowledged events are in \
         the bucket's WAL"
    );
    std::process::exit(75)
}

/// Locks a mutex, taking over a poisoned one.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn writer(shard: u32, node: &str, lease_until: i64) -> Writer {
        Writer {
            shard: Shard(shard),
            node: node.into(),
            address: format!("http://{node}"),
            epoch: 1,
            lease_until,
        }
    }

    #[test]
    fn the_fewest_shards_are_counted_over_live_nodes_and_running_leases() {
        let writers = [
            writer(0, "a", 2_000),
            writer(1, "a", 2_000),
            writer(2, "b", 2_000),
            // Lapsed (its node died): nobody's any more.
            writer(3, "b", 900),
            writer(4, "gone", 2_000),
        ];
        let live = |nodes: &[&str]| nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            fewest_held(&writers, &live(&["a", "b"]), ("a", 2), 1_000),
            1
        );
        // A live node that writes for none: a shard should move to it.
        assert_eq!(
            fewest_held(&writers, &live(&["a", "b", "c"]), ("a", 2), 1_000),
            0
        );
        // This node counts what it serves, not its rows (a shard it is handing over).
        assert_eq!(
            fewest_held(&writers, &live(&["a", "b"]), ("a", 0), 1_000),
            0
        );
        // A node that is not live counts for nothing, whatever its leases say.
        assert_eq!(fewest_held(&writers, &live(&["a"]), ("a", 2), 1_000), 2);
    }

    /// A lease, in steps of the simulation below: a node looks every eighth of a lease.
    const LEASE: i64 = 8;

    /// A node of the simulated cluster.
    struct SimNode {
        id: String,
        alive: bool,
        held: Vec<Shard>,
        settled: i64,
        free_since: HashMap<Shard, i64>,
    }

    /// A cluster whose nodes look as `next_move` does (the same `due`, the same waits),
    /// with the lease rows and heartbeats as the metadata holds them, in steps.
    struct Sim {
        shards: u32,
        now: i64,
        writers: Vec<Writer>,
        heartbeats: BTreeMap<String, i64>,
        nodes: Vec<SimNode>,
    }

    impl Sim {
        fn new(shards: u32, nodes: usize) -> Sim {
            let nodes = (0..nodes)
                .map(|n| SimNode {
                    id: format!("node-{n}"),
                    alive: false,
                    held: Vec::new(),
                    settled: 0,
                    free_since: HashMap::new(),
                })
                .collect();
            Sim {
                shards,
                now: 1,
                writers: Vec::new(),
                heartbeats: BTreeMap::new(),
                nodes,
            }
        }

        /// Starts node `n` (again), or kills it: its rows lapse on their own.
        fn toggle(&mut self, n: usize) {
            let node = &mut self.nodes[n];
            node.alive = !node.alive;
            node.held.clear();
            node.free_since.clear();
            node.settled = self.now;
        }

        fn step(&mut self) {
            self.now += 1;
            let now = self.now;
            for n in 0..self.nodes.len() {
                if !self.nodes[n].alive {
                    continue;
                }
                let id = self.nodes[n].id.clone();
                let held = self.nodes[n].held.clone();
                // The keeper renews the node's leases; the look renews its heartbeat.
                for w in &mut self.writers {
                    if w.node == id && held.contains(&w.shard) {
                        w.lease_until = now + LEASE;
                    }
                }
                self.heartbeats.insert(id.clone(), now + LEASE);
                let live: Vec<String> = (self.heartbeats.iter())
                    .filter(|(_, until)| **until >= now)
                    .map(|(node, _)| node.clone())
                    .collect();
                let view = View {
                    me: &id,
                    held: &held,
                    shards: self.shards,
                    writers: &self.writers,
                    live: &live,
                    now,
                };
                let due = due(&view, n as u32 % self.shards);
                let node = &mut self.nodes[n];
                if let Some(shard) = due.give {
                    if now - node.settled >= LEASE * i64::from(SETTLE_LEASES) {
                        node.held.retain(|s| *s != shard);
                        node.settled = now;
                        let row = self.writers.iter_mut().find(|w| w.shard == shard);
                        row.unwrap().lease_until = RESIGNED;
                        continue;
                    }
                }
                node.free_since
                    .retain(|shard, _| due.take.iter().any(|(free, _)| free == shard));
                for (shard, grace) in due.take {
                    let since = *node.free_since.entry(shard).or_insert(now);
                    if now - since < LEASE * i64::from(grace) {
                        continue;
                    }
                    // `take_writer`: a row that lapsed, or names this node, or none.
                    let row = self.writers.iter_mut().find(|w| w.shard == shard);
                    match row {
                        Some(w) if w.lease_until < now || w.node == id => {
                            w.node = id.clone();
                            w.lease_until = now + LEASE;
                        }
                        Some(_) => continue,
                        None => self.writers.push(writer(shard.0, &id, now + LEASE)),
                    }
                    node.free_since.remove(&shard);
                    node.held.push(shard);
                    node.held.sort();
                    node.settled = now;
                    break;
                }
            }
            // No shard is ever served by two nodes.
            let mut served: Vec<Shard> = self.nodes.iter().flat_map(|n| n.held.clone()).collect();
            let count = served.len();
            served.sort();
            served.dedup();
            assert_eq!(served.len(), count, "a shard served twice at step {now}");
        }
    }

    proptest! {
        /// Whatever nodes die and start, and when: once they stop changing, every shard
        /// has a live writer and no live node writes for two more shards than another.
        #[test]
        fn shards_end_up_spread_over_the_live_nodes(
            shards in 1u32..=6,
            nodes in 1usize..=4,
            changes in prop::collection::vec((0usize..4, 0i64..48), 0..8),
        ) {
            let mut sim = Sim::new(shards, nodes);
            sim.toggle(0);
            for (node, after) in changes {
                for _ in 0..after {
                    sim.step();
                }
                sim.toggle(node % nodes);
            }
            if sim.nodes.iter().all(|n| !n.alive) {
                sim.toggle(0);
            }
            for _ in 0..LEASE * 40 {
                sim.step();
            }
            let now = sim.now;
            for shard in 0..shards {
                let writer = sim.writers.iter().find(|w| w.shard == Shard(shard));
                let node = writer.and_then(|w| sim.nodes.iter().find(|n| n.id == w.node));
                let served = node.is_some_and(|n| n.alive && n.held.contains(&Shard(shard)));
                prop_assert!(served, "shard {shard} has no live writer at {now}");
                prop_assert!(writer.unwrap().lease_until >= now);
            }
            let loads: Vec<usize> = (sim.nodes.iter())
                .filter(|n| n.alive)
                .map(|n| n.held.len())
                .collect();
            let (most, least) = (loads.iter().max().unwrap(), loads.iter().min().unwrap());
            prop_assert!(most - least <= 1, "loads {loads:?}");
        }
    }
}
