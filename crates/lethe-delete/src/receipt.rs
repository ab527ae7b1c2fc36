//! Receipts: a completed task's account of what it did, signed with the deployment's
//! Ed25519 key, that an auditor checks offline (`lethe receipt verify`). A receipt holds the
//! task's spec, its preview and final counts, the segments it retired and created (ids, sizes,
//! CRC-32s and SHA-256 content hashes), its times and its place in the audit trail (the `task.completed` entry's id and
//! chain hash): names and counts, never a value; the end users of a privacy erasure appear
//! only as salted SHA-256 digests of their amplitude_ids.
//!
//! The signature covers the receipt's JSON text as serialized here (object keys in sorted
//! order, no whitespace), which a verifier reproduces from the parsed document.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use lethe_meta::{MetaStore, TaskStatus};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::queue::QueuedTask;
use crate::spec::Clause;
use crate::DeleteError;

/// The receipt format this lethe writes.
const VERSION: u64 = 1;

/// Why a receipt cannot be issued or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("task {0} has not completed: only a completed task has a receipt")]
    NotCompleted(i64),
    #[error("not a lethe receipt: {0}")]
    Malformed(&'static str),
    #[error("signed by {found}, not by the expected key {expected}")]
    OtherKey { found: String, expected: String },
    #[error("the signature does not match the receipt: it was changed after signing")]
    BadSignature,
    #[error(transparent)]
    Delete(#[from] DeleteError),
}

impl From<lethe_meta::MetaError> for ReceiptError {
    fn from(e: lethe_meta::MetaError) -> Self {
        ReceiptError::Delete(e.into())
    }
}

/// The deployment's public key, hex: what `GET /api/v1/keys` shows and receipts name.
pub fn public_key(meta: &MetaStore) -> Result<String, ReceiptError> {
    let keys = meta.deployment_keys()?;
    Ok(hex::encode(
        SigningKey::from_bytes(&keys.signing_key)
            .verifying_key()
            .as_bytes(),
    ))
}

/// The signed receipt of a completed task: `{"receipt": …, "signature": …, "public_key": …}`.
pub fn issue(meta: &MetaStore, task: &QueuedTask) -> Result<Value, ReceiptError> {
    let row = &task.row;
    let (Some(result), TaskStatus::Completed) = (&task.result, row.status) else {
        return Err(ReceiptError::NotCompleted(row.id));
    };
    let keys = meta.deployment_keys()?;
    let digest = |amplitude_id: i64| {
        let mut hash = Sha256::new();
        hash.update(keys.salt);
        hash.update(amplitude_id.to_string().as_bytes());
        hex::encode(hash.finalize())
    };
    let clauses: Vec<Value> = task
        .spec
        .clauses
        .iter()
        .map(|clause| match clause {
            Clause::Users { amplitude_ids } => json!({
                "kind": "users",
                "user_digests": amplitude_ids.iter().map(|id| digest(*id)).collect::<Vec<_>>(),
            }),
            other => serde_json::to_value(other).unwrap_or(Value::Null),
        })
        .collect();
    let audit = meta.audit_position(row.id, "task.completed")?;
    let progress = task.progress.clone().unwrap_or_default();
    let mut counts = serde_json::to_value(result).map_err(DeleteError::from)?;
    if let Some(counts) = counts.as_object_mut() {
        // How long each phase took is not what the task did.
        counts.remove("timings");
    }
    let receipt = json!({
        "receipt_version": VERSION,
        "task_id": row.id,
        "project_id": row.project_id,
        "name": row.name,
        "spec": {
            "start": task.spec.start,
            "end": task.spec.end,
            "clauses": clauses,
        },
        "submitted_by": row.created_by,
        "submitted_at": row.created_at,
        "started_at": row.started_at,
        "completed_at": row.finished_at,
        "preview": serde_json::to_value(task.preview.without_samples()).map_err(DeleteError::from)?,
        "result": counts,
        "segments_retired": progress.segments_retired,
        "segments_created": progress.segments_created,
        "audit": audit.map(|(entry, hash)| json!({"entry": entry, "hash": hash})),
    });
    let signing = SigningKey::from_bytes(&keys.signing_key);
    let signature = signing.sign(receipt.to_string().as_bytes());
    Ok(json!({
        "receipt": receipt,
        "signature": hex::encode(signature.to_bytes()),
        "public_key": hex::encode(signing.verifying_key().as_bytes()),
    }))
}

/// Checks a signed receipt offline: its signature, by the key it names or, with
/// `expected_key` (hex), by that key only. Returns the key it was signed by.
pub fn verify(document: &Value, expected_key: Option<&str>) -> Result<String, ReceiptError> {
    let text = |field: &'static str| {
        document[field]
            .as_str()
            .ok_or(ReceiptError::Malformed(field))
    };
    let named = text("public_key")?.to_ascii_lowercase();
    if let Some(expected) = expected_key.map(str::to_ascii_lowercase) {
        if expected != named {
            return Err(ReceiptError::OtherKey {
                found: named,
                expected,
            });
        }
    }
    let key: [u8; 32] = hex::decode(&named)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ReceiptError::Malformed("public_key"))?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| ReceiptError::Malformed("public_key"))?;
    let signature: [u8; 64] = hex::decode(text("signature")?)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(ReceiptError::Malformed("signature"))?;
    let receipt = document
        .get("receipt")
        .filter(|r| r.is_object())
        .ok_or(ReceiptError::Malformed("receipt"))?;
    key.verify_strict(
        receipt.to_string().as_bytes(),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| ReceiptError::BadSignature)?;
    Ok(named)
}
