//! Event segmentation (Amplitude's Dashboard REST `GET /api/2/events/segmentation`): event
//! counts or unique users per day or hour, for one event (or all), with property filters
//! and one group-by. The console's data chart uses the same query under the management API.
//!
//! lethe buckets by server upload time in UTC: the time deletion tasks select by, so the
//! chart shows exactly what a task over a range would touch.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{NaiveDate, NaiveDateTime};
use lethe_meta::CatalogKind;
use lethe_store::{events_to_batch, parallel_map, read_batches};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{ProjectKey, Session};
use crate::{blocking, ApiError, App};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Amplitude's limits: hourly covers at most 7 days, daily at most 365.
const MAX_HOURLY_DAYS: i64 = 7;
const MAX_DAILY_DAYS: i64 = 366;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/2/events/segmentation", get(by_key))
        .route("/api/v1/projects/{id}/events/segmentation", get(by_session))
}

#[derive(Deserialize)]
struct Params {
    e: Option<String>,
    m: Option<String>,
    start: Option<String>,
    end: Option<String>,
    i: Option<String>,
    s: Option<String>,
    g: Option<String>,
    limit: Option<String>,
}

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
    let query = Segmentation::parse(&params)?;
    blocking(move || {
        app.meta
            .project(project_id)?
            .ok_or_else(|| ApiError::not_found("project"))?;
        Ok(Json(query.answer(&app, project_id)?))
    })
    .await
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, field, message)
}

/// Whether a property is an event's or its user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Event,
    User,
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
    scope: Scope,
    key: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Metric {
    Totals,
    Uniques,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
struct Segmentation {
    /// `None` for `_all` / `_active`.
    event_type: Option<String>,
    filters: Vec<Filter>,
    group_by: Option<(Scope, String)>,
    metric: Metric,
    /// `[from, to)` in ms, and the bucket width.
    from: i64,
    to: i64,
    bucket: i64,
    limit: usize,
}

fn parse_date(field: &str, text: Option<&str>) -> Result<NaiveDate, ApiError> {
    let text = text.ok_or_else(|| bad(field, format!("{field} is required (YYYYMMDD)")))?;
    NaiveDate::parse_from_str(text, "%Y%m%d")
        .map_err(|_| bad(field, format!("{field} must be a date, YYYYMMDD")))
}

fn midnight_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .unwrap_or(NaiveDateTime::MIN)
        .and_utc()
        .timestamp_millis()
}

/// A property key: `gp:name` (or a `user` type) is a user property.
fn scoped(kind: Option<&str>, key: &str) -> Scope {
    match (kind, key.starts_with("gp:")) {
        (Some("user"), _) | (_, true) => Scope::User,
        _ => Scope::Event,
    }
}

