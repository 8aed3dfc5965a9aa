//! The `self_signed_cert` class: an RSA private key and a self-signed certificate with the
//! rule's subject, alternative names, validity and key size.
//!
//! OpenSVC name `self_signed_cert` (object script `self_signed_cert.py`). A rule is
//! `{"CN": "svc1", "crt": "/srv/svc1/ssl/server.crt", "key": "/srv/svc1/ssl/server.key",
//! "bits": 2048, "C": "FR", "ST": "Ile de France", "L": "Paris", "O": "OpenSVC", "OU": "Lab",
//! "emailAddress": "support@opensvc.com", "alt_names": [{"dns": "svc1.example.com"}]}`; only
//! `CN`, `crt` and `key` are required. Tenet adds `days` (validity of a new certificate, 365 by
//! default) and `renew_days` (a certificate expiring within that many days is nok, 30 by
//! default).
//!
//! check reads both files (PEM) and reports every difference: a missing or unreadable file, a
//! key that is not RSA or not of `bits` bits, a certificate whose subject (C, ST, L, O, OU, CN,
//! emailAddress, in that order) or DNS alternative names differ, that is not signed by its own
//! key or whose key is not the key file's, that is not yet valid or expires within
//! `renew_days`, and a key file readable by group or others. fix makes a new certificate
//! (rcgen on aws-lc-rs, no `openssl` command), keeping the existing key when it is an RSA key
//! of the right size in PKCS#8 form, else making a new one; files are written atomically (key
//! mode 0600, certificate 0644), the old ones backed up. Missing directories are created.
//!
//! Differences from OpenSVC are the `#cert-*` rows of `docs/opensvc-compat.md`.

use std::os::unix::fs::MetadataExt;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// The OID of `emailAddress` (PKCS #9).
const EMAIL_OID: [u64; 7] = [1, 2, 840, 113549, 1, 9, 1];
/// The subject attributes a rule may give, in the order OpenSVC writes them, with their OIDs.
const ATTRS: [(&str, &[u64]); 7] = [
    ("C", &[2, 5, 4, 6]),
    ("ST", &[2, 5, 4, 8]),
    ("L", &[2, 5, 4, 7]),
    ("O", &[2, 5, 4, 10]),
    ("OU", &[2, 5, 4, 11]),
    ("CN", &[2, 5, 4, 3]),
    ("emailAddress", &EMAIL_OID),
];

/// One alternative name of a rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AltName {
    /// A DNS name (`DNS` is accepted too; an empty name is skipped).
    #[serde(alias = "DNS")]
    dns: String,
}

/// One `self_signed_cert` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
struct RawRule {
    CN: String,
    crt: String,
    key: String,
    #[serde(default)]
    bits: Option<u32>,
    #[serde(default)]
    C: Option<String>,
    #[serde(default)]
    ST: Option<String>,
    #[serde(default)]
    L: Option<String>,
    #[serde(default)]
    O: Option<String>,
    #[serde(default)]
    OU: Option<String>,
    #[serde(default)]
    emailAddress: Option<String>,
    #[serde(default)]
    alt_names: Vec<AltName>,
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    renew_days: Option<u32>,
}

/// One `self_signed_cert` rule, checked.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct CertRule {
    /// Certificate path (PEM).
    pub crt: String,
    /// Private key path (PEM).
    pub key: String,
    /// RSA key size: 2048, 3072 or 4096.
    pub bits: u32,
    /// The subject, `(attribute name, value)` in OpenSVC's order, empty values left out.
    pub subject: Vec<(&'static str, String)>,
    /// DNS alternative names.
    pub dns: Vec<String>,
    /// Validity of a new certificate, in days.
    pub days: u32,
    /// A certificate expiring within this many days is nok.
    pub renew_days: u32,
}

