//! Event segmentation (Amplitude's Dashboard REST `GET /api/2/events/segmentation`): per
//! bucket of event time in the project's time zone, the totals, uniques, DAU share, average
//! or property sums of one or two events (`e`, `e2`), with property filters (custom and
//! built-in) and one group-by. Whatever lethe does not compute is refused with a 400 naming
//! the parameter: a wrong number with a 200 is worse than no number.
//!
//! The console's volume chart asks for lethe's `lethe_time=upload`: buckets of server upload
//! time in UTC, the time deletion tasks select by, so the chart shows what a task would touch.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;
use lethe_event::StrField;
use lethe_store::{base_column, PropertyKind, ScanRequest, Scanned};
use serde_json::{json, Value};

use crate::auth::{ProjectKey, Session};
use crate::{blocking, ApiError, App};

/// Amplitude's range limits per interval, in days.
const MAX_REALTIME_DAYS: i64 = 2;
const MAX_HOURLY_DAYS: i64 = 7;
const MAX_DAILY_DAYS: i64 = 366;
const MAX_LONG_DAYS: i64 = 3 * 366;
/// Event types that are not user activity (`_active`, `n=active` leave them out).
const INACTIVE_TYPES: &[&str] = &["$identify", "$groupidentify"];
/// The parameters lethe reads; any other is refused rather than silently ignored.
const KNOWN_PARAMS: &[&str] = &[
    "e",
    "e2",
    "m",
    "n",
    "start",
    "end",
    "i",
    "s",
    "g",
    "limit",
    "lethe_time",
];

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/2/events/segmentation", get(by_key))
        .route("/api/v1/projects/{id}/events/segmentation", get(by_session))
}

type Params = HashMap<String, String>;

/// `GET /api/2/events/segmentation` with Basic `api_key:secret_key`.
async fn by_key(
    State(app): State<App>,
    ProjectKey(project): ProjectKey,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    run(app, project.id, params).await
}

/// The same query for a signed-in user of the console.
async fn by_session(
    State(app): State<App>,
    session: Session,
    Path(project_id): Path<i64>,
    Query(params): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    session.project_access(&app, project_id).await?;
    run(app, project_id, params).await
}

async fn run(app: App, project_id: i64, params: Params) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let project = app
            .meta
            .project(project_id)?
            .ok_or_else(|| ApiError::not_found("project"))?;
        let query = Segmentation::parse(&params, project.time_zone)?;
        Ok(Json(query.answer(&app, project_id)?))
    })
    .await
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, field, message)
}

/// Where a property lives: an event property, a custom user property (`gp:`), or a field
/// every event has (Amplitude's built-in user properties: `country`, `platform`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Property {
    Event(String),
    User(String),
    /// The segment column of a standard field or id.
    Builtin(&'static str),
}

/// Amplitude's names for the built-in properties, with the column each is stored in.
fn builtin(name: &str) -> Option<&'static str> {
    let alias = match name {
        "version" => Some("app_version"),
        "os" => Some("os_name"),
        "DMA" => Some("dma"),
        "device" => Some("device_model"),
        "user_id" => Some(base_column::USER_ID),
        "device_id" => Some(base_column::DEVICE_ID),
        _ => None,
    };
    alias.or_else(|| {
        StrField::ALL
            .iter()
            .find(|f| f.wire == name || f.export == name)
            .map(|f| f.wire)
    })
}

/// A property named in a filter or group-by: `kind` is `event` or `user` where the form
/// says; a user property is custom with the `gp:` prefix, else built-in.
fn property(field: &str, kind: Option<&str>, key: &str) -> Result<Property, ApiError> {
    if key.is_empty() {
        return Err(bad(field, "a property name is required"));
    }
    match (kind, key.strip_prefix("gp:")) {
        (_, Some(custom)) => Ok(Property::User(custom.to_string())),
        (Some("event"), None) => Ok(Property::Event(key.to_string())),
        (None | Some("user"), None) => builtin(key).map(Property::Builtin).ok_or_else(|| {
            bad(
                field,
                format!(
                    "{key:?} is not a built-in property lethe has (country, platform, os, version, \
                     city, region, language, library, carrier, device_type, …); custom user \
                     properties take the gp: prefix"
                ),
            )
        }),
        (Some(other), None) => Err(bad(
            field,
            format!("property type {other:?} is not supported: use event or user"),
        )),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Is,
    IsNot,
    Contains,
    DoesNotContain,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    property: Property,
    op: Op,
    values: Vec<String>,
}

/// What is counted per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Totals,
    Uniques,
    /// Uniques as a percentage of the users active in the bucket.
    PctDau,
    /// Events per user.
    Average,
    /// The sum of a numeric property (the group-by property), per bucket.
    Sums,
}

