//! A flipped byte in a segment (data page, dictionary page or footer) is detected by the
//! checksum every segment carries in the manifest: the segment is quarantined and named
//! (`/healthz`, a metric, the error of any read that needs it, `lethe verify`), the server
//! starts and serves everything else, and a deletion task that would have to rewrite it fails
//! with that reason instead of completing.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{status_json, Keys, Server};
use parquet::file::metadata::ParquetMetaDataReader;
use serde_json::json;

fn day(days_ago: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::days(days_ago)
}

/// Imports 300 events uploaded `days_ago`: "Keep" and "Drop" types, values per day.
fn import_day(server: &Server, token: &str, keys: &Keys, days_ago: i64) {
    let t = day(days_ago).format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let lines: Vec<String> = (0..300)
        .map(|i| {
            let kind = if i % 3 == 0 { "Drop" } else { "Keep" };
            json!({"event_type": kind, "user_id": format!("user-{days_ago}-{i}"),
                   "server_upload_time": t, "event_properties": {"v": format!("value-{days_ago}-{i}")}})
            .to_string()
        })
        .collect();
    let (s, b) = server.import(token, keys.project_id, lines.join("\n"));
    assert_eq!((s, b["ingested"].clone()), (200, json!(300)), "{b}");
}

/// The one segment file of a day.
fn segment_of(dir: &Path, keys: &Keys, days_ago: i64) -> PathBuf {
    let day_dir = dir
        .join("segments")
        .join(keys.project_id.to_string())
        .join(day(days_ago).format("%Y-%m-%d").to_string());
    let mut files: Vec<PathBuf> = std::fs::read_dir(day_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    files.pop().unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Region {
    DataPage,
    Dictionary,
    Footer,
}

/// Flips one byte in the middle of a region of a segment file.
fn flip(path: &Path, region: Region) {
    let file = std::fs::File::open(path).unwrap();
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .unwrap();
    let len = std::fs::metadata(path).unwrap().len();
    let group = meta.row_group(0);
    let column = |name: &str| {
        group
            .columns()
            .iter()
            .find(|c| c.column_descr().name() == name)
            .unwrap()
            .clone()
    };
    let at = match region {
        // event_time is plain-encoded: its chunk is one data page.
        Region::DataPage => {
            let c = column("event_time");
            c.data_page_offset() as u64 + c.compressed_size() as u64 / 2
        }
        Region::Dictionary => {
            let c = column("event_type");
            let start = c.dictionary_page_offset().expect("dictionary page") as u64;
            start + (c.data_page_offset() as u64 - start) / 2
        }
        Region::Footer => {
            let mut tail = [0u8; 8];
            let bytes = std::fs::read(path).unwrap();
            tail.copy_from_slice(&bytes[bytes.len() - 8..]);
            let footer = u32::from_le_bytes(tail[..4].try_into().unwrap()) as u64;
            len - 8 - footer / 2
        }
    };
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

fn hours(days_ago: i64) -> (String, String) {
    let d = day(days_ago).format("%Y%m%d").to_string();
    (format!("{d}T00"), format!("{d}T23"))
}

fn verify(dir: &Path) -> (bool, String) {
    let out = common::lethe()
        .args(["verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn damaged_segments_are_quarantined_and_named_and_the_rest_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &[]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    for days_ago in 1..=4 {
        import_day(&server, &token, &keys, days_ago);
    }
    let (from, to) = hours(4);
    let (_, clean_before) = server.export(&keys, &from, &to);
    assert_eq!(clean_before.len(), 300);
    let dir = server.kill9();
    // An object no manifest names (a crash's leftover) is noted, not a problem.
    let live = segment_of(&dir, &keys, 4);
    let stray = live.with_file_name("left-by-a-crash.parquet");
    std::fs::copy(&live, &stray).unwrap();
    let (ok, report) = verify(&dir);
    assert!(ok, "a sound data dir verifies: {report}");
    assert!(
        report.contains(&format!("note: {}: no manifest names it", stray.display())),
        "{report}"
    );

    let damaged = [
        (1, Region::DataPage),
        (2, Region::Dictionary),
        (3, Region::Footer),
    ];
    let paths: Vec<PathBuf> = damaged
        .iter()
        .map(|&(days_ago, region)| {
            let path = segment_of(&dir, &keys, days_ago);
            flip(&path, region);
            path
        })
        .collect();

    // The server starts (a damaged footer used to stop it) and says what is wrong.
    let server = Server::start_on(&dir, &[]);
    let (_, health) = status_json(server.client.get(server.url("/healthz")).send().unwrap());
    assert_eq!(health["status"], "degraded", "{health}");
    let listed: Vec<&str> = health["damaged_segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for path in &paths {
        assert!(listed.contains(&path.to_str().unwrap()), "{health}");
    }
    assert_eq!(listed.len(), 3, "{health}");
    let metrics = server.get_text("/metrics");
    assert!(
        metrics.contains("lethe_segments_quarantined 3"),
        "{metrics}"
    );

    // The undamaged day is served exactly as before; a damaged one is refused, named.
    let (status, clean_after) = server.export(&keys, &from, &to);
    assert_eq!((status, clean_after), (200, clean_before));
    for (i, &(days_ago, _)) in damaged.iter().enumerate() {
        let (from, to) = hours(days_ago);
        let (status, body) =
            server.basic_get(&keys, &format!("/api/2/export?start={from}&end={to}"));
        assert_eq!(status, 500, "{body}");
        let name = paths[i].file_name().unwrap().to_str().unwrap();
        assert!(body["error"].as_str().unwrap().contains(name), "{body}");
    }
    // A deletion that needs a damaged segment cannot even be previewed; others complete.
    let preview = |days_ago: i64| {
        let hour = chrono::Duration::hours(1);
        let (start, end) = (day(days_ago) - hour, day(days_ago) + hour);
        let body = json!({"name": "t", "start": start.to_rfc3339(), "end": end.to_rfc3339(),
                          "clauses": [{"kind": "event", "event_types": ["Drop"]}]});
        server.post_as(
            &token,
            &format!(
                "/api/v1/projects/{}/deletion-tasks/preview",
                keys.project_id
            ),
            &body,
        )
    };
    let (status, body) = preview(1);
    assert_eq!(status, 500, "{body}");
    let (status, body) = preview(4);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totals"]["events_deleted"], 100, "{body}");

    let (ok, report) = verify(&dir);
    assert!(!ok, "{report}");
    for path in &paths {
        assert!(
            report.contains(&format!("damaged: {}", path.display())),
            "{report}"
        );
    }
    assert!(report.contains("3 problems"), "{report}");
    server.stop();
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn a_task_that_must_rewrite_a_damaged_segment_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // The task starts (its flush done), then the process stops before any day is rewritten.
    let server = Server::start_with_env(&dir, &[], &[("LETHE_FAILPOINT", "delete:after_flush")]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    import_day(&server, &token, &keys, 2);
    import_day(&server, &token, &keys, 1);
    let now = chrono::Utc::now();
    let body = json!({"name": "across the damage", "start": day(3).to_rfc3339(), "end": now.to_rfc3339(),
                      "confirm": "DELETE", "clauses": [{"kind": "event", "event_types": ["Drop"]}]});
    let path = format!("/api/v1/projects/{}/deletion-tasks", keys.project_id);
    if let Some((s, answer)) = server.post_before_abort(&token, &path, &body) {
        assert_eq!(s, 202, "{answer}");
    }
    let dir = server.wait_exit(Duration::from_secs(60));
    let damaged = segment_of(&dir, &keys, 1);
    flip(&damaged, Region::DataPage);

    let server = Server::start_on(&dir, &[]);
    let task = server.newest_task(&token);
    assert_eq!(task["name"], "across the damage", "{task}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let task = loop {
        let (_, t) = server.get_as(&token, &format!("/api/v1/deletion-tasks/{}", task["id"]));
        if t["status"] == "failed" || t["status"] == "completed" {
            break t;
        }
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(task["status"], "failed", "{task}");
    let error = task["error"].as_str().unwrap();
    assert!(
        error.contains(damaged.file_name().unwrap().to_str().unwrap()) && error.contains("damaged"),
        "{task}"
    );
    // The damaged segment is still there, untouched; the other day, rewritten beside it, lost
    // its Drop events.
    assert!(damaged.exists());
    let (from, to) = hours(2);
    let (_, older) = server.export(&keys, &from, &to);
    assert_eq!(older.len(), 200);
    assert!(older.iter().all(|e| e["event_type"] == "Keep"));
    server.stop();
}
