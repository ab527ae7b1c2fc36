//! The management API under `/api/v1`: sign-in, the caller, projects and users.

use axum::extract::{Path, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use lethe_meta::{CreatedProject, Project, ProjectRole, Role};
use serde_json::{json, Value};

use crate::auth::{csrf_token, session_token, Session, SESSION_COOKIE};
use crate::throttle::retry_secs;
use crate::{blocking, ApiError, App};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route(
            "/api/v1/auth/session",
            post(open_session).delete(close_session),
        )
        .route("/api/v1/me", get(me))
        .route("/api/v1/projects", get(list_projects).post(create_project))
        .route("/api/v1/projects/{id}", patch(update_project))
        .route("/api/v1/projects/{id}/secret-key", post(rotate_secret))
        .route("/api/v1/projects/{id}/members", get(list_members))
        .route(
            "/api/v1/projects/{id}/members/{user_id}",
            put(set_member).delete(remove_member),
        )
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{id}", patch(update_user))
}

/// A JSON object body, parsed by hand so that every error names its field.
pub struct Body(pub serde_json::Map<String, Value>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "could not read the request body")
            })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object",
            )),
        }
    }
}

impl Body {
    /// A required, non-empty string field.
    pub fn text(&self, field: &'static str) -> Result<String, ApiError> {
        match self.0.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(Value::String(_)) => Err(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                field,
                format!("{field} must not be empty"),
            )),
            Some(_) => Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                field,
                format!("{field} must be a string"),
            )),
            None => Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                field,
                format!("{field} is required"),
            )),
        }
    }
}

/// Checks the credentials of a body and issues a token. Failures are throttled per email
/// (see [`crate::throttle`]) and every attempt is audited.
async fn sign_in(app: App, body: &Body) -> Result<(String, lethe_meta::User), ApiError> {
    let email = body.text("email")?;
    let password = body.text("password")?;
    let account = format!("email:{}", email.to_lowercase());
    app.throttle
        .check(&account)
        .map_err(|wait| ApiError::throttled(retry_secs(wait)))?;
    blocking(move || {
        let user = app.meta.verify_password(&email, &password)?;
        app.meta.audit_sign_in(&email, user.as_ref())?;
        let Some(user) = user else {
            return Err(match app.throttle.failed(&account) {
                Some(lock) => ApiError::throttled(retry_secs(lock)),
                None => ApiError::new(StatusCode::UNAUTHORIZED, "wrong email or password"),
            });
        };
        app.throttle.succeeded(&account);
        Ok((app.meta.issue_token(user.id)?, user))
    })
    .await
}

async fn login(State(app): State<App>, body: Body) -> Result<Json<Value>, ApiError> {
    let (token, user) = sign_in(app, &body).await?;
    Ok(Json(json!({ "token": token, "user": user })))
}

/// The session cookie; `Secure` when the request reached a TLS proxy in front of lethe.
fn session_cookie(token: &str, max_age_secs: i64, headers: &axum::http::HeaderMap) -> String {
    let tls = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if tls { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}")
}

/// The console's sign-in: the token goes into an HttpOnly cookie, never to scripts; the
/// answer carries the CSRF token that state-changing requests must send.
async fn open_session(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<([(axum::http::HeaderName, String); 1], Json<Value>), ApiError> {
    let (token, user) = sign_in(app, &body).await?;
    let cookie = session_cookie(&token, lethe_meta::TOKEN_TTL_MS / 1000, &headers);
    Ok((
        [(SET_COOKIE, cookie)],
        Json(json!({ "user": user, "csrf_token": csrf_token(&token) })),
    ))
}

/// Signs out: the token is revoked and the cookie cleared.
async fn close_session(
    State(app): State<App>,
    _: Session,
    parts: Parts,
) -> Result<([(axum::http::HeaderName, String); 1], StatusCode), ApiError> {
    if let Some(token) = session_token(&parts)? {
        blocking(move || Ok(app.meta.revoke_token(&token)?)).await?;
    }
    Ok((
        [(SET_COOKIE, session_cookie("", 0, &parts.headers))],
        StatusCode::NO_CONTENT,
    ))
}

/// The caller; a cookie session also learns its CSRF token (after a page reload).
async fn me(Session(user): Session, parts: Parts) -> Result<Json<Value>, ApiError> {
    let mut out = json!(user);
    if let (None, Some(token)) = (
        parts.headers.get(axum::http::header::AUTHORIZATION),
        session_token(&parts)?,
    ) {
        out["csrf_token"] = json!(csrf_token(&token));
    }
    Ok(Json(out))
}

fn project_json(p: &Project) -> Value {
    json!({ "id": p.id, "name": p.name, "api_key": p.api_key, "created_at": p.created_at,
            "time_zone": p.time_zone.name() })
}

/// A project with its new secret key: the only answer that ever carries one.
fn created_json(created: &CreatedProject) -> Value {
    let mut v = project_json(&created.project);
    v["secret_key"] = json!(created.secret_key);
    v
}

/// The projects the caller may see, each with the caller's role in it.
async fn list_projects(State(app): State<App>, session: Session) -> Result<Json<Value>, ApiError> {
    let visible = session.visible_projects(&app).await?;
    let projects = blocking(move || Ok(app.meta.list_projects()?)).await?;
    let listed: Vec<Value> = projects
        .iter()
        .filter_map(|p| {
            let role = match &visible {
                None => "admin",
                Some(granted) => granted.iter().find(|(id, _)| *id == p.id)?.1.as_str(),
            };
            let mut v = project_json(p);
            v["role"] = json!(role);
            Some(v)
        })
        .collect();
    Ok(Json(json!(listed)))
}

/// `POST /api/v1/projects/{id}/secret-key` (admin): a new secret key, shown once; the old
/// one stops working at once.
async fn rotate_secret(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    let actor = session.0.email.clone();
    let secret = blocking(move || Ok(app.meta.rotate_secret(id, &actor)?)).await?;
    let secret = secret.ok_or_else(|| ApiError::not_found("project"))?;
    Ok(Json(json!({ "id": id, "secret_key": secret })))
}

/// `PATCH /api/v1/projects/{id}` with `time_zone` (an IANA name such as `Europe/Berlin`;
/// admin): the time zone the project's charts count days and hours in, as in Amplitude.
async fn update_project(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    let name = body.text("time_zone")?;
    let time_zone: chrono_tz::Tz = name.parse().map_err(|_| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "time_zone",
            "time_zone must be an IANA time zone name, e.g. UTC or America/New_York",
        )
    })?;
    let actor = session.0.email.clone();
    let project = blocking(move || {
        if !app.meta.set_project_time_zone(id, time_zone, &actor)? {
            return Err(ApiError::not_found("project"));
        }
        Ok(app.meta.project(id)?)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("project"))?;
    Ok(Json(project_json(&project)))
}