/// Whose events count (`n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Users {
    Any,
    /// Leaves out events that are not user activity ($identify).
    Active,
    /// Only users whose first event falls in the same bucket.
    New,
}

/// Bucket width (`i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interval {
    Realtime,
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Interval {
    /// The start of the bucket holding local time `t`.
    fn floor(self, t: NaiveDateTime) -> NaiveDateTime {
        let day = t.date().and_hms_opt(0, 0, 0).expect("midnight");
        match self {
            Interval::Realtime => {
                day + Duration::minutes((t.hour() * 60 + t.minute() / 5 * 5) as i64)
            }
            Interval::Hourly => day + Duration::hours(t.hour() as i64),
            Interval::Daily => day,
            // Weeks start on Sunday, as Amplitude's charts count them.
            Interval::Weekly => day - Duration::days(t.weekday().num_days_from_sunday() as i64),
            Interval::Monthly => t
                .date()
                .with_day(1)
                .expect("day 1")
                .and_hms_opt(0, 0, 0)
                .expect("midnight"),
        }
    }

    fn next(self, t: NaiveDateTime) -> NaiveDateTime {
        match self {
            Interval::Realtime => t + Duration::minutes(5),
            Interval::Hourly => t + Duration::hours(1),
            Interval::Daily => t + Duration::days(1),
            Interval::Weekly => t + Duration::days(7),
            Interval::Monthly => t
                .date()
                .checked_add_months(chrono::Months::new(1))
                .expect("in range")
                .and_hms_opt(0, 0, 0)
                .expect("midnight"),
        }
    }

    fn label(self, t: NaiveDateTime) -> String {
        match self {
            Interval::Realtime => t.format("%Y-%m-%dT%H:%M:00").to_string(),
            Interval::Hourly => t.format("%Y-%m-%dT%H:00:00").to_string(),
            _ => t.format("%Y-%m-%d").to_string(),
        }
    }
}

/// Which time events are bucketed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeBasis {
    /// The event's time, in the project's time zone (Amplitude's charts).
    Event,
    /// The server upload time in UTC (lethe's `lethe_time=upload`: what tasks select by).
    Upload,
}

impl TimeBasis {
    fn column(self) -> &'static str {
        match self {
            TimeBasis::Event => base_column::EVENT_TIME,
            TimeBasis::Upload => base_column::SERVER_UPLOAD_TIME,
        }
    }
}

/// One event the query counts (`e` or `e2`).
#[derive(Debug, Clone, PartialEq)]
struct EventQuery {
    /// `None` for `_all`; `_active` is `None` with `active_only`.
    event_type: Option<String>,
    active_only: bool,
    filters: Vec<Filter>,
    group_by: Option<Property>,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
struct Segmentation {
    events: Vec<EventQuery>,
    metric: Metric,
    users: Users,
    basis: TimeBasis,
    zone: Tz,
    interval: Interval,
    /// Bucket starts (local time), and the query's `[from, to)` in UTC ms.
    buckets: Vec<NaiveDateTime>,
    from: i64,
    to: i64,
    limit: usize,
}

fn parse_date(field: &str, text: Option<&String>) -> Result<NaiveDate, ApiError> {
    let text = text.ok_or_else(|| bad(field, format!("{field} is required (YYYYMMDD)")))?;
    NaiveDate::parse_from_str(text, "%Y%m%d")
        .map_err(|_| bad(field, format!("{field} must be a date, YYYYMMDD")))
}

/// UTC ms of a local time in `zone` (the earliest instant, across a DST change).
fn utc_ms(zone: Tz, t: NaiveDateTime) -> i64 {
    zone.from_local_datetime(&t)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(t + Duration::hours(1)))
                .earliest()
        })
        .map_or(0, |t| t.timestamp_millis())
}

