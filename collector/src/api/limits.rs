//! Request bodies: read in full, within the route's size limit and the request deadline,
//! before the handler runs (so a slow upload never holds a handler, and the connection stays
//! sheddable while it arrives). A body over the limit is read on and discarded, up to
//! [`DISCARD_LIMIT`], so the client, which sends its whole body before reading the answer,
//! gets the 413 instead of a broken pipe.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;

use super::serve::ConnHandle;
use super::{ApiError, BODY_LIMIT, IMPORT_BODY_LIMIT};

/// Most bytes of a refused body read and thrown away before answering 413 (beyond that the
/// connection is closed under the client).
pub const DISCARD_LIMIT: u64 = 64 * 1024 * 1024;

/// Longest time spent discarding a refused body when no request deadline applies.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(10);

enum Read {
    Done(Bytes),
    TooLarge(u64),
    TimedOut,
    Failed(String),
}

/// The size limit of a route's body.
fn limit_of(path: &str) -> usize {
    if path == "/api/v1/import" {
        IMPORT_BODY_LIMIT
    } else {
        BODY_LIMIT
    }
}

/// Middleware: buffers the body within the limits, then runs the handler with the connection
/// marked busy.
pub async fn bounded_body(req: Request, next: Next) -> Response {
    let limit = limit_of(req.uri().path());
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let deadline = conn
        .as_ref()
        .map(|c| c.deadline)
        .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = req.into_parts();
    if let Some(len) = announced
        && len > limit as u64
    {
        // A client waiting for "100 Continue" has not sent its body: nothing to discard.
        if !expects_continue {
            discard(body, deadline).await;
        }
        return too_large(len, limit);
    }
    let bytes = match read(body, limit, deadline).await {
        Read::Done(b) => b,
        Read::TooLarge(seen) => return too_large(seen, limit),
        Read::TimedOut => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive within the server's request timeout",
            )
            .into_response_closing();
        }
        Read::Failed(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
            .into_response_closing();
        }
    };
    let _busy = match &conn {
        Some(c) => match c.enter() {
            Some(g) => Some(g),
            // Shed between the body and the handler: the connection is closing anyway.
            None => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "connection closing")
                    .into_response_closing();
            }
        },
        None => None,
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large(len: u64, limit: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body of {len} bytes is over the limit of {limit} bytes"),
    )
    .into_response_closing()
}

async fn read(mut body: Body, limit: usize, deadline: tokio::time::Instant) -> Read {
    // Most bodies come in one frame: keep it as is, copy only when there are several.
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Read::TimedOut,
            Ok(None) => {
                return Read::Done(match first {
                    Some(b) if buf.is_empty() => b,
                    _ => Bytes::from(buf),
                });
            }
            Ok(Some(Err(e))) => return Read::Failed(e.to_string()),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if have + data.len() > limit {
            let seen = (have + data.len()) as u64;
            return Read::TooLarge(seen + discard(body, deadline).await);
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
            None => buf.extend_from_slice(&data),
        }
    }
}

/// Reads and drops what is left of a body (bounded in bytes and time); returns the bytes read.
async fn discard(mut body: Body, deadline: tokio::time::Instant) -> u64 {
    let deadline = deadline.min(tokio::time::Instant::now() + DISCARD_TIME);
    let mut seen = 0u64;
    while seen < DISCARD_LIMIT {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    seen += d.len() as u64;
                }
            }
            _ => break,
        }
    }
    seen
}

impl ApiError {
    /// The error response, telling the client the connection closes after it (the request
    /// was not, or not wholly, read).
    pub(crate) fn into_response_closing(self) -> Response {
        let mut resp = self.into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}
