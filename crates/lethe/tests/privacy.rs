//! The User Privacy API over HTTP: schedule, list, withdraw, run after the grace period, and
//! proof that the users' events, profiles and ids are gone while everyone else's data is
//! unchanged.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{answer_unless_aborted, scan, status_json, Keys, Server};
use reqwest::blocking::RequestBuilder;
use serde_json::{json, Value};

const PATH: &str = "/api/2/deletions/users";

fn server_on(dir: &Path, grace: &str) -> Server {
    Server::start_on(dir, &["--privacy-grace", grace])
}

fn fresh(grace: &str) -> (Server, Keys, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let server = server_on(&tmp.path().join("data"), grace);
    let keys = server.first_start_keys();
    (server, keys, tmp)
}

/// A deletion request of the User Privacy API as the project of `keys`.
fn deletion(server: &Server, keys: &Keys, body: &Value) -> RequestBuilder {
    server
        .client
        .post(server.url(PATH))
        .basic_auth(&keys.api_key, Some(&keys.secret_key))
        .json(body)
}

fn request(server: &Server, keys: &Keys, body: &Value) -> (u16, Value) {
    status_json(deletion(server, keys, body).send().unwrap())
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// The project's jobs from yesterday to a week ahead.
fn jobs(server: &Server, keys: &Keys) -> Vec<Value> {
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::days(1)).format("%Y%m%d");
    let to = (now + chrono::Duration::days(7)).format("%Y-%m-%d");
    let (s, body) = server.basic_get(keys, &format!("{PATH}?start_day={from}&end_day={to}"));
    assert_eq!(s, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn wait_all_done(server: &Server, keys: &Keys) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = jobs(server, keys);
        if !list.is_empty() && list.iter().all(|j| j["status"] == "done") {
            return list;
        }
        assert!(Instant::now() < deadline, "jobs never finished: {list:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three users: two to erase, one to keep; each with identifying values.
fn people(server: &Server, keys: &Keys, round: &str) {
    let mut events = Vec::new();
    for (who, secret) in [("alice", "ALICE"), ("bob", "BOB"), ("carol", "CAROL")] {
        for i in 0..3 {
            events.push(json!({
                "event_type": format!("page_{i}"),
                "user_id": format!("privacy-{who}"),
                "device_id": format!("device-{who}"),
                "insert_id": format!("{who}-{round}-{i}"),
                "event_properties": {"email": format!("{secret}-EMAIL-{round}")},
                "user_properties": {"$set": {"plan": format!("{secret}-PLAN")}},
            }));
        }
    }
    let (s, body) = server.send(keys, Value::Array(events));
    assert_eq!(s, 200, "{body}");
}

/// Events by user_id, keyed by insert_id.
fn by_user(events: &[Value]) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for e in events {
        let user = e["user_id"].as_str().unwrap_or("").to_string();
        let id = e["$insert_id"].as_str().unwrap_or("").to_string();
        out.entry(user).or_default().insert(id, e.clone());
    }
    out
}

fn amplitude_id_of(events: &[Value], user: &str) -> i64 {
    events
        .iter()
        .find(|e| e["user_id"] == user)
        .and_then(|e| e["amplitude_id"].as_i64())
        .unwrap()
}

#[test]
fn erasure_removes_every_trace_of_the_users_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = server_on(&dir, "3s");
    let keys = server.first_start_keys();
    // One round reaches segments (a graceful stop flushes), the next stays in the WAL.
    people(&server, &keys, "r1");
    server.stop();
    let server = server_on(&dir, "3s");
    people(&server, &keys, "r2");
    let before = server.export_today(&keys);
    assert_eq!(before.len(), 18);
    let (alice, bob) = (
        amplitude_id_of(&before, "privacy-alice"),
        amplitude_id_of(&before, "privacy-bob"),
    );

    let (s, job) = request(
        &server,
        &keys,
        &json!({"user_ids": ["privacy-alice"], "amplitude_ids": [bob],
                "requester": "dpo@example.com", "include_mapped_user_ids": true}),
    );
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["status"], "staging");
    let ids = job["amplitude_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{job}");
    for item in ids {
        assert_eq!(item["requester"], "dpo@example.com");
        assert_eq!(item["requested_on_day"], today());
    }
    let alice_item = ids.iter().find(|i| i["amplitude_id"] == alice).unwrap();
    assert_eq!(alice_item["user_id"], "privacy-alice");
    let listed = jobs(&server, &keys);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["day"], job["day"]);

    let done = wait_all_done(&server, &keys);
    assert!(done[0]["active_scrub_done_date"].is_string());
    let after = server.export_today(&keys);
    let (was, now) = (by_user(&before), by_user(&after));
    assert_eq!(now.keys().collect::<Vec<_>>(), vec!["privacy-carol"]);
    assert_eq!(was["privacy-carol"], now["privacy-carol"], "carol changed");
    // The catalog counts only what is left: carol's two events of each type.
    let (_, taxonomy) = server.basic_get(&keys, "/api/2/taxonomy/event");
    let counts: Vec<i64> = taxonomy["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, vec![2, 2, 2], "{taxonomy}");

    // No file under the data dir holds an erased id or value; carol's are still there.
    let erased = [
        "privacy-alice",
        "privacy-bob",
        "device-alice",
        "device-bob",
        "ALICE-EMAIL-r1",
        "ALICE-EMAIL-r2",
        "BOB-EMAIL-r1",
        "ALICE-PLAN",
        "BOB-PLAN",
    ];
    assert_eq!(scan(&dir, &erased), Vec::<String>::new());
    assert_eq!(
        scan(&dir, &["CAROL-EMAIL-r1", "CAROL-EMAIL-r2", "CAROL-PLAN"]).len(),
        3
    );

    // The job ran as a task on the deletion queue, and every step is audited without values.
    let token = server.admin_token();
    let (_, tasks) = server.get_as(&token, "/api/v1/deletion-tasks");
    let task = &tasks[0];
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["events_deleted"], 12, "{task}");
    assert_eq!(task["result"]["users_erased"], 2, "{task}");
    let actions = server.audit_actions(&token);
    for a in [
        "privacy.requested",
        "privacy.submitted",
        "task.completed",
        "privacy.done",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let (_, audit) = server.get_as(&token, "/api/v1/audit");
    let text = audit.to_string();
    assert!(text.contains("dpo@example.com") && text.contains(&alice.to_string()));
    assert!(!text.contains("ALICE-") && !text.contains("privacy-alice"));

    // Withdrawing from a finished job is refused.
    let r = server
        .client
        .delete(server.url(&format!("{PATH}/{alice}/{}", job["day"].as_str().unwrap())))
        .basic_auth(&keys.api_key, Some(&keys.secret_key))
        .send()
        .unwrap();
    let (s, body) = status_json(r);
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["field"], "day");

    // A user who comes back is a new user.
    people(&server, &keys, "r3");
    let returned = server.export_today(&keys);
    let new_alice = amplitude_id_of(&returned, "privacy-alice");
    assert_ne!(new_alice, alice);
    assert!(!returned
        .iter()
        .any(|e| e["user_properties"]["plan"] == "ALICE-PLAN"
            && e["$insert_id"].as_str().unwrap().contains("r1")));

    // Any Parquet reader still reads the rewritten segments: carol's 9 events, 6 new ones.
    server.stop();
    assert_eq!(
        common::duckdb_counts(&dir),
        json!({"page_0": 5, "page_1": 5, "page_2": 5})
    );
}

