//! The page shell (navigation, the signed-in token, sign-out), error pages, and the small
//! helpers every page uses: links with encoded path segments, status badges, the headers
//! every page carries.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::Session;

/// The sections of the navigation: (path, title).
const NAV: [(&str, &str); 6] = [
    ("/ui/", "Fleet"),
    ("/ui/policy", "Policy"),
    ("/ui/forms", "Forms"),
    ("/ui/actions", "Actions"),
    ("/ui/releases", "Releases"),
    ("/ui/audit", "Audit"),
];

/// Headers of every console response: no caching of pages that hold fleet data, no framing,
/// scripts and styles from the collector only (the one stylesheet and script are files, never
/// inline), no referrer leaving the console (`same-origin`, not `no-referrer`: with the latter
/// browsers send `Origin: null` on the console's own form posts, which the guard refuses).
fn harden(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response();
    harden(&mut resp);
    resp
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Tenet" }
            link rel="stylesheet" href="/ui/static/console.css";
            script src="/ui/static/console.js" defer {}
        }
    }
}

/// A page of the signed-in console: `section` is the navigation entry to mark current.
pub fn page(session: &Session, section: &str, title: &str, body: Markup) -> Response {
    page_with_status(StatusCode::OK, session, section, title, body)
}

/// The same with another status (a form refused: 422).
pub fn page_with_status(
    status: StatusCode,
    session: &Session,
    section: &str,
    title: &str,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Sections" {
                        span.brand { "Tenet" }
                        ul {
                            @for (path, name) in NAV {
                                li {
                                    @if name == section {
                                        a href=(path) aria-current="page" { (name) }
                                    } @else {
                                        a href=(path) { (name) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span #who { (session.name) " (" (session.role.as_str()) ")" }
                        form method="post" action="/ui/logout" {
                            (csrf(session))
                            button #logout type="submit" { "Sign out" }
                        }
                    }
                }
                @if !session.is_admin() {
                    p.readonly role="note" {
                        "Viewer session: you see everything; changes are refused."
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    respond(status, markup)
}

/// A page outside a session (sign-in).
pub fn bare_page(status: StatusCode, title: &str, body: Markup) -> Response {
    respond(
        status,
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body { (body) }
            }
        },
    )
}

/// An error page.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    bare_page(
        status,
        title,
        html! {
            main.error-page {
                h1 { (title) }
                p #error-message { (message) }
                p { a href="/ui/" { "Back to the console" } }
            }
        },
    )
}

/// A 500 page; the details go to the log under a request id, the page shows the id only.
pub fn internal(detail: impl std::fmt::Display) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tracing::error!(request_id = %id, "console: internal error: {detail}");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error",
        &format!("Internal error (request id {id}: the collector's log has the details)."),
    )
}

/// A store or API error as a page: its message for what the caller got wrong, a request id
/// for what failed inside.
pub fn api_error(e: crate::api::ApiError) -> Response {
    let status = e.status();
    if status.is_server_error() {
        return error_page(status, "Internal error", &e.to_string());
    }
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Refused",
        StatusCode::CONFLICT => "Conflict",
        _ => "Refused",
    };
    error_page(status, title, &e.to_string())
}

/// The hidden CSRF field of a state-changing form.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A status badge: `ok`, `nok`, `n/a` (any other text is shown as n/a's colour).
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "ok" | "present" | "T" => "badge ok",
        "nok" | "failed" => "badge nok",
        "R" | "S" | "N" | "W" | "adding" | "removing" | "queued" => "badge busy",
        _ => "badge na",
    };
    html! { span class=(class) { (status) } }
}

/// A link to a node's page.
pub fn node_link(name: &str) -> Markup {
    html! { a href={ "/ui/nodes/" (enc(name)) } { (name) } }
}

/// A link to a module's page.
pub fn module_link(name: &str) -> Markup {
    html! { a href={ "/ui/modules/" (enc(name)) } { (name) } }
}

/// A link to a ruleset's page.
pub fn ruleset_link(name: &str) -> Markup {
    html! { a href={ "/ui/rulesets/" (enc(name)) } { (name) } }
}

/// `—` for nothing.
pub fn or_dash(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("—")
}
