//! Detached signatures of a release squashfs, as `openssl` makes them:
//!
//! ```sh
//! openssl dgst -sha256 -sign ec.pem -out release.sqfs.sig release.sqfs          # ECDSA P-256
//! openssl pkeyutl -sign -inkey ed.pem -rawin -in release.sqfs -out release.sqfs.sig   # Ed25519
//! openssl pkey -in key.pem -pubout -out pub.pem                                  # the public key
//! ```
//!
//! The public key is a PEM `PUBLIC KEY` (SubjectPublicKeyInfo); its algorithm identifier
//! decides how the signature is checked, so a rule names only the key, never the algorithm
//! (no algorithm confusion). The signature may be binary or base64 text.
//!
//! Memory: ECDSA verifies a SHA-256 digest computed while streaming the file. Ed25519 (pure,
//! RFC 8032) hashes the message twice internally and needs it whole, so the file is read into
//! memory: a 1 GB release costs 1 GB of RAM for the time of the check.

use std::io::Read;
use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey,
};
use base64::Engine;

use crate::error::{Error, Result};

/// The kind of a public key that signatures are accepted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256 with SHA-256 (signature DER or raw `r||s`).
    EcdsaP256,
    /// Ed25519 (pure).
    Ed25519,
}

impl KeyKind {
    /// The key kind as error messages and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ECDSA P-256",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

/// Verifies `signature` (binary or base64) of `file` with the PEM SPKI `public_key_pem`.
/// Returns the key's kind when the signature is good.
pub fn verify_detached(file: &Path, signature: &[u8], public_key_pem: &str) -> Result<KeyKind> {
    let spki = pem_public_key(public_key_pem)?;
    let kind = key_kind(&spki)?;
    let signature = signature_bytes(signature, kind);
    let bad = || {
        Error::Signature(format!(
            "the {} signature of {} does not verify with the given public key",
            kind.as_str(),
            file.display()
        ))
    };
    match kind {
        KeyKind::EcdsaP256 => {
            let digest = sha256_streamed(file)?;
            // DER (what openssl writes) always starts with a SEQUENCE tag (0x30); the fixed
            // form is exactly 64 bytes (r || s). A 64-byte signature starting with 0x30 may
            // be either, so it is tried as DER first and then as r || s.
            let alg = if signature.len() == 64 && signature[0] != 0x30 {
                &ECDSA_P256_SHA256_FIXED
            } else {
                &ECDSA_P256_SHA256_ASN1
            };
            let key = UnparsedPublicKey::new(alg, &spki);
            match key.verify_digest(&digest, &signature) {
                Ok(()) => Ok(kind),
                // r||s whose r starts with 0x30 is possible (1 in 256): try the fixed form too.
                Err(_) if signature.len() == 64 => {
                    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &spki)
                        .verify_digest(&digest, &signature)
                        .map(|()| kind)
                        .map_err(|_| bad())
                }
                Err(_) => Err(bad()),
            }
        }
        KeyKind::Ed25519 => {
            let message = std::fs::read(file).map_err(|e| Error::io(file, e))?;
            UnparsedPublicKey::new(&ED25519, &spki)
                .verify(&message, &signature)
                .map(|()| kind)
                .map_err(|_| bad())
        }
    }
}

fn sha256_streamed(file: &Path) -> Result<digest::Digest> {
    let mut f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(file, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish())
}

/// Binary as it is, unless it is base64 text that decodes to a plausible signature length.
fn signature_bytes(raw: &[u8], kind: KeyKind) -> Vec<u8> {
    let text: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let looks_base64 = !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if looks_base64 && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&text) {
        let plausible = match kind {
            KeyKind::Ed25519 => decoded.len() == 64,
            KeyKind::EcdsaP256 => decoded.len() == 64 || decoded.first() == Some(&0x30),
        };
        if plausible {
            return decoded;
        }
    }
    raw.to_vec()
}

fn pem_public_key(pem: &str) -> Result<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem.find(BEGIN).ok_or_else(|| {
        let what = pem
            .lines()
            .find(|l| l.starts_with("-----BEGIN "))
            .map(|l| format!("a PEM {l}"))
            .unwrap_or_else(|| "no PEM block".into());
        Error::Signature(format!(
            "the public key must be a PEM `{BEGIN}` block (SubjectPublicKeyInfo, `openssl pkey -pubout`), found {what}"
        ))
    })? + BEGIN.len();
    let end = pem[start..]
        .find(END)
        .ok_or_else(|| Error::Signature(format!("the public key PEM has no `{END}` line")))?
        + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Error::Signature(format!("the public key PEM is not valid base64: {e}")))
}

