//! Who may do what. The authorization matrix calls every API endpoint under every kind of
//! identity and checks the status each must get; then: sign-in and Basic-auth guesses are
//! throttled with a lockout, secret keys are stored only as digests and can be rotated,
//! members and viewers reach only the projects granted to them, every change is audited under
//! the authenticated actor, and API answers are never cached.

mod common;

use common::{status_json, Keys, Server, ADMIN_EMAIL, ADMIN_PASSWORD};
use reqwest::blocking::RequestBuilder;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest;

/// The kinds of caller, in the order of each row's expected statuses.
#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    BadToken,
    ExpiredToken,
    RevokedToken,
    /// The administrator's console cookie, without the CSRF token.
    CookieNoCsrf,
    Viewer,
    Member,
    /// A member granted no project.
    Outsider,
    Admin,
    /// Basic auth with project 1's keys.
    Key,
    /// Basic auth with project 2's keys.
    OtherKey,
    /// Basic auth with an API key that does not exist.
    WrongKey,
}

const EVERYONE: [Who; 12] = [
    Who::Nobody,
    Who::BadToken,
    Who::ExpiredToken,
    Who::RevokedToken,
    Who::CookieNoCsrf,
    Who::Viewer,
    Who::Member,
    Who::Outsider,
    Who::Admin,
    Who::Key,
    Who::OtherKey,
    Who::WrongKey,
];

struct Identities {
    bad: String,
    expired: String,
    revoked: String,
    cookie: String,
    viewer: String,
    member: String,
    outsider: String,
    admin: String,
    key: Keys,
    other: Keys,
}

impl Identities {
    fn apply(&self, who: Who, rb: RequestBuilder) -> RequestBuilder {
        match who {
            Who::Nobody => rb,
            Who::BadToken => rb.bearer_auth(&self.bad),
            Who::ExpiredToken => rb.bearer_auth(&self.expired),
            Who::RevokedToken => rb.bearer_auth(&self.revoked),
            Who::CookieNoCsrf => rb.header("cookie", format!("lethe_session={}", self.cookie)),
            Who::Viewer => rb.bearer_auth(&self.viewer),
            Who::Member => rb.bearer_auth(&self.member),
            Who::Outsider => rb.bearer_auth(&self.outsider),
            Who::Admin => rb.bearer_auth(&self.admin),
            Who::Key => rb.basic_auth(&self.key.api_key, Some(&self.key.secret_key)),
            Who::OtherKey => rb.basic_auth(&self.other.api_key, Some(&self.other.secret_key)),
            // A fresh unknown key each time: guesses of one key are throttled (tested below).
            Who::WrongKey => rb.basic_auth(
                format!("no-such-key-{}", uuid::Uuid::new_v4()),
                Some(&self.key.secret_key),
            ),
        }
    }
}

fn user(
    server: &Server,
    admin: &str,
    email: &str,
    role: &str,
    grant: Option<(i64, &str)>,
) -> String {
    let (s, u) = server.post_as(
        admin,
        "/api/v1/users",
        &json!({"email": email, "password": "long enough", "role": role}),
    );
    assert_eq!(s, 201, "{u}");
    if let Some((project, role)) = grant {
        let put = server
            .client
            .put(server.url(&format!("/api/v1/projects/{project}/members/{}", u["id"])))
            .json(&json!({ "role": role }));
        assert_eq!(server.bearer(put, admin).0, 204);
    }
    server.login(email, "long enough")
}

/// Moves a token's expiry into the past, in the metadata database (tokens are stored as their
/// SHA-256).
fn expire(server: &Server, token: &str) {
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let sql = format!("UPDATE api_tokens SET expires_at = 1 WHERE token_sha256 = '{digest}'");
    assert_eq!(common::meta_sql(&server.data_dir, &sql), 1);
}