impl TryFrom<RawRule> for CertRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        for (field, path) in [("crt", &raw.crt), ("key", &raw.key)] {
            if !path.starts_with('/') || path.ends_with('/') {
                return Err(format!("{field}: {path:?} is not an absolute file path"));
            }
        }
        if raw.crt == raw.key {
            return Err("key: the same file as crt".into());
        }
        let bits = raw.bits.unwrap_or(2048);
        if ![2048, 3072, 4096].contains(&bits) {
            return Err(format!("bits: {bits}: expected 2048, 3072 or 4096"));
        }
        let days = raw.days.unwrap_or(365);
        let renew_days = raw.renew_days.unwrap_or(30.min(days / 2));
        if !(1..=36_500).contains(&days) {
            return Err(format!("days: {days}: expected 1 to 36500"));
        }
        if renew_days >= days {
            return Err(format!(
                "renew_days: {renew_days} is not less than days ({days}): every new certificate would be due for renewal"
            ));
        }
        let values = [
            raw.C, raw.ST, raw.L, raw.O, raw.OU, Some(raw.CN), raw.emailAddress,
        ];
        let mut subject = Vec::new();
        for ((name, _), value) in ATTRS.iter().zip(values) {
            let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
                if *name == "CN" {
                    return Err("CN: empty".into());
                }
                continue;
            };
            if v.contains(['\n', '\0']) {
                return Err(format!("{name}: {v:?} holds a newline or NUL"));
            }
            if *name == "C" && (v.len() != 2 || !v.chars().all(|c| c.is_ascii_alphabetic())) {
                return Err(format!("C: {v:?} is not a two-letter country code"));
            }
            if *name == "emailAddress" && !v.is_ascii() {
                return Err(format!("emailAddress: {v:?} is not ASCII"));
            }
            subject.push((*name, v));
        }
        let mut dns = Vec::new();
        for (i, a) in raw.alt_names.iter().enumerate() {
            let n = a.dns.trim();
            if n.is_empty() {
                continue;
            }
            if !n.is_ascii() || n.contains(char::is_whitespace) {
                return Err(format!("alt_names[{i}].dns: {n:?} is not a DNS name"));
            }
            dns.push(n.to_string());
        }
        Ok(CertRule {
            crt: raw.crt,
            key: raw.key,
            bits,
            subject,
            dns,
            days,
            renew_days,
        })
    }
}

/// The `self_signed_cert` class.
#[derive(Debug)]
pub struct SelfSignedCert;

impl Class for SelfSignedCert {
    type Rule = CertRule;

    const NAME: &'static str = "self_signed_cert";
    const ALIASES: &'static [&'static str] = &["self_signed_cert.py"];
    const DESCRIPTION: &'static str =
        "an RSA key and a self-signed certificate with a subject, alternative names, validity and key size";
    const STAGED_WRITES: bool = true;

    fn describe(rule: &CertRule) -> String {
        rule.crt.clone()
    }

    fn check(rule: &CertRule, host: &HostView, log: &mut Log) -> Status {
        let problems = problems(rule, host, OffsetDateTime::now_utc());
        if problems.is_empty() {
            log.info(format!(
                "{}: certificate for {} and its key {}, ok",
                rule.crt,
                subject_text(&rule.subject),
                rule.key
            ));
            Status::Ok
        } else {
            for p in problems {
                log.err(p.text());
            }
            Status::Nok
        }
    }

    fn fix(rule: &CertRule, host: &Host, log: &mut Log) -> Status {
        match fix_rule(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("{}: {e}", rule.crt));
                Status::Nok
            }
        }
    }
}

fn subject_text(subject: &[(&str, String)]) -> String {
    subject
        .iter()
        .map(|(k, v)| format!("/{k}={v}"))
        .collect::<String>()
}

/// What is wrong.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    /// Only the key file's mode: fix changes it and nothing else.
    KeyMode(String),
    /// Anything else: fix makes a new certificate.
    Other(String),
}

impl Problem {
    fn text(&self) -> &str {
        match self {
            Problem::KeyMode(t) | Problem::Other(t) => t,
        }
    }
}