// DER encodings of the object identifiers (contents only).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// The key kind from the SPKI's AlgorithmIdentifier; anything else is named in the error.
fn key_kind(spki: &[u8]) -> Result<KeyKind> {
    let malformed = || Error::Signature("the public key is not a DER SubjectPublicKeyInfo".into());
    let (tag, body, _) = der_next(spki).ok_or_else(malformed)?;
    if tag != 0x30 {
        return Err(malformed());
    }
    let (tag, alg_id, _) = der_next(body).ok_or_else(malformed)?;
    if tag != 0x30 {
        return Err(malformed());
    }
    let (tag, oid, params) = der_next(alg_id).ok_or_else(malformed)?;
    if tag != 0x06 {
        return Err(malformed());
    }
    if oid == OID_ED25519 {
        return Ok(KeyKind::Ed25519);
    }
    if oid == OID_EC_PUBLIC_KEY {
        let curve = match der_next(params) {
            Some((0x06, c, _)) => c,
            _ => return Err(malformed()),
        };
        if curve == OID_P256 {
            return Ok(KeyKind::EcdsaP256);
        }
        return Err(Error::Signature(format!(
            "public key type EC on curve {} is not supported (ECDSA P-256 or Ed25519)",
            oid_name(curve)
        )));
    }
    Err(Error::Signature(format!(
        "public key type {} is not supported (ECDSA P-256 or Ed25519)",
        oid_name(oid)
    )))
}

fn oid_name(oid: &[u8]) -> String {
    match oid {
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01] => "RSA".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a] => "RSA-PSS".into(),
        [0x2b, 0x81, 0x04, 0x00, 0x22] => "P-384".into(),
        [0x2b, 0x81, 0x04, 0x00, 0x23] => "P-521".into(),
        [0x2b, 0x65, 0x71] => "Ed448".into(),
        [0x2b, 0x65, 0x6e] => "X25519".into(),
        [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01] => "DSA".into(),
        _ => oid_dotted(oid),
    }
}

fn oid_dotted(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut v: u64 = 0;
    for b in oid {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (v / 40).min(2);
                parts.push(first);
                parts.push(v - first * 40);
            } else {
                parts.push(v);
            }
            v = 0;
        }
    }
    let s: Vec<String> = parts.iter().map(u64::to_string).collect();
    format!("OID {}", s.join("."))
}

