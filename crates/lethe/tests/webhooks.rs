//! Webhooks: a receiver on loopback gets every status change of a deletion task and of a
//! privacy job exactly once, signed with the secret shown at registration, even though it
//! refused deliveries for a while and the server was killed with `kill -9` in between;
//! payloads hold no value; the delivery log shows the attempts; only administrators manage
//! webhooks.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::Server;
use serde_json::{json, Value};

/// One request the receiver took: its headers (lowercased names) and body.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: String,
}

/// An HTTP receiver on loopback: answers 503 while `refusing`, else 204, and keeps every
/// request it accepted (one per connection).
struct Receiver {
    url: String,
    refusing: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/lethe", listener.local_addr().unwrap());
        let refusing = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (r, a, n) = (refusing.clone(), accepted.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = BTreeMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let Some((name, value)) = line.trim_end().split_once(':') else {
                        break;
                    };
                    headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
                }
                let length: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = match r.load(Ordering::SeqCst) {
                    true => {
                        *n.lock().unwrap() += 1;
                        "503 Service Unavailable"
                    }
                    false => {
                        a.lock().unwrap().push(Received {
                            headers,
                            body: String::from_utf8(body).unwrap(),
                        });
                        "204 No Content"
                    }
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver {
            url,
            refusing,
            accepted,
            refused,
        }
    }

