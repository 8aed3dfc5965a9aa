//! The node configuration file (default `<root>/etc/tenet/node.toml`, `--config PATH`): where
//! the collector is, who this node is, where its secret and state live. A missing file means
//! masterless mode. Keys this agent does not know (OpenSVC node.conf keys managed by the
//! `nodeconf` class, site `[facts]`) are kept when the agent rewrites the file.
//!
//! ```toml
//! collector = "https://collector.example:8443"
//! node_id = "5b0c…"                        # written by `tenet register`
//! secret_file = "/etc/tenet/node.secret"   # mode 0600, written by `tenet register`
//! ca_file = "/etc/tenet/collector-ca.pem"  # trust this CA too, or pin this self-signed cert
//! insecure_http = false                    # accept a plain http:// collector (register --insecure-http)
//! var_dir = "/var/lib/tenet"               # policy cache, results spool, backups
//! listener_port = 1214                     # reported to the collector
//! services = ["spdc"]                      # services this node hosts
//!
//! [compliance]
//! schedule = "~02:00-06:00"
//! [pushasset]
//! schedule = "~00:00-06:00"
//! [facts]                                   # site facts: team_responsible, env, ...
//! team_responsible = "dba"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The parsed configuration, plus the whole table for lossless rewrites.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Where it was read from (and is written back to).
    pub path: PathBuf,
    /// Everything in the file.
    pub table: toml::Table,
}

impl NodeConfig {
    /// Reads the file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let table = match std::fs::read_to_string(path) {
            Ok(text) => text
                .parse::<toml::Table>()
                .with_context(|| format!("{}: invalid TOML", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let cfg = NodeConfig {
            path: path.to_path_buf(),
            table,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for key in ["collector", "node_id", "secret_file", "ca_file", "var_dir"] {
            if let Some(v) = self.table.get(key)
                && !v.is_str()
            {
                bail!("{}: {key}: expected a string", self.path.display());
            }
        }
        if let Some(v) = self.table.get("insecure_http")
            && !v.is_bool()
        {
            bail!(
                "{}: insecure_http: expected true or false",
                self.path.display()
            );
        }
        if let Some(v) = self.table.get("listener_port") {
            match v.as_integer() {
                Some(p) if (1..=65535).contains(&p) => {}
                _ => bail!(
                    "{}: listener_port: expected a port number (1-65535)",
                    self.path.display()
                ),
            }
        }
        if let Some(v) = self.table.get("services")
            && !v
                .as_array()
                .is_some_and(|a| a.iter().all(toml::Value::is_str))
        {
            bail!(
                "{}: services: expected a list of service names",
                self.path.display()
            );
        }
        // Site facts become `nodes.<key>` for filtersets and `OSVC_COMP_NODES_<KEY>` names.
        if let Some(toml::Value::Table(facts)) = self.table.get("facts") {
            for key in facts.keys() {
                tenet_rulesets::names::check(tenet_rulesets::names::NameKind::FactField, key)
                    .with_context(|| format!("{}: [facts]", self.path.display()))?;
            }
        }
        for s in self.services() {
            tenet_rulesets::names::check(tenet_rulesets::names::NameKind::Service, &s)
                .with_context(|| format!("{}: services", self.path.display()))?;
        }
        if let Some(url) = self.collector()
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            bail!(
                "{}: collector: {url:?} is not an http(s) URL",
                self.path.display()
            );
        }
        Ok(())
    }

    fn str_key(&self, key: &str) -> Option<&str> {
        self.table.get(key).and_then(toml::Value::as_str)
    }

    /// The collector's base URL, without a trailing slash.
    pub fn collector(&self) -> Option<&str> {
        self.str_key("collector").map(|s| s.trim_end_matches('/'))
    }

    /// This node's id, once registered.
    pub fn node_id(&self) -> Option<&str> {
        self.str_key("node_id")
    }

    /// The secret file: configured, or `node.secret` beside the configuration.
    pub fn secret_file(&self) -> PathBuf {
        match self.str_key("secret_file") {
            Some(p) => PathBuf::from(p),
            None => self
                .path
                .parent()
                .unwrap_or(Path::new("."))
                .join("node.secret"),
        }
    }

    /// Whether a plain `http://` collector URL is accepted (`insecure_http = true`, written by
    /// `tenet register --insecure-http`).
    pub fn insecure_http(&self) -> bool {
        self.table
            .get("insecure_http")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    }

    /// An extra CA certificate (PEM) to trust for the collector.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.str_key("ca_file").map(PathBuf::from)
    }