/// One DER TLV: (tag, contents, rest). Definite lengths only (DER has no others).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, mut rest) = rest.split_first()?;
    let len = if len0 < 0x80 {
        usize::from(len0)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = crate::testing::tool("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A key pair made by `openssl genpkey` with `gen_args`; returns the public key PEM.
    fn keypair(dir: &Path, name: &str, gen_args: &[&str]) -> String {
        let key = format!("{name}.pem");
        let pub_ = format!("{name}.pub.pem");
        let mut args = vec!["genpkey"];
        args.extend_from_slice(gen_args);
        args.extend_from_slice(&["-out", &key]);
        openssl(dir, &args);
        openssl(dir, &["pkey", "-in", &key, "-pubout", "-out", &pub_]);
        std::fs::read_to_string(dir.join(pub_)).unwrap()
    }

    const EC: &[&str] = &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    const ED: &[&str] = &["-algorithm", "ED25519"];

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("release.sqfs"), data).unwrap();
        dir
    }

    fn sign_ec(dir: &Path, key: &str) -> Vec<u8> {
        openssl(
            dir,
            &[
                "dgst",
                "-sha256",
                "-sign",
                key,
                "-out",
                "f.sig",
                "release.sqfs",
            ],
        );
        std::fs::read(dir.join("f.sig")).unwrap()
    }

    fn sign_ed(dir: &Path, key: &str) -> Vec<u8> {
        openssl(
            dir,
            &[
                "pkeyutl",
                "-sign",
                "-inkey",
                key,
                "-rawin",
                "-in",
                "release.sqfs",
                "-out",
                "f.sig",
            ],
        );
        std::fs::read(dir.join("f.sig")).unwrap()
    }

    fn flip_a_byte(file: &Path) {
        let mut data = std::fs::read(file).unwrap();
        data[1234] ^= 0x01;
        std::fs::write(file, data).unwrap();
    }

    #[test]
    fn ecdsa_p256_from_openssl_verifies_binary_and_base64() {
        let dir = setup();
        let d = dir.path();
        let public = keypair(d, "ec", EC);
        let sig = sign_ec(d, "ec.pem");
        let file = d.join("release.sqfs");
        assert_eq!(
            verify_detached(&file, &sig, &public).unwrap(),
            KeyKind::EcdsaP256
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&sig) + "\n";
        assert_eq!(
            verify_detached(&file, b64.as_bytes(), &public).unwrap(),
            KeyKind::EcdsaP256
        );
    }

    #[test]
    fn ecdsa_raw_r_s_form_verifies() {
        let dir = setup();
        let d = dir.path();
        let public = keypair(d, "ec", EC);
        let der = sign_ec(d, "ec.pem");
        // DER SEQUENCE { INTEGER r, INTEGER s } -> 32-byte big-endian r || s
        let (_, seq, _) = der_next(&der).unwrap();
        let (_, r, rest) = der_next(seq).unwrap();
        let (_, s, _) = der_next(rest).unwrap();
        let mut raw = Vec::new();
        for int in [r, s] {
            let int: &[u8] = if int.len() > 32 {
                &int[int.len() - 32..]
            } else {
                int
            };
            raw.extend(std::iter::repeat_n(0u8, 32 - int.len()));
            raw.extend_from_slice(int);
        }
        assert_eq!(raw.len(), 64);
        let file = d.join("release.sqfs");
        assert_eq!(
            verify_detached(&file, &raw, &public).unwrap(),
            KeyKind::EcdsaP256
        );
    }

    #[test]
    fn ed25519_from_openssl_verifies() {
        let dir = setup();
        let d = dir.path();
        let public = keypair(d, "ed", ED);
        let sig = sign_ed(d, "ed.pem");
        let file = d.join("release.sqfs");
        assert_eq!(
            verify_detached(&file, &sig, &public).unwrap(),
            KeyKind::Ed25519
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
        assert_eq!(
            verify_detached(&file, b64.as_bytes(), &public).unwrap(),
            KeyKind::Ed25519
        );
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let dir = setup();
        let d = dir.path();
        let ec_pub = keypair(d, "ec", EC);
        let ed_pub = keypair(d, "ed", ED);
        let ec_sig = sign_ec(d, "ec.pem");
        let ed_sig = sign_ed(d, "ed.pem");
        let file = d.join("release.sqfs");
        flip_a_byte(&file);
        for (sig, key) in [(&ec_sig, &ec_pub), (&ed_sig, &ed_pub)] {
            let err = verify_detached(&file, sig, key).unwrap_err();
            assert!(
                matches!(&err, Error::Signature(m) if m.contains("does not verify")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let dir = setup();
        let d = dir.path();
        keypair(d, "ec", EC);
        let other_ec = keypair(d, "ec2", EC);
        keypair(d, "ed", ED);
        let other_ed = keypair(d, "ed2", ED);
        let file = d.join("release.sqfs");
        let ec_sig = sign_ec(d, "ec.pem");
        let ed_sig = sign_ed(d, "ed.pem");
        assert!(matches!(
            verify_detached(&file, &ec_sig, &other_ec),
            Err(Error::Signature(_))
        ));
        assert!(matches!(
            verify_detached(&file, &ed_sig, &other_ed),
            Err(Error::Signature(_))
        ));
        // an Ed25519 signature offered to an ECDSA key, and the reverse
        assert!(verify_detached(&file, &ed_sig, &other_ec).is_err());
        assert!(verify_detached(&file, &ec_sig, &other_ed).is_err());
    }

    #[test]
    fn rsa_and_p384_keys_are_named_in_the_error() {
        let dir = setup();
        let d = dir.path();
        let rsa = keypair(
            d,
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        );
        let err = verify_detached(&d.join("release.sqfs"), b"sig", &rsa)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("public key type RSA is not supported"),
            "{err}"
        );
        let p384 = keypair(
            d,
            "p384",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        );
        let err = verify_detached(&d.join("release.sqfs"), b"sig", &p384)
            .unwrap_err()
            .to_string();
        assert!(err.contains("curve P-384 is not supported"), "{err}");
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let dir = setup();
        let file = dir.path().join("release.sqfs");
        for (pem, needle) in [
            ("hello", "found no PEM block"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "found a PEM -----BEGIN PRIVATE KEY-----",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
                "not valid base64",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "not a DER SubjectPublicKeyInfo",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n",
                "no `-----END PUBLIC KEY-----`",
            ),
        ] {
            let err = verify_detached(&file, b"sig", pem).unwrap_err();
            assert!(
                matches!(&err, Error::Signature(m) if m.contains(needle)),
                "{pem:?}: {err}"
            );
        }
    }
}
