//! Parsing and validating Amplitude request bodies (`/2/httpapi`, `/batch`) and export lines
//! (bulk import), with per-event issues so that clients drop only the events that are bad.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::limits::{self, Limit};
use crate::{NumField, Props, StrField};

/// Amplitude's default minimum length of `user_id` and `device_id`.
pub const DEFAULT_MIN_ID_LENGTH: usize = 5;

/// Ids that Amplitude rejects as placeholders (compared case-insensitively).
const INVALID_IDS: &[&str] = &[
    "anonymous",
    "nil",
    "none",
    "null",
    "n/a",
    "na",
    "undefined",
    "unknown",
    "\"\"",
    "00000000-0000-0000-0000-000000000000",
    "{}",
    "lmy47d",
    "0",
    "-1",
];

/// The event type an identification is recorded under (the SDKs send identify as this event).
pub const IDENTIFY_EVENT: &str = "$identify";
/// The event type of a group identification (the SDKs send `groupIdentify` as this event).
pub const GROUP_IDENTIFY_EVENT: &str = "$groupidentify";

/// Amplitude caps every string value at 1024 characters and truncates longer ones.
const MAX_STRING_CHARS: usize = 1024;

/// A request-level failure: the whole body is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON of the expected shape.
    #[error("Invalid JSON request body")]
    InvalidJson,
    /// A required top-level field is absent.
    #[error("Request missing required field")]
    MissingField(&'static str),
}

/// Which of Amplitude's three per-event error maps an issue belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventIssue {
    /// Goes to `events_with_missing_fields`.
    Missing,
    /// Goes to `events_with_invalid_fields`.
    Invalid,
    /// Goes to `events_with_invalid_id_lengths`.
    IdLength,
}

/// Why one event was refused: the issue kind, the field it concerns, and the limit it broke.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventError {
    /// Which error map the event index goes into.
    pub issue: EventIssue,
    /// The field name (never a value: error bodies and logs must not carry data).
    pub field: &'static str,
    /// The documented limit the field broke, if that is why it is invalid.
    pub limit: Option<Limit>,
}

/// Why a field is invalid: malformed, or past a limit.
type FieldError = Option<Limit>;

/// What kind of object is parsed: each accepts its own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An event of `/2/httpapi` or `/batch`.
    Event,
    /// A line of Amplitude's export (bulk import): export field names and server-side fields.
    Export,
    /// An `identification` of the Identify API: no event type, no visible event.
    Identification,
    /// An `identification` of the Group Identify API: `group_type`, `group_value` and
    /// `group_properties` operations; no ids, no visible event.
    GroupIdentification,
}

/// Request options Amplitude clients may send.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct WireOptions {
    /// Overrides the minimum id length.
    pub min_id_length: Option<usize>,
}

/// An event that passed validation, before the server resolves identity and user properties.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedEvent {
    pub event_type: String,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    pub time: Option<i64>,
    pub insert_id: Option<String>,
    pub session_id: Option<i64>,
    pub event_id: Option<i64>,
    pub strs: Vec<(u8, String)>,
    pub nums: Vec<(u8, f64)>,
    pub groups: Option<String>,
    /// `group_properties` operations (or plain keys), applied to the event's groups.
    pub group_property_ops: Vec<(String, Value)>,
    /// An export line's `group_properties`: its groups' properties at that time, split by
    /// key, stored exactly as given.
    pub group_snapshot: Option<Props>,
    pub event_properties: Props,
    /// The raw `user_properties` object: operations or plain keys, applied to the profile.
    pub user_property_ops: Vec<(String, Value)>,
    /// An export line's `user_properties` without operations: the user's properties as of
    /// the event, stored exactly as given (the profile takes the latest by event time).
    pub user_snapshot: Option<Props>,
    /// `$skip_user_properties_sync`: the event shows its user properties applied to the
    /// profile, and the profile does not change.
    pub skip_user_properties_sync: bool,
    /// Documented fields lethe keeps without modelling them (`plan`, `ingestion_metadata`,
    /// `paying`; and every other field of an export line), as a canonical JSON object.
    pub extra: Option<String>,
    /// An export line's amplitude_id: kept for a new user when no user of this server has it.
    pub amplitude_id: Option<i64>,
    /// An identification: it changes profiles or groups and is never an event.
    pub profile_only: bool,
    /// Kept from an import line; assigned by the server otherwise.
    pub uuid: Option<u128>,
    /// Kept from an import line; assigned by the server otherwise.
    pub server_upload_time: Option<i64>,
}

