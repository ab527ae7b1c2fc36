//! Event segmentation as Amplitude computes it: by event time in the project's time zone,
//! every metric against an answer worked out by hand, built-in properties, a second event,
//! new users, and a 400 for whatever lethe does not compute.

mod common;

use common::{status_json, Keys, Server};
use serde_json::{json, Value};

/// Six events of three users; the second arrived three days late (an offline device).
fn plant(server: &Server, keys: &Keys) {
    let line = |t: &str, user: &str, at: &str, uploaded: &str, extra: Value| {
        let mut e = json!({"event_type": t, "user_id": user, "event_time": at, "server_upload_time": uploaded});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e.to_string()
    };
    let lines = [
        line(
            "Play",
            "user-1",
            "2026-02-10 03:00:00.000000",
            "2026-02-10 03:00:00.000000",
            json!({"country": "US", "platform": "iOS", "event_properties": {"amount": 1}}),
        ),
        line(
            "Play",
            "user-1",
            "2026-02-10 15:00:00.000000",
            "2026-02-13 09:00:00.000000",
            json!({"country": "US", "platform": "iOS", "event_properties": {"amount": 2}}),
        ),
        line(
            "Play",
            "user-2",
            "2026-02-10 16:00:00.000000",
            "2026-02-10 16:00:00.000000",
            json!({"country": "DE", "platform": "iOS", "event_properties": {"amount": 3}}),
        ),
        line(
            "Stop",
            "user-2",
            "2026-02-11 12:00:00.000000",
            "2026-02-11 12:00:00.000000",
            json!({}),
        ),
        line(
            "$identify",
            "user-3",
            "2026-02-11 12:00:00.000000",
            "2026-02-11 12:00:00.000000",
            json!({}),
        ),
        line(
            "Play",
            "user-3",
            "2026-02-11 13:00:00.000000",
            "2026-02-11 13:00:00.000000",
            json!({"country": "US", "platform": "Android", "event_properties": {"amount": 5}}),
        ),
    ];
    let token = server.admin_token();
    let (s, b) = server.import(&token, keys.project_id, lines.join("\n"));
    assert_eq!((s, &b["ingested"]), (200, &json!(6)), "{b}");
}

fn query(server: &Server, keys: &Keys, params: &[(&str, &str)]) -> (u16, Value) {
    status_json(
        server
            .client
            .get(server.url("/api/2/events/segmentation"))
            .query(params)
            .basic_auth(&keys.api_key, Some(&keys.secret_key))
            .send()
            .unwrap(),
    )
}

/// `data` of a query over 2026-02-09 … 2026-02-11.
fn data(server: &Server, keys: &Keys, e: &str, extra: &[(&str, &str)]) -> Value {
    let mut params = vec![("e", e), ("start", "20260209"), ("end", "20260211")];
    params.extend_from_slice(extra);
    let (s, body) = query(server, keys, &params);
    assert_eq!(s, 200, "{body}");
    body["data"].clone()
}

const PLAY: &str = r#"{"event_type":"ce:Play"}"#;
const ALL: &str = r#"{"event_type":"_all"}"#;

