//! Deletion by value: clauses with a `where` on an event property, a built-in field and a
//! property's own value, against events with planted markers. The preview is exact, the
//! task removes exactly the matching events and values (their markers are in no file
//! afterwards, the kept ones still are), and the values the task was given are kept only
//! while it may run: the audit, the receipt and the completed task hold salted digests.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

const TASK_NAME: &str = "Remove test traffic";

fn wait_completed(server: &Server, token: &str, id: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, task) = server.get_as(token, &format!("/api/v1/deletion-tasks/{id}"));
        if task["status"] == "completed" {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "the task never completed: {task}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Twelve of each: `Page Viewed` on staging or production, `Signed Up` with a test or a real
/// address, `Click` from Atlantis or Norway; every value carries a marker.
fn events(round: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..12 {
        let n = round * 100 + i;
        let staging = i % 2 == 0;
        out.push(
            json!({"event_type": "Page Viewed", "user_id": format!("viewer-{}", i % 3),
            "event_properties": {"env": if staging { "stage-7f3e" } else { "production" },
                "note": if staging { format!("pv-gone-{n}") } else { format!("pv-kept-{n}") }}}),
        );
        let email = match staging {
            true => format!("mail-gone-{n}@Test.Example"),
            false => format!("mail-kept-{n}@real.example"),
        };
        out.push(
            json!({"event_type": "Signed Up", "user_id": format!("signup-{n}"),
            "event_properties": {"email": email, "plan": "free"}}),
        );
        out.push(json!({"event_type": "Click", "user_id": format!("clicker-{n}"),
            "country": if staging { "Atlantis" } else { "Norway" },
            "event_properties": {"note": if staging { format!("click-gone-{n}") } else { format!("click-kept-{n}") }}}));
    }
    out
}

fn body(now: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"name": TASK_NAME,
    "start": (now - chrono::Duration::hours(1)).to_rfc3339(), "end": now.to_rfc3339(),
    "clauses": [
        {"kind": "event", "event_types": ["Page Viewed"],
         "where": {"property": {"type": "event", "name": "env"}, "op": "is", "values": ["stage-7f3e"]}},
        {"kind": "event_property", "properties": ["email"],
         "where": {"property": {"type": "event", "name": "email"}, "op": "contains", "values": ["@TEST.example"]}},
        {"kind": "event", "event_types": ["Click"],
         "where": {"property": {"type": "built_in", "name": "country"}, "op": "is", "values": ["Atlantis"]}},
    ]})
}