impl ParsedEvent {
    /// Amplitude's `"ip": "$remote"`, or no `ip` at all: the address the request came from.
    pub fn fill_remote_ip(&mut self, client: &str) {
        let ip = StrField::index("ip").expect("ip is a standard field");
        match self.strs.iter_mut().find(|(i, _)| *i == ip) {
            Some((_, value)) if value == "$remote" => *value = client.to_string(),
            Some(_) => {}
            None => {
                self.strs.push((ip, client.to_string()));
                self.strs.sort_unstable_by_key(|(i, _)| *i);
            }
        }
    }
}

/// A parsed ingestion request.
#[derive(Debug)]
pub struct Batch {
    pub api_key: String,
    /// One entry per event in request order: the event, or every issue found in it.
    pub events: Vec<Result<ParsedEvent, Vec<EventError>>>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    api_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    events: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    options: Option<WireOptions>,
}

/// Parses an `/2/httpapi` or `/batch` body.
pub fn parse_batch(body: &[u8]) -> Result<Batch, RequestError> {
    let body: Body = serde_json::from_slice(body).map_err(|_| RequestError::InvalidJson)?;
    let api_key = body
        .api_key
        .filter(|k| !k.is_empty())
        .ok_or(RequestError::MissingField("api_key"))?
        .into_owned();
    let raw_events = body.events.ok_or(RequestError::MissingField("events"))?;
    let min_id = body
        .options
        .and_then(|o| o.min_id_length)
        .unwrap_or(DEFAULT_MIN_ID_LENGTH);
    let events = raw_events
        .iter()
        .map(|raw| parse_event(raw.get(), min_id, Shape::Event))
        .collect();
    Ok(Batch { api_key, events })
}

/// Parses one bulk-import line: Amplitude's export format (or an ingestion event), keeping
/// `uuid`, `server_upload_time` and `$insert_id` when present. `now` bounds the upload time:
/// an event uploaded "later" than the server's clock could never be deleted by a task.
pub fn parse_export_line(line: &str, now: i64) -> Result<ParsedEvent, Vec<EventError>> {
    let ev = parse_event(line, 1, Shape::Export)?;
    match ev.server_upload_time {
        Some(t) if !limits::upload_time_in_range(t, now) => Err(vec![EventError {
            issue: EventIssue::Invalid,
            field: "server_upload_time",
            limit: Some(Limit::TimeRange),
        }]),
        _ => Ok(ev),
    }
}

/// Parses the `identification` parameter of the Identify or Group Identify API (`shape`):
/// one JSON object or an array of them. Each changes a user's profile and ids, or a group's
/// properties, and is never an event.
pub fn parse_identification(
    json: &str,
    min_id_length: usize,
    shape: Shape,
) -> Result<Vec<Result<ParsedEvent, Vec<EventError>>>, RequestError> {
    let value: &RawValue = serde_json::from_str(json).map_err(|_| RequestError::InvalidJson)?;
    let objects: Vec<&RawValue> = match value.get().trim_start().starts_with('[') {
        true => serde_json::from_str(value.get()).map_err(|_| RequestError::InvalidJson)?,
        false => vec![value],
    };
    if objects.is_empty() {
        return Err(RequestError::MissingField("identification"));
    }
    Ok(objects
        .iter()
        .map(|raw| parse_event(raw.get(), min_id_length, shape))
        .collect())
}

/// An event object's members in document order: a few members, scanned linearly, cost less
/// than building a map of them.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push((k, v));
                }
                Ok(Fields(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// Standard-field column of a member name (wire or export spelling).
fn standard_field(name: &str) -> Option<Standard> {
    static INDEX: std::sync::OnceLock<rustc_hash::FxHashMap<&'static str, Standard>> =
        std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut m = rustc_hash::FxHashMap::default();
            for (i, f) in StrField::ALL.iter().enumerate() {
                m.insert(f.wire, Standard::Text(i as u8));
                m.insert(f.export, Standard::Text(i as u8));
            }
            for (i, f) in NumField::ALL.iter().enumerate() {
                m.insert(f.name, Standard::Number(i as u8));
            }
            m
        })
        .get(name)
        .copied()
}

