//! Bulk import: Amplitude export lines in, with server fields kept and bad lines reported.

mod common;

use common::{gzip, Server};
use serde_json::{json, Value};

fn import(server: &Server, project: i64, body: Vec<u8>, token: &str) -> (u16, Value) {
    server.import(token, project, body)
}

#[test]
fn good_lines_are_stored_with_their_ids_and_bad_lines_are_reported() {
    let (server, keys) = Server::start();
    let token = server.admin_token();
    let lines = [
        r#"{"event_type":"imported","user_id":"user-1001","uuid":"6f1c1a0e-8a0e-4a4f-9c55-0f3c6a1d2b11","server_upload_time":"2024-03-02 05:06:07.123000","event_time":"2024-03-02 05:00:00.000000","$insert_id":"imp-1","event_properties":{"a":1},"user_properties":{"tier":"gold"},"version_name":"1.2"}"#,
        "",
        r#"{"user_id":"user-1002"}"#,
        r#"not json"#,
        r#"{"event_type":"imported","user_id":"user-1003","server_upload_time":"2024-03-02 06:00:00.000000","time":1709359200000}"#,
        r#"{"event_type":"imported","user_id":"user-1001","uuid":"6f1c1a0e-8a0e-4a4f-9c55-0f3c6a1d2b12","server_upload_time":"2024-03-02 05:06:08.000000","$insert_id":"imp-1"}"#,
    ];
    let (s, b) = import(
        &server,
        keys.project_id,
        lines.join("\n").into_bytes(),
        &token,
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["lines"], 5);
    assert_eq!(b["ingested"], 2);
    assert_eq!(
        b["duplicates"], 1,
        "same insert_id on the same user within 7 days"
    );
    assert_eq!(b["rejected"], 2);
    assert_eq!(
        b["errors"][0],
        json!({"line": 3, "missing_fields": ["event_type"], "invalid_fields": [], "invalid_id_lengths": []})
    );
    assert_eq!(b["errors"][1]["line"], 4);

    let (s, events) = server.export(&keys, "20240302T05", "20240302T06");
    assert_eq!(s, 200);
    assert_eq!(events.len(), 2);
    let first = &events[0];
    assert_eq!(first["uuid"], "6f1c1a0e-8a0e-4a4f-9c55-0f3c6a1d2b11");
    assert_eq!(first["server_upload_time"], "2024-03-02 05:06:07.123000");
    assert_eq!(first["event_time"], "2024-03-02 05:00:00.000000");
    assert_eq!(first["$insert_id"], "imp-1");
    assert_eq!(first["version_name"], "1.2");
    assert_eq!(first["user_properties"], json!({"tier": "gold"}));
    assert_eq!(
        events[1]["server_upload_time"],
        "2024-03-02 06:00:00.000000"
    );
}

#[test]
fn gzip_and_export_zips_import_and_round_trip() {
    let (server, keys) = Server::start();
    let token = server.admin_token();
    let lines: Vec<String> = (0..100)
        .map(|i| json!({"event_type": "e", "user_id": format!("user-{i:04}"), "server_upload_time": "2024-05-01 10:00:00.000000", "event_properties": {"i": i}}).to_string())
        .collect();
    let (s, b) = import(
        &server,
        keys.project_id,
        gzip(lines.join("\n").as_bytes()),
        &token,
    );
    assert_eq!((s, b["ingested"].clone()), (200, json!(100)));

    // The export zip of one project imports into another unchanged.
    let r = server
        .client
        .get(server.url("/api/2/export?start=20240501T10&end=20240501T10"))
        .basic_auth(&keys.api_key, Some(&keys.secret_key))
        .send()
        .unwrap();
    let zip = r.bytes().unwrap().to_vec();
    let (_, p) = server.post_as(&token, "/api/v1/projects", &json!({"name": "Copy"}));
    let copy = common::Keys::of_project(&p);
    let (s, b) = import(&server, copy.project_id, zip.clone(), &token);
    assert_eq!((s, b["ingested"].clone()), (200, json!(100)), "{b}");
    let original = common::unzip_events(&zip);
    let (_, copied) = server.export(&copy, "20240501T10", "20240501T10");
    let strip = |e: &Value| {
        let mut e = e.clone();
        for k in ["app", "amplitude_id"] {
            e.as_object_mut().unwrap().remove(k);
        }
        e
    };
    let mut a: Vec<Value> = original.iter().map(strip).collect();
    let mut b: Vec<Value> = copied.iter().map(strip).collect();
    a.sort_by_key(|e| e["uuid"].as_str().unwrap().to_string());
    b.sort_by_key(|e| e["uuid"].as_str().unwrap().to_string());
    assert_eq!(a, b);
}

