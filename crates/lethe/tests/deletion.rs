//! Self-service deletion end to end: exact preview, submit, queue, execution, and proof that
//! the removed values are gone from every file while everything else stays.

mod common;

use std::time::{Duration, Instant};

use common::{Keys, Server};
use serde_json::{json, Value};

const FLUSH_FAST: &[&str] = &["--flush-interval", "100ms"];

/// Submits a task and checks it was accepted.
fn submit(server: &Server, token: &str, keys: &Keys, body: &Value) -> Value {
    let path = format!("/api/v1/projects/{}/deletion-tasks", keys.project_id);
    let (s, task) = server.post_as(token, &path, body);
    assert_eq!(s, 202, "{task}");
    task
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn import_lines(server: &Server, token: &str, project: i64, lines: &[Value]) {
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    let (s, b) = server.import(token, project, body.join("\n"));
    assert_eq!((s, b["rejected"].clone()), (200, json!(0)), "{b}");
}

fn wait_for_status(server: &Server, token: &str, id: i64, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, task) = server.get_as(token, &format!("/api/v1/deletion-tasks/{id}"));
        if task["status"] == status {
            return task;
        }
        assert!(task["status"] != "failed", "task failed: {task}");
        assert!(
            Instant::now() < deadline,
            "task never reached {status}: {task}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Data with planted markers: `DEL-*` must vanish, `KEEP-*` must stay.
fn plant(server: &Server, keys: &Keys, token: &str) {
    let two_days_ago = chrono::Utc::now() - chrono::Duration::days(2);
    let old = lethe_time(two_days_ago);
    import_lines(
        server,
        token,
        keys.project_id,
        &[
            json!({"event_type": "Test Flood", "user_id": "user-old-1", "server_upload_time": old, "event_properties": {"note": "KEEP-OUTSIDE-RANGE"}}),
            json!({"event_type": "Signup", "user_id": "user-old-2", "server_upload_time": old, "event_properties": {"email": "KEEP-OLD-EMAIL"}}),
        ],
    );
    let mut events = Vec::new();
    for i in 0..30 {
        events.push(json!({"event_type": "Test Flood", "user_id": format!("user-{i:03}"), "event_properties": {"note": "DEL-FLOOD-MARKER", "n": i}}));
    }
    for i in 0..10 {
        events.push(json!({"event_type": "Signup", "user_id": format!("user-{i:03}"),
            "event_properties": {"email": format!("DEL-EMAIL-MARKER-{i}"), "plan": "KEEP-PLAN-MARKER"},
            "user_properties": {"$set": {"phone": "DEL-PHONE-MARKER", "tier": "KEEP-TIER-MARKER"}}}));
        events.push(
            json!({"event_type": "Purchase", "user_id": format!("user-{i:03}"),
            "event_properties": {"email": "KEEP-EMAIL-OTHER-TYPE", "amount": 5}}),
        );
    }
    assert_eq!(server.send(keys, json!(events)).0, 200);
}

fn lethe_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Now, strictly after the millisecond of every event acknowledged before the call: a task's
/// range is `[start, end)` at millisecond precision, and an event acknowledged in the same
/// millisecond as `end` is rightly outside it (on a fast machine the 200 and the next clock
/// read can share a millisecond: that made a task "miss" events in a flaky run).
fn now_after_acks() -> chrono::DateTime<chrono::Utc> {
    std::thread::sleep(Duration::from_millis(2));
    chrono::Utc::now()
}

fn task_body(name: &str) -> Value {
    let now = now_after_acks();
    json!({
        "name": name,
        "start": rfc3339(now - chrono::Duration::hours(1)),
        "end": rfc3339(now),
        "clauses": [
            {"kind": "event", "event_types": ["Test Flood"]},
            {"kind": "event_property", "properties": ["email"], "event_types": ["Signup"]},
            {"kind": "user_property", "properties": ["phone"], "from_profiles": true}
        ]
    })
}

const DELETED: &[&str] = &["DEL-FLOOD-MARKER", "DEL-EMAIL-MARKER", "DEL-PHONE-MARKER"];
const KEPT: &[&str] = &[
    "KEEP-EMAIL-OTHER-TYPE",
    "KEEP-OLD-EMAIL",
    "KEEP-OUTSIDE-RANGE",
    "KEEP-PLAN-MARKER",
    "KEEP-TIER-MARKER",
];

#[test]
fn a_task_removes_exactly_what_its_preview_shows_and_leaves_nothing_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(&tmp.path().join("data"), FLUSH_FAST);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    plant(&server, &keys, &token);
    let mut all_markers: Vec<&str> = DELETED.iter().chain(KEPT).copied().collect();
    all_markers.sort();
    assert_eq!(
        common::scan(&server.data_dir, &all_markers),
        all_markers,
        "every marker is on disk first"
    );

    let body = task_body("Remove the test flood and leaked emails");
    let (s, preview) = server.post_as(
        &token,
        &format!(
            "/api/v1/projects/{}/deletion-tasks/preview",
            keys.project_id
        ),
        &body,
    );
    assert_eq!(s, 200, "{preview}");
    assert_eq!(
        preview["totals"],
        json!({"events_deleted": 30, "event_property_values_removed": 10, "user_property_values_removed": 20, "group_property_values_removed": 0})
    );
    assert_eq!(preview["clauses"], json!([
        {"events_deleted": 30, "event_property_values_removed": 0, "user_property_values_removed": 0, "group_property_values_removed": 0},
        {"events_deleted": 0, "event_property_values_removed": 10, "user_property_values_removed": 0, "group_property_values_removed": 0},
        {"events_deleted": 0, "event_property_values_removed": 0, "user_property_values_removed": 20, "group_property_values_removed": 0},
    ]), "phone is on the 10 Signups and the 10 Purchases after them; the flood's users had none yet");
    assert_eq!(preview["rewrite"]["partitions"], 1);
    let samples = preview["samples"].as_array().unwrap();
    assert!((1..=5).contains(&samples.len()), "{samples:?}");
    assert!(samples.iter().all(|e| ["Test Flood", "Signup", "Purchase"]
        .contains(&e["event_type"].as_str().unwrap())
        && e["uuid"].as_str().unwrap().len() == 36));
    assert!(
        !preview.to_string().contains("MARKER"),
        "the preview shows no values"
    );

    let (s, b) = server.post_as(
        &token,
        &format!("/api/v1/projects/{}/deletion-tasks", keys.project_id),
        &body,
    );
    assert_eq!(
        (s, b["field"].clone()),
        (400, json!("confirm")),
        "submission needs confirm"
    );
    let mut confirmed = body.clone();
    confirmed["confirm"] = json!("DELETE");
    let task = submit(&server, &token, &keys, &confirmed);
    for field in [
        "id",
        "name",
        "project_id",
        "spec",
        "status",
        "queue_position",
        "progress",
        "preview",
        "result",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "error",
    ] {
        assert!(task.get(field).is_some(), "task object has {field}: {task}");
    }
    assert_eq!(task["preview"]["totals"], preview["totals"]);
    assert_eq!(task["created_by"], common::ADMIN_EMAIL);
    let id = task["id"].as_i64().unwrap();
    let r = server
        .client
        .delete(server.url(&format!("/api/v1/deletion-tasks/{id}")))
        .bearer_auth(&token)
        .send()
        .unwrap();
    let (s, b) = common::status_json(r);
    assert_eq!(s, 409);
    assert!(b["error"].as_str().unwrap().contains("cannot be cancelled"));

    let done = wait_for_status(&server, &token, id, "completed");
    assert_eq!(done["result"]["events_deleted"], 30);
    assert_eq!(done["result"]["event_property_values_removed"], 10);
    assert_eq!(done["result"]["user_property_values_removed"], 20);
    assert_eq!(done["result"]["matches_preview"], true);
    assert!(done["finished_at"].is_string());

    // Nothing of the removed data on disk; everything kept still there.
    let mut kept: Vec<&str> = KEPT.to_vec();
    kept.sort();
    assert_eq!(common::scan(&server.data_dir, &all_markers), kept);

    // The export agrees.
    let events = server.export_today(&keys);
    assert!(events.iter().all(|e| e["event_type"] != "Test Flood"
        || e["event_properties"]["note"] == "KEEP-OUTSIDE-RANGE"));
    for e in events
        .iter()
        .filter(|e| e["event_type"] == "Signup" && e["user_id"] != "user-old-2")
    {
        assert_eq!(e["event_properties"], json!({"plan": "KEEP-PLAN-MARKER"}));
        assert_eq!(e["user_properties"], json!({"tier": "KEEP-TIER-MARKER"}));
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event_properties"]["email"] == "KEEP-EMAIL-OTHER-TYPE")
            .count(),
        10
    );

    // from_profiles: a returning user no longer carries the property.
    server.send(
        &keys,
        json!([{"event_type": "Return", "user_id": "user-001"}]),
    );
    let events = server.export_today(&keys);
    let back = events.iter().find(|e| e["event_type"] == "Return").unwrap();
    assert_eq!(back["user_properties"], json!({"tier": "KEEP-TIER-MARKER"}));

    // The catalog knows the flood is gone.
    let (_, taxonomy) = server.basic_get(&keys, "/api/2/taxonomy/event");
    let flood = taxonomy["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "Test Flood")
        .unwrap();
    assert_eq!(
        flood["event_count"], 1,
        "only the event outside the range is left"
    );

    // The audit trail holds names and counts, never values.
    let (s, audit) = server.get_as(&token, "/api/v1/audit");
    assert_eq!(s, 200);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .filter(|a| a.starts_with("task."))
        .collect();
    assert!(
        actions.starts_with(&["task.submitted", "task.started"])
            && actions.contains(&"task.completed"),
        "{actions:?}"
    );
    assert!(!audit.to_string().contains("MARKER"));
    let submitted = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "task.submitted")
        .unwrap();
    assert_eq!(
        submitted["detail"]["preview"]["samples"],
        serde_json::json!([]),
        "no event uuid outlives the task"
    );
    assert!(
        audit.to_string().contains("Test Flood"),
        "the spec's names are audited"
    );
    let dir = server.data_dir.clone();
    server.stop();
    assert_eq!(
        common::scan(&dir, &all_markers),
        kept,
        "and after a restart-ready shutdown too"
    );
}

#[test]
fn bad_tasks_are_refused_with_the_field_named() {
    let (server, keys) = Server::start();
    let token = server.admin_token();
    server.send(
        &keys,
        json!([{"event_type": "Known", "user_id": "user-12345", "event_properties": {"p": 1}}]),
    );
    let path = format!(
        "/api/v1/projects/{}/deletion-tasks/preview",
        keys.project_id
    );
    let mut body = task_body("typo");
    body["clauses"] = json!([{"kind": "event", "event_types": ["Known", "Knwon"]}]);
    let (s, b) = server.post_as(&token, &path, &body);
    assert_eq!(
        (s, b["field"].clone(), b["unknown"].clone()),
        (400, json!("clauses[0].event_types"), json!(["Knwon"]))
    );
    body["clauses"] = json!(vec![json!({"kind": "event", "event_types": ["Known"]}); 6]);
    assert_eq!(server.post_as(&token, &path, &body).1["field"], "clauses");
    body["clauses"] = json!([{"kind": "event_property", "properties": []}]);
    assert_eq!(
        server.post_as(&token, &path, &body).1["field"],
        "clauses[0].properties"
    );
    body["clauses"] = json!([{"kind": "event", "event_types": ["Known"]}]);
    body["end"] = json!(rfc3339(chrono::Utc::now() + chrono::Duration::hours(1)));
    assert_eq!(server.post_as(&token, &path, &body).1["field"], "end");
    body["end"] = json!("not a time");
    let (s, b) = server.post_as(&token, &path, &body);
    assert_eq!((s, b["field"].clone()), (400, json!("end")));
    assert_eq!(
        server
            .post_as(
                &token,
                "/api/v1/projects/999/deletion-tasks/preview",
                &task_body("x")
            )
            .0,
        404
    );

    // Members read their projects' queue but cannot preview, submit, retry or read the audit.
    let (_, m) = server.post_as(
        &token,
        "/api/v1/users",
        &json!({"email": "m@example.com", "password": "long enough", "role": "member"}),
    );
    let grant = server.client.put(server.url(&format!(
        "/api/v1/projects/{}/members/{}",
        keys.project_id, m["id"]
    )));
    assert_eq!(
        server
            .bearer(grant.json(&json!({"role": "member"})), &token)
            .0,
        204
    );
    let member = server.login("m@example.com", "long enough");
    let good = {
        let mut b = task_body("ok");
        b["clauses"] = json!([{"kind": "event", "event_types": ["Known"]}]);
        b["confirm"] = json!("DELETE");
        b
    };
    assert_eq!(server.post_as(&member, &path, &good).0, 403);
    assert_eq!(
        server
            .post_as(
                &member,
                &format!("/api/v1/projects/{}/deletion-tasks", keys.project_id),
                &good
            )
            .0,
        403
    );
    assert_eq!(server.get_as(&member, "/api/v1/audit").0, 403);
    let (s, task) = server.post_as(
        &token,
        &format!("/api/v1/projects/{}/deletion-tasks", keys.project_id),
        &good,
    );
    assert_eq!(s, 202);
    let id = task["id"].as_i64().unwrap();
    let (s, list) = server.get_as(&member, "/api/v1/deletion-tasks");
    assert_eq!((s, list[0]["id"].clone()), (200, json!(id)));
    wait_for_status(&server, &token, id, "completed");
    assert_eq!(
        server
            .post_as(
                &member,
                &format!("/api/v1/deletion-tasks/{id}/retry"),
                &json!({})
            )
            .0,
        403
    );
    assert_eq!(
        server
            .post_as(
                &token,
                &format!("/api/v1/deletion-tasks/{id}/retry"),
                &json!({})
            )
            .0,
        409
    );
    assert_eq!(server.get_as(&token, "/api/v1/deletion-tasks/999").0, 404);
    assert_eq!(
        server
            .client
            .get(server.url("/api/v1/deletion-tasks"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
}

#[test]
fn tasks_queue_in_order_and_report_their_position() {
    let (server, keys) = Server::start();
    let token = server.admin_token();
    server.send(&keys, json!([{"event_type": "A", "user_id": "user-12345"}, {"event_type": "B", "user_id": "user-12345"}]));
    let submit = |t: &str| {
        let mut b = task_body(t);
        b["clauses"] = json!([{"kind": "event", "event_types": [t]}]);
        b["confirm"] = json!("DELETE");
        server
            .post_as(
                &token,
                &format!("/api/v1/projects/{}/deletion-tasks", keys.project_id),
                &b,
            )
            .1
    };
    let first = submit("A");
    let second = submit("B");
    assert!(second["queue_position"].as_i64().unwrap() <= 1);
    let id2 = second["id"].as_i64().unwrap();
    let done2 = wait_for_status(&server, &token, id2, "completed");
    let done1 = wait_for_status(&server, &token, first["id"].as_i64().unwrap(), "completed");
    assert!(
        done1["finished_at"].as_str() <= done2["started_at"].as_str(),
        "FIFO: {done1} {done2}"
    );
    let (_, list) = server.get_as(&token, "/api/v1/deletion-tasks");
    let ids: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id2, id2 - 1], "newest first");
    let remaining = server.export_today(&keys);
    assert!(
        remaining.is_empty(),
        "events in the tasks' ranges survived: {:?}; tasks: {done1} {done2}",
        remaining
            .iter()
            .map(|e| (&e["event_type"], &e["server_upload_time"]))
            .collect::<Vec<_>>()
    );
}

#[test]
fn ingestion_and_reads_go_on_during_a_task_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &tmp.path().join("data"),
        &["--flush-interval", "50ms", "--flush-events", "500"],
    );
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let mut lines = Vec::new();
    for day in 1..=3 {
        let t = lethe_time(chrono::Utc::now() - chrono::Duration::days(day));
        for i in 0..2000 {
            let kind = if i % 4 == 0 { "Drop" } else { "Keep" };
            lines.push(json!({"event_type": kind, "user_id": format!("user-{day}-{i}"), "server_upload_time": t, "event_properties": {"i": i}}));
        }
    }
    import_lines(&server, &token, keys.project_id, &lines);
    let now = chrono::Utc::now();
    let body = json!({"name": "during", "start": rfc3339(now - chrono::Duration::days(4)), "end": rfc3339(now),
        "confirm": "DELETE", "clauses": [{"kind": "event", "event_types": ["Drop"]}]});

    let url = server.url.clone();
    let live_keys = keys.clone();
    let sender = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        let mut acked = 0;
        for b in 0..40 {
            let events: Vec<Value> = (0..50)
                .map(|i| json!({"event_type": "Live", "device_id": format!("live-device-{i}"), "insert_id": format!("live-{b}-{i}")}))
                .collect();
            let r = client
                .post(format!("{url}/2/httpapi"))
                .json(&json!({"api_key": live_keys.api_key, "events": events}))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            acked += 50;
            std::thread::sleep(Duration::from_millis(5));
        }
        acked
    });
    let task = submit(&server, &token, &keys, &body);
    // Readers keep reading while the task rewrites.
    while !sender.is_finished() {
        server.export_today(&keys); // asserts the export answers (200 or 404)
        let (s, _) = server.basic_get(&keys, "/api/2/taxonomy/event");
        assert_eq!(s, 200);
    }
    let acked = sender.join().unwrap();
    let done = wait_for_status(&server, &token, task["id"].as_i64().unwrap(), "completed");
    assert_eq!(done["result"]["events_deleted"], 1500);
    let (_, taxonomy) = server.basic_get(&keys, "/api/2/taxonomy/event");
    let count = |t: &str| {
        taxonomy["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_type"] == t)
            .map(|e| e["event_count"].as_i64().unwrap())
    };
    assert_eq!(count("Drop"), None, "no Drop event left");
    assert_eq!(count("Keep"), Some(4500));
    assert_eq!(
        count("Live"),
        Some(acked),
        "every event acknowledged during the task is kept"
    );
    let live = server
        .export_today(&keys)
        .into_iter()
        .filter(|e| e["event_type"] == "Live")
        .count() as i64;
    assert_eq!(live, acked);
}