#[derive(Clone, Copy)]
enum Standard {
    Text(u8),
    Number(u8),
}

/// Parses and validates one event object of the given shape.
pub fn parse_event(
    json: &str,
    min_id_length: usize,
    shape: Shape,
) -> Result<ParsedEvent, Vec<EventError>> {
    let import = shape == Shape::Export;
    let fields: Fields = serde_json::from_str(json).map_err(|_| {
        vec![EventError {
            issue: EventIssue::Invalid,
            field: "event",
            limit: None,
        }]
    })?;
    let mut errors = Vec::new();
    let mut check = |issue, field| {
        errors.push(EventError {
            issue,
            field,
            limit: None,
        })
    };
    let mut limit_errors = Vec::new();
    let mut invalid = |field, limit: FieldError| {
        limit_errors.push(EventError {
            issue: EventIssue::Invalid,
            field,
            limit,
        })
    };
    let mut ev = ParsedEvent::default();

    if shape == Shape::GroupIdentification {
        return parse_group_identification(&fields);
    }
    match text(&fields, &["event_type"]) {
        _ if shape == Shape::Identification => ev.event_type = IDENTIFY_EVENT.to_string(),
        Ok(Some(t)) if !t.is_empty() => ev.event_type = truncate(t),
        Ok(_) => check(EventIssue::Missing, "event_type"),
        Err(()) => check(EventIssue::Invalid, "event_type"),
    }
    let user_id = id_field(&fields, "user_id", min_id_length, &mut check);
    let device_id = id_field(&fields, "device_id", min_id_length, &mut check);
    match (&user_id, &device_id) {
        (IdCheck::Ok(_), _) | (_, IdCheck::Ok(_)) => {}
        (IdCheck::TooShort, _) => check(EventIssue::IdLength, "user_id"),
        (_, IdCheck::TooShort) => check(EventIssue::IdLength, "device_id"),
        (IdCheck::Absent, IdCheck::Absent) => check(EventIssue::Missing, "user_id"),
        _ => {}
    }
    ev.user_id = user_id.into_value();
    ev.device_id = device_id.into_value();

    let time_keys: &[&str] = if import {
        &["time", "event_time"]
    } else {
        &["time"]
    };
    match timestamp(&fields, time_keys, import) {
        Ok(t) => ev.time = t,
        Err(e) => invalid("time", e),
    }
    if import {
        match timestamp(&fields, &["server_upload_time"], true) {
            Ok(t) => ev.server_upload_time = t,
            Err(e) => invalid("server_upload_time", e),
        }
        match text(&fields, &["uuid"]).map(|u| u.map(|u| uuid::Uuid::parse_str(&u))) {
            Ok(None) => {}
            Ok(Some(Ok(u))) => ev.uuid = Some(u.as_u128()),
            _ => check(EventIssue::Invalid, "uuid"),
        }
    }
    match text(&fields, &["insert_id", "$insert_id"]) {
        Ok(v) => ev.insert_id = v.filter(|s| !s.is_empty()).map(truncate),
        Err(()) => check(EventIssue::Invalid, "insert_id"),
    }
    match integer(&fields, "session_id") {
        Ok(v) => ev.session_id = v,
        Err(e) => invalid("session_id", e),
    }
    match integer(&fields, "event_id") {
        Ok(v) => ev.event_id = v,
        Err(e) => invalid("event_id", e),
    }
    for (name, raw) in fields.0.iter().filter(|(_, raw)| raw.get() != "null") {
        match standard_field(name) {
            Some(Standard::Text(i)) => match text_value(raw) {
                Ok(v) if !ev.strs.iter().any(|(f, _)| *f == i) => ev.strs.push((i, truncate(v))),
                Ok(_) => {}
                Err(()) => check(EventIssue::Invalid, StrField::ALL[i as usize].wire),
            },
            Some(Standard::Number(i)) => match number_value(raw) {
                Ok(v) => ev.nums.push((i, v)),
                Err(()) => check(EventIssue::Invalid, NumField::ALL[i as usize].name),
            },
            None => {}
        }
    }
    ev.strs.sort_unstable_by_key(|(i, _)| *i);
    ev.nums.sort_unstable_by_key(|(i, _)| *i);
    match object_text(&fields, "groups") {
        Ok(v) => match v.as_deref().map(crate::groups::parse_groups) {
            Some(Err(limit)) => invalid("groups", Some(limit)),
            _ => ev.groups = v,
        },
        Err(e) => invalid("groups", e),
    }
    match lookup(&fields, &["group_properties"]) {
        None => {}
        Some(raw) if import => {
            let snapshot = limits::checked_value(raw.get())
                .map_err(Some)
                .and_then(|v| crate::groups::split_exported(&v).ok_or(None));
            match snapshot {
                Ok(split) => ev.group_snapshot = Some(split),
                Err(e) => invalid("group_properties", e),
            }
        }
        Some(raw) => match ops_of(raw) {
            Ok(ops) => ev.group_property_ops = ops,
            Err(e) => invalid("group_properties", e),
        },
    }
    ev.profile_only = match shape {
        Shape::Identification => true,
        Shape::Event => ev.event_type == GROUP_IDENTIFY_EVENT,
        Shape::Export | Shape::GroupIdentification => false,
    };
    match props(&fields, "event_properties") {
        Ok(v) => ev.event_properties = v,
        Err(e) => invalid("event_properties", e),
    }
    match lookup(&fields, &["user_properties"]).map(|raw| user_properties(raw, import)) {
        None => {}
        Some(Ok(UserProperties::Snapshot(snapshot))) => ev.user_snapshot = Some(snapshot),
        Some(Ok(UserProperties::Ops(ops))) => ev.user_property_ops = ops,
        Some(Err(e)) => invalid("user_properties", e),
    }
    match lookup(&fields, &["$skip_user_properties_sync"]).map(|raw| raw.get()) {
        None | Some("false") => {}
        Some("true") => ev.skip_user_properties_sync = true,
        Some(_) => check(EventIssue::Invalid, "$skip_user_properties_sync"),
    }
    match extra_fields(&fields, shape) {
        Ok(v) => ev.extra = v,
        Err((field, e)) => invalid(field, e),
    }
    if import {
        match integer(&fields, "amplitude_id") {
            Ok(v) => ev.amplitude_id = v.filter(|id| *id > 0),
            Err(e) => invalid("amplitude_id", e),
        }
    }
    errors.extend(limit_errors);
    if errors.is_empty() {
        Ok(ev)
    } else {
        errors.sort();
        errors.dedup();
        Err(errors)
    }
}

