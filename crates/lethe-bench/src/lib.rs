//! `lethe bench`: reproducible benchmarks against a real server process on this machine.
//!
//! The data set is generated from a fixed seed: ~40 event types with Zipf-like frequency,
//! 3–12 event properties per type from a pool of 150 keys, 2–8 user properties per user from
//! a pool of 40 keys, 100 k users, upload times spread over 30 days. With `--wide`, each
//! event also carries 2 of 2 000 more event-property keys and each user 2 of 1 000 more
//! user-property keys, both Zipf-distributed, so most keys are rare.
//!
//! Its own crate, so the release binary carries no benchmark code: `lethe bench` exists only
//! in a build with the `bench` feature (`cargo build --profile quick-release --features
//! bench`). It drives that same binary as a server and as `lethe scan`, as an operator would.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use lethe_server::IMPORT_PART_BYTES;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Bulk import, concurrent /2/httpapi ingestion, bytes on disk per event.
    Ingest(IngestArgs),
    /// Four deletion tasks (by name, and one by value) on the imported data set: preview latency, submit to completed,
    /// bytes rewritten, residue.
    Delete(DeleteArgs),
    /// A User Privacy API job erasing users spread over the whole data set: run time,
    /// segments rewritten against live, residue.
    Privacy(PrivacyArgs),
    /// `--cluster` nodes on the deployment `LETHE_SEGMENTS` and `LETHE_META` name: /2/httpapi
    /// throughput through one node and through all (to one project per node), each node's
    /// CPU time, the time from a writer's death to its project's next 200 through another
    /// node, and to a running task's resumption.
    Cluster(ClusterArgs),
}

#[derive(Args)]
struct ClusterArgs {
    /// Nodes (the first is made first).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards of the projects (`--shards`): 1, one writer for all; as many as the nodes,
    /// one writer each.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Events sent through /2/httpapi in each throughput run.
    #[arg(long, default_value_t = 200_000)]
    http_events: usize,
    /// Concurrent /2/httpapi clients, spread over the nodes.
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// Events per /2/httpapi request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// The writer's lease (`--writer-lease`).
    #[arg(long, default_value = "3s")]
    lease: String,
    /// Throughput runs per configuration (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the nodes' data dirs go (a temp dir by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Args)]
struct PrivacyArgs {
    /// Also 2 000 event-property and 1 000 user-property keys, Zipf-distributed (most
    /// rare): the schema of a project that grew toward Amplitude's limits.
    #[arg(long)]
    wide: bool,
    /// Events in the data set.
    #[arg(long, default_value_t = 5_000_000)]
    events: usize,
    /// End users to erase (at most 100, the API's limit per request).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Where the data set and the server's data dir go (a temp dir by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Args)]
struct DeleteArgs {
    /// Also 2 000 event-property and 1 000 user-property keys, Zipf-distributed (most
    /// rare): the schema of a project that grew toward Amplitude's limits.
    #[arg(long)]
    wide: bool,
    /// Events in the data set.
    #[arg(long, default_value_t = 5_000_000)]
    events: usize,
    /// Preview runs per case (the median is reported).
    #[arg(long, default_value_t = 7)]
    preview_runs: usize,
    /// Where the data set and the server's data dir go (a temp dir by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Args)]
struct IngestArgs {
    /// Also 2 000 event-property and 1 000 user-property keys, Zipf-distributed (most
    /// rare): the schema of a project that grew toward Amplitude's limits.
    #[arg(long)]
    wide: bool,
    /// Events in the import data set.
    #[arg(long, default_value_t = 5_000_000)]
    events: usize,
    /// Events sent through /2/httpapi.
    #[arg(long, default_value_t = 1_000_000)]
    http_events: usize,
    /// Concurrent /2/httpapi clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events per /2/httpapi request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent import requests.
    #[arg(long, default_value_t = 2)]
    import_streams: usize,
    /// Events left unflushed in the WAL when a server on a fresh data dir is killed with
    /// `kill -9`: its restart replays them (0: skip this part).
    #[arg(long, default_value_t = 400_000)]
    replay_events: usize,
    /// Where the data set and the server's data dir go (a temp dir by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Ingest(a) => ingest(a),
        Which::Delete(a) => delete(a),
        Which::Privacy(a) => privacy(a),
        Which::Cluster(a) => cluster(a),
    }
}

/// The generated data set's shape.
pub struct Mix {
    rng: StdRng,
    type_weights: Vec<f64>,
    type_props: Vec<Vec<usize>>,
    users: usize,
    /// With the wide key space: cumulative Zipf weights of the extra event and user keys.
    wide: Option<(Vec<f64>, Vec<f64>)>,
}

/// Extra keys of the wide key space.
const WIDE_EVENT_KEYS: usize = 2_000;
const WIDE_USER_KEYS: usize = 1_000;

/// Cumulative Zipf (s = 1.1) weights of `n` ranks.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut total = 0.0;
    (0..n)
        .map(|i| {
            total += 1.0 / ((i + 1) as f64).powf(1.1);
            total
        })
        .collect()
}

/// A rank drawn from cumulative weights.
fn draw(rng: &mut StdRng, cdf: &[f64]) -> usize {
    let x = rng.gen_range(0.0..cdf[cdf.len() - 1]);
    cdf.partition_point(|c| *c <= x).min(cdf.len() - 1)
}

const EVENT_TYPES: usize = 40;
const EVENT_KEYS: usize = 150;
const USER_KEYS: usize = 40;
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
];