#[test]
fn a_property_only_task_rewrites_columns_leaves_no_residue_and_stays_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, FLUSH_FAST);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"event_type": if i % 2 == 0 { "View" } else { "Click" }, "user_id": format!("user-{i:04}"),
            "event_properties": {"token": format!("COLUMN-DEL-{i}"), "page": "COLUMN-KEEP"},
            "user_properties": {"email": format!("USER-DEL-{i}"), "tier": "USER-KEEP"}}))
        .collect();
    assert_eq!(server.send(&keys, json!(events)).0, 200);
    let now = now_after_acks();
    let body = json!({"name": "columns", "start": rfc3339(now - chrono::Duration::hours(1)), "end": rfc3339(now), "confirm": "DELETE",
        "clauses": [{"kind": "event_property", "properties": ["token"]},
                    {"kind": "user_property", "properties": ["email"], "event_types": ["View", "Click"], "from_profiles": true}]});
    let task = submit(&server, &token, &keys, &body);
    let done = wait_for_status(&server, &token, task["id"].as_i64().unwrap(), "completed");
    assert_eq!(done["result"]["event_property_values_removed"], 200);
    assert_eq!(done["result"]["user_property_values_removed"], 200);
    assert_eq!(done["result"]["events_deleted"], 0);
    let needles = ["COLUMN-DEL-7", "COLUMN-KEEP", "USER-DEL-7", "USER-KEEP"];
    assert_eq!(common::scan(&dir, &needles), ["COLUMN-KEEP", "USER-KEEP"]);
    let exported = server.export_today(&keys);
    assert_eq!(exported.len(), 200);
    assert!(exported
        .iter()
        .all(|e| e["event_properties"] == json!({"page": "COLUMN-KEEP"})
            && e["user_properties"] == json!({"tier": "USER-KEEP"})));
    server.stop();
    let counts = common::duckdb_counts(&dir);
    assert_eq!(
        counts,
        json!({"Click": 100, "View": 100}),
        "DuckDB reads the rewritten segments"
    );
}

