//! Amplitude's User Privacy API (`/api/2/deletions/users`): erasure requests gather into one
//! job per project and day, run on the deletion queue after the grace period, and erase
//! every event, the profile and the id mappings of each user. Also the suppression list (a
//! lethe extension) under the management API.

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use lethe_delete::privacy::{schedule_erasure, Erasure, ScheduleError};
use lethe_meta::{ErasureJob, Project, Unscheduled};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{ProjectKey, Session};
use crate::{blocking, ApiError, App};

/// Most ids one request may name (Amplitude's limit).
const MAX_IDS: usize = 100;
/// Longest range a job listing may cover (Amplitude's "six months").
const MAX_LIST_DAYS: i64 = 184;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/2/deletions/users", post(request).get(list))
        .route(
            "/api/2/deletions/users/{amplitude_id}/{day}",
            delete(unschedule),
        )
        .route("/api/v1/projects/{id}/suppressions", get(suppressions))
        .route(
            "/api/v1/projects/{id}/suppressions/{suppression}",
            delete(lift_suppression),
        )
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, field, message)
}

/// A request body: JSON, or the legacy form encoding (lists as JSON text or comma-separated).
struct Fields(Map<String, Value>);

impl FromRequest<App> for Fields {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &App) -> Result<Self, ApiError> {
        let form = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| bad("body", "could not read the request body"))?;
        if form {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                .map_err(|_| bad("body", "the form body is malformed"))?;
            return Ok(Fields(
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
                        (k, value)
                    })
                    .collect(),
            ));
        }
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            _ => Err(bad("body", "the body must be a JSON object")),
        }
    }
}

impl Fields {
    /// A boolean that may also come as `"true"`/`"false"`; `names` are accepted spellings.
    fn flag(&self, names: &[&str]) -> Result<bool, ApiError> {
        let Some((name, value)) = names.iter().find_map(|n| Some((*n, self.0.get(*n)?))) else {
            return Ok(false);
        };
        match value {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            Value::Null => Ok(false),
            _ => Err(bad(name, format!("{name} must be true or false"))),
        }
    }

    /// A list of ids: a JSON array, one value, or a comma-separated string.
    fn list(&self, name: &str) -> Vec<Value> {
        match self.0.get(name) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
            Some(other) => vec![other.clone()],
        }
    }

    fn amplitude_ids(&self) -> Result<Vec<i64>, ApiError> {
        self.list("amplitude_ids")
            .iter()
            .map(|v| match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .map(|id| {
                id.filter(|id| *id > 0)
                    .ok_or_else(|| bad("amplitude_ids", "amplitude_ids must be positive integers"))
            })
            .collect()
    }

    fn user_ids(&self) -> Result<Vec<String>, ApiError> {
        self.list("user_ids")
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad("user_ids", "user_ids must be non-empty strings")),
            })
            .collect()
    }

    fn requester(&self) -> Result<String, ApiError> {
        match self.0.get("requester") {
            None | Some(Value::Null) => Ok("unspecified".to_string()),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => {
                Ok(s.trim().to_string())
            }
            _ => Err(bad(
                "requester",
                "requester must be a string of 1 to 200 characters",
            )),
        }
    }
}

/// A request's body: the erasure, and whether it spans the organization.
struct ErasureBody {
    erasure: Erasure,
    delete_from_org: bool,
}

impl ErasureBody {
    fn parse(f: &Fields) -> Result<Self, ApiError> {
        let (amplitude_ids, user_ids) = (f.amplitude_ids()?, f.user_ids()?);
        match amplitude_ids.len() + user_ids.len() {
            0 => {
                return Err(bad(
                    "amplitude_ids",
                    "name at least one user in amplitude_ids or user_ids",
                ))
            }
            n if n > MAX_IDS => {
                return Err(bad(
                    "amplitude_ids",
                    format!("at most {MAX_IDS} ids per request, amplitude_ids and user_ids together ({n} given)"),
                ))
            }
            _ => {}
        }
        let delete_from_org = f.flag(&["delete_from_org"])?;
        Ok(Self {
            erasure: Erasure {
                amplitude_ids,
                user_ids,
                requester: f.requester()?,
                ignore_invalid: f.flag(&["ignore_invalid_id", "ignore_invalid_ids"])?
                    || delete_from_org,
                include_mapped: f.flag(&["include_mapped_user_ids"])?,
                suppress: f.flag(&["suppress"])?,
            },
            delete_from_org,
        })
    }
}