fn parse_op(field: &str, op: Option<&str>) -> Result<Op, ApiError> {
    Ok(match op.unwrap_or("is") {
        "is" => Op::Is,
        "is not" => Op::IsNot,
        "contains" => Op::Contains,
        "does not contain" => Op::DoesNotContain,
        "less" => Op::Less,
        "less or equal" => Op::LessOrEqual,
        "greater" => Op::Greater,
        "greater or equal" => Op::GreaterOrEqual,
        other => return Err(bad(field, format!("operator {other:?} is not supported"))),
    })
}

fn text_values(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().map(plain).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![plain(other)],
    }
}

/// A JSON value as the text it is compared by.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses `e` or `e2`: the event, its filters and its group-by.
fn parse_event(field: &str, text: &str) -> Result<EventQuery, ApiError> {
    let e: Value = serde_json::from_str(text).map_err(|_| {
        bad(
            field,
            format!("{field} must be a JSON object with event_type"),
        )
    })?;
    let (event_type, active_only) = match e.get("event_type").and_then(Value::as_str) {
        Some("_all") => (None, false),
        Some("_active") => (None, true),
        Some(name @ ("revenue_amount" | "verified_revenue" | "unverified_revenue")) => {
            return Err(bad(field, format!("{name} is not supported")))
        }
        Some(name) if !name.is_empty() => (
            Some(name.strip_prefix("ce:").unwrap_or(name).to_string()),
            false,
        ),
        _ => return Err(bad(field, format!("{field}.event_type is required"))),
    };
    let mut filters = Vec::new();
    for f in e
        .get("filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = f
            .get("subprop_key")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(field, "each filter needs subprop_key"))?;
        let kind = f.get("subprop_type").and_then(Value::as_str);
        filters.push(Filter {
            property: property(field, kind.or(Some("event")), key)?,
            op: parse_op(field, f.get("subprop_op").and_then(Value::as_str))?,
            values: text_values(f.get("subprop_value")),
        });
    }
    let group_by = match e.get("group_by") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if list.len() > 1 => {
            return Err(bad(field, "one group-by is supported, not two"))
        }
        Some(Value::Array(list)) => match list.first() {
            None => None,
            Some(g) => {
                let key = g
                    .get("value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(field, "a group_by needs type and value"))?;
                let kind = g.get("type").and_then(Value::as_str).unwrap_or("event");
                Some(property(field, Some(kind), key)?)
            }
        },
        Some(_) => return Err(bad(field, "group_by must be a list")),
    };
    Ok(EventQuery {
        event_type,
        active_only,
        filters,
        group_by,
    })
}

