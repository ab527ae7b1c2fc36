//! Access requests (Amplitude's DSAR API): a request for one user returns exactly their
//! events and current profile as gzip NDJSON; erasing the user by a privacy job deletes the
//! file with the data; every step is audited.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Keys, Server};
use serde_json::{json, Value};

fn basic_post(server: &Server, keys: &Keys, path: &str, body: &Value) -> (u16, Value) {
    common::status_json(
        server
            .client
            .post(server.url(path))
            .basic_auth(&keys.api_key, Some(&keys.secret_key))
            .json(body)
            .send()
            .unwrap(),
    )
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_access_request_returns_exactly_the_users_data_and_erasure_takes_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &tmp.path().join("data"),
        &["--privacy-grace", "0s", "--flush-interval", "100ms"],
    );
    let keys = server.first_start_keys();
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(json!({"event_type": "viewed", "user_id": "dsar-person-1", "insert_id": format!("a{i}"),
            "event_properties": {"marker": "DSAR-A-MARKER"}, "user_properties": {"$set": {"plan": "gold"}}}));
    }
    for i in 0..2 {
        events.push(
            json!({"event_type": "viewed", "user_id": "dsar-other-2", "insert_id": format!("b{i}"),
            "event_properties": {"marker": "DSAR-B-MARKER"}}),
        );
    }
    assert_eq!(server.send(&keys, json!(events)).0, 200);

    let today = chrono::Utc::now().date_naive();
    let range = |user: &str| {
        json!({"userId": user, "startDate": (today - chrono::Duration::days(1)).to_string(),
               "endDate": today.to_string()})
    };
    let (status, body) = basic_post(
        &server,
        &keys,
        "/api/2/dsar/requests",
        &range("nobody-here"),
    );
    assert_eq!(
        (status, body["field"].clone()),
        (400, json!("userId")),
        "{body}"
    );
    let (status, created) = basic_post(
        &server,
        &keys,
        "/api/2/dsar/requests",
        &range("dsar-person-1"),
    );
    assert_eq!(status, 200, "{created}");
    let id = created["requestId"].as_i64().unwrap();
    let path = format!("/api/2/dsar/requests/{id}");

    let mut request = Value::Null;
    wait_until("the access request", || {
        request = server.basic_get(&keys, &path).1;
        request["status"] == "done"
    });
    assert_eq!(request["userId"], "dsar-person-1");
    assert!(request["expires"].is_string());
    let url = request["urls"][0].as_str().unwrap().to_string();
    let answer = server
        .client
        .get(&url)
        .basic_auth(&keys.api_key, Some(&keys.secret_key))
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&answer.bytes().unwrap()[..])
        .read_to_string(&mut text)
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "three events and the profile: {text}");
    assert!(lines[..3]
        .iter()
        .all(|e| e["user_id"] == "dsar-person-1"
            && e["event_properties"]["marker"] == "DSAR-A-MARKER"));
    assert_eq!(lines[3]["current_profile"], true);
    assert_eq!(lines[3]["user_properties"], json!({"plan": "gold"}));
    assert!(!text.contains("DSAR-B-MARKER"), "nobody else's data");
    // Another project's keys reach neither the request nor its file.
    let token = server.admin_token();
    let (status, other) = server.post_as(&token, "/api/v1/projects", &json!({"name": "Other"}));
    assert_eq!(status, 201, "{other}");
    let other = Keys::of_project(&other);
    assert_eq!(server.basic_get(&other, &path).0, 404);
    let stranger = server
        .client
        .get(&url)
        .basic_auth(&other.api_key, Some(&other.secret_key))
        .send()
        .unwrap();
    assert_eq!(stranger.status().as_u16(), 404);
    assert_eq!(
        common::scan(&server.data_dir, &["DSAR-A-MARKER"]),
        vec!["DSAR-A-MARKER"]
    );

    // The user is erased: the file goes with their data.
    let (status, body) = basic_post(
        &server,
        &keys,
        "/api/2/deletions/users",
        &json!({"user_ids": ["dsar-person-1"], "requester": "dpo@example.com"}),
    );
    assert_eq!(status, 200, "{body}");
    wait_until("the erasure", || server.basic_get(&keys, &path).0 == 404);
    let gone = server
        .client
        .get(&url)
        .basic_auth(&keys.api_key, Some(&keys.secret_key))
        .send()
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    wait_until("the erasure task", || {
        common::scan(&server.data_dir, &["DSAR-A-MARKER", "DSAR-B-MARKER"]) == vec!["DSAR-B-MARKER"]
    });
    let actions = server.audit_actions(&token);
    for action in [
        "access.requested",
        "access.completed",
        "access.downloaded",
        "access.erased",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

#[test]
fn an_access_file_is_deleted_when_its_download_window_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &tmp.path().join("data"),
        &["--access-window", "2s", "--flush-interval", "100ms"],
    );
    let keys = server.first_start_keys();
    let event = json!([{"event_type": "viewed", "user_id": "dsar-window-1",
        "event_properties": {"marker": "DSAR-WINDOW-MARKER"}}]);
    assert_eq!(server.send(&keys, event).0, 200);
    let today = chrono::Utc::now().date_naive().to_string();
    let (status, created) = basic_post(
        &server,
        &keys,
        "/api/2/dsar/requests",
        &json!({"userId": "dsar-window-1", "startDate": today, "endDate": today}),
    );
    assert_eq!(status, 200, "{created}");
    let path = format!("/api/2/dsar/requests/{}", created["requestId"]);
    let mut request = Value::Null;
    wait_until("the access request", || {
        request = server.basic_get(&keys, &path).1;
        request["status"] == "done"
    });
    let url = request["urls"][0].as_str().unwrap().to_string();
    let file_status = || {
        server
            .client
            .get(&url)
            .basic_auth(&keys.api_key, Some(&keys.secret_key))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(file_status(), 200);
    // The window ends: the file is deleted, the request stays, with no URL.
    wait_until("the file's expiry", || file_status() == 410);
    let (_, request) = server.basic_get(&keys, &path);
    assert_eq!(
        (request["status"].clone(), request["urls"].clone()),
        (json!("done"), json!([]))
    );
    let token = server.admin_token();
    assert!(server
        .audit_actions(&token)
        .iter()
        .any(|a| a == "access.expired"));
    // Its bytes are gone: no access file is left (on local storage, where the test can look).
    let left = std::fs::read_dir(server.data_dir.join("segments/access"))
        .map(|files| files.count())
        .unwrap_or(0);
    assert_eq!(left, 0);
}
