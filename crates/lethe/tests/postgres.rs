//! Metadata on PostgreSQL (`--meta postgres://…`), against a throwaway cluster of Debian's
//! PostgreSQL on loopback (scripts/pg_server.sh): an erased user's identifiers and profile
//! leave no bytes in the database's files (only its WAL, the operator's part, keeps them), a
//! second node on the same database refuses to start, a PostgreSQL crash and restart under
//! a running server loses no acknowledged event, and `sslmode=require` means TLS with the
//! server's certificate verified. (The server, deletion, privacy and crash
//! suites run on PostgreSQL too: scripts/test.sh.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{psql, scan_with, status_json, PgCluster as Cluster, Server};
use serde_json::{json, Value};

fn identify(server: &Server, api_key: &str, user: &str, phone: &str) {
    let identification = json!({"user_id": user, "user_properties": {"$set": {"phone": phone}}});
    let (s, _) = status_json(server.post_json(
        "/identify",
        &json!({"api_key": api_key, "identification": identification}),
    ));
    assert_eq!(s, 200);
}

/// Waits until `n` profiles are in PostgreSQL: they are committed with the flush that writes
/// their events' segment.
fn identified(url: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(url, "SELECT COUNT(*) FROM profiles").trim() != n.to_string() {
        assert!(
            Instant::now() < deadline,
            "the profiles were never committed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks the User Privacy API to erase `user`.
fn erase(server: &Server, keys: &common::Keys, user: &str) {
    let (s, body) = server.basic_post(
        keys,
        "/api/2/deletions/users",
        &json!({"user_ids": [user], "requester": "dpo@example.com"}),
    );
    assert_eq!(s, 200, "{body}");
}

/// Waits until every privacy job of the project is done.
fn erased(server: &Server, keys: &common::Keys) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !privacy_jobs(server, keys)
        .iter()
        .all(|j| j["status"] == "done")
    {
        assert!(Instant::now() < deadline, "the erasure never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each partition of `identities` and `profiles` with the file it is in now: a rewrite
/// (`VACUUM FULL`) moves it to a new one.
fn partition_files(url: &str) -> BTreeMap<String, String> {
    psql(
        url,
        "SELECT c.relname, c.relfilenode FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
         WHERE i.inhparent IN ('identities'::regclass, 'profiles'::regclass)",
    )
    .lines()
    .filter_map(|l| l.split_once('|'))
    .map(|(name, file)| (name.to_string(), file.to_string()))
    .collect()
}

fn privacy_jobs(server: &Server, keys: &common::Keys) -> Vec<Value> {
    let day = |d: chrono::DateTime<chrono::Utc>| d.format("%Y-%m-%d").to_string();
    let now = chrono::Utc::now();
    let query = format!(
        "/api/2/deletions/users?start_day={}&end_day={}",
        day(now - chrono::Duration::days(1)),
        day(now + chrono::Duration::days(7))
    );
    let (s, body) = server.basic_get(keys, &query);
    assert_eq!(s, 200, "{body}");
    body.as_array().unwrap().clone()
}

#[test]
fn an_erased_user_leaves_no_bytes_in_postgresql_and_a_second_node_is_refused() {
    let cluster = Cluster::start();
    let url = cluster.database("lethe_erasure");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let env = [("LETHE_META", url.as_str())];
    let flags = ["--privacy-grace", "1s", "--flush-interval", "100ms"];
    let server = Server::start_with_env(&dir, &flags, &env);
    let keys = server.first_start_keys();
    assert!(
        !dir.join("meta.sqlite").exists(),
        "the metadata is in PostgreSQL, not the data dir"
    );
    identify(&server, &keys.api_key, "pg-bob", "PG-BOB-PHONE");
    identify(&server, &keys.api_key, "pg-alice", "PG-ALICE-PHONE");
    identified(&url, 2);
    let needles = ["PG-BOB-PHONE", "pg-bob", "PG-ALICE-PHONE", "pg-alice"];
    assert_eq!(
        scan_with(&dir, &env, &["PG-BOB-PHONE"]),
        vec!["PG-BOB-PHONE"],
        "lethe scan finds a profile value in PostgreSQL's columns"
    );
    // Planner statistics are a copy of column values: take them now, as autovacuum would.
    psql(&url, "ANALYZE");
    let mut before = scan_with(&cluster.table_files(), &[], &needles);
    before.sort();
    assert_eq!(
        before,
        ["PG-ALICE-PHONE", "PG-BOB-PHONE", "pg-alice", "pg-bob"],
        "the raw search sees PostgreSQL's table files"
    );

    // A second node on the same database would share the manifest and the queue unchecked.
    let second = common::lethe()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("second"))
        .env("LETHE_META", &url)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another lethe node"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // The partitions that hold the user to erase: the erasure rewrites those, not the tables.
    let bobs: BTreeSet<String> = psql(
        &url,
        "SELECT tableoid::regclass::text FROM identities WHERE amplitude_id IN
             (SELECT amplitude_id FROM identities WHERE external_id = 'pg-bob')
         UNION SELECT tableoid::regclass::text FROM profiles WHERE user_id = 'pg-bob'",
    )
    .lines()
    .map(str::to_string)
    .collect();
    assert!(
        bobs.iter().any(|p| p.starts_with("identities_p"))
            && bobs.iter().any(|p| p.starts_with("profiles_p")),
        "{bobs:?}"
    );
    let files_before = partition_files(&url);
    assert_eq!(files_before.len(), 32, "16 partitions of each table");

    erase(&server, &keys, "pg-bob");
    erased(&server, &keys);
    assert_eq!(
        scan_with(&dir, &env, &needles),
        vec!["PG-ALICE-PHONE", "pg-alice"],
        "no column of PostgreSQL holds the erased user"
    );
    assert_eq!(
        scan_with(&cluster.table_files(), &[], &needles),
        vec!["PG-ALICE-PHONE", "pg-alice"],
        "no table, index or statistics file of PostgreSQL holds the erased user"
    );
    let files_after = partition_files(&url);
    let rewritten: BTreeSet<String> = files_before
        .iter()
        .filter(|(name, file)| files_after.get(*name) != Some(*file))
        .map(|(name, _)| name.clone())
        .collect();
    assert_eq!(
        rewritten, bobs,
        "the erasure rewrote the partitions that held the user, and only those"
    );
    assert_eq!(psql(&url, "SELECT COUNT(*) FROM purge_pending").trim(), "0");
}

/// A process that dies after an erasure deleted its users' rows, before the partitions that
/// held them were rewritten, rewrites them when the task resumes: what to rewrite was
/// recorded with the deletion.
#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn an_erasure_interrupted_before_its_purge_purges_when_it_resumes() {
    let cluster = Cluster::start();
    let url = cluster.database("lethe_erasure_crash");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let flags = ["--privacy-grace", "1s", "--flush-interval", "100ms"];
    let meta = ("LETHE_META", url.as_str());
    let failing = [meta, ("LETHE_FAILPOINT", "delete:after_flush")];
    let server = Server::start_with_env(&dir, &flags, &failing);
    let keys = server.first_start_keys();
    identify(&server, &keys.api_key, "crash-bob", "CRASH-BOB-PHONE");
    identify(&server, &keys.api_key, "crash-alice", "CRASH-ALICE-PHONE");
    identified(&url, 2);
    erase(&server, &keys, "crash-bob");
    let dir = server.wait_exit(Duration::from_secs(60));
    assert_eq!(
        psql(
            &url,
            "SELECT COUNT(*) FROM identities WHERE external_id = 'crash-bob'"
        )
        .trim(),
        "0",
        "the rows were deleted before the crash"
    );
    let pending = psql(&url, "SELECT relation FROM purge_pending ORDER BY 1");
    assert!(
        pending.contains("identities_p") && pending.contains("profiles_p"),
        "{pending}"
    );

    let server = Server::start_with_env(&dir, &flags, &[meta]);
    erased(&server, &keys);
    let needles = [
        "CRASH-BOB-PHONE",
        "crash-bob",
        "CRASH-ALICE-PHONE",
        "crash-alice",
    ];
    assert_eq!(
        scan_with(&cluster.table_files(), &[], &needles),
        vec!["CRASH-ALICE-PHONE", "crash-alice"],
        "no table, index or statistics file of PostgreSQL holds the erased user"
    );
    assert_eq!(psql(&url, "SELECT COUNT(*) FROM purge_pending").trim(), "0");
    server.stop();
}

/// A database made by a lethe before the partitions (schema version 16) keeps every identity
/// and profile when a newer one partitions the tables at start, and its WAL checkpoint
/// becomes shard 0's.
#[test]
fn an_upgrade_moves_identities_and_profiles_into_partitions_whole() {
    let cluster = Cluster::start();
    let url = cluster.database("lethe_upgrade");
    let migrations =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lethe-meta/migrations/postgres");
    let mut earlier: Vec<_> = std::fs::read_dir(&migrations)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap() < "0017")
        .collect();
    earlier.sort();
    assert_eq!(earlier.len(), 16);
    for file in &earlier {
        psql(&url, &std::fs::read_to_string(file).unwrap());
    }
    psql(
        &url,
        "CREATE TABLE lethe_schema (version BIGINT NOT NULL); INSERT INTO lethe_schema VALUES (16)",
    );
    let rows = |table: &str| psql(&url, &format!("SELECT * FROM {table} ORDER BY 1, 2, 3"));
    psql(
        &url,
        "INSERT INTO identities VALUES (1, 'user', 'UPGRADE-U1', 10), (1, 'device', 'UPGRADE-D1', 10),
             (2, 'user', 'UPGRADE-U2', 11);
         INSERT INTO profiles (project_id, amplitude_id, user_id, properties, as_of) VALUES
             (1, 10, 'UPGRADE-U1', '{\"plan\":\"pro\"}', 5), (2, 11, 'UPGRADE-U2', '{}', 6);",
    );
    let (identities, profiles) = (rows("identities"), rows("profiles"));
    psql(&url, "UPDATE wal_checkpoint SET seq = 42");

    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &tmp.path().join("data"),
        &[],
        &[("LETHE_META", url.as_str())],
    );
    let every = std::fs::read_dir(&migrations).unwrap().count();
    assert_eq!(
        psql(&url, "SELECT version FROM lethe_schema").trim(),
        every.to_string()
    );
    assert_eq!(
        psql(&url, "SELECT shard, seq FROM wal_checkpoints"),
        "0|42\n",
        "the one WAL's checkpoint is shard 0's, not replayed again"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT relkind FROM pg_class WHERE relname IN ('identities', 'profiles')"
        ),
        "p\np\n",
        "both tables are partitioned"
    );
    assert_eq!(rows("identities"), identities);
    assert_eq!(rows("profiles"), profiles);
    assert_eq!(
        psql(
            &url,
            "SELECT COUNT(*) FROM pg_class WHERE relname LIKE '%\\_whole%'"
        )
        .trim(),
        "0",
        "the tables before the partitions are gone, with their files"
    );
    server.stop();
}

