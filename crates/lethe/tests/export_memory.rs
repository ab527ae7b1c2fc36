//! The export streams: it holds one day's events at a time, so a long range does not build
//! in memory. Measured as the server process's peak resident memory (VmHWM, reset before
//! each export): exporting many days adds about what exporting one day adds.

mod common;

use common::Server;
use serde_json::json;

const DAYS: i64 = 6;
const PER_DAY: usize = 6_000;

#[test]
fn a_long_export_streams_one_day_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &[]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let filler = "x".repeat(2000);
    for day in 1..=DAYS {
        let t = (chrono::Utc::now() - chrono::Duration::days(day))
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string();
        let lines: Vec<String> = (0..PER_DAY)
            .map(|i| {
                json!({"event_type": "bulk", "user_id": format!("user-{day}-{i}"), "server_upload_time": t,
                       "event_properties": {"i": i, "filler": filler}})
                .to_string()
            })
            .collect();
        let (s, b) = server.import(&token, keys.project_id, lines.join("\n"));
        assert_eq!((s, b["ingested"].clone()), (200, json!(PER_DAY)), "{b}");
    }
    let dir = server.kill9();
    let server = Server::start_on(&dir, &[]);
    // Peak memory an export adds: the peak is reset to the current resident size first.
    let export_peak = |days: i64| -> (u64, usize) {
        let before = server.reset_peak();
        let start = (chrono::Utc::now() - chrono::Duration::days(days)).format("%Y%m%dT00");
        let end = chrono::Utc::now().format("%Y%m%dT23");
        let (status, events) = server.export(&keys, &start.to_string(), &end.to_string());
        assert_eq!(status, 200);
        assert!(
            events.windows(2).all(|w| w[0]["server_upload_time"].as_str() <= w[1]["server_upload_time"].as_str()),
            "in upload-time order"
        );
        (server.peak_mib() - before, events.len())
    };
    let (one_day, n) = export_peak(1);
    assert_eq!(n, PER_DAY);
    let (all_days, n) = export_peak(DAYS + 1);
    assert_eq!(n, DAYS as usize * PER_DAY, "every event, once");
    eprintln!("peak added by an export: one day {one_day} MiB, {DAYS} days {all_days} MiB");
    // Built in memory, the long export adds about twice what one day adds (measured: 54 and
    // 118 MiB); streamed, no more than one day.
    assert!(
        all_days <= one_day + one_day / 2,
        "one day: {one_day} MiB, {DAYS} days: {all_days} MiB"
    );
    server.stop();
}
