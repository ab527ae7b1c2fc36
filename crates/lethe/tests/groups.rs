//! Groups (Amplitude's accounts): the Group Identify API and `$groupidentify` change group
//! properties durably and invisibly; events store their groups' properties of the moment;
//! a deletion task removes a group property exactly, from events and groups, without residue.

mod common;

use std::time::{Duration, Instant};

use common::{scan, status_json, Keys, Server};
use serde_json::{json, Value};

fn group_identify(server: &Server, keys: &Keys, identification: &Value) -> (u16, Value) {
    let form = serde_urlencoded::to_string([
        ("api_key", keys.api_key.as_str()),
        ("identification", &identification.to_string()),
    ])
    .unwrap();
    status_json(
        server
            .client
            .post(server.url("/groupidentify"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .unwrap(),
    )
}

fn exported(server: &Server, keys: &Keys, event_type: &str) -> Value {
    server
        .export_today(keys)
        .into_iter()
        .find(|e| e["event_type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} event"))
}

#[test]
fn events_store_their_groups_properties_of_the_moment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &["--flush-interval", "1h"]);
    let keys = server.first_start_keys();
    let (s, body) = group_identify(
        &server,
        &keys,
        &json!([
            {"group_type": "org", "group_value": "acme", "group_properties": {"plan": "pro", "seats": 3}},
            {"group_type": "org", "group_value": "initech", "group_properties": {"$set": {"plan": "free"}}}
        ]),
    );
    assert_eq!((s, body), (200, json!("success")));
    let (s, _) = server.send(
        &keys,
        json!([{"event_type": "Before", "user_id": "user-g1", "groups": {"org": ["acme", "initech"]}}]),
    );
    assert_eq!(s, 200);
    // The SDKs' groupIdentify: a $groupidentify event, applied and never shown.
    let (s, _) = server.send(
        &keys,
        json!([{"event_type": "$groupidentify", "user_id": "user-g1", "groups": {"org": "acme"},
                "group_properties": {"$add": {"seats": 2}, "$set": {"owner": "ada"}}},
               {"event_type": "After", "user_id": "user-g1", "groups": {"org": "acme"}}]),
    );
    assert_eq!(s, 200);
    let before = exported(&server, &keys, "Before");
    assert_eq!(before["groups"], json!({"org": ["acme", "initech"]}));
    assert_eq!(
        before["group_properties"],
        json!({"org": {"acme": {"plan": "pro", "seats": 3}, "initech": {"plan": "free"}}})
    );
    let after = exported(&server, &keys, "After");
    assert_eq!(
        after["group_properties"],
        json!({"org": {"acme": {"owner": "ada", "plan": "pro", "seats": 5}}})
    );
    assert!(
        server
            .export_today(&keys)
            .iter()
            .all(|e| e["event_type"] != "$groupidentify"),
        "group identifications are not events"
    );

    // Durable before the 200: a kill -9 with nothing flushed loses no group change.
    let (s, _) = group_identify(
        &server,
        &keys,
        &json!({"group_type": "org", "group_value": "acme", "group_properties": {"$unset": {"owner": "-"}}}),
    );
    assert_eq!(s, 200);
    let dir = server.kill9();
    let server = Server::start_on(&dir, &[]);
    let (s, _) = server.send(
        &keys,
        json!([{"event_type": "Restarted", "user_id": "user-g1", "groups": {"org": "acme"}}]),
    );
    assert_eq!(s, 200);
    assert_eq!(
        exported(&server, &keys, "Restarted")["group_properties"],
        json!({"org": {"acme": {"plan": "pro", "seats": 5}}})
    );
    let token = server.admin_token();
    let (_, catalog) = server.get_as(
        &token,
        &format!("/api/v1/projects/{}/catalog", keys.project_id),
    );
    let names: Vec<&str> = catalog["group_properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["owner", "plan", "seats"]);
}

#[test]
fn group_identify_errors_name_the_field() {
    let (server, keys) = Server::start();
    let (s, body) = group_identify(
        &server,
        &keys,
        &json!([{"group_type": "org", "group_value": "acme"}, {"group_value": "x"}, {"group_type": "org"}]),
    );
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["events_with_missing_fields"]["group_type"], json!([1]));
    assert_eq!(
        body["events_with_missing_fields"]["group_value"],
        json!([2])
    );
    let too_many: serde_json::Map<String, Value> =
        (0..6).map(|i| (format!("type{i}"), json!("v"))).collect();
    let (s, body) = server.send(
        &keys,
        json!([{"event_type": "x", "user_id": "user-g2", "groups": too_many}]),
    );
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["limits"][0]["limit"], "max_groups");
    assert!(server.export_today(&keys).is_empty());
}