fn strip_gp(key: &str) -> String {
    key.strip_prefix("gp:").unwrap_or(key).to_string()
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

impl Segmentation {
    fn parse(p: &Params) -> Result<Self, ApiError> {
        let e: Value = match &p.e {
            Some(text) => serde_json::from_str(text)
                .map_err(|_| bad("e", "e must be a JSON object with event_type"))?,
            None => return Err(bad("e", "e is required: {\"event_type\": \"_all\"}")),
        };
        let event_type = match e.get("event_type").and_then(Value::as_str) {
            Some("_all" | "_active") => None,
            Some(name) if !name.is_empty() => Some(name.strip_prefix("ce:").unwrap_or(name).into()),
            _ => return Err(bad("e", "e.event_type is required")),
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
                .ok_or_else(|| bad("e", "each filter needs subprop_key"))?;
            filters.push(Filter {
                scope: scoped(f.get("subprop_type").and_then(Value::as_str), key),
                key: strip_gp(key),
                op: parse_op("e", f.get("subprop_op").and_then(Value::as_str))?,
                values: text_values(f.get("subprop_value")),
            });
        }
        if let Some(s) = &p.s {
            let segments: Value =
                serde_json::from_str(s).map_err(|_| bad("s", "s must be a JSON array"))?;
            for seg in segments.as_array().into_iter().flatten() {
                let key = seg
                    .get("prop")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("s", "each segment needs prop"))?;
                filters.push(Filter {
                    scope: Scope::User,
                    key: strip_gp(key),
                    op: parse_op("s", seg.get("op").and_then(Value::as_str))?,
                    values: text_values(seg.get("values")),
                });
            }
        }
        let group_by = match (&p.g, e.get("group_by").and_then(Value::as_array)) {
            (Some(g), _) => Some((Scope::User, strip_gp(g))),
            (None, Some(list)) => list.first().and_then(|g| {
                let key = g.get("value")?.as_str()?;
                Some((
                    scoped(g.get("type").and_then(Value::as_str), key),
                    strip_gp(key),
                ))
            }),
            _ => None,
        };
        let metric = match p.m.as_deref().unwrap_or("uniques") {
            "totals" => Metric::Totals,
            "uniques" => Metric::Uniques,
            other => {
                return Err(bad(
                    "m",
                    format!("m={other} is not supported: use totals or uniques"),
                ))
            }
        };
        let (start, end) = (
            parse_date("start", p.start.as_deref())?,
            parse_date("end", p.end.as_deref())?,
        );
        if end < start {
            return Err(bad("end", "end must not be before start"));
        }
        let days = (end - start).num_days() + 1;
        let bucket = match p.i.as_deref().unwrap_or("1") {
            "1" if days <= MAX_DAILY_DAYS => DAY_MS,
            "1" => return Err(bad("end", "a daily query covers at most 365 days")),
            "-3600000" if days <= MAX_HOURLY_DAYS => HOUR_MS,
            "-3600000" => return Err(bad("end", "an hourly query covers at most 7 days")),
            other => {
                return Err(bad(
                    "i",
                    format!("i={other} is not supported: use 1 (daily) or -3600000 (hourly)"),
                ))
            }
        };
        let limit = match &p.limit {
            None => 100,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| bad("limit", "limit must be 1 to 1000"))?,
        };
        Ok(Self {
            event_type,
            filters,
            group_by,
            metric,
            from: midnight_ms(start),
            to: midnight_ms(end) + DAY_MS,
            bucket,
            limit,
        })
    }

    /// The property keys the query reads, by scope.
    fn keys(&self) -> impl Iterator<Item = (Scope, &String)> {
        self.filters
            .iter()
            .map(|f| (f.scope, &f.key))
            .chain(self.group_by.iter().map(|(s, k)| (*s, k)))
    }

    fn answer(&self, app: &App, project_id: i64) -> Result<Value, ApiError> {
        let columns = Columns::resolve(app, project_id, self)?;
        let snapshot = app.store.snapshot(project_id, Some((self.from, self.to)));
        let mut tally = Tally::default();
        let read = columns.read_list();
        for batches in parallel_map(snapshot.segments.iter().collect(), |s| {
            read_batches(s.file()?, Some(&read))
        }) {
            for batch in batches? {
                tally.add(self, &columns, &batch);
            }
        }
        if !snapshot.memtable.is_empty() {
            let (event_ids, user_ids) = columns.id_maps();
            let memtable = events_to_batch(&snapshot.memtable, &event_ids, &user_ids)?;
            tally.add(self, &columns, &memtable);
        }
        Ok(tally.render(self))
    }
}

/// Where each property the query reads lives in segments: `e_<id>` / `u_<id>`, by catalog
/// id. A key the catalog lacks yet (only in unflushed events) gets a negative id that no
/// segment has.
struct Columns {
    ids: HashMap<(Scope, String), i64>,
}

impl Scope {
    fn prefix(self) -> &'static str {
        match self {
            Scope::Event => "e_",
            Scope::User => "u_",
        }
    }
}

impl Columns {
    fn resolve(app: &App, project_id: i64, q: &Segmentation) -> Result<Self, ApiError> {
        let event_ids = app
            .meta
            .catalog_ids(project_id, CatalogKind::EventProperty)?;
        let user_ids = app
            .meta
            .catalog_ids(project_id, CatalogKind::UserProperty)?;
        let mut ids = HashMap::new();
        for (scope, key) in q.keys() {
            let catalog = match scope {
                Scope::Event => &event_ids,
                Scope::User => &user_ids,
            };
            let id = catalog.get(key).copied().unwrap_or(-(ids.len() as i64) - 1);
            ids.insert((scope, key.clone()), id);
        }
        Ok(Self { ids })
    }