/// A Group Identify API identification: `group_type`, `group_value`, `group_properties`.
fn parse_group_identification(fields: &Fields) -> Result<ParsedEvent, Vec<EventError>> {
    let mut errors = Vec::new();
    let mut named = |field: &'static str| match text(fields, &[field]) {
        Ok(Some(v)) if !v.is_empty() => Some(truncate(v)),
        Ok(_) => {
            errors.push(EventError {
                issue: EventIssue::Missing,
                field,
                limit: None,
            });
            None
        }
        Err(()) => {
            errors.push(EventError {
                issue: EventIssue::Invalid,
                field,
                limit: None,
            });
            None
        }
    };
    let (group_type, group_value) = (named("group_type"), named("group_value"));
    let ops = match lookup(fields, &["group_properties"]).map(ops_of) {
        None => Vec::new(),
        Some(Ok(ops)) => ops,
        Some(Err(limit)) => {
            errors.push(EventError {
                issue: EventIssue::Invalid,
                field: "group_properties",
                limit,
            });
            Vec::new()
        }
    };
    match (group_type, group_value) {
        (Some(t), Some(v)) if errors.is_empty() => Ok(ParsedEvent {
            event_type: GROUP_IDENTIFY_EVENT.to_string(),
            groups: Some(serde_json::json!({ t: v }).to_string()),
            group_property_ops: ops,
            profile_only: true,
            ..Default::default()
        }),
        _ => Err(errors),
    }
}

/// Amplitude's user-property operations (anything else in `user_properties` is a key).
fn is_operation(key: &str) -> bool {
    matches!(
        key,
        "$set"
            | "$setOnce"
            | "$add"
            | "$append"
            | "$prepend"
            | "$unset"
            | "$preInsert"
            | "$postInsert"
            | "$remove"
            | "$clearAll"
    )
}

