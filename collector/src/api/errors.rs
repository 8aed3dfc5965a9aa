//! Every error answers `{"error": ...}`, whatever produced it: a handler's [`ApiError`], an
//! extractor's rejection (a path or query string that does not parse, a body over the limit,
//! a method the route does not take), or a panic. A 500 never carries internal text: the
//! details are logged under a request id and only the id is returned.

use std::panic::AssertUnwindSafe;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;

use super::ApiError;

/// Most of a non-JSON error body read to turn it into a message (rejection texts are short).
const MAX_TEXT: usize = 16 * 1024;

/// Middleware: contains panics (a 500 with a request id, the connection and the server go on)
/// and turns every non-JSON error response into `{"error": ...}`, keeping its status and
/// headers (`Allow`, `Retry-After`, ...).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            return ApiError::internal(format!("a handler panicked: {what}")).into_response();
        }
    };
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // The console's pages (`crate::ui`) answer errors as pages.
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_TEXT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        return ApiError::internal(format!("500 from a layer or extractor: {text}"))
            .into_response();
    }
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
