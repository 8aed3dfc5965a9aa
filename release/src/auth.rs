//! Registry authentication: anonymous, HTTP Basic (the distribution registry's `htpasswd`
//! auth), and the distribution token protocol (Harbor, Quay, GitLab, the distribution registry
//! with `auth: token`).
//!
//! The registry says which it wants in the `WWW-Authenticate` header of a 401:
//! - `Basic realm="..."`: the credentials go with every request;
//! - `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"`:
//!   a token is asked of the realm (`GET realm?service=...&scope=...`, with the credentials as
//!   Basic auth, or anonymously when the registry has none), then sent as
//!   `Authorization: Bearer <token>`. Tokens are cached per scope until shortly before they
//!   expire (`expires_in`, 60 s when the realm does not say), and a token for
//!   `repository:a:pull,push` also serves `repository:a:pull`.
//!
//! Nothing is sent before the registry asks: the first request of a registry goes without
//! credentials, and its 401 teaches [`Auth`] the scheme (one round trip per registry and
//! operation; requests carrying a streamed body always follow one that has learnt it).
//!
//! Invariants:
//! - Passwords and tokens never appear in errors, logs or `Debug` output.
//! - Credentials are never sent to a plain-`http` realm of an `https` registry (the realm
//!   comes from the registry, and a downgrade would expose them).
//! - A realm's answer is read up to [`MAX_TOKEN_RESPONSE`] bytes.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use crate::error::{Error, Result};

/// The largest token response read from a realm.
pub const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// A token's lifetime when the realm gives none (the token specification's default).
const DEFAULT_EXPIRES_IN: u64 = 60;

/// A user name and its password (the password never shown).
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: String,
}

impl Credentials {
    /// Credentials from a user name and a password.
    pub fn new(username: String, password: String) -> Credentials {
        Credentials { username, password }
    }

    fn basic(&self) -> HeaderValue {
        let raw = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        let mut v = HeaderValue::from_str(&format!("Basic {raw}")).expect("base64 is ASCII");
        v.set_sensitive(true);
        v
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// The access a request needs: `repository:<name>:<actions>` items, as the token protocol
/// spells them (`repository:calico/cni:pull,push`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Vec<(String, Vec<&'static str>)>);

impl Scope {
    /// Reading `repo` (HEAD, GET).
    pub fn pull(repo: &str) -> Scope {
        Scope(vec![(repo.to_string(), vec!["pull"])])
    }

    /// Writing `repo` (blob uploads, manifest PUT).
    pub fn push(repo: &str) -> Scope {
        Scope(vec![(repo.to_string(), vec!["pull", "push"])])
    }

    /// Deleting manifests of `repo`.
    pub fn delete(repo: &str) -> Scope {
        Scope(vec![(repo.to_string(), vec!["delete"])])
    }

    /// This scope plus reading `repo` (a blob mount reads its source repository).
    pub fn and_pull(mut self, repo: &str) -> Scope {
        match self.0.iter_mut().find(|(r, _)| r == repo) {
            Some((_, actions)) if actions.contains(&"pull") => {}
            Some((_, actions)) => actions.insert(0, "pull"),
            None => self.0.push((repo.to_string(), vec!["pull"])),
        }
        self
    }

    /// The `scope` query values, one per repository.
    pub fn items(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(repo, actions)| format!("repository:{repo}:{}", actions.join(",")))
            .collect()
    }

    /// Whether a token granted for `self` also serves `other`.
    fn covers(&self, other: &Scope) -> bool {
        other.0.iter().all(|(repo, wanted)| {
            self.0
                .iter()
                .any(|(r, have)| r == repo && wanted.iter().all(|w| have.contains(w)))
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.items().join(" "))
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lower case).
    pub scheme: String,
    /// The parameters (`realm`, `service`, `scope`, `error`), names in lower case.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses the first challenge of a header value (`Bearer realm="...",service="..."`).
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, mut rest) = match value.find(char::is_whitespace) {
            Some(i) => (&value[..i], value[i..].trim_start()),
            None => (value, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_ascii_lowercase();
            if key.is_empty() || key.contains(char::is_whitespace) {
                // Another challenge follows (`Basic realm="x", Bearer ...`): the first is ours.
                break;
            }
            rest = rest[eq + 1..].trim_start();
            let value = if let Some(quoted) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                out.push(n);
                            }
                        }
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => out.push(c),
                    }
                }
                rest = &quoted[end?..];
                out
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                let v = rest[..end].trim().to_string();
                rest = &rest[end..];
                v
            };
            params.push((key, value));
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// No 401 seen yet: requests go without credentials.
    Unknown,
    /// HTTP Basic.
    Basic,
    /// The token protocol.
    Bearer {
        realm: reqwest::Url,
        service: Option<String>,
    },
}

