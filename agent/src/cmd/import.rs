//! `tenet import machineconfig FILE... -o DIR`: OpenShift MachineConfigs (or bare Ignition
//! v3 configs) turned into a Tenet policy folder usable as `--policy DIR`.
//!
//! Each input becomes one ruleset and one same-named moduleset holding one auto-module, named
//! after `metadata.name` (the file stem for a bare Ignition config). What is imported:
//!
//! | Ignition | Tenet rule |
//! |---|---|
//! | `storage.directories[]` | `file` with a trailing `/` (mode, owner) |
//! | `storage.files[]` | `file`: `fmt` when the decoded content is text ending with a newline (and holds no `%%`), else `ref` as a base64 `data:` URL; `mode` from the decimal Ignition mode (420 → `0644`, default `0644`); `user` / `group` |
//! | `storage.links[]` | `symlink` (hard links are refused) |
//! | `systemd.units[]` | `systemd_unit`: `contents`, `enabled`, `mask` → `masked`; each `dropins[]` entry becomes a `file` in `/etc/systemd/system/<unit>.d/` |
//! | `storage.filesystems[]` with a `path` | `mount` check: `format` → `fstype`, `mountOptions` → `options` |
//!
//! Provisioning that a compliance run cannot redo (disks, partitions, RAID, LUKS, file system
//! creation) and the parts Tenet has no class for (`passwd`, `kernelArguments`, extensions,
//! ...) are reported as warnings, never silently dropped. `overwrite: false` (Ignition's
//! default for files) is warned about too: Tenet enforces the content on every fix.
//!
//! Every produced rule is loaded by its class before anything is written, and the folder is
//! written to a temporary directory next to `DIR` and renamed into place: on any error
//! nothing is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tenet_rulesets::{
    Bundle, Meta, ModuleRef, Moduleset, Ruleset, RulesetType, VarValue, Variable,
};

use crate::cli::{Import, ImportMachineConfigArgs};
use crate::error::CliError;
use crate::output::warn;

/// Runs an `import` subcommand.
pub fn run(i: Import) -> Result<ExitCode, CliError> {
    match i {
        Import::Machineconfig(a) => machineconfig(&a),
    }
}

/// An import that failed: nothing was written.
fn nothing_written(e: anyhow::Error) -> CliError {
    CliError::usage(format!("import error: {e:#}\ntenet: nothing written"))
}

fn machineconfig(a: &ImportMachineConfigArgs) -> Result<ExitCode, CliError> {
    let mut inputs = Vec::new();
    for f in &a.files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| CliError::usage(format!("import error: {}: {e}", f.display())))?;
        inputs.push((f.clone(), text));
    }
    let converted = convert(&inputs).map_err(nothing_written)?;
    for w in &converted.warnings {
        warn(w);
    }
    write_policy_dir(&converted.bundle, &a.output, a.force).map_err(nothing_written)?;
    let vars: usize = converted
        .bundle
        .rulesets
        .values()
        .map(|r| r.variables.len())
        .sum();
    outln!(
        "wrote {}: {} ruleset(s), {} moduleset(s), {vars} rule variable(s); run it with --policy {}",
        a.output.display(),
        converted.bundle.rulesets.len(),
        converted.bundle.modulesets.len(),
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The result of a conversion: the bundle and what was not imported.
#[derive(Debug)]
pub struct Converted {
    /// The policy.
    pub bundle: Bundle,
    /// Parts of the input that have no Tenet equivalent, one line each.
    pub warnings: Vec<String>,
}

// ---- Input model (the Ignition v3 subset MachineConfigs use) --------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MachineConfig {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    spec: Option<Spec>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Spec {
    #[serde(default)]
    config: Option<Ignition>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Ignition {
    #[serde(default)]
    storage: Value,
    #[serde(default)]
    systemd: Value,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

/// The parts of `storage` this import reads (each list element is parsed on its own, so that
/// an error names it: `storage.files[2]`).
struct Storage {
    files: Vec<IgnFile>,
    directories: Vec<IgnDirectory>,
    links: Vec<IgnLink>,
    filesystems: Vec<IgnFilesystem>,
    disks: usize,
    raid: usize,
    luks: usize,
}

/// Parses `section.key` as a list of `T`, element by element.
fn items<T: serde::de::DeserializeOwned>(
    section: &Value,
    name: &str,
    key: &str,
) -> anyhow::Result<Vec<T>> {
    match section.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| T::deserialize(v).map_err(|e| anyhow!("{name}.{key}[{i}]: {e}")))
            .collect(),
        Some(other) => bail!("{name}.{key}: expected a list, found {other}"),
    }
}

