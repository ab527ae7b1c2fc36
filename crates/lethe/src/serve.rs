//! `lethe serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lethe_server::{ClusterConfig, CorsOrigins, RateLimits, ServerConfig};
use lethe_store::tail::Layout;
use lethe_store::StoreConfig;

use crate::deployment::DeploymentArgs;

#[derive(Args)]
pub struct ServeArgs {
    /// Directory holding all of lethe's state (metadata, WAL, segments).
    #[arg(long, env = "LETHE_DATA_DIR", default_value = "./lethe-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    deployment: DeploymentArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "LETHE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Email of the administrator created on first start.
    #[arg(long, env = "LETHE_ADMIN_EMAIL", default_value = "admin@localhost")]
    admin_email: String,
    /// Password of the administrator created on first start (generated and printed once if unset).
    #[arg(long, env = "LETHE_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Flush unflushed events into segments after this long (`10s`, `200ms`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// Flush when this many events are waiting.
    #[arg(long, default_value_t = 100_000)]
    flush_events: usize,
    /// Past this many events not yet in segments (flushes behind: a slow or unreachable
    /// segment store), ingestion waits up to 5 s for a flush and then answers 503
    /// `flush_behind`: memory, and what a restart replays, stay bounded. At least
    /// --flush-events; 4 × --flush-events (400 000) by default.
    #[arg(long)]
    max_unflushed_events: Option<usize>,
    /// How long a User Privacy API job waits before it runs, so that requests can still be
    /// withdrawn (`24h`, `90m`, `30s`).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    privacy_grace: Duration,
    /// How long an access request's file (DSAR API) can be downloaded before it is deleted.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    access_window: Duration,
    /// Memory, in MiB, that the segments a running deletion task rewrites may hold at once
    /// (each takes about three times its size while it is rewritten). A task over larger days
    /// takes longer, not more memory; a segment larger than this is rewritten alone.
    #[arg(long, env = "LETHE_TASK_MEMORY_MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    task_memory_mib: u64,
    /// How long after a failed webhook delivery it is tried again; the delay doubles with each
    /// attempt, up to an hour, for 10 attempts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    webhook_retry: Duration,
    /// Most property keys of each kind a segment gives a column of their own (the most
    /// frequent, if at least 1 % of its events carry them); the others share one column.
    #[arg(long, env = "LETHE_DENSE_KEYS", default_value_t = Layout::default().max_dense_keys)]
    dense_keys: usize,
    /// A key gets its own column in a segment only if at least 1 in this many of the
    /// segment's events carry it (0: no minimum).
    #[arg(long, env = "LETHE_DENSE_ONE_IN", default_value_t = Layout::default().dense_one_in)]
    dense_one_in: usize,
    /// Start even though a WAL file is damaged before its end: replay the records before the
    /// damage and drop the rest. Without it such a start is refused, naming the file and offset.
    #[arg(long)]
    salvage_wal: bool,
    /// Web origins browsers may send events from (`/2/httpapi`, `/batch`, `/identify`,
    /// `/groupidentify`), comma-separated,
    /// or `*` for any, as Amplitude allows.
    #[arg(long, env = "LETHE_CORS_ORIGINS", default_value = "*")]
    cors_origins: String,
    /// lethe runs behind a proxy that sets X-Forwarded-For: take the client's address (for
    /// `"ip": "$remote"` and for throttling) from it instead of the connection.
    #[arg(long)]
    trusted_proxy: bool,
    /// Events per second one device_id or user_id may send to `/2/httpapi` and `/identify`
    /// (averaged over 30 s) before its events get Amplitude's 429; 0 turns the limit off.
    #[arg(long, env = "LETHE_DEVICE_EPS_LIMIT", default_value_t = 30)]
    device_eps_limit: u32,
    /// The same limit for `/batch`.
    #[arg(long, env = "LETHE_BATCH_DEVICE_EPS_LIMIT", default_value_t = 1000)]
    batch_device_eps_limit: u32,
    /// Events one device_id or user_id may send in a rolling 24 h; 0 turns the quota off.
    #[arg(long, env = "LETHE_DEVICE_DAILY_QUOTA", default_value_t = 500_000)]
    device_daily_quota: u64,
    /// Run as one node of several on the same `--meta postgres://…` and `--segments
    /// s3://…`: every node accepts every request; one node at a time writes for each shard
    /// of the projects, the others forward its requests to it and take over when it dies.
    #[arg(long, env = "LETHE_CLUSTER")]
    cluster: bool,
    /// The URL the other nodes reach this one at (default: `http://` and --listen).
    #[arg(long, env = "LETHE_ADVERTISE")]
    advertise: Option<String>,
    /// How long the writer's lease lasts unless renewed: a dead writer's work resumes on
    /// another node within about this long.
    #[arg(long, env = "LETHE_WRITER_LEASE", default_value = "10s", value_parser = parse_duration)]
    writer_lease: Duration,
    /// How many shards a new cluster's projects fall into, each with a writer of its own
    /// (ingestion scales with them, up to one per node); fixed by the cluster's first node.
    #[arg(long, env = "LETHE_SHARDS", value_parser = clap::value_parser!(u32).range(1..=256))]
    shards: Option<u32>,
}

