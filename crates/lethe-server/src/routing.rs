//! Which project a request is for, read before it is served: what a cluster node routes by
//! (`cluster.rs`) when the projects fall into shards with writers of their own. The handler
//! that serves the request checks its credentials as on one node; this only finds where.

use axum::http::request::Parts;
use serde::Deserialize;

use crate::amplitude::decode_body;
use crate::auth::{basic_keys, header};

/// What names a request's project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Named {
    /// Its path (`/api/v1/projects/{id}/…`).
    Project(i64),
    /// The deletion task its path names (`/api/v1/deletion-tasks/{id}/…`).
    Task(i64),
    /// The API key of its Basic credentials or of its ingestion body.
    ApiKey(String),
    /// The secret key of the User Profile API's `Api-Key` credentials.
    SecretKey(String),
}

/// What names the project of the request with `parts` and (when it is held whole) `body`,
/// if anything does.
pub(crate) fn named_project(parts: &Parts, body: Option<&[u8]>) -> Option<Named> {
    let path = parts.uri.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "projects", id, _, ..] => return id.parse().ok().map(Named::Project),
        ["api", "v1", "deletion-tasks", id, ..] => return id.parse().ok().map(Named::Task),
        _ => {}
    }
    if let Some((api_key, _)) = basic_keys(parts) {
        return Some(Named::ApiKey(api_key));
    }
    if let Some(secret) = header(parts, "Api-Key ") {
        return Some(Named::SecretKey(secret.to_string()));
    }
    let body = body.unwrap_or_default();
    let api_key = match path {
        "/2/httpapi" | "/batch" => {
            #[derive(Deserialize)]
            struct Keyed {
                api_key: Option<String>,
            }
            let body = decode_body(&parts.headers, body, crate::ingest::BATCH_MAX_BYTES).ok()?;
            serde_json::from_slice::<Keyed>(&body).ok()?.api_key
        }
        "/identify" | "/groupidentify" => {
            let query = parts.uri.query();
            crate::identify::call_params(&parts.method, &parts.headers, query, body)
                .ok()?
                .api_key
        }
        _ => None,
    };
    api_key.map(Named::ApiKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, Method, Request};
    use base64::Engine;

    fn parts(method: Method, uri: &str, headers: &[(header::HeaderName, &str)]) -> Parts {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn every_way_a_request_names_its_project_is_read() {
        let get = |uri: &str| parts(Method::GET, uri, &[]);
        assert_eq!(
            named_project(&get("/api/v1/projects/7/deletion-tasks"), None),
            Some(Named::Project(7))
        );
        assert_eq!(
            named_project(&get("/api/v1/deletion-tasks/12/receipt"), None),
            Some(Named::Task(12))
        );
        // A project's own settings are the organization's: any writer answers them.
        assert_eq!(named_project(&get("/api/v1/projects/7"), None), None);
        assert_eq!(named_project(&get("/api/v1/users"), None), None);

        let basic = base64::engine::general_purpose::STANDARD.encode("KEY:SECRET");
        let export = parts(
            Method::GET,
            "/api/2/export?start=20260101T00&end=20260102T00",
            &[(header::AUTHORIZATION, &format!("Basic {basic}"))],
        );
        assert_eq!(
            named_project(&export, None),
            Some(Named::ApiKey("KEY".into()))
        );
        let profile = parts(
            Method::GET,
            "/v1/userprofile?user_id=u",
            &[(header::AUTHORIZATION, "Api-Key SECRET")],
        );
        assert_eq!(
            named_project(&profile, None),
            Some(Named::SecretKey("SECRET".into()))
        );

        let json = [(header::CONTENT_TYPE, "application/json")];
        let events = br#"{"api_key":"KEY","events":[{"event_type":"e","user_id":"u"}]}"#;
        for path in ["/2/httpapi", "/batch"] {
            let request = parts(Method::POST, path, &json);
            assert_eq!(
                named_project(&request, Some(events)),
                Some(Named::ApiKey("KEY".into())),
                "{path}"
            );
        }
        let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzipped, events).unwrap();
        let gzip = parts(
            Method::POST,
            "/2/httpapi",
            &[
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_ENCODING, "gzip"),
            ],
        );
        assert_eq!(
            named_project(&gzip, Some(&gzipped.finish().unwrap())),
            Some(Named::ApiKey("KEY".into()))
        );
        let form = parts(
            Method::POST,
            "/identify",
            &[(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
        );
        assert_eq!(
            named_project(&form, Some(b"api_key=KEY&identification=%5B%5D")),
            Some(Named::ApiKey("KEY".into()))
        );
        // A body that is not what the endpoint takes names nothing: its writer refuses it.
        let broken = parts(Method::POST, "/2/httpapi", &json);
        assert_eq!(named_project(&broken, Some(b"{")), None);
        assert_eq!(named_project(&broken, None), None);
    }
}