#[test]
fn requests_are_validated_and_can_be_withdrawn_while_staging() {
    let (server, keys, _tmp) = fresh("1h");
    people(&server, &keys, "r1");
    let events = server.export_today(&keys);
    let (alice, bob) = (
        amplitude_id_of(&events, "privacy-alice"),
        amplitude_id_of(&events, "privacy-bob"),
    );

    let (s, body) = request(&server, &keys, &json!({"amplitude_ids": [alice, 999999]}));
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["invalid_ids"], json!(["999999"]));
    assert!(jobs(&server, &keys).is_empty(), "nothing may be scheduled");

    let (s, body) = request(
        &server,
        &keys,
        &json!({"amplitude_ids": [alice, bob, 999999], "user_ids": ["nobody"],
                "ignore_invalid_ids": "true", "requester": "legal"}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["invalid_ids"], json!(["999999", "nobody"]));
    assert_eq!(body["amplitude_ids"].as_array().unwrap().len(), 2);
    let day = body["day"].as_str().unwrap().to_string();

    let withdraw = |id: i64, secret: &str| {
        status_json(
            server
                .client
                .delete(server.url(&format!("{PATH}/{id}/{day}")))
                .basic_auth(&keys.api_key, Some(secret))
                .send()
                .unwrap(),
        )
    };
    let (s, body) = withdraw(alice, &keys.secret_key);
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["amplitude_id"].as_i64(), body["requester"].as_str()),
        (Some(alice), Some("legal"))
    );
    assert_eq!(withdraw(alice, &keys.secret_key).0, 404);
    assert_eq!(withdraw(bob, "wrong-secret").0, 401);
    let listed = jobs(&server, &keys);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["amplitude_ids"].as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["status"], "staging");

    // Bad input names its field; a wrong secret is refused everywhere.
    let many: Vec<i64> = (1..=101).collect();
    for (body, field) in [
        (json!({"amplitude_ids": many}), "amplitude_ids"),
        (json!({}), "amplitude_ids"),
        (json!({"amplitude_ids": ["x"]}), "amplitude_ids"),
        (
            json!({"user_ids": ["a"], "ignore_invalid_id": 3}),
            "ignore_invalid_id",
        ),
    ] {
        let (s, err) = request(&server, &keys, &body);
        assert_eq!(
            (s, err["field"].as_str()),
            (400, Some(field)),
            "{body}: {err}"
        );
    }
    for query in [
        "",
        "?start_day=2026-01-01",
        "?start_day=2026-01-01&end_day=2026-12-31",
    ] {
        let (s, err) = server.basic_get(&keys, &format!("{PATH}{query}"));
        assert_eq!(s, 400, "{query}: {err}");
    }
    let wrong = Keys {
        secret_key: "wrong".into(),
        ..keys.clone()
    };
    assert_eq!(
        request(&server, &wrong, &json!({"amplitude_ids": [bob]})).0,
        401
    );
    assert_eq!(
        server
            .basic_get(
                &wrong,
                &format!("{PATH}?start_day=20260101&end_day=20260102")
            )
            .0,
        401
    );
}

