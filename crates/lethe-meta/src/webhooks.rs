//! Webhooks: the organization's registered URLs, and the outbox of their deliveries. Every
//! change of a task's status (and so of the privacy job it carries out) adds one delivery
//! per webhook in the transaction that changes the status ([`notify_in`]), so a transition is
//! never lost by a crash and never recorded twice; the server's dispatcher sends what is due
//! and records each attempt here. Payloads hold ids, names, statuses and counts: never an
//! event or property value.

use serde::Serialize;
use serde_json::{json, Value};

use crate::audit::audit_in;
use crate::sql::{params, Conn, Row};
use crate::tasks::TaskStatus;
use crate::{now_ms, MetaError, MetaStore, Result};

/// A registered webhook (its secret is only ever shown once, at registration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub created_by: String,
    pub created_at: i64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet accepted by the receiver; tried again at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up after the last attempt.
    Failed,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One transition for one webhook, and how its delivery went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    /// The event's id (`webhook-id`), the same on every attempt: receivers deduplicate by it.
    pub event_id: String,
    /// `deletion_task.<status>` or `privacy_job.<status>`.
    pub event_type: String,
    pub task_id: Option<i64>,
    /// The JSON body sent.
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed (never a value: a status or a connection error).
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

const DELIVERY_COLS: &str = "id, webhook_id, event_id, event_type, task_id, payload, status, \
    attempts, next_attempt_at, last_status, last_error, created_at, delivered_at";

fn delivery_from_row(r: &Row) -> Result<Delivery> {
    let status: String = r.get(6)?;
    Ok(Delivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        task_id: r.get(4)?,
        payload: r.get(5)?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| MetaError::Corrupt(format!("unknown delivery status {status:?}")))?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        last_status: r.get(9)?,
        last_error: r.get(10)?,
        created_at: r.get(11)?,
        delivered_at: r.get(12)?,
    })
}

/// A delivery that is due, with where to send it and the secret to sign it with.
#[derive(Clone)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub url: String,
    pub secret: String,
}

