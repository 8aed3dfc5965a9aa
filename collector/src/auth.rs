//! Credentials: admin bearer tokens and node secrets.
//!
//! Both are 256-bit random values shown once and stored as their SHA-256 digest. A slow
//! password hash (argon2) protects low-entropy passwords from offline guessing; against a
//! uniformly random 256-bit secret, guessing is already infeasible, so a fast digest gives the
//! same protection for a leaked database while keeping authentication cheap enough for
//! thousands of policy fetches per second (the approach of GitHub and GitLab API tokens).
//! Comparisons are constant-time.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of admin tokens, so a leaked one is recognisable (secret scanners, logs review).
pub const ADMIN_TOKEN_PREFIX: &str = "tenet_admin_";

/// A new random secret: 32 bytes from the OS, base64url without padding.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random generator is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new admin token.
pub fn new_admin_token() -> String {
    format!("{ADMIN_TOKEN_PREFIX}{}", new_secret())
}

/// Prefix of viewer (read-only) tokens.
pub const VIEWER_TOKEN_PREFIX: &str = "tenet_viewer_";

/// A new viewer token.
pub fn new_viewer_token() -> String {
    format!("{VIEWER_TOKEN_PREFIX}{}", new_secret())
}

/// The stored form of a secret or token: hex SHA-256.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` matches the stored `digest`, in constant time.
pub fn verify(secret: &str, stored_digest: &str) -> bool {
    let computed = digest(secret);
    computed.as_bytes().ct_eq(stored_digest.as_bytes()).into()
}

/// Credentials presented in an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// `Bearer <token>` (admins).
    Bearer(String),
    /// `Basic base64(node_id:secret)` (nodes).
    Basic {
        /// The user part: a node id (or name).
        user: String,
        /// The password part: the node secret.
        secret: String,
    },
}

/// Parses an `Authorization` header value; `None` when it is neither scheme or malformed.
pub fn parse_authorization(value: &str) -> Option<Presented> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| Presented::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, secret) = text.split_once(':')?;
        return Some(Presented::Basic {
            user: user.to_string(),
            secret: secret.to_string(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_verify_against_their_digest_only() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        let d = digest(&a);
        assert!(verify(&a, &d));
        assert!(!verify(&b, &d));
        assert!(!d.contains(&a));
        assert!(new_admin_token().starts_with(ADMIN_TOKEN_PREFIX));
    }

    #[test]
    fn authorization_headers_parse() {
        assert_eq!(
            parse_authorization("Bearer abc"),
            Some(Presented::Bearer("abc".into()))
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("id-1:s:e:c");
        assert_eq!(
            parse_authorization(&format!("Basic {basic}")),
            Some(Presented::Basic {
                user: "id-1".into(),
                secret: "s:e:c".into()
            })
        );
        assert_eq!(parse_authorization("Basic !!!"), None);
        assert_eq!(parse_authorization("Digest x"), None);
        assert_eq!(parse_authorization("Bearer "), None);
    }
}