struct Token {
    scope: Scope,
    value: String,
    until: Instant,
}

struct State {
    mode: Mode,
    tokens: Vec<Token>,
}

/// How one registry is authenticated: its credentials (if any), the scheme it asked for,
/// and the tokens it granted. Shared by the clones of a [`crate::registry::Registry`].
pub struct Auth {
    registry: String,
    registry_https: bool,
    credentials: Option<Credentials>,
    state: tokio::sync::Mutex<State>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("registry", &self.registry)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The most tokens kept per registry (one per repository and access; a release has tens).
const MAX_TOKENS: usize = 1024;

impl Auth {
    /// Authentication for `registry` (`host:port`, for messages), reached over https or not.
    pub fn new(registry: &str, https: bool, credentials: Option<Credentials>) -> Auth {
        Auth {
            registry: registry.to_string(),
            registry_https: https,
            credentials,
            state: tokio::sync::Mutex::new(State {
                mode: Mode::Unknown,
                tokens: Vec::new(),
            }),
        }
    }

    /// The user name, when credentials are configured.
    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.username.as_str())
    }

    fn error(&self, message: String) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            message,
        }
    }

    /// The `Authorization` header for a request needing `scope`, fetching a token when the
    /// registry uses the token protocol and none cached covers the scope.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
    ) -> Result<Option<HeaderValue>> {
        let mut st = self.state.lock().await;
        match st.mode.clone() {
            Mode::Unknown => Ok(None),
            Mode::Basic => Ok(self.credentials.as_ref().map(Credentials::basic)),
            Mode::Bearer { realm, service } => {
                let now = Instant::now();
                st.tokens.retain(|t| t.until > now);
                if let Some(t) = st.tokens.iter().find(|t| t.scope.covers(scope)) {
                    return Ok(Some(bearer(&t.value)));
                }
                let (value, lifetime) = self
                    .fetch_token(http, &realm, service.as_deref(), scope)
                    .await?;
                let header = bearer(&value);
                if st.tokens.len() >= MAX_TOKENS {
                    st.tokens.remove(0);
                }
                st.tokens.push(Token {
                    scope: scope.clone(),
                    value,
                    until: Instant::now() + lifetime,
                });
                Ok(Some(header))
            }
        }
    }

    /// The registry answered 401 with `challenge` to a request needing `scope`, sent with
    /// an `Authorization` header or not (`sent`): learns the scheme, drops the refused
    /// token, and says whether the request is worth one retry.
    pub async fn challenged(
        &self,
        challenge: Option<&HeaderValue>,
        scope: &Scope,
        sent: bool,
    ) -> Result<bool> {
        let Some(challenge) = challenge
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
        else {
            return Ok(false);
        };
        let mut st = self.state.lock().await;
        match challenge.scheme.as_str() {
            "bearer" => {
                let realm = challenge
                    .param("realm")
                    .ok_or_else(|| self.error("a Bearer challenge without a realm".to_string()))?;
                let realm = reqwest::Url::parse(realm).map_err(|e| {
                    self.error(format!("the token realm {realm:?} is not a URL: {e}"))
                })?;
                match realm.scheme() {
                    "https" => {}
                    "http" if !self.registry_https => {}
                    "http" => {
                        return Err(self.error(format!(
                            "the token realm {realm} is plain http while the registry is https: \
                             refused (credentials and tokens would travel in clear)"
                        )));
                    }
                    other => {
                        return Err(self.error(format!(
                            "the token realm {realm} has the unsupported scheme {other}"
                        )));
                    }
                }
                let mode = Mode::Bearer {
                    realm,
                    service: challenge.param("service").map(str::to_string),
                };
                st.mode = mode;
                // A refused (expired, or short of the access) token goes; the one retry the
                // caller makes asks for a fresh one, and its refusal is final.
                st.tokens.retain(|t| !t.scope.covers(scope));
                Ok(true)
            }
            "basic" => {
                // Refused credentials are final; a request that went without them (before
                // the scheme was known, or concurrently with the one that learnt it) retries.
                if sent || self.credentials.is_none() {
                    return Ok(false);
                }
                st.mode = Mode::Basic;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Why a request was refused with 401 or 403, in words an operator acts on.
    pub async fn refusal_hint(&self, scope: &Scope) -> String {
        let st = self.state.lock().await;
        match (&st.mode, &self.credentials) {
            (_, None) => "the registry requires authentication: set username and password_file \
                          for it"
                .to_string(),
            (Mode::Bearer { realm, .. }, Some(c)) => format!(
                "the token from {realm} for user {} does not grant {scope}",
                c.username
            ),
            (_, Some(c)) => format!("the registry refused user {} for {scope}", c.username),
        }
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &reqwest::Url,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<(String, Duration)> {
        let mut url = realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for item in scope.items() {
                q.append_pair("scope", &item);
            }
        }
        let mut req = http.get(url);
        if let Some(c) = &self.credentials {
            req = req.header(reqwest::header::AUTHORIZATION, c.basic());
        }
        let what = format!("token for {scope} from {realm}");
        let res = req
            .send()
            .await
            .map_err(|e| self.error(format!("{what}: {}", e.without_url())))?;
        let status = res.status();
        if !status.is_success() {
            let why = match (status, &self.credentials) {
                (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, Some(c)) => format!(
                    "HTTP {status}: the realm refused the credentials of user {} (check \
                     username and password_file)",
                    c.username
                ),
                (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, None) => format!(
                    "HTTP {status}: the realm requires credentials: set username and \
                     password_file for this registry"
                ),
                _ => format!("HTTP {status}"),
            };
            return Err(self.error(format!("{what}: {why}")));
        }
        if res
            .content_length()
            .is_some_and(|n| n > MAX_TOKEN_RESPONSE as u64)
        {
            return Err(self.error(format!("{what}: the answer is larger than 1 MiB")));
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| self.error(format!("{what}: {}", e.without_url())))?;
        if body.len() > MAX_TOKEN_RESPONSE {
            return Err(self.error(format!("{what}: the answer is larger than 1 MiB")));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        // The body holds the token: a parse error says where, never what.
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            self.error(format!(
                "{what}: not a token answer (JSON error at line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let value = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.error(format!("{what}: the answer holds no token")))?;
        if HeaderValue::from_str(&format!("Bearer {value}")).is_err() {
            return Err(self.error(format!("{what}: the token is not a valid header value")));
        }
        let expires_in = answer
            .expires_in
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_EXPIRES_IN);
        // Renewed a little before the end, so a request never leaves with a dying token.
        let lifetime = Duration::from_secs(expires_in).mul_f64(0.9);
        Ok((value, lifetime))
    }
}

fn bearer(token: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).expect("checked when received");
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));
        let c = Challenge::parse(r#"Basic realm="tenet \"test\"""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some(r#"tenet "test""#));
        let c = Challenge::parse("Bearer realm=https://a/t, service=s").unwrap();
        assert_eq!(c.param("realm"), Some("https://a/t"));
        assert_eq!(c.param("service"), Some("s"));
        assert!(Challenge::parse("").is_none());
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn scopes_spell_and_cover() {
        let push = Scope::push("a/b").and_pull("c");
        assert_eq!(
            push.items(),
            vec!["repository:a/b:pull,push", "repository:c:pull"]
        );
        assert!(push.covers(&Scope::pull("a/b")));
        assert!(push.covers(&Scope::pull("c")));
        assert!(!push.covers(&Scope::push("c")));
        assert!(!Scope::pull("a/b").covers(&Scope::push("a/b")));
        assert!(!push.covers(&Scope::delete("a/b")));
        assert_eq!(Scope::push("a").and_pull("a"), Scope::push("a"));
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials::new("lir".into(), "s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
        let a = Auth::new("r:5000", true, Some(c));
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(c_basic_is_sensitive());
    }

    fn c_basic_is_sensitive() -> bool {
        Credentials::new("u".into(), "p".into())
            .basic()
            .is_sensitive()
    }

    #[tokio::test]
    async fn a_plain_http_realm_of_an_https_registry_is_refused() {
        let a = Auth::new(
            "r:5000",
            true,
            Some(Credentials::new("u".into(), "p".into())),
        );
        let h = HeaderValue::from_static(r#"Bearer realm="http://auth/token",service="r""#);
        let err = a
            .challenged(Some(&h), &Scope::pull("x"), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plain http") && err.contains("r:5000"),
            "{err}"
        );
        // A Basic challenge without credentials is not worth a retry.
        let anon = Auth::new("r:5000", true, None);
        let h = HeaderValue::from_static(r#"Basic realm="r""#);
        assert!(
            !anon
                .challenged(Some(&h), &Scope::pull("x"), false)
                .await
                .unwrap()
        );
        // With credentials: a request sent without them retries, one sent with them not.
        let a = Auth::new(
            "r:5000",
            true,
            Some(Credentials::new("u".into(), "p".into())),
        );
        assert!(
            a.challenged(Some(&h), &Scope::pull("x"), false)
                .await
                .unwrap()
        );
        assert!(
            a.challenged(Some(&h), &Scope::pull("y"), false)
                .await
                .unwrap()
        );
        assert!(
            !a.challenged(Some(&h), &Scope::pull("x"), true)
                .await
                .unwrap()
        );
    }

    /// A realm on loopback handing out numbered tokens that live `expires_in` seconds;
    /// returns its URL and the scopes of the requests it got.
    async fn realm(
        expires_in: u64,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>) {
        use axum::extract::RawQuery;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::get(move |RawQuery(q): RawQuery| {
                let log = log.clone();
                async move {
                    let scopes: Vec<String> =
                        reqwest::Url::parse(&format!("http://x/?{}", q.unwrap_or_default()))
                            .unwrap()
                            .query_pairs()
                            .filter(|(k, _)| k == "scope")
                            .map(|(_, v)| v.into_owned())
                            .collect();
                    let mut log = log.lock().unwrap();
                    log.push(scopes);
                    axum::Json(serde_json::json!({
                        "token": format!("tok-{}", log.len()),
                        "expires_in": expires_in
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/token"), seen)
    }

    #[tokio::test]
    async fn tokens_are_cached_per_scope_until_they_expire() {
        let (url, seen) = realm(2).await;
        let a = Auth::new("r:5000", false, None);
        let http = reqwest::Client::new();
        // Before a challenge, nothing is sent.
        assert!(
            a.authorization(&http, &Scope::pull("a"))
                .await
                .unwrap()
                .is_none()
        );
        let h = HeaderValue::from_str(&format!(r#"Bearer realm="{url}",service="r""#)).unwrap();
        assert!(
            a.challenged(Some(&h), &Scope::pull("a"), false)
                .await
                .unwrap()
        );
        let header = |v: Option<HeaderValue>| v.unwrap().to_str().unwrap().to_string();
        let first = header(a.authorization(&http, &Scope::pull("a")).await.unwrap());
        assert_eq!(first, "Bearer tok-1");
        // Cached: the same scope asks nothing more.
        assert_eq!(
            header(a.authorization(&http, &Scope::pull("a")).await.unwrap()),
            first
        );
        // A wider scope is asked for; it then serves the narrower one too.
        let push = header(a.authorization(&http, &Scope::push("a")).await.unwrap());
        assert_eq!(push, "Bearer tok-2");
        // Another repository is another scope.
        assert_eq!(
            header(a.authorization(&http, &Scope::pull("b")).await.unwrap()),
            "Bearer tok-3"
        );
        assert_eq!(seen.lock().unwrap().len(), 3);
        // After 90% of expires_in the tokens are dropped and asked again.
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert_eq!(
            header(a.authorization(&http, &Scope::pull("a")).await.unwrap()),
            "Bearer tok-4"
        );
        // A token the registry refuses is dropped at once: the retry asks a fresh one.
        assert!(
            a.challenged(Some(&h), &Scope::pull("a"), true)
                .await
                .unwrap()
        );
        assert_eq!(
            header(a.authorization(&http, &Scope::pull("a")).await.unwrap()),
            "Bearer tok-5"
        );
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                vec!["repository:a:pull".to_string()],
                vec!["repository:a:pull,push".to_string()],
                vec!["repository:b:pull".to_string()],
                vec!["repository:a:pull".to_string()],
                vec!["repository:a:pull".to_string()],
            ]
        );
    }
}