impl Segmentation {
    fn parse(p: &Params, project_zone: Tz) -> Result<Self, ApiError> {
        if let Some(unknown) = p.keys().find(|k| !KNOWN_PARAMS.contains(&k.as_str())) {
            return Err(bad(
                unknown,
                format!("parameter {unknown} is not supported"),
            ));
        }
        let e = p
            .get("e")
            .ok_or_else(|| bad("e", "e is required: {\"event_type\": \"_all\"}"))?;
        let mut events = vec![parse_event("e", e)?];
        if let Some(e2) = p.get("e2") {
            events.push(parse_event("e2", e2)?);
        }
        let mut segments = Vec::new();
        if let Some(s) = p.get("s") {
            let list: Value =
                serde_json::from_str(s).map_err(|_| bad("s", "s must be a JSON array"))?;
            for seg in list.as_array().into_iter().flatten() {
                let key = seg
                    .get("prop")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("s", "each segment needs prop"))?;
                segments.push(Filter {
                    property: property("s", Some("user"), key)?,
                    op: parse_op("s", seg.get("op").and_then(Value::as_str))?,
                    values: text_values(seg.get("values")),
                });
            }
        }
        if let Some(g) = p.get("g") {
            let g = property("g", Some("user"), g)?;
            for e in &mut events {
                if e.group_by.is_some() {
                    return Err(bad(
                        "g",
                        "one group-by is supported: g or e.group_by, not both",
                    ));
                }
                e.group_by = Some(g.clone());
            }
        }
        for e in &mut events {
            e.filters.extend(segments.iter().cloned());
        }
        let metric = match p.get("m").map_or("uniques", String::as_str) {
            "totals" => Metric::Totals,
            "uniques" => Metric::Uniques,
            "pct_dau" => Metric::PctDau,
            "average" => Metric::Average,
            "sums" => Metric::Sums,
            other => {
                return Err(bad(
                    "m",
                    format!(
                        "m={other} is not supported: use totals, uniques, pct_dau, average or sums"
                    ),
                ))
            }
        };
        if metric == Metric::Sums && events.iter().any(|e| e.group_by.is_none()) {
            return Err(bad(
                "m",
                "m=sums sums the group-by property: give it in e.group_by or g",
            ));
        }
        let users = match p.get("n").map_or("any", String::as_str) {
            "any" => Users::Any,
            "active" => Users::Active,
            "new" => Users::New,
            other => {
                return Err(bad(
                    "n",
                    format!("n={other} is not supported: use any, active or new"),
                ))
            }
        };
        let (basis, zone) = match p.get("lethe_time").map_or("event", String::as_str) {
            "event" => (TimeBasis::Event, project_zone),
            "upload" => (TimeBasis::Upload, Tz::UTC),
            other => {
                return Err(bad(
                    "lethe_time",
                    format!("lethe_time={other} is not supported: use event or upload"),
                ))
            }
        };
        let (start, end) = (
            parse_date("start", p.get("start"))?,
            parse_date("end", p.get("end"))?,
        );
        if end < start {
            return Err(bad("end", "end must not be before start"));
        }
        let days = (end - start).num_days() + 1;
        let (interval, max_days) = match p.get("i").map_or("1", String::as_str) {
            "-300000" => (Interval::Realtime, MAX_REALTIME_DAYS),
            "-3600000" => (Interval::Hourly, MAX_HOURLY_DAYS),
            "1" => (Interval::Daily, MAX_DAILY_DAYS),
            "7" => (Interval::Weekly, MAX_LONG_DAYS),
            "30" => (Interval::Monthly, MAX_LONG_DAYS),
            other => {
                return Err(bad(
                    "i",
                    format!("i={other} is not supported: use -300000, -3600000, 1, 7 or 30"),
                ))
            }
        };
        if days > max_days {
            return Err(bad(
                "end",
                format!("this interval covers at most {max_days} days"),
            ));
        }
        let limit = match p.get("limit") {
            None => 100,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| bad("limit", "limit must be 1 to 1000"))?,
        };
        let first = start.and_hms_opt(0, 0, 0).expect("midnight");
        let last = (end + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight");
        let mut buckets = Vec::new();
        let mut t = interval.floor(first);
        while t < last {
            buckets.push(t);
            t = interval.next(t);
        }
        Ok(Self {
            events,
            metric,
            users,
            basis,
            zone,
            interval,
            buckets,
            from: utc_ms(zone, first),
            to: utc_ms(zone, last),
            limit,
        })
    }

    /// The bucket of an instant, if it is in the query's range.
    fn bucket(&self, ms: i64) -> Option<usize> {
        if ms < self.from || ms >= self.to {
            return None;
        }
        let local = self.zone.timestamp_millis_opt(ms).single()?.naive_local();
        self.buckets.partition_point(|b| *b <= local).checked_sub(1)
    }

    /// Every property the query reads.
    fn properties(&self) -> impl Iterator<Item = &Property> {
        self.events.iter().flat_map(|e| {
            e.filters
                .iter()
                .map(|f| &f.property)
                .chain(e.group_by.iter())
        })
    }

    fn answer(&self, app: &App, project_id: i64) -> Result<Value, ApiError> {
        let mut columns = vec![base_column::EVENT_TYPE, base_column::AMPLITUDE_ID];
        let mut properties = Vec::new();
        for property in self.properties() {
            match property {
                Property::Event(key) => properties.push((PropertyKind::Event, key.as_str())),
                Property::User(key) => properties.push((PropertyKind::User, key.as_str())),
                Property::Builtin(column) => columns.push(column),
            }
        }
        let scanned = app.store.scan(
            project_id,
            &ScanRequest {
                columns: &columns,
                properties: &properties,
                time: self.basis.column(),
                window: (self.from, self.to),
            },
        )?;
        let first_seen = match self.users {
            Users::New => Some(self.first_seen(app, project_id)?),
            _ => None,
        };
        let mut tally = Tally::new(self);
        for batch in &scanned.batches {
            tally.add(self, &scanned, batch, first_seen.as_ref());
        }
        Ok(tally.render(self))
    }

    /// Each user's first bucket ever (for `n=new`): the earliest event of all stored data.
    fn first_seen(&self, app: &App, project_id: i64) -> Result<HashMap<i64, i64>, ApiError> {
        let scanned = app.store.scan(
            project_id,
            &ScanRequest {
                columns: &[base_column::AMPLITUDE_ID],
                properties: &[],
                time: self.basis.column(),
                window: (i64::MIN, i64::MAX),
            },
        )?;
        let mut first: HashMap<i64, i64> = HashMap::new();
        for batch in &scanned.batches {
            if let (Some(ids), Some(times)) = (
                int_column(batch, base_column::AMPLITUDE_ID),
                time_column(batch, self.basis),
            ) {
                for row in 0..batch.num_rows() {
                    let t = first.entry(ids.value(row)).or_insert(i64::MAX);
                    *t = (*t).min(times.value(row));
                }
            }
        }
        Ok(first)
    }
}

