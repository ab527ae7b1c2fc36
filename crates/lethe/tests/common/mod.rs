//! Test harness: runs the real `lethe` binary on an ephemeral port over a temp data dir and
//! talks HTTP to it.
#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{json, Value};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery";

/// A running server.
pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub client: Client,
    pub stdout: Vec<String>,
}

/// Keys of the project created on first start.
#[derive(Clone, Debug)]
pub struct Keys {
    pub project_id: i64,
    pub api_key: String,
    pub secret_key: String,
}

impl Keys {
    /// The keys in a `POST /api/v1/projects` answer.
    pub fn of_project(p: &Value) -> Keys {
        Keys {
            project_id: p["id"].as_i64().unwrap(),
            api_key: p["api_key"].as_str().unwrap().into(),
            secret_key: p["secret_key"].as_str().unwrap().into(),
        }
    }
}

impl Server {
    /// A new server on a fresh data dir.
    pub fn start() -> (Server, Keys) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut server = Server::start_on(&dir, &[]);
        server._tmp = Some(tmp);
        let keys = server.first_start_keys();
        (server, keys)
    }

    /// A server on `dir` (new or existing) with extra `serve` arguments.
    pub fn start_on(dir: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(dir, extra, &[])
    }

    /// A server on `dir` with extra arguments and environment (e.g. `LETHE_FAILPOINT`).
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(lethe(), dir, extra, env)
    }

    /// A server whose address space is capped at `mib` MiB (`ulimit -v`): allocations past it
    /// fail, as under a container's memory limit.
    pub fn start_with_memory_limit(dir: &Path, extra: &[&str], mib: u64) -> Server {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -v {} && exec \"$0\" \"$@\"", mib * 1024),
            env!("CARGO_BIN_EXE_lethe"),
        ]);
        Server::spawn(cmd, dir, extra, &[])
    }

    fn spawn(mut cmd: Command, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        without_shell_deployment(&mut cmd);
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .envs(deployment(dir))
            .envs(env.iter().copied())
            .env("LETHE_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("LETHE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lethe binary runs");
        // The server's log goes on to the test's output, and its last lines are kept to say
        // why a server stopped before it listened.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let relay = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in stderr.lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    let mut log = log.lock().unwrap();
                    if log.len() == 40 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            })
        };
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stdout = Vec::new();
        let url = loop {
            let Some(line) = lines.next() else {
                let status = child.wait().unwrap();
                relay.join().unwrap();
                let log: Vec<String> = log.lock().unwrap().drain(..).collect();
                panic!(
                    "the server stopped ({status}) before it printed its address; its last log lines:\n{}",
                    log.join("\n")
                );
            };
            let line = line.unwrap();
            stdout.push(line.clone());
            if let Some(addr) = line.strip_prefix("lethe: listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url,
            data_dir: dir.to_path_buf(),
            _tmp: None,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            stdout,
        }
    }

    fn printed(&self, label: &str) -> Option<String> {
        self.stdout.iter().find_map(|l| {
            l.trim()
                .strip_prefix(label)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
    }

    /// The keys printed on first start.
    pub fn first_start_keys(&self) -> Keys {
        Keys {
            project_id: self.printed("project id:").unwrap().parse().unwrap(),
            api_key: self.printed("api_key:").unwrap(),
            secret_key: self.printed("secret_key:").unwrap(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's peak resident memory (VmHWM), in MiB.
    pub fn peak_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024
    }

    /// Resets the server's peak resident memory to what it holds now, and returns that.
    pub fn reset_peak(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").unwrap();
        self.peak_mib()
    }

    /// What `/healthz` says.
    pub fn health(&self) -> Value {
        self.client
            .get(self.url("/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Stops the server the hard way: SIGKILL, no flush, no cleanup.
    pub fn kill9(mut self) -> PathBuf {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let dir = self.data_dir.clone();
        if let Some(tmp) = self._tmp.take() {
            std::mem::forget(tmp); // caller restarts on the same dir
        }
        dir
    }

    /// Waits (bounded) for the server to exit by itself, e.g. at a failpoint.
    pub fn wait_exit(mut self, timeout: Duration) -> PathBuf {
        let deadline = std::time::Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(tmp) = self._tmp.take() {
            std::mem::forget(tmp);
        }
        self.data_dir.clone()
    }

    /// The actions of the audit trail, oldest first.
    pub fn audit_actions(&self, token: &str) -> Vec<String> {
        let (_, audit) = self.get_as(token, "/api/v1/audit");
        audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    }

    /// Whether the process has exited (by itself: a failpoint, a lost lease).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client.post(self.url(path)).json(body).send().unwrap()
    }

    /// Sends events to `/2/httpapi`.
    pub fn send(&self, keys: &Keys, events: Value) -> (u16, Value) {
        let r = self.post_json(
            "/2/httpapi",
            &json!({ "api_key": keys.api_key, "events": events }),
        );
        status_json(r)
    }

    /// Signs in and returns a bearer token.
    pub fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = status_json(self.post_json(
            "/api/v1/auth/login",
            &json!({ "email": email, "password": password }),
        ));
        assert_eq!(status, 200, "login failed: {body}");
        body["token"].as_str().unwrap().to_string()
    }

    pub fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    }

    pub fn bearer(&self, rb: RequestBuilder, token: &str) -> (u16, Value) {
        status_json(rb.bearer_auth(token).send().unwrap())
    }

    /// Bulk-imports `body` (NDJSON, gzip or an export zip) into a project as `token`.
    pub fn import(
        &self,
        token: &str,
        project_id: i64,
        body: impl Into<reqwest::blocking::Body>,
    ) -> (u16, Value) {
        let url = self.url(&format!("/api/v1/projects/{project_id}/import"));
        self.bearer(self.client.post(url).body(body), token)
    }

    /// The text of `GET path` (e.g. `/metrics`).
    pub fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// The value of an unlabelled metric in `/metrics` (0 before it is first recorded).
    pub fn metric(&self, name: &str) -> f64 {
        let prefix = format!("{name} ");
        self.get_text("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// `GET path` with a bearer token.
    pub fn get_as(&self, token: &str, path: &str) -> (u16, Value) {
        self.bearer(self.client.get(self.url(path)), token)
    }

    /// `POST path` with a JSON body and a bearer token.
    pub fn post_as(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        self.bearer(self.client.post(self.url(path)).json(body), token)
    }

    /// `POST path` with a JSON body and a bearer token to a server set to abort in the work
    /// the request starts: the answer, or `None` when the process died first (see
    /// [`answer_unless_aborted`]).
    pub fn post_before_abort(&self, token: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
        answer_unless_aborted(
            self.client
                .post(self.url(path))
                .json(body)
                .bearer_auth(token),
        )
    }

    /// The newest deletion task (the list is newest first), e.g. one whose submission's answer
    /// was lost to a crash.
    pub fn newest_task(&self, token: &str) -> Value {
        let (status, tasks) = self.get_as(token, "/api/v1/deletion-tasks");
        assert_eq!(status, 200, "{tasks}");
        tasks[0].clone()
    }

    /// Submits `task` (its name and clauses, and any other field) as a confirmed deletion
    /// task of `project_id` over the last hour, as `token`.
    pub fn submit_last_hour(&self, token: &str, project_id: i64, mut task: Value) -> (u16, Value) {
        let now = chrono::Utc::now();
        task["start"] = json!((now - chrono::Duration::hours(1)).to_rfc3339());
        task["end"] = json!(now.to_rfc3339());
        task["confirm"] = json!("DELETE");
        let path = format!("/api/v1/projects/{project_id}/deletion-tasks");
        self.post_as(token, &path, &task)
    }

    /// Adds the member `email` (as the administrator `admin`) and signs them in: their token.
    pub fn member_token(&self, admin: &str, email: &str) -> String {
        let password = "long enough password";
        let (status, body) = self.post_as(
            admin,
            "/api/v1/users",
            &json!({"email": email, "password": password, "role": "member"}),
        );
        assert_eq!(status, 201, "{body}");
        self.login(email, password)
    }

    /// Downloads an export and returns every event line, in archive order.
    pub fn export(&self, keys: &Keys, start: &str, end: &str) -> (u16, Vec<Value>) {
        let r = self
            .client
            .get(self.url(&format!("/api/2/export?start={start}&end={end}")))
            .basic_auth(&keys.api_key, Some(&keys.secret_key))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        if status != 200 {
            return (status, vec![]);
        }
        (status, unzip_events(&r.bytes().unwrap()))
    }

    /// Exports yesterday and today (UTC), where all test events land even across midnight.
    pub fn export_today(&self, keys: &Keys) -> Vec<Value> {
        let now = chrono::Utc::now();
        let day = now.format("%Y%m%d").to_string();
        let yesterday = (now - chrono::Duration::days(1))
            .format("%Y%m%d")
            .to_string();
        let (status, events) = self.export(keys, &format!("{yesterday}T00"), &format!("{day}T23"));
        assert!(
            status == 200 || status == 404,
            "export failed with {status}"
        );
        events
    }

    /// `GET /v1/userprofile?{query}` with `Authorization: Api-Key <secret>`.
    pub fn user_profile(&self, secret: &str, query: &str) -> (u16, Value) {
        status_json(
            self.client
                .get(self.url(&format!("/v1/userprofile?{query}")))
                .header("Authorization", format!("Api-Key {secret}"))
                .send()
                .unwrap(),
        )
    }

    pub fn basic_get(&self, keys: &Keys, path: &str) -> (u16, Value) {
        status_json(
            self.client
                .get(self.url(path))
                .basic_auth(&keys.api_key, Some(&keys.secret_key))
                .send()
                .unwrap(),
        )
    }

    /// `POST path` with a JSON body and the project's keys (Basic auth).
    pub fn basic_post(&self, keys: &Keys, path: &str, body: &Value) -> (u16, Value) {
        status_json(
            self.client
                .post(self.url(path))
                .basic_auth(&keys.api_key, Some(&keys.secret_key))
                .json(body)
                .send()
                .unwrap(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a request to a server set to abort in the work the request starts: the answer, or
/// `None` when the process died before it was written whole. The work can reach the failpoint
/// before the answer goes out (a worker may take a task before its 202 is sent); what the
/// server accepted is durable either way, and the test finds it after the restart.
pub fn answer_unless_aborted(request: RequestBuilder) -> Option<(u16, Value)> {
    let response = match request.send() {
        Ok(response) => response,
        Err(e) if e.is_request() => return None,
        Err(e) => panic!("{e}"),
    };
    let status = response.status().as_u16();
    let text = response.text().ok()?;
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

pub fn status_json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Every event line of an export zip, with each entry's name checked against Amplitude's.
pub fn unzip_events(bytes: &[u8]) -> Vec<Value> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut events = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().to_string();
        assert!(name.ends_with("#0.json.gz"), "entry name {name}");
        let mut gz = Vec::new();
        entry.read_to_end(&mut gz).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        events.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    events
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn basic(key: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
    )
}

/// The deployment a server on `dir` runs in, as environment variables: nothing by default
/// (everything in `dir`). scripts/test.sh runs the server, deletion, privacy and crash suites
/// again with segments on S3 (`LETHE_TEST_S3_ENDPOINT`: moto; each dir gets a prefix of its
/// own in the `lethe-tests` bucket) and with the metadata on PostgreSQL too
/// (`LETHE_TEST_POSTGRES`: an administrator URL; each dir gets a database of its own).
/// `lethe scan` of `dir` then searches that prefix and that database as well. With
/// `LETHE_TEST_CLUSTER` too, every server is a one-node cluster (`--cluster`: its WAL in the
/// bucket, the writer's lease).
pub fn deployment(dir: &Path) -> Vec<(&'static str, String)> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    let name = format!("{:016x}", hasher.finish());
    let mut env = Vec::new();
    if let Ok(endpoint) = std::env::var("LETHE_TEST_S3_ENDPOINT") {
        env.extend([
            ("LETHE_SEGMENTS", format!("s3://lethe-tests/{name}")),
            ("AWS_ENDPOINT", endpoint),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "lethe-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "lethe-test".into()),
        ]);
    }
    if let Ok(admin) = std::env::var("LETHE_TEST_POSTGRES") {
        let database = format!("lethe_{name}");
        let exists = psql(
            &admin,
            &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
        );
        if exists.trim().is_empty() {
            psql(&admin, &format!("CREATE DATABASE {database}"));
        }
        let (server, _) = admin
            .rsplit_once('/')
            .expect("admin URL ends with /database");
        env.push(("LETHE_META", format!("{server}/{database}")));
    }
    if std::env::var("LETHE_TEST_CLUSTER").is_ok() {
        env.push(("LETHE_CLUSTER", "true".into()));
    }
    env
}

/// What a command prints, once it succeeded (its errors otherwise fail the test).
pub fn stdout_of(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs SQL on PostgreSQL with psql; returns what it printed (unaligned, tuples only).
pub fn psql(url: &str, sql: &str) -> String {
    stdout_of(Command::new("psql").args([url, "-XAtqc", sql]))
}

/// Runs one SQL statement on the metadata database of the server on `dir`, wherever the
/// deployment keeps it (SQLite in `dir`, or its PostgreSQL database); returns the changed
/// row count.
pub fn meta_sql(dir: &Path, sql: &str) -> u64 {
    let on_postgres = deployment(dir)
        .into_iter()
        .find(|(k, _)| *k == "LETHE_META");
    let out = match on_postgres {
        Some((_, url)) => psql(
            &url,
            &format!("WITH changed AS ({sql} RETURNING 1) SELECT COUNT(*) FROM changed"),
        ),
        None => {
            let script = "import sqlite3, sys\n\
                c = sqlite3.connect(sys.argv[1])\n\
                print(c.execute(sys.argv[2]).rowcount)\n\
                c.commit()\n";
            stdout_of(
                Command::new("python3")
                    .args(["-c", script])
                    .arg(dir.join("meta.sqlite"))
                    .arg(sql),
            )
        }
    };
    out.trim().parse().expect("a row count")
}

/// Runs `lethe scan` and returns the needles it found somewhere.
pub fn scan(dir: &Path, needles: &[&str]) -> Vec<String> {
    scan_with(dir, &[], needles)
}

/// The `lethe` binary under test, in the deployment the test run chooses (`deployment`),
/// never the one the developer's shell names (`LETHE_META`, say).
pub fn lethe() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lethe"));
    without_shell_deployment(&mut command);
    command
}

/// Clears the variables that name a deployment, which `deployment` sets as the run needs.
fn without_shell_deployment(command: &mut Command) {
    for variable in ["LETHE_SEGMENTS", "LETHE_META", "LETHE_CLUSTER"] {
        command.env_remove(variable);
    }
}

/// Runs `lethe scan` with environment `env` (e.g. `LETHE_SEGMENTS` and `AWS_*`) and returns
/// the needles it found somewhere.
pub fn scan_with(dir: &Path, env: &[(&str, &str)], needles: &[&str]) -> Vec<String> {
    let text = scan_output(dir, env, needles);
    let mut found: Vec<String> = needles
        .iter()
        .filter(|n| text.lines().any(|l| l.starts_with(&format!("found {n:?}"))))
        .map(|n| n.to_string())
        .collect();
    found.sort();
    found
}

/// The objects (segments, WAL files, database files, …) where `lethe scan` finds `needle`.
pub fn objects_holding(dir: &Path, needle: &str) -> BTreeSet<String> {
    let prefix = format!("found {needle:?} in ");
    scan_output(dir, &[], &[needle])
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|l| {
            l.rsplit_once(" (")
                .map_or(l, |(object, _)| object)
                .to_string()
        })
        .collect()
}

fn scan_output(dir: &Path, env: &[(&str, &str)], needles: &[&str]) -> String {
    let mut cmd = lethe();
    cmd.args(["scan", "--data-dir"])
        .arg(dir)
        .envs(deployment(dir))
        .envs(env.iter().copied());
    for n in needles {
        cmd.args(["--needle", n]);
    }
    stdout_of(&mut cmd)
}

/// Files under `dir` that an interrupted segment upload left (`<key>#<n>`).
pub fn staged_uploads(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().contains('#') {
                found.push(path);
            }
        }
    }
    found
}

/// Events per event type in the live segments of the deployment on `dir`, as DuckDB reads
/// them through the published manifests.
pub fn duckdb_counts(dir: &Path) -> Value {
    duckdb_counts_where(dir, "true")
}

/// Events per event type in the live segments that meet an SQL `condition`, as DuckDB reads
/// them through the published manifests.
pub fn duckdb_counts_where(dir: &Path, condition: &str) -> Value {
    let script = format!(
        "{}/tests/compat/duckdb_count.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = stdout_of(
        Command::new("python3")
            .arg(script)
            .arg(dir)
            .arg(condition)
            .envs(deployment(dir)),
    );
    serde_json::from_str(&out).unwrap()
}

/// What `python3 ARGS…` prints, once it succeeded.
pub fn python(args: &[&str]) -> String {
    stdout_of(Command::new("python3").args(args))
}

/// A PostgreSQL cluster of its own, stopped and removed when dropped.
pub struct PgCluster {
    pub admin: String,
    pub dir: PathBuf,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        PgCluster::start_with(&[])
    }

    /// A cluster TCP clients reach over TLS only, its certificate signed by `ca()`.
    pub fn start_tls() -> PgCluster {
        PgCluster::start_with(&["tls"])
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn start_with(args: &[&str]) -> PgCluster {
        let line = stdout_of(Command::new("bash").arg(pg_script()).args(args));
        let (admin, dir) = line.trim().split_once(' ').expect("URL and directory");
        PgCluster {
            admin: admin.to_string(),
            dir: dir.into(),
        }
    }

    /// A new database's URL.
    pub fn database(&self, name: &str) -> String {
        psql(&self.admin, &format!("CREATE DATABASE {name}"));
        format!("{}/{name}", self.admin.rsplit_once('/').unwrap().0)
    }

    /// Crashes PostgreSQL (immediate shutdown: no checkpoint, sessions cut).
    pub fn down(&self) {
        self.run("down");
    }

    /// Starts it again.
    pub fn up(&self) {
        self.run("up");
    }

    pub fn run(&self, command: &str) {
        stdout_of(
            Command::new("bash")
                .arg(pg_script())
                .arg(command)
                .arg(&self.dir),
        );
    }

    /// The files PostgreSQL keeps tables, indexes and statistics in (not its WAL), with every
    /// change written there.
    pub fn table_files(&self) -> PathBuf {
        psql(&self.admin, "CHECKPOINT");
        self.dir.join("data/base")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(pg_script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

fn pg_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg_server.sh")
}

/// moto's S3 server of its own (scripts/s3_server.py, on an ephemeral loopback port, with the
/// bucket `lethe-tests`), stopped when dropped.
pub struct S3Server {
    child: Child,
    /// `http://host:port`.
    pub endpoint: String,
}

impl S3Server {
    pub fn start() -> S3Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (scripts/test.sh installs moto[server])");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.trim().is_empty(), "moto's S3 server did not start");
        S3Server {
            child,
            endpoint: format!("http://{}", line.trim()),
        }
    }

    /// Creates a bucket; with `versioned`, turns versioning on.
    pub fn bucket(&self, name: &str, versioned: bool) {
        let mut code = String::from("s3.create_bucket(Bucket=b)");
        if versioned {
            code += "\ns3.put_bucket_versioning(Bucket=b, VersioningConfiguration={'Status': 'Enabled'})";
        }
        self.boto3(name, &code);
    }

    /// Every key in the bucket (boto3, signed as any S3 client would).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.boto3(
            bucket,
            "for o in s3.list_objects_v2(Bucket=b).get('Contents', []): print(o['Key'])",
        )
        .lines()
        .map(String::from)
        .collect()
    }

    /// Runs `code` with `s3` (a boto3 client of this server) and `b` (the bucket).
    pub fn boto3(&self, bucket: &str, code: &str) -> String {
        let script = format!(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
             \x20   aws_access_key_id='lethe-test', aws_secret_access_key='lethe-test')\n\
             b = sys.argv[2]\n{code}\n"
        );
        python(&["-c", &script, &self.endpoint, bucket])
    }

    /// The environment that points lethe at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "lethe-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "lethe-test".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
