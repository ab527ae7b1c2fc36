//! Amplitude-compatible ingestion over HTTP: bodies, validation, limits, dedup, read-back.

mod common;

use common::{gzip, status_json, Server};
use serde_json::{json, Value};

#[test]
fn accepted_batch_answers_like_amplitude_and_reads_back_in_the_export() {
    let (server, keys) = Server::start();
    let (status, body) = server.send(
        &keys,
        json!([
            {"event_type": "watch_tutorial", "user_id": "user-12345", "device_id": "device-1",
             "time": 1396381378123i64, "event_properties": {"load_time": 0.8371, "source": "notification", "dates": ["monday"]},
             "user_properties": {"age": 25}, "app_version": "2.1.3", "ip": "127.0.0.1", "insert_id": "i-1",
             "price": 4.99, "session_id": 1396381378123i64, "unknown_key": {"ignored": true}},
            {"event_type": "$identify", "user_id": "user-12345",
             "user_properties": {"$set": {"plan": "pro"}, "$add": {"age": 1}}},
            {"event_type": "after", "user_id": "user-12345"}
        ]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 200);
    assert_eq!(body["events_ingested"], 3);
    assert!(body["payload_size_bytes"].as_u64().unwrap() > 100);
    assert!(body["server_upload_time"].as_i64().unwrap() > 1_700_000_000_000);

    let events = server.export_today(&keys);
    assert_eq!(events.len(), 3);
    let by_type = |t: &str| {
        events
            .iter()
            .find(|e| e["event_type"] == t)
            .unwrap()
            .clone()
    };
    let first = by_type("watch_tutorial");
    assert_eq!(
        first["event_properties"],
        json!({"load_time": 0.8371, "source": "notification", "dates": ["monday"]})
    );
    assert_eq!(first["user_properties"], json!({"age": 25}));
    assert_eq!(first["version_name"], "2.1.3");
    assert_eq!(first["ip_address"], "127.0.0.1");
    assert_eq!(first["$insert_id"], "i-1");
    assert_eq!(first["price"], 4.99);
    assert_eq!(first["event_time"], "2014-04-01 19:42:58.123000");
    assert_eq!(first["app"], keys.project_id);
    assert!(first["uuid"].as_str().unwrap().len() == 36);
    assert_eq!(
        by_type("$identify")["user_properties"],
        json!({"age": 26, "plan": "pro"})
    );
    assert_eq!(
        by_type("after")["user_properties"],
        json!({"age": 26, "plan": "pro"})
    );
    let ids: Vec<&Value> = events.iter().map(|e| &e["amplitude_id"]).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one user, one amplitude_id"
    );
}

#[test]
fn invalid_events_are_listed_by_index_and_nothing_is_stored() {
    let (server, keys) = Server::start();
    let (status, body) = server.send(
        &keys,
        json!([
            {"event_type": "ok", "user_id": "user-12345"},
            {"user_id": "user-12345"},
            {"event_type": "short", "user_id": "abc"},
            {"event_type": "bad_time", "user_id": "user-12345", "time": "2024-01-01"},
            {"event_type": "placeholder", "device_id": "undefined"},
            {"event_type": "no ids"}
        ]),
    );
    assert_eq!(status, 400);
    assert_eq!(body["code"], 400);
    assert_eq!(
        body["events_with_missing_fields"],
        json!({"event_type": [1], "user_id": [5]})
    );
    assert_eq!(
        body["events_with_invalid_id_lengths"],
        json!({"user_id": [2]})
    );
    assert_eq!(
        body["events_with_invalid_fields"],
        json!({"time": [3], "device_id": [4]})
    );
    assert!(
        body.get("missing_field").is_none(),
        "event issues must not look request-level"
    );
    assert!(server.export_today(&keys).is_empty());
}