    /// The accepted events' types, in arrival order.
    fn types(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let body: Value = serde_json::from_str(&r.body).unwrap();
                body["type"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.accepted.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "only {:?} arrived", self.types());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `r` carries a valid Standard Webhooks signature with `secret`.
fn signed_with(r: &Received, secret: &str) -> bool {
    use hmac::Mac;
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    let signed = format!(
        "{}.{}.{}",
        r.headers["webhook-id"], r.headers["webhook-timestamp"], r.body
    );
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.headers["webhook-signature"] == expected
}

fn wait_status(server: &Server, token: &str, status: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, tasks) = server.get_as(token, "/api/v1/deletion-tasks");
        let tasks = tasks.as_array().cloned().unwrap_or_default();
        if !tasks.is_empty() && tasks.iter().all(|t| t["status"] == status) {
            return tasks;
        }
        assert!(Instant::now() < deadline, "tasks: {tasks:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_receiver_gets_every_transition_exactly_once_across_a_kill_and_restart() {
    let receiver = Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--webhook-retry", "100ms", "--privacy-grace", "0s"];
    let server = Server::start_on(&tmp.path().join("data"), &flags);
    let keys = server.first_start_keys();
    let token = server.admin_token();

    // Only administrators manage webhooks; a URL is checked.
    let member = server.member_token(&token, "member@example.com");
    assert_eq!(server.get_as(&member, "/api/v1/webhooks").0, 403);
    let hook = json!({ "url": receiver.url });
    assert_eq!(server.post_as(&member, "/api/v1/webhooks", &hook).0, 403);
    let (status, body) = server.post_as(&token, "/api/v1/webhooks", &json!({"url": "ftp://x/"}));
    assert_eq!((status, body["field"].as_str()), (400, Some("url")));
    let (status, registered) = server.post_as(&token, "/api/v1/webhooks", &hook);
    assert_eq!(status, 201, "{registered}");
    let secret = registered["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let (_, listed) = server.get_as(&token, "/api/v1/webhooks");
    assert_eq!(listed["webhooks"][0]["url"], receiver.url.as_str());
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is shown once"
    );

    // A task runs to completion while the receiver refuses everything.
    let events = json!([
        {"event_type": "Test Flood", "user_id": "webhook-user-1", "event_properties": {"note": "HOOK-VALUE-MARKER"}},
        {"event_type": "Kept", "user_id": "webhook-user-2"},
    ]);
    assert_eq!(server.send(&keys, events).0, 200);
    std::thread::sleep(Duration::from_millis(5));
    let (status, task) = server.submit_last_hour(
        &token,
        keys.project_id,
        json!({"name": "Remove the flood", "clauses": [{"kind": "event_property", "properties": ["note"]}]}),
    );
    assert_eq!(status, 202, "{task}");
    wait_status(&server, &token, "completed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while *receiver.refused.lock().unwrap() < 4 {
        assert!(Instant::now() < deadline, "no delivery was attempted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed with the three deliveries still pending; the receiver is back before it is.
    let dir = server.kill9();
    receiver.refusing.store(false, Ordering::SeqCst);
    let server = Server::start_on(&dir, &flags);
    receiver.wait_for(3);

    // A privacy job after the restart: its own event types.
    let (status, _) = server.basic_post(
        &keys,
        "/api/2/deletions/users",
        &json!({"user_ids": ["webhook-user-2"], "requester": "dpo@example.com"}),
    );
    assert_eq!(status, 200);
    wait_status(&server, &token, "completed");
    receiver.wait_for(6);
    std::thread::sleep(Duration::from_millis(1500)); // anything sent twice would be here now

    let types = receiver.types();
    assert_eq!(
        types,
        [
            "deletion_task.queued",
            "deletion_task.running",
            "deletion_task.completed",
            "privacy_job.queued",
            "privacy_job.running",
            "privacy_job.completed",
        ]
    );
    let accepted = receiver.accepted.lock().unwrap().clone();
    let ids: std::collections::BTreeSet<&String> =
        accepted.iter().map(|r| &r.headers["webhook-id"]).collect();
    assert_eq!(ids.len(), 6, "every event once, under its own id");
    for r in &accepted {
        assert!(signed_with(r, &secret), "{r:?}");
        assert!(!r.body.contains("HOOK-VALUE-MARKER") && !r.body.contains("webhook-user"));
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], r.headers["webhook-id"].as_str());
    }
    let completed: Value = serde_json::from_str(&accepted[2].body).unwrap();
    assert_eq!(completed["data"]["task_id"], task["id"]);
    assert_eq!(completed["data"]["event_property_values_removed"], 1);
    let erased: Value = serde_json::from_str(&accepted[5].body).unwrap();
    assert_eq!(erased["data"]["users_erased"], 1);
    assert!(erased["data"]["privacy_job_id"].is_i64());

    // The log: all delivered, the early ones after several attempts with the 503 recorded.
    let (status, log) = server.get_as(
        &token,
        &format!("/api/v1/webhooks/{}/deliveries", registered["id"]),
    );
    assert_eq!(status, 200);
    let log = log["deliveries"].as_array().unwrap();
    assert_eq!(log.len(), 6);
    assert!(log.iter().all(|d| d["status"] == "delivered"), "{log:?}");
    let first = &log[5];
    assert_eq!(first["payload"]["type"], "deletion_task.queued");
    assert!(first["attempts"].as_i64().unwrap() >= 2, "{first}");
    assert_eq!(
        server
            .get_as(
                &member,
                &format!("/api/v1/webhooks/{}/deliveries", registered["id"])
            )
            .0,
        403
    );

    // A test event, on an administrator's demand, goes the same way.
    let test = format!("/api/v1/webhooks/{}/test", registered["id"]);
    assert_eq!(server.post_as(&member, &test, &json!({})).0, 403);
    assert_eq!(
        server
            .post_as(&token, "/api/v1/webhooks/999/test", &json!({}))
            .0,
        404
    );
    assert_eq!(server.post_as(&token, &test, &json!({})).0, 202);
    receiver.wait_for(7);
    assert_eq!(receiver.types()[6], "webhook.test");
    assert!(signed_with(&receiver.accepted.lock().unwrap()[6], &secret));

    // Removed: audited, and nothing more is sent.
    let removed = server
        .client
        .delete(server.url(&format!("/api/v1/webhooks/{}", registered["id"])))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    let actions = server.audit_actions(&token);
    assert!(
        actions.contains(&"webhook.added".to_string()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"webhook.removed".to_string()),
        "{actions:?}"
    );
}
