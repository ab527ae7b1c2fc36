//! Webhooks: administrators register URLs for the organization (`/api/v1/webhooks`), and the
//! [`Dispatcher`] POSTs them every status change of a deletion task or privacy job
//! (`queued`, `running`, `completed`, `failed`), from the metadata's outbox, where each change
//! was recorded in its own transaction. Deliveries are signed as Standard Webhooks are
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, with the `whsec_` secret shown once at registration), retried with
//! doubling delays, and logged per webhook. Payloads carry ids, names, statuses and counts,
//! never a value.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use lethe_meta::{DueDelivery, MetaStore};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::auth::Session;
use crate::manage::Body;
use crate::{blocking, ApiError, App};

/// Most webhooks an organization may register.
const MAX_WEBHOOKS: usize = 20;
/// The longest URL taken.
const MAX_URL_CHARS: usize = 2048;
/// Attempts before a delivery is given up (with the default 5 s first delay, the last one
/// comes about 40 minutes after the first).
pub const MAX_ATTEMPTS: i64 = 10;
/// The longest delay between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// How often the outbox is looked at when nothing was due.
const POLL: Duration = Duration::from_millis(500);
/// How long a receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries of the log shown per webhook.
const LOG_ROWS: i64 = 100;
/// How long a sent or given-up delivery stays in the log.
const LOG_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(add))
        .route("/api/v1/webhooks/{id}", delete(remove))
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/api/v1/webhooks/{id}/test", post(send_test))
}

/// `POST /api/v1/webhooks/{id}/test`: queues a `webhook.test` event for the webhook, sent and
/// logged like any other; 202.
async fn send_test(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    session.require_admin()?;
    blocking(move || match app.meta.queue_test_delivery(id)? {
        true => Ok(StatusCode::ACCEPTED),
        false => Err(ApiError::not_found("webhook")),
    })
    .await
}

/// `GET /api/v1/webhooks`: the registered webhooks (without their secrets).
async fn list(State(app): State<App>, session: Session) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    blocking(move || Ok(Json(json!({ "webhooks": app.meta.webhooks()? })))).await
}

/// `POST /api/v1/webhooks` `{"url": …}`: registers a URL; 201 with its signing secret, shown
/// this once.
async fn add(
    State(app): State<App>,
    session: Session,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    session.require_admin()?;
    let url = checked_url(body.get("url"))?;
    let actor = session.0.email.clone();
    blocking(move || {
        if app.meta.webhooks()?.len() >= MAX_WEBHOOKS {
            return Err(ApiError::field(
                StatusCode::CONFLICT,
                "url",
                format!("an organization has at most {MAX_WEBHOOKS} webhooks: remove one first"),
            ));
        }
        let secret = format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()));
        let webhook = app.meta.add_webhook(&url, &secret, &actor)?;
        let mut shown = json!(webhook);
        shown["secret"] = json!(secret);
        Ok((StatusCode::CREATED, Json(shown)))
    })
    .await
}

/// A webhook URL: http or https, with a host, no credentials, at most 2048 characters.
fn checked_url(value: Option<&Value>) -> Result<String, ApiError> {
    let refuse = |why: &str| ApiError::field(StatusCode::BAD_REQUEST, "url", why.to_string());
    let text = value
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("is required: the http or https URL to POST to"))?;
    if text.chars().count() > MAX_URL_CHARS {
        return Err(refuse("has at most 2048 characters"));
    }
    let url = reqwest::Url::parse(text).map_err(|_| refuse("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(refuse("must be an http or https URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            "must not hold credentials: verify the signature instead",
        ));
    }
    Ok(url.to_string())
}

/// `DELETE /api/v1/webhooks/{id}`: removes a webhook and its delivery log; 204.
async fn remove(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    session.require_admin()?;
    let actor = session.0.email.clone();
    blocking(move || match app.meta.remove_webhook(id, &actor)? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("webhook")),
    })
    .await
}

/// `GET /api/v1/webhooks/{id}/deliveries`: the latest deliveries, newest first, with their
/// payloads, attempts and last answers.
async fn deliveries(
    State(app): State<App>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    session.require_admin()?;
    blocking(move || {
        if !app.meta.webhooks()?.iter().any(|w| w.id == id) {
            return Err(ApiError::not_found("webhook"));
        }
        let log: Vec<Value> = app
            .meta
            .deliveries(id, LOG_ROWS)?
            .into_iter()
            .map(|d| {
                let payload: Value = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
                let mut shown = json!(d);
                shown["payload"] = payload;
                shown
            })
            .collect();
        Ok(Json(json!({ "deliveries": log })))
    })
    .await
}

