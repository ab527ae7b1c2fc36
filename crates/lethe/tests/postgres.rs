//! Metadata on PostgreSQL (`--meta postgres://…`), against a throwaway cluster of Debian's
//! PostgreSQL on loopback (scripts/pg_server.sh): an erased user's identifiers and profile
//! leave no bytes in the database's files (only its WAL, the operator's part, keeps them), a
//! second node on the same database refuses to start, a PostgreSQL crash and restart under
//! a running server loses no acknowledged event, and `sslmode=require` means TLS with the
//! server's certificate verified. (The server, deletion, privacy and crash
//! suites run on PostgreSQL too: scripts/test.sh.)

mod common;

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
    // Profiles are committed with the flush that writes their events' segment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(&url, "SELECT COUNT(*) FROM profiles").trim() != "2" {
        assert!(
            Instant::now() < deadline,
            "the profiles were never committed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

    let (s, body) = server.basic_post(
        &keys,
        "/api/2/deletions/users",
        &json!({"user_ids": ["pg-bob"], "requester": "dpo@example.com"}),
    );
    assert_eq!(s, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !privacy_jobs(&server, &keys)
        .iter()
        .all(|j| j["status"] == "done")
    {
        assert!(Instant::now() < deadline, "the erasure never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
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
