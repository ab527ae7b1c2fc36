//! Several nodes: three `lethe serve --cluster` nodes on one PostgreSQL and one bucket (their
//! own, on loopback: Debian's PostgreSQL and moto's S3 server). Events go in through all three
//! with the official Python SDK while the writer is killed; a deletion task is submitted to a
//! standby and its writer dies in the middle of it (a failpoint, as kill -9). Afterwards every
//! acknowledged event is exported exactly once, the task completed once with the counts of
//! its preview, and the deleted markers are nowhere in the bucket or the database.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{scan_with, PgCluster, S3Server, Server};
use serde_json::{json, Value};

/// Acknowledged events stay in the WAL objects until the task's flush: nothing else flushes.
const NODE: &[&str] = &[
    "--cluster",
    "--writer-lease",
    "2s",
    "--flush-interval",
    "1h",
    "--flush-events",
    "1000000",
];

/// The SDK sending to one node, and the insert_ids the server acknowledged so far.
struct Sender {
    child: Child,
    acked: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Sender {
    fn start(server: &Server, api_key: &str, tag: &str, events: usize) -> Sender {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/cluster_ingest.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([&server.url, api_key, tag, &events.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let acked = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let answer: Value = serde_json::from_str(&line).unwrap();
                    if answer["code"] == 200 {
                        let id = answer["insert_id"].as_str().unwrap().to_string();
                        acked.lock().unwrap().push(id);
                    }
                }
            })
        };
        Sender {
            child,
            acked,
            reader,
        }
    }

    fn acked_so_far(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(mut self) -> Vec<String> {
        self.child.wait().unwrap();
        self.reader.join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

fn role(server: &Server) -> String {
    let health = server.health();
    health["role"].as_str().unwrap_or_default().to_string()
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn export_all(server: &Server, keys: &common::Keys) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = server.export_today(keys);
        // A standby answers 503 while the writer changes: the export is empty then.
        let (status, _) = server.basic_get(keys, "/api/2/taxonomy/event");
        if status == 200 {
            return events;
        }
        assert!(Instant::now() < deadline, "the cluster never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A PostgreSQL cluster and an S3 server of their own, and the variables that make a node
/// keep its metadata and segments there (the database and the prefix named `name`).
fn shared_services(name: &str) -> (PgCluster, S3Server, Vec<(&'static str, String)>) {
    let postgres = PgCluster::start();
    let s3 = S3Server::start();
    let mut env = s3.env();
    env.push(("LETHE_SEGMENTS", format!("s3://lethe-tests/{name}")));
    env.push(("LETHE_META", postgres.database(name)));
    (postgres, s3, env)
}

#[test]
fn three_nodes_lose_no_acknowledged_event_and_finish_a_task_once_across_kills() {
    let (_postgres, _s3, env) = shared_services("cluster");
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| -> PathBuf { tmp.path().join(name) };
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        env.iter().cloned().chain(extra.iter().cloned()).collect()
    };
    let start = |name: &str, extra: &[(&'static str, String)]| {
        let env = with(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start_with_env(&dir(name), NODE, &env)
    };
    // b and c die (as kill -9 would) in the middle of a deletion's rewrite, once each if it
    // falls to them; a, restarted without it, finishes whatever is left.
    let dies_in_task = [("LETHE_FAILPOINT", "rewrite:after_write".to_string())];
    let a = start("a", &[]);
    let keys = a.first_start_keys();
    // The first node listens before it has taken the lease and opened the store (it answers
    // as a standby meanwhile): the others start once it serves as the writer.
    let deadline = Instant::now() + Duration::from_secs(60);
    while role(&a) != "writer" {
        assert!(
            Instant::now() < deadline,
            "the first node never became the writer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut b = start("b", &dies_in_task);
    let mut c = start("c", &dies_in_task);
    assert_eq!(
        (role(&a), role(&b), role(&c)),
        ("writer".into(), "standby".into(), "standby".into())
    );

    // Ingestion through all three at once; the writer is killed while it goes on.
    let senders: Vec<Sender> = [(&a, "na"), (&b, "nb"), (&c, "nc")]
        .into_iter()
        .map(|(server, tag)| Sender::start(server, &keys.api_key, tag, 300))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while senders.iter().any(|s| s.acked_so_far() < 20) {
        assert!(Instant::now() < deadline, "ingestion never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a_dir = a.kill9();
    let acked: Vec<Vec<String>> = senders.into_iter().map(Sender::finish).collect();
    let events_acked: usize = acked.iter().map(Vec::len).sum();
    assert_eq!(
        (acked[1].len(), acked[2].len()),
        (300, 300),
        "the standbys held their clients' requests through the failover"
    );
    let a = Server::start_with_env(
        &a_dir,
        NODE,
        &env.iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );

    // Every acknowledged event is there once, before the task.
    let before = export_all(&a, &keys);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &before {
        *seen.entry(e["$insert_id"].as_str().unwrap()).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "no event twice");
    for id in acked.iter().flatten() {
        assert_eq!(
            seen.get(id.as_str()),
            Some(&1),
            "acknowledged {id} is exported"
        );
    }
    let purge_before = before.iter().filter(|e| e["event_type"] == "Purge").count();

    // A task submitted to a standby; its writer dies in the middle of it.
    let token = a.admin_token();
    std::thread::sleep(Duration::from_millis(2));
    let now = chrono::Utc::now();
    let body = json!({
        "name": "Remove the Purge events",
        "start": rfc3339(now - chrono::Duration::hours(1)),
        "end": rfc3339(now),
        "clauses": [{"kind": "event", "event_types": ["Purge"]}],
        "confirm": "DELETE",
    });
    let (s, task) = a.post_as(
        &token,
        &format!("/api/v1/projects/{}/deletion-tasks", keys.project_id),
        &body,
    );
    assert_eq!(s, 202, "{task}");
    assert_eq!(task["preview"]["totals"]["events_deleted"], purge_before);
    let id = task["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let (status, task) = a.get_as(&token, &format!("/api/v1/deletion-tasks/{id}"));
        if status == 200 && task["status"] == "completed" {
            break task;
        }
        assert_ne!(task["status"], "failed", "{task}");
        assert!(
            Instant::now() < deadline,
            "the task never completed: {task}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        b.has_exited() || c.has_exited(),
        "the task's first writer died in the middle of it"
    );
    assert_eq!(done["result"]["events_deleted"], purge_before);
    assert_eq!(done["result"]["matches_preview"], true);
    let (_, audit) = a.get_as(&token, "/api/v1/audit");
    let completions = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "task.completed" && e["task_id"] == id)
        .count();
    assert_eq!(completions, 1, "completed exactly once: {audit}");

    // Every kept event once; no deleted one; the deleted markers nowhere, the kept ones kept.
    let after = export_all(&a, &keys);
    assert_eq!(after.len(), before.len() - purge_before);
    assert!(after.iter().all(|e| e["event_type"] == "Keep"));
    let kept: Vec<&str> = after
        .iter()
        .map(|e| e["$insert_id"].as_str().unwrap())
        .collect();
    let keeps_before: Vec<&str> = before
        .iter()
        .filter(|e| e["event_type"] == "Keep")
        .map(|e| e["$insert_id"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), keeps_before.len());
    assert!(events_acked > 0);
    let needles = [
        "keep-marker-na",
        "keep-marker-nb",
        "keep-marker-nc",
        "purge-marker-na",
        "purge-marker-nb",
        "purge-marker-nc",
    ];
    let scan_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        scan_with(&a.data_dir, &scan_env, &needles),
        vec!["keep-marker-na", "keep-marker-nb", "keep-marker-nc"],
        "the bucket (every object, raw and decoded) and the database hold no deleted marker"
    );
    drop((b, c));
}

/// The shards a node writes for, as its /healthz names them.
fn shards_of(server: &Server) -> Vec<u64> {
    let health = server.health();
    let shards = health["shards"].as_array().cloned().unwrap_or_default();
    shards.iter().filter_map(Value::as_u64).collect()
}

/// Three nodes and three shards: each node writes for one shard of the projects, so three
/// writers ingest side by side; any node takes any project's request to its shard's
/// writer. A writer killed with `kill -9` hands its shard to a survivor, which replays
/// what it acknowledged; a deletion task of a project runs on its shard's writer. When the
/// node comes back, the survivor with two shards hands one over to it.
#[test]
fn three_shards_spread_over_three_nodes_and_move_when_a_node_dies() {
    let (_postgres, _s3, env) = shared_services("shards");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tmp = tempfile::tempdir().unwrap();
    // A node that writes for a shard takes a second one only after two leases: the nodes
    // start well within that, so each takes one.
    let mut args = [NODE, &["--shards", "3"]].concat();
    assert_eq!(args[1], "--writer-lease");
    args[2] = "5s";
    let start = |name: &str| Server::start_with_env(&tmp.path().join(name), &args, &env);
    let a = start("a");
    let keys = a.first_start_keys();
    let (b, c) = (start("b"), start("c"));
    let nodes = [a, b, c];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held: Vec<Vec<u64>> = Vec::new();
    while held.iter().map(Vec::len).sum::<usize>() != 3 || held.iter().any(Vec::is_empty) {
        assert!(
            Instant::now() < deadline,
            "the shards never spread: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        held = nodes.iter().map(shards_of).collect();
    }

    // A node that asks for another count than the cluster's refuses to start, saying so.
    let refused = common::lethe()
        .args([
            "serve",
            "--cluster",
            "--shards",
            "2",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("d"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("fall into 3 shards"), "{said}");

    // Each store's gauges carry its shard: a node may write for several.
    for (node, shards) in nodes.iter().zip(&held) {
        let metrics = node.get_text("/metrics");
        let gauge = format!("lethe_segments{{shard=\"{}\"}}", shards[0]);
        assert!(metrics.contains(&gauge), "{gauge} in {metrics}");
    }

    // Three projects, one in each shard (project p is in shard p mod 3).
    let token = nodes[1].admin_token();
    let mut projects = vec![keys];
    for name in ["Two", "Three"] {
        let (status, made) = nodes[2].post_as(&token, "/api/v1/projects", &json!({ "name": name }));
        assert_eq!(status, 201, "{made}");
        projects.push(common::Keys::of_project(&made));
    }
    let shard_of = |keys: &common::Keys| (keys.project_id % 3) as u64;
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); 3];
    let send = |via: &Server, p: usize, n: usize, sent: &mut Vec<Vec<String>>| {
        let ids: Vec<String> = (0..n)
            .map(|i| format!("p{p}-{}-{i}", sent[p].len()))
            .collect();
        let events: Vec<Value> = ids
            .iter()
            .map(
                |id| json!({"event_type": "Keep", "user_id": format!("user-{p}"), "insert_id": id}),
            )
            .collect();
        let (status, body) = via.send(&projects[p], json!(events));
        assert_eq!(status, 200, "{body}");
        sent[p].extend(ids);
    };
    // Every project's events through every node.
    for via in &nodes {
        for p in 0..3 {
            send(via, p, 5, &mut sent);
        }
    }
    let exported = |via: &Server, keys: &common::Keys| -> Vec<String> {
        let mut ids: Vec<String> = export_all(via, keys)
            .iter()
            .map(|e| e["$insert_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    for (p, keys) in projects.iter().enumerate() {
        let mut expected = sent[p].clone();
        expected.sort();
        assert_eq!(
            exported(&nodes[p], keys),
            expected,
            "project {}",
            keys.project_id
        );
    }

    // A request another node forwarded is not forwarded again: a node that does not write
    // for its shard says so, and the forwarding node looks for the writer again.
    let meta_url = env.iter().find(|(k, _)| *k == "LETHE_META").unwrap().1;
    let secret = common::psql(meta_url, "SELECT token FROM cluster_secret");
    let elsewhere = nodes
        .iter()
        .find(|n| !shards_of(n).contains(&shard_of(&projects[0])))
        .unwrap();
    let body =
        json!({"api_key": projects[0].api_key, "events": [{"event_type": "Keep", "user_id": "u"}]});
    let misdirected = reqwest::blocking::Client::new()
        .post(elsewhere.url("/2/httpapi"))
        .header("x-lethe-forwarded-by", secret.trim())
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(misdirected.status().as_u16(), 421);

    // `lethe verify` reads every shard's WAL: one object per request so far (nothing flushes).
    let verified = common::lethe()
        .args(["verify", "--data-dir"])
        .arg(&nodes[0].data_dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{report}");
    assert!(report.contains(", 9 WAL files and"), "{report}");

    // The writer of project 2's shard dies with its events unflushed (nothing flushes);
    // ingestion for it through another node waits for the next writer.
    let victim = nodes
        .iter()
        .position(|n| shards_of(n).contains(&shard_of(&projects[1])))
        .unwrap();
    let [a, b, c] = nodes;
    let mut alive: Vec<Server> = Vec::new();
    for (i, node) in [a, b, c].into_iter().enumerate() {
        match i == victim {
            true => drop(node.kill9()),
            false => alive.push(node),
        }
    }
    send(&alive[0], 1, 5, &mut sent);
    send(&alive[1], 0, 5, &mut sent);
    for (p, keys) in projects.iter().enumerate() {
        let mut expected = sent[p].clone();
        expected.sort();
        assert_eq!(
            exported(&alive[p % 2], keys),
            expected,
            "every acknowledged event of project {} once",
            keys.project_id
        );
    }
    let held: Vec<u64> = alive.iter().flat_map(shards_of).collect();
    assert_eq!(
        held.len(),
        3,
        "the survivors write for every shard: {held:?}"
    );

    // A task of project 3, submitted through a node that may not write for its shard.
    let (status, task) = alive[0].submit_last_hour(
        &token,
        projects[2].project_id,
        json!({"name": "All of three", "clauses": [{"kind": "event", "event_types": ["Keep"]}], "confirm": "DELETE"}),
    );
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, task) = alive[1].get_as(&token, &format!("/api/v1/deletion-tasks/{id}"));
        if task["status"] == "completed" {
            assert_eq!(task["result"]["events_deleted"], sent[2].len());
            break;
        }
        assert_ne!(task["status"], "failed", "{task}");
        assert!(
            Instant::now() < deadline,
            "the task never completed: {task}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(exported(&alive[0], &projects[2]).is_empty());
    assert_eq!(
        exported(&alive[1], &projects[0]).len(),
        sent[0].len(),
        "other projects keep theirs"
    );

    // The dead node comes back: the survivor that writes for two shards hands one over to
    // it, while events keep coming through every node; none waits past its answer.
    alive.push(start(["a", "b", "c"][victim]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    loop {
        let held: Vec<Vec<u64>> = alive.iter().map(shards_of).collect();
        if held.iter().all(|h| h.len() == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shards never spread again: {held:?}"
        );
        send(&alive[round % 3], round % 2, 5, &mut sent);
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(round > 0, "the shards spread before any event was sent");
    // A node shows the gauges of the stores it has, not of a shard it handed over.
    for node in &alive {
        let metrics = node.get_text("/metrics");
        for shard in 0..3 {
            let gauge = format!("lethe_segments{{shard=\"{shard}\"}}");
            let held = shards_of(node).contains(&shard);
            assert_eq!(metrics.contains(&gauge), held, "{gauge} in {metrics}");
        }
    }
    for p in 0..2 {
        send(&alive[2], p, 5, &mut sent);
        let mut expected = sent[p].clone();
        expected.sort();
        assert_eq!(
            exported(&alive[p], &projects[p]),
            expected,
            "every acknowledged event of project {} once, across the handover",
            projects[p].project_id
        );
    }
}
