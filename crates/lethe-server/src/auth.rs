//! Who is calling: bearer tokens for the management API (or the console's session cookie,
//! with a CSRF token on every state-changing request), Basic `api_key:secret_key` for the
//! Amplitude read APIs.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine;
use lethe_meta::{Project, ProjectRole, Role, User};
use sha2::{Digest, Sha256};

use crate::throttle::retry_secs;
use crate::{blocking, ApiError, App};

/// The console's session cookie (HttpOnly, SameSite=Strict).
pub const SESSION_COOKIE: &str = "lethe_session";
/// The header that carries the CSRF token of a cookie session.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A signed-in user (from `Authorization: Bearer <token>` or the session cookie).
pub struct Session(pub User);

/// The CSRF token of a session: derived from the session token, which scripts on other
/// sites can neither read nor guess.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(Sha256::digest(format!("lethe-csrf:{session_token}")))
}

/// The session token in the request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .map(str::to_string)
}

/// A cookie session may change state only with its CSRF token in [`CSRF_HEADER`].
fn check_csrf(parts: &Parts, token: &str) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match sent {
        Some(sent) if constant_time_eq(sent.as_bytes(), csrf_token(token).as_bytes()) => Ok(()),
        _ => Err(ApiError::field(
            StatusCode::FORBIDDEN,
            CSRF_HEADER,
            "missing or invalid CSRF token: reload the page",
        )),
    }
}

/// The session token of a request: the bearer header first, else the cookie (CSRF-checked).
pub fn session_token(parts: &Parts) -> Result<Option<String>, ApiError> {
    if let Some(token) = header(parts, "Bearer ") {
        return Ok(Some(token.to_string()));
    }
    match session_cookie(&parts.headers) {
        Some(token) => check_csrf(parts, &token).map(|_| Some(token)),
        None => Ok(None),
    }
}

/// What a signed-in user may do in one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An organization administrator: everything, in every project.
    Admin,
    /// Reads the project and loads data into it.
    Member,
    /// Reads the project.
    Viewer,
}

impl Session {
    /// Only admins pass.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::forbidden()),
        }
    }

    /// The caller's access to a project: administrators reach every project, members and
    /// viewers the projects they were granted. Any other project answers 404, as if it did
    /// not exist.
    pub async fn project_access(&self, app: &App, project_id: i64) -> Result<Access, ApiError> {
        let visible = self.visible_projects(app).await?;
        match visible {
            None => Ok(Access::Admin),
            Some(granted) => granted
                .iter()
                .find(|(id, _)| *id == project_id)
                .map(|(_, role)| match role {
                    ProjectRole::Member => Access::Member,
                    ProjectRole::Viewer => Access::Viewer,
                })
                .ok_or_else(|| ApiError::not_found("project")),
        }
    }

    /// The projects the caller may see: `None` for all (an administrator), else the granted
    /// ones with the role in each.
    pub async fn visible_projects(
        &self,
        app: &App,
    ) -> Result<Option<Vec<(i64, ProjectRole)>>, ApiError> {
        if self.0.role == Role::Admin {
            return Ok(None);
        }
        let (meta, user) = (app.meta.clone(), self.0.id);
        Ok(Some(
            blocking(move || Ok(meta.granted_projects(user)?)).await?,
        ))
    }
}

/// The credentials of the `Authorization` header's `scheme` (with its trailing space).
pub(crate) fn header<'a>(parts: &'a Parts, scheme: &str) -> Option<&'a str> {
    parts
        .headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(scheme)
        .map(str::trim)
}

impl FromRequestParts<App> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = session_token(parts)?.ok_or_else(ApiError::unauthorized)?;
        let meta = app.meta.clone();
        let user = blocking(move || Ok(meta.user_for_token(&token)?)).await?;
        user.map(Session).ok_or_else(ApiError::unauthorized)
    }
}

/// The project selected by HTTP Basic `api_key:secret_key`.
pub struct ProjectKey(pub Project);

/// The `api_key:secret_key` pair of a Basic header.
pub(crate) fn basic_keys(parts: &Parts) -> Option<(String, String)> {
    let encoded = header(parts, "Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())?;
    let (key, secret) = decoded.split_once(':')?;
    Some((key.to_string(), secret.to_string()))
}

impl FromRequestParts<App> for ProjectKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let (key, secret) = basic_keys(parts).ok_or_else(ApiError::unauthorized)?;
        // API keys are public (browser SDKs carry them), so guesses are counted per key and
        // client address: a stranger cannot lock a project's own integrations out.
        let account = format!(
            "key:{key}@{}",
            app.client_address(&parts.headers, &parts.extensions)
        );
        let meta = app.meta.clone();
        throttled_lookup(app, &account, move || meta.project_for_keys(&key, &secret))
            .await
            .map(ProjectKey)
    }
}

/// The project selected by the User Profile API's `Authorization: Api-Key <secret_key>`, or
/// by Basic `api_key:secret_key` as Amplitude's newer documentation has it.
pub struct SecretKey(pub Project);

impl FromRequestParts<App> for SecretKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let meta = app.meta.clone();
        let client = app.client_address(&parts.headers, &parts.extensions);
        if let Some((key, secret)) = basic_keys(parts) {
            let account = format!("key:{key}@{client}");
            let found = move || meta.project_for_keys(&key, &secret);
            return throttled_lookup(app, &account, found).await.map(SecretKey);
        }
        let secret = header(parts, "Api-Key ")
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Missing Api-Key in Authorization header",
                )
            })?
            .to_string();
        // Only a secret is sent: guesses are counted per client address.
        let account = format!("secret@{client}");
        let found = move || meta.project_by_secret(&secret);
        throttled_lookup(app, &account, found).await.map(SecretKey)
    }
}

/// Looks up the project some credentials select, refusing with 429 while `account` is
/// locked out by failed attempts, and counting this attempt.
async fn throttled_lookup(
    app: &App,
    account: &str,
    lookup: impl FnOnce() -> lethe_meta::Result<Option<Project>> + Send + 'static,
) -> Result<Project, ApiError> {
    app.throttle
        .check(account)
        .map_err(|wait| ApiError::throttled(retry_secs(wait)))?;
    match blocking(move || Ok(lookup()?)).await? {
        Some(p) => {
            app.throttle.succeeded(account);
            Ok(p)
        }
        None => Err(match app.throttle.failed(account) {
            Some(lock) => ApiError::throttled(retry_secs(lock)),
            None => ApiError::unauthorized(),
        }),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