#[test]
fn a_postgresql_crash_under_a_running_server_loses_no_acknowledged_event() {
    let cluster = Cluster::start();
    let url = cluster.database("lethe_outage");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let env = [("LETHE_META", url.as_str())];
    let server = Server::start_with_env(&dir, &["--flush-interval", "100ms"], &env);
    let keys = server.first_start_keys();
    let batch = |tag: &str| {
        json!((0..3)
            .map(|i| json!({"event_type": format!("{tag}-{i}"), "user_id": format!("{tag}-user")}))
            .collect::<Vec<_>>())
    };
    assert_eq!(server.send(&keys, batch("before")).0, 200);

    cluster.down();
    let (status, body) = server.send(&keys, batch("during"));
    assert_eq!(
        status, 503,
        "without its metadata the server stores nothing and says to retry: {body}"
    );
    cluster.up();
    // The first call after the restart may still meet the cut connection; an SDK retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = server.send(&keys, batch("during"));
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only a retry-later answer while reconnecting");
        assert!(Instant::now() < deadline, "the server never reconnected");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.send(&keys, batch("after")).0, 200);
    // Every acknowledged event reaches a committed segment once the database is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(&url, "SELECT COALESCE(SUM(rows), 0) FROM segments").trim() != "9" {
        assert!(Instant::now() < deadline, "the flush never committed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut types: Vec<String> = server
        .export_today(&keys)
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    let expected: Vec<String> = ["after", "before", "during"]
        .iter()
        .flat_map(|tag| (0..3).map(move |i| format!("{tag}-{i}")))
        .collect();
    assert_eq!(types, expected, "each acknowledged event exactly once");
}