#[test]
fn counts_follow_event_time_in_the_projects_time_zone() {
    let (server, keys) = Server::start();
    plant(&server, &keys);
    // UTC (the default): 03:00 UTC on the 10th is the 10th.
    let utc = data(&server, &keys, PLAY, &[("m", "totals")]);
    assert_eq!(
        utc["xValues"],
        json!(["2026-02-09", "2026-02-10", "2026-02-11"])
    );
    assert_eq!(
        utc["series"],
        json!([[0, 3, 1]]),
        "the late event counts on its event day"
    );

    let token = server.admin_token();
    let path = format!("/api/v1/projects/{}", keys.project_id);
    let (s, body) = server.bearer(
        server
            .client
            .patch(server.url(&path))
            .json(&json!({"time_zone": "Mars/Olympus"})),
        &token,
    );
    assert_eq!((s, &body["field"]), (422, &json!("time_zone")));
    let (s, body) = server.bearer(
        server
            .client
            .patch(server.url(&path))
            .json(&json!({"time_zone": "America/New_York"})),
        &token,
    );
    assert_eq!(
        (s, &body["time_zone"]),
        (200, &json!("America/New_York")),
        "{body}"
    );

    // New York (UTC-5): 03:00 UTC on the 10th is the evening of the 9th.
    assert_eq!(
        data(&server, &keys, PLAY, &[("m", "totals")])["series"],
        json!([[1, 2, 1]])
    );
    let uniques = data(&server, &keys, PLAY, &[]);
    assert_eq!(uniques["series"], json!([[1, 2, 1]]));
    assert_eq!(uniques["seriesCollapsed"][0][0]["value"], 3);
    let average = data(&server, &keys, PLAY, &[("m", "average")]);
    assert_eq!(average["series"], json!([[1.0, 1.0, 1.0]]));
    assert_eq!(average["seriesCollapsed"][0][0]["value"], 4.0 / 3.0);
    // Active users per day: 9th {1}, 10th {1, 2}, 11th {2, 3} ($identify is not activity).
    let dau = data(&server, &keys, PLAY, &[("m", "pct_dau")]);
    assert_eq!(dau["series"], json!([[100.0, 100.0, 50.0]]));
    let sums = data(
        &server,
        &keys,
        r#"{"event_type":"Play","group_by":[{"type":"event","value":"amount"}]}"#,
        &[("m", "sums")],
    );
    assert_eq!(sums["series"], json!([[1.0, 5.0, 5.0]]));
    assert_eq!(sums["seriesCollapsed"][0][0]["value"], 11.0);

    // Built-in properties group and filter.
    let by_country = data(&server, &keys, ALL, &[("m", "totals"), ("g", "country")]);
    assert_eq!(by_country["seriesLabels"], json!(["US", "(none)", "DE"]));
    assert_eq!(
        by_country["series"],
        json!([[1, 1, 1], [0, 0, 2], [0, 1, 0]])
    );
    let ios = data(
        &server,
        &keys,
        ALL,
        &[
            ("m", "totals"),
            ("s", r#"[{"prop":"platform","op":"is","values":["iOS"]}]"#),
        ],
    );
    assert_eq!(ios["series"], json!([[1, 2, 0]]));
    let active = data(
        &server,
        &keys,
        r#"{"event_type":"_active"}"#,
        &[("m", "totals")],
    );
    assert_eq!(active["series"], json!([[1, 2, 2]]));
    // New users: each user's events in the day of their first event.
    let new = data(&server, &keys, ALL, &[("m", "totals"), ("n", "new")]);
    assert_eq!(new["series"], json!([[1, 1, 2]]));
    // A second event is a second series.
    let two = data(
        &server,
        &keys,
        PLAY,
        &[("m", "totals"), ("e2", r#"{"event_type":"Stop"}"#)],
    );
    assert_eq!(two["seriesLabels"], json!([0, 1]));
    assert_eq!(two["series"], json!([[1, 2, 1], [0, 0, 1]]));
    // Hourly buckets are local hours too: 22:00 on the 9th in New York.
    let hourly = data(&server, &keys, PLAY, &[("m", "totals"), ("i", "-3600000")]);
    assert_eq!(hourly["xValues"][22], "2026-02-09T22:00:00");
    assert_eq!(hourly["series"][0][22], 1);

    // lethe's upload-time view (the console's chart) is UTC days of server upload time.
    let (s, body) = query(
        &server,
        &keys,
        &[
            ("e", PLAY),
            ("m", "totals"),
            ("start", "20260210"),
            ("end", "20260213"),
            ("lethe_time", "upload"),
        ],
    );
    assert_eq!(s, 200);
    assert_eq!(body["data"]["series"], json!([[2, 1, 0, 1]]));
}

#[test]
fn what_lethe_does_not_compute_is_refused_naming_the_parameter() {
    let (server, keys) = Server::start();
    plant(&server, &keys);
    for (extra, field) in [
        (vec![("g2", "country")], "g2"),
        (vec![("m", "formula")], "m"),
        (vec![("m", "histogram")], "m"),
        (vec![("rollingWindow", "7")], "rollingWindow"),
        (vec![("g", "favourite_colour")], "g"),
        (vec![("n", "returning")], "n"),
        (vec![("i", "14")], "i"),
    ] {
        let mut params = vec![("e", ALL), ("start", "20260209"), ("end", "20260211")];
        params.extend(extra);
        let (s, body) = query(&server, &keys, &params);
        assert_eq!((s, body["field"].as_str()), (400, Some(field)), "{body}");
    }
}