fn int_column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a Int64Array> {
    batch
        .column_by_name(name)?
        .as_any()
        .downcast_ref::<Int64Array>()
}

/// One query event's values in a batch: each filter's property, and the group-by's.
type EventValues = (Vec<Option<StringArray>>, Option<Option<StringArray>>);

fn time_column(batch: &RecordBatch, basis: TimeBasis) -> Option<&TimestampMillisecondArray> {
    batch
        .column_by_name(basis.column())?
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
}

/// Where each property the query reads lives in segments: `e_<id>` / `u_<id>` by catalog id,
/// or a standard column. A key the catalog lacks yet (only in unflushed events) gets a
/// negative id that no segment has.
/// A query property's values in a scanned batch, one per row.
fn values(scanned: &Scanned, batch: &RecordBatch, property: &Property) -> Option<StringArray> {
    match property {
        Property::Event(key) => scanned.values(batch, PropertyKind::Event, key),
        Property::User(key) => scanned.values(batch, PropertyKind::User, key),
        Property::Builtin(column) => batch
            .column_by_name(column)
            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
            .cloned(),
    }
}

/// Stored property values are JSON texts (standard fields plain text); strings compare
/// without their quotes.
fn cell(array: Option<&StringArray>, row: usize) -> Option<String> {
    let a = array?;
    if a.is_null(row) {
        return None;
    }
    let raw = a.value(row);
    Some(match serde_json::from_str::<Value>(raw) {
        Ok(v) => plain(&v),
        Err(_) => raw.to_string(),
    })
}

fn passes(f: &Filter, value: Option<&str>) -> bool {
    let number = |s: &str| s.parse::<f64>().ok();
    let compare = |ok: fn(f64, f64) -> bool| {
        value
            .and_then(number)
            .is_some_and(|v| f.values.iter().filter_map(|t| number(t)).any(|t| ok(v, t)))
    };
    let contains = || {
        value.is_some_and(|v| {
            let v = v.to_lowercase();
            f.values.iter().any(|t| v.contains(&t.to_lowercase()))
        })
    };
    match f.op {
        Op::Is => value.is_some_and(|v| f.values.iter().any(|t| t == v)),
        Op::IsNot => !value.is_some_and(|v| f.values.iter().any(|t| t == v)),
        Op::Contains => contains(),
        Op::DoesNotContain => !contains(),
        Op::Less => compare(|v, t| v < t),
        Op::LessOrEqual => compare(|v, t| v <= t),
        Op::Greater => compare(|v, t| v > t),
        Op::GreaterOrEqual => compare(|v, t| v >= t),
    }
}

/// Counts of one series (an event and a group-by value) per bucket.
#[derive(Default)]
struct Series {
    events: BTreeMap<usize, u64>,
    users: BTreeMap<usize, HashSet<i64>>,
    sums: BTreeMap<usize, f64>,
    all_users: HashSet<i64>,
    total: u64,
    sum: f64,
}

/// Every series, and the users active per bucket (for `pct_dau`).
struct Tally {
    series: Vec<BTreeMap<String, Series>>,
    active: BTreeMap<usize, HashSet<i64>>,
    all_active: HashSet<i64>,
}