/// `v1,<signature>` of a delivery, as Standard Webhooks defines it; `None` for a secret
/// that is not a `whsec_` one.
fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The delay before attempt `attempts + 1`, after `attempts` failed ones: `first`, doubled
/// each time, at most an hour.
fn delay(first: Duration, attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    first.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// Sends the outbox's due deliveries until stopped (on the node that works the queue).
pub(crate) struct Dispatcher {
    stopping: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Dispatcher {
    /// Starts sending; a failed attempt is tried again after `first_retry`, doubling.
    pub(crate) fn start(meta: Arc<MetaStore>, first_retry: Duration) -> std::io::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!("lethe-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(std::io::Error::other)?;
        let (stopping, wake) = (Arc::new(AtomicBool::new(false)), Arc::default());
        let task = tokio::spawn(run(
            meta,
            client,
            first_retry,
            stopping.clone(),
            Arc::clone(&wake),
        ));
        Ok(Dispatcher {
            stopping,
            wake,
            task,
        })
    }

    /// Stops after the deliveries in flight (recorded), so none is sent twice.
    pub(crate) async fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        let _ = self.task.await;
    }
}

async fn run(
    meta: Arc<MetaStore>,
    client: reqwest::Client,
    first_retry: Duration,
    stopping: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut pruned: Option<std::time::Instant> = None;
    while !stopping.load(Ordering::Acquire) {
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned = Some(std::time::Instant::now());
            let meta = meta.clone();
            let before = lethe_meta::now_ms() - LOG_KEPT.as_millis() as i64;
            let pruning = tokio::task::spawn_blocking(move || meta.prune_deliveries(before));
            if let Ok(Err(e)) = pruning.await {
                tracing::error!(error = %e, "cannot prune the webhook delivery log");
            }
        }
        let due = {
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || meta.due_deliveries(lethe_meta::now_ms(), 20)).await
        };
        let due = match due {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the webhook outbox");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        if due.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = wake.notified() => {}
            }
            continue;
        }
        // One delivery per webhook: sent side by side, so a slow receiver delays only its
        // own events.
        let attempts = due.iter().map(|delivery| async {
            let outcome = send(&client, delivery).await;
            record(&meta, delivery, outcome, first_retry).await;
        });
        futures_util::future::join_all(attempts).await;
    }
}

/// POSTs one delivery: the receiver's status when 2xx, else its status (if it answered) and
/// why it failed (a status or a connection error: never the body either way).
async fn send(client: &reqwest::Client, due: &DueDelivery) -> Result<u16, (Option<u16>, String)> {
    let d = &due.delivery;
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature(&due.secret, &d.event_id, timestamp, &d.payload)
        .ok_or((None, "the webhook's secret is damaged".to_string()))?;
    let sent = client
        .post(&due.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(d.payload.clone())
        .send()
        .await;
    match sent {
        Ok(answer) if answer.status().is_success() => Ok(answer.status().as_u16()),
        Ok(answer) => Err((
            Some(answer.status().as_u16()),
            format!("answered {}", answer.status()),
        )),
        Err(e) => Err((None, e.without_url().to_string())),
    }
}

/// Records an attempt's outcome: delivered, retried later, or given up after the last one.
async fn record(
    meta: &Arc<MetaStore>,
    due: &DueDelivery,
    outcome: Result<u16, (Option<u16>, String)>,
    first_retry: Duration,
) {
    let d = &due.delivery;
    let attempts = d.attempts + 1;
    let retry_at = match &outcome {
        Err(_) if attempts < MAX_ATTEMPTS => {
            Some(lethe_meta::now_ms() + delay(first_retry, attempts).as_millis() as i64)
        }
        _ => None,
    };
    let label = match (&outcome, retry_at) {
        (Ok(_), _) => "delivered",
        (Err(_), Some(_)) => "retry",
        (Err(_), None) => "failed",
    };
    metrics::counter!("lethe_webhook_deliveries_total", "outcome" => label).increment(1);
    if let Err((status, why)) = &outcome {
        tracing::warn!(
            webhook_id = d.webhook_id,
            delivery = d.id,
            status,
            attempts,
            error = %why,
            "webhook delivery failed"
        );
    }
    let (meta, id) = (meta.clone(), d.id);
    let recorded = tokio::task::spawn_blocking(move || {
        let outcome = outcome
            .as_ref()
            .map(|c| *c)
            .map_err(|(s, w)| (*s, w.as_str()));
        meta.record_attempt(id, outcome, retry_at)
    })
    .await;
    if let Ok(Err(e)) = recorded {
        tracing::error!(error = %e, delivery = id, "cannot record a webhook delivery");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_standard_webhooks_v1() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(signature("not-a-secret", "id", 1, body), None);
    }

    #[test]
    fn retries_double_up_to_an_hour() {
        let first = Duration::from_secs(5);
        assert_eq!(delay(first, 1), first);
        assert_eq!(delay(first, 2), first * 2);
        assert_eq!(delay(first, 4), first * 8);
        assert_eq!(delay(first, 30), MAX_DELAY);
    }

    #[test]
    fn a_url_must_be_http_with_a_host_and_no_credentials() {
        let field = |v: Value| checked_url(Some(&v)).map_err(drop);
        assert_eq!(
            field(json!("http://127.0.0.1:8/hook")).unwrap(),
            "http://127.0.0.1:8/hook"
        );
        assert!(field(json!("ftp://example.com/")).is_err());
        assert!(field(json!("not a url")).is_err());
        assert!(field(json!("https://user:pw@example.com/")).is_err());
        assert!(field(json!(format!("https://example.com/{}", "a".repeat(2048)))).is_err());
        assert!(checked_url(None).is_err());
    }
}