/// A duration with its unit, as every duration flag takes it (`50ms`, `30s`, `90m`, `24h`,
/// `2d`; humantime's forms), at most about a year.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}: give a number with a unit, e.g. 50ms, 30s, 90m, 24h, 2d"))?;
    if duration > Duration::from_secs(366 * 86_400) {
        return Err("must be at most about a year".into());
    }
    Ok(duration)
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let max_unflushed = args
        .max_unflushed_events
        .unwrap_or(args.flush_events.saturating_mul(4));
    if max_unflushed < args.flush_events {
        anyhow::bail!(
            "--max-unflushed-events ({max_unflushed}) must be at least --flush-events ({})",
            args.flush_events
        );
    }
    let config = ServerConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        admin_email: args.admin_email,
        admin_password: args.admin_password,
        meta: args.deployment.metadata.meta,
        store: StoreConfig {
            flush_interval: args.flush_interval,
            flush_events: args.flush_events,
            max_unflushed,
            salvage_wal: args.salvage_wal,
            segments: args.deployment.segments,
            layout: Layout {
                max_dense_keys: args.dense_keys,
                dense_one_in: args.dense_one_in,
            },
            ..StoreConfig::default()
        },
        privacy_grace: args.privacy_grace,
        access_window: args.access_window,
        task_memory: args.task_memory_mib << 20,
        webhook_retry: args.webhook_retry,
        trusted_proxy: args.trusted_proxy,
        rates: RateLimits {
            httpapi_eps: args.device_eps_limit,
            batch_eps: args.batch_device_eps_limit,
            daily_quota: args.device_daily_quota,
        },
        cluster: args.cluster.then(|| ClusterConfig {
            advertise: args
                .advertise
                .map(|url| url.trim_end_matches('/').to_string()),
            lease: args.writer_lease,
            shards: args.shards,
        }),
        cors: match args.cors_origins.trim() {
            "*" => CorsOrigins::Any,
            list => CorsOrigins::List(
                list.split(',')
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect(),
            ),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = match lethe_server::start(config.clone()).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("lethe: {e}");
                std::process::exit(1);
            }
        };
        if let Some(first) = &running.first_start {
            println!("lethe: first start: created the organization and the project \"Default\"");
            println!("  administrator: {}", first.admin_email);
            if let Some(password) = &first.admin_password {
                println!("  administrator password: {password}   (shown once)");
            }
            println!("  project id: {}", first.project.project.id);
            println!("  api_key: {}", first.project.project.api_key);
            println!("  secret_key: {}   (shown once)", first.project.secret_key);
        }
        println!("lethe: listening on http://{}", running.addr);
        tracing::info!(addr = %running.addr, data_dir = %config.data_dir.display(), "serving");
        running.serve(shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
