//! The deletion task contract: parsing and validating a task body, with errors that name the
//! clause and field at fault.

use lethe_meta::BlockKind;
use std::collections::BTreeSet;

use crate::predicate::{built_in_fields, Op, Predicate, Subject, MAX_VALUES, MAX_VALUE_CHARS};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most clauses one task may carry.
pub const MAX_CLAUSES: usize = 5;
const MAX_NAME_CHARS: usize = 200;

/// What one clause removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Clause {
    /// These events, with all their properties.
    Event {
        event_types: Vec<String>,
        /// Only the events that pass this value predicate (`where` in JSON).
        #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
        filter: Option<Predicate>,
    },
    /// These keys from `event_properties`, on all events (`None`) or the listed types.
    EventProperty {
        properties: Vec<String>,
        event_types: Option<Vec<String>>,
        /// Only on the events that pass this value predicate (`where` in JSON).
        #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
        filter: Option<Predicate>,
    },
    /// These keys from the user properties stored on events; `from_profiles` also unsets
    /// them in current profiles.
    UserProperty {
        properties: Vec<String>,
        event_types: Option<Vec<String>>,
        from_profiles: bool,
        /// Only on the events that pass this value predicate (`where` in JSON).
        #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
        filter: Option<Predicate>,
    },
    /// These keys from the group properties stored on events; `from_profiles` also unsets
    /// them in the groups' current properties.
    GroupProperty {
        properties: Vec<String>,
        event_types: Option<Vec<String>>,
        from_profiles: bool,
        /// Only on the events that pass this value predicate (`where` in JSON).
        #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
        filter: Option<Predicate>,
    },
    /// Every event of these end users (a User Privacy API job; never from the task API).
    Users { amplitude_ids: Vec<i64> },
}

/// A validated task: name, half-open upload-time range `[start, end)`, clauses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    /// Start of the range, UTC ms (RFC 3339 in JSON: the API and the stored queue).
    #[serde(with = "rfc3339")]
    pub start: i64,
    /// End of the range (exclusive), UTC ms (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub end: i64,
    pub clauses: Vec<Clause>,
    /// Also block, from the submission on, the event types and keys the clauses delete, so
    /// that an old app build cannot send them back ("and keep blocking it").
    #[serde(default)]
    pub keep_blocking: bool,
}

impl TaskSpec {
    /// The names a `keep_blocking` submission adds to the project's block list: none
    /// without it.
    pub fn blocks(&self) -> Vec<(BlockKind, String)> {
        if !self.keep_blocking {
            return Vec::new();
        }
        let mut blocks = Vec::new();
        for clause in &self.clauses {
            let (kind, names) = match clause {
                Clause::Event { event_types, .. } => (BlockKind::EventType, event_types),
                Clause::EventProperty { properties, .. } => (BlockKind::EventProperty, properties),
                Clause::UserProperty { properties, .. } => (BlockKind::UserProperty, properties),
                Clause::GroupProperty { properties, .. } => (BlockKind::GroupProperty, properties),
                Clause::Users { .. } => continue,
            };
            blocks.extend(names.iter().map(|name| (kind, name.clone())));
        }
        blocks
    }

    /// The clause's value predicate, if it has one.
    fn filters(&self) -> impl Iterator<Item = &Predicate> {
        self.clauses.iter().filter_map(Clause::filter)
    }

    /// Whether the spec holds property values (a predicate's, not yet redacted): then its
    /// stored copy is redacted once the task completes.
    pub fn holds_values(&self) -> bool {
        self.filters().any(|p| !p.values.is_empty())
    }

    /// Whether a predicate's values were replaced by digests: such a spec cannot run.
    pub fn is_redacted(&self) -> bool {
        self.filters().any(Predicate::is_redacted)
    }

