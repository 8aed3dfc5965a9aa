//! What several classes share: rule field parsing (`mode`, `uid` / `gid`), the kind of a
//! filesystem object for messages, mode and ownership checks and fixes (`Attrs`), the content
//! diff shown by check, and whether systemd runs the managed system.
//!
//! Classes do not import each other (a source scan, `classes_import_no_other_class`, keeps it
//! so): what two classes need lives here, so that changing one class never changes another.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use base64::Engine as _;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Value;
use similar::TextDiff;

use crate::host::{Host, HostView, RootedPath};
use crate::status::Log;

/// Permission bits (0 to 0o7777), written in a rule as octal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let value = Value::deserialize(deserializer)?;
        parse_mode(&value).map(Mode).map_err(de::Error::custom)
    }
}

/// A user or group, as a rule names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A numeric id.
    Id(u32),
    /// A name, resolved through the managed system's `etc/passwd` or `etc/group`.
    Name(String),
}

/// Reads a rule's `mode`: octal digits as a JSON number (`644`: its decimal digits are read as
/// octal) or a string (`"644"`, `"0644"`, `"0o644"`). The error names the field and the value.
pub(crate) fn parse_mode(value: &Value) -> Result<u32, String> {
    let invalid = || {
        format!(
            "mode: invalid value {value}: expected octal digits, like 644, \"0644\" or \"0o644\""
        )
    };
    let digits = match value {
        Value::Number(n) => n.as_u64().ok_or_else(invalid)?.to_string(),
        Value::String(s) => {
            let s = s.trim();
            s.strip_prefix("0o")
                .or_else(|| s.strip_prefix("0O"))
                .unwrap_or(s)
                .to_owned()
        }
        _ => return Err(invalid()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(invalid());
    }
    match u32::from_str_radix(&digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "mode: invalid value {value}: permission bits go up to 7777"
        )),
    }
}

/// Reads a rule's `uid` or `gid` (`field`): absent or null, a non-negative number, or a name
/// (a string of digits is an id).
pub(crate) fn parse_owner(field: &str, value: &Value) -> Result<Option<Owner>, String> {
    let invalid = || format!("{field}: invalid value {value}: expected a numeric id or a name");
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(|id| Some(Owner::Id(id)))
            .ok_or_else(invalid),
        Value::String(s) if s.trim().is_empty() => Err(invalid()),
        Value::String(s) => Ok(Some(match s.trim().parse::<u32>() {
            Ok(id) => Owner::Id(id),
            Err(_) => Owner::Name(s.trim().to_owned()),
        })),
        _ => Err(invalid()),
    }
}

/// serde `deserialize_with` for a `uid` field.
pub(crate) fn de_uid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Owner>, D::Error> {
    parse_owner("uid", &Value::deserialize(d)?).map_err(de::Error::custom)
}

/// serde `deserialize_with` for a `gid` field.
pub(crate) fn de_gid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Owner>, D::Error> {
    parse_owner("gid", &Value::deserialize(d)?).map_err(de::Error::custom)
}

/// The real (root-prefixed) path of a rule's `path`, and whether it names a directory
/// (a trailing `/`).
pub(crate) fn target(host: &HostView, path: &str) -> Result<(RootedPath, bool), String> {
    let real = host.path(path).map_err(|e| e.to_string())?;
    Ok((real, path.ends_with('/')))
}

