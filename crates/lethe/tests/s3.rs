//! Segments on S3-compatible object storage (`--segments s3://bucket/prefix`), against moto's
//! S3 server on loopback: events are stored as objects under the prefix and read back, a
//! deletion task leaves none of the removed values in any object of the bucket (`lethe scan`
//! on the deployment), and a bucket that keeps versions is refused at start, or fails every
//! write and task once it starts keeping them.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Keys, S3Server, Server};
use serde_json::{json, Value};

/// A lethe server on `dir` whose segments go to `s3://bucket/events` on `moto`.
fn lethe(moto: &S3Server, dir: &Path, bucket: &str) -> Server {
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let segments = format!("s3://{bucket}/events");
    Server::start_with_env(
        dir,
        &["--segments", &segments, "--flush-interval", "100ms"],
        &env,
    )
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn events_live_in_the_bucket_and_a_deletion_leaves_no_object_holding_them() {
    let moto = S3Server::start();
    moto.bucket("lethe-segments", false);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = lethe(&moto, &dir, "lethe-segments");
    let keys: Keys = server.first_start_keys();
    let events: Vec<Value> = (0..20)
        .map(|i| {
            let (kind, marker) = match i % 2 {
                0 => ("Test Flood", "S3-DEL-FLOOD"),
                _ => ("Signup", "S3-KEEP-SIGNUP"),
            };
            json!({"event_type": kind, "user_id": format!("user-{i}"), "insert_id": format!("s3-{i}"),
                   "event_properties": {"note": marker}})
        })
        .collect();
    assert_eq!(server.send(&keys, json!(events)).0, 200);
    wait_until("the events are flushed into the bucket", || {
        moto.keys("lethe-segments")
            .iter()
            .any(|k| k.starts_with("events/") && k.ends_with(".parquet"))
    });
    assert!(
        !dir.join("segments").exists()
            || std::fs::read_dir(dir.join("segments"))
                .unwrap()
                .next()
                .is_none(),
        "no segment is written to the data dir"
    );

    // Read back across a restart: the segments come from the bucket.
    server.stop();
    let server = lethe(&moto, &dir, "lethe-segments");
    assert_eq!(server.export_today(&keys).len(), 20);

    let token = server.admin_token();
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    std::thread::sleep(Duration::from_millis(1100));
    let body = json!({
        "name": "remove the flood",
        "start": (now - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "end": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "clauses": [{"kind": "event", "event_types": ["Test Flood"]}],
        "confirm": "DELETE",
    });
    let path = format!("/api/v1/projects/{}/deletion-tasks", keys.project_id);
    let (status, task) = server.post_as(&token, &path, &body);
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    wait_until("the task completes", || {
        let (_, t) = server.get_as(&token, &format!("/api/v1/deletion-tasks/{id}"));
        assert_ne!(t["status"], "failed", "{t}");
        t["status"] == "completed"
    });
    let kept = server.export_today(&keys);
    assert_eq!(kept.len(), 10);
    assert!(kept.iter().all(|e| e["event_type"] == "Signup"));

    // Every object left in the bucket, raw and decoded (`lethe scan` on the deployment): the
    // removed values are in none. The data dir alone holds neither marker.
    let mut env = moto.env();
    env.push(("LETHE_SEGMENTS", "s3://lethe-segments/events".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let needles = ["S3-DEL-FLOOD", "S3-KEEP-SIGNUP"];
    assert_eq!(common::scan_with(&dir, &env, &needles), ["S3-KEEP-SIGNUP"]);
    assert!(common::scan(&dir, &needles).is_empty());
    assert!(
        moto.keys("lethe-segments")
            .iter()
            .all(|k| k.starts_with("events/")),
        "lethe writes only under its prefix (and leaves no probe behind)"
    );
    server.stop();

    // `lethe verify` checks the segments in the bucket, and names one whose bytes changed.
    let verify = || {
        let out = common::lethe()
            .args(["verify", "--data-dir"])
            .arg(&dir)
            .envs(common::deployment(&dir))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), stdout)
    };
    let (ok, report) = verify();
    assert!(ok && !report.contains("verified 0 segments"), "{report}");
    let segment = moto.keys("lethe-segments").remove(0);
    moto.boto3(
        "lethe-segments",
        &format!("s3.put_object(Bucket=b, Key='{segment}', Body=b'PAR1 not a segment')"),
    );
    let (ok, report) = verify();
    assert!(!ok, "{report}");
    assert!(
        report.contains(&format!("damaged: s3://lethe-segments/{segment}")),
        "{report}"
    );
}

/// Versioning turned on while lethe runs: a DELETE would keep every removed segment as a
/// noncurrent version, so a deletion task fails, saying why, and never says completed; nor
/// is anything more written to the bucket (it could never be deleted).
#[test]
fn a_bucket_that_starts_keeping_versions_fails_the_task_and_every_write() {
    let moto = S3Server::start();
    moto.bucket("later-versioned", false);
    let tmp = tempfile::tempdir().unwrap();
    let server = lethe(&moto, &tmp.path().join("data"), "later-versioned");
    let keys: Keys = server.first_start_keys();
    let events: Vec<Value> = (0..4)
        .map(|i| json!({"event_type": if i % 2 == 0 { "Flood" } else { "Signup" }, "user_id": format!("user-{i}")}))
        .collect();
    assert_eq!(server.send(&keys, json!(events)).0, 200);
    let segments = || {
        moto.keys("later-versioned")
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .count()
    };
    wait_until("the events are flushed into the bucket", || segments() > 0);
    moto.boto3(
        "later-versioned",
        "s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={'Status': 'Enabled'})",
    );
    let written = segments();

    let token = server.admin_token();
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    std::thread::sleep(Duration::from_millis(1100));
    let body = json!({
        "name": "remove the flood",
        "start": (now - chrono::Duration::days(1)).to_rfc3339(),
        "end": now.to_rfc3339(),
        "clauses": [{"kind": "event", "event_types": ["Flood"]}],
        "confirm": "DELETE",
    });
    let path = format!("/api/v1/projects/{}/deletion-tasks", keys.project_id);
    let (status, task) = server.post_as(&token, &path, &body);
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    let mut ended = Value::Null;
    wait_until("the task ends", || {
        ended = server
            .get_as(&token, &format!("/api/v1/deletion-tasks/{id}"))
            .1;
        ended["status"] == "completed" || ended["status"] == "failed"
    });
    assert_eq!(ended["status"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap();
    assert!(error.contains("keeps object versions"), "{error}");
    assert_eq!(segments(), written, "no segment was written since");
    server.stop();
}

/// Starts `lethe serve` with `--segments <segments>` and `env`, expects it to refuse, and
/// returns what it said.
fn refused_start(segments: &str, env: &[(&'static str, String)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::lethe()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--segments",
            segments,
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the start was not refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bucket_that_keeps_versions_is_refused_at_start() {
    let moto = S3Server::start();
    moto.bucket("versioned", true);
    let stderr = refused_start("s3://versioned/events", &moto.env());
    assert!(stderr.contains("keeps object versions"), "{stderr}");
}

#[test]
fn a_segments_url_without_a_prefix_is_refused() {
    let stderr = refused_start("s3://bucket", &[]);
    assert!(
        stderr.contains("--segments") && stderr.contains("prefix"),
        "{stderr}"
    );
}

#[test]
fn an_endpoint_that_is_not_a_url_is_refused_naming_it() {
    let env = [("AWS_ENDPOINT", "http://".to_string())];
    let stderr = refused_start("s3://bucket/events", &env);
    assert!(stderr.contains("AWS_ENDPOINT"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