/// The key of the key file, if it is an RSA key in PKCS#8 (`PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`) PEM.
fn read_key(pem_text: &str) -> Result<(aws_lc_rs::rsa::KeyPair, bool), String> {
    let block = pem::parse(pem_text).map_err(|e| format!("not a PEM key: {e}"))?;
    match block.tag() {
        "PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_pkcs8(block.contents())
            .map(|k| (k, true))
            .map_err(|e| format!("not an RSA private key: {e}")),
        "RSA PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_der(block.contents())
            .map(|k| (k, false))
            .map_err(|e| format!("not an RSA private key: {e}")),
        other => Err(format!("a PEM {other:?}, not a private key")),
    }
}

fn problems(rule: &CertRule, host: &HostView, now: OffsetDateTime) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut other = |t: String| out.push(Problem::Other(t));
    let read = |path: &str| -> Result<Option<(String, u32)>, String> {
        let p = host.path(path).map_err(|e| e.to_string())?;
        let Some(meta) = host.metadata(&p).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        let text = host
            .read_to_string(&p)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        Ok(Some((text, meta.mode() & 0o7777)))
    };
    let key = match read(&rule.key) {
        Ok(None) => {
            other(format!("{}: key missing", rule.key));
            None
        }
        Err(e) => {
            other(format!("{}: {e}", rule.key));
            None
        }
        Ok(Some((text, mode))) => match read_key(&text) {
            Ok((k, _)) => {
                let bits = k.public_modulus_len() * 8;
                if bits as u32 != rule.bits {
                    other(format!("{}: {bits}-bit key, expected {}", rule.key, rule.bits));
                }
                if mode & 0o077 != 0 {
                    out.push(Problem::KeyMode(format!(
                        "{}: mode {mode:04o}, expected 0600 (a private key)",
                        rule.key
                    )));
                }
                Some(k)
            }
            Err(e) => {
                other(format!("{}: {e}", rule.key));
                None
            }
        },
    };
    let mut other = |t: String| out.push(Problem::Other(t));
    let cert = match read(&rule.crt) {
        Ok(None) => {
            other(format!("{}: certificate missing", rule.crt));
            return out;
        }
        Err(e) => {
            other(format!("{}: {e}", rule.crt));
            return out;
        }
        Ok(Some((text, _))) => {
            match pem::parse(&text)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    if b.tag() == "CERTIFICATE" {
                        parse_cert(b.contents()).map_err(|e| format!("unreadable certificate: {e}"))
                    } else {
                        Err(format!("a PEM {:?}, not a certificate", b.tag()))
                    }
                }) {
                Ok(c) => c,
                Err(e) => {
                    other(format!("{}: {e}", rule.crt));
                    return out;
                }
            }
        }
    };
    let crt = &rule.crt;
    let want: Vec<(Vec<u64>, String)> = rule
        .subject
        .iter()
        .map(|(name, v)| {
            let oid = ATTRS.iter().find(|(n, _)| n == name).map(|(_, o)| o.to_vec());
            (oid.unwrap_or_default(), v.clone())
        })
        .collect();
    if cert.subject != want {
        other(format!(
            "{crt}: subject is {}, expected {}",
            show_name(&cert.subject),
            subject_text(&rule.subject)
        ));
    }
    let mut have_dns = cert.dns.clone();
    let mut want_dns = rule.dns.clone();
    have_dns.sort();
    want_dns.sort();
    if have_dns != want_dns {
        other(format!(
            "{crt}: DNS names are [{}], expected [{}]",
            have_dns.join(", "),
            want_dns.join(", ")
        ));
    }
    if cert.issuer_der != cert.subject_der {
        other(format!("{crt}: not self-signed (the issuer is not the subject)"));
    }
    match verify_algorithm(&cert.sig_alg) {
        None => other(format!(
            "{crt}: signature algorithm {} not supported",
            oid_text(&cert.sig_alg)
        )),
        Some(alg) => {
            if UnparsedPublicKey::new(alg, &cert.public_key)
                .verify(&cert.tbs, &cert.signature)
                .is_err()
            {
                other(format!("{crt}: not signed by its own key"));
            }
        }
    }
    if let Some(k) = &key {
        use aws_lc_rs::signature::KeyPair as _;
        if k.public_key().as_ref() != cert.public_key.as_slice() {
            other(format!(
                "{crt}: its public key is not the one of {}",
                rule.key
            ));
        }
    }
    if now < cert.not_before {
        other(format!("{crt}: not valid before {}", cert.not_before));
    }
    let renew_at = cert.not_after - Duration::days(rule.renew_days.into());
    if now >= cert.not_after {
        other(format!("{crt}: expired on {}", cert.not_after));
    } else if now >= renew_at {
        other(format!(
            "{crt}: expires on {}, within {} days: due for renewal",
            cert.not_after, rule.renew_days
        ));
    }
    out
}

