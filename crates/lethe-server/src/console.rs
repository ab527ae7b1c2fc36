//! The web console: a small single-page app embedded in the binary (nothing is loaded from
//! the internet) that drives the same management API a script uses, signed in with an
//! HttpOnly session cookie. Pages for administrators are refused by the server itself, not
//! only hidden by the app.

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lethe_meta::Role;

use crate::auth::session_cookie;
use crate::App;

const INDEX: &str = include_str!("../console/index.html");
/// The app's ES modules, served under `/assets/`: `app.js` imports the rest.
const SCRIPTS: &[(&str, &str)] = &[
    ("/assets/app.js", include_str!("../console/app.js")),
    ("/assets/core.js", include_str!("../console/core.js")),
    ("/assets/format.js", include_str!("../console/format.js")),
    ("/assets/tasks.js", include_str!("../console/tasks.js")),
    ("/assets/wizard.js", include_str!("../console/wizard.js")),
    (
        "/assets/projects.js",
        include_str!("../console/projects.js"),
    ),
    ("/assets/data.js", include_str!("../console/data.js")),
    ("/assets/users.js", include_str!("../console/users.js")),
    (
        "/assets/webhooks.js",
        include_str!("../console/webhooks.js"),
    ),
];
const APP_CSS: &str = include_str!("../console/app.css");
const FORBIDDEN: &str = include_str!("../console/forbidden.html");

/// Pages anyone signed in may open.
const PAGES: &[&str] = &["/", "/data", "/projects"];
/// Pages only administrators may open.
const ADMIN_PAGES: &[&str] = &[
    "/settings/deletion",
    "/settings/deletion/new",
    "/settings/audit",
    "/settings/webhooks",
    "/users",
];

/// Scripts, styles and data only from this server; no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<App> {
    let mut router = Router::new()
        .route("/signin", get(|| async { page(StatusCode::OK, INDEX) }))
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css", APP_CSS) }),
        );
    for (path, script) in SCRIPTS {
        router = router.route(path, get(|| async { asset("text/javascript", script) }));
    }
    for path in PAGES {
        router = router.route(path, get(signed_in));
    }
    for path in ADMIN_PAGES {
        router = router.route(path, get(admin_only));
    }
    router.layer(axum::middleware::from_fn(security_headers))
}

fn page(status: StatusCode, html: &'static str) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// The role of the cookie's session, if it is valid.
async fn role(app: &App, headers: &HeaderMap) -> Option<Role> {
    let token = session_cookie(headers)?;
    let meta = app.meta.clone();
    let user = crate::blocking(move || Ok(meta.user_for_token(&token)?))
        .await
        .ok()??;
    Some(user.role)
}

fn to_sign_in(req: &Request) -> Response {
    let next = req.uri().path();
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, format!("/signin?next={next}"))],
    )
        .into_response()
}

async fn signed_in(State(app): State<App>, req: Request) -> Response {
    match role(&app, req.headers()).await {
        Some(_) => page(StatusCode::OK, INDEX),
        None => to_sign_in(&req),
    }
}

async fn admin_only(State(app): State<App>, req: Request) -> Response {
    match role(&app, req.headers()).await {
        Some(Role::Admin) => page(StatusCode::OK, INDEX),
        Some(_) => page(StatusCode::FORBIDDEN, FORBIDDEN),
        None => to_sign_in(&req),
    }
}