    /// The spec with every predicate value replaced by its salted digest: what the audit,
    /// receipts and a completed task's stored spec hold.
    pub fn redacted(&self, salt: &[u8]) -> TaskSpec {
        let mut spec = self.clone();
        for clause in &mut spec.clauses {
            if let Some(filter) = clause.filter_mut() {
                *filter = filter.redacted(salt);
            }
        }
        spec
    }
}

impl Clause {
    /// The clause's value predicate (`where`), if any.
    pub fn filter(&self) -> Option<&Predicate> {
        match self {
            Clause::Event { filter, .. }
            | Clause::EventProperty { filter, .. }
            | Clause::UserProperty { filter, .. }
            | Clause::GroupProperty { filter, .. } => filter.as_ref(),
            Clause::Users { .. } => None,
        }
    }

    fn filter_mut(&mut self) -> Option<&mut Predicate> {
        match self {
            Clause::Event { filter, .. }
            | Clause::EventProperty { filter, .. }
            | Clause::UserProperty { filter, .. }
            | Clause::GroupProperty { filter, .. } => filter.as_mut(),
            Clause::Users { .. } => None,
        }
    }
}

/// A task's times as RFC 3339 text in JSON. A stored time that does not parse fails the
/// decoding of its task: it never becomes a default range.
mod rfc3339 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text).ok_or_else(|| D::Error::custom("not an RFC 3339 time"))
    }
}

/// A field of the body that is wrong, and why (names only, never event values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Path of the field, e.g. `clauses[1].properties`.
    pub field: String,
    pub message: String,
    /// Names that are not in the project's catalog.
    pub unknown: Vec<String>,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
        unknown: Vec::new(),
    }
}

fn parse_time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses a task body; `now` bounds the end of the range.
pub fn parse_spec(body: &Value, now: i64) -> Result<TaskSpec, SpecError> {
    let obj = body
        .as_object()
        .ok_or_else(|| err("body", "must be a JSON object"))?;
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_NAME_CHARS => {
            s.trim().to_string()
        }
        Some(Value::String(_)) => return Err(err("name", "must have 1 to 200 characters")),
        _ => return Err(err("name", "is required: a string of 1 to 200 characters")),
    };
    let time = |field: &'static str| -> Result<i64, SpecError> {
        match obj.get(field) {
            Some(Value::String(s)) => parse_time(s)
                .ok_or_else(|| err(field, "must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z")),
            _ => Err(err(field, "is required: an RFC 3339 time in UTC")),
        }
    };
    let (start, end) = (time("start")?, time("end")?);
    if start >= end {
        return Err(err("end", "must be after start"));
    }
    if end > now {
        return Err(err(
            "end",
            "may not be later than now: data arriving after submission is never deleted",
        ));
    }
    let clauses = match obj.get("clauses") {
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(err("clauses", "needs at least one clause"))
        }
        Some(Value::Array(list)) if list.len() > MAX_CLAUSES => {
            return Err(err(
                "clauses",
                format!("at most {MAX_CLAUSES} clauses per task"),
            ))
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, c)| parse_clause(i, c))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(err("clauses", "is required: a list of 1 to 5 clauses")),
    };
    let keep_blocking = match obj.get("keep_blocking") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(keep)) => *keep,
        Some(_) => return Err(err("keep_blocking", "must be true or false")),
    };
    if keep_blocking && clauses.iter().any(|c| c.filter().is_some()) {
        return Err(err(
            "keep_blocking",
            "blocks whole event types and keys, so it cannot go with a clause's where: \
             submit the blocking as a task of its own",
        ));
    }
    Ok(TaskSpec {
        name,
        start,
        end,
        clauses,
        keep_blocking,
    })
}

