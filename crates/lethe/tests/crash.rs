//! Crash safety of deletion: the worker is stopped abruptly (abort, as `kill -9`) at each step
//! of a task; after a restart the task resumes and ends in exactly the state an uninterrupted
//! run gives, with nothing of the removed data left on disk. And when the storage refuses to
//! delete the old segments, a task never says completed while they are there.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

/// Three partitions of data, so that a crash can land between partitions.
fn plant(server: &Server, token: &str, project: i64) {
    let mut lines = Vec::new();
    for day in 1..=3 {
        let t = (chrono::Utc::now() - chrono::Duration::days(day))
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string();
        for i in 0..20 {
            lines.push(json!({"event_type": "Keep", "user_id": format!("user-{day}-{i}"), "server_upload_time": t,
                "event_properties": {"secret": "SECRET-MARKER", "kept": "KEEP-MARKER"}}).to_string());
            lines.push(json!({"event_type": "Drop", "user_id": format!("user-{day}-{i}"), "server_upload_time": t,
                "event_properties": {"what": "DROP-MARKER"}}).to_string());
        }
    }
    let (s, b) = server.import(token, project, lines.join("\n"));
    assert_eq!((s, b["ingested"].clone()), (200, json!(120)));
}

fn export_all(server: &Server, keys: &common::Keys) -> BTreeMap<String, Value> {
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::days(4))
        .format("%Y%m%dT%H")
        .to_string();
    let end = now.format("%Y%m%dT%H").to_string();
    let (_, events) = server.export(keys, &start, &end);
    events
        .into_iter()
        .map(|e| {
            (
                e["uuid"].as_str().unwrap().to_string(),
                json!([e["event_type"], e["event_properties"]]),
            )
        })
        .collect()
}

/// The task every test here runs: the `Drop` events and the `secret` values of the last four
/// days, and where to submit it.
fn task(project: i64, name: &str) -> (String, Value) {
    let now = chrono::Utc::now();
    let body = json!({
        "name": name,
        "start": (now - chrono::Duration::days(4)).to_rfc3339(),
        "end": now.to_rfc3339(),
        "confirm": "DELETE",
        "clauses": [{"kind": "event", "event_types": ["Drop"]}, {"kind": "event_property", "properties": ["secret"]}]
    });
    (format!("/api/v1/projects/{project}/deletion-tasks"), body)
}