/// Documented event fields kept as they are sent, without a column of their own.
const KEPT_FIELDS: &[&str] = &["plan", "ingestion_metadata", "paying"];

/// Members of an event or export line that lethe models (or derives on export); an export
/// line's other members are kept in `extra`.
fn is_modelled(name: &str) -> bool {
    standard_field(name).is_some()
        || matches!(
            name,
            "event_type"
                | "user_id"
                | "device_id"
                | "time"
                | "event_time"
                | "server_upload_time"
                | "uuid"
                | "insert_id"
                | "$insert_id"
                | "session_id"
                | "event_id"
                | "groups"
                | "group_properties"
                | "event_properties"
                | "user_properties"
                | "amplitude_id"
                | "app"
                | "$skip_user_properties_sync"
        )
}

/// Export fields lethe renders from the event and upload times: kept only when an import
/// line's value differs from what lethe would render.
const DERIVED_TIMES: &[(&str, &str)] = &[
    ("client_event_time", "event_time"),
    ("server_received_time", "server_upload_time"),
    ("client_upload_time", "server_upload_time"),
    ("processed_time", "server_upload_time"),
];

/// The members kept in `extra`, as one canonical JSON object (`None` when there are none).
/// An error names the member and the limit it broke.
fn extra_fields(
    fields: &Fields,
    shape: Shape,
) -> Result<Option<String>, (&'static str, FieldError)> {
    let mut kept = serde_json::Map::new();
    for (name, raw) in fields.0.iter().filter(|(_, raw)| raw.get() != "null") {
        let keep = match shape {
            Shape::Event => KEPT_FIELDS.contains(&name.as_ref()),
            Shape::Export => !is_modelled(name) && !derived_as_rendered(fields, name, raw),
            Shape::Identification | Shape::GroupIdentification => false,
        };
        if !keep {
            continue;
        }
        let field = KEPT_FIELDS
            .iter()
            .find(|f| **f == name.as_ref())
            .copied()
            .unwrap_or("extra");
        if kept.len() >= limits::MAX_PROPERTIES {
            return Err((field, Some(Limit::Properties)));
        }
        if name.chars().count() > limits::MAX_KEY_CHARS {
            return Err((field, Some(Limit::KeyLength)));
        }
        let value = limits::checked_value(raw.get()).map_err(|e| (field, Some(e)))?;
        if shape == Shape::Export && name == "data" && value == Value::Object(Default::default()) {
            continue;
        }
        kept.insert(name.to_string(), value);
    }
    Ok((!kept.is_empty()).then(|| Value::Object(kept).to_string()))
}

/// Whether `name` is a derived export time whose value is what lethe would render anyway.
fn derived_as_rendered(fields: &Fields, name: &str, raw: &RawValue) -> bool {
    let Some((_, source)) = DERIVED_TIMES.iter().find(|(n, _)| *n == name) else {
        return false;
    };
    let Some(source) = lookup(fields, &[source]) else {
        return false;
    };
    raw.get() == source.get()
}

enum IdCheck {
    Absent,
    TooShort,
    Invalid,
    Ok(String),
}

impl IdCheck {
    fn into_value(self) -> Option<String> {
        match self {
            IdCheck::Ok(v) => Some(v),
            _ => None,
        }
    }
}

fn id_field(
    fields: &Fields,
    name: &'static str,
    min_len: usize,
    check: &mut impl FnMut(EventIssue, &'static str),
) -> IdCheck {
    match text(fields, &[name]) {
        Ok(None) => IdCheck::Absent,
        Ok(Some(v)) if v.is_empty() => IdCheck::Absent,
        Ok(Some(v)) if INVALID_IDS.iter().any(|bad| bad.eq_ignore_ascii_case(&v)) => {
            check(EventIssue::Invalid, name);
            IdCheck::Invalid
        }
        // A short id is removed from the event; the event fails only if no id is left.
        Ok(Some(v)) if v.chars().count() < min_len => IdCheck::TooShort,
        Ok(Some(v)) => IdCheck::Ok(truncate(v)),
        Err(()) => {
            check(EventIssue::Invalid, name);
            IdCheck::Invalid
        }
    }
}

fn truncate(s: Cow<str>) -> String {
    match s.char_indices().nth(MAX_STRING_CHARS) {
        Some((cut, _)) => s[..cut].to_string(),
        None => s.into_owned(),
    }
}

fn lookup<'a>(fields: &Fields<'a>, keys: &[&str]) -> Option<&'a RawValue> {
    keys.iter()
        .find_map(|k| fields.0.iter().find(|(name, _)| name == k).map(|(_, v)| *v))
        .filter(|raw| raw.get() != "null")
}

