//! A deletion task's memory does not grow with the size of the days it rewrites: each
//! segment's new contents are staged as soon as they are built, and the segments in memory
//! at once are bounded by `--task-memory-mib`. Measured as the server process's peak
//! resident memory (VmHWM, reset as the task starts), each task in a process of its own whose
//! allocator gives freed memory back at once, so that the peak is what the task held: a day
//! of eight segments takes about what a day of two takes.

mod common;

use chrono::{Duration, NaiveTime, Utc};
use common::Server;
use serde_json::{json, Value};

/// Rows per segment: above compaction's small-segment threshold (64 Ki rows), so that the
/// imports stay separate segments.
const ROWS: usize = 66_000;
const SMALL_DAY: usize = 2;
const LARGE_DAY: usize = 8;

/// One import's lines on `day` (days ago): every event carries an `email`, which the task
/// removes, and a long value unique to it, so that the segment is not small on disk.
fn segment_lines(days_ago: i64, part: usize) -> String {
    let day = (Utc::now() - Duration::days(days_ago)).date_naive();
    let time = day.and_time(NaiveTime::from_hms_opt(12, 0, 0).unwrap());
    let time = time.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let mut state = (part as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ days_ago as u64;
    let mut lines = String::new();
    for i in 0..ROWS {
        let mut blob = String::with_capacity(256);
        for _ in 0..16 {
            // xorshift: values no compression shrinks much.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            blob.push_str(&format!("{state:016x}"));
        }
        let line = json!({"event_type": "Bulk", "user_id": format!("user-{part}-{i}"),
            "server_upload_time": time,
            "event_properties": {"email": format!("u{i}@example.com"), "blob": blob}});
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    lines
}

/// Runs a task that removes `email` from the day `days_ago` on a fresh server: the peak
/// resident memory it added, in MiB, and its result.
fn task_peak(dir: &std::path::Path, project_id: i64, days_ago: i64) -> (u64, Value) {
    // mimalloc purges what is freed at once instead of 10 ms later: freed memory leaves the
    // resident set before it could be counted twice.
    let allocator = [("MIMALLOC_PURGE_DELAY", "0")];
    let server = Server::start_with_env(dir, &["--task-memory-mib", "1"], &allocator);
    let token = server.admin_token();
    let day = (Utc::now() - Duration::days(days_ago)).date_naive();
    let start = day.and_time(NaiveTime::MIN).and_utc();
    let task = json!({"name": "emails", "start": start.to_rfc3339(),
        "end": (start + Duration::days(1)).to_rfc3339(), "confirm": "DELETE",
        "clauses": [{"kind": "event_property", "properties": ["email"]}]});
    let tasks = format!("/api/v1/projects/{project_id}/deletion-tasks");
    // The submission's preview reads the day's segments 8 at a time (a bound of its own);
    // what is measured starts when it has answered, as the worker takes the task up.
    let (status, submitted) = server.post_as(&token, &tasks, &task);
    assert_eq!(status, 202, "{submitted}");
    let before = server.reset_peak();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let done = loop {
        let (_, t) = server.get_as(
            &token,
            &format!("/api/v1/deletion-tasks/{}", submitted["id"]),
        );
        if t["status"] == "completed" {
            break t;
        }
        assert!(t["status"] != "failed", "{t}");
        assert!(std::time::Instant::now() < deadline, "never completed: {t}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let added = server.peak_mib() - before;
    server.stop();
    (added, done["result"].clone())
}

#[test]
fn a_task_over_a_large_day_holds_what_one_over_a_small_day_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &[]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    for (days_ago, segments) in [(3, SMALL_DAY), (2, LARGE_DAY)] {
        for part in 0..segments {
            let (s, b) = server.import(&token, keys.project_id, segment_lines(days_ago, part));
            assert_eq!((s, b["ingested"].clone()), (200, json!(ROWS)), "{b}");
        }
    }
    server.stop();

    let (small, small_result) = task_peak(&dir, keys.project_id, 3);
    let (large, large_result) = task_peak(&dir, keys.project_id, 2);
    for (result, segments) in [(&small_result, SMALL_DAY), (&large_result, LARGE_DAY)] {
        assert_eq!(result["segments_rewritten"], json!(segments), "{result}");
        assert_eq!(
            result["event_property_values_removed"],
            json!(segments * ROWS),
            "{result}"
        );
    }
    let segment_mib = (large_result["bytes_rewritten"].as_u64().unwrap() / LARGE_DAY as u64) >> 20;
    eprintln!(
        "peak added by a task: {SMALL_DAY} segments {small} MiB, {LARGE_DAY} segments {large} MiB ({segment_mib} MiB each)"
    );
    // Holding a day's segments until all were built, the large day's task added more than
    // twice what the small day's did (measured: 100 and 40 MiB); one segment at a time,
    // about the same (43 and 35 MiB).
    assert!(
        large <= small + small / 2,
        "{SMALL_DAY} segments: {small} MiB, {LARGE_DAY} segments: {large} MiB"
    );
}