#[test]
fn a_task_with_where_removes_exactly_the_matching_values_and_keeps_none_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(&tmp.path().join("data"), &["--flush-interval", "100ms"]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    // One round in segments, one still in the WAL and memtable when the task is submitted.
    assert_eq!(server.send(&keys, json!(events(0))).0, 200);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(server.send(&keys, json!(events(1))).0, 200);
    std::thread::sleep(Duration::from_millis(5));
    let now = chrono::Utc::now();
    let tasks = format!("/api/v1/projects/{}/deletion-tasks", keys.project_id);

    // Refused, with the field named: a property the project never saw, and blocking by value.
    let mut typo = body(now);
    typo["clauses"][0]["where"]["property"]["name"] = json!("evn");
    let (status, refused) = server.post_as(&token, &format!("{tasks}/preview"), &typo);
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["field"], "clauses[0].where.property.name");
    assert_eq!(refused["unknown"], json!(["evn"]));
    let mut blocking = body(now);
    blocking["keep_blocking"] = json!(true);
    blocking["confirm"] = json!("DELETE");
    let (status, refused) = server.post_as(&token, &tasks, &blocking);
    assert_eq!(
        (status, refused["field"].as_str()),
        (400, Some("keep_blocking"))
    );

    // The preview counts exactly what matches: per round, 6 staging views, 6 test addresses,
    // 6 clicks from Atlantis.
    let (status, preview) = server.post_as(&token, &format!("{tasks}/preview"), &body(now));
    assert_eq!(status, 200, "{preview}");
    let clause = |i: usize, field: &str| preview["clauses"][i][field].as_u64().unwrap();
    assert_eq!(clause(0, "events_deleted"), 12);
    assert_eq!(
        (
            clause(1, "events_deleted"),
            clause(1, "event_property_values_removed")
        ),
        (0, 12)
    );
    assert_eq!(clause(2, "events_deleted"), 12);

    let mut submit = body(now);
    submit["confirm"] = json!("DELETE");
    let (status, task) = server.post_as(&token, &tasks, &submit);
    assert_eq!(status, 202, "{task}");
    let done = wait_completed(&server, &token, &task["id"]);
    assert_eq!(done["result"]["events_deleted"], 24, "{done}");
    assert_eq!(done["result"]["event_property_values_removed"], 12);
    assert_eq!(done["result"]["matches_preview"], true);

    // What is left is exactly what did not match.
    let left = server.export_today(&keys);
    let count = |f: &dyn Fn(&Value) -> bool| left.iter().filter(|e| f(e)).count();
    assert_eq!(count(&|e| e["event_type"] == "Page Viewed"), 12);
    assert_eq!(count(&|e| e["event_properties"]["env"] == "stage-7f3e"), 0);
    assert_eq!(
        count(&|e| e["event_type"] == "Signed Up"),
        24,
        "no sign-up deleted"
    );
    assert_eq!(count(&|e| e["event_properties"]["email"].is_string()), 12);
    assert_eq!(
        count(&|e| e["event_type"] == "Signed Up" && e["event_properties"]["plan"] == "free"),
        24,
        "the other properties of a cleared event stay"
    );
    assert_eq!(count(&|e| e["country"] == "Atlantis"), 0);
    assert_eq!(count(&|e| e["country"] == "Norway"), 12);

    // Gone from every file: the deleted values, and the values the task was given (its
    // stored spec, the audit, SQLite's free pages); the kept ones are still there.
    let needles = [
        "pv-gone-",
        "mail-gone-",
        "click-gone-",
        "stage-7f3e",
        "@TEST.example",
        "Atlantis",
        "pv-kept-",
        "mail-kept-",
        "click-kept-",
    ];
    assert_eq!(
        common::scan(&server.data_dir, &needles),
        vec!["click-kept-", "mail-kept-", "pv-kept-"]
    );
    let clauses = &done["spec"]["clauses"];
    for i in 0..3 {
        let filter = &clauses[i]["where"];
        assert!(filter.get("values").is_none(), "{filter}");
        assert_eq!(filter["value_digests"].as_array().unwrap().len(), 1);
    }
    let (status, receipt) = server.get_as(
        &token,
        &format!("/api/v1/deletion-tasks/{}/receipt", task["id"]),
    );
    assert_eq!(status, 200);
    let text = receipt.to_string();
    assert!(text.contains("value_digests"), "{text}");
    assert!(
        !text.contains("stage-7f3e") && !text.contains("Atlantis"),
        "{text}"
    );
    let (_, audit) = server.get_as(&token, "/api/v1/audit");
    assert!(!audit.to_string().contains("Atlantis"), "{audit}");
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn a_crash_between_the_completion_and_its_purge_leaves_no_value_of_the_task() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let crashing = [("LETHE_FAILPOINT", "delete:after_redact")];
    let server = Server::start_with_env(&dir, &["--flush-interval", "100ms"], &crashing);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    assert_eq!(server.send(&keys, json!(events(0))).0, 200);
    std::thread::sleep(Duration::from_millis(5));
    let mut submit = body(chrono::Utc::now());
    submit["confirm"] = json!("DELETE");
    let tasks = format!("/api/v1/projects/{}/deletion-tasks", keys.project_id);
    if let Some((status, answer)) = server.post_before_abort(&token, &tasks, &submit) {
        assert_eq!(status, 202, "{answer}");
    }
    let dir = server.wait_exit(Duration::from_secs(60));

    // Restarted: the worker purges before it takes the next task.
    let server = Server::start_on(&dir, &["--flush-interval", "100ms"]);
    let done = server.newest_task(&token);
    assert_eq!(done["name"], submit["name"], "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    let (status, next) = server.submit_last_hour(
        &token,
        keys.project_id,
        json!({"name": "Afterwards", "clauses": [{"kind": "event", "event_types": ["Click"]}]}),
    );
    assert_eq!(status, 202, "{next}");
    wait_completed(&server, &token, &next["id"]);
    assert_eq!(
        common::scan(
            &server.data_dir,
            &["@TEST.example", "Atlantis", "click-kept-"]
        ),
        Vec::<String>::new(),
        "the task's values are in no file, nor anything the second task deleted"
    );
}