fn text<'a>(fields: &Fields<'a>, keys: &[&str]) -> Result<Option<Cow<'a, str>>, ()> {
    lookup(fields, keys).map(text_value).transpose()
}

fn text_value(raw: &RawValue) -> Result<Cow<'_, str>, ()> {
    serde_json::from_str::<Cow<str>>(raw.get()).map_err(|_| ())
}

/// An integer field: refused (not clamped) when no i64 holds it exactly.
fn integer(fields: &Fields, key: &str) -> Result<Option<i64>, FieldError> {
    match lookup(fields, &[key]) {
        None => Ok(None),
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Number(n)) => limits::exact_integer(&n)
                .map(Some)
                .ok_or(Some(Limit::Number)),
            Err(_)
                if raw
                    .get()
                    .starts_with(|c: char| c == '-' || c.is_ascii_digit()) =>
            {
                Err(Some(Limit::Number))
            }
            _ => Err(None),
        },
    }
}

/// A number, or a string holding one (some SDKs send prices as text).
fn number_value(raw: &RawValue) -> Result<f64, ()> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Number(n)) => n.as_f64().ok_or(()),
        Ok(Value::String(s)) => s.parse().map_err(|_| ()),
        _ => Err(()),
    }
}

/// `time` is integer milliseconds on the wire; an import line may also carry export text.
/// Either way it must lie in the documented range.
fn timestamp(fields: &Fields, keys: &[&str], allow_text: bool) -> Result<Option<i64>, FieldError> {
    let ms = match lookup(fields, keys) {
        None => return Ok(None),
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Number(n)) => n.as_i64().ok_or(Some(Limit::TimeRange))?,
            Ok(Value::String(s)) if allow_text => crate::parse_export_time(&s).ok_or(None)?,
            _ => return Err(None),
        },
    };
    if limits::time_in_range(ms) {
        Ok(Some(ms))
    } else {
        Err(Some(Limit::TimeRange))
    }
}

/// A JSON object member kept as its canonical text.
fn object_text(fields: &Fields, key: &str) -> Result<Option<String>, FieldError> {
    match lookup(fields, &[key]) {
        None => Ok(None),
        Some(raw) if raw.get().starts_with('{') => {
            limits::canonical_value(raw.get()).map(Some).map_err(Some)
        }
        Some(_) => Err(None),
    }
}

/// The members of an object as (key, raw value), null values left out, within the key limits.
fn members<'a>(raw: &'a RawValue) -> Result<BTreeMap<Cow<'a, str>, &'a RawValue>, FieldError> {
    let map: BTreeMap<Cow<str>, &RawValue> = serde_json::from_str(raw.get()).map_err(|_| None)?;
    if map.len() > limits::MAX_PROPERTIES {
        return Err(Some(Limit::Properties));
    }
    if map
        .keys()
        .any(|k| k.chars().count() > limits::MAX_KEY_CHARS)
    {
        return Err(Some(Limit::KeyLength));
    }
    Ok(map)
}

/// Event properties as (key, canonical JSON text).
fn props(fields: &Fields, key: &str) -> Result<Props, FieldError> {
    match lookup(fields, &[key]) {
        None => Ok(Vec::new()),
        Some(raw) => canonical_props(members(raw)?),
    }
}

/// Members as (key, canonical JSON text), null values left out.
fn canonical_props(members: BTreeMap<Cow<str>, &RawValue>) -> Result<Props, FieldError> {
    members
        .into_iter()
        .filter(|(_, v)| v.get() != "null")
        .map(|(k, v)| Ok((k.into_owned(), limits::canonical_value(v.get())?)))
        .collect::<Result<_, Limit>>()
        .map_err(Some)
}

/// What a `user_properties` object is.
enum UserProperties {
    /// Operations (or plain keys, meaning `$set`) to apply to the profile.
    Ops(Vec<(String, Value)>),
    /// An export line's object without operations: the user's properties at that time.
    Snapshot(Props),
}