const NONE_LABEL: &str = "(none)";

impl Tally {
    fn new(q: &Segmentation) -> Self {
        Tally {
            series: q.events.iter().map(|_| BTreeMap::new()).collect(),
            active: BTreeMap::new(),
            all_active: HashSet::new(),
        }
    }

    fn add(
        &mut self,
        q: &Segmentation,
        scanned: &Scanned,
        batch: &RecordBatch,
        first_seen: Option<&HashMap<i64, i64>>,
    ) {
        let text = |name: Option<String>| {
            name.and_then(|n| batch.column_by_name(&n))
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        };
        let (Some(types), Some(times), Some(users)) = (
            text(Some(base_column::EVENT_TYPE.to_string())),
            time_column(batch, q.basis),
            int_column(batch, base_column::AMPLITUDE_ID),
        ) else {
            return;
        };
        let values: Vec<EventValues> = q
            .events
            .iter()
            .map(|e| {
                let filters = e
                    .filters
                    .iter()
                    .map(|f| values(scanned, batch, &f.property))
                    .collect();
                let group = e.group_by.as_ref().map(|g| values(scanned, batch, g));
                (filters, group)
            })
            .collect();
        let per_event: Vec<_> = q
            .events
            .iter()
            .zip(&values)
            .map(|(e, (filter_values, group_values))| {
                let filters: Vec<(&Filter, Option<&StringArray>)> = e
                    .filters
                    .iter()
                    .zip(filter_values)
                    .map(|(f, v)| (f, v.as_ref()))
                    .collect();
                let group = group_values.as_ref().map(Option::as_ref);
                (e, filters, group)
            })
            .collect();
        for row in 0..batch.num_rows() {
            let Some(bucket) = q.bucket(times.value(row)) else {
                continue;
            };
            let event_type = types.value(row);
            let user = users.value(row);
            let inactive = INACTIVE_TYPES.contains(&event_type);
            if q.users == Users::Active && inactive {
                continue;
            }
            if let Some(first) = first_seen {
                let new = first
                    .get(&user)
                    .and_then(|t| q.bucket(*t))
                    .is_some_and(|b| b == bucket);
                if !new {
                    continue;
                }
            }
            if !inactive {
                self.active.entry(bucket).or_default().insert(user);
                self.all_active.insert(user);
            }
            for (index, (e, filters, group)) in per_event.iter().enumerate() {
                let matches_type = match &e.event_type {
                    Some(t) => t == event_type,
                    None => !(e.active_only && inactive),
                };
                if !matches_type
                    || !filters
                        .iter()
                        .all(|(f, col)| passes(f, cell(*col, row).as_deref()))
                {
                    continue;
                }
                let value = group.map(|col| cell(col, row));
                let label = match (&value, q.metric) {
                    (_, Metric::Sums) | (None, _) => String::new(),
                    (Some(v), _) => v.clone().unwrap_or_else(|| NONE_LABEL.to_string()),
                };
                let s = self.series[index].entry(label).or_default();
                *s.events.entry(bucket).or_default() += 1;
                s.total += 1;
                s.users.entry(bucket).or_default().insert(user);
                s.all_users.insert(user);
                if q.metric == Metric::Sums {
                    let n = value
                        .flatten()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    *s.sums.entry(bucket).or_default() += n;
                    s.sum += n;
                }
            }
        }
    }

    /// One value of a series: in bucket `b`, or over the whole range (`None`).
    fn value(&self, q: &Segmentation, s: &Series, b: Option<usize>) -> Value {
        let (events, users, sum, active) = match b {
            Some(b) => (
                s.events.get(&b).copied().unwrap_or(0),
                s.users.get(&b).map_or(0, HashSet::len),
                s.sums.get(&b).copied().unwrap_or(0.0),
                self.active.get(&b).map_or(0, HashSet::len),
            ),
            None => (s.total, s.all_users.len(), s.sum, self.all_active.len()),
        };
        let ratio = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
        match q.metric {
            Metric::Totals => json!(events),
            Metric::Uniques => json!(users),
            Metric::Average => json!(ratio(events as f64, users)),
            Metric::PctDau => json!(ratio(users as f64 * 100.0, active)),
            Metric::Sums => json!(sum),
        }
    }

