//! `GET /v1/userprofile`: Amplitude's User Profile API. Answers a user's amplitude_id and
//! (with `get_amp_props=true`) current user properties, from the resolver's live profiles,
//! so an Identify call or an event is reflected at once and an erased user is unknown.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::SecretKey;
use crate::{ApiError, App};

/// The route; Amplitude serves it on its profile host, lethe on the same one as the rest.
pub fn routes() -> Router<App> {
    Router::new().route("/v1/userprofile", get(user_profile))
}

#[derive(Deserialize)]
struct Params {
    user_id: Option<String>,
    device_id: Option<String>,
    #[serde(default)]
    get_amp_props: bool,
}

async fn user_profile(
    State(app): State<App>,
    SecretKey(project): SecretKey,
    Query(params): Query<Params>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user_id = params.user_id.filter(|u| !u.is_empty());
    let device_id = params.device_id.filter(|d| !d.is_empty());
    if user_id.is_none() && device_id.is_none() {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "user_id",
            "a user_id or a device_id is required",
        ));
    }
    let Some(profile) =
        app.store
            .user_profile(project.id, user_id.as_deref(), device_id.as_deref())
    else {
        return Ok((
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "User id and device id not seen before" })),
        ));
    };
    let amp_props = params.get_amp_props.then(|| {
        let props: Map<String, Value> = profile
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or(Value::Null)))
            .collect();
        Value::Object(props)
    });
    Ok((
        StatusCode::OK,
        Json(json!({
            "userData": {
                "user_id": profile.user_id,
                "device_id": device_id,
                "amplitude_id": profile.amplitude_id,
                "amp_props": amp_props,
                "cohort_ids": null,
                "recommendations": null,
            }
        })),
    ))
}