#[test]
fn every_endpoint_answers_every_identity_as_it_must() {
    let (server, key) = Server::start();
    let admin = server.admin_token();
    let (_, second) = server.post_as(&admin, "/api/v1/projects", &json!({"name": "Second"}));
    let other = Keys::of_project(&second);
    let (_, third) = server.post_as(&admin, "/api/v1/projects", &json!({"name": "Third"}));
    let p1 = key.project_id;
    let (p2, p3) = (other.project_id, third["id"].as_i64().unwrap());
    server.send(
        &key,
        json!([{"event_type": "MatrixDrop", "user_id": "matrix-user"},
               {"event_type": "MatrixKeep", "user_id": "matrix-user"}]),
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    let revoked = server.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let signout = server.client.delete(server.url("/api/v1/auth/session"));
    assert_eq!(server.bearer(signout, &revoked).0, 204);
    let cookie = server.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let expired = server.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    expire(&server, &expired);
    let ids = Identities {
        bad: "0".repeat(64),
        expired,
        revoked,
        cookie,
        viewer: user(
            &server,
            &admin,
            "viewer@example.com",
            "viewer",
            Some((p1, "viewer")),
        ),
        member: user(
            &server,
            &admin,
            "member@example.com",
            "member",
            Some((p1, "member")),
        ),
        outsider: user(&server, &admin, "outsider@example.com", "member", None),
        admin: admin.clone(),
        key: key.clone(),
        other: other.clone(),
    };
    let (_, throwaway) = server.post_as(
        &admin,
        "/api/v1/users",
        &json!({"email": "throwaway@example.com", "password": "long enough", "role": "viewer"}),
    );
    let now = chrono::Utc::now();
    let task = json!({"name": "matrix", "start": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "end": now.to_rfc3339(), "clauses": [{"kind": "event", "event_types": ["MatrixDrop"]}]});
    let mut preview = task.clone();
    preview["clauses"][0]["event_types"] = json!(["MatrixKeep"]);
    let mut submit = task.clone();
    submit["confirm"] = json!("DELETE");
    let (s, submitted) = server.post_as(
        &admin,
        &format!("/api/v1/projects/{p1}/deletion-tasks"),
        &submit,
    );
    assert_eq!(s, 202, "{submitted}");
    let t = submitted["id"].as_i64().unwrap();
    let day = now.format("%Y%m%d").to_string();
    let seg = format!("e=%7B%22event_type%22%3A%22_all%22%7D&start={day}&end={day}");
    let import = r#"{"event_type":"imported","user_id":"matrix-import"}"#;
    let uid = throwaway["id"].as_i64().unwrap();
    let member_id = 1; // the administrator: granting an admin is refused (422)

    // Statuses in EVERYONE's order: nobody, bad, expired, revoked, cookie without CSRF,
    // viewer, member, outsider, admin, key, other project's key, unknown key.
    let rows: Vec<(Method, String, Option<Value>, [u16; 12])> = vec![
        (
            Method::GET,
            "/api/v1/me".into(),
            None,
            [401, 401, 401, 401, 200, 200, 200, 200, 200, 401, 401, 401],
        ),
        (
            Method::GET,
            "/api/v1/projects".into(),
            None,
            [401, 401, 401, 401, 200, 200, 200, 200, 200, 401, 401, 401],
        ),
        (
            Method::POST,
            "/api/v1/projects".into(),
            Some(json!({"name": "m"})),
            [401, 401, 401, 401, 403, 403, 403, 403, 201, 401, 401, 401],
        ),
        (
            Method::GET,
            "/api/v1/users".into(),
            None,
            [401, 401, 401, 401, 200, 403, 403, 403, 200, 401, 401, 401],
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{uid}"),
            Some(json!({"role": "member"})),
            [401, 401, 401, 401, 403, 403, 403, 403, 200, 401, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{p1}/catalog"),
            None,
            [401, 401, 401, 401, 200, 200, 200, 404, 200, 401, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{p2}/catalog"),
            None,
            [401, 401, 401, 401, 200, 404, 404, 404, 200, 401, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{p1}/events/segmentation?{seg}"),
            None,
            [401, 401, 401, 401, 200, 200, 200, 404, 200, 401, 401, 401],
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p1}/import"),
            Some(Value::String(import.into())),
            [401, 401, 401, 401, 403, 403, 200, 404, 200, 401, 401, 401],
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p1}/deletion-tasks/preview"),
            Some(preview),
            [401, 401, 401, 401, 403, 403, 403, 403, 200, 401, 401, 401],
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p1}/deletion-tasks"),
            Some(json!({})),
            [401, 401, 401, 401, 403, 403, 403, 403, 400, 401, 401, 401],
        ),
        (
            Method::GET,
            "/api/v1/deletion-tasks".into(),
            None,
            [401, 401, 401, 401, 200, 200, 200, 200, 200, 401, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v1/deletion-tasks/{t}"),
            None,
            [401, 401, 401, 401, 200, 200, 200, 404, 200, 401, 401, 401],
        ),
        (
            Method::DELETE,
            format!("/api/v1/deletion-tasks/{t}"),
            None,
            [401, 401, 401, 401, 403, 409, 409, 404, 409, 401, 401, 401],
        ),
        (
            Method::POST,
            format!("/api/v1/deletion-tasks/{t}/retry"),
            None,
            [401, 401, 401, 401, 403, 403, 403, 403, 409, 401, 401, 401],
        ),
        (
            Method::GET,
            "/api/v1/audit".into(),
            None,
            [401, 401, 401, 401, 200, 403, 403, 403, 200, 401, 401, 401],
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p3}/secret-key"),
            None,
            [401, 401, 401, 401, 403, 403, 403, 403, 200, 401, 401, 401],
        ),
        (
            Method::PATCH,
            format!("/api/v1/projects/{p3}"),
            Some(json!({"time_zone": "Europe/Paris"})),
            [401, 401, 401, 401, 403, 403, 403, 403, 200, 401, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{p1}/members"),
            None,
            [401, 401, 401, 401, 200, 403, 403, 403, 200, 401, 401, 401],
        ),
        (
            Method::PUT,
            format!("/api/v1/projects/{p1}/members/{member_id}"),
            Some(json!({"role": "viewer"})),
            [401, 401, 401, 401, 403, 403, 403, 403, 422, 401, 401, 401],
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{p2}/members/{uid}"),
            None,
            [401, 401, 401, 401, 403, 403, 403, 403, 204, 401, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{p1}/suppressions"),
            None,
            [401, 401, 401, 401, 200, 403, 403, 403, 200, 401, 401, 401],
        ),
        // The Amplitude read APIs take a project's keys, never a session.
        (
            Method::GET,
            format!("/api/2/export?start={day}T00&end={day}T23"),
            None,
            [401, 401, 401, 401, 401, 401, 401, 401, 401, 200, 404, 401],
        ),
        (
            Method::GET,
            "/api/2/taxonomy/event".into(),
            None,
            [401, 401, 401, 401, 401, 401, 401, 401, 401, 200, 200, 401],
        ),
        (
            Method::GET,
            format!("/api/2/events/segmentation?{seg}"),
            None,
            [401, 401, 401, 401, 401, 401, 401, 401, 401, 200, 200, 401],
        ),
        (
            Method::GET,
            format!("/api/2/deletions/users?start_day={day}&end_day={day}"),
            None,
            [401, 401, 401, 401, 401, 401, 401, 401, 401, 200, 200, 401],
        ),
        // The User Profile API: a project's keys, and only that project's users.
        (
            Method::GET,
            "/v1/userprofile?user_id=matrix-import".into(),
            None,
            [401, 401, 401, 401, 401, 401, 401, 401, 401, 200, 404, 401],
        ),
        // Erasing: a project's keys for one project; an admin's token only across the organization.
        (
            Method::POST,
            "/api/2/deletions/users".into(),
            Some(json!({"user_ids": ["nobody-known"], "ignore_invalid_id": true})),
            [401, 401, 401, 401, 401, 403, 403, 403, 400, 200, 200, 401],
        ),
        (
            Method::POST,
            "/api/2/deletions/users".into(),
            Some(
                json!({"user_ids": ["nobody-known"], "ignore_invalid_id": true, "delete_from_org": true}),
            ),
            [401, 401, 401, 401, 401, 403, 403, 403, 200, 403, 403, 401],
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, expected) in &rows {
        for (who, want) in EVERYONE.iter().zip(expected) {
            let mut rb = server.client.request(method.clone(), server.url(path));
            rb = match body {
                Some(Value::String(text)) => rb.body(text.clone()),
                Some(json) => rb.json(json),
                None => rb,
            };
            let r = ids.apply(*who, rb).send().unwrap();
            let got = r.status().as_u16();
            if path.starts_with("/api/") {
                assert_eq!(
                    r.headers()
                        .get("cache-control")
                        .map(|v| v.to_str().unwrap()),
                    Some("no-store"),
                    "{method} {path}"
                );
            }
            if got != *want {
                let (_, body) = status_json(r);
                wrong.push(format!(
                    "{method} {path} as {who:?}: {got}, expected {want}: {body}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Another project's key never reaches project 1's data.
    let (_, events) = server.export(&other, &format!("{day}T00"), &format!("{day}T23"));
    assert!(events.iter().all(|e| e["app"] == p2), "{events:?}");
    server.stop();
}

#[test]
fn guessing_is_locked_out_and_every_attempt_audited() {
    let (server, keys) = Server::start();
    let login = |password: &str| {
        let r = server
            .client
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": password}))
            .send()
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (r.status().as_u16(), retry)
    };
    let statuses: Vec<u16> = (0..8).map(|_| login("wrong password").0).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429, 429, 429]);
    // Locked: the right password is refused too, with the time to wait.
    let (status, retry) = login(ADMIN_PASSWORD);
    assert_eq!(status, 429);
    let wait = retry.expect("Retry-After");
    assert!((1..=2).contains(&wait), "{wait}");
    std::thread::sleep(std::time::Duration::from_secs(wait));
    assert_eq!(login(ADMIN_PASSWORD).0, 200);
    // An unknown email costs as much (argon2 runs all the same) and locks the same way.
    let unknown = |n: usize| {
        server
            .post_json(
                "/api/v1/auth/login",
                &json!({"email": "ghost@example.com", "password": format!("p{n}")}),
            )
            .status()
            .as_u16()
    };
    let statuses: Vec<u16> = (0..6).map(unknown).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);

    // Basic auth: guesses of a key's secret lock that key (from this address) only.
    let guess = |secret: &str| {
        server
            .client
            .get(server.url("/api/2/taxonomy/event"))
            .basic_auth(&keys.api_key, Some(secret))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let statuses: Vec<u16> = (0..6).map(|_| guess("wrong-secret")).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);
    assert_eq!(guess(&keys.secret_key), 429, "locked, the right secret too");
    let admin = server.admin_token();
    let (_, p) = server.post_as(&admin, "/api/v1/projects", &json!({"name": "Unaffected"}));
    assert_eq!(
        server
            .basic_get(&Keys::of_project(&p), "/api/2/taxonomy/event")
            .0,
        200
    );

    let (_, audit) = server.get_as(&admin, "/api/v1/audit");
    let entries = audit.as_array().unwrap();
    let count = |action: &str, actor: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["actor"] == actor)
            .count()
    };
    // Five checked failures each (the fifth starts the lock); refused attempts are not checked.
    assert_eq!(count("auth.sign_in_failed", ADMIN_EMAIL), 5);
    assert_eq!(count("auth.sign_in_failed", "unknown"), 5);
    assert!(
        !audit.to_string().contains("ghost@example.com"),
        "typed text is not kept"
    );
    assert!(count("auth.signed_in", ADMIN_EMAIL) >= 2);
    server.stop();
}

#[test]
fn secret_keys_are_kept_as_digests_and_changes_are_audited_under_their_actor() {
    let (server, keys) = Server::start();
    let admin = server.admin_token();
    let (_, p) = server.post_as(&admin, "/api/v1/projects", &json!({"name": "Mobile"}));
    let mobile = Keys::of_project(&p);
    let (_, rotated) = server.post_as(
        &admin,
        &format!("/api/v1/projects/{}/secret-key", mobile.project_id),
        &json!({}),
    );
    let new_secret = rotated["secret_key"].as_str().unwrap().to_string();
    let (_, u) = server.post_as(
        &admin,
        "/api/v1/users",
        &json!({"email": "ana@example.com", "password": "long enough", "role": "viewer"}),
    );
    let put = server
        .client
        .put(server.url(&format!(
            "/api/v1/projects/{}/members/{}",
            mobile.project_id, u["id"]
        )))
        .json(&json!({"role": "member"}));
    assert_eq!(server.bearer(put, &admin).0, 204);
    let member = server.login("ana@example.com", "long enough");
    assert_eq!(
        server
            .import(
                &member,
                mobile.project_id,
                r#"{"event_type":"imported","user_id":"user-import"}"#
            )
            .0,
        200
    );
    let (s, _) = server.post_as(
        &admin,
        "/api/2/deletions/users",
        &json!({"user_ids": ["user-import"], "delete_from_org": true, "requester": "dpo@example.com"}),
    );
    assert_eq!(s, 200);

    let (_, audit) = server.get_as(&admin, "/api/v1/audit");
    let find = |action: &str| -> Value {
        audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("{action} audited: {audit}"))
            .clone()
    };
    assert_eq!(
        find("project.created")["actor"],
        "system",
        "the first start"
    );
    assert_eq!(find("user.created")["actor"], ADMIN_EMAIL);
    assert_eq!(find("project.secret_rotated")["actor"], ADMIN_EMAIL);
    assert_eq!(find("project.member_changed")["detail"]["role"], "member");
    assert_eq!(find("import")["actor"], "ana@example.com");
    assert_eq!(find("import")["detail"]["stored"], 1);
    let requested = find("privacy.requested");
    assert_eq!(requested["actor"], ADMIN_EMAIL, "the authenticated actor");
    assert_eq!(
        requested["detail"]["requester"], "dpo@example.com",
        "as given"
    );
    // No secret key, old or new, is anywhere on disk.
    let found = common::scan(
        &server.data_dir,
        &[&keys.secret_key, &mobile.secret_key, &new_secret],
    );
    assert!(found.is_empty(), "{found:?}");
    server.stop();
}