/// What kind of filesystem object `meta` describes, for messages.
pub(crate) fn kind(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_symlink() {
        "a symlink"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Why an existing path is not what a rule wants (a directory when `dir`, else a regular
/// file), or `None` when it is. Symlinks are never followed.
pub(crate) fn wrong_kind(meta: &Metadata, dir: bool) -> Option<String> {
    let fits = if dir { meta.is_dir() } else { meta.is_file() };
    let wanted = if dir { "a directory" } else { "a regular file" };
    (!fits).then(|| format!("is {}, expected {wanted}", kind(meta)))
}

/// The mode and ownership a rule asks for, names resolved to ids; `None` leaves an attribute
/// alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Attrs {
    /// Permission bits.
    pub(crate) mode: Option<u32>,
    /// Owner id.
    pub(crate) uid: Option<u32>,
    /// Group id.
    pub(crate) gid: Option<u32>,
}

impl Attrs {
    /// Resolves user and group names through the managed system's `etc/passwd` / `etc/group`.
    pub(crate) fn resolve(
        host: &HostView,
        mode: Option<Mode>,
        uid: Option<&Owner>,
        gid: Option<&Owner>,
    ) -> Result<Attrs, String> {
        let uid = match uid {
            None => None,
            Some(Owner::Id(id)) => Some(*id),
            Some(Owner::Name(name)) => Some(host.uid_of(name).map_err(|e| format!("uid: {e}"))?),
        };
        let gid = match gid {
            None => None,
            Some(Owner::Id(id)) => Some(*id),
            Some(Owner::Name(name)) => Some(host.gid_of(name).map_err(|e| format!("gid: {e}"))?),
        };
        Ok(Attrs {
            mode: mode.map(|m| m.0),
            uid,
            gid,
        })
    }

    /// Logs each attribute of `meta` that differs from the wanted one; true when none does.
    pub(crate) fn check(&self, shown: &str, meta: &Metadata, log: &mut Log) -> bool {
        let mut ok = true;
        let have_mode = meta.mode() & 0o7777;
        if let Some(mode) = self.mode.filter(|m| *m != have_mode) {
            log.err(format!(
                "{shown}: mode is {have_mode:04o}, expected {mode:04o}"
            ));
            ok = false;
        }
        if let Some(uid) = self.uid.filter(|u| *u != meta.uid()) {
            log.err(format!(
                "{shown}: owner uid is {}, expected {uid}",
                meta.uid()
            ));
            ok = false;
        }
        if let Some(gid) = self.gid.filter(|g| *g != meta.gid()) {
            log.err(format!(
                "{shown}: group gid is {}, expected {gid}",
                meta.gid()
            ));
            ok = false;
        }
        ok
    }

    /// Sets the attributes of `path` that differ from `meta`: owner and group first (a chown
    /// may clear setuid/setgid bits), then the mode.
    pub(crate) fn fix(
        &self,
        host: &Host,
        path: &RootedPath,
        shown: &str,
        meta: &Metadata,
        log: &mut Log,
    ) -> Result<(), String> {
        let uid = self.uid.filter(|u| *u != meta.uid());
        let gid = self.gid.filter(|g| *g != meta.gid());
        let mut have_mode = meta.mode() & 0o7777;
        if uid.is_some() || gid.is_some() {
            host.set_owner(path, uid, gid).map_err(|e| e.to_string())?;
            log.info(format!(
                "{shown}: owner set to {}:{}",
                self.uid.unwrap_or(meta.uid()),
                self.gid.unwrap_or(meta.gid())
            ));
            if let Some(m) = host.metadata(path).map_err(|e| e.to_string())? {
                have_mode = m.mode() & 0o7777;
            }
        }
        if let Some(mode) = self.mode.filter(|m| *m != have_mode) {
            host.set_mode(path, mode).map_err(|e| e.to_string())?;
            log.info(format!(
                "{shown}: mode set to {mode:04o} (was {have_mode:04o})"
            ));
        }
        Ok(())
    }
}

/// `"; <why>"` when `path` is missing because of a link leading nowhere inside the root
/// prefix, else nothing.
pub(crate) fn through_link(host: &HostView, path: &RootedPath) -> String {
    host.dangling_link(path)
        .map(|why| format!(": {why}"))
        .unwrap_or_default()
}

/// How many lines of diff check prints at most.
pub(crate) const MAX_DIFF_LINES: usize = 200;

/// Logs how the content on disk (`have`) differs from the wanted one: a unified diff for
/// text, the sizes for binary content.
pub(crate) fn report_difference(shown: &str, have: &[u8], want: &[u8], log: &mut Log) {
    let (Some(old), Some(new)) = (as_text(have), as_text(want)) else {
        log.err(format!(
            "{shown}: binary content differs ({} bytes vs {} bytes expected)",
            have.len(),
            want.len()
        ));
        return;
    };
    log.err(format!("{shown}: content differs"));
    let diff = TextDiff::from_lines(old, new);
    let text = diff.unified_diff().header(shown, shown).to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > MAX_DIFF_LINES {
        log.err(lines[..MAX_DIFF_LINES].join("\n"));
        log.err(format!(
            "... diff truncated ({} more lines)",
            lines.len() - MAX_DIFF_LINES
        ));
    } else {
        log.err(text);
    }
}

/// `bytes` as text, unless they hold a NUL or are not UTF-8.
fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Whether systemd runs the managed system: the root prefix is `/` and `/run/systemd/system`
/// exists (what `sd_booted()` tests). `Err` says why not.
pub fn systemd_running(host: &HostView) -> Result<(), String> {
    host.systemd_booted()
}

/// How long an `https` download may take, connection included.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Fetches the body a rule's `ref` designates: an `https://` URL (certificate verified, 30 s
/// timeout, no redirect to plain http) or a `data:` URL; anything else is refused.
pub(crate) fn fetch_ref(reference: &str) -> Result<Vec<u8>, String> {
    let scheme = reference
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "https" => download(reference),
        "data" => decode_data_url(&reference["data:".len()..])
            .map_err(|e| format!("ref: invalid data: URL: {e}")),
        "http" => Err(format!(
            "ref {reference}: plain http is refused (the content could be altered in transit); \
             use an https:// or data: URL"
        )),
        _ => Err(format!(
            "ref {reference:?}: unsupported; use an https:// or data: URL"
        )),
    }
}

/// Downloads an `https` URL, verifying the server's certificate.
fn download(url: &str) -> Result<Vec<u8>, String> {
    let failed = |e: reqwest::Error| format!("ref {url}: download failed: {}", error_chain(&e));
    let client = reqwest::blocking::Client::builder()
        .timeout(DOWNLOAD_TIMEOUT)
        .https_only(true)
        .build()
        .map_err(failed)?;
    let response = client
        .get(url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(failed)?;
    Ok(response.bytes().map_err(failed)?.to_vec())
}

/// An error and its sources, `: `-separated (reqwest hides the cause in the source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Decodes what follows `data:` in an RFC 2397 URL: `[<mediatype>][;base64],<data>`. The
/// media type is ignored; the data is percent-decoded, then base64-decoded when `;base64` is
/// given (whitespace ignored, padding optional).
pub fn decode_data_url(rest: &str) -> Result<Vec<u8>, String> {
    let (header, data) = rest
        .split_once(',')
        .ok_or("no ',' between the media type and the data")?;
    let data = percent_decode(data.as_bytes());
    if !header.to_ascii_lowercase().ends_with(";base64") {
        return Ok(data);
    }
    let compact: Vec<u8> = data
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(compact)
        .map_err(|e| format!("bad base64: {e}"))
}

/// Replaces `%XX` escapes by their byte; a `%` not followed by two hex digits is kept as is
/// (as browsers do).
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let escaped = match input.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mode_spellings() {
        for (v, m) in [
            (json!(644), 0o644),
            (json!("644"), 0o644),
            (json!("0644"), 0o644),
            (json!("0o644"), 0o644),
            (json!(4755), 0o4755),
            (json!(0), 0),
        ] {
            assert_eq!(parse_mode(&v), Ok(m), "{v}");
        }
    }
}