fn verify_algorithm(oid: &[u64]) -> Option<&'static dyn signature::VerificationAlgorithm> {
    match oid {
        [1, 2, 840, 113549, 1, 1, 11] => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        [1, 2, 840, 113549, 1, 1, 12] => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        [1, 2, 840, 113549, 1, 1, 13] => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        _ => None,
    }
}

fn oid_text(oid: &[u64]) -> String {
    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn show_name(name: &[(Vec<u64>, String)]) -> String {
    name.iter()
        .map(|(oid, v)| {
            let label = ATTRS
                .iter()
                .find(|(_, o)| *o == oid.as_slice())
                .map(|(n, _)| n.to_string())
                .unwrap_or_else(|| oid_text(oid));
            format!("/{label}={v}")
        })
        .collect()
}

/// What check needs of a certificate.
#[derive(Debug)]
struct CertInfo {
    tbs: Vec<u8>,
    sig_alg: Vec<u64>,
    signature: Vec<u8>,
    issuer_der: Vec<u8>,
    subject_der: Vec<u8>,
    subject: Vec<(Vec<u64>, String)>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// The subjectPublicKey bits (an RSAPublicKey for RSA).
    public_key: Vec<u8>,
    dns: Vec<String>,
}

/// Parses an X.509 certificate (DER) far enough for the checks.
fn parse_cert(der: &[u8]) -> Result<CertInfo, yasna::ASN1Error> {
    use yasna::Tag;
    let (tbs, sig_alg, signature) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let tbs = r.next().read_der()?;
            let alg = r.next().read_sequence(|r| {
                let oid = r.next().read_oid()?;
                r.read_optional(|r| r.read_null())?;
                Ok(oid)
            })?;
            let (sig, _) = r.next().read_bitvec_bytes()?;
            Ok((tbs, alg.components().clone(), sig))
        })
    })?;
    let time = |r: yasna::BERReader| -> Result<OffsetDateTime, yasna::ASN1Error> {
        if r.lookahead_tag()? == yasna::tags::TAG_UTCTIME {
            Ok(*r.read_utctime()?.datetime())
        } else {
            Ok(*r.read_generalized_time()?.datetime())
        }
    };
    let mut info = yasna::parse_der(&tbs, |r| {
        r.read_sequence(|r| {
            r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_i64()))?;
            let _serial = r.next().read_der()?;
            let _alg = r.next().read_der()?;
            let issuer_der = r.next().read_der()?;
            let (not_before, not_after) = r.next().read_sequence(|r| {
                let a = time(r.next())?;
                let b = time(r.next())?;
                Ok((a, b))
            })?;
            let subject_der = r.next().read_der()?;
            let public_key = r.next().read_sequence(|r| {
                let _alg = r.next().read_der()?;
                Ok(r.next().read_bitvec_bytes()?.0)
            })?;
            let mut dns = Vec::new();
            r.read_optional(|r| {
                r.read_tagged(Tag::context(3), |r| {
                    r.read_sequence_of(|r| {
                        r.read_sequence(|r| {
                            let oid = r.next().read_oid()?;
                            r.read_optional(|r| r.read_bool())?;
                            let value = r.next().read_bytes()?;
                            if oid.components().as_slice() == [2, 5, 29, 17] {
                                dns = parse_san(&value)?;
                            }
                            Ok(())
                        })
                    })
                })
            })?;
            Ok(CertInfo {
                tbs: Vec::new(),
                sig_alg: Vec::new(),
                signature: Vec::new(),
                subject: Vec::new(),
                issuer_der,
                subject_der,
                not_before,
                not_after,
                public_key,
                dns,
            })
        })
    })?;
    info.subject = parse_name(&info.subject_der)?;
    info.tbs = tbs;
    info.sig_alg = sig_alg;
    info.signature = signature;
    Ok(info)
}