/// Keys carried by few events share a segment's tail column (`e_tail`); a task that removes
/// one of them rewrites that column only, counts exactly, and leaves the other tail keys.
#[test]
fn a_rare_key_in_the_tail_column_is_removed_exactly_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, FLUSH_FAST);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let at = lethe_time(chrono::Utc::now() - chrono::Duration::minutes(30));
    let mut lines: Vec<Value> = (0..300)
        .map(|i| json!({"event_type": "Page Viewed", "user_id": format!("user-{i}"), "server_upload_time": at, "event_properties": {"page": i}}))
        .collect();
    lines[7]["event_properties"]["rare_a"] = json!("DEL-RARE-A");
    lines[7]["event_properties"]["rare_b"] = json!("KEEP-RARE-B");
    lines[8]["event_properties"]["rare_c"] = json!("KEEP-RARE-C");
    import_lines(&server, &token, keys.project_id, &lines);
    let in_tail = |dir: &std::path::Path| -> String {
        let counts = common::duckdb_counts_where(dir, "e_tail IS NOT NULL");
        let total: u64 = counts
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .sum();
        total.to_string()
    };
    assert_eq!(
        in_tail(&dir),
        "2",
        "the rare keys of two events share the tail column"
    );

    let now = now_after_acks();
    let body = json!({
        "name": "Remove rare_a",
        "start": rfc3339(now - chrono::Duration::hours(1)),
        "end": rfc3339(now),
        "clauses": [{"kind": "event_property", "properties": ["rare_a"]}],
    });
    let path = format!(
        "/api/v1/projects/{}/deletion-tasks/preview",
        keys.project_id
    );
    let (s, preview) = server.post_as(&token, &path, &body);
    assert_eq!(s, 200, "{preview}");
    assert_eq!(
        preview["totals"]["event_property_values_removed"], 1,
        "{preview}"
    );
    let mut confirmed = body.clone();
    confirmed["confirm"] = json!("DELETE");
    let task = submit(&server, &token, &keys, &confirmed);
    let done = wait_for_status(&server, &token, task["id"].as_i64().unwrap(), "completed");
    assert_eq!(done["result"]["event_property_values_removed"], 1, "{done}");
    assert_eq!(done["result"]["matches_preview"], true, "{done}");
    let events = server.export_today(&keys);
    assert_eq!(events.len(), 300);
    let seventh = events.iter().find(|e| e["user_id"] == "user-7").unwrap();
    assert_eq!(
        seventh["event_properties"],
        json!({"page": 7, "rare_b": "KEEP-RARE-B"}),
        "the other tail key of the row stays"
    );
    server.stop();
    assert_eq!(
        common::scan(&dir, &["DEL-RARE-A", "KEEP-RARE-B", "KEEP-RARE-C"]),
        ["KEEP-RARE-B", "KEEP-RARE-C"]
    );
    assert_eq!(in_tail(&dir), "2", "both rows keep a tail key");
}