#[test]
fn delete_from_org_erases_the_user_in_every_project() {
    let (server, keys, _tmp) = fresh("1s");
    let token = server.admin_token();
    let (s, second) = server.post_as(&token, "/api/v1/projects", &json!({"name": "Second"}));
    assert_eq!(s, 201, "{second}");
    let second = Keys::of_project(&second);
    people(&server, &keys, "p1");
    people(&server, &second, "p2");

    // A project's keys reach that project only: erasing across the organization takes an
    // administrator's token.
    let org_wide = json!({"user_ids": ["privacy-alice", "ghost"], "delete_from_org": true});
    let (s, body) = request(&server, &keys, &org_wide);
    assert_eq!(
        (s, body["field"].clone()),
        (403, json!("delete_from_org")),
        "{body}"
    );
    let (s, body) = server.post_as(&token, PATH, &org_wide);
    assert_eq!(s, 200, "{body}");
    let apps: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["app"].as_str().unwrap())
        .collect();
    assert_eq!(
        apps,
        vec![keys.project_id.to_string(), second.project_id.to_string()]
    );
    wait_all_done(&server, &keys);
    wait_all_done(&server, &second);
    for k in [&keys, &second] {
        let users = by_user(&server.export_today(k));
        assert_eq!(
            users.keys().collect::<Vec<_>>(),
            vec!["privacy-bob", "privacy-carol"]
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature (scripts/test.sh)"
)]
fn a_submitted_job_interrupted_by_a_crash_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start_with_env(
        &dir,
        &["--privacy-grace", "0s"],
        &[("LETHE_FAILPOINT", "delete:before_complete")],
    );
    let keys = server.first_start_keys();
    people(&server, &keys, "r1");
    let bob = json!({"user_ids": ["privacy-bob"]});
    if let Some((s, body)) = answer_unless_aborted(deletion(&server, &keys, &bob)) {
        assert_eq!(s, 200, "{body}");
    }
    let dir = server.wait_exit(Duration::from_secs(60));

    let server = server_on(&dir, "0s");
    let done = wait_all_done(&server, &keys);
    assert_eq!(done.len(), 1);
    let users = by_user(&server.export_today(&keys));
    assert_eq!(
        users.keys().collect::<Vec<_>>(),
        vec!["privacy-alice", "privacy-carol"]
    );
    assert_eq!(
        scan(&dir, &["BOB-EMAIL-r1", "device-bob"]),
        Vec::<String>::new()
    );
}

