//! The stylesheet and the script, embedded in the binary (no build step, no CDN).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The one stylesheet.
pub const CSS: &str = include_str!("static/console.css");
/// The one script: live action statuses (pages read the same without it).
pub const JS: &str = include_str!("static/console.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /ui/static/console.css`.
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /ui/static/console.js`.
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}
