//! The block list: a deletion task submitted with `keep_blocking` keeps what it deleted from
//! coming back: the official Python SDK sends the deleted type again and gets its 200s, and
//! nothing of it reaches any file; lifting the block lets it in again. Blocked property keys
//! are taken out of events and profiles. Only administrators change the list; every change
//! is audited.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Keys, Server};
use serde_json::{json, Value};

/// Sends `events` events through the official SDK (`cluster_ingest.py`: alternately `Keep`
/// and `Purge`, markers `keep-marker-TAG` / `purge-marker-TAG`); how many it got a 200 for.
fn sdk_send(server: &Server, keys: &Keys, tag: &str, events: usize) -> usize {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/cluster_ingest.py");
    let out = common::stdout_of(Command::new("python3").arg(script).args([
        &server.url,
        &keys.api_key,
        tag,
        &events.to_string(),
    ]));
    out.lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["code"] == 200)
        .count()
}

fn counts(events: &[Value], tag: &str) -> (usize, usize) {
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| {
                e["event_type"] == kind
                    && e["$insert_id"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with(&format!("{tag}-"))
            })
            .count()
    };
    (of("Keep"), of("Purge"))
}

#[test]
fn a_task_that_keeps_blocking_stops_the_sdk_bringing_it_back_until_lifted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(&tmp.path().join("data"), &["--flush-interval", "100ms"]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    assert_eq!(sdk_send(&server, &keys, "b1", 40), 40);

    std::thread::sleep(Duration::from_millis(5));
    let (status, task) = server.submit_last_hour(
        &token,
        keys.project_id,
        json!({"name": "Remove Purge and keep it out", "keep_blocking": true,
                "clauses": [{"kind": "event", "event_types": ["Purge"]}]}),
    );
    assert_eq!(status, 202, "{task}");
    let blocks_path = format!("/api/v1/projects/{}/blocks", keys.project_id);
    let (_, blocks) = server.get_as(&token, &blocks_path);
    let names: Vec<(&str, &str)> = blocks["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["kind"].as_str().unwrap(), b["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        vec![("event_type", "Purge")],
        "blocked with the submission"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .get_as(&token, &format!("/api/v1/deletion-tasks/{}", task["id"]))
        .1["status"]
        != "completed"
    {
        assert!(Instant::now() < deadline, "the task never completed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // An old app build sends the type again: every event gets its 200, none is stored.
    assert_eq!(sdk_send(&server, &keys, "b2", 40), 40);
    let events = server.export_today(&keys);
    assert_eq!(counts(&events, "b1"), (20, 0));
    assert_eq!(counts(&events, "b2"), (20, 0));
    assert_eq!(
        common::scan(
            &server.data_dir,
            &["keep-marker-b2", "purge-marker-b1", "purge-marker-b2"]
        ),
        vec!["keep-marker-b2"],
        "a blocked event never reaches the WAL or a segment"
    );
    let blocked = server.metric("lethe_events_blocked_total");
    assert_eq!(blocked, 20.0);

    // Lifted: the type is stored again.
    let lift = server
        .client
        .delete(server.url(&format!("{blocks_path}/event_type/Purge")))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(lift.status().as_u16(), 204);
    assert_eq!(sdk_send(&server, &keys, "b3", 40), 40);
    assert_eq!(counts(&server.export_today(&keys), "b3"), (20, 20));
    let actions = server.audit_actions(&token);
    assert!(actions.contains(&"block.added".to_string()), "{actions:?}");
    assert!(actions.contains(&"block.lifted".to_string()), "{actions:?}");
}

#[test]
fn blocked_keys_are_taken_out_of_events_and_profiles_and_only_admins_change_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(&tmp.path().join("data"), &["--flush-interval", "100ms"]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let path = format!("/api/v1/projects/{}/blocks", keys.project_id);
    for (kind, names) in [("event_property", ["email"]), ("user_property", ["phone"])] {
        let (status, body) = server.post_as(&token, &path, &json!({"kind": kind, "names": names}));
        assert_eq!((status, body["added"].clone()), (201, json!(1)), "{body}");
    }
    let (status, body) = server.post_as(&token, &path, &json!({"kind": "value", "names": ["x"]}));
    assert_eq!(
        (status, body["field"].clone()),
        (400, json!("kind")),
        "{body}"
    );
    let (status, body) = server.post_as(&token, &path, &json!({"kind": "event_type", "names": []}));
    assert_eq!(
        (status, body["field"].clone()),
        (400, json!("names")),
        "{body}"
    );
    let member = server.member_token(&token, "member@example.com");
    let (status, _) = server.post_as(
        &member,
        &path,
        &json!({"kind": "event_type", "names": ["Signup"]}),
    );
    assert_eq!(status, 403);

    let event = json!([{"event_type": "Signup", "user_id": "user-blocked-1",
        "event_properties": {"email": "BLOCKED-EMAIL-MARKER", "plan": "pro"},
        "user_properties": {"$set": {"phone": "BLOCKED-PHONE-MARKER", "tier": "gold"}}}]);
    assert_eq!(server.send(&keys, event).0, 200);
    let events = server.export_today(&keys);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_properties"], json!({"plan": "pro"}));
    assert_eq!(events[0]["user_properties"], json!({"tier": "gold"}));
    let (_, profile) = server.user_profile(
        &keys.secret_key,
        "user_id=user-blocked-1&get_amp_props=true",
    );
    assert_eq!(
        profile["userData"]["amp_props"],
        json!({"tier": "gold"}),
        "{profile}"
    );
    assert!(common::scan(
        &server.data_dir,
        &["BLOCKED-EMAIL-MARKER", "BLOCKED-PHONE-MARKER"]
    )
    .is_empty());
}