    fn render(self, q: &Segmentation) -> Value {
        let x_values: Vec<String> = q.buckets.iter().map(|b| q.interval.label(*b)).collect();
        let grouped = q.events.iter().any(|e| e.group_by.is_some()) && q.metric != Metric::Sums;
        let mut rows: Vec<(Value, Vec<Value>, Value)> = Vec::new();
        let (blank, empty) = (String::new(), Series::default());
        for (index, series) in self.series.iter().enumerate() {
            let mut list: Vec<(&String, &Series)> = series.iter().collect();
            if list.is_empty() && !grouped {
                list.push((&blank, &empty));
            }
            let rank = |s: &Series| s.total;
            list.sort_by(|a, b| rank(b.1).cmp(&rank(a.1)).then(a.0.cmp(b.0)));
            list.truncate(q.limit);
            for (label, s) in list {
                let label = match (grouped, q.events.len()) {
                    (false, _) => json!(index),
                    (true, 1) => json!(label),
                    (true, _) => json!([index, label]),
                };
                let values = (0..q.buckets.len())
                    .map(|b| self.value(q, s, Some(b)))
                    .collect();
                rows.push((label, values, self.value(q, s, None)));
            }
        }
        json!({ "data": {
            "series": rows.iter().map(|r| &r.1).collect::<Vec<_>>(),
            "seriesLabels": rows.iter().map(|r| &r.0).collect::<Vec<_>>(),
            "seriesCollapsed": rows.iter().map(|r| json!([{ "setId": "", "value": r.2 }])).collect::<Vec<_>>(),
            "xValues": x_values,
        }})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(e: &str, extra: &[(&str, &str)]) -> Params {
        let mut p: Params = [("e", e), ("start", "20260101"), ("end", "20260103")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in extra {
            p.insert(k.to_string(), v.to_string());
        }
        p
    }

    fn parse(p: &Params) -> Result<Segmentation, ApiError> {
        Segmentation::parse(p, Tz::UTC)
    }

    /// Parameter text: well-formed pieces, JSON of any shape, and noise.
    fn param() -> impl proptest::strategy::Strategy<Value = Option<String>> {
        use proptest::prelude::*;
        let json_text = prop_oneof![
            Just(r#"{"event_type":"_all"}"#.to_string()),
            Just(r#"{"event_type":"ce:x","filters":[{"subprop_type":"event","subprop_key":"k","subprop_op":"is","subprop_value":["a"]}],"group_by":[{"type":"user","value":"gp:p"}]}"#.to_string()),
            Just(r#"[{"prop":"country","op":"is","values":["x"]}]"#.to_string()),
            Just(r#"{"filters":[{}],"group_by":[{}, 5, null]}"#.to_string()),
            Just("20260101".to_string()),
            Just("-3600000".to_string()),
            Just("uniques".to_string()),
            Just("new".to_string()),
            "[ -~]{0,24}",
            "\\PC{0,8}",
        ];
        proptest::option::of(json_text)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        /// A bounded fuzz of the segmentation parameters: parsed, or refused naming a field.
        #[test]
        fn any_parameters_are_parsed_or_refused_naming_the_field(
            e in param(), e2 in param(), m in param(), n in param(), start in param(),
            end in param(), i in param(), s in param(), g in param(), limit in param(),
        ) {
            let named = [("e", e), ("e2", e2), ("m", m), ("n", n), ("start", start), ("end", end),
                         ("i", i), ("s", s), ("g", g), ("limit", limit)];
            let params: Params = named
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect();
            if let Err(err) = parse(&params) {
                proptest::prop_assert!(err.field.is_some(), "{}", err.message);
                proptest::prop_assert_eq!(err.status.as_u16(), 400);
            }
        }
    }

    #[test]
    fn parses_amplitude_forms_and_names_the_bad_field() {
        let q = parse(&params(
            r#"{"event_type":"ce:Sign Up","filters":[{"subprop_type":"user","subprop_key":"gp:plan","subprop_op":"is not","subprop_value":["free"]},{"subprop_type":"user","subprop_key":"country","subprop_value":["DE"]}],"group_by":[{"type":"event","value":"source"}]}"#,
            &[("m", "totals"), ("i", "-3600000")],
        ))
        .unwrap();
        let e = &q.events[0];
        assert_eq!(e.event_type.as_deref(), Some("Sign Up"));
        assert_eq!(e.filters[0].property, Property::User("plan".into()));
        assert_eq!(e.filters[0].op, Op::IsNot);
        assert_eq!(e.filters[1].property, Property::Builtin("country"));
        assert_eq!(e.group_by, Some(Property::Event("source".into())));
        assert_eq!((q.interval, q.buckets.len()), (Interval::Hourly, 72));
        assert_eq!(q.to - q.from, 3 * 86_400_000);
        let all = r#"{"event_type":"_all"}"#;
        for (p, field) in [
            (params("{}", &[]), "e"),
            (params("not json", &[]), "e"),
            (params(all, &[("m", "formula")]), "m"),
            (params(all, &[("m", "sums")]), "m"),
            (params(all, &[("i", "14")]), "i"),
            (params(all, &[("n", "returning")]), "n"),
            (params(all, &[("g2", "country")]), "g2"),
            (params(all, &[("rollingWindow", "7")]), "rollingWindow"),
            (params(all, &[("g", "favourite_colour")]), "g"),
            (
                params(all, &[("s", r#"[{"prop":"plan","values":["x"]}]"#)]),
                "s",
            ),
            (
                params(all, &[("e2", r#"{"event_type":"revenue_amount"}"#)]),
                "e2",
            ),
            (
                params(
                    r#"{"event_type":"_all","group_by":[{"type":"event","value":"a"},{"type":"event","value":"b"}]}"#,
                    &[],
                ),
                "e",
            ),
            (params(all, &[("start", "2026-01-01")]), "start"),
            (params(all, &[("end", "20251231")]), "end"),
            (
                params(all, &[("i", "-3600000"), ("end", "20260131")]),
                "end",
            ),
            (params(all, &[("lethe_time", "client")]), "lethe_time"),
        ] {
            let err = parse(&p).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{}", err.message);
        }
    }

    #[test]
    fn buckets_follow_the_interval_and_the_time_zone() {
        let all = r#"{"event_type":"_all"}"#;
        let week = parse(&params(
            all,
            &[("i", "7"), ("start", "20260101"), ("end", "20260114")],
        ))
        .unwrap();
        // 2026-01-01 is a Thursday: its week began on Sunday 2025-12-28.
        let labels: Vec<String> = week
            .buckets
            .iter()
            .map(|b| week.interval.label(*b))
            .collect();
        assert_eq!(labels, ["2025-12-28", "2026-01-04", "2026-01-11"]);
        let month = parse(&params(
            all,
            &[("i", "30"), ("start", "20260115"), ("end", "20260301")],
        ))
        .unwrap();
        assert_eq!(month.buckets.len(), 3);
        let p = params(all, &[("start", "20260301"), ("end", "20260301")]);
        let berlin = Segmentation::parse(&p, "Europe/Berlin".parse().unwrap()).unwrap();
        // Midnight in Berlin is 23:00 UTC the day before (CET).
        assert_eq!(berlin.from, 1_772_319_600_000);
        assert_eq!(berlin.bucket(berlin.from), Some(0));
        assert_eq!(berlin.bucket(berlin.from - 1), None);
    }

    #[test]
    fn filters_compare_text_numbers_and_substrings() {
        let f = |op, values: &[&str]| Filter {
            property: Property::Event("k".into()),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        assert!(passes(&f(Op::Is, &["US", "DE"]), Some("DE")));
        assert!(!passes(&f(Op::Is, &["US"]), None));
        assert!(passes(&f(Op::IsNot, &["US"]), None));
        assert!(passes(&f(Op::Contains, &["mail"]), Some("Email Sent")));
        assert!(passes(&f(Op::DoesNotContain, &["x"]), Some("abc")));
        assert!(passes(&f(Op::Greater, &["9"]), Some("10")));
        assert!(!passes(&f(Op::Less, &["9"]), Some("10")));
        assert!(passes(&f(Op::LessOrEqual, &["10"]), Some("10")));
        assert!(!passes(&f(Op::GreaterOrEqual, &["1"]), Some("n/a")));
    }
}