/// A Name's attributes in order (each RDN's members in turn), values as text.
fn parse_name(der: &[u8]) -> Result<Vec<(Vec<u64>, String)>, yasna::ASN1Error> {
    let mut out = Vec::new();
    yasna::parse_der(der, |r| {
        r.read_sequence_of(|r| {
            r.read_set_of(|r| {
                r.read_sequence(|r| {
                    let oid = r.next().read_oid()?;
                    let v = r.next().read_tagged_der()?;
                    out.push((
                        oid.components().clone(),
                        String::from_utf8_lossy(v.value()).into_owned(),
                    ));
                    Ok(())
                })
            })
        })
    })?;
    Ok(out)
}

/// The dNSName entries of a subjectAltName extension value.
fn parse_san(der: &[u8]) -> Result<Vec<String>, yasna::ASN1Error> {
    let mut out = Vec::new();
    yasna::parse_der(der, |r| {
        r.read_sequence_of(|r| {
            let v = r.read_tagged_der()?;
            if v.tag() == yasna::Tag::context(2) {
                out.push(String::from_utf8_lossy(v.value()).into_owned());
            }
            Ok(())
        })
    })?;
    Ok(out)
}

fn fix_rule(rule: &CertRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let found = problems(rule, host, OffsetDateTime::now_utc());
    if found.is_empty() {
        return Ok(());
    }
    let key_path = host.path(&rule.key).map_err(|e| e.to_string())?;
    if found.iter().all(|p| matches!(p, Problem::KeyMode(_))) {
        host.set_mode(&key_path, 0o600).map_err(|e| e.to_string())?;
        log.info(format!("{}: mode set to 0600", rule.key));
        return Ok(());
    }
    let alg = &rcgen::PKCS_RSA_SHA256;
    // An RSA key of the right size is kept: a new certificate does not rotate the key.
    let existing = host
        .read_to_string(&key_path)
        .ok()
        .flatten()
        .filter(|text| {
            read_key(text).is_ok_and(|(k, pkcs8)| pkcs8 && k.public_modulus_len() * 8 == rule.bits as usize)
        })
        .and_then(|text| rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&text, alg).ok());
    let reused = existing.is_some();
    let key = match existing {
        Some(k) => k,
        None => {
            let size = match rule.bits {
                2048 => rcgen::RsaKeySize::_2048,
                3072 => rcgen::RsaKeySize::_3072,
                _ => rcgen::RsaKeySize::_4096,
            };
            rcgen::KeyPair::generate_rsa_for(alg, size)
                .map_err(|e| format!("generating a {}-bit RSA key: {e}", rule.bits))?
        }
    };
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    for (name, value) in &rule.subject {
        let bad = |e: rcgen::Error| format!("{name}: {e}");
        match *name {
            "C" => dn.push(
                rcgen::DnType::CountryName,
                rcgen::DnValue::PrintableString(value.as_str().try_into().map_err(bad)?),
            ),
            "ST" => dn.push(rcgen::DnType::StateOrProvinceName, value.as_str()),
            "L" => dn.push(rcgen::DnType::LocalityName, value.as_str()),
            "O" => dn.push(rcgen::DnType::OrganizationName, value.as_str()),
            "OU" => dn.push(rcgen::DnType::OrganizationalUnitName, value.as_str()),
            "CN" => dn.push(rcgen::DnType::CommonName, value.as_str()),
            _ => dn.push(
                rcgen::DnType::CustomDnType(EMAIL_OID.to_vec()),
                rcgen::DnValue::Ia5String(value.as_str().try_into().map_err(bad)?),
            ),
        }
    }
    params.distinguished_name = dn;
    params.subject_alt_names = rule
        .dns
        .iter()
        .map(|n| {
            n.as_str()
                .try_into()
                .map(rcgen::SanType::DnsName)
                .map_err(|e| format!("alt_names: {n}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(rule.days.into());
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| "no random serial number")?;
    serial[0] &= 0x7f;
    params.serial_number = Some(serial.to_vec().into());
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("making the certificate: {e}"))?;
    if !reused {
        host.write_atomic(&key_path, key.serialize_pem().as_bytes(), Some(0o600), None)
            .map_err(|e| e.to_string())?;
        log.info(format!("{}: new {}-bit RSA key", rule.key, rule.bits));
    } else if found.iter().any(|p| matches!(p, Problem::KeyMode(_))) {
        host.set_mode(&key_path, 0o600).map_err(|e| e.to_string())?;
        log.info(format!("{}: mode set to 0600", rule.key));
    }
    let crt_path = host.path(&rule.crt).map_err(|e| e.to_string())?;
    host.write_atomic(&crt_path, cert.pem().as_bytes(), Some(0o644), None)
        .map_err(|e| e.to_string())?;
    log.info(format!(
        "{}: new certificate for {}, valid {} days{}",
        rule.crt,
        subject_text(&rule.subject),
        rule.days,
        if reused { " (key kept)" } else { "" }
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check};
    use serde_json::json;
    use std::fs;
    use std::path::Path;

    fn host(dir: &Path) -> Host {
        Host::new(dir).with_var_dir(dir.join("var/lib/tenet"))
    }

    fn example() -> serde_json::Value {
        json!({
            "CN": "svc1",
            "crt": "/srv/svc1/data/nginx/conf/ssl/server.crt",
            "key": "/srv/svc1/data/nginx/conf/ssl/server.key",
            "bits": 2048,
            "C": "FR",
            "ST": "Ile de France",
            "L": "Paris",
            "O": "OpenSVC",
            "OU": "Lab",
            "emailAddress": "support@opensvc.com",
            "alt_names": [{"dns": ""}, {"dns": "svc1.example.com"}]
        })
    }

    #[test]
    fn upstream_example_is_made_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let log = assert_class_contract::<SelfSignedCert>(&h, &[d.path()], example());
        assert!(log.iter().any(|l| l.contains("key missing")), "{log:?}");
        let crt = d.path().join("srv/svc1/data/nginx/conf/ssl/server.crt");
        let key = d.path().join("srv/svc1/data/nginx/conf/ssl/server.key");
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&crt).unwrap().mode() & 0o777, 0o644);
        let text = fs::read_to_string(&crt).unwrap();
        let info = parse_cert(pem::parse(&text).unwrap().contents()).unwrap();
        assert_eq!(
            show_name(&info.subject),
            "/C=FR/ST=Ile de France/L=Paris/O=OpenSVC/OU=Lab/CN=svc1/emailAddress=support@opensvc.com"
        );
        assert_eq!(info.dns, vec!["svc1.example.com"]);
        let days = (info.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!((363..=365).contains(&days), "{days}");
        // openssl reads both, with the rule's subject, names, size, and a matching key.
        let out = tenet_release::testing::tool("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&crt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        for want in [
            "Subject: C = FR, ST = Ile de France, L = Paris, O = OpenSVC, OU = Lab, CN = svc1, emailAddress = support@opensvc.com",
            "Issuer: C = FR, ST = Ile de France, L = Paris, O = OpenSVC, OU = Lab, CN = svc1, emailAddress = support@opensvc.com",
            "Public-Key: (2048 bit)",
            "DNS:svc1.example.com",
            "sha256WithRSAEncryption",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        let modulus = |args: &[&str], path: &Path| {
            let out = tenet_release::testing::tool("openssl").args(args).arg(path).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(
            modulus(&["x509", "-noout", "-modulus", "-in"], &crt),
            modulus(&["rsa", "-noout", "-modulus", "-in"], &key)
        );
        let out = tenet_release::testing::tool("openssl")
            .args(["verify", "-CAfile"])
            .arg(&crt)
            .arg(&crt)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"), "{out:?}");
    }

    /// A certificate made by openssl (OpenSVC's way) with the same subject is compliant.
    #[test]
    fn an_openssl_certificate_is_read() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let dir = d.path().join("srv/svc1/data/nginx/conf/ssl");
        fs::create_dir_all(&dir).unwrap();
        let out = tenet_release::testing::tool("openssl")
            .args(["req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "100", "-keyout"])
            .arg(dir.join("server.key"))
            .arg("-out")
            .arg(dir.join("server.crt"))
            .args([
                "-subj",
                "/C=FR/ST=Ile de France/L=Paris/O=OpenSVC/OU=Lab/CN=svc1/emailAddress=support@opensvc.com",
                "-addext",
                "subjectAltName=DNS:svc1.example.com",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (st, log) = check::<SelfSignedCert>(&h, example());
        assert_eq!(st, Status::Ok, "{log:?}");
    }

    #[test]
    fn a_subject_change_makes_a_new_certificate_with_the_same_key() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        assert_class_contract::<SelfSignedCert>(&h, &[d.path()], example());
        let key_path = d.path().join("srv/svc1/data/nginx/conf/ssl/server.key");
        let key_before = fs::read(&key_path).unwrap();
        let mut rule = example();
        rule["OU"] = json!("Prod");
        let log = assert_class_contract::<SelfSignedCert>(&h, &[d.path()], rule);
        assert!(log.iter().any(|l| l.contains("subject is /C=FR/ST=Ile de France/L=Paris/O=OpenSVC/OU=Lab/")), "{log:?}");
        assert_eq!(fs::read(&key_path).unwrap(), key_before, "the key is kept");
        // A key of another size is replaced.
        let mut rule = example();
        rule["bits"] = json!(3072);
        let log = assert_class_contract::<SelfSignedCert>(&h, &[d.path()], rule);
        assert!(log.iter().any(|l| l.contains("2048-bit key, expected 3072")), "{log:?}");
        assert_ne!(fs::read(&key_path).unwrap(), key_before);
    }

    #[test]
    fn expiry_and_key_mode_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let mut rule = example();
        rule["days"] = json!(10);
        rule["renew_days"] = json!(2);
        assert_class_contract::<SelfSignedCert>(&h, &[d.path()], rule.clone());
        let rules = SelfSignedCert::rules(&rule).unwrap();
        let later = OffsetDateTime::now_utc() + Duration::days(9);
        let p = problems(&rules[0], h.view(), later);
        assert!(p.iter().any(|p| p.text().contains("due for renewal")), "{p:?}");
        let p = problems(&rules[0], h.view(), later + Duration::days(2));
        assert!(p.iter().any(|p| p.text().contains("expired")), "{p:?}");
        // A readable key: only the mode is fixed.
        let key = d.path().join("srv/svc1/data/nginx/conf/ssl/server.key");
        let crt = d.path().join("srv/svc1/data/nginx/conf/ssl/server.crt");
        let crt_before = fs::read(&crt).unwrap();
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let log = assert_class_contract::<SelfSignedCert>(&h, &[d.path()], rule.clone());
        assert!(log.iter().any(|l| l.contains("expected 0600")), "{log:?}");
        assert_eq!(fs::read(&crt).unwrap(), crt_before);
        // Garbage in the certificate file.
        fs::write(&crt, "not pem").unwrap();
        let (st, log) = check::<SelfSignedCert>(&h, rule);
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("server.crt")), "{log:?}");
    }

    #[test]
    fn bad_rules_name_the_field() {
        let with = |k: &str, v: serde_json::Value| {
            let mut r = example();
            r[k] = v;
            r
        };
        for (v, needle) in [
            (with("bits", json!(1024)), "bits: 1024"),
            (with("C", json!("France")), "C:"),
            (with("crt", json!("relative.crt")), "crt:"),
            (with("key", json!("/srv/svc1/data/nginx/conf/ssl/server.crt")), "key: the same file"),
            (with("days", json!(0)), "days:"),
            (with("renew_days", json!(400)), "renew_days:"),
            (with("alt_names", json!([{"dns": "a b"}])), "alt_names[0].dns"),
            (with("alt_names", json!([{"ip": "1.2.3.4"}])), "unknown field `ip`"),
            (with("CN", json!("")), "CN: empty"),
            (with("colour", json!("red")), "unknown field `colour`"),
        ] {
            let err = SelfSignedCert::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }
}