#[test]
fn import_refuses_unknown_projects_and_bad_bodies() {
    let (server, _) = Server::start();
    let token = server.admin_token();
    assert_eq!(import(&server, 999, b"{}".to_vec(), &token).0, 404);
    let (s, b) = import(&server, 1, vec![0x1f, 0x8b, 1, 2, 3], &token);
    assert_eq!(s, 400, "{b}");
    assert_eq!(import(&server, 1, b"{}".to_vec(), "bad-token").0, 401);
}

#[test]
fn the_import_command_loads_files_with_a_summary() {
    let (server, keys) = Server::start();
    let token = server.admin_token();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json.gz");
    let lines: Vec<String> = (0..500)
        .map(|i| json!({"event_type": "cli", "user_id": format!("user-{i:04}"), "server_upload_time": "2024-06-01 00:00:00.000000"}).to_string())
        .chain(std::iter::once("{}".to_string()))
        .collect();
    std::fs::write(&file, gzip(lines.join("\n").as_bytes())).unwrap();
    let out = common::lethe()
        .args([
            "import",
            "--url",
            &server.url,
            "--token",
            &token,
            "--project",
            &keys.project_id.to_string(),
            "--part-bytes",
            "10000",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 501 lines: 500 stored, 0 duplicates, 1 rejected"),
        "{stdout}"
    );
    let (_, events) = server.export(&keys, "20240601T00", "20240601T00");
    assert_eq!(events.len(), 500);
}

#[test]
fn a_zip_that_expands_past_the_cap_is_refused_whatever_its_entries() {
    use std::io::Write;
    let (server, keys) = Server::start();
    let token = server.admin_token();
    // Five entries of 110 MiB of blank lines each: under the cap one by one, 550 MiB together,
    // about half a megabyte compressed.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let block = vec![b'\n'; 1 << 20];
    for i in 0..5 {
        zip.start_file(format!("part-{i}.json"), options).unwrap();
        for _ in 0..110 {
            zip.write_all(&block).unwrap();
        }
    }
    let bytes = zip.finish().unwrap().into_inner();
    assert!(bytes.len() < 4 << 20, "{}", bytes.len());
    let (s, b) = import(&server, keys.project_id, bytes, &token);
    assert_eq!(s, 413, "{b}");
    assert!(b["error"].as_str().unwrap().contains("512 MiB"), "{b}");
    server.stop();
}

/// A deterministic pseudo-random sequence (no dependency, the same on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Export rows keyed by uuid, without `app` (the project id of whichever server exports).
fn by_uuid(rows: &[Value]) -> std::collections::BTreeMap<String, Value> {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("app");
            (r["uuid"].as_str().unwrap().to_string(), r)
        })
        .collect()
}