fn day_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// A job in Amplitude's shape, plus lethe's `run_at` and `task_id`.
fn render_job(job: &ErasureJob, mapped: Option<&dyn Fn(i64) -> Option<String>>) -> Value {
    let ids: Vec<Value> = job
        .requests
        .iter()
        .map(|r| {
            let mut item = json!({
                "amplitude_id": r.amplitude_id,
                "requested_on_day": day_text(r.requested_at),
                "requester": r.requester,
            });
            if let Some(user_id) = mapped.and_then(|m| m(r.amplitude_id)) {
                item["user_id"] = json!(user_id);
            }
            item
        })
        .collect();
    let mut out = json!({
        "day": job.day,
        "status": job.status,
        "amplitude_ids": ids,
        "run_at": chrono::DateTime::from_timestamp_millis(job.run_at)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let Some(task) = job.task_id {
        out["task_id"] = json!(task);
    }
    if let Some(done) = job.done_at {
        out["active_scrub_done_date"] = json!(day_text(done));
    }
    out
}

/// Who asks for an erasure: a project's keys reach that project only; erasing across the
/// organization (`delete_from_org`) takes an administrator's bearer token.
enum Requester {
    Project(Project),
    OrgAdmin(lethe_meta::User),
}

impl axum::extract::FromRequestParts<App> for Requester {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &App,
    ) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
        if bearer {
            let session = Session::from_request_parts(parts, app).await?;
            session.require_admin()?;
            return Ok(Requester::OrgAdmin(session.0));
        }
        let ProjectKey(project) = ProjectKey::from_request_parts(parts, app).await?;
        Ok(Requester::Project(project))
    }
}

impl Requester {
    /// The authenticated actor the audit records (beside the requester the body names).
    fn actor(&self) -> String {
        match self {
            Requester::Project(p) => format!("project {} api key", p.id),
            Requester::OrgAdmin(u) => u.email.clone(),
        }
    }
}

/// `POST /api/2/deletions/users`.
async fn request(
    State(app): State<App>,
    requester: Requester,
    fields: Fields,
) -> Result<Json<Value>, ApiError> {
    let ErasureBody {
        erasure,
        delete_from_org,
    } = ErasureBody::parse(&fields)?;
    let actor = requester.actor();
    let project = match (requester, delete_from_org) {
        (Requester::Project(p), false) => Some(p),
        (Requester::OrgAdmin(_), true) => None,
        (Requester::Project(_), true) => {
            return Err(ApiError::field(
                StatusCode::FORBIDDEN,
                "delete_from_org",
                "delete_from_org erases in every project: it takes an organization \
                 administrator's bearer token, not a project's keys",
            ))
        }
        (Requester::OrgAdmin(_), false) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "delete_from_org",
                "with an administrator's token set delete_from_org; for one project use its \
                 api_key:secret_key",
            ))
        }
    };
    blocking(move || {
        let projects = match project {
            None => app.meta.list_projects()?,
            Some(project) => vec![project],
        };
        let grace = app.privacy_grace.as_millis() as i64;
        let schedule = match schedule_erasure(&app.store, &app.meta, projects, &erasure, grace, &actor) {
            Ok(schedule) => schedule,
            Err(e @ ScheduleError::UnknownIds(_)) => {
                let mut err = bad("amplitude_ids", e.to_string());
                if let ScheduleError::UnknownIds(invalid) = e {
                    err.extra = Some(json!({ "invalid_ids": invalid }));
                }
                return Err(err);
            }
            Err(ScheduleError::Delete(e)) => {
                tracing::error!(error = %e, "cannot schedule an erasure");
                return Err(ApiError::internal("the erasure could not be scheduled"));
            }
        };
        // With no grace period the job is due now: the worker need not wait for its next look.
        app.queue.notify();
        let mut jobs: Vec<Value> = schedule
            .jobs
            .iter()
            .map(|s| {
                let lookup = |a: i64| s.user_ids.get(&a).cloned();
                let mut out = render_job(&s.job, erasure.include_mapped.then_some(&lookup as _));
                if delete_from_org {
                    out["app"] = json!(s.project_id.to_string());
                }
                out
            })
            .collect();
        if delete_from_org {
            return Ok(Json(Value::Array(jobs)));
        }
        let mut out = jobs.pop().unwrap_or_else(|| {
            json!({ "day": day_text(schedule.run_at), "status": lethe_meta::JobStatus::Staging, "amplitude_ids": [] })
        });
        if erasure.ignore_invalid {
            out["invalid_ids"] = json!(schedule.invalid);
        }
        Ok(Json(out))
    })
    .await
}