fn names(
    clause: &Value,
    at: &str,
    field: &str,
    required: bool,
) -> Result<Option<Vec<String>>, SpecError> {
    let path = format!("{at}.{field}");
    match clause.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::Array(list)) if !list.is_empty() => {
            let mut out = Vec::with_capacity(list.len());
            for v in list {
                match v {
                    Value::String(s) if !s.is_empty() => out.push(s.clone()),
                    _ => return Err(err(&path, "must list non-empty strings")),
                }
            }
            let unique: BTreeSet<&String> = out.iter().collect();
            if unique.len() != out.len() {
                return Err(err(&path, "lists a name twice"));
            }
            Ok(Some(out))
        }
        Some(Value::Array(_)) => Err(err(&path, "must not be empty")),
        _ => Err(err(&path, "is required: a non-empty list of names")),
    }
}

fn parse_clause(i: usize, clause: &Value) -> Result<Clause, SpecError> {
    let at = format!("clauses[{i}]");
    if !clause.is_object() {
        return Err(err(&at, "must be an object"));
    }
    let kind = clause.get("kind").and_then(Value::as_str);
    let filter = predicate(clause, &at)?;
    match kind {
        Some("event") => Ok(Clause::Event {
            event_types: names(clause, &at, "event_types", true)?.unwrap_or_default(),
            filter,
        }),
        Some("event_property") => Ok(Clause::EventProperty {
            properties: names(clause, &at, "properties", true)?.unwrap_or_default(),
            event_types: names(clause, &at, "event_types", false)?,
            filter,
        }),
        Some("user_property") => Ok(Clause::UserProperty {
            properties: names(clause, &at, "properties", true)?.unwrap_or_default(),
            event_types: names(clause, &at, "event_types", false)?,
            from_profiles: from_profiles(clause, &at, filter.is_some())?,
            filter,
        }),
        Some("group_property") => Ok(Clause::GroupProperty {
            properties: names(clause, &at, "properties", true)?.unwrap_or_default(),
            event_types: names(clause, &at, "event_types", false)?,
            from_profiles: from_profiles(clause, &at, filter.is_some())?,
            filter,
        }),
        _ => Err(err(
            format!("{at}.kind"),
            "must be one of event, event_property, user_property, group_property",
        )),
    }
}

/// `from_profiles`; refused with a `where`: current profiles are not events, and a
/// predicate on an event's values says nothing about them.
fn from_profiles(clause: &Value, at: &str, filtered: bool) -> Result<bool, SpecError> {
    let field = format!("{at}.from_profiles");
    match clause.get("from_profiles") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(false),
        Some(Value::Bool(true)) if filtered => Err(err(
            field,
            "cannot go with where: it unsets the keys in every current profile; \
             submit it as a clause of its own",
        )),
        Some(Value::Bool(true)) => Ok(true),
        Some(_) => Err(err(field, "must be true or false")),
    }
}