impl Mix {
    pub fn new(seed: u64, users: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let type_weights: Vec<f64> = (0..EVENT_TYPES)
            .map(|i| 1.0 / ((i + 1) as f64).powf(1.1))
            .collect();
        let type_props = (0..EVENT_TYPES)
            .map(|_| {
                let n = rng.gen_range(3..=12);
                let mut keys: Vec<usize> = (0..n).map(|_| rng.gen_range(0..EVENT_KEYS)).collect();
                keys.sort_unstable();
                keys.dedup();
                keys
            })
            .collect();
        Self {
            rng,
            type_weights,
            type_props,
            users,
            wide: None,
        }
    }

    /// The same mix with the wide key space (`--wide`) when `wide`.
    pub fn wide(mut self, wide: bool) -> Self {
        self.wide = wide.then(|| (zipf_cdf(WIDE_EVENT_KEYS), zipf_cdf(WIDE_USER_KEYS)));
        self
    }

    fn event_type(&mut self) -> usize {
        let total: f64 = self.type_weights.iter().sum();
        let mut x = self.rng.gen_range(0.0..total);
        for (i, w) in self.type_weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        EVENT_TYPES - 1
    }

    /// A property value whose kind depends on the key: words, integers, decimals, flags, ids.
    fn value(rng: &mut StdRng, key: usize, out: &mut String) {
        match key % 20 {
            0..=7 => write!(out, "\"{}\"", WORDS[rng.gen_range(0..(5 + key % 15))]),
            8..=13 => write!(out, "{}", rng.gen_range(0..1000)),
            14..=16 => write!(out, "{:.2}", rng.gen_range(0.0..100.0)),
            17..=18 => write!(out, "{}", rng.gen_bool(0.5)),
            _ => write!(out, "\"item-{}\"", rng.gen_range(0..1_000_000)),
        }
        .expect("writing to a String");
    }

    /// The fixed user properties of a user (2–8 keys, and 2 rare ones in the wide key
    /// space), as a JSON object.
    fn user_properties(&self, user: usize, out: &mut String) {
        let mut rng = StdRng::seed_from_u64(user as u64 ^ 0x5eed);
        let n = rng.gen_range(2..=8);
        out.push('{');
        let mut keys: Vec<usize> = (0..n).map(|_| rng.gen_range(0..USER_KEYS)).collect();
        keys.sort_unstable();
        keys.dedup();
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write!(out, "\"user_prop_{k}\":").expect("String");
            Self::value(&mut rng, *k, out);
        }
        if let Some((_, user_cdf)) = &self.wide {
            let mut rare = [draw(&mut rng, user_cdf), draw(&mut rng, user_cdf)];
            rare.sort_unstable();
            for k in rare.iter().copied().collect::<BTreeSet<_>>() {
                write!(out, ",\"wide_user_{k}\":").expect("String");
                Self::value(&mut rng, k, out);
            }
        }
        out.push('}');
    }

    /// One event as a JSON line; `upload_ms` set means import format with server fields.
    pub fn event(&mut self, upload_ms: Option<i64>, out: &mut String) {
        let t = self.event_type();
        let user = self.rng.gen_range(0..self.users);
        let insert: u128 = self.rng.gen();
        write!(out, "{{\"event_type\":\"event_type_{t}\",\"user_id\":\"user-{user}\",\"device_id\":\"device-{user:08x}\",").expect("String");
        match upload_ms {
            Some(ms) => write!(
                out,
                "\"server_upload_time\":\"{}\",\"event_time\":\"{}\",\"$insert_id\":\"{}\",",
                lethe_event::format_export_time(ms),
                lethe_event::format_export_time(ms - 1500),
                uuid_text(insert)
            ),
            None => write!(out, "\"insert_id\":\"{}\",", uuid_text(insert)),
        }
        .expect("String");
        out.push_str("\"platform\":\"");
        out.push_str(["iOS", "Android", "Web"][user % 3]);
        out.push_str("\",\"event_properties\":{");
        for (i, k) in self.type_props[t].clone().into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write!(out, "\"prop_{k}\":").expect("String");
            Self::value(&mut self.rng, k, out);
        }
        if let Some((event_cdf, _)) = &self.wide {
            let rare = [
                draw(&mut self.rng, event_cdf),
                draw(&mut self.rng, event_cdf),
            ];
            for k in rare.into_iter().collect::<BTreeSet<_>>() {
                write!(out, ",\"wide_{k}\":").expect("String");
                Self::value(&mut self.rng, k, out);
            }
        }
        out.push_str("},\"user_properties\":");
        self.user_properties(user, out);
        out.push('}');
    }
}

fn uuid_text(n: u128) -> String {
    uuid::Uuid::from_u128(n).to_string()
}

/// A `lethe serve` child process on a fresh data dir.
struct ServerProcess {
    child: Child,
    url: String,
    api_key: String,
    secret_key: String,
    token: String,
    project_id: i64,
}

