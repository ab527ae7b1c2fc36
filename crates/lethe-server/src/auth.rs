//! Who is calling: bearer tokens for the management API, Basic `api_key:secret_key` for the
//! Amplitude read APIs.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use lethe_meta::{Project, Role, User};

use crate::{blocking, ApiError, App};

/// A signed-in user (from `Authorization: Bearer <token>`).
pub struct Session(pub User);

impl Session {
    /// Only admins pass.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::forbidden()),
        }
    }
}

fn header<'a>(parts: &'a Parts, scheme: &str) -> Option<&'a str> {
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
        let token = header(parts, "Bearer ")
            .ok_or_else(ApiError::unauthorized)?
            .to_string();
        let meta = app.meta.clone();
        let user = blocking(move || Ok(meta.user_for_token(&token)?)).await?;
        user.map(Session).ok_or_else(ApiError::unauthorized)
    }
}

/// The project selected by HTTP Basic `api_key:secret_key`.
pub struct ProjectKey(pub Project);

impl FromRequestParts<App> for ProjectKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let encoded = header(parts, "Basic ").ok_or_else(ApiError::unauthorized)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(ApiError::unauthorized)?;
        let (key, secret) = decoded.split_once(':').ok_or_else(ApiError::unauthorized)?;
        let (key, secret) = (key.to_string(), secret.to_string());
        let meta = app.meta.clone();
        let project = blocking(move || Ok(meta.project_by_api_key(&key)?)).await?;
        match project {
            Some(p) if constant_time_eq(p.secret_key.as_bytes(), secret.as_bytes()) => {
                Ok(ProjectKey(p))
            }
            _ => Err(ApiError::unauthorized()),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
