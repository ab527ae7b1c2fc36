//! Values round-trip or are refused: every accepted value exports as the same JSON value,
//! and whatever lethe cannot keep exactly is refused with a 400 that names the field and the
//! documented limit (nothing of the request is stored).

mod common;

use common::{status_json, Server};
use serde_json::{json, Value};

/// Sends one raw body; returns the status and the JSON answer.
fn post_raw(server: &Server, body: String) -> (u16, Value) {
    status_json(
        server
            .client
            .post(server.url("/2/httpapi"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap(),
    )
}

#[test]
fn values_past_a_limit_are_refused_naming_the_field_and_the_limit() {
    let (server, keys) = Server::start();
    let event = |extra: &str| {
        format!(r#"{{"event_type":"limits","user_id":"user-limits","insert_id":"x"{extra}}}"#)
    };
    // 8 000 levels fit in the value size limit: the depth limit refuses them.
    let deep = format!("{}1{}", "[".repeat(8_000), "]".repeat(8_000));
    let deeper = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let many: Vec<String> = (0..1001).map(|i| format!(r#""k{i}":1"#)).collect();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!(r#","event_properties":{{"deep":{deep}}}"#),
            "event_properties",
            "max_depth",
        ),
        (
            format!(r#","event_properties":{{"deep":{deeper}}}"#),
            "event_properties",
            "max_value_bytes",
        ),
        (
            r#","event_properties":{"big":1e400}"#.into(),
            "event_properties",
            "number_range",
        ),
        (
            r#","event_properties":{"tiny":1e-400}"#.into(),
            "event_properties",
            "number_range",
        ),
        (
            r#","event_properties":{"n":123456789012345678901234567890}"#.into(),
            "event_properties",
            "number_range",
        ),
        (
            format!(r#","event_properties":{{{}}}"#, many.join(",")),
            "event_properties",
            "max_properties",
        ),
        (
            format!(r#","event_properties":{{"{}":1}}"#, "k".repeat(1025)),
            "event_properties",
            "max_key_chars",
        ),
        (
            format!(r#","event_properties":{{"s":"{}"}}"#, "v".repeat(16 * 1024)),
            "event_properties",
            "max_value_bytes",
        ),
        (
            r#","user_properties":{"$set":{"n":1e400}}"#.into(),
            "user_properties",
            "number_range",
        ),
        (
            format!(r#","user_properties":{{"$set":{{"deep":{deep}}}}}"#),
            "user_properties",
            "max_depth",
        ),
        (r#","groups":{"g":1e400}"#.into(), "groups", "number_range"),
        (
            r#","time":9223372036854775807"#.into(),
            "time",
            "time_range",
        ),
        (r#","time":4102444800000"#.into(), "time", "time_range"),
        (
            r#","session_id":18446744073709551616"#.into(),
            "session_id",
            "number_range",
        ),
        (r#","event_id":1e300"#.into(), "event_id", "number_range"),
    ];
    for (extra, field, limit) in &cases {
        // One good event before the bad one: the whole request is refused.
        let body = format!(
            r#"{{"api_key":"{}","events":[{},{}]}}"#,
            keys.api_key,
            event(""),
            event(extra)
        );
        let (status, answer) = post_raw(&server, body);
        assert_eq!(status, 400, "{field}/{limit}: {answer}");
        assert_eq!(
            answer["events_with_invalid_fields"][*field],
            json!([1]),
            "{field}/{limit}: {answer}"
        );
        let named = answer["limits"].as_array().unwrap();
        assert!(
            named.iter().any(|l| l["field"] == *field
                && l["limit"] == *limit
                && l["events"] == json!([1])
                && l["allows"].as_str().is_some_and(|a| !a.is_empty())),
            "{field}/{limit}: {answer}"
        );
    }
    assert!(server.export_today(&keys).is_empty(), "nothing stored");
    server.stop();
}

#[test]
fn accepted_values_export_as_the_same_json_values() {
    let (server, keys) = Server::start();
    let nested = format!("{}\"x\"{}", "[".repeat(31), "]".repeat(31));
    let properties = json!({
        "u64_max": u64::MAX,
        "i64_min": i64::MIN,
        "int": 5,
        "float": 1.5,
        "huge": 1e300,
        "tiny": 5e-324,
        "neg_zero": -0.0,
        "text": "żółw \u{1F422} \"quoted\" \\ back",
        "list": [1, "two", {"three": [3.25]}],
        "flag": false,
        "nested": serde_json::from_str::<Value>(&nested).unwrap(),
    });
    let groups = json!({"company": ["acme", "beta"]});
    let body = json!({"api_key": keys.api_key, "events": [{
        "event_type": "roundtrip", "user_id": "user-roundtrip",
        "time": 4_102_444_799_999i64, "session_id": 9_007_199_254_740_993i64, "event_id": -5,
        "event_properties": properties,
        "user_properties": {"$set": {"big": u64::MAX, "f": 0.1}},
        "groups": groups,
        "group_properties": {"$set": {"size": 12345678901234567i64}},
    }]});
    let (status, answer) = server.send(&keys, body["events"].clone());
    assert_eq!(status, 200, "{answer}");
    let exported = server.export_today(&keys);
    assert_eq!(exported.len(), 1);
    let e = &exported[0];
    assert_eq!(e["event_properties"], properties);
    assert_eq!(e["user_properties"], json!({"big": u64::MAX, "f": 0.1}));
    assert_eq!(e["groups"], groups);
    assert_eq!(
        e["group_properties"],
        json!({"company": {"acme": {"size": 12345678901234567i64}, "beta": {"size": 12345678901234567i64}}})
    );
    assert_eq!(e["session_id"], 9_007_199_254_740_993i64);
    assert_eq!(e["event_id"], -5);
    assert_eq!(e["event_time"], "2099-12-31 23:59:59.999000");
    server.stop();
}

#[test]
fn imports_refuse_upload_times_no_task_could_reach() {
    let (server, keys) = Server::start();
    let token = server.admin_token();
    let line = |upload: &str| {
        format!(
            r#"{{"event_type":"imported","user_id":"user-1001","server_upload_time":"{upload}"}}"#
        )
    };
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(2))
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    let body = [
        line("2099-01-01 00:00:00.000000"),
        line("1900-01-01 00:00:00.000000"),
        line("2024-03-02 05:06:07.000000"),
        line(&soon),
    ]
    .join("\n");
    let (status, answer) = server.import(&token, keys.project_id, body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["ingested"].clone(), answer["rejected"].clone()),
        (json!(2), json!(2))
    );
    for (i, line) in [1, 2].into_iter().enumerate() {
        let error = &answer["errors"][i];
        assert_eq!(error["line"], line);
        assert_eq!(error["invalid_fields"], json!(["server_upload_time"]));
        assert_eq!(error["limits"][0]["limit"], "time_range", "{error}");
    }
    server.stop();
}

/// Past the daily limit of distinct keys every further event with a new key is refused with
/// the limit named; the server, capped in memory, stays up and restarts cleanly.
#[test]
fn a_key_explosion_is_refused_and_the_server_stays_up_within_a_memory_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let flags = ["--flush-interval", "500ms"];
    let server = Server::start_with_memory_limit(&dir, &flags, 4096);
    let keys = server.first_start_keys();
    let (mut accepted, mut refused) = (0, 0);
    for b in 0..120 {
        let events: Vec<Value> = (0..20)
            .map(|i| {
                let props: serde_json::Map<String, Value> = (0..10)
                    .map(|k| (format!("key-{b}-{i}-{k}"), json!(k)))
                    .collect();
                let field = if b % 2 == 0 {
                    "event_properties"
                } else {
                    "user_properties"
                };
                json!({"event_type": "explode", "user_id": format!("user-{b}-{i}"), field: props})
            })
            .collect();
        let (status, answer) = server.send(&keys, json!(events));
        match status {
            200 => accepted += 20,
            400 => {
                refused += 20;
                let limit = &answer["limits"][0];
                assert_eq!(limit["limit"], "max_keys_per_day", "{answer}");
                assert!(
                    ["event_properties", "user_properties"]
                        .contains(&limit["field"].as_str().unwrap()),
                    "{answer}"
                );
            }
            other => panic!("{other}: {answer}"),
        }
    }
    // 4 000 event-property keys and 2 000 user-property keys: 600 events of 10 keys each.
    assert_eq!(accepted, 600, "refused {refused}");
    let (status, health) = status_json(server.client.get(server.url("/healthz")).send().unwrap());
    assert_eq!(status, 200, "{health}");
    // Keys already seen today stay usable.
    let known = json!([{"event_type": "explode", "user_id": "user-known", "event_properties": {"key-0-0-1": 5}}]);
    assert_eq!(server.send(&keys, known).0, 200);
    let dir = server.kill9();
    let server = Server::start_with_memory_limit(&dir, &flags, 4096);
    assert_eq!(server.export_today(&keys).len(), 601);
    // The limit survives the restart: the keys stored today still count.
    let fresh = json!([{"event_type": "explode", "user_id": "user-fresh", "event_properties": {"brand-new": 1}}]);
    assert_eq!(server.send(&keys, fresh).0, 400);
    server.stop();
}