#[derive(Deserialize)]
struct Range {
    start_day: Option<String>,
    end_day: Option<String>,
}

/// `YYYY-MM-DD` or `YYYYMMDD`.
fn parse_day(field: &str, text: Option<&str>) -> Result<NaiveDate, ApiError> {
    let text = text.ok_or_else(|| bad(field, format!("{field} is required (YYYY-MM-DD)")))?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y%m%d"))
        .map_err(|_| bad(field, format!("{field} must be a date, YYYY-MM-DD")))
}

/// `GET /api/2/deletions/users?start_day=&end_day=`.
async fn list(
    State(app): State<App>,
    ProjectKey(project): ProjectKey,
    Query(range): Query<Range>,
) -> Result<Json<Value>, ApiError> {
    let start = parse_day("start_day", range.start_day.as_deref())?;
    let end = parse_day("end_day", range.end_day.as_deref())?;
    if end < start {
        return Err(bad("end_day", "end_day must not be before start_day"));
    }
    if (end - start).num_days() > MAX_LIST_DAYS {
        return Err(bad("end_day", "the range may cover at most 6 months"));
    }
    let (from, to) = (start.to_string(), end.to_string());
    blocking(move || {
        let jobs = app.meta.erasure_jobs(project.id, &from, &to)?;
        Ok(Json(Value::Array(
            jobs.iter().map(|j| render_job(j, None)).collect(),
        )))
    })
    .await
}

/// `DELETE /api/2/deletions/users/{amplitude_id}/{day}`: withdraws one user from a staging job.
async fn unschedule(
    State(app): State<App>,
    ProjectKey(project): ProjectKey,
    Path((amplitude_id, day)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let amplitude_id: i64 = amplitude_id
        .parse()
        .map_err(|_| bad("amplitude_id", "amplitude_id must be an integer"))?;
    let day = parse_day("day", Some(&day))?.to_string();
    blocking(move || {
        match app.meta.unschedule_erasure(
            project.id,
            amplitude_id,
            &day,
            &format!("project {} api key", project.id),
        )? {
            Unscheduled::Removed(r) => Ok(Json(json!({
                "amplitude_id": r.amplitude_id,
                "requested_on_day": day_text(r.requested_at),
                "requester": r.requester,
            }))),
            Unscheduled::NotFound => Err(ApiError::not_found(
                "a job of that day holding this amplitude_id",
            )),
            Unscheduled::Locked(status) => Err(ApiError::field(
                StatusCode::CONFLICT,
                "day",
                format!("the job of {day} is {status}: its users can no longer be withdrawn"),
            )),
        }
    })
    .await
}

/// `GET /api/v1/projects/{id}/suppressions` (admin): the suppressed users, by hash.
async fn suppressions(
    State(app): State<App>,
    session: Session,
    Path(project): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    blocking(move || {
        app.existing_project(project)?;
        Ok(Json(
            json!({ "suppressions": app.meta.suppressions(Some(project))? }),
        ))
    })
    .await
}

/// `DELETE /api/v1/projects/{id}/suppressions/{suppression}` (admin): the user's events are
/// accepted again.
async fn lift_suppression(
    State(app): State<App>,
    session: Session,
    Path((project, id)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    session.require_admin()?;
    blocking(move || {
        if !app.meta.lift_suppression(project, id, &session.0.email)? {
            return Err(ApiError::not_found("suppression"));
        }
        app.store.reload_suppressions()?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