/// Refuses keys of a section this import does not know (a typo must not pass silently).
fn known_keys(section: &Value, name: &str, keys: &[&str]) -> anyhow::Result<()> {
    match section {
        Value::Null => Ok(()),
        Value::Object(o) => {
            for k in o.keys() {
                if !keys.contains(&k.as_str()) {
                    bail!(
                        "{name}.{k}: unknown key (expected one of {})",
                        keys.join(", ")
                    );
                }
            }
            Ok(())
        }
        other => bail!("{name}: expected a mapping, found {other}"),
    }
}

impl Ignition {
    fn storage(&self) -> anyhow::Result<Storage> {
        let s = &self.storage;
        known_keys(
            s,
            "storage",
            &[
                "files",
                "directories",
                "links",
                "filesystems",
                "disks",
                "raid",
                "luks",
            ],
        )?;
        Ok(Storage {
            files: items(s, "storage", "files")?,
            directories: items(s, "storage", "directories")?,
            links: items(s, "storage", "links")?,
            filesystems: items(s, "storage", "filesystems")?,
            disks: items::<Value>(s, "storage", "disks")?.len(),
            raid: items::<Value>(s, "storage", "raid")?.len(),
            luks: items::<Value>(s, "storage", "luks")?.len(),
        })
    }

    fn units(&self) -> anyhow::Result<Vec<IgnUnit>> {
        known_keys(&self.systemd, "systemd", &["units"])?;
        items(&self.systemd, "systemd", "units")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnNode {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnFile {
    path: String,
    #[serde(default)]
    overwrite: Option<bool>,
    #[serde(default)]
    contents: Option<IgnContents>,
    #[serde(default)]
    append: Vec<Value>,
    #[serde(default)]
    mode: Option<i64>,
    #[serde(default)]
    user: Option<IgnNode>,
    #[serde(default)]
    group: Option<IgnNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IgnContents {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    compression: Option<String>,
    #[serde(default)]
    verification: Option<Value>,
    #[serde(default)]
    http_headers: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnDirectory {
    path: String,
    #[serde(default)]
    overwrite: Option<bool>,
    #[serde(default)]
    mode: Option<i64>,
    #[serde(default)]
    user: Option<IgnNode>,
    #[serde(default)]
    group: Option<IgnNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnLink {
    path: String,
    target: String,
    #[serde(default)]
    hard: Option<bool>,
    #[serde(default)]
    overwrite: Option<bool>,
    #[serde(default)]
    user: Option<IgnNode>,
    #[serde(default)]
    group: Option<IgnNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IgnFilesystem {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    mount_options: Vec<String>,
    #[serde(default)]
    wipe_filesystem: Option<bool>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    with_mount_unit: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnUnit {
    name: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    mask: Option<bool>,
    #[serde(default)]
    contents: Option<String>,
    #[serde(default)]
    dropins: Vec<IgnDropin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnDropin {
    name: String,
    #[serde(default)]
    contents: Option<String>,
}

// ---- Conversion -------------------------------------------------------------------------------

/// Converts MachineConfig / Ignition documents (path, text) into a bundle.
pub fn convert(inputs: &[(PathBuf, String)]) -> anyhow::Result<Converted> {
    let mut bundle = Bundle::default();
    let mut warnings = Vec::new();
    for (path, text) in inputs {
        let shown = path.display().to_string();
        let (name, ign) =
            parse_document(path, text, &mut warnings).with_context(|| shown.clone())?;
        if bundle.rulesets.contains_key(&name) {
            bail!("{shown}: a MachineConfig named {name:?} was already imported");
        }
        let mut rs = RulesetBuilder::new(&name);
        convert_ignition(&ign, &mut rs, &mut warnings, &format!("{shown} ({name})"))
            .with_context(|| format!("{shown} ({name})"))?;
        if rs.variables.is_empty() {
            warnings.push(format!("{shown} ({name}): nothing to import"));
        }
        bundle.rulesets.insert(
            name.clone(),
            Ruleset {
                name: name.clone(),
                kind: RulesetType::Explicit,
                filterset: None,
                public: false,
                children: Vec::new(),
                variables: rs.variables,
                meta: Meta::default(),
            },
        );
        bundle.modulesets.insert(
            name.clone(),
            Moduleset {
                name: name.clone(),
                modules: vec![ModuleRef {
                    name: name.clone(),
                    autofix: false,
                }],
                children: Vec::new(),
                rulesets: vec![name.clone()],
                meta: Meta::default(),
            },
        );
    }
    bundle
        .validate()
        .map_err(|e| anyhow!("the converted policy is invalid: {e}"))?;
    Ok(Converted { bundle, warnings })
}

/// Parses one document: a MachineConfig (its `spec.config`) or a bare Ignition config.
fn parse_document(
    path: &Path,
    text: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(String, Ignition)> {
    let shown = path.display().to_string();
    let doc: Value = serde_norway::from_str(text).map_err(|e| anyhow!("malformed YAML: {e}"))?;
    if !doc.is_object() {
        bail!("not a MachineConfig nor an Ignition config (the document is not a mapping)");
    }
    if doc.get("ignition").is_some() && doc.get("kind").is_none() {
        let ign: Ignition =
            serde_json::from_value(doc).map_err(|e| anyhow!("Ignition config: {e}"))?;
        warn_rest(&ign.rest, "", &shown, warnings);
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ignition".into());
        return Ok((stem, ign));
    }
    let mc: MachineConfig =
        serde_json::from_value(doc).map_err(|e| anyhow!("MachineConfig: {e}"))?;
    match mc.kind.as_deref() {
        Some("MachineConfig") => {}
        Some(other) => bail!("kind is {other:?}, expected MachineConfig"),
        None => bail!("no kind (expected kind: MachineConfig, or a bare Ignition config)"),
    }
    let _ = &mc.rest;
    let name = mc
        .metadata
        .and_then(|m| m.name)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| anyhow!("metadata.name: missing"))?;
    let spec = mc.spec.ok_or_else(|| anyhow!("spec: missing"))?;
    warn_rest(&spec.rest, "spec.", &shown, warnings);
    let ign = spec.config.unwrap_or_default();
    warn_rest(&ign.rest, "spec.config.", &shown, warnings);
    Ok((name, ign))
}

fn warn_rest(rest: &BTreeMap<String, Value>, prefix: &str, shown: &str, w: &mut Vec<String>) {
    for (k, v) in rest {
        let empty = v.is_null()
            || v.as_array().is_some_and(|a| a.is_empty())
            || v.as_object().is_some_and(|o| o.is_empty())
            || v.as_str().is_some_and(str::is_empty)
            || v == &Value::Bool(false);
        if k == "ignition" || empty {
            continue;
        }
        w.push(format!(
            "{shown}: {prefix}{k} not imported (Tenet has no rule for it)"
        ));
    }
}

/// Variables of one ruleset, with unique names.
struct RulesetBuilder {
    prefix: String,
    variables: Vec<Variable>,
}

impl RulesetBuilder {
    fn new(prefix: &str) -> RulesetBuilder {
        RulesetBuilder {
            prefix: prefix.to_string(),
            variables: Vec::new(),
        }
    }

    /// Adds a variable `<prefix>.<kind>.<label>`, after its class accepted the value.
    fn add(&mut self, kind: &str, label: &str, class: &str, value: Value) -> anyhow::Result<()> {
        let entry = tenet_modules::classes::find(class)
            .ok_or_else(|| anyhow!("internal: no class {class}"))?;
        (entry.load)(&value, &tenet_modules::class::RuleContext::default())
            .map_err(|e| anyhow!("{kind} {label}: the {class} rule is invalid: {e}"))?;
        let clean: String = label
            .trim_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{}.{kind}.{clean}", self.prefix);
        let mut name = base.clone();
        let mut n = 2;
        while self.variables.iter().any(|v| v.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.variables.push(Variable {
            name,
            class: class.to_string(),
            value: VarValue::Json(value),
            id: None,
            author: None,
            updated: None,
        });
        Ok(())
    }
}

/// An Ignition decimal mode as the octal string Tenet rules use.
fn mode(field: &str, m: Option<i64>, default: u32) -> anyhow::Result<String> {
    let m = match m {
        None => default,
        Some(m) if (0..=0o7777).contains(&m) => m as u32,
        Some(m) => bail!("{field}: {m} is not a file mode (decimal, 0 to 4095)"),
    };
    Ok(format!("0{m:03o}"))
}

fn owner(field: &str, node: &Option<IgnNode>) -> anyhow::Result<Option<Value>> {
    match node {
        None => Ok(None),
        Some(IgnNode { id: Some(id), .. }) if *id >= 0 => Ok(Some(json!(id))),
        Some(IgnNode { id: Some(id), .. }) => bail!("{field}.id: {id} is negative"),
        Some(IgnNode { name: Some(n), .. }) if !n.is_empty() => Ok(Some(json!(n))),
        Some(_) => Ok(None),
    }
}

/// The `fmt` / `ref` part of a file rule for these exact bytes.
fn content_fields(bytes: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.ends_with('\n') && !text.contains('\0') && !text.contains("%%") => {
            ("fmt", text.to_string())
        }
        _ => (
            "ref",
            format!(
                "data:;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        ),
    }
}

/// Decodes an Ignition contents source into bytes, or passes an https URL through.
enum Source {
    Bytes(Vec<u8>),
    Https(String),
}

fn source(field: &str, c: &Option<IgnContents>) -> anyhow::Result<Source> {
    let Some(c) = c else {
        return Ok(Source::Bytes(Vec::new()));
    };
    if c.compression.as_deref().is_some_and(|z| !z.is_empty()) {
        bail!(
            "{field}.compression: {:?} is not supported (store the content uncompressed)",
            c.compression.as_deref().unwrap_or_default()
        );
    }
    if c.http_headers.as_ref().is_some_and(|h| !h.is_null()) {
        bail!("{field}.httpHeaders: not supported");
    }
    let Some(src) = c.source.as_deref() else {
        return Ok(Source::Bytes(Vec::new()));
    };
    let scheme = src
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "data" => tenet_modules::classes::file::decode_data_url(&src["data:".len()..])
            .map(Source::Bytes)
            .map_err(|e| anyhow!("{field}.source: bad data: URL: {e}")),
        "https" => Ok(Source::Https(src.to_string())),
        _ => bail!(
            "{field}.source: {:?} is not supported: only data: URLs (imported inline) and \
             https:// URLs (fetched by the file class) are",
            truncate(src)
        ),
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 60 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(60).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s.to_string()
    }
}

fn convert_ignition(
    ign: &Ignition,
    rs: &mut RulesetBuilder,
    warnings: &mut Vec<String>,
    shown: &str,
) -> anyhow::Result<()> {
    let st = &ign.storage()?;
    let units = ign.units()?;
    for (what, n) in [("disks", st.disks), ("raid", st.raid), ("luks", st.luks)] {
        if n > 0 {
            warnings.push(format!(
                "{shown}: storage.{what} ({n}) not imported: provisioning is done once at \
                 install time; the file systems' mounts are checked instead"
            ));
        }
    }
    for (i, d) in st.directories.iter().enumerate() {
        let f = format!("storage.directories[{i}]");
        let mut v = json!({"path": format!("{}/", d.path.trim_end_matches('/')), "mode": mode(&format!("{f}.mode"), d.mode, 0o755)?});
        if let Some(u) = owner(&format!("{f}.user"), &d.user)? {
            v["uid"] = u;
        }
        if let Some(g) = owner(&format!("{f}.group"), &d.group)? {
            v["gid"] = g;
        }
        let _ = d.overwrite;
        rs.add("dir", &d.path, "file", v)
            .with_context(|| f.clone())?;
    }
    for (i, file) in st.files.iter().enumerate() {
        let f = format!("storage.files[{i}] ({})", file.path);
        if !file.append.is_empty() {
            bail!("{f}.append: appending to files is not supported");
        }
        if file.overwrite != Some(true) {
            warnings.push(format!(
                "{shown}: {f}: overwrite is false: Tenet enforces the content on every fix"
            ));
        }
        let mut v =
            json!({"path": file.path, "mode": mode(&format!("{f}.mode"), file.mode, 0o644)?});
        match source(&format!("{f}.contents"), &file.contents)? {
            Source::Bytes(b) => {
                let (k, c) = content_fields(&b);
                v[k] = json!(c);
            }
            Source::Https(url) => {
                if file
                    .contents
                    .as_ref()
                    .and_then(|c| c.verification.as_ref())
                    .is_some()
                {
                    warnings.push(format!(
                        "{shown}: {f}.contents.verification not imported: the file class does not verify hashes"
                    ));
                }
                v["ref"] = json!(url);
            }
        }
        if let Some(u) = owner(&format!("{f}.user"), &file.user)? {
            v["uid"] = u;
        }
        if let Some(g) = owner(&format!("{f}.group"), &file.group)? {
            v["gid"] = g;
        }
        rs.add("file", &file.path, "file", v)
            .with_context(|| f.clone())?;
    }
    for (i, l) in st.links.iter().enumerate() {
        let f = format!("storage.links[{i}] ({})", l.path);
        if l.hard == Some(true) {
            bail!("{f}.hard: hard links are not supported");
        }
        let _ = (&l.overwrite, &l.user, &l.group);
        rs.add(
            "link",
            &l.path,
            "symlink",
            json!({"symlink": l.path, "target": l.target}),
        )
        .with_context(|| f.clone())?;
    }
    for (i, u) in units.iter().enumerate() {
        let f = format!("systemd.units[{i}] ({})", u.name);
        for (j, d) in u.dropins.iter().enumerate() {
            let path = format!("/etc/systemd/system/{}.d/{}", u.name, d.name);
            let (k, c) = content_fields(d.contents.as_deref().unwrap_or_default().as_bytes());
            let mut v = json!({"path": path, "mode": "0644"});
            v[k] = json!(c);
            rs.add("dropin", &format!("{}.d/{}", u.name, d.name), "file", v)
                .with_context(|| format!("{f}.dropins[{j}]"))?;
        }
        let mut v = json!({"name": u.name});
        if let Some(c) = &u.contents {
            v["contents"] = json!(c);
        }
        if let Some(e) = u.enabled {
            v["enabled"] = json!(e);
        }
        if u.mask == Some(true) {
            v["masked"] = json!(true);
        }
        if v.as_object().is_some_and(|o| o.len() == 1) {
            if u.dropins.is_empty() {
                warnings.push(format!(
                    "{shown}: {f}: nothing to manage (no contents, enabled or mask)"
                ));
            }
            continue;
        }
        rs.add("unit", &u.name, "systemd_unit", v)
            .with_context(|| f.clone())?;
    }
    for (i, fs) in st.filesystems.iter().enumerate() {
        let f = format!("storage.filesystems[{i}]");
        let _ = (
            &fs.device,
            &fs.wipe_filesystem,
            &fs.label,
            &fs.uuid,
            &fs.options,
            &fs.with_mount_unit,
        );
        let Some(path) = fs.path.as_deref().filter(|p| !p.is_empty()) else {
            warnings.push(format!(
                "{shown}: {f} ({}) has no path: not imported (nothing to check)",
                fs.device.as_deref().unwrap_or("no device")
            ));
            continue;
        };
        let mut v = json!({"path": path, "options": fs.mount_options});
        if let Some(t) = fs
            .format
            .as_deref()
            .filter(|t| !t.is_empty() && *t != "none")
        {
            v["fstype"] = json!(t);
        }
        rs.add("mount", path, "mount", v)
            .with_context(|| f.clone())?;
    }
    Ok(())
}

// ---- Output -------------------------------------------------------------------------------

/// Writes `bundle` as a TOML policy folder at `out`: into a temporary sibling directory first,
/// then renamed into place, so a failure leaves nothing behind. An existing non-empty `out` is
/// refused unless `force`, which replaces it.
pub fn write_policy_dir(bundle: &Bundle, out: &Path, force: bool) -> anyhow::Result<()> {
    let out = if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir()?.join(out)
    };
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a directory name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = out.parent().unwrap_or(Path::new("/")).to_path_buf();
    let exists = match std::fs::symlink_metadata(&out) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => bail!("{}: exists and is not a directory", out.display()),
        Err(_) => false,
    };
    let non_empty = exists
        && std::fs::read_dir(&out)
            .with_context(|| out.display().to_string())?
            .next()
            .is_some();
    if non_empty && !force {
        bail!(
            "{}: exists and is not empty (use --force to replace it)",
            out.display()
        );
    }
    std::fs::create_dir_all(&parent).with_context(|| parent.display().to_string())?;
    let tmp = parent.join(format!(".{name}.tenet-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> anyhow::Result<()> {
        std::fs::create_dir(&tmp).with_context(|| tmp.display().to_string())?;
        tenet_rulesets::toml_format::write_dir(bundle, &tmp)?;
        // Proof that the folder reads back as the same policy.
        let back = tenet_rulesets::toml_format::load_dir(&tmp)?;
        if back != *bundle {
            bail!("internal: the written policy does not read back identical");
        }
        if non_empty {
            let old = parent.join(format!(".{name}.tenet-old-{}", std::process::id()));
            std::fs::rename(&out, &old).with_context(|| out.display().to_string())?;
            if let Err(e) = std::fs::rename(&tmp, &out) {
                let _ = std::fs::rename(&old, &out);
                return Err(e).with_context(|| out.display().to_string());
            }
            std::fs::remove_dir_all(&old).with_context(|| old.display().to_string())?;
        } else {
            // rename(2) replaces an empty directory.
            std::fs::rename(&tmp, &out).with_context(|| out.display().to_string())?;
        }
        std::fs::File::open(&parent).and_then(|d| d.sync_all()).ok();
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(yaml: &str) -> anyhow::Result<Converted> {
        convert(&[(PathBuf::from("t.yaml"), yaml.to_string())])
    }

    const MC: &str = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: 10-test\nspec:\n  config:\n    ignition:\n      version: 3.2.0\n";

    #[test]
    fn modes_sources_and_names() {
        let c = conv(&format!(
            "{MC}    storage:\n      files:\n        - path: /a.sh\n          mode: 365\n          overwrite: true\n          contents:\n            source: data:,hello%20world%0A\n        - path: /b.bin\n          mode: 420\n          overwrite: true\n          user: {{name: core}}\n          contents:\n            source: data:;base64,AAEC\n        - path: /empty\n          overwrite: true\n"
        ))
        .unwrap();
        let rs = &c.bundle.rulesets["10-test"];
        let v: Vec<Value> = rs.variables.iter().map(|v| v.value.as_json()).collect();
        assert_eq!(rs.variables[0].name, "10-test.file.a.sh");
        assert_eq!(
            v[0],
            json!({"path": "/a.sh", "mode": "0555", "fmt": "hello world\n"})
        );
        assert_eq!(
            v[1],
            json!({"path": "/b.bin", "mode": "0644", "ref": "data:;base64,AAEC", "uid": "core"})
        );
        assert_eq!(
            v[2],
            json!({"path": "/empty", "mode": "0644", "ref": "data:;base64,"})
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.bundle.modulesets["10-test"].modules[0].name, "10-test");
    }

    #[test]
    fn errors_name_the_field() {
        for (extra, needle) in [
            (
                "    storage:\n      files:\n        - path: /a\n          contents:\n            source: data:;base64,!!!\n",
                "storage.files[0] (/a).contents.source: bad data: URL",
            ),
            (
                "    storage:\n      files:\n        - path: /a\n          contents:\n            source: data-no-comma\n",
                "is not supported",
            ),
            (
                "    storage:\n      files:\n        - path: /a\n          contents:\n            source: \"data:text/plain\"\n",
                "no ','",
            ),
            (
                "    storage:\n      files:\n        - path: /a\n          mode: 99999\n",
                "storage.files[0] (/a).mode: 99999",
            ),
            (
                "    storage:\n      files:\n        - path: /a\n          contents:\n            source: http://x/y\n",
                "only data: URLs",
            ),
            (
                "    storage:\n      files:\n        - path: /a\n          contents:\n            compression: gzip\n            source: data:,x\n",
                "compression",
            ),
            (
                "    storage:\n      files:\n        - path: /a\n          bogus: 1\n",
                "storage.files[0]: unknown field `bogus`",
            ),
            (
                "    storage:\n      file:\n        - path: /a\n",
                "storage.file: unknown key",
            ),
            (
                "    storage:\n      links:\n        - path: /a\n          target: /b\n          hard: true\n",
                "hard links",
            ),
            (
                "    systemd:\n      units:\n        - name: nosuffix\n          enabled: true\n",
                "the systemd_unit rule is invalid: name",
            ),
        ] {
            let r = conv(&format!("{MC}{extra}"));
            let e = format!("{:#}", r.expect_err(extra));
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(e.contains("t.yaml (10-test)"), "{e}");
        }
        let e = format!("{:#}", conv("a: [1, 2\n").unwrap_err());
        assert!(e.contains("t.yaml: malformed YAML"), "{e}");
        let e = format!("{:#}", conv("kind: ConfigMap\n").unwrap_err());
        assert!(e.contains("kind is \"ConfigMap\""), "{e}");
        let e = format!("{:#}", conv("kind: MachineConfig\nspec: {}\n").unwrap_err());
        assert!(e.contains("metadata.name"), "{e}");
    }

    #[test]
    fn bare_ignition_and_warnings() {
        let c = convert(&[(
            PathBuf::from("/x/node.ign"),
            "{\"ignition\": {\"version\": \"3.3.0\"}, \"passwd\": {\"users\": [{\"name\": \"core\"}]}, \"storage\": {\"disks\": [{\"device\": \"/dev/sdb\"}], \"filesystems\": [{\"device\": \"/dev/sdb1\", \"format\": \"xfs\"}], \"directories\": [{\"path\": \"/srv/d\", \"mode\": 488}]}, \"systemd\": {\"units\": [{\"name\": \"a.service\", \"dropins\": [{\"name\": \"10-x.conf\", \"contents\": \"[Service]\\nX=1\"}]}]}}".to_string(),
        )])
        .unwrap();
        let rs = &c.bundle.rulesets["node"];
        let v: Vec<Value> = rs.variables.iter().map(|v| v.value.as_json()).collect();
        assert_eq!(v[0], json!({"path": "/srv/d/", "mode": "0750"}));
        assert_eq!(v[1]["path"], "/etc/systemd/system/a.service.d/10-x.conf");
        assert_eq!(v[1]["ref"], "data:;base64,W1NlcnZpY2VdClg9MQ==");
        let w = c.warnings.join("\n");
        assert!(w.contains("passwd not imported"), "{w}");
        assert!(w.contains("storage.disks (1) not imported"), "{w}");
        assert!(
            w.contains("storage.filesystems[0] (/dev/sdb1) has no path"),
            "{w}"
        );
    }
}