/// `GET /api/v1/projects/{id}/members` (admin): who besides the administrators may reach
/// the project, and in which role.
async fn list_members(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    let members = blocking(move || {
        app.meta
            .project(id)?
            .ok_or_else(|| ApiError::not_found("project"))?;
        Ok(app.meta.project_members(id)?)
    })
    .await?;
    let members: Vec<Value> = members
        .into_iter()
        .map(|(user, role)| json!({ "user": user, "role": role }))
        .collect();
    Ok(Json(json!(members)))
}

/// `PUT /api/v1/projects/{id}/members/{user_id}` with `role` (`member` or `viewer`; admin).
async fn set_member(
    State(app): State<App>,
    session: Session,
    Path((id, user_id)): Path<(i64, i64)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    session.require_admin()?;
    let role = ProjectRole::parse(&body.text("role")?).ok_or_else(|| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "role",
            "role must be member or viewer (administrators reach every project)",
        )
    })?;
    change_member(app, session, id, user_id, Some(role)).await
}

/// `DELETE /api/v1/projects/{id}/members/{user_id}` (admin).
async fn remove_member(
    State(app): State<App>,
    session: Session,
    Path((id, user_id)): Path<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    session.require_admin()?;
    change_member(app, session, id, user_id, None).await
}

async fn change_member(
    app: App,
    session: Session,
    project_id: i64,
    user_id: i64,
    role: Option<ProjectRole>,
) -> Result<StatusCode, ApiError> {
    let actor = session.0.email.clone();
    blocking(move || {
        app.meta
            .project(project_id)?
            .ok_or_else(|| ApiError::not_found("project"))?;
        let user = app.meta.list_users()?.into_iter().find(|u| u.id == user_id);
        match user {
            None => return Err(ApiError::not_found("user")),
            Some(u) if u.role == Role::Admin => {
                return Err(ApiError::field(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "user_id",
                    "administrators reach every project already",
                ))
            }
            Some(_) => {}
        }
        Ok(app
            .meta
            .set_project_role(project_id, user_id, role, &actor)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_project(
    State(app): State<App>,
    session: Session,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    session.require_admin()?;
    let name = body.text("name")?;
    if name.chars().count() > 200 {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
            "name must be at most 200 characters",
        ));
    }
    let actor = session.0.email.clone();
    let created = blocking(move || Ok(app.meta.create_project(&name, &actor)?)).await?;
    tracing::info!(project_id = created.project.id, "project created");
    Ok((StatusCode::CREATED, Json(created_json(&created))))
}

async fn list_users(State(app): State<App>, session: Session) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    let users = blocking(move || Ok(app.meta.list_users()?)).await?;
    Ok(Json(json!(users)))
}

async fn create_user(
    State(app): State<App>,
    session: Session,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    session.require_admin()?;
    let email = body.text("email")?;
    let password = body.text("password")?;
    let role = body.text("role")?;
    if !email.contains('@') {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "email",
            "email must be an email address",
        ));
    }
    if password.chars().count() < 8 {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "password",
            "password must have at least 8 characters",
        ));
    }
    let role = Role::parse(&role).ok_or_else(|| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "role",
            "role must be one of admin, member, viewer",
        )
    })?;
    let actor = session.0.email.clone();
    let user = blocking(move || Ok(app.meta.create_user(&email, &password, role, &actor)?)).await?;
    tracing::info!(user_id = user.id, role = role.as_str(), "user created");
    Ok((StatusCode::CREATED, Json(json!(user))))
}

/// `PATCH /api/v1/users/{id}` with `role` and/or `active` (admin).
async fn update_user(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    let role = match body.get("role") {
        None => None,
        Some(v) => Some(v.as_str().and_then(Role::parse).ok_or_else(|| {
            ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "role",
                "role must be one of admin, member, viewer",
            )
        })?),
    };
    let active = match body.get("active") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "active",
                "active must be true or false",
            ))
        }
    };
    if role.is_none() && active.is_none() {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "role",
            "send role and/or active",
        ));
    }
    let actor = session.0.email.clone();
    let user = blocking(move || Ok(app.meta.update_user(id, role, active, &actor)?)).await?;
    let user = user.ok_or_else(|| ApiError::not_found("user"))?;
    tracing::info!(user_id = id, "user updated");
    Ok(Json(json!(user)))
}