    /// The agent's state directory, when configured.
    pub fn var_dir(&self) -> Option<PathBuf> {
        self.str_key("var_dir").map(PathBuf::from)
    }

    /// The notification listener port (default
    /// [`DEFAULT_LISTENER_PORT`](tenet_rulesets::api::DEFAULT_LISTENER_PORT), OpenSVC's).
    pub fn listener_port(&self) -> u16 {
        self.table
            .get("listener_port")
            .and_then(toml::Value::as_integer)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(tenet_rulesets::api::DEFAULT_LISTENER_PORT)
    }

    /// Services hosted by this node.
    pub fn services(&self) -> Vec<String> {
        self.table
            .get("services")
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets a string key.
    pub fn set(&mut self, key: &str, value: &str) {
        self.table
            .insert(key.to_string(), toml::Value::String(value.to_string()));
    }

    /// Writes the file atomically (temp file, fsync, rename), keeping its mode if it exists.
    pub fn save(&self) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(&self.table).context("serializing the configuration")?;
        write_private(&self.path, text.as_bytes(), 0o644)
    }
}

/// Writes `content` to `path` atomically with `mode` (set on the temporary file before any
/// byte is written, so a secret is never readable by others, even briefly).
pub fn write_private(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tenet_fsutil::atomic_write(path, content, mode, true)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_the_configuration_follow_their_grammar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        for (text, needle) in [
            ("services = [\"a/b\"]\n", "services"),
            ("[facts]\n\"a=b\" = \"x\"\n", "[facts]"),
            ("insecure_http = \"yes\"\n", "insecure_http"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = format!("{:#}", NodeConfig::load(&path).unwrap_err());
            assert!(e.contains(needle), "{text}: {e}");
        }
        std::fs::write(
            &path,
            "services = [\"spdc\"]\n[facts]\nteam_responsible = \"x\"\n",
        )
        .unwrap();
        NodeConfig::load(&path).unwrap();
    }

    #[test]
    fn missing_file_is_masterless_and_unknown_keys_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let cfg = NodeConfig::load(&path).unwrap();
        assert_eq!(cfg.collector(), None);
        std::fs::write(
            &path,
            "collector = \"http://c:1/\"\nlistener_port = 1300\n[facts]\nteam_responsible = \"dba\"\n",
        )
        .unwrap();
        let mut cfg = NodeConfig::load(&path).unwrap();
        assert_eq!(cfg.collector(), Some("http://c:1"));
        assert_eq!(cfg.listener_port(), 1300);
        assert_eq!(cfg.secret_file(), dir.path().join("node.secret"));
        cfg.set("node_id", "abc");
        cfg.save().unwrap();
        let again = NodeConfig::load(&path).unwrap();
        assert_eq!(again.node_id(), Some("abc"));
        assert_eq!(
            again.table["facts"]["team_responsible"].as_str(),
            Some("dba")
        );
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "listener_port = \"x\"\n").unwrap();
        let err = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("node.toml") && err.contains("listener_port"),
            "{err}"
        );
        std::fs::write(&path, "collector = \"ftp://x\"\n").unwrap();
        let err = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("collector"), "{err}");
    }

    #[test]
    fn private_files_are_created_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        write_private(&path, b"s", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
