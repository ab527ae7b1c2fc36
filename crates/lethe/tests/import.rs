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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
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