/// The task once it is completed or failed.
fn wait_for_end(server: &Server, token: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, t) = server.get_as(token, &format!("/api/v1/deletion-tasks/{id}"));
        if t["status"] == "completed" || t["status"] == "failed" {
            return t;
        }
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn resumes_after_crash_at(failpoint: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_with_env(&dir, &[], &[("LETHE_FAILPOINT", failpoint)]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    plant(&server, &token, keys.project_id);
    let before = export_all(&server, &keys);
    let expected: BTreeMap<String, Value> = before
        .iter()
        .filter(|(_, v)| v[0] != "Drop")
        .map(|(k, v)| (k.clone(), json!([v[0], {"kept": "KEEP-MARKER"}])))
        .collect();
    let name = format!("crash at {failpoint}");
    let (path, body) = task(keys.project_id, &name);
    if let Some((status, answer)) = server.post_before_abort(&token, &path, &body) {
        assert_eq!(status, 202, "{answer}");
    }
    let dir = server.wait_exit(Duration::from_secs(60));

    let server = Server::start_on(&dir, &[]);
    let submitted = server.newest_task(&token);
    assert_eq!(submitted["name"], name, "{submitted}");
    let done = wait_for_end(&server, &token, submitted["id"].as_i64().unwrap());
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["events_deleted"], 60, "{done}");
    assert_eq!(
        done["result"]["event_property_values_removed"], 60,
        "{done}"
    );
    assert_eq!(done["result"]["matches_preview"], true, "{done}");
    assert_eq!(
        export_all(&server, &keys),
        expected,
        "same state as an uninterrupted run"
    );
    assert_eq!(
        common::scan(&dir, &["DROP-MARKER", "KEEP-MARKER", "SECRET-MARKER"]),
        ["KEEP-MARKER"]
    );
    assert_eq!(
        common::staged_uploads(&dir),
        Vec::<PathBuf>::new(),
        "no interrupted upload left"
    );
    server.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn crash_after_the_flush_before_any_partition() {
    resumes_after_crash_at("delete:after_flush");
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn crash_after_writing_new_segments_before_the_commit() {
    resumes_after_crash_at("rewrite:after_write");
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn crash_after_the_commit_before_cleanup() {
    resumes_after_crash_at("rewrite:after_commit");
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn crash_between_partitions() {
    resumes_after_crash_at("delete:after_partition");
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn crash_after_profiles_and_catalog_before_completion() {
    resumes_after_crash_at("delete:before_complete");
}

/// Submits the task (`task`) to a server whose deletions of segment
/// objects fail as `faults` says (`LETHE_FAULTS`), and waits until it ends.
fn task_with_failing_deletions(faults: &str) -> (tempfile::TempDir, Server, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_with_env(&dir, &[], &[("LETHE_FAULTS", faults)]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    plant(&server, &token, keys.project_id);
    let (path, body) = task(keys.project_id, "failing deletion requests");
    let (status, submitted) = server.post_as(&token, &path, &body);
    assert_eq!(status, 202, "{submitted}");
    let ended = wait_for_end(&server, &token, submitted["id"].as_i64().unwrap());
    (tmp, server, ended)
}

/// A request that deletes the segments a day's commit retired fails once (EIO): the attempt
/// fails after the commit, and the task completes only once the old objects are gone,
/// checked before any restart (whose clean-up would hide the fault).
#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn a_failed_deletion_of_retired_segments_is_done_again_before_completion() {
    let (tmp, server, done) = task_with_failing_deletions("segment_delete@1-1");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 2, "the first attempt failed: {done}");
    assert_eq!(done["result"]["events_deleted"], 60, "{done}");
    assert_eq!(done["result"]["matches_preview"], true, "{done}");
    assert_eq!(
        common::scan(
            &tmp.path().join("data"),
            &["DROP-MARKER", "KEEP-MARKER", "SECRET-MARKER"]
        ),
        ["KEEP-MARKER"]
    );
    server.stop();
}

/// While the storage refuses every deletion, a task never says completed: its committed
/// days' old objects still hold what it removes. It fails, saying why; the next start deletes
/// the objects no manifest names.
#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn a_task_whose_old_segments_cannot_be_deleted_fails_and_never_says_completed() {
    let (tmp, server, failed) = task_with_failing_deletions("segment_delete@1-1000000");
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("cannot delete segments"), "{error}");
    let dir = tmp.path().join("data");
    assert!(common::scan(&dir, &["DROP-MARKER"]) == ["DROP-MARKER"]);
    // Monitoring sees it: the health check says what fails, the metrics count it.
    let health = server.health();
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["segment_deletions"]
            .as_str()
            .is_some_and(|s| s.starts_with("failing")),
        "{health}"
    );
    assert!(server.metric("lethe_segment_deletions_pending") > 0.0);
    server.stop();
    // A start whose clean-up the storage refuses serves all the same, and says so (once the
    // store is open: a cluster node answers as a standby until then).
    let server = Server::start_with_env(&dir, &[], &[("LETHE_FAULTS", "segment_delete@1-1000000")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.health()["segment_deletions"].is_string() {
        assert!(Instant::now() < deadline, "{}", server.health());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(common::scan(&dir, &["DROP-MARKER"]), ["DROP-MARKER"]);
    server.stop();
    let server = Server::start_on(&dir, &[]);
    assert_eq!(
        common::scan(&dir, &["DROP-MARKER", "KEEP-MARKER", "SECRET-MARKER"]),
        ["KEEP-MARKER"],
        "the start deleted the retired objects"
    );
    server.stop();
}

/// Segment objects whose deletion failed are deleted by the background on its own, with no
/// task to ask for it and no restart: here two of the four small segments a compaction
/// merged (the first two deletion requests fail).
#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn segments_whose_deletion_failed_are_deleted_in_the_background() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_with_env(
        &dir,
        &["--flush-interval", "100ms"],
        &[("LETHE_FAULTS", "segment_delete@1-2")],
    );
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let t = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    // Four imports, four small segments of one day: what compaction merges.
    for part in 0..4 {
        let lines: Vec<String> = (0..10)
            .map(|i| {
                json!({"event_type": "Small", "user_id": format!("user-{part}-{i}"),
                "server_upload_time": t, "event_properties": {"marker": "MERGED-MARKER"}})
                .to_string()
            })
            .collect();
        let (s, b) = server.import(&token, keys.project_id, lines.join("\n"));
        assert_eq!((s, b["ingested"].clone()), (200, json!(10)));
    }
    let segments_holding = || {
        common::objects_holding(&dir, "MERGED-MARKER")
            .into_iter()
            .filter(|o| o.ends_with(".parquet"))
            .count()
    };
    assert_eq!(segments_holding(), 4);
    // A live event: its flush starts the compaction pass.
    assert_eq!(
        server
            .send(
                &keys,
                json!([{"event_type": "Wake", "user_id": "wake-user"}])
            )
            .0,
        200
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    while segments_holding() != 1 {
        assert!(
            Instant::now() < deadline,
            "the merged segments are still there: {} objects",
            segments_holding()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.metric("lethe_segment_deletion_failures_total") >= 2.0,
        "the deletions failed first"
    );
    assert_eq!(server.metric("lethe_segment_deletions_pending"), 0.0);
    assert_eq!(server.health()["status"], "ok");
    let (_, events) = server.export(
        &keys,
        &(chrono::Utc::now() - chrono::Duration::days(2))
            .format("%Y%m%dT%H")
            .to_string(),
        &chrono::Utc::now().format("%Y%m%dT%H").to_string(),
    );
    assert_eq!(
        events.iter().filter(|e| e["event_type"] == "Small").count(),
        40,
        "the merged segment holds every event"
    );
    server.stop();
}