    fn column(&self, scope: Scope, key: &str) -> Option<String> {
        let id = self.ids.get(&(scope, key.to_string()))?;
        Some(format!("{}{id}", scope.prefix()))
    }

    fn read_list(&self) -> Vec<String> {
        let mut list: Vec<String> = ["event_type", "server_upload_time", "amplitude_id"]
            .map(String::from)
            .to_vec();
        list.extend(self.ids.keys().filter_map(|(s, k)| self.column(*s, k)));
        list
    }

    /// Key → id maps that make unflushed events use the same column names.
    fn id_maps(&self) -> (HashMap<String, i64>, HashMap<String, i64>) {
        let pick = |scope| {
            self.ids
                .iter()
                .filter(|((s, _), _)| *s == scope)
                .map(|((_, k), id)| (k.clone(), *id))
                .collect()
        };
        (pick(Scope::Event), pick(Scope::User))
    }
}

/// Stored property values are JSON texts; strings compare without their quotes.
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

/// Counts per group and bucket, and the users behind them.
#[derive(Default)]
struct Tally {
    groups: BTreeMap<String, Group>,
}

#[derive(Default)]
struct Group {
    events: BTreeMap<i64, u64>,
    users: BTreeMap<i64, HashSet<i64>>,
    all_users: HashSet<i64>,
    total: u64,
}

const NONE_LABEL: &str = "(none)";

impl Tally {
    fn add(&mut self, q: &Segmentation, columns: &Columns, batch: &RecordBatch) {
        let text = |name: Option<String>| {
            name.and_then(|n| batch.column_by_name(&n))
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        };
        let (Some(types), Some(times), Some(users)) = (
            text(Some("event_type".to_string())),
            batch
                .column_by_name("server_upload_time")
                .and_then(|a| a.as_any().downcast_ref::<TimestampMillisecondArray>()),
            batch
                .column_by_name("amplitude_id")
                .and_then(|a| a.as_any().downcast_ref::<Int64Array>()),
        ) else {
            return;
        };
        let filters: Vec<(&Filter, Option<&StringArray>)> = q
            .filters
            .iter()
            .map(|f| (f, text(columns.column(f.scope, &f.key))))
            .collect();
        let group = q
            .group_by
            .as_ref()
            .map(|(scope, key)| text(columns.column(*scope, key)));
        for row in 0..batch.num_rows() {
            let t = times.value(row);
            if t < q.from || t >= q.to {
                continue;
            }
            if q.event_type
                .as_deref()
                .is_some_and(|e| e != types.value(row))
            {
                continue;
            }
            if !filters
                .iter()
                .all(|(f, col)| passes(f, cell(*col, row).as_deref()))
            {
                continue;
            }
            let label = match group {
                Some(col) => cell(col, row).unwrap_or_else(|| NONE_LABEL.to_string()),
                None => String::new(),
            };
            let g = self.groups.entry(label).or_default();
            let bucket = (t - q.from) / q.bucket;
            *g.events.entry(bucket).or_default() += 1;
            g.total += 1;
            if q.metric == Metric::Uniques {
                g.users.entry(bucket).or_default().insert(users.value(row));
                g.all_users.insert(users.value(row));
            }
        }
    }

