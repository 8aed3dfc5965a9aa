//! Sign-in, sessions and the guard every console request passes.
//!
//! A person signs in with an admin or viewer token typed into the sign-in form (a POST body:
//! a token never travels in a URL and is never written into a page). The collector answers
//! with a session cookie: a fresh random id, `HttpOnly` (scripts cannot read it),
//! `SameSite=Strict` (other sites' pages do not send it), `Secure` when the collector serves
//! TLS, `Path=/ui`, expiring after the session lifetime. The server keeps, per session, the
//! SHA-256 of its id (so the table holds no usable cookie), the token's digest (re-checked on
//! every request: a token deleted from the database ends its sessions), its role, a CSRF
//! token and the expiry. Sessions live in memory: a restart signs everybody out. The table is
//! bounded ([`MAX_SESSIONS`]): past it, expired sessions go first, then the oldest.
//!
//! [`guard`] runs before every `/ui` handler: static files and the sign-in page pass; any
//! other request needs a live session (a page asked without one redirects to the sign-in
//! page; anything else is 401). Every request that is not GET or HEAD must carry the
//! session's CSRF token as the `csrf` form field, and comes from a viewer only for the two
//! requests that change nothing but the viewer's own session or page (sign-out, form
//! preview): any other is refused with 403 before its handler runs, whatever the page showed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::layout;
use crate::api::AppState;
use crate::store::TokenRole;

/// Name of the session cookie.
pub const COOKIE: &str = "tenet_session";
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;
/// Largest form body the guard reads to find the CSRF token (the API's body limit applies
/// before it).
const MAX_FORM: usize = 1024 * 1024;

/// How the console runs.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleOptions {
    /// Mark the session cookie `Secure` (the collector serves TLS).
    pub secure_cookie: bool,
    /// How long a session lasts from sign-in.
    pub session_ttl: Duration,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            secure_cookie: false,
            session_ttl: Duration::from_secs(8 * 3600),
        }
    }
}

/// A signed-in person, as handlers see it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub role: TokenRole,
    /// The token every state-changing form carries.
    pub csrf: String,
}

impl Session {
    /// How the audit log names what this session does.
    pub fn actor(&self) -> String {
        format!("admin:{}", self.name)
    }

    /// Whether it may change things.
    pub fn is_admin(&self) -> bool {
        self.role == TokenRole::Admin
    }
}

#[derive(Debug)]
struct Entry {
    session: Session,
    token_digest: String,
    created: Instant,
    expires: Instant,
}

/// The console's server-side state: sessions and the caches of its pages.
pub struct Console {
    options: ConsoleOptions,
    sessions: Mutex<HashMap<String, Entry>>,
    /// The trend window's daily aggregates per node (`fleet::History`), and when read.
    pub(super) history: Mutex<Option<(Instant, std::sync::Arc<super::fleet::History>)>>,
}

impl Console {
    /// A console with these options and no session.
    pub fn new(options: ConsoleOptions) -> Console {
        Console {
            options,
            sessions: Mutex::new(HashMap::new()),
            history: Mutex::new(None),
        }
    }

    /// The options in force.
    pub fn options(&self) -> ConsoleOptions {
        self.options
    }

