//! The management API: sign-in, roles (401/403 matrix), projects, users, field-named errors.

mod common;

use common::{Server, ADMIN_EMAIL, ADMIN_PASSWORD};
use serde_json::json;

#[test]
fn sign_in_and_me() {
    let (server, _) = Server::start();
    let token = server.admin_token();
    let (s, me) = server.get_as(&token, "/api/v1/me");
    assert_eq!(s, 200);
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["role"], "admin");

    let (s, b) = common::status_json(server.post_json(
        "/api/v1/auth/login",
        &json!({"email": ADMIN_EMAIL, "password": "wrong password"}),
    ));
    assert_eq!(s, 401, "{b}");
    let (s, b) =
        common::status_json(server.post_json("/api/v1/auth/login", &json!({"email": ADMIN_EMAIL})));
    assert_eq!((s, b["field"].clone()), (400, json!("password")));
    let r = server
        .client
        .post(server.url("/api/v1/auth/login"))
        .body("not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        server
            .bearer(server.client.get(server.url("/api/v1/me")), "bogus")
            .0,
        401
    );
    let r = server.client.get(server.url("/api/v1/me")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn roles_decide_what_each_user_may_do() {
    let (server, keys) = Server::start();
    let admin = server.admin_token();
    for (email, role) in [
        ("member@example.com", "member"),
        ("viewer@example.com", "viewer"),
    ] {
        let (s, u) = server.post_as(
            &admin,
            "/api/v1/users",
            &json!({"email": email, "password": "long enough", "role": role}),
        );
        assert_eq!(s, 201, "{u}");
        assert_eq!(u["role"], role);
        // A new member or viewer reaches no project until granted one.
        let token = server.login(email, "long enough");
        assert_eq!(server.get_as(&token, "/api/v1/projects").1, json!([]));
        let grant = server.client.put(server.url(&format!(
            "/api/v1/projects/{}/members/{}",
            keys.project_id, u["id"]
        )));
        let (s, b) = server.bearer(grant.json(&json!({ "role": role })), &admin);
        assert_eq!(s, 204, "{b}");
    }
    for email in ["member@example.com", "viewer@example.com"] {
        let token = server.login(email, "long enough");
        let get = |path: &str| server.get_as(&token, path);
        let (s, projects) = get("/api/v1/projects");
        assert_eq!(s, 200, "every role reads its projects");
        assert_eq!(projects[0]["api_key"], keys.api_key.as_str());
        assert_eq!(projects[0]["role"], email.split('@').next().unwrap());
        assert!(
            projects[0].get("secret_key").is_none(),
            "secrets are shown once, at creation"
        );
        assert_eq!(get("/api/v1/users").0, 403);
        let create = server
            .client
            .post(server.url("/api/v1/projects"))
            .json(&json!({"name": "x"}));
        assert_eq!(server.bearer(create, &token).0, 403);
        let create = server
            .client
            .post(server.url("/api/v1/users"))
            .json(&json!({"email": "z@example.com", "password": "long enough", "role": "admin"}));
        assert_eq!(server.bearer(create, &token).0, 403);
        let imported = server
            .import(
                &token,
                keys.project_id,
                r#"{"event_type":"imported","user_id":"user-import"}"#,
            )
            .0;
        // Members load data into their projects; viewers only read.
        let expected = if email.starts_with("member") {
            200
        } else {
            403
        };
        assert_eq!(imported, expected);
    }
    let (s, users) = server.get_as(&admin, "/api/v1/users");
    assert_eq!(s, 200);
    assert_eq!(users.as_array().unwrap().len(), 3);
    assert!(
        users.to_string().find("password").is_none(),
        "no password hashes leave the server"
    );
}

#[test]
fn projects_are_created_with_working_keys() {
    let (server, _) = Server::start();
    let admin = server.admin_token();
    let (s, p) = server.post_as(&admin, "/api/v1/projects", &json!({"name": "Mobile"}));
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["name"], "Mobile");
    let keys = common::Keys::of_project(&p);
    assert_eq!(
        server
            .send(&keys, json!([{"event_type": "a", "user_id": "user-12345"}]))
            .0,
        200
    );
    let events = server.export_today(&keys);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["app"], keys.project_id);
    let (_, list) = server.get_as(&admin, "/api/v1/projects");
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(
        list[1].get("secret_key").is_none(),
        "shown once, at creation"
    );
    // Rotating gives a new secret, once; the old one stops working at once.
    let (s, rotated) = server.post_as(
        &admin,
        &format!("/api/v1/projects/{}/secret-key", keys.project_id),
        &json!({}),
    );
    assert_eq!(s, 200, "{rotated}");
    let new = rotated["secret_key"].as_str().unwrap();
    assert_ne!(new, keys.secret_key);
    assert_eq!(server.basic_get(&keys, "/api/2/taxonomy/event").0, 401);
    let rotated_keys = common::Keys {
        secret_key: new.to_string(),
        ..keys.clone()
    };
    assert_eq!(
        server.basic_get(&rotated_keys, "/api/2/taxonomy/event").0,
        200
    );

    let (s, b) = server.post_as(&admin, "/api/v1/projects", &json!({"name": ""}));
    assert_eq!((s, b["field"].clone()), (422, json!("name")));
    let (s, b) = server.post_as(&admin, "/api/v1/projects", &json!({"name": 5}));
    assert_eq!((s, b["field"].clone()), (400, json!("name")));
}

