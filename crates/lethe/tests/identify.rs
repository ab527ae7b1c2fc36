//! The Identify API and the User Profile API over HTTP: profiles change without events,
//! durably, with Amplitude's bodies and errors; the profile is read back with the secret key.

mod common;

use common::{status_json, Keys, Server};
use serde_json::{json, Value};

/// `POST /identify` with a form body of these pairs.
fn post_form(server: &Server, pairs: &[(&str, &str)]) -> (u16, Value) {
    status_json(
        server
            .client
            .post(server.url("/identify"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(pairs).unwrap())
            .send()
            .unwrap(),
    )
}

/// `POST /identify` with a form body, as Amplitude documents it.
fn identify_form(server: &Server, api_key: &str, identification: &Value) -> (u16, Value) {
    post_form(
        server,
        &[
            ("api_key", api_key),
            ("identification", &identification.to_string()),
        ],
    )
}

fn amp_props(server: &Server, keys: &Keys, user_id: &str) -> Value {
    let (s, body) = server.user_profile(
        &keys.secret_key,
        &format!("user_id={user_id}&get_amp_props=true"),
    );
    assert_eq!(s, 200, "{body}");
    body["userData"]["amp_props"].clone()
}

#[test]
fn identify_changes_the_profile_and_ids_without_an_event() {
    let (server, keys) = Server::start();
    server.send(
        &keys,
        json!([{"event_type": "start", "user_id": "user-ident", "user_properties": {"age": 30, "tags": ["a"]}}]),
    );
    let (s, body) = identify_form(
        &server,
        &keys.api_key,
        &json!([
            {"user_id": "user-ident", "device_id": "device-ident", "platform": "Web",
             "user_properties": {"$set": {"plan": "pro"}, "$add": {"age": 2}, "$append": {"tags": "b"},
                                 "$setOnce": {"first": "x"}}},
            {"user_id": "user-ident", "user_properties": {"$unset": {"first": "-"}, "$postInsert": {"tags": "a"},
                                                          "$preInsert": {"tags": "z"}, "$prepend": {"tags": "y"},
                                                          "$remove": {"tags": "b"}}}
        ]),
    );
    assert_eq!((s, body), (200, json!("success")));
    assert_eq!(
        amp_props(&server, &keys, "user-ident"),
        json!({"age": 32, "plan": "pro", "tags": ["y", "z", "a"]})
    );

    // A JSON body and a GET query are read too; `identification` may be one object.
    let (s, _) = status_json(
        server
            .post_json(
                "/identify",
                &json!({"api_key": keys.api_key,
                        "identification": {"user_id": "user-ident", "user_properties": {"$set": {"seat": 3}}}}),
            ),
    );
    assert_eq!(s, 200);
    let query = serde_urlencoded::to_string([
        ("api_key", keys.api_key.as_str()),
        (
            "identification",
            r#"{"user_id":"user-ident","user_properties":{"$setOnce":{"seat":9,"color":"red"}}}"#,
        ),
    ])
    .unwrap();
    let (s, _) = status_json(
        server
            .client
            .get(server.url(&format!("/identify?{query}")))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 200);

    // The device is now the user's: an event with only the device id joins the profile.
    let (s, _) = server.send(
        &keys,
        json!([{"event_type": "later", "device_id": "device-ident"}]),
    );
    assert_eq!(s, 200);
    let events = server.export_today(&keys);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 2, "identify stores no event: {types:?}");
    let later = events.iter().find(|e| e["event_type"] == "later").unwrap();
    let start = events.iter().find(|e| e["event_type"] == "start").unwrap();
    assert_eq!(later["amplitude_id"], start["amplitude_id"]);
    assert_eq!(
        later["user_properties"],
        json!({"age": 32, "plan": "pro", "tags": ["y", "z", "a"], "seat": 3, "color": "red"})
    );
    assert_eq!(
        start["user_properties"],
        json!({"age": 30, "tags": ["a"]}),
        "applies to later events only"
    );
    assert_eq!(
        server
            .user_profile(&keys.secret_key, "device_id=device-ident")
            .1["userData"]["user_id"],
        "user-ident"
    );
}