    /// Sessions held now.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().expect("sessions lock").len()
    }

    /// Opens a session; returns the cookie value.
    fn open(&self, name: String, role: TokenRole, token_digest: String) -> String {
        let id = crate::auth::new_secret();
        let now = Instant::now();
        let entry = Entry {
            session: Session {
                name,
                role,
                csrf: crate::auth::new_secret(),
            },
            token_digest,
            created: now,
            expires: now + self.options.session_ttl,
        };
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, e| e.expires > now);
        }
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(digest(&id), entry);
        id
    }

    /// The live session of a cookie value, with its token digest.
    fn find(&self, cookie: &str) -> Option<(Session, String)> {
        let key = digest(cookie);
        let mut sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(&key) {
            Some(e) if e.expires > Instant::now() => {
                Some((e.session.clone(), e.token_digest.clone()))
            }
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    fn close(&self, cookie: &str) {
        self.sessions
            .lock()
            .expect("sessions lock")
            .remove(&digest(cookie));
    }
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The session cookie's value in a request, if any.
fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn set_cookie(options: ConsoleOptions, value: &str, max_age: u64) -> HeaderValue {
    let secure = if options.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie text is ASCII")
}

/// Whether a request's `Origin`, when it sends one, is this collector (a cross-site form post
/// carries the other site's origin).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    !host.is_empty() && bare.eq_ignore_ascii_case(host)
}

/// Requests a viewer may send although they are POSTs: they change nothing stored (sign-out,
/// `/ui/forms/{name}/preview`; not `/ui/forms/preview`, the submit of a form named preview).
fn viewer_may_post(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    path == "/ui/logout"
        || matches!(parts.as_slice(), ["", "ui", "forms", name, "preview"] if !name.is_empty())
}

/// The middleware before every `/ui` handler (see the module documentation).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/ui/static/") || path == "/ui/login" || path == "/ui" {
        return next.run(req).await;
    }
    let reading = req.method() == Method::GET || req.method() == Method::HEAD;
    let found = cookie_value(req.headers()).and_then(|c| state.console.find(&c));
    let session = match found {
        Some((session, token_digest)) => {
            // The token must still exist, with the same role.
            let store = state.store.clone();
            let still = tokio::task::spawn_blocking(move || store.token(&token_digest)).await;
            match still {
                Ok(Ok(Some((_, role)))) if role == session.role => Some(session),
                Ok(Ok(_)) => None,
                Ok(Err(e)) => return layout::internal(e),
                Err(e) => return layout::internal(e),
            }
        }
        None => None,
    };
    let Some(session) = session else {
        if reading {
            return Redirect::to("/ui/login").into_response();
        }
        return layout::error_page(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            "This request needs a session: sign in first.",
        );
    };
    if reading {
        let mut req = req;
        req.extensions_mut().insert(session);
        return next.run(req).await;
    }
    if !session.is_admin() && !viewer_may_post(&path) {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "Read-only session",
            &format!(
                "You are signed in with the viewer token {:?}: it reads everything and changes nothing.",
                session.name
            ),
        );
    }
    if !same_origin(req.headers()) {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The request came from another site's page.",
        );
    }
    // The CSRF token is a form field: read the (bounded) body, check it, hand it on.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
        Ok(b) => b,
        Err(_) => {
            return layout::error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form sent more than the collector accepts.",
            );
        }
    };
    let given = form_urlencoded_field(&bytes, "csrf").unwrap_or_default();
    let ok: bool = given.as_bytes().ct_eq(session.csrf.as_bytes()).into();
    if !ok || given.is_empty() {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "The form did not carry this session's CSRF token: reload the page and try again.",
        );
    }
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(body);
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Decodes a form body into pairs (`+` is a space, `%XX` a byte), keeping order.
pub fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|b| *b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(bytes: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /ui/login`.
pub async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

fn login_form(status: StatusCode, problem: Option<&str>) -> Response {
    let body = html! {
        main.login {
            h1 { "Tenet console" }
            form method="post" action="/ui/login" {
                @if let Some(p) = problem {
                    p.error role="alert" id="login-error" { (p) }
                }
                label for="token" { "Admin or viewer token" }
                input #token type="password" name="token" autocomplete="off" required
                    aria-describedby="token-help";
                p.help #token-help {
                    "Made by " code { "tenet-collector token create --admin" } " or "
                    code { "--viewer" } ". It is sent once, in this form's body, and kept as a digest only."
                }
                button type="submit" { "Sign in" }
            }
        }
    };
    layout::bare_page(status, "Sign in", body)
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /ui/login`: a token in the body opens a session.
pub async fn login(
    State(state): State<AppState>,
    peer: crate::api::PeerAddr,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "The sign-in form was posted from another site's page.",
        );
    }
    if let Err(secs) = state.throttle.check(peer.0) {
        let mut resp = login_form(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-ins from this address: retry in {secs} s."
            )),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let Ok(Form(form)) = form else {
        return login_form(StatusCode::BAD_REQUEST, Some("Give a token."));
    };
    let token = form.token.trim().to_string();
    if token.is_empty() {
        return login_form(StatusCode::BAD_REQUEST, Some("Give a token."));
    }
    let token_digest = crate::auth::digest(&token);
    let store = state.store.clone();
    let d = token_digest.clone();
    let found = match tokio::task::spawn_blocking(move || store.token(&d)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return layout::internal(e),
        Err(e) => return layout::internal(e),
    };
    let Some((name, role)) = found else {
        state.throttle.failed(peer.0, "invalid console token");
        return login_form(StatusCode::UNAUTHORIZED, Some("This token is not valid."));
    };
    tracing::info!(token = name, role = role.as_str(), "console: signed in");
    let options = state.console.options();
    let id = state.console.open(name, role, token_digest);
    let mut resp = Redirect::to("/ui/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(options, &id, options.session_ttl.as_secs()),
    );
    resp
}

/// `POST /ui/logout`: ends the session (the guard checked its CSRF token).
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie_value(&headers) {
        state.console.close(&c);
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(state.console.options(), "", 0),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        let pairs = serde_urlencoded_pairs(b"csrf=a%2Bb&x=1+2&empty=&bad=%zz&tail=%4");
        assert_eq!(
            pairs,
            vec![
                ("csrf".into(), "a+b".into()),
                ("x".into(), "1 2".into()),
                ("empty".into(), "".into()),
                ("bad".into(), "%zz".into()),
                ("tail".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let console = Console::new(ConsoleOptions {
            secure_cookie: true,
            session_ttl: Duration::from_millis(50),
        });
        let id = console.open("a".into(), TokenRole::Viewer, "d".into());
        assert!(console.find(&id).is_some());
        assert!(console.find("other").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(console.find(&id).is_none(), "expired");
        let console = Console::new(ConsoleOptions::default());
        let first = console.open("a".into(), TokenRole::Admin, "d".into());
        for _ in 0..MAX_SESSIONS {
            console.open("a".into(), TokenRole::Admin, "d".into());
        }
        assert_eq!(console.session_count(), MAX_SESSIONS);
        assert!(console.find(&first).is_none(), "the oldest went first");
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let c = set_cookie(
            ConsoleOptions {
                secure_cookie: true,
                session_ttl: Duration::from_secs(60),
            },
            "v",
            60,
        );
        let c = c.to_str().unwrap();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/ui",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        let plain = set_cookie(ConsoleOptions::default(), "v", 60);
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn viewers_may_post_only_what_changes_nothing() {
        assert!(viewer_may_post("/ui/logout"));
        assert!(viewer_may_post("/ui/forms/spd-service/preview"));
        assert!(
            !viewer_may_post("/ui/forms/preview"),
            "a form named preview: its submit"
        );
        assert!(!viewer_may_post("/ui/forms/spd-service"));
        assert!(!viewer_may_post("/ui/actions"));
        assert!(!viewer_may_post("/ui/forms/a/b/preview"));
        assert!(!viewer_may_post("/ui/forms//preview"));
    }

    #[test]
    fn origins_are_compared_with_the_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: a same-origin navigation");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8443"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8443"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
    }
}
