//! A 200 means the events are on disk: `kill -9` at any moment loses nothing acknowledged,
//! and a client retry with the same insert_ids stores nothing twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::{Keys, Server};
use serde_json::{json, Value};

const CLIENTS: usize = 4;
const BATCHES: usize = 60;
const EVENTS: usize = 25;

/// (client, batch number)
type BatchId = (usize, usize);

fn batch(client: usize, b: usize) -> Vec<Value> {
    (0..EVENTS)
        .map(|i| {
            json!({"event_type": "durable", "device_id": format!("device-{client}"),
                   "insert_id": format!("c{client}-b{b}-e{i}"), "event_properties": {"b": b, "i": i}})
        })
        .collect()
}

/// Sends every batch; returns (acknowledged, unacknowledged) batch ids.
fn send_all(url: &str, keys: &Keys, batches: &[BatchId]) -> (Vec<BatchId>, Vec<BatchId>) {
    let client = reqwest::blocking::Client::new();
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    for &(c, b) in batches {
        let r = client
            .post(format!("{url}/2/httpapi"))
            .json(&json!({"api_key": keys.api_key, "events": batch(c, b)}))
            .send();
        match r {
            Ok(r) if r.status().as_u16() == 200 => acked.push((c, b)),
            _ => failed.push((c, b)),
        }
    }
    (acked, failed)
}

#[test]
fn kill_9_loses_nothing_acknowledged_and_retries_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // Frequent flushes, so that the kill lands in any step: WAL append, flush, compaction.
    // Each client is one device sending as fast as it can: a load test, not an SDK, so the
    // per-device rate limit is off.
    let flags = [
        "--flush-interval",
        "50ms",
        "--flush-events",
        "300",
        "--device-eps-limit",
        "0",
    ];
    let server = Server::start_on(&dir, &flags);
    let keys = server.first_start_keys();
    let url = server.url.clone();
    let results = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let senders: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, keys, results) = (url.clone(), keys.clone(), results.clone());
            std::thread::spawn(move || {
                let mine: Vec<BatchId> = (0..BATCHES).map(|b| (c, b)).collect();
                let (acked, failed) = send_all(&url, &keys, &mine);
                let mut r = results.lock().unwrap();
                r.0.extend(acked);
                r.1.extend(failed);
            })
        })
        .collect();
    // Kill once some batches are acknowledged, while the clients are still sending.
    loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let text = reqwest::blocking::get(format!("{url}/metrics"))
            .unwrap()
            .text()
            .unwrap();
        let ingested = text
            .lines()
            .find_map(|l| l.strip_prefix("lethe_events_ingested_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if ingested >= (CLIENTS * BATCHES * EVENTS / 3) as f64 {
            break;
        }
    }
    let dir = server.kill9();
    for s in senders {
        s.join().unwrap();
    }
    let (acked, failed) = std::mem::take(&mut *results.lock().unwrap());
    assert!(
        !acked.is_empty() && !failed.is_empty(),
        "the kill landed mid-stream: {} acked, {} failed",
        acked.len(),
        failed.len()
    );

    let server = Server::start_on(&dir, &flags);
    let acknowledged: BTreeSet<String> = acked
        .iter()
        .flat_map(|&(c, b)| batch(c, b))
        .map(|e| e["insert_id"].as_str().unwrap().to_string())
        .collect();
    let stored = count_by_insert_id(&server, &keys);
    for id in &acknowledged {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "acknowledged event {id} survived exactly once"
        );
    }
    // The clients retry what was never acknowledged, and everything once more for good measure.
    let (retried, still_failing) = send_all(&server.url, &keys, &failed);
    assert!(still_failing.is_empty());
    assert_eq!(retried.len(), failed.len());
    send_all(&server.url, &keys, &acked);
    let stored = count_by_insert_id(&server, &keys);
    assert_eq!(
        stored.len(),
        CLIENTS * BATCHES * EVENTS,
        "every event stored"
    );
    assert!(stored.values().all(|n| *n == 1), "no event stored twice");
    server.stop();
}

/// Flushes that cannot keep up (here: no segment can be written) do not let unflushed events
/// grow without bound: past `--max-unflushed-events` ingestion waits for a flush, then answers
/// 503 `flush_behind` and stores nothing of the batch; what was acknowledged survives
/// `kill -9`, and once flushes work again the refused batch is stored once.
#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn flushes_falling_behind_refuse_ingestion_past_the_limit_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--flush-events", "50", "--max-unflushed-events", "100"];
    let server = Server::start_with_env(
        &tmp.path().join("data"),
        &flags,
        &[("LETHE_FAULTS", "segment_write@1-1000000")],
    );
    let keys = server.first_start_keys();
    let (acked, failed) = send_all(&server.url, &keys, &[(0, 0), (0, 1), (0, 2), (0, 3)]);
    assert_eq!(acked.len(), 4, "100 events fit under the limit");
    assert!(failed.is_empty());
    let refused = reqwest::blocking::Client::new()
        .post(server.url("/2/httpapi"))
        .json(&json!({"api_key": keys.api_key, "events": batch(0, 4)}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().unwrap();
    assert_eq!(body["reason"], "flush_behind", "{body}");
    let health = server.health();
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["flush"]
        .as_str()
        .unwrap()
        .starts_with("behind: 100 events"));
    let dir = server.kill9();

    let server = Server::start_on(&dir, &flags);
    let stored = count_by_insert_id(&server, &keys);
    assert_eq!(
        stored.len(),
        4 * EVENTS,
        "every acknowledged event, none refused"
    );
    assert!(stored.values().all(|n| *n == 1));
    assert!(
        !stored.contains_key("c0-b4-e0"),
        "the refused batch was not stored"
    );
    let (retried, still_failing) = send_all(&server.url, &keys, &[(0, 4)]);
    assert!(still_failing.is_empty() && retried.len() == 1);
    // The retry was taken once a flush made room: the node is no longer behind.
    let health = server.health();
    assert_eq!(health["status"], "ok", "{health}");
    let stored = count_by_insert_id(&server, &keys);
    assert_eq!(stored.len(), 5 * EVENTS);
    assert!(stored.values().all(|n| *n == 1));
    server.stop();
}

fn count_by_insert_id(server: &Server, keys: &Keys) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in server.export_today(keys) {
        *counts
            .entry(e["$insert_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}
