//! What the web console stands on, over HTTP: cookie sessions with CSRF protection, pages
//! refused by role, user administration, the catalog, and event segmentation.

mod common;

use common::{status_json, Keys, Server, ADMIN_EMAIL, ADMIN_PASSWORD};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// A browser-like client: keeps cookies, follows no redirects.
fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in through the console's session endpoint; returns the CSRF token.
fn open_session(server: &Server, client: &Client, email: &str, password: &str) -> String {
    let r = client
        .post(server.url("/api/v1/auth/session"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in [
        "lethe_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    let (s, body) = status_json(r);
    assert_eq!(s, 200, "{body}");
    assert!(body.get("token").is_none(), "the token stays in the cookie");
    body["csrf_token"].as_str().unwrap().to_string()
}

#[test]
fn cookie_sessions_need_the_csrf_token_to_change_anything_and_end_on_sign_out() {
    let (server, _) = Server::start();
    let client = browser();
    let csrf = open_session(&server, &client, ADMIN_EMAIL, ADMIN_PASSWORD);
    let create = |token: Option<&str>, name: &str| {
        let mut rb = client
            .post(server.url("/api/v1/projects"))
            .json(&json!({"name": name}));
        if let Some(t) = token {
            rb = rb.header("x-csrf-token", t);
        }
        status_json(rb.send().unwrap())
    };
    let (s, err) = create(None, "no-csrf");
    assert_eq!(
        (s, err["field"].as_str()),
        (403, Some("x-csrf-token")),
        "{err}"
    );
    assert_eq!(create(Some("forged"), "forged").0, 403);
    assert_eq!(create(Some(&csrf), "with-csrf").0, 201);
    let (s, me) = status_json(client.get(server.url("/api/v1/me")).send().unwrap());
    assert_eq!((s, me["csrf_token"].as_str()), (200, Some(csrf.as_str())));
    // A bearer token needs no CSRF token: no browser sends it by itself.
    let token = server.admin_token();
    let (s, _) = server.post_as(&token, "/api/v1/projects", &json!({"name": "bearer"}));
    assert_eq!(s, 201);

    let r = client
        .delete(server.url("/api/v1/auth/session"))
        .header("x-csrf-token", &csrf)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (s, _) = status_json(client.get(server.url("/api/v1/me")).send().unwrap());
    assert_eq!(s, 401);

    // Behind a TLS proxy the cookie is also Secure.
    let r = browser()
        .post(server.url("/api/v1/auth/session"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .unwrap();
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .ends_with("; Secure"));
}

#[test]
fn console_pages_are_embedded_and_admin_pages_refused_to_others() {
    let (server, _) = Server::start();
    let anonymous = browser();
    let r = anonymous.get(server.url("/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/signin?next=/");
    let r = anonymous.get(server.url("/assets/app.js")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    // Every module the app imports, and every module those import, is served.
    let mut pending = vec!["app.js".to_string()];
    let mut served = std::collections::BTreeSet::new();
    while let Some(module) = pending.pop() {
        if !served.insert(module.clone()) {
            continue;
        }
        let r = anonymous
            .get(server.url(&format!("/assets/{module}")))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{module}");
        let text = r.text().unwrap();
        for import in text.split("from './").skip(1) {
            pending.push(import.split('\'').next().unwrap().to_string());
        }
    }
    assert!(served.len() > 2, "{served:?}");

    let token = server.admin_token();
    let (s, _) = server.bearer(
        server.client.post(server.url("/api/v1/users")).json(
            &json!({"email": "member@example.com", "password": "member password", "role": "member"}),
        ),
        &token,
    );
    assert_eq!(s, 201);
    let member = browser();
    open_session(&server, &member, "member@example.com", "member password");
    let admin = browser();
    open_session(&server, &admin, ADMIN_EMAIL, ADMIN_PASSWORD);
    for page in [
        "/settings/deletion/new",
        "/settings/deletion",
        "/settings/audit",
        "/users",
    ] {
        let status = |c: &Client| c.get(server.url(page)).send().unwrap().status().as_u16();
        assert_eq!(status(&member), 403, "{page}");
        assert_eq!(status(&admin), 200, "{page}");
    }
    for page in ["/", "/data", "/projects"] {
        let r = member.get(server.url(page)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{page}");
        assert!(r.text().unwrap().contains("/assets/app.js"));
    }
}

#[test]
fn admins_change_roles_and_deactivate_users_but_keep_an_admin() {
    let (server, _) = Server::start();
    let token = server.admin_token();
    let patch = |id: i64, body: Value| {
        server.bearer(
            server
                .client
                .patch(server.url(&format!("/api/v1/users/{id}")))
                .json(&body),
            &token,
        )
    };
    let (_, me) = server.get_as(&token, "/api/v1/me");
    let admin_id = me["id"].as_i64().unwrap();
    let (_, user) = server.bearer(
        server.client.post(server.url("/api/v1/users")).json(
            &json!({"email": "ops@example.com", "password": "ops password", "role": "viewer"}),
        ),
        &token,
    );
    let id = user["id"].as_i64().unwrap();

    let (s, err) = patch(admin_id, json!({"role": "member"}));
    assert_eq!(s, 409, "{err}");
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("active administrator"));
    assert_eq!(patch(admin_id, json!({"active": false})).0, 409);
    let (s, err) = patch(id, json!({"role": "owner"}));
    assert_eq!((s, err["field"].as_str()), (422, Some("role")));
    assert_eq!(patch(id, json!({})).0, 400);
    assert_eq!(patch(9999, json!({"role": "member"})).0, 404);

    let (s, changed) = patch(id, json!({"role": "member"}));
    assert_eq!((s, changed["role"].as_str()), (200, Some("member")));
    let ops_token = server.login("ops@example.com", "ops password");
    let (s, _) = patch(id, json!({"active": false}));
    assert_eq!(s, 200);
    let (s, _) = server.get_as(&ops_token, "/api/v1/me");
    assert_eq!(s, 401, "deactivation ends sessions");
    let r = server.post_json(
        "/api/v1/auth/login",
        &json!({"email": "ops@example.com", "password": "ops password"}),
    );
    assert_eq!(r.status().as_u16(), 401);
    let (_, audit) = server.get_as(&token, "/api/v1/audit");
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "user.updated" && e["detail"]["active"] == false));
}

/// Imports events at fixed upload times.
fn import(server: &Server, keys: &Keys, lines: &[Value]) {
    let token = server.admin_token();
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    let (s, b) = server.import(&token, keys.project_id, body.join("\n"));
    assert_eq!((s, b["rejected"].clone()), (200, json!(0)), "{b}");
}

fn segmentation(server: &Server, keys: &Keys, query: &[(&str, &str)]) -> (u16, Value) {
    status_json(
        server
            .client
            .get(server.url("/api/2/events/segmentation"))
            .query(query)
            .basic_auth(&keys.api_key, Some(&keys.secret_key))
            .send()
            .unwrap(),
    )
}

#[test]
fn segmentation_counts_totals_and_uniques_per_day_with_filters_and_group_by() {
    let (server, keys) = Server::start();
    let event = |t: &str, user: &str, at: &str, country: &str| {
        json!({"event_type": t, "user_id": user, "server_upload_time": at,
               "event_properties": {"country": country, "n": 3}, "user_properties": {"plan": "pro"}})
    };
    let mut lines = Vec::new();
    for i in 0..6 {
        let user = format!("seg-user-{}", i % 3);
        lines.push(event(
            "Play",
            &user,
            "2026-03-01 10:00:00.000000",
            ["US", "DE"][i % 2],
        ));
    }
    for i in 0..4 {
        let user = format!("seg-user-{i}");
        lines.push(event("Play", &user, "2026-03-03 23:30:00.000000", "US"));
        lines.push(event("Stop", &user, "2026-03-03 23:45:00.000000", "FR"));
    }
    import(&server, &keys, &lines);
    let q = |e: &str, extra: &[(&str, &str)]| {
        let mut query = vec![("e", e), ("start", "20260301"), ("end", "20260303")];
        query.extend_from_slice(extra);
        let (s, body) = segmentation(&server, &keys, &query);
        assert_eq!(s, 200, "{body}");
        body["data"].clone()
    };

    let all = q(r#"{"event_type":"_all"}"#, &[("m", "totals")]);
    assert_eq!(
        all["xValues"],
        json!(["2026-03-01", "2026-03-02", "2026-03-03"])
    );
    assert_eq!(all["series"], json!([[6, 0, 8]]));
    assert_eq!(all["seriesLabels"], json!([0]));
    assert_eq!(all["seriesCollapsed"][0][0]["value"], 14);
    let uniques = q(r#"{"event_type":"ce:Play"}"#, &[]);
    assert_eq!(uniques["series"], json!([[3, 0, 4]]));
    assert_eq!(uniques["seriesCollapsed"][0][0]["value"], 4);
    let us = q(
        r#"{"event_type":"Play","filters":[{"subprop_type":"event","subprop_key":"country","subprop_op":"is","subprop_value":["US"]}]}"#,
        &[("m", "totals")],
    );
    assert_eq!(us["series"], json!([[3, 0, 4]]));
    let grouped = q(
        r#"{"event_type":"_all","group_by":[{"type":"event","value":"country"}]}"#,
        &[("m", "totals")],
    );
    // Largest group first.
    assert_eq!(grouped["seriesLabels"], json!(["US", "FR", "DE"]));
    assert_eq!(grouped["series"], json!([[3, 0, 4], [0, 0, 4], [3, 0, 0]]));
    let by_plan = q(
        r#"{"event_type":"Stop"}"#,
        &[
            ("m", "totals"),
            ("s", r#"[{"prop":"gp:plan","op":"is","values":["free"]}]"#),
        ],
    );
    assert_eq!(by_plan["series"], json!([[0, 0, 0]]));
    let (s, hourly) = segmentation(
        &server,
        &keys,
        &[
            ("e", r#"{"event_type":"Stop"}"#),
            ("m", "totals"),
            ("start", "20260303"),
            ("end", "20260303"),
            ("i", "-3600000"),
        ],
    );
    assert_eq!(s, 200);
    assert_eq!(hourly["data"]["xValues"][23], "2026-03-03T23:00:00");
    assert_eq!(hourly["data"]["series"][0][23], 4);

    for (query, field) in [
        (vec![("start", "20260301"), ("end", "20260303")], "e"),
        (
            vec![
                ("e", r#"{"event_type":"_all"}"#),
                ("start", "2026-03-01"),
                ("end", "20260303"),
            ],
            "start",
        ),
        (
            vec![
                ("e", r#"{"event_type":"_all"}"#),
                ("start", "20260301"),
                ("end", "20260303"),
                ("m", "formula"),
            ],
            "m",
        ),
        (
            vec![
                ("e", r#"{"event_type":"_all"}"#),
                ("start", "20260301"),
                ("end", "20260303"),
                ("i", "14"),
            ],
            "i",
        ),
    ] {
        let (s, err) = segmentation(&server, &keys, &query);
        assert_eq!((s, err["field"].as_str()), (400, Some(field)), "{err}");
    }
    let wrong = Keys {
        secret_key: "nope".into(),
        ..keys.clone()
    };
    assert_eq!(segmentation(&server, &wrong, &[("e", "{}")]).0, 401);

    // The console's form of the same query, and the catalog beside it.
    let token = server.admin_token();
    let (s, body) = server.bearer(
        server
            .client
            .get(server.url(&format!(
                "/api/v1/projects/{}/events/segmentation",
                keys.project_id
            )))
            .query(&[
                ("e", r#"{"event_type":"_all"}"#),
                ("m", "totals"),
                ("start", "20260301"),
                ("end", "20260303"),
            ]),
        &token,
    );
    assert_eq!((s, &body["data"]["series"]), (200, &json!([[6, 0, 8]])));
    let (s, catalog) = server.get_as(
        &token,
        &format!("/api/v1/projects/{}/catalog", keys.project_id),
    );
    assert_eq!(s, 200);
    let play = catalog["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "Play")
        .unwrap();
    assert_eq!(play["event_count"], 10);
    assert_eq!(play["first_seen"], "2026-03-01 10:00:00.000000");
    assert_eq!(
        catalog["event_type_properties"]["Stop"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(catalog["user_properties"][0]["name"], "plan");

    // Events not flushed yet count too, filtered by a key the catalog does not have yet.
    let fresh: Vec<Value> = (0..3)
        .map(|i| {
            let fresh = ["yes", "yes", "no"][i];
            json!({"event_type": "Live", "user_id": format!("fresh-user-{i}"),
                   "event_properties": {"fresh": fresh}})
        })
        .collect();
    assert_eq!(server.send(&keys, json!(fresh)).0, 200);
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    let (s, live) = segmentation(
        &server,
        &keys,
        &[
            (
                "e",
                r#"{"event_type":"Live","filters":[{"subprop_type":"event","subprop_key":"fresh","subprop_op":"is","subprop_value":["yes"]}]}"#,
            ),
            ("m", "totals"),
            ("start", &today),
            ("end", &today),
        ],
    );
    assert_eq!((s, &live["data"]["series"]), (200, &json!([[2]])), "{live}");
}
