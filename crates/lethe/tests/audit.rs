//! Proof of what lethe did. The audit trail is tamper-evident: `lethe audit verify` passes on
//! a trail lethe wrote and names the entry someone with access to the database changed behind
//! its back. A completed task has a receipt signed with the deployment's key: `lethe receipt
//! verify` accepts it offline and refuses it once changed or checked against another key; an
//! erasure's receipt names its users only by salted digests.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Keys, Server};
use serde_json::{json, Value};
use sha2::Digest;

fn audit_verify(dir: &Path) -> (i32, String) {
    let out = common::lethe()
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn lethe_audit_verify_names_an_entry_changed_behind_lethes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_on(&dir, &[]);
    let token = server.admin_token();
    let (status, _) = server.post_as(
        &token,
        "/api/v1/users",
        &serde_json::json!({"email": "viewer@example.com", "password": "long enough password", "role": "member"}),
    );
    assert_eq!(status, 201);
    server.stop();

    let (code, out) = audit_verify(&dir);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": 0 problems; head "), "{out}");

    // Someone with the database file rewrites who created the user.
    let script = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1])\n\
        c.execute('DROP TRIGGER audit_is_append_only_update')\n\
        c.execute(\"UPDATE audit SET actor = 'someone-else' WHERE action = 'user.created'\")\n\
        print(c.execute(\"SELECT id FROM audit WHERE action = 'user.created'\").fetchone()[0])\n\
        c.commit()\n";
    let changed = common::python(&["-c", script, dir.join("meta.sqlite").to_str().unwrap()]);
    let (code, out) = audit_verify(&dir);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("broken: entry {}:", changed.trim())),
        "{out}"
    );
}

fn receipt_verify(file: &Path, key: Option<&str>) -> (i32, String) {
    let mut command = common::lethe();
    command.args(["receipt", "verify"]).arg(file);
    if let Some(key) = key {
        command.args(["--public-key", key]);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits until every task of the deployment has completed; returns them.
fn completed_tasks(server: &Server, token: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, tasks) = server.get_as(token, "/api/v1/deletion-tasks");
        let tasks = tasks.as_array().cloned().unwrap_or_default();
        if !tasks.is_empty() && tasks.iter().all(|t| t["status"] == "completed") {
            return tasks;
        }
        assert!(
            Instant::now() < deadline,
            "tasks never completed: {tasks:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn receipt_of(server: &Server, token: &str, task: i64) -> Value {
    let (status, receipt) = server.get_as(token, &format!("/api/v1/deletion-tasks/{task}/receipt"));
    assert_eq!(status, 200, "{receipt}");
    receipt
}

#[test]
fn a_receipt_verifies_offline_and_not_once_changed_or_against_another_key() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(&tmp.path().join("data"), &["--flush-interval", "100ms"]);
    let keys: Keys = server.first_start_keys();
    let events: Vec<Value> = (0..8)
        .map(|i| {
            let kind = if i < 5 { "Test Flood" } else { "Kept" };
            json!({"event_type": kind, "user_id": format!("receipt-user-{i}"), "event_properties": {"note": "RECEIPT-MARKER"}})
        })
        .collect();
    assert_eq!(server.send(&keys, json!(events)).0, 200);
    let token = server.admin_token();
    std::thread::sleep(Duration::from_millis(5));
    let (status, task) = server.submit_last_hour(
        &token,
        keys.project_id,
        json!({"name": "Remove the flood", "clauses": [{"kind": "event", "event_types": ["Test Flood"]}]}),
    );
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    completed_tasks(&server, &token);

    let signed = receipt_of(&server, &token, id);
    let receipt = &signed["receipt"];
    assert_eq!(receipt["task_id"], id);
    assert_eq!(receipt["result"]["events_deleted"], 5);
    assert_eq!(receipt["preview"]["totals"]["events_deleted"], 5);
    assert!(!receipt["segments_retired"].as_array().unwrap().is_empty());
    let created = receipt["segments_created"].as_array().unwrap();
    assert!(!created.is_empty());
    // An auditor can check a created file against its content hash.
    for segment in created {
        let id = segment["id"].as_str().unwrap();
        let file = files_under(&server.data_dir)
            .into_iter()
            .find(|f| f.file_name().unwrap().to_string_lossy().contains(id))
            .unwrap_or_else(|| panic!("no file of segment {id}"));
        let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()));
        assert_eq!(segment["sha256"], sha.as_str(), "{segment}");
    }
    let (_, audit) = server.get_as(&token, "/api/v1/audit");
    let completed = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "task.completed" && e["task_id"] == id)
        .unwrap();
    assert_eq!(
        receipt["audit"],
        json!({"entry": completed["id"], "hash": completed["hash"]})
    );
    assert!(
        !signed.to_string().contains("RECEIPT-MARKER"),
        "no value in a receipt"
    );

    // The public key, for anyone (no sign-in).
    let keys_answer: Value = server
        .client
        .get(server.url("/api/v1/keys"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let public_key = keys_answer["receipts"]["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(signed["public_key"], public_key.as_str());

    let file = tmp.path().join("receipt.json");
    std::fs::write(&file, serde_json::to_string_pretty(&signed).unwrap()).unwrap();
    let (code, out) = receipt_verify(&file, Some(&public_key));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("valid: the receipt of deletion task {id}")),
        "{out}"
    );

    let other_key = "ab".repeat(32);
    let (code, out) = receipt_verify(&file, Some(&other_key));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not by the expected key"), "{out}");

    let mut changed = signed.clone();
    changed["receipt"]["result"]["events_deleted"] = json!(4);
    std::fs::write(&file, changed.to_string()).unwrap();
    let (code, out) = receipt_verify(&file, Some(&public_key));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the signature does not match"), "{out}");
}

#[test]
fn an_erasure_receipt_names_its_users_only_by_salted_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_on(&tmp.path().join("data"), &["--privacy-grace", "0s"]);
    let keys: Keys = server.first_start_keys();
    let events = json!([
        {"event_type": "a", "user_id": "erased-person-1", "insert_id": "e1"},
        {"event_type": "a", "user_id": "kept-person-2", "insert_id": "e2"},
    ]);
    assert_eq!(server.send(&keys, events).0, 200);
    let (status, _) = server.basic_post(
        &keys,
        "/api/2/deletions/users",
        &json!({"user_ids": ["erased-person-1"], "requester": "dpo@example.com"}),
    );
    assert_eq!(status, 200);
    let token = server.admin_token();
    let tasks = completed_tasks(&server, &token);
    let signed = receipt_of(&server, &token, tasks[0]["id"].as_i64().unwrap());
    let clause = &signed["receipt"]["spec"]["clauses"][0];
    assert_eq!(clause["kind"], "users");
    let digests = clause["user_digests"].as_array().unwrap();
    assert_eq!(digests.len(), 1);
    assert_eq!(digests[0].as_str().unwrap().len(), 64);
    assert!(clause.get("amplitude_ids").is_none());
    assert!(!signed.to_string().contains("erased-person-1"));
    assert_eq!(signed["receipt"]["result"]["events_deleted"], 1);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(files_under(&path)),
            false => files.push(path),
        }
    }
    files
}