#[test]
fn user_creation_validates_each_field() {
    let (server, _) = Server::start();
    let admin = server.admin_token();
    let create = |body: serde_json::Value| server.post_as(&admin, "/api/v1/users", &body);
    let (s, b) =
        create(json!({"email": "no-at-sign", "password": "long enough", "role": "member"}));
    assert_eq!((s, b["field"].clone()), (422, json!("email")));
    let (s, b) = create(json!({"email": "a@example.com", "password": "short", "role": "member"}));
    assert_eq!((s, b["field"].clone()), (422, json!("password")));
    let (s, b) =
        create(json!({"email": "a@example.com", "password": "long enough", "role": "owner"}));
    assert_eq!((s, b["field"].clone()), (422, json!("role")));
    let (s, b) = create(json!({"email": "a@example.com", "password": "long enough"}));
    assert_eq!((s, b["field"].clone()), (400, json!("role")));
    let (s, b) = create(json!({"email": ADMIN_EMAIL, "password": "long enough", "role": "member"}));
    assert_eq!(s, 409, "{b}");
}

#[test]
fn a_restart_reuses_the_bootstrap_and_prints_no_secret() {
    let (server, keys) = Server::start();
    let dir = server.data_dir.clone();
    let tmp = server.kill9();
    assert_eq!(tmp, dir);
    let again = Server::start_on(&dir, &[]);
    let printed = again.stdout.join("\n");
    assert!(
        !printed.contains("secret_key") && !printed.contains(&keys.secret_key),
        "{printed}"
    );
    let token = again.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    let (_, projects) = again.bearer(again.client.get(again.url("/api/v1/projects")), &token);
    assert_eq!(projects.as_array().unwrap().len(), 1);
    assert_eq!(projects[0]["api_key"], keys.api_key.as_str());

    let second = common::lethe()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second server on the same dir refuses to start"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another lethe server is already using the data dir"),
        "{err}"
    );
    again.stop();
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn first_start_generates_and_prints_a_password_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::lethe().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--data-dir",
        "--listen",
        "LETHE_DATA_DIR",
        "LETHE_LISTEN",
        "--admin-email",
    ] {
        assert!(help.contains(option), "serve --help documents {option}");
    }
    let mut child = common::lethe()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env_remove("LETHE_ADMIN_PASSWORD")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut password = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.trim().strip_prefix("administrator password:") {
            password = p.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("lethe: listening on ") {
            let url = line.trim_start_matches("lethe: listening on ").to_string();
            let r = reqwest::blocking::Client::new()
                .post(format!("{url}/api/v1/auth/login"))
                .json(&json!({"email": "admin@localhost", "password": password.clone().unwrap()}))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "the printed password signs in");
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(password.is_some());
}

#[test]
fn a_first_start_on_a_busy_port_creates_nothing_and_the_next_shows_the_keys() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = common::lethe()
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!dir.exists(), "nothing was created");
    drop(busy);
    let server = Server::start_on(&dir, &[]);
    let keys = server.first_start_keys();
    assert_eq!(server.basic_get(&keys, "/api/2/taxonomy/event").0, 200);
    server.stop();
}