#[test]
fn request_level_errors_name_the_problem() {
    let (server, keys) = Server::start();
    let post = |body: &str| {
        status_json(
            server
                .client
                .post(server.url("/2/httpapi"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    };
    let (s, b) = post("{not json");
    assert_eq!(
        (s, b["code"].clone(), b["error"].clone()),
        (400, json!(400), json!("Invalid JSON request body"))
    );
    let (s, b) = post(r#"{"events":[{"event_type":"a","user_id":"user-12345"}]}"#);
    assert_eq!((s, b["missing_field"].clone()), (400, json!("api_key")));
    let (s, b) = post(&format!(r#"{{"api_key":"{}"}}"#, keys.api_key));
    assert_eq!((s, b["missing_field"].clone()), (400, json!("events")));
    let (s, b) =
        post(r#"{"api_key":"wrong-key","events":[{"event_type":"a","user_id":"user-12345"}]}"#);
    assert_eq!(
        (s, b["error"].clone()),
        (400, json!("Invalid API key: wrong-key"))
    );
    let (s, b) = post("");
    assert_eq!((s, b["code"].clone()), (400, json!(400)));
}

#[test]
fn limits_follow_the_endpoint() {
    let (server, keys) = Server::start();
    let many: Vec<Value> = (0..2001)
        .map(|_| json!({"event_type": "a", "user_id": "user-12345"}))
        .collect();
    let (s, b) = server.send(&keys, json!(many));
    assert_eq!((s, b["code"].clone()), (413, json!(413)));

    let big = "x".repeat(1000);
    let events: Vec<Value> = (0..1100)
        .map(|i| json!({"event_type": "big", "user_id": "user-12345", "insert_id": format!("b{i}"), "event_properties": {"blob": big}}))
        .collect();
    let body = json!({"api_key": keys.api_key, "events": events});
    let (s, _) = status_json(server.post_json("/2/httpapi", &body));
    assert_eq!(s, 413, "over 1 MB on /2/httpapi");
    let (s, b) = status_json(server.post_json("/batch", &body));
    assert_eq!(s, 200, "/batch takes up to 20 MB: {b}");
    assert_eq!(server.export_today(&keys).len(), 1100);
}

#[test]
fn gzip_bodies_and_min_id_length_are_accepted() {
    let (server, keys) = Server::start();
    let body = json!({"api_key": keys.api_key, "events": [{"event_type": "gz", "user_id": "ab"}], "options": {"min_id_length": 2}});
    let r = server
        .client
        .post(server.url("/2/httpapi"))
        .header("content-type", "application/json; charset=UTF-8")
        .header("content-encoding", "gzip")
        .body(gzip(body.to_string().as_bytes()))
        .send()
        .unwrap();
    let (s, b) = status_json(r);
    assert_eq!(s, 200, "{b}");
    let events = server.export_today(&keys);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["user_id"], "ab");
}

#[test]
fn insert_id_deduplicates_per_device() {
    let (server, keys) = Server::start();
    let event = |device: &str| json!({"event_type": "buy", "device_id": device, "insert_id": "same-insert"});
    assert_eq!(server.send(&keys, json!([event("device-1")])).0, 200);
    assert_eq!(
        server.send(&keys, json!([event("device-1")])).0,
        200,
        "a retry is acknowledged"
    );
    assert_eq!(server.send(&keys, json!([event("device-2")])).0, 200);
    let events = server.export_today(&keys);
    assert_eq!(
        events.len(),
        2,
        "the retry is stored once; another device is another event"
    );
}

#[test]
fn export_validates_its_parameters_and_credentials() {
    let (server, keys) = Server::start();
    let (s, _) = server.export(&keys, "20200101T00", "20200101T23");
    assert_eq!(s, 404, "no data is 404");
    let (s, b) = server.basic_get(&keys, "/api/2/export?start=2020-01-01&end=20200101T01");
    assert_eq!((s, b["field"].clone()), (400, json!("start")));
    let (s, b) = server.basic_get(&keys, "/api/2/export?start=20200101T00");
    assert_eq!((s, b["field"].clone()), (400, json!("end")));
    let wrong = common::Keys {
        secret_key: "wrong".into(),
        ..keys.clone()
    };
    assert_eq!(server.export(&wrong, "20200101T00", "20200101T23").0, 401);
    let r = server
        .client
        .get(server.url("/api/2/export?start=20200101T00&end=20200101T01"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn export_hours_are_inclusive_and_by_server_upload_time() {
    let (server, keys) = Server::start();
    server.send(
        &keys,
        json!([{"event_type": "old_client_time", "user_id": "user-12345", "time": 1000}]),
    );
    let stored = server.export_today(&keys);
    let upload = stored[0]["server_upload_time"].as_str().unwrap();
    let upload = chrono::NaiveDateTime::parse_from_str(upload, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    let hour = upload.format("%Y%m%dT%H").to_string();
    let (s, events) = server.export(&keys, &hour, &hour);
    assert_eq!(s, 200);
    assert_eq!(
        events.len(),
        1,
        "a client time in 1970 still exports under its upload hour"
    );
    let prev = (upload - chrono::Duration::hours(1))
        .format("%Y%m%dT%H")
        .to_string();
    assert_eq!(server.export(&keys, &prev, &prev).0, 404);
}

#[test]
fn taxonomy_lists_the_catalog_in_amplitude_shapes() {
    let (server, keys) = Server::start();
    server.send(
        &keys,
        json!([
            {"event_type": "play", "user_id": "user-12345", "event_properties": {"song": "a", "volume": 3}, "user_properties": {"tier": "gold"}},
            {"event_type": "play", "user_id": "user-12345", "event_properties": {"song": "b"}},
            {"event_type": "stop", "user_id": "user-12345", "event_properties": {"reason": "end"}}
        ]),
    );
    let (s, b) = server.basic_get(&keys, "/api/2/taxonomy/event");
    assert_eq!(s, 200);
    assert_eq!(b["success"], true);
    let counts: Vec<(String, i64)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap().to_string(),
                e["event_count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, vec![("play".into(), 2), ("stop".into(), 1)]);

    let (_, b) = server.basic_get(&keys, "/api/2/taxonomy/event-property?event_type=play");
    let props: Vec<(&str, i64)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["event_property"].as_str().unwrap(),
                p["event_count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(props, vec![("song", 2), ("volume", 1)]);
    let (_, b) = server.basic_get(&keys, "/api/2/taxonomy/event-property");
    assert_eq!(b["data"].as_array().unwrap().len(), 3);
    let (_, b) = server.basic_get(&keys, "/api/2/taxonomy/user-property");
    assert_eq!(b["data"][0]["user_property"], "gp:tier");
    assert_eq!(b["data"][0]["event_count"], 3);
    let wrong = common::Keys {
        secret_key: "nope".into(),
        ..keys.clone()
    };
    assert_eq!(server.basic_get(&wrong, "/api/2/taxonomy/event").0, 401);
}

#[test]
fn health_and_metrics_are_served() {
    let (server, keys) = Server::start();
    server.send(&keys, json!([{"event_type": "m", "user_id": "user-12345", "event_properties": {"secret": "VALUE-MARKER"}}]));
    let r = server.client.get(server.url("/healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = server.get_text("/metrics");
    assert!(text.contains("lethe_events_ingested_total 1"), "{text}");
    assert!(text.contains("lethe_wal_bytes"), "{text}");
    assert!(
        !text.contains("VALUE-MARKER") && !text.contains("secret"),
        "no values or names in metrics"
    );
}

/// Browsers send events from pages on other origins: the ingestion endpoints answer CORS
/// preflights (204) and carry `Access-Control-Allow-Origin`; the management API does not.
#[test]
fn browsers_may_send_events_from_other_origins_and_only_events() {
    let (server, keys) = Server::start();
    let origin = "http://shop.example";
    for path in ["/2/httpapi", "/batch", "/identify", "/groupidentify"] {
        let r = server
            .client
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "*", "{path}");
        assert!(h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("content-type"));
        assert_eq!(h["access-control-max-age"], "7200");
    }
    let r = server
        .client
        .post(server.url("/2/httpapi"))
        .header("origin", origin)
        .json(&json!({"api_key": keys.api_key, "events": [{"event_type": "web", "device_id": "browser-1"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(server.export_today(&keys).len(), 1);
    // The management API stays same-origin.
    let r = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/api/v1/projects"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    server.stop();

    // A configured list allows only its origins.
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &tmp.path().join("data"),
        &["--cors-origins", "https://app.example, https://www.example"],
    );
    let preflight = |origin: &str| {
        server
            .client
            .request(reqwest::Method::OPTIONS, server.url("/2/httpapi"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .unwrap()
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        preflight("https://www.example").as_deref(),
        Some("https://www.example")
    );
    assert_eq!(preflight("https://evil.example"), None);
    server.stop();
}

/// `"ip": "$remote"` (or no ip) stores the client's address, from `X-Forwarded-For` only
/// behind a trusted proxy; the SDKs' `user_agent`, `partner_id`, `device_type` and
/// `device_family` are kept and exported, and an integer `quantity` stays an integer.
#[test]
fn the_server_fills_in_the_client_address_and_keeps_the_sdk_fields() {
    let (server, keys) = Server::start();
    let events = json!([
        {"event_type": "remote", "device_id": "device-1", "ip": "$remote"},
        {"event_type": "absent", "device_id": "device-1"},
        {"event_type": "given", "device_id": "device-1", "ip": "198.51.100.7"},
        {"event_type": "sdk", "device_id": "device-1", "user_agent": "Mozilla/5.0 (X11) Test/1.0",
         "partner_id": "partner-9", "device_type": "Pixel 8", "device_family": "Google Phone",
         "price": 2.5, "quantity": 5, "revenue": 12.5},
    ]);
    let r = server
        .client
        .post(server.url("/2/httpapi"))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"api_key": keys.api_key, "events": events}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let exported = server.export_today(&keys);
    let by_type = |t: &str| {
        exported
            .iter()
            .find(|e| e["event_type"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_type("remote")["ip_address"],
        "127.0.0.1",
        "no trusted proxy: the peer"
    );
    assert_eq!(by_type("absent")["ip_address"], "127.0.0.1");
    assert_eq!(by_type("given")["ip_address"], "198.51.100.7");
    let sdk = by_type("sdk");
    assert_eq!(sdk["user_agent"], "Mozilla/5.0 (X11) Test/1.0");
    assert_eq!(sdk["partner_id"], "partner-9");
    assert_eq!(sdk["device_type"], "Pixel 8");
    assert_eq!(sdk["device_family"], "Google Phone");
    assert!(
        sdk["quantity"].is_i64(),
        "an integer stays an integer: {}",
        sdk["quantity"]
    );
    assert_eq!(
        (
            sdk["quantity"].as_i64(),
            sdk["price"].as_f64(),
            sdk["revenue"].as_f64()
        ),
        (Some(5), Some(2.5), Some(12.5))
    );
    server.stop();

    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(&tmp.path().join("data"), &["--trusted-proxy"]);
    let keys = server.first_start_keys();
    for (forwarded, expected) in [
        ("203.0.113.9, 10.0.0.1", "203.0.113.9"),
        ("not an address", "127.0.0.1"),
    ] {
        let r = server
            .client
            .post(server.url("/2/httpapi"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"api_key": keys.api_key, "events": [{"event_type": expected, "device_id": "device-2", "ip": "$remote"}]}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let exported = server.export_today(&keys);
        let e = exported
            .iter()
            .find(|e| e["event_type"] == expected)
            .unwrap();
        assert_eq!(e["ip_address"], expected, "{forwarded}");
    }
    server.stop();
}

#[test]
fn a_device_sending_too_fast_gets_amplitudes_429_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &tmp.path().join("data"),
        &["--device-eps-limit", "2", "--device-daily-quota", "1000"],
    );
    let keys = server.first_start_keys();
    let mut events: Vec<Value> = (0..100)
        .map(|i| json!({"event_type": "burst", "device_id": "device-fast", "insert_id": format!("f-{i}")}))
        .collect();
    events.push(json!({"event_type": "calm", "device_id": "device-calm", "user_id": "user-calm"}));
    let (s, body) = server.send(&keys, json!(events));
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["code"], 429);
    assert_eq!(body["eps_threshold"], 2);
    assert!(body["throttled_devices"]["device-fast"].as_u64().unwrap() > 2);
    assert_eq!(body["throttled_users"], json!({}));
    assert_eq!(
        body["throttled_events"],
        json!((0..100).collect::<Vec<_>>())
    );
    assert!(
        server.export_today(&keys).is_empty(),
        "a 429 stores nothing"
    );
    // The SDK retries the others at once; they are stored.
    let (s, body) = server.send(&keys, json!([events[100]]));
    assert_eq!(s, 200, "{body}");
    // /batch has its own, higher threshold (1000 by default).
    let (s, body) = status_json(server.post_json(
        "/batch",
        &json!({"api_key": keys.api_key, "events": events[..100]}),
    ));
    assert_eq!(s, 200, "{body}");
    // The daily quota counts every endpoint's events per device.
    let more: Vec<Value> = (0..950)
        .map(|i| json!({"event_type": "more", "device_id": "device-fast", "insert_id": format!("m-{i}")}))
        .collect();
    let (s, body) =
        status_json(server.post_json("/batch", &json!({"api_key": keys.api_key, "events": more})));
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["exceeded_daily_quota_devices"]["device-fast"], 1050);
    assert_eq!(server.export_today(&keys).len(), 101);
}