#[test]
fn a_task_removes_a_group_property_exactly_from_events_and_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &["--flush-interval", "100ms"]);
    let keys = server.first_start_keys();
    let token = server.admin_token();
    let (s, _) = group_identify(
        &server,
        &keys,
        &json!({"group_type": "org", "group_value": "acme",
                "group_properties": {"billing_email": "GROUP-DEL-MARKER", "plan": "GROUP-KEEP-MARKER"}}),
    );
    assert_eq!(s, 200);
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"event_type": if i % 2 == 0 { "View" } else { "Click" }, "user_id": format!("user-{i:03}"),
                        "groups": {"org": "acme"}}))
        .collect();
    assert_eq!(server.send(&keys, json!(events)).0, 200);
    std::thread::sleep(Duration::from_millis(5));
    let now = chrono::Utc::now();
    let rfc =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let path = format!("/api/v1/projects/{}/deletion-tasks", keys.project_id);
    let mut body = json!({"name": "group email", "start": rfc(now - chrono::Duration::hours(1)), "end": rfc(now),
        "clauses": [{"kind": "group_property", "properties": ["no_such_key"]}]});
    let (s, refused) = server.post_as(&token, &format!("{path}/preview"), &body);
    assert_eq!(s, 400, "{refused}");
    assert_eq!(refused["unknown"], json!(["no_such_key"]));
    body["clauses"] =
        json!([{"kind": "group_property", "properties": ["billing_email"], "from_profiles": true}]);
    let (s, preview) = server.post_as(&token, &format!("{path}/preview"), &body);
    assert_eq!(s, 200, "{preview}");
    assert_eq!(preview["totals"]["group_property_values_removed"], 20);
    assert_eq!(preview["totals"]["events_deleted"], 0);
    body["confirm"] = json!("DELETE");
    let (s, task) = server.post_as(&token, &path, &body);
    assert_eq!(s, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, t) = server.get_as(&token, &format!("/api/v1/deletion-tasks/{id}"));
        if t["status"] == "completed" {
            break t;
        }
        assert!(Instant::now() < deadline && t["status"] != "failed", "{t}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["result"]["group_property_values_removed"], 20);
    assert_eq!(
        done["result"]["profiles_changed"], 1,
        "the group lost the key too"
    );
    let all = server.export_today(&keys);
    assert!(all
        .iter()
        .all(|e| e["group_properties"] == json!({"org": {"acme": {"plan": "GROUP-KEEP-MARKER"}}})));
    // The next event carries the group as it is now.
    assert_eq!(
        server
            .send(
                &keys,
                json!([{"event_type": "Later", "user_id": "user-000", "groups": {"org": "acme"}}])
            )
            .0,
        200
    );
    assert_eq!(
        exported(&server, &keys, "Later")["group_properties"],
        json!({"org": {"acme": {"plan": "GROUP-KEEP-MARKER"}}})
    );
    server.stop();
    assert_eq!(
        scan(&dir, &["GROUP-DEL-MARKER", "GROUP-KEEP-MARKER"]),
        ["GROUP-KEEP-MARKER"],
        "no segment, WAL record or metadata row keeps the removed value"
    );
}