/// Reads `user_properties`: on an export line without operations a snapshot, else operations.
fn user_properties(raw: &RawValue, import: bool) -> Result<UserProperties, FieldError> {
    let members = members(raw)?;
    if import && !members.keys().any(|k| is_operation(k)) {
        return canonical_props(members).map(UserProperties::Snapshot);
    }
    ops_of_members(members).map(UserProperties::Ops)
}

/// A property-operations object (`$set`: {…}, or plain keys), every value within the
/// limits, and at most [`limits::MAX_PROPERTIES`] keys across all operations.
fn ops_of(raw: &RawValue) -> Result<Vec<(String, Value)>, FieldError> {
    ops_of_members(members(raw)?)
}

fn ops_of_members(
    members: BTreeMap<Cow<str>, &RawValue>,
) -> Result<Vec<(String, Value)>, FieldError> {
    let mut keys = 0;
    let mut ops = Vec::new();
    for (op, value) in members {
        let value = limits::checked_value(value.get())?;
        if op.starts_with('$') {
            if let Value::Object(map) = &value {
                keys += map.len();
                if map
                    .keys()
                    .any(|k| k.chars().count() > limits::MAX_KEY_CHARS)
                {
                    return Err(Some(Limit::KeyLength));
                }
            }
        } else {
            keys += 1;
        }
        ops.push((op.into_owned(), value));
    }
    if keys > limits::MAX_PROPERTIES {
        return Err(Some(Limit::Properties));
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(json: &str) -> Vec<(EventIssue, &'static str)> {
        match parse_event(json, DEFAULT_MIN_ID_LENGTH, Shape::Event) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| (e.issue, e.field)).collect(),
        }
    }

    #[test]
    fn validation_matches_amplitude() {
        assert!(issues(r#"{"event_type":"a","user_id":"user-1","time":1}"#).is_empty());
        assert_eq!(
            issues(r#"{"user_id":"user-1"}"#),
            [(EventIssue::Missing, "event_type")]
        );
        assert_eq!(
            issues(r#"{"event_type":"a"}"#),
            [(EventIssue::Missing, "user_id")]
        );
        assert_eq!(
            issues(r#"{"event_type":"a","user_id":"abc"}"#),
            [(EventIssue::IdLength, "user_id")]
        );
        assert_eq!(
            issues(r#"{"event_type":"a","user_id":"null"}"#),
            [(EventIssue::Invalid, "user_id")]
        );
        assert_eq!(
            issues(r#"{"event_type":"a","user_id":"user-1","time":"2024-01-01T00:00:00Z"}"#),
            [(EventIssue::Invalid, "time")]
        );
        // A short id is dropped while the other id carries the event.
        let ev = parse_event(
            r#"{"event_type":"a","user_id":"abc","device_id":"device-1"}"#,
            5,
            Shape::Event,
        )
        .unwrap();
        assert_eq!(ev.user_id, None);
        assert_eq!(ev.device_id.as_deref(), Some("device-1"));
    }

    #[test]
    fn batch_reports_request_errors() {
        assert_eq!(parse_batch(b"{").unwrap_err(), RequestError::InvalidJson);
        assert_eq!(
            parse_batch(br#"{"events":[]}"#).unwrap_err(),
            RequestError::MissingField("api_key")
        );
        let b = parse_batch(
            br#"{"api_key":"k","events":[{"event_type":"x","user_id":"ab"}],"options":{"min_id_length":2},"client_upload_time":"x"}"#,
        )
        .unwrap();
        assert!(b.events[0].is_ok());
    }

    #[test]
    fn properties_keep_json_types() {
        let ev = parse_event(
            r#"{"event_type":"a","device_id":"device-1","event_properties":{"n":1.5,"s":"x","l":[1, 2],"z":null},"app_version":"2.1"}"#,
            5,
            Shape::Event,
        )
        .unwrap();
        assert_eq!(
            ev.event_properties,
            vec![
                ("l".into(), "[1,2]".into()),
                ("n".into(), "1.5".into()),
                ("s".into(), "\"x\"".into())
            ]
        );
        assert_eq!(ev.strs, vec![(0, "2.1".to_string())]);
    }
}
