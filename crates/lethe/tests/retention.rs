//! Retention policies: "keep `Old` events 2 days" removes exactly the events uploaded before
//! the start of the day two days ago, across that day boundary to the millisecond; other
//! types and newer events stay; the policy's task runs like any other, audited.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

fn lethe_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

#[test]
fn a_policy_removes_exactly_the_events_past_its_age_across_the_day_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(&tmp.path().join("data"), &["--flush-interval", "100ms"]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let midnight = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let cutoff = midnight - chrono::Duration::days(2);
    let line = |event_type: &str, at: chrono::DateTime<chrono::Utc>, marker: &str| {
        json!({"event_type": event_type, "user_id": "user-retained", "server_upload_time": lethe_time(at),
               "event_properties": {"marker": marker}})
        .to_string()
    };
    let lines = [
        line(
            "Old",
            cutoff - chrono::Duration::milliseconds(1),
            "RET-PAST-MARKER",
        ),
        line(
            "Old",
            cutoff - chrono::Duration::days(3),
            "RET-LONG-PAST-MARKER",
        ),
        line("Old", cutoff, "RET-EDGE-KEPT-MARKER"),
        line(
            "Old",
            chrono::Utc::now() - chrono::Duration::minutes(1),
            "RET-NEW-KEPT-MARKER",
        ),
        line(
            "Other",
            cutoff - chrono::Duration::days(3),
            "RET-OTHER-KEPT-MARKER",
        ),
    ];
    let (status, body) = server.import(&token, keys.project_id, lines.join("\n"));
    assert_eq!(
        (status, body["rejected"].clone()),
        (200, json!(0)),
        "{body}"
    );

    let path = format!("/api/v1/projects/{}/retention", keys.project_id);
    let (status, body) = server.post_as(&token, &path, &json!({"days": 0}));
    assert_eq!(
        (status, body["field"].clone()),
        (400, json!("days")),
        "{body}"
    );
    let policy = json!({"days": 2, "event_types": ["Old"]});
    let (status, preview) = server.post_as(&token, &format!("{path}/preview"), &policy);
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["totals"]["events_deleted"], 2);
    let (status, created) = server.post_as(&token, &path, &policy);
    assert_eq!(status, 201, "{created}");

    // The worker queues the policy's task at once (its first check of the day); it completes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let task = loop {
        let (_, tasks) = server.get_as(&token, "/api/v1/deletion-tasks");
        let done = tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| {
                t["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Retention: Old")
                    && t["status"] == "completed"
            })
            .cloned();
        if let Some(task) = done {
            break task;
        }
        assert!(
            Instant::now() < deadline,
            "the retention task never completed: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(task["result"]["events_deleted"], 2);
    assert_eq!(task["created_by"], "retention");
    let mut markers = [
        "RET-EDGE-KEPT-MARKER",
        "RET-LONG-PAST-MARKER",
        "RET-NEW-KEPT-MARKER",
        "RET-OTHER-KEPT-MARKER",
        "RET-PAST-MARKER",
    ];
    markers.sort();
    assert_eq!(
        common::scan(&server.data_dir, &markers),
        vec![
            "RET-EDGE-KEPT-MARKER",
            "RET-NEW-KEPT-MARKER",
            "RET-OTHER-KEPT-MARKER"
        ]
    );

    // Checked today: no second task until tomorrow.
    let (_, listed) = server.get_as(&token, &path);
    let listed: &Value = &listed["policies"][0];
    assert_eq!(
        listed["checked_day"],
        midnight.format("%Y-%m-%d").to_string()
    );
    assert_eq!(listed["last_task_id"], task["id"]);
    let removed = server
        .client
        .delete(server.url(&format!("{path}/{}", created["id"])))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    let actions = server.audit_actions(&token);
    for action in ["retention.created", "retention.deleted"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}