#[test]
fn with_sslmode_require_the_connection_uses_tls_and_verifies_the_certificate() {
    let cluster = Cluster::start_tls();
    let url = format!("{}?sslmode=require", cluster.database("lethe_tls"));
    let tmp = tempfile::tempdir().unwrap();
    let start = |name: &str, url: &str, ca: Option<&Path>| {
        let mut serve = common::lethe();
        serve
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join(name))
            .env("LETHE_META", url)
            .env_remove("PGSSLROOTCERT");
        if let Some(ca) = ca {
            serve.env("PGSSLROOTCERT", ca);
        }
        serve.output().unwrap()
    };
    // The server's certificate is signed by a CA no system trusts: refused unless named.
    let unknown = start("unknown-ca", &url, None);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("certificate") && !stderr.contains("panicked"),
        "a clear refusal: {stderr}"
    );
    // Plain TCP is refused by this cluster, so a node that starts did connect over TLS.
    let plain = start(
        "plain",
        url.trim_end_matches("?sslmode=require"),
        Some(&cluster.ca()),
    );
    assert!(!plain.status.success());
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("panicked"));

    let ca = cluster.ca();
    let env = [
        ("LETHE_META", url.as_str()),
        ("PGSSLROOTCERT", ca.to_str().unwrap()),
    ];
    let server = Server::start_with_env(&tmp.path().join("tls"), &[], &env);
    let keys = server.first_start_keys();
    assert_eq!(
        server
            .send(
                &keys,
                json!([{"event_type": "over TLS", "user_id": "tls-user"}])
            )
            .0,
        200
    );
    assert_eq!(server.export_today(&keys).len(), 1);
}