/// A clause's optional `where`.
fn predicate(clause: &Value, at: &str) -> Result<Option<Predicate>, SpecError> {
    let at = format!("{at}.where");
    let body = match clause.get("where") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(body)) => body,
        Some(_) => {
            return Err(err(
                &at,
                "must be an object: {\"property\": {\"type\": …, \"name\": …}, \"op\": …, \"values\": […]}",
            ))
        }
    };
    let property = body.get("property");
    let name = match property.and_then(|p| p.get("name")) {
        Some(Value::String(name)) if !name.is_empty() && name.chars().count() <= MAX_NAME_CHARS => {
            name.clone()
        }
        _ => {
            return Err(err(
                format!("{at}.property.name"),
                "is required: the property's name, 1 to 200 characters",
            ))
        }
    };
    let subject = match property.and_then(|p| p.get("type")).and_then(Value::as_str) {
        Some("event") => Subject::Event(name),
        Some("user") => Subject::User(name),
        Some("built_in") if built_in_fields().any(|f| f == name) => Subject::BuiltIn(name),
        Some("built_in") => {
            return Err(err(
                format!("{at}.property.name"),
                format!(
                    "is not a built-in field; they are: {}",
                    built_in_fields().collect::<Vec<_>>().join(", ")
                ),
            ))
        }
        _ => {
            return Err(err(
                format!("{at}.property.type"),
                "must be one of event, user, built_in",
            ))
        }
    };
    let spelled = body.get("op").and_then(Value::as_str);
    let Some(op) = Op::ALL.into_iter().find(|op| Some(op.as_str()) == spelled) else {
        return Err(err(
            format!("{at}.op"),
            "must be one of is, is not, contains, does not contain, is set, is not set",
        ));
    };
    let field = format!("{at}.values");
    let values = match (body.get("values"), op.takes_values()) {
        (None | Some(Value::Null), false) => Vec::new(),
        (Some(Value::Array(list)), false) if list.is_empty() => Vec::new(),
        (_, false) => {
            return Err(err(
                field,
                format!("must be absent: {} takes no values", op.as_str()),
            ))
        }
        (Some(Value::Array(list)), true) if (1..=MAX_VALUES).contains(&list.len()) => {
            let mut out = Vec::with_capacity(list.len());
            for v in list {
                match v {
                    Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => {
                        return Err(err(
                            field,
                            format!("values have at most {MAX_VALUE_CHARS} characters"),
                        ))
                    }
                    Value::String(s) if s.is_empty() && op != Op::Is && op != Op::IsNot => {
                        return Err(err(
                            field,
                            "an empty text is in every value: name what to look for",
                        ))
                    }
                    Value::String(s) => out.push(s.clone()),
                    _ => {
                        return Err(err(
                            field,
                            "must list strings (a number as its text, e.g. \"42\")",
                        ))
                    }
                }
            }
            out
        }
        (_, true) => {
            return Err(err(
                field,
                format!("is required: a list of 1 to {MAX_VALUES} strings"),
            ))
        }
    };
    Ok(Some(Predicate {
        property: subject,
        op,
        values,
        value_digests: Vec::new(),
    }))
}

/// Names a project knows, by kind: a clause may only name these.
#[derive(Debug, Default, Clone)]
pub struct KnownNames {
    pub event_types: BTreeSet<String>,
    pub event_properties: BTreeSet<String>,
    pub user_properties: BTreeSet<String>,
    pub group_properties: BTreeSet<String>,
}