impl ServerProcess {
    fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("LETHE_ADMIN_PASSWORD", "bench-password")
            // Quiet unless the bench's caller asks for more (`RUST_LOG=info`: the phases of
            // a store's opening, say).
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (mut url, mut api_key, mut secret_key, mut project_id) =
            (String::new(), String::new(), String::new(), 1);
        for line in lines.by_ref() {
            let line = line?;
            let value = |p: &str| {
                line.trim()
                    .strip_prefix(p)
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            };
            if let Some(v) = value("api_key:") {
                api_key = v;
            } else if let Some(v) = value("secret_key:") {
                secret_key = v;
            } else if let Some(v) = value("project id:") {
                project_id = v.parse()?;
            } else if let Some(v) = line.strip_prefix("lethe: listening on ") {
                url = v.to_string();
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let login: Value = reqwest::blocking::Client::new()
            .post(format!("{url}/api/v1/auth/login"))
            .json(&json!({"email": "admin@localhost", "password": "bench-password"}))
            .send()?
            .json()?;
        let token = login["token"].as_str().context("login token")?.to_string();
        Ok(Self {
            child,
            url,
            api_key,
            secret_key,
            token,
            project_id,
        })
    }

    /// Peak resident memory of the server so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Starts the server's peak resident memory again from what it holds now, so that the
    /// next [`Self::peak_rss_mib`] covers what follows alone.
    fn reset_peak_rss(&self) -> anyhow::Result<()> {
        Ok(std::fs::write(
            format!("/proc/{}/clear_refs", self.child.id()),
            "5",
        )?)
    }

    /// Live segments and their bytes, as the server's gauges report them: the same whether
    /// segments are files or objects in a bucket.
    fn live_segments(&self) -> anyhow::Result<(usize, u64)> {
        let text = reqwest::blocking::get(format!("{}/metrics", self.url))?.text()?;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .with_context(|| format!("{name} missing from /metrics"))
        };
        Ok((
            gauge("lethe_segments")? as usize,
            gauge("lethe_segment_bytes")? as u64,
        ))
    }

    /// Stops the process the hard way, as a machine lost would.
    /// The CPU time the server has used so far (user and system), from `/proc`.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        // The fields after the command's closing parenthesis; utime and stime are the
        // 12th and 13th of those, in clock ticks of 1/100 s.
        let ticks = stat.ok().and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>())
        });
        ticks.unwrap_or(0) as f64 / 100.0
    }

    fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Graceful stop (SIGTERM: flush, then exit).
    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .arg(self.child.id().to_string())
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

/// Generates the data set under a work dir and starts a server on a fresh data dir there.
fn prepare(
    events: usize,
    wide: bool,
    work_dir: Option<&Path>,
    serve_args: &[&str],
    planted: &[(i64, String)],
) -> anyhow::Result<(PathBuf, PathBuf, ServerProcess)> {
    let tmp = tempfile_dir(work_dir)?;
    let data_set = tmp.join("events.ndjson");
    let started = Instant::now();
    let bytes = generate(&data_set, events, wide, planted)?;
    println!(
        "generated {events} events ({:.0} MB) in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let server = ServerProcess::start(&tmp.join("data"), serve_args)?;
    Ok((tmp, data_set, server))
}

fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let (tmp, data_set, server) =
        prepare(args.events, args.wide, args.work_dir.as_deref(), &[], &[])?;
    let data_dir = tmp.join("data");
    let import_s = import(&server, &data_set, args.import_streams)?;
    let import_rss = server.peak_rss_mib();
    let http_s = http_ingest(
        &[&server.url],
        &[&server.api_key],
        (args.http_events, args.clients, args.batch),
        (1000, args.wide),
    )?;
    let peak_rss = server.peak_rss_mib();
    // A graceful stop flushes every event; the restarted server reports what is stored.
    server.stop()?;
    let restarted = ServerProcess::start(&data_dir, &[])?;
    let (segments, segment_bytes) = restarted.live_segments()?;
    restarted.stop()?;
    let replay = match args.replay_events {
        0 => None,
        n => Some(replay(&tmp.join("replay"), n, args.clients, args.batch)?),
    };
    let total = args.events + args.http_events;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| import of {} events | {:.2} s, {:.0} events/s |",
        args.events,
        import_s,
        args.events as f64 / import_s
    );
    println!("| peak RSS during import | {import_rss:.0} MiB |");
    println!(
        "| /2/httpapi requests retried after a 503 (flushes behind) | {} |",
        RETRIED_503.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "| /2/httpapi, {} clients × {}-event batches, {} events | {:.2} s, {:.0} events/s acknowledged |",
        args.clients, args.batch, args.http_events, http_s, args.http_events as f64 / http_s
    );
    println!("| peak RSS overall | {peak_rss:.0} MiB |");
    if let Some(restart_s) = replay {
        println!(
            "| restart after kill -9 with {} events unflushed (replayed from the WAL) | {:.2} s, {:.0} events/s |",
            args.replay_events,
            restart_s,
            args.replay_events as f64 / restart_s
        );
    }
    println!(
        "| bytes on disk per event | {:.1} B ({} segments, {:.0} MB for {} events) |",
        segment_bytes as f64 / total as f64,
        segments,
        segment_bytes as f64 / 1e6,
        total
    );
    if args.work_dir.is_none() {
        std::fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}

