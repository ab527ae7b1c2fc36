//! A bounded fuzz run over what clients send: ingestion bodies and import lines built from
//! arbitrary JSON (and arbitrary bytes) never panic the parser, and every event accepted
//! exports its properties, groups and ids as the same JSON values it was sent with.

use std::sync::Arc;

use lethe_event::{parse_batch, parse_export_line, Event, ParsedEvent};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Arbitrary JSON, numbers included at the edges (huge, tiny, negative zero, 64-bit limits),
/// nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(-0.0)),
        Just(json!(5e-324)),
        Just(json!(1.7976931348623157e308)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        ".{0,12}".prop_map(Value::String),
        "\\PC{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z$]{0,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event object: the fields clients send, each either well-formed or arbitrary.
fn any_event() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("Play")), any_json()],
        prop_oneof![Just(json!("user-12345")), any_json()],
        prop_oneof![Just(Value::Null), Just(json!("device-1")), any_json()],
        prop::collection::btree_map("[a-z]{1,5}", any_json(), 0..6),
        prop_oneof![Just(Value::Null), any_json()],
        prop_oneof![Just(Value::Null), any_json()],
        prop_oneof![
            Just(Value::Null),
            Just(json!(1_700_000_000_000i64)),
            any_json()
        ],
        prop_oneof![Just(Value::Null), any_json()],
    )
        .prop_map(|(t, user, device, props, uprops, groups, time, session)| {
            let mut e = Map::new();
            e.insert("event_type".into(), t);
            e.insert("user_id".into(), user);
            e.insert("device_id".into(), device);
            e.insert(
                "event_properties".into(),
                Value::Object(props.into_iter().collect()),
            );
            e.insert("user_properties".into(), uprops);
            e.insert("groups".into(), groups);
            e.insert("time".into(), time);
            e.insert("session_id".into(), session);
            Value::Object(e)
        })
}

/// The event as the store would keep it (identity and profile aside).
fn stored(p: &ParsedEvent) -> Event {
    Event {
        uuid: 1,
        event_type: p.event_type.clone(),
        server_upload_time: 1_700_000_000_000,
        time: p.time.unwrap_or(1_700_000_000_000),
        amplitude_id: 1,
        user_id: p.user_id.clone(),
        device_id: p.device_id.clone(),
        insert_id: p.insert_id.clone(),
        session_id: p.session_id,
        event_id: p.event_id,
        strs: p.strs.clone(),
        nums: p.nums.clone(),
        groups: p.groups.clone(),
        group_properties: Vec::new(),
        event_properties: p.event_properties.clone(),
        user_properties: Arc::new(Vec::new()),
        extra: p.extra.clone(),
        skip_user_properties_sync: p.skip_user_properties_sync,
        profile_only: p.profile_only,
    }
}

/// What an accepted event must export as, from what was sent.
fn check_round_trip(sent: &Value, parsed: &ParsedEvent) -> Result<(), TestCaseError> {
    let exported = stored(parsed).to_export_json(1);
    let sent_props: Map<String, Value> = sent["event_properties"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    prop_assert_eq!(&exported["event_properties"], &Value::Object(sent_props));
    if sent["groups"].is_object() {
        prop_assert_eq!(&exported["groups"], &sent["groups"]);
    }
    if let Some(time) = sent["time"].as_i64() {
        prop_assert_eq!(parsed.time, Some(time));
    }
    if let Some(session) = sent["session_id"].as_i64() {
        prop_assert_eq!(exported["session_id"].as_i64(), Some(session));
    }
    // Amplitude's 1024-character cut of event types.
    let sent_type: Option<String> = sent["event_type"]
        .as_str()
        .map(|t| t.chars().take(1024).collect());
    prop_assert_eq!(exported["event_type"].as_str(), sent_type.as_deref());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn ingestion_bodies_never_panic_and_accepted_events_round_trip(
        events in prop::collection::vec(any_event(), 1..4),
        api_key in prop_oneof![Just(json!("key")), any_json()],
    ) {
        let body = json!({"api_key": api_key, "events": events});
        let Ok(batch) = parse_batch(body.to_string().as_bytes()) else { return Ok(()) };
        for (sent, parsed) in events.iter().zip(&batch.events) {
            if let Ok(parsed) = parsed {
                check_round_trip(sent, parsed)?;
            }
        }
    }

    #[test]
    fn import_lines_never_panic_and_accepted_lines_round_trip(event in any_event(), upload in any_json()) {
        let mut line = event.clone();
        line["server_upload_time"] = upload;
        if let Ok(parsed) = parse_export_line(&line.to_string(), 1_800_000_000_000) {
            check_round_trip(&event, &parsed)?;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_batch(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = parse_export_line(text, 0);
        }
    }
}