#[test]
fn an_export_imported_in_any_order_exports_the_same_rows_and_profiles() {
    // The source: events whose user properties grow and shrink, sent out of event-time order.
    let (source, source_keys) = Server::start();
    let mut rng = Lcg(7);
    let base = chrono::Utc::now().timestamp_millis() - 10 * 86_400_000;
    let mut times: Vec<i64> = (0..3000).map(|i| base + i * 1000).collect();
    for i in (1..times.len()).rev() {
        times.swap(i, rng.next(i as u64 + 1) as usize);
    }
    let events: Vec<Value> = times
        .iter()
        .enumerate()
        .map(|(i, time)| {
            let mut set = serde_json::Map::new();
            for k in 0..8 {
                if rng.next(3) == 0 {
                    set.insert(format!("k{k}"), json!(format!("v{}", rng.next(5))));
                }
            }
            let unset: serde_json::Map<String, Value> = (0..8)
                .filter(|_| rng.next(4) == 0)
                .map(|k| (format!("k{k}"), json!("-")))
                .filter(|(k, _)| !set.contains_key(k))
                .collect();
            let event_type = ["View", "Click", "Buy"][i % 3];
            let mut e = json!({
                "event_type": event_type,
                "user_id": format!("user-{:03}", rng.next(60)),
                "time": time,
                "insert_id": format!("ins-{i}"),
                "event_properties": {"n": i, "half": i as f64 / 2.0},
                "user_properties": {"$set": set, "$unset": unset},
            });
            if i % 5 == 0 {
                e["plan"] = json!({"branch": "main", "source": "web", "version": "3"});
                e["ingestion_metadata"] =
                    json!({"source_name": "backfill", "source_version": "1.0"});
                e["paying"] = json!(i % 10 == 0);
                e["quantity"] = json!(2);
                e["price"] = json!(1.25);
            }
            e
        })
        .collect();
    for chunk in events.chunks(1000) {
        let (s, body) = source.send(&source_keys, json!(chunk));
        assert_eq!(s, 200, "{body}");
    }
    let mut rows = source.export_today(&source_keys);
    assert_eq!(rows.len(), 3000);
    let planned: Vec<&Value> = rows
        .iter()
        .filter(|r| r["plan"]["branch"] == "main")
        .collect();
    assert_eq!(planned.len(), 600, "plan is kept and exported");
    assert!(planned
        .iter()
        .all(|r| r["ingestion_metadata"]["source_name"] == "backfill"
            && r["paying"].is_boolean()
            && r["quantity"] == json!(2)));
    // Fields another exporter writes that lethe does not model are kept as they are.
    for (i, row) in rows.iter_mut().enumerate().filter(|(i, _)| i % 7 == 0) {
        row["client_upload_time"] = json!("2030-01-01 00:00:00.000000");
        row["data"] = json!({"path": format!("/p/{i}"), "group_ids": {}});
        row["user_creation_time"] = json!("2020-05-05 05:05:05.000000");
        row["amplitude_attribution_ids"] = json!(["a1", "a2"]);
    }
    let expected = by_uuid(&rows);
    let mut lines: Vec<String> = rows.iter().map(Value::to_string).collect();
    for i in (1..lines.len()).rev() {
        lines.swap(i, rng.next(i as u64 + 1) as usize);
    }

    // A new server imports the shuffled export.
    let tmp = tempfile::tempdir().unwrap();
    let target = Server::start_on(&tmp.path().join("data"), &["--privacy-grace", "0s"]);
    let keys = target.first_start_keys();
    let token = target.admin_token();
    let (s, b) = target.import(&token, keys.project_id, lines.join("\n"));
    assert_eq!((s, &b["ingested"]), (200, &json!(3000)), "{b}");
    let imported = by_uuid(&target.export_today(&keys));
    assert_eq!(imported.len(), 3000);
    let differing: Vec<&String> = expected
        .iter()
        .filter(|(uuid, row)| imported.get(*uuid) != Some(row))
        .map(|(uuid, _)| uuid)
        .collect();
    assert!(
        differing.is_empty(),
        "{} rows differ, e.g. {:?} became {:?}",
        differing.len(),
        expected[differing[0]],
        imported.get(differing[0])
    );

    // Each user's profile is the snapshot of their latest event by event time.
    let mut latest: std::collections::BTreeMap<String, &Value> = Default::default();
    for row in expected.values() {
        let user = row["user_id"].as_str().unwrap().to_string();
        let newer = latest
            .get(&user)
            .is_none_or(|r| r["event_time"].as_str() < row["event_time"].as_str());
        if newer {
            latest.insert(user, row);
        }
    }
    for (user, row) in &latest {
        let (s, body) = target.user_profile(
            &keys.secret_key,
            &format!("user_id={user}&get_amp_props=true"),
        );
        assert_eq!(s, 200);
        assert_eq!(
            body["userData"]["amp_props"], row["user_properties"],
            "{user}"
        );
        assert_eq!(
            body["userData"]["amplitude_id"], row["amplitude_id"],
            "{user}"
        );
    }

    // A task removing one user property from one event type changes exactly those rows.
    let now = chrono::Utc::now();
    let rfc =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (s, task) = target.post_as(
        &token,
        &format!("/api/v1/projects/{}/deletion-tasks", keys.project_id),
        &json!({"name": "k3 on views", "start": rfc(now - chrono::Duration::hours(2)), "end": rfc(now),
                "confirm": "DELETE",
                "clauses": [{"kind": "user_property", "properties": ["k3"], "event_types": ["View"]}]}),
    );
    assert_eq!(s, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, t) = target.get_as(&token, &format!("/api/v1/deletion-tasks/{id}"));
        if t["status"] == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && t["status"] != "failed",
            "{t}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let after = by_uuid(&target.export_today(&keys));
    assert_eq!(after.len(), 3000);
    for (uuid, row) in &expected {
        let mut want = row.clone();
        if row["event_type"] == "View" {
            want["user_properties"]
                .as_object_mut()
                .unwrap()
                .remove("k3");
        }
        assert_eq!(after[uuid], want);
    }

    // Erasing one user removes their rows and leaves every other row as it was.
    let (s, body) = target.basic_post(
        &keys,
        "/api/2/deletions/users",
        &json!({"user_ids": ["user-007"], "requester": "dpo"}),
    );
    assert_eq!(s, 200, "{body}");
    let erased = after
        .values()
        .filter(|r| r["user_id"] == "user-007")
        .count();
    assert!(erased > 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let remaining = loop {
        let rows = by_uuid(&target.export_today(&keys));
        if rows.len() == 3000 - erased {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the erasure never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    for (uuid, row) in &after {
        match row["user_id"] == "user-007" {
            true => assert!(!remaining.contains_key(uuid)),
            false => assert_eq!(&remaining[uuid], row),
        }
    }
}

/// The profile follows the latest event by event time across imports and restarts: a row
/// repeating the profile at a later time moves the profile's time, and that time is kept.
#[test]
fn an_older_row_imported_after_a_restart_does_not_replace_a_newer_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &["--flush-interval", "100ms"]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let row = |time: &str, plan: &str| {
        json!({"event_type": "e", "user_id": "user-asof", "event_time": time,
               "server_upload_time": "2026-11-30 10:00:00.000000", "user_properties": {"plan": plan}})
        .to_string()
    };
    for time in ["2026-11-30 05:00:00.000000", "2026-11-30 09:00:00.000000"] {
        let (s, b) = server.import(&token, keys.project_id, row(time, "B"));
        assert_eq!((s, &b["ingested"]), (200, &json!(1)), "{b}");
    }
    // The next flush (here the stop's) persists the time the second row moved the profile
    // to.
    server.stop();
    let server = Server::start_on(&dir, &[]);
    let token = server.admin_token();
    let (s, b) = server.import(
        &token,
        keys.project_id,
        row("2026-11-30 07:00:00.000000", "A"),
    );
    assert_eq!((s, &b["ingested"]), (200, &json!(1)), "{b}");
    let (s, body) = server.user_profile(&keys.secret_key, "user_id=user-asof&get_amp_props=true");
    assert_eq!(s, 200);
    assert_eq!(body["userData"]["amp_props"], json!({"plan": "B"}));
}