#[test]
fn identify_is_durable_before_it_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // A long flush interval: only the WAL holds the change when the process dies.
    let server = Server::start_on(&dir, &["--flush-interval", "1h"]);
    let keys = server.first_start_keys();
    let (s, _) = identify_form(
        &server,
        &keys.api_key,
        &json!({"user_id": "user-durable", "device_id": "device-durable",
                "user_properties": {"$set": {"plan": "team"}, "$add": {"logins": 1}}}),
    );
    assert_eq!(s, 200);
    let dir = server.kill9();
    // Replayed once ($add is not applied again); identify-only traffic is flushed too.
    let server = Server::start_on(&dir, &["--flush-interval", "50ms"]);
    assert_eq!(
        amp_props(&server, &keys, "user-durable"),
        json!({"plan": "team", "logins": 1})
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let in_wal = || {
        std::fs::read_dir(dir.join("wal")).unwrap().any(|f| {
            let bytes = std::fs::read(f.unwrap().path()).unwrap_or_default();
            bytes.windows(12).any(|w| w == b"user-durable")
        })
    };
    while in_wal() {
        assert!(
            std::time::Instant::now() < deadline,
            "the identify was never flushed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let server_dir = server.kill9();
    let server = Server::start_on(&server_dir, &[]);
    assert_eq!(
        amp_props(&server, &keys, "user-durable"),
        json!({"plan": "team", "logins": 1})
    );
    let (_, body) = server.user_profile(&keys.secret_key, "device_id=device-durable");
    assert_eq!(body["userData"]["user_id"], "user-durable");
}

#[test]
fn identify_errors_follow_amplitude() {
    let (server, keys) = Server::start();
    let post_form = |pairs: &[(&str, &str)]| post_form(&server, pairs);
    let (s, body) = post_form(&[("identification", r#"{"user_id":"user-1"}"#)]);
    assert_eq!((s, &body["missing_field"]), (400, &json!("api_key")));
    let (s, body) = post_form(&[("api_key", &keys.api_key)]);
    assert_eq!(s, 400);
    assert_eq!(body["error"], "missing_event");
    assert_eq!(body["missing_field"], "identification");
    let (s, body) = post_form(&[("api_key", &keys.api_key), ("identification", "{not json")]);
    assert_eq!((s, &body["error"]), (400, &json!("missing_event")));
    let (s, body) = post_form(&[
        ("api_key", "no-such-key"),
        ("identification", r#"{"user_id":"user-1"}"#),
    ]);
    assert_eq!(s, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("Invalid API key"));
    // One bad identification refuses the request, naming it by index; nothing is applied.
    let (s, body) = identify_form(
        &server,
        &keys.api_key,
        &json!([
            {"user_id": "user-good", "user_properties": {"$set": {"a": 1}}},
            {"user_properties": {"$set": {"a": 1}}},
            {"user_id": "null"}
        ]),
    );
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["code"], 400);
    assert_eq!(body["events_with_missing_fields"]["user_id"], json!([1]));
    assert_eq!(body["events_with_invalid_fields"]["user_id"], json!([2]));
    let (s, _) = server.user_profile(&keys.secret_key, "user_id=user-good");
    assert_eq!(s, 404);
    // Property limits apply as to events.
    let many: serde_json::Map<String, Value> =
        (0..1001).map(|i| (format!("k{i}"), json!(i))).collect();
    let (s, body) = identify_form(
        &server,
        &keys.api_key,
        &json!({"user_id": "user-good", "user_properties": {"$set": many}}),
    );
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["limits"][0]["field"], "user_properties");
}

#[test]
fn the_user_profile_needs_the_projects_secret_and_knows_only_its_users() {
    let (server, keys) = Server::start();
    server.send(
        &keys,
        json!([{"event_type": "a", "user_id": "user-prof", "device_id": "device-prof",
                "user_properties": {"email_domain": "example.com"}}]),
    );
    let (s, body) = server.user_profile(&keys.secret_key, "user_id=user-prof");
    assert_eq!(s, 200, "{body}");
    let data = &body["userData"];
    assert_eq!(data["user_id"], "user-prof");
    assert!(data["amplitude_id"].as_i64().unwrap() > 0);
    assert_eq!(
        data["amp_props"],
        Value::Null,
        "properties only when asked for"
    );
    let (s, body) = status_json(
        server
            .client
            .get(server.url("/v1/userprofile?user_id=user-prof&get_amp_props=true"))
            .basic_auth(&keys.api_key, Some(&keys.secret_key))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 200);
    assert_eq!(
        body["userData"]["amp_props"],
        json!({"email_domain": "example.com"})
    );

    let (s, body) = server.user_profile(&keys.secret_key, "user_id=user-nobody");
    assert_eq!(s, 404);
    assert_eq!(body["error"], "User id and device id not seen before");
    let (s, body) = server.user_profile(&keys.secret_key, "");
    assert_eq!((s, &body["field"]), (400, &json!("user_id")));

    let (s, body) = server.user_profile("wrong-secret", "user_id=user-prof");
    assert_eq!(s, 401, "{body}");
    let (s, body) = status_json(
        server
            .client
            .get(server.url("/v1/userprofile?user_id=user-prof"))
            .send()
            .unwrap(),
    );
    assert_eq!(s, 401);
    assert!(body.to_string().contains("Missing Api-Key"), "{body}");

    // Another project's secret does not reach this project's users.
    let token = server.admin_token();
    let (s, other) = server.post_as(&token, "/api/v1/projects", &json!({"name": "Other"}));
    assert_eq!(s, 201, "{other}");
    let other = Keys::of_project(&other);
    let (s, _) = server.user_profile(&other.secret_key, "user_id=user-prof");
    assert_eq!(s, 404);
}

#[test]
fn skip_user_properties_sync_shows_properties_on_the_event_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &["--flush-interval", "1h"]);
    let keys = server.first_start_keys();
    let (s, body) = server.send(
        &keys,
        json!([
            {"event_type": "e1", "user_id": "user-skip", "user_properties": {"$set": {"plan": "free"}}},
            {"event_type": "e2", "user_id": "user-skip", "user_properties": {"$set": {"plan": "trial"}},
             "$skip_user_properties_sync": true},
            {"event_type": "e3", "user_id": "user-skip"}
        ]),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        amp_props(&server, &keys, "user-skip"),
        json!({"plan": "free"})
    );
    // Replay after a crash keeps the profile as it was.
    let dir = server.kill9();
    let server = Server::start_on(&dir, &[]);
    assert_eq!(
        amp_props(&server, &keys, "user-skip"),
        json!({"plan": "free"})
    );
    let plan_of = |t: &str| {
        let events = server.export_today(&keys);
        events.iter().find(|e| e["event_type"] == t).unwrap()["user_properties"]["plan"].clone()
    };
    assert_eq!(plan_of("e2"), "trial");
    assert_eq!(plan_of("e3"), "free");
    let (s, body) = server.send(
        &keys,
        json!([{"event_type": "e4", "user_id": "user-skip", "$skip_user_properties_sync": "yes"}]),
    );
    assert_eq!(s, 400);
    assert_eq!(
        body["events_with_invalid_fields"]["$skip_user_properties_sync"],
        json!([0])
    );
}

/// Amplitude's Identify API also takes a user's device and location fields (`platform`,
/// `country`, `paying`, …). lethe keeps such fields per event, where every event carries
/// them: on an identification they are accepted, as Amplitude's clients expect, and neither
/// become user properties nor create an event. This test states it.
#[test]
fn identify_device_fields_are_accepted_and_not_kept() {
    let (server, keys) = Server::start();
    let (s, _) = identify_form(
        &server,
        &keys.api_key,
        &json!({"user_id": "user-fields", "platform": "iOS", "country": "Germany", "paying": "true",
                "start_version": "1.0", "user_properties": {"$set": {"tier": "gold"}}}),
    );
    assert_eq!(s, 200);
    assert_eq!(
        amp_props(&server, &keys, "user-fields"),
        json!({"tier": "gold"})
    );
    assert!(server.export_today(&keys).is_empty());
}

/// An identification whose WAL write fails is refused with a 503 and leaves nothing behind:
/// the retry applies it once (an `$add` counts once).
#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn a_failed_wal_fsync_refuses_an_identification_and_its_retry_applies_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &tmp.path().join("data"),
        &[],
        &[("LETHE_FAULTS", "wal_fsync@1-1")],
    );
    let keys = server.first_start_keys();
    let call = json!({"user_id": "user-fault", "user_properties": {"$add": {"logins": 1}}});
    let (s, body) = identify_form(&server, &keys.api_key, &call);
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["reason"], "storage_error");
    assert_eq!(
        server
            .user_profile(&keys.secret_key, "user_id=user-fault")
            .0,
        404,
        "rolled back"
    );
    let (s, _) = identify_form(&server, &keys.api_key, &call);
    assert_eq!(s, 200);
    assert_eq!(
        amp_props(&server, &keys, "user-fault"),
        json!({"logins": 1})
    );
}