    fn render(mut self, q: &Segmentation) -> Value {
        let buckets = ((q.to - q.from) / q.bucket) as usize;
        let x_values: Vec<String> = (0..buckets as i64)
            .map(|b| {
                let t = chrono::DateTime::from_timestamp_millis(q.from + b * q.bucket)
                    .unwrap_or_default();
                match q.bucket {
                    DAY_MS => t.format("%Y-%m-%d").to_string(),
                    _ => t.format("%Y-%m-%dT%H:00:00").to_string(),
                }
            })
            .collect();
        if q.group_by.is_none() && self.groups.is_empty() {
            self.groups.insert(String::new(), Group::default());
        }
        let value = |g: &Group, b: i64| match q.metric {
            Metric::Totals => g.events.get(&b).copied().unwrap_or(0),
            Metric::Uniques => g.users.get(&b).map_or(0, |u| u.len() as u64),
        };
        let collapsed = |g: &Group| match q.metric {
            Metric::Totals => g.total,
            Metric::Uniques => g.all_users.len() as u64,
        };
        let mut groups: Vec<(String, Group)> = self.groups.into_iter().collect();
        groups.sort_by(|a, b| collapsed(&b.1).cmp(&collapsed(&a.1)).then(a.0.cmp(&b.0)));
        groups.truncate(q.limit);
        let series: Vec<Vec<u64>> = groups
            .iter()
            .map(|(_, g)| (0..buckets as i64).map(|b| value(g, b)).collect())
            .collect();
        let labels: Vec<Value> = match q.group_by {
            None => vec![json!(0)],
            Some(_) => groups.iter().map(|(l, _)| json!(l)).collect(),
        };
        let collapsed: Vec<Value> = groups
            .iter()
            .map(|(_, g)| json!([{ "setId": "", "value": collapsed(g) }]))
            .collect();
        json!({ "data": {
            "series": series,
            "seriesLabels": labels,
            "seriesCollapsed": collapsed,
            "xValues": x_values,
        }})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(e: &str, extra: &[(&str, &str)]) -> Params {
        let get = |k: &str| {
            extra
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        Params {
            e: Some(e.to_string()),
            m: get("m"),
            start: Some(get("start").unwrap_or("20260101".into())),
            end: Some(get("end").unwrap_or("20260103".into())),
            i: get("i"),
            s: get("s"),
            g: get("g"),
            limit: get("limit"),
        }
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
            e in param(), m in param(), start in param(), end in param(),
            i in param(), s in param(), g in param(), limit in param(),
        ) {
            let params = Params { e, m, start, end, i, s, g, limit };
            if let Err(err) = Segmentation::parse(&params) {
                proptest::prop_assert!(err.field.is_some(), "{}", err.message);
                proptest::prop_assert_eq!(err.status.as_u16(), 400);
            }
        }
    }

    #[test]
    fn parses_amplitude_forms_and_names_the_bad_field() {
        let q = Segmentation::parse(&params(
            r#"{"event_type":"ce:Sign Up","filters":[{"subprop_type":"user","subprop_key":"gp:plan","subprop_op":"is not","subprop_value":["free"]}],"group_by":[{"type":"event","value":"source"}]}"#,
            &[("m", "totals"), ("i", "-3600000")],
        ))
        .unwrap();
        assert_eq!(q.event_type.as_deref(), Some("Sign Up"));
        assert_eq!(q.filters[0].scope, Scope::User);
        assert_eq!(q.filters[0].key, "plan");
        assert_eq!(q.filters[0].op, Op::IsNot);
        assert_eq!(q.group_by, Some((Scope::Event, "source".into())));
        assert_eq!((q.bucket, q.to - q.from), (HOUR_MS, 3 * DAY_MS));
        for (p, field) in [
            (params("{}", &[]), "e"),
            (params("not json", &[]), "e"),
            (params(r#"{"event_type":"_all"}"#, &[("m", "formula")]), "m"),
            (params(r#"{"event_type":"_all"}"#, &[("i", "7")]), "i"),
            (
                params(r#"{"event_type":"_all"}"#, &[("start", "2026-01-01")]),
                "start",
            ),
            (
                params(r#"{"event_type":"_all"}"#, &[("end", "20251231")]),
                "end",
            ),
            (
                params(
                    r#"{"event_type":"_all"}"#,
                    &[("i", "-3600000"), ("end", "20260131")],
                ),
                "end",
            ),
        ] {
            let err = Segmentation::parse(&p).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{}", err.message);
        }
    }

    #[test]
    fn filters_compare_text_numbers_and_substrings() {
        let f = |op, values: &[&str]| Filter {
            scope: Scope::Event,
            key: "k".into(),
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