/// Never printed: the secret signs the organization's notifications.
impl std::fmt::Debug for DueDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueDelivery")
            .field("delivery", &self.delivery.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Records task `task_id`'s move to `status` for every webhook, inside the transaction that
/// makes it (`result` holds its final counts when completed, `error` why it failed).
pub(crate) fn notify_in(
    tx: &mut dyn Conn,
    task_id: i64,
    status: TaskStatus,
    result: Option<&Value>,
    error: Option<&str>,
) -> Result<()> {
    let webhooks: Vec<i64> =
        tx.query_map("SELECT id FROM webhooks ORDER BY id", &[], |r| r.get(0))?;
    if webhooks.is_empty() {
        return Ok(());
    }
    let (project_id, name, submitted_by): (i64, String, String) = tx.query_row(
        "SELECT project_id, name, created_by FROM deletion_tasks WHERE id=?1",
        params![task_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let job: Option<i64> = tx.query_opt(
        "SELECT id FROM privacy_jobs WHERE task_id=?1",
        params![task_id],
        |r| r.get(0),
    )?;
    let now = now_ms();
    let mut data = json!({
        "task_id": task_id,
        "project_id": project_id,
        "status": status,
    });
    let subject = match job {
        Some(job) => {
            data["privacy_job_id"] = json!(job);
            "privacy_job"
        }
        None => {
            data["name"] = json!(name);
            data["submitted_by"] = json!(submitted_by);
            "deletion_task"
        }
    };
    if let Some(result) = result {
        for count in [
            "events_deleted",
            "event_property_values_removed",
            "user_property_values_removed",
            "group_property_values_removed",
            "users_erased",
        ] {
            if let Some(n) = result.get(count) {
                data[count] = n.clone();
            }
        }
    }
    if let Some(error) = error {
        data["error"] = json!(error);
    }
    let event_type = format!("{subject}.{}", status.as_str());
    for webhook in webhooks {
        insert_delivery(tx, webhook, &event_type, Some(task_id), &data, now)?;
    }
    Ok(())
}

/// Adds one pending delivery of an event to `webhook`, due at once, under a new event id.
fn insert_delivery(
    tx: &mut dyn Conn,
    webhook: i64,
    event_type: &str,
    task_id: Option<i64>,
    data: &Value,
    now: i64,
) -> Result<()> {
    let event_id = format!("evt_{}", hex::encode(rand::random::<[u8; 16]>()));
    let payload = json!({
        "id": event_id,
        "type": event_type,
        "timestamp": chrono::DateTime::from_timestamp_millis(now)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    });
    tx.execute(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, task_id, payload,
             status, attempts, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
        params![
            webhook,
            event_id,
            event_type,
            task_id,
            payload.to_string(),
            now
        ],
    )?;
    Ok(())
}

impl MetaStore {
    /// Registers `url` with the `secret` its deliveries are signed with; audited.
    pub fn add_webhook(&self, url: &str, secret: &str, actor: &str) -> Result<Webhook> {
        self.tx(|tx| {
            let now = now_ms();
            let id: i64 = tx.query_row(
                "INSERT INTO webhooks (url, secret, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4) RETURNING id",
                params![url, secret, actor, now],
                |r| r.get(0),
            )?;
            audit_in(
                tx,
                actor,
                "webhook.added",
                None,
                &json!({"webhook_id": id, "url": url}),
            )?;
            Ok(Webhook {
                id,
                url: url.to_string(),
                created_by: actor.to_string(),
                created_at: now,
            })
        })
    }

    /// Every registered webhook, oldest first.
    pub fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.with(|c| {
            c.query_map(
                "SELECT id, url, created_by, created_at FROM webhooks ORDER BY id",
                &[],
                |r| {
                    Ok(Webhook {
                        id: r.get(0)?,
                        url: r.get(1)?,
                        created_by: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
        })
    }

    /// Removes a webhook and its deliveries (sent or not); `false` if there was none.
    /// Audited.
    pub fn remove_webhook(&self, id: i64, actor: &str) -> Result<bool> {
        self.tx(|tx| {
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE webhook_id=?1",
                params![id],
            )?;
            let removed = tx.execute("DELETE FROM webhooks WHERE id=?1", params![id])? == 1;
            if removed {
                audit_in(
                    tx,
                    actor,
                    "webhook.removed",
                    None,
                    &json!({"webhook_id": id}),
                )?;
            }
            Ok(removed)
        })
    }

    /// Queues a `webhook.test` event for one webhook (an administrator checking the
    /// receiver); `false` if there is no such webhook.
    pub fn queue_test_delivery(&self, webhook_id: i64) -> Result<bool> {
        self.tx(|tx| {
            let exists: Option<i64> = tx.query_opt(
                "SELECT id FROM webhooks WHERE id=?1",
                params![webhook_id],
                |r| r.get(0),
            )?;
            if exists.is_none() {
                return Ok(false);
            }
            let data = json!({ "webhook_id": webhook_id });
            insert_delivery(tx, webhook_id, "webhook.test", None, &data, now_ms())?;
            Ok(true)
        })
    }

    /// Forgets deliveries sent or given up before `before` (ms): the log keeps a window,
    /// not everything ever sent. Returns how many went.
    pub fn prune_deliveries(&self, before: i64) -> Result<u64> {
        self.with(|c| {
            c.execute(
                "DELETE FROM webhook_deliveries
                 WHERE status IN ('delivered', 'failed') AND created_at < ?1",
                params![before],
            )
        })
    }

    /// A webhook's latest deliveries, newest first.
    pub fn deliveries(&self, webhook_id: i64, limit: i64) -> Result<Vec<Delivery>> {
        self.with(|c| {
            c.query_map(
                &format!(
                    "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE webhook_id=?1
                     ORDER BY id DESC LIMIT ?2"
                ),
                params![webhook_id, limit],
                delivery_from_row,
            )
        })
    }

    /// The deliveries to send at `now`, with their webhooks: each webhook's oldest pending
    /// one, if it is due. A webhook gets its events in order: a delivery waiting for a
    /// retry holds back the ones after it (a given-up one no longer does).
    pub fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let cols = DELIVERY_COLS
            .split(", ")
            .map(|c| format!("d.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.with(|c| {
            c.query_map(
                &format!(
                    "SELECT {cols}, w.url, w.secret FROM webhook_deliveries d
                     JOIN webhooks w ON w.id = d.webhook_id
                     WHERE d.status='pending' AND d.next_attempt_at <= ?1
                       AND d.id = (SELECT MIN(p.id) FROM webhook_deliveries p
                                   WHERE p.webhook_id = d.webhook_id AND p.status='pending')
                     ORDER BY d.id LIMIT ?2"
                ),
                params![now, limit],
                |r| {
                    Ok(DueDelivery {
                        delivery: delivery_from_row(r)?,
                        url: r.get(13)?,
                        secret: r.get(14)?,
                    })
                },
            )
        })
    }

    /// Records an attempt: delivered (`outcome` Ok with the receiver's status), or failed
    /// (Err with its status, if any, and why), to be tried again at `retry_at` or, without
    /// one, given up.
    pub fn record_attempt(
        &self,
        id: i64,
        outcome: std::result::Result<u16, (Option<u16>, &str)>,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let now = now_ms();
        self.with(|c| {
            match outcome {
                Ok(code) => c.execute(
                    "UPDATE webhook_deliveries SET status='delivered', attempts=attempts+1,
                         last_status=?2, last_error=NULL, delivered_at=?3 WHERE id=?1",
                    params![id, code as i64, now],
                )?,
                Err((code, why)) => {
                    let status = match retry_at {
                        Some(_) => DeliveryStatus::Pending,
                        None => DeliveryStatus::Failed,
                    };
                    c.execute(
                        "UPDATE webhook_deliveries SET status=?2, attempts=attempts+1,
                             last_status=?3, last_error=?4, next_attempt_at=?5 WHERE id=?1",
                        params![
                            id,
                            status.as_str(),
                            code.map(i64::from),
                            why,
                            retry_at.unwrap_or(now)
                        ],
                    )?
                }
            };
            Ok(())
        })
    }
}