/// Sends `events` through /2/httpapi to a server on a fresh data dir that does not flush
/// them, kills it, and returns how long its restart takes to listen again: the WAL replay
/// a crashed node (or a cluster's next writer) does before it serves.
fn replay(data_dir: &Path, events: usize, clients: usize, batch: usize) -> anyhow::Result<f64> {
    let held = (events + batch).to_string();
    let no_flush = ["--flush-events", held.as_str(), "--flush-interval", "1h"];
    let server = ServerProcess::start(data_dir, &no_flush)?;
    http_ingest(
        &[&server.url],
        &[&server.api_key],
        (events, clients, batch),
        (2000, false),
    )?;
    server.kill9()?;
    let started = Instant::now();
    let restarted = ServerProcess::start(data_dir, &no_flush)?;
    let restart_s = started.elapsed().as_secs_f64();
    restarted.stop()?;
    Ok(restart_s)
}

fn tempfile_dir(base: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = base.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("lethe-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes the import data set, upload times ascending over 30 days ending now.
/// Writes the data set; `planted` lines (upload time, JSON, in time order) are placed among
/// the generated events of their time, so they land in the same segments.
fn generate(
    path: &Path,
    events: usize,
    wide: bool,
    planted: &[(i64, String)],
) -> anyhow::Result<u64> {
    let mut mix = Mix::new(42, 100_000).wide(wide);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let end = lethe_meta::now_ms() - 3_600_000;
    let start = end - 30 * lethe_event::DAY_MS;
    let step = (end - start) as f64 / events as f64;
    let mut line = String::with_capacity(1024);
    let mut bytes = 0u64;
    let mut planted = planted.iter().peekable();
    for i in 0..events {
        line.clear();
        let at = start + (i as f64 * step) as i64;
        while let Some((_, extra)) = planted.next_if(|(t, _)| *t <= at) {
            line.push_str(extra);
            line.push('\n');
        }
        mix.event(Some(at), &mut line);
        line.push('\n');
        out.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    out.flush()?;
    Ok(bytes)
}

/// Sends the data set in parts over `streams` concurrent requests; seconds taken.
fn import(server: &ServerProcess, path: &Path, streams: usize) -> anyhow::Result<f64> {
    let url = format!(
        "{}/api/v1/projects/{}/import",
        server.url, server.project_id
    );
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
    let rx = Arc::new(Mutex::new(rx));
    let started = Instant::now();
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let (rx, url, token) = (rx.clone(), url.clone(), server.token.clone());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let client = reqwest::blocking::Client::builder().timeout(None).build()?;
                let mut stored = 0;
                loop {
                    let part = match rx.lock().map_err(|_| anyhow::anyhow!("lock"))?.recv() {
                        Ok(p) => p,
                        Err(_) => return Ok(stored),
                    };
                    let answer: Value = client
                        .post(&url)
                        .bearer_auth(&token)
                        .body(part)
                        .send()?
                        .json()?;
                    if answer["rejected"].as_u64() != Some(0) {
                        bail!("import rejected lines: {answer}");
                    }
                    stored += answer["ingested"].as_u64().unwrap_or(0);
                }
            })
        })
        .collect();
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut part = Vec::with_capacity(IMPORT_PART_BYTES + (1 << 20));
    loop {
        let n = reader.read_until(b'\n', &mut part)?;
        if (n == 0 && !part.is_empty()) || part.len() >= IMPORT_PART_BYTES {
            tx.send(std::mem::take(&mut part))?;
        }
        if n == 0 {
            break;
        }
    }
    drop(tx);
    let mut stored = 0;
    for w in workers {
        stored += w
            .join()
            .map_err(|_| anyhow::anyhow!("import worker panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("imported {stored} events in {secs:.2} s");
    Ok(secs)
}

/// Concurrent clients sending pre-built batches to /2/httpapi; seconds until all acknowledged.
/// Sends `events` through /2/httpapi from `clients` concurrent clients in `batch`-event
/// requests, client `c` to `urls[c % urls.len()]`, its events drawn from seed `seed + c`
/// (insert_ids differ between seeds: a run with other seeds sends no duplicates); the
/// seconds until every one is answered 200.
/// Requests the benchmarks' clients sent again after a 503, reported with the figures.
static RETRIED_503: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn http_ingest(
    urls: &[&str],
    api_keys: &[&str],
    (events, clients, batch): (usize, usize, usize),
    (seed, wide): (u64, bool),
) -> anyhow::Result<f64> {
    let per_client = events / clients / batch;
    let bodies: Vec<Vec<String>> = (0..clients)
        .map(|c| {
            let mut mix = Mix::new(seed + c as u64, 100_000).wide(wide);
            // Each node gets every project's requests alike: client c goes to node
            // c mod urls, with project (c / urls) mod api_keys.
            let api_key = api_keys[(c / urls.len()) % api_keys.len()];
            (0..per_client)
                .map(|_| {
                    let mut body = format!("{{\"api_key\":\"{api_key}\",\"events\":[");
                    for i in 0..batch {
                        if i > 0 {
                            body.push(',');
                        }
                        mix.event(None, &mut body);
                    }
                    body.push_str("]}");
                    body
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let clients: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(c, bodies)| {
            let url = format!("{}/2/httpapi", urls[c % urls.len()]);
            std::thread::spawn(move || -> anyhow::Result<()> {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()?;
                for body in bodies {
                    // A 503 (flushes behind ingestion) is retried, as the SDKs do.
                    loop {
                        let r = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()?;
                        match r.status().as_u16() {
                            200 => break,
                            503 => {
                                RETRIED_503.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(500));
                            }
                            _ => bail!("ingestion answered {}: {}", r.status(), r.text()?),
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The most frequent event property keys of the mix (weighted by event type frequency).
fn common_event_keys(mix: &Mix, n: usize) -> Vec<String> {
    let mut weight = vec![0.0; EVENT_KEYS];
    for (t, keys) in mix.type_props.iter().enumerate() {
        for k in keys {
            weight[*k] += mix.type_weights[t];
        }
    }
    let mut keys: Vec<usize> = (0..EVENT_KEYS).collect();
    keys.sort_by(|a, b| weight[*b].total_cmp(&weight[*a]));
    keys.into_iter()
        .take(n)
        .map(|k| format!("prop_{k}"))
        .collect()
}

fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let (tmp, data_set, server) =
        prepare(args.events, args.wide, args.work_dir.as_deref(), &[], &[])?;
    let data_dir = tmp.join("data");
    import(&server, &data_set, 2)?;
    let import_rss = server.peak_rss_mib();
    server.reset_peak_rss()?;
    let now = lethe_meta::now_ms();
    let day = lethe_event::DAY_MS;
    let week = |from_days: i64| (now - (from_days + 7) * day, now - from_days * day);
    let (a, b, c, d) = (week(1), week(8), week(15), week(22));
    let removed = common_event_keys(&Mix::new(42, 1), 2);
    // The most frequent key whose values are words (`Mix::value`), for a value predicate.
    let worded = common_event_keys(&Mix::new(42, 1), 40)
        .into_iter()
        .find(|k| {
            k["prop_".len()..]
                .parse::<usize>()
                .is_ok_and(|k| k % 20 <= 7)
        })
        .context("no word-valued key")?;
    let user_key = "user_prop_7";
    // Unique markers in the data each case removes, and one that must stay.
    let mid = |(from, to): (i64, i64)| lethe_event::format_export_time((from + to) / 2);
    let markers = [
        json!({"event_type": "event_type_1", "user_id": "bench-marker-a", "server_upload_time": mid(a), "event_properties": {"note": "BENCH-DEL-A"}}),
        json!({"event_type": "event_type_0", "user_id": "bench-marker-b", "server_upload_time": mid(b),
               "event_properties": {removed[0].clone(): "BENCH-DEL-B", removed[1].clone(): "BENCH-DEL-B2", "note": "BENCH-KEEP-B"}}),
        json!({"event_type": "event_type_2", "user_id": "bench-marker-c", "server_upload_time": mid(c),
               "event_properties": {"note": "BENCH-KEEP-C"}, "user_properties": {user_key: "BENCH-DEL-C"}}),
        json!({"event_type": "event_type_0", "user_id": "bench-marker-d", "server_upload_time": mid(d),
               "event_properties": {worded.clone(): WORDS[0], "note": "BENCH-DEL-D"}}),
        json!({"event_type": "event_type_0", "user_id": "bench-marker-e", "server_upload_time": mid(d),
               "event_properties": {worded.clone(): WORDS[1], "note": "BENCH-KEEP-D"}}),
    ];
    let lines: Vec<String> = markers.iter().map(Value::to_string).collect();
    let client = reqwest::blocking::Client::builder().timeout(None).build()?;
    let project_url = format!("{}/api/v1/projects/{}", server.url, server.project_id);
    client
        .post(format!("{project_url}/import"))
        .bearer_auth(&server.token)
        .body(lines.join("\n"))
        .send()?
        .error_for_status()?;

    let body = |name: &str, (from, to): (i64, i64), clauses: Value| json!({"name": name, "start": rfc3339(from), "end": rfc3339(to), "clauses": clauses, "confirm": "DELETE"});
    let cases = [
        (
            "(a) 2 event types (~12 % and ~0.6 %), 7 days",
            body(
                "a",
                a,
                json!([{"kind": "event", "event_types": ["event_type_1", "event_type_31"]}]),
            ),
        ),
        (
            "(b) 2 event properties on all events, 7 days",
            body(
                "b",
                b,
                json!([{"kind": "event_property", "properties": removed}]),
            ),
        ),
        (
            "(c) 1 user property on 3 event types, 7 days",
            body(
                "c",
                c,
                json!([{"kind": "user_property", "properties": [user_key],
            "event_types": ["event_type_0", "event_type_1", "event_type_2"], "from_profiles": true}]),
            ),
        ),
        (
            "(d) 2 event types where a common property is one word, 7 days",
            body(
                "d",
                d,
                json!([{"kind": "event", "event_types": ["event_type_0", "event_type_1"],
            "where": {"property": {"type": "event", "name": worded}, "op": "is", "values": [WORDS[0]]}}]),
            ),
        ),
    ];
    println!();
    println!("| case | preview median | submit → completed | server run | server CPU | events deleted | values removed | segments rewritten / live | bytes rewritten | read / filter / write+commit / unlink ms | disk limit at 370 MB/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, task) in cases {
        let mut previews = Vec::new();
        let mut shown = Value::Null;
        for _ in 0..args.preview_runs {
            let started = Instant::now();
            shown = client
                .post(format!("{project_url}/deletion-tasks/preview"))
                .bearer_auth(&server.token)
                .json(&task)
                .send()?
                .json()?;
            previews.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        if shown.get("totals").is_none() {
            bail!("preview failed: {shown}");
        }
        // The server's own CPU from submission to completion: on a bucket, what the task
        // costs lethe apart from the storage and the database serving it.
        let cpu_before = server.cpu_seconds();
        let started = Instant::now();
        let submitted: Value = client
            .post(format!("{project_url}/deletion-tasks"))
            .bearer_auth(&server.token)
            .json(&task)
            .send()?
            .json()?;
        let id = submitted["id"].as_i64().context("task id")?;
        let done = loop {
            let t: Value = client
                .get(format!("{}/api/v1/deletion-tasks/{id}", server.url))
                .bearer_auth(&server.token)
                .send()?
                .json()?;
            match t["status"].as_str() {
                Some("completed") => break t,
                Some("failed") => bail!("task failed: {t}"),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let wall = started.elapsed().as_secs_f64();
        let cpu = server.cpu_seconds() - cpu_before;
        let r = &done["result"];
        let started_at =
            chrono::DateTime::parse_from_rfc3339(done["started_at"].as_str().unwrap_or_default())?;
        let finished_at =
            chrono::DateTime::parse_from_rfc3339(done["finished_at"].as_str().unwrap_or_default())?;
        let run = (finished_at - started_at).num_milliseconds() as f64 / 1000.0;
        let bytes = r["bytes_rewritten"].as_f64().unwrap_or(0.0);
        let t = &r["timings"];
        println!(
            "| {name} | {:.1} ms | {wall:.2} s | {run:.2} s | {cpu:.2} s | {} | {} | {} / {} | {:.0} MB | {} / {} / {} / {} | {:.2} s |",
            median(previews),
            r["events_deleted"],
            r["event_property_values_removed"].as_u64().unwrap_or(0) + r["user_property_values_removed"].as_u64().unwrap_or(0),
            r["segments_rewritten"],
            server.live_segments()?.0,
            bytes / 1e6,
            t["read_ms"], t["filter_ms"], t["write_commit_ms"], t["unlink_ms"],
            2.0 * bytes / 370e6,
        );
        if r["matches_preview"] != true {
            println!("  (final counts differ from the preview: {r})");
        }
    }
    let peak_rss = server.peak_rss_mib();
    let needles: Vec<String> = [
        "BENCH-DEL-A",
        "BENCH-DEL-B",
        "BENCH-DEL-B2",
        "BENCH-DEL-C",
        "BENCH-DEL-D",
        "BENCH-KEEP-B",
        "BENCH-KEEP-C",
        "BENCH-KEEP-D",
    ]
    .map(String::from)
    .to_vec();
    let found = scan(&data_dir, &needles)?;
    println!();
    println!("peak RSS of the server: {import_rss:.0} MiB during the import, {peak_rss:.0} MiB during the previews and tasks");
    println!("residue: markers still on disk after the four tasks: {:?} (the BENCH-KEEP-* markers must be, the BENCH-DEL-* must not)", found);
    server.stop()?;
    if args.work_dir.is_none() {
        std::fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}

/// The needles `lethe scan` (this binary, as an operator would run it) finds under `data_dir`.
fn scan(data_dir: &Path, needles: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["scan", "--data-dir"]).arg(data_dir);
    for n in needles {
        cmd.arg("--needle").arg(n);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("lethe scan failed: {}", out.status);
    }
    let text = String::from_utf8(out.stdout)?;
    Ok(needles
        .iter()
        .filter(|n| text.lines().any(|l| l.starts_with(&format!("found {n:?}"))))
        .cloned()
        .collect())
}

/// The device id the mix gives a user: fixed width, so it is a unique needle for `scan`.
fn device_of(user: usize) -> String {
    format!("device-{user:08x}")
}

/// Users active only on three consecutive days (a test cohort, say), five events each,
/// planted among the generated events: erasing them shows what the bloom filters prune.
fn cohort(users: usize) -> (Vec<(i64, String)>, Vec<String>) {
    let first_day = lethe_meta::now_ms() - 20 * lethe_event::DAY_MS;
    let total = users as i64 * 5;
    let lines = (0..total)
        .map(|n| {
            let (u, at) = (n % users as i64, first_day + n * 3 * lethe_event::DAY_MS / total);
            let line = json!({"event_type": "event_type_3", "user_id": format!("cohort-user-{u}"),
                "device_id": format!("cohort-device-{u:04}"),
                "server_upload_time": lethe_event::format_export_time(at), "event_properties": {"note": "COHORT"}});
            (at, line.to_string())
        })
        .collect();
    (
        lines,
        (0..users).map(|u| format!("cohort-user-{u}")).collect(),
    )
}

/// Erases `user_ids` through the User Privacy API and prints the job's row.
fn erase(
    server: &ServerProcess,
    label: &str,
    user_ids: &[String],
    live: usize,
) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder().timeout(None).build()?;
    let started = Instant::now();
    let job: Value = client
        .post(format!("{}/api/2/deletions/users", server.url))
        .basic_auth(&server.api_key, Some(&server.secret_key))
        .json(&json!({"user_ids": user_ids, "requester": "bench"}))
        .send()?
        .error_for_status()?
        .json()?;
    let day = job["day"].as_str().context("job day")?.to_string();
    let done = loop {
        let jobs: Value = client
            .get(format!(
                "{}/api/2/deletions/users?start_day={day}&end_day={day}",
                server.url
            ))
            .basic_auth(&server.api_key, Some(&server.secret_key))
            .send()?
            .json()?;
        let newest = jobs
            .as_array()
            .and_then(|j| j.last())
            .cloned()
            .unwrap_or_default();
        if newest["status"] == "done" {
            break newest;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed().as_secs_f64();
    let task: Value = client
        .get(format!(
            "{}/api/v1/deletion-tasks/{}",
            server.url, done["task_id"]
        ))
        .bearer_auth(&server.token)
        .send()?
        .json()?;
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(task[k].as_str().unwrap_or_default());
    let run = (at("finished_at")? - at("started_at")?).num_milliseconds() as f64 / 1000.0;
    let r = &task["result"];
    let t = &r["timings"];
    println!(
        "| {label} | {} | {wall:.2} s | {run:.2} s | {} | {} / {live} | {:.0} MB | {} / {} / {} / {} / {} / {} |",
        r["users_erased"],
        r["events_deleted"],
        r["segments_rewritten"],
        r["bytes_rewritten"].as_f64().unwrap_or(0.0) / 1e6,
        t["flush_ms"], t["read_ms"], t["filter_ms"], t["write_commit_ms"], t["unlink_ms"], t["finish_ms"],
    );
    Ok(())
}

fn privacy(args: PrivacyArgs) -> anyhow::Result<()> {
    let grace = ["--privacy-grace", "0s"];
    let users = args.users.min(100);
    let (planted, cohort) = cohort(users);
    let (tmp, data_set, server) = prepare(
        args.events,
        args.wide,
        args.work_dir.as_deref(),
        &grace,
        &planted,
    )?;
    let data_dir = tmp.join("data");
    import(&server, &data_set, 2)?;
    let live = server.live_segments()?.0;
    // Generated users are spread over the id space, each with events on most of the 30 days.
    let erased: Vec<usize> = (0..users).map(|i| (i * 997 + 13) % 100_000).collect();
    let kept: Vec<usize> = (0..5).map(|i| (i * 991 + 500) % 100_000).collect();
    let user_ids: Vec<String> = erased.iter().map(|u| format!("user-{u}")).collect();
    println!();
    println!("| users | erased | request → done | server run | events deleted | segments rewritten / live | bytes rewritten | flush / read / filter / write+commit / unlink / finish ms |");
    println!("|---|---|---|---|---|---|---|---|");
    erase(&server, "active on all 30 days", &user_ids, live)?;
    erase(&server, "active on 3 days only", &cohort, live)?;
    let mut needles: Vec<String> = erased.iter().chain(&kept).map(|u| device_of(*u)).collect();
    needles.push("cohort-device-0007".into());
    let found = scan(&data_dir, &needles)?;
    let residue = erased
        .iter()
        .filter(|u| found.contains(device_of(**u).as_str()))
        .count();
    let intact = kept
        .iter()
        .filter(|u| found.contains(device_of(**u).as_str()))
        .count();
    println!();
    println!("peak RSS of the server: {:.0} MiB", server.peak_rss_mib());
    println!("residue: {residue} of {} erased users' device ids still on disk (must be 0); {intact} of {} kept users' found (must be all); a cohort user's device id found: {} (must be false)", erased.len(), kept.len(), found.contains("cohort-device-0007"));
    server.stop()?;
    if args.work_dir.is_none() {
        std::fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}

/// Starts `nodes` cluster nodes with one project each, measures ingestion through the
/// first and through all (with each node's CPU time), then kills a writer twice: once while
/// another node's client sends to its project, once in a running task.
fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    for var in ["LETHE_SEGMENTS", "LETHE_META"] {
        if std::env::var(var).is_err() {
            bail!("{var} must name the deployment's bucket and PostgreSQL database");
        }
    }
    let tmp = tempfile_dir(args.work_dir.as_deref())?;
    let shards = args.shards.to_string();
    let serve = [
        "--cluster",
        "--writer-lease",
        &args.lease,
        "--shards",
        &shards,
    ];
    let mut nodes = vec![ServerProcess::start(&tmp.join("node-0"), &serve)?];
    for n in 1..args.nodes {
        nodes.push(ServerProcess::start(
            &tmp.join(format!("node-{n}")),
            &serve,
        )?);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let token = nodes[0].token.clone();
    let shards_of = |url: &str| -> anyhow::Result<Vec<u64>> {
        let health: Value = client.get(format!("{url}/healthz")).send()?.json()?;
        let shards = health["shards"].as_array().cloned().unwrap_or_default();
        Ok(shards.iter().filter_map(Value::as_u64).collect())
    };
    // Every shard with a writer (each node with one, when there are as many shards).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut held = Vec::new();
        for node in &nodes {
            held.push(shards_of(&node.url)?);
        }
        let spread = held.iter().all(|h| !h.is_empty()) || args.shards < args.nodes as u32;
        if held.iter().map(Vec::len).sum::<usize>() == args.shards as usize && spread {
            break;
        }
        if Instant::now() > deadline {
            bail!("the shards never got a writer each: {held:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // One project per node (project p is in shard p mod --shards).
    let mut projects = vec![(nodes[0].project_id, nodes[0].api_key.clone())];
    for n in 1..args.nodes {
        let made: Value = client
            .post(format!("{}/api/v1/projects", nodes[0].url))
            .bearer_auth(&token)
            .json(&json!({ "name": format!("bench {n}") }))
            .send()?
            .json()?;
        let id = made["id"].as_i64().context("a project id")?;
        projects.push((
            id,
            made["api_key"].as_str().context("an API key")?.to_string(),
        ));
    }
    let api_keys: Vec<&str> = projects.iter().map(|(_, key)| key.as_str()).collect();
    // Through the first node alone, then through every node, alternately, each run with
    // events of its own; a first run (not counted) makes the users known.
    let shape = (args.http_events, args.clients, args.batch);
    let first_url = [nodes[0].url.as_str()];
    let urls: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
    http_ingest(&urls, &api_keys, shape, (10_000, false))?;
    let (mut one, mut all) = (Vec::new(), Vec::new());
    let mut cpu = vec![0.0; nodes.len()];
    for run in 0..args.runs as u64 {
        one.push(http_ingest(
            &first_url,
            &api_keys,
            shape,
            (20_000 + 2_000 * run, false),
        )?);
        let before: Vec<f64> = nodes.iter().map(ServerProcess::cpu_seconds).collect();
        all.push(http_ingest(
            &urls,
            &api_keys,
            shape,
            (21_000 + 2_000 * run, false),
        )?);
        for (n, node) in nodes.iter().enumerate() {
            cpu[n] += node.cpu_seconds() - before[n];
        }
    }
    let (one, all) = (median(one), median(all));
    let mut held = Vec::new();
    for node in &nodes {
        held.push(shards_of(&node.url)?);
    }

    // The writer of the first project's shard dies while a client of another node sends
    // to that project: the time to the next 200 there.
    let (project, api_key) = projects[0].clone();
    let shard = project as u64 % u64::from(args.shards);
    let writer_of = |nodes: &[ServerProcess]| -> anyhow::Result<usize> {
        for (n, node) in nodes.iter().enumerate() {
            if shards_of(&node.url)?.contains(&shard) {
                return Ok(n);
            }
        }
        bail!("no node writes for shard {shard}")
    };
    let body = json!({"api_key": api_key, "events": [{"event_type": "Failover", "user_id": "bench-user-1"}]});
    let writer = nodes.remove(writer_of(&nodes)?);
    let other = nodes[0].url.clone();
    let killed = Instant::now();
    writer.kill9()?;
    let served = loop {
        let r = client
            .post(format!("{other}/2/httpapi"))
            .json(&body)
            .send()?;
        if r.status().as_u16() == 200 {
            break killed.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    // That shard's next writer dies in a running task (it rewrites the day every event
    // above is in): the time until another node starts it again.
    let writer = writer_of(&nodes)?;
    let other = nodes[(writer + 1) % nodes.len()].url.clone();
    let now = lethe_meta::now_ms();
    let spec = json!({"name": "bench failover", "start": rfc3339(now - 3_600_000),
        "end": rfc3339(now + 1), "clauses": [{"kind": "event", "event_types": ["event_type_39"]}],
        "confirm": "DELETE"});
    let task: Value = client
        .post(format!("{other}/api/v1/projects/{project}/deletion-tasks"))
        .bearer_auth(&token)
        .json(&spec)
        .send()?
        .json()?;
    let id = task["id"].as_i64().context("task id")?;
    let status = |id: i64| -> anyhow::Result<Value> {
        Ok(client
            .get(format!("{other}/api/v1/deletion-tasks/{id}"))
            .bearer_auth(&token)
            .send()?
            .json()?)
    };
    loop {
        match status(id)?["status"].as_str() {
            Some("running") => break,
            Some("queued") => {}
            other => bail!("the task was {other:?} before the writer could be killed in it"),
        }
    }
    let killed = Instant::now();
    nodes.remove(writer).kill9()?;
    let starts = |id: i64| -> anyhow::Result<usize> {
        let audit: Value = client
            .get(format!("{other}/api/v1/audit"))
            .bearer_auth(&token)
            .send()?
            .json()?;
        Ok(audit
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["action"] == "task.started" && e["task_id"] == id)
                    .count()
            })
            .unwrap_or(0))
    };
    while starts(id)? < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let resumed = killed.elapsed().as_secs_f64();
    while status(id)?["status"] != "completed" {
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in nodes {
        node.stop()?;
    }
    let total_cpu: f64 = cpu.iter().sum();
    println!();
    println!(
        "| measure ({} nodes, {} shards, writer lease {}) | value |",
        args.nodes, args.shards, args.lease
    );
    println!("|---|---|");
    println!(
        "| /2/httpapi through the first node alone, {} clients × {}-event batches, {} projects (median of {}) | {:.0} events/s |",
        args.clients,
        args.batch,
        projects.len(),
        args.runs,
        args.http_events as f64 / one
    );
    println!(
        "| /2/httpapi through all {} nodes, the same clients spread over them | {:.0} events/s ({:.2}× the first node alone) |",
        args.nodes,
        args.http_events as f64 / all,
        one / all
    );
    let shares: Vec<String> = cpu
        .iter()
        .zip(&held)
        .map(|(c, h)| format!("{:.0} % (shards {h:?})", 100.0 * c / total_cpu))
        .collect();
    println!(
        "| the nodes' CPU in the runs through all: {:.1} s, each node's share | {} |",
        total_cpu,
        shares.join(", ")
    );
    println!(
        "| requests retried after a 503 (flushes behind) | {} |",
        RETRIED_503.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("| a writer killed → its project's next 200 through another node | {served:.2} s |");
    println!("| that shard's next writer killed in a running task → the task started again | {resumed:.2} s |");
    if args.work_dir.is_none() {
        std::fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}
