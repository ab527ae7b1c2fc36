//! Compatibility with the tools users already have: the official Amplitude Python SDK sends
//! to lethe unchanged, and DuckDB reads lethe's segments. `.ci/run` installs both
//! (`pip install amplitude-analytics duckdb`).

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::Server;
use serde_json::{json, Value};

/// What a script of tests/compat prints (it needs `amplitude-analytics` and `duckdb`: see
/// scripts/test.sh).
fn python(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/compat/{script}", env!("CARGO_MANIFEST_DIR"));
    common::stdout_of(Command::new("python3").arg(&path).args(args))
}

#[test]
fn the_official_python_sdk_round_trips_through_the_export() {
    let (server, keys) = Server::start();
    let out = python("sdk_roundtrip.py", &[&server.url, &keys.api_key]);
    let callbacks: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let code_of = |t: &str| {
        callbacks
            .iter()
            .find(|c| c["event_type"] == t)
            .map(|c| c["code"].clone())
    };
    assert_eq!(code_of("Song Played"), Some(json!(200)), "{callbacks:?}");
    assert_eq!(code_of("$identify"), Some(json!(200)), "{callbacks:?}");
    assert_eq!(code_of("$groupidentify"), Some(json!(200)), "{callbacks:?}");
    assert_eq!(code_of("revenue_amount"), Some(json!(200)), "{callbacks:?}");
    assert_eq!(
        code_of("Short Id"),
        Some(json!(400)),
        "the SDK dropped only the bad event: {callbacks:?}"
    );

    let events = server.export_today(&keys);
    let mut types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "$identify",
            "After Identify",
            "Grouped",
            "Song Played",
            "revenue_amount"
        ],
        "exactly the valid events, once ($groupidentify changes the group, it is no event)"
    );
    let by_type = |t: &str| events.iter().find(|e| e["event_type"] == t).unwrap();
    assert_eq!(
        by_type("Song Played")["event_properties"],
        json!({"title": "Blue", "seconds": 215})
    );
    assert_eq!(
        by_type("Song Played")["library"]
            .as_str()
            .unwrap()
            .split('/')
            .next(),
        Some("amplitude-python")
    );
    let expected = json!({"plan": "pro", "first_seen": "2024-01-01", "logins": 2});
    assert_eq!(by_type("$identify")["user_properties"], expected);
    assert_eq!(by_type("After Identify")["user_properties"], expected);
    assert_eq!(
        by_type("After Identify")["amplitude_id"],
        by_type("Song Played")["amplitude_id"]
    );
    assert_eq!(
        by_type("Grouped")["group_properties"],
        json!({"org": {"acme": {"seats": 12}}})
    );
    let revenue = &by_type("revenue_amount")["event_properties"];
    assert_eq!(
        (&revenue["$price"], &revenue["$quantity"]),
        (&json!(4.5), &json!(2))
    );
    assert_eq!(revenue["$productId"], "sku-py");
}

#[test]
fn duckdb_reads_the_segments_and_counts_what_the_export_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &["--flush-interval", "200ms"]);
    let keys = server.first_start_keys();
    for batch in 0..3 {
        let events: Vec<Value> = (0..50)
            .map(|i| json!({"event_type": format!("type_{}", i % 3), "user_id": format!("user-{batch}-{i}"),
                            "event_properties": {"n": i, "s": format!("v{i}")}, "platform": "Web"}))
            .collect();
        assert_eq!(server.send(&keys, json!(events)).0, 200);
    }
    let exported = server.export_today(&keys);
    server.stop(); // graceful: flushes everything into segments
    let mut from_export: BTreeMap<String, u64> = BTreeMap::new();
    for e in &exported {
        *from_export
            .entry(e["event_type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let out = python("duckdb_count.py", &[dir.to_str().unwrap()]);
    let from_duckdb: BTreeMap<String, u64> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(from_duckdb, from_export);
    assert_eq!(from_duckdb.values().sum::<u64>(), 150);
}