#[test]
fn suppression_drops_a_returning_users_events_until_lifted() {
    let (server, keys, _tmp) = fresh("1s");
    people(&server, &keys, "r1");
    let (s, body) = request(
        &server,
        &keys,
        &json!({"user_ids": ["privacy-alice"], "suppress": true, "requester": "dpo"}),
    );
    assert_eq!(s, 200, "{body}");
    wait_all_done(&server, &keys);

    people(&server, &keys, "r2");
    let users = by_user(&server.export_today(&keys));
    assert!(
        !users.contains_key("privacy-alice"),
        "suppressed events were stored"
    );
    assert_eq!(users["privacy-bob"].len(), 6);

    let token = server.admin_token();
    let path = format!("/api/v1/projects/{}/suppressions", keys.project_id);
    let (s, list) = server.get_as(&token, &path);
    assert_eq!(s, 200, "{list}");
    let entries = list["suppressions"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert!(
        !list.to_string().contains("privacy-alice"),
        "only a hash is kept"
    );
    let id = entries[0]["id"].as_i64().unwrap();
    let r = server
        .client
        .delete(server.url(&format!("{path}/{id}")))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    people(&server, &keys, "r3");
    let users = by_user(&server.export_today(&keys));
    assert_eq!(users["privacy-alice"].len(), 3, "lifted: accepted again");
}

#[test]
fn an_erased_user_has_no_profile_and_identify_data_is_erased_too() {
    let (server, keys, tmp) = fresh("1s");
    people(&server, &keys, "r1");
    // A profile change made through the Identify API only (no event carries it).
    let identification =
        json!({"user_id": "privacy-bob", "user_properties": {"$set": {"phone": "BOB-PHONE"}}});
    let (s, _) = status_json(server.post_json(
        "/identify",
        &json!({"api_key": keys.api_key, "identification": identification}),
    ));
    assert_eq!(s, 200);
    let profile = |user: &str| {
        server.user_profile(
            &keys.secret_key,
            &format!("user_id={user}&get_amp_props=true"),
        )
    };
    let (s, before) = profile("privacy-bob");
    assert_eq!(s, 200);
    assert_eq!(before["userData"]["amp_props"]["phone"], "BOB-PHONE");

    let (s, body) = request(&server, &keys, &json!({"user_ids": ["privacy-bob"]}));
    assert_eq!(s, 200, "{body}");
    wait_all_done(&server, &keys);
    assert_eq!(profile("privacy-bob").0, 404);
    assert_eq!(profile("privacy-alice").0, 200);
    let dir = tmp.path().join("data");
    assert_eq!(
        scan(&dir, &["BOB-PHONE", "BOB-PLAN", "ALICE-PLAN"]),
        vec!["ALICE-PLAN"]
    );
}