/// Refuses names that are not in the catalog, so a typo never silently deletes nothing.
pub fn check_names(spec: &TaskSpec, known: &KnownNames) -> Result<(), SpecError> {
    for (i, clause) in spec.clauses.iter().enumerate() {
        let (props, prop_field, known_props, types) = match clause {
            Clause::Event { event_types, .. } => {
                (None, "", &known.event_properties, Some(event_types))
            }
            Clause::Users { .. } => continue,
            Clause::EventProperty {
                properties,
                event_types,
                ..
            } => (
                Some(properties),
                "properties",
                &known.event_properties,
                event_types.as_ref(),
            ),
            Clause::UserProperty {
                properties,
                event_types,
                ..
            } => (
                Some(properties),
                "properties",
                &known.user_properties,
                event_types.as_ref(),
            ),
            Clause::GroupProperty {
                properties,
                event_types,
                ..
            } => (
                Some(properties),
                "properties",
                &known.group_properties,
                event_types.as_ref(),
            ),
        };
        for (list, field, set) in [
            (types, "event_types", &known.event_types),
            (props, prop_field, known_props),
        ] {
            let unknown: Vec<String> = list
                .into_iter()
                .flatten()
                .filter(|n| !set.contains(*n))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(SpecError {
                    field: format!("clauses[{i}].{field}"),
                    message: "names not in this project's catalog".into(),
                    unknown,
                });
            }
        }
        let unknown = match clause.filter().map(|p| &p.property) {
            Some(Subject::Event(name)) if !known.event_properties.contains(name) => name,
            Some(Subject::User(name)) if !known.user_properties.contains(name) => name,
            _ => continue,
        };
        return Err(SpecError {
            field: format!("clauses[{i}].where.property.name"),
            message: "names a property not in this project's catalog".into(),
            unknown: vec![unknown.clone()],
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn body(clauses: Value) -> Value {
        json!({"name": "t", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "clauses": clauses})
    }

    #[test]
    fn a_stored_spec_keeps_its_times_as_text_and_a_bad_one_never_becomes_a_default() {
        let spec =
            parse_spec(&body(json!([{"kind": "event", "event_types": ["a"]}])), NOW).unwrap();
        let stored = serde_json::to_value(&spec).unwrap();
        assert_eq!(stored["start"], "2026-01-01T00:00:00.000Z");
        assert_eq!(stored["end"], "2026-01-02T00:00:00.000Z");
        assert_eq!(
            serde_json::from_value::<TaskSpec>(stored.clone()).unwrap(),
            spec
        );
        let mut damaged = stored;
        damaged["start"] = json!("2026-01-01");
        assert!(serde_json::from_value::<TaskSpec>(damaged).is_err());
    }

    /// Arbitrary JSON shaped like a task body: a few keys, values of any kind.
    fn task_like() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            Just(json!("2026-01-01T00:00:00Z")),
            Just(json!("event")),
            Just(json!("user_property")),
            ".{0,8}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("kind".to_string()),
                        Just("event_types".to_string()),
                        Just("properties".to_string()),
                        Just("from_profiles".to_string()),
                        Just("users".to_string()),
                        "[a-z]{1,4}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map(
            prop_oneof![
                Just("name".to_string()),
                Just("start".to_string()),
                Just("end".to_string()),
                Just("clauses".to_string()),
                "[a-z]{1,4}"
            ],
            value,
            0..5,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        /// A bounded fuzz of the task contract: any body is refused with a field named, or
        /// accepted as a spec that is within the contract's own limits.
        #[test]
        fn any_body_is_refused_with_a_field_or_is_a_valid_spec(body in task_like()) {
            match parse_spec(&body, NOW) {
                Err(e) => proptest::prop_assert!(!e.field.is_empty()),
                Ok(spec) => {
                    proptest::prop_assert!(spec.start < spec.end && spec.end <= NOW);
                    proptest::prop_assert!((1..=MAX_CLAUSES).contains(&spec.clauses.len()));
                }
            }
        }
    }

    #[test]
    fn errors_name_the_clause_and_field() {
        let field = |b: Value| parse_spec(&b, NOW).unwrap_err().field;
        assert_eq!(field(body(json!([]))), "clauses");
        assert_eq!(
            field(body(json!(vec![json!({"kind": "event"}); 6]))),
            "clauses"
        );
        assert_eq!(
            field(body(
                json!([{"kind": "event", "event_types": ["a"]}, {"kind": "event", "event_types": []}])
            )),
            "clauses[1].event_types"
        );
        assert_eq!(field(body(json!([{"kind": "nope"}]))), "clauses[0].kind");
        assert_eq!(
            field(body(
                json!([{"kind": "user_property", "properties": ["p"], "from_profiles": "yes"}])
            )),
            "clauses[0].from_profiles"
        );
        let mut b = body(json!([{"kind": "event", "event_types": ["a"]}]));
        b["end"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(field(b.clone()), "end");
        b["end"] = json!("2099-01-01T00:00:00Z");
        assert_eq!(field(b.clone()), "end", "the future is refused");
        b["start"] = json!("yesterday");
        assert_eq!(field(b), "start");
    }

    #[test]
    fn a_where_is_checked_field_by_field() {
        let field = |w: Value| {
            parse_spec(
                &body(json!([{"kind": "event", "event_types": ["a"], "where": w}])),
                NOW,
            )
            .map(|_| String::new())
            .unwrap_or_else(|e| e.field)
        };
        let ok = json!({"property": {"type": "event", "name": "env"}, "op": "is", "values": ["staging"]});
        assert_eq!(field(ok.clone()), "");
        assert_eq!(field(json!("env = staging")), "clauses[0].where");
        let mut w = ok.clone();
        w["property"]["type"] = json!("group");
        assert_eq!(field(w), "clauses[0].where.property.type");
        let mut w = ok.clone();
        w["property"] = json!({"type": "built_in", "name": "email"});
        assert_eq!(field(w), "clauses[0].where.property.name");
        let mut w = ok.clone();
        w["property"] = json!({"type": "built_in", "name": "country"});
        assert_eq!(field(w), "");
        let mut w = ok.clone();
        w["op"] = json!("ends with");
        assert_eq!(field(w), "clauses[0].where.op");
        for values in [json!([]), json!(vec!["x"; 101]), json!([42]), json!(null)] {
            let mut w = ok.clone();
            w["values"] = values;
            assert_eq!(field(w), "clauses[0].where.values");
        }
        let mut w = ok.clone();
        w["values"] = json!(["x".repeat(1025)]);
        assert_eq!(field(w), "clauses[0].where.values");
        let mut w = ok.clone();
        w["op"] = json!("contains");
        w["values"] = json!([""]);
        assert_eq!(
            field(w),
            "clauses[0].where.values",
            "an empty needle matches all"
        );
        let mut w = ok.clone();
        w["op"] = json!("is set");
        assert_eq!(
            field(w.clone()),
            "clauses[0].where.values",
            "is set takes none"
        );
        w.as_object_mut().unwrap().remove("values");
        assert_eq!(field(w), "");
    }

    #[test]
    fn a_where_refuses_what_would_delete_more_than_it_says() {
        let w = json!({"property": {"type": "user", "name": "email"}, "op": "contains", "values": ["@test.example"]});
        let mut b = body(json!([{"kind": "event", "event_types": ["a"], "where": w}]));
        b["keep_blocking"] = json!(true);
        assert_eq!(parse_spec(&b, NOW).unwrap_err().field, "keep_blocking");
        let b = body(
            json!([{"kind": "user_property", "properties": ["email"], "from_profiles": true, "where": w}]),
        );
        assert_eq!(
            parse_spec(&b, NOW).unwrap_err().field,
            "clauses[0].from_profiles"
        );
    }

    #[test]
    fn a_redacted_spec_keeps_its_shape_without_its_values() {
        let w = json!({"property": {"type": "user", "name": "email"}, "op": "contains", "values": ["@test.example"]});
        let spec = parse_spec(
            &body(json!([{"kind": "user_property", "properties": ["email"], "where": w}])),
            NOW,
        )
        .unwrap();
        assert!(spec.holds_values() && !spec.is_redacted());
        let redacted = spec.redacted(b"salt");
        assert!(!redacted.holds_values() && redacted.is_redacted());
        let stored = serde_json::to_string(&redacted).unwrap();
        assert!(!stored.contains("test.example"), "{stored}");
        assert_eq!(serde_json::from_str::<TaskSpec>(&stored).unwrap(), redacted);
    }

    #[test]
    fn a_where_on_an_unknown_property_is_refused() {
        let w = json!({"property": {"type": "event", "name": "evn"}, "op": "is", "values": ["x"]});
        let spec = parse_spec(
            &body(json!([{"kind": "event", "event_types": ["a"], "where": w}])),
            NOW,
        )
        .unwrap();
        let known = KnownNames {
            event_types: ["a".to_string()].into(),
            ..Default::default()
        };
        let e = check_names(&spec, &known).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.unknown),
            ("clauses[0].where.property.name", vec!["evn".to_string()])
        );
    }

    #[test]
    fn unknown_names_are_listed() {
        let spec = parse_spec(
            &body(json!([{"kind": "event_property", "properties": ["p", "typo"], "event_types": ["a"]}])),
            NOW,
        )
        .unwrap();
        let known = KnownNames {
            event_types: ["a".to_string()].into(),
            event_properties: ["p".to_string()].into(),
            ..Default::default()
        };
        let e = check_names(&spec, &known).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.unknown),
            ("clauses[0].properties", vec!["typo".to_string()])
        );
    }
}
