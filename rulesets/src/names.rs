//! The grammar of names, one per kind, shared by the collector's API, imports and the agent so
//! a name one side accepts the other accepts too. Documented for users in `docs/names.md`.
//!
//! Every kind refuses: the empty name, more than [`MAX_NAME_BYTES`] bytes, `/` and `\`, the
//! sequence `..`, control characters (newline, tab, NUL, ...), and the invisible characters
//! that reorder or hide text (bidi controls, zero-width characters). Names are used as file
//! names (TOML folders, module scripts `NN-<module>`), URL path segments, environment variable
//! names (`OSVC_COMP_<VARIABLE>`) and in logs, where any of these would be a hazard.
//!
//! On top of that:
//! - **labels** (rulesets, modulesets, filtersets, modules, publication groups / teams) may
//!   hold spaces and punctuation (OpenSVC filtersets are called `servers with systemd`) but
//!   not at either end; rulesets, modulesets and modules may not hold `,` (they are given as
//!   comma-separated lists: `--moduleset a,b`, `?moduleset=a,b`);
//! - **identifiers** (variables, fact fields) are `[A-Za-z0-9_.-]+`, OpenSVC's variable names:
//!   they become environment variable names, where `=`, a newline or NUL would break the
//!   environment;
//! - **host names** (nodes, services, forms) are `[A-Za-z0-9][A-Za-z0-9_.-]*`.

/// Longest name of any kind, in bytes (a TOML folder stores each object in a file named after
/// it: this leaves room for the `.toml` suffix under the usual 255-byte file name limit).
pub const MAX_NAME_BYTES: usize = 200;

/// What a name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A ruleset.
    Ruleset,
    /// A moduleset.
    Moduleset,
    /// A filterset.
    Filterset,
    /// A module of a moduleset.
    Module,
    /// A variable of a ruleset.
    Variable,
    /// A publication group or responsible team (`publications`, `team_responsible`).
    Team,
    /// A node.
    Node,
    /// A service.
    Service,
    /// A form (template).
    Form,
    /// A field of the node facts (`nodes.<field>` in filtersets, `OSVC_COMP_NODES_<FIELD>`).
    FactField,
}

impl NameKind {
    /// `ruleset`, `moduleset`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Ruleset => "ruleset",
            NameKind::Moduleset => "moduleset",
            NameKind::Filterset => "filterset",
            NameKind::Module => "module",
            NameKind::Variable => "variable",
            NameKind::Team => "team",
            NameKind::Node => "node",
            NameKind::Service => "service",
            NameKind::Form => "form",
            NameKind::FactField => "fact field",
        }
    }

    /// The grammar, in words (for error messages and `--help`).
    pub fn grammar(self) -> &'static str {
        match self {
            NameKind::Ruleset | NameKind::Moduleset | NameKind::Module => {
                "1 to 200 bytes; no '/', '\\', ',', '..', control or invisible characters, no space at either end"
            }
            NameKind::Filterset | NameKind::Team => {
                "1 to 200 bytes; no '/', '\\', '..', control or invisible characters, no space at either end"
            }
            NameKind::Variable | NameKind::FactField => "1 to 200 of A-Z a-z 0-9 _ . - (no '..')",
            NameKind::Node | NameKind::Service | NameKind::Form => {
                "1 to 200 of A-Z a-z 0-9 _ . -, starting with a letter or digit (no '..')"
            }
        }
    }
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name refused by its grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {}: {reason} (allowed: {})", shown(name), kind.grammar())]
pub struct NameError {
    /// What the name names.
    pub kind: NameKind,
    /// The name as given.
    pub name: String,
    /// The first rule it breaks.
    pub reason: String,
}

/// Characters that reorder or hide text without being control characters: the bidi
/// embeddings, overrides and isolates, the Arabic letter mark, zero-width characters, the word
/// joiner and invisible operators, and the byte order mark.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks `name` against the grammar of `kind`.
pub fn check(kind: NameKind, name: &str) -> Result<(), NameError> {
    match problem(kind, name) {
        None => Ok(()),
        Some(reason) => Err(NameError {
            kind,
            name: name.to_string(),
            reason,
        }),
    }
}

/// Whether `name` is valid for `kind`.
pub fn is_valid(kind: NameKind, name: &str) -> bool {
    problem(kind, name).is_none()
}

fn problem(kind: NameKind, name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "{} bytes, over the limit of {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!("holds the control character {c:?}"));
    }
    if let Some(c) = name.chars().find(|c| is_invisible(*c)) {
        return Some(format!(
            "holds the invisible character U+{:04X}",
            u32::from(c)
        ));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '/' | '\\')) {
        return Some(format!("holds {c:?}"));
    }
    if name.contains("..") {
        return Some("holds \"..\"".into());
    }
    let ident = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    match kind {
        NameKind::Ruleset
        | NameKind::Moduleset
        | NameKind::Module
        | NameKind::Filterset
        | NameKind::Team => {
            if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
                return Some("begins or ends with a space".into());
            }
            if name == "." {
                return Some("is \".\"".into());
            }
            if matches!(
                kind,
                NameKind::Ruleset | NameKind::Moduleset | NameKind::Module
            ) && name.contains(',')
            {
                return Some("holds ',' (names are listed comma-separated)".into());
            }
        }
        NameKind::Variable | NameKind::FactField => {
            if let Some(c) = name.chars().find(|c| !ident(*c)) {
                return Some(format!("holds {c:?}"));
            }
        }
        NameKind::Node | NameKind::Service | NameKind::Form => {
            if let Some(c) = name.chars().find(|c| !ident(*c)) {
                return Some(format!("holds {c:?}"));
            }
            if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                return Some("does not start with a letter or digit".into());
            }
        }
    }
    None
}

/// A name as messages show it: quoted with escapes, cut to 64 characters when longer, so a
/// hostile name can neither forge log lines nor flood them.
pub fn shown(name: &str) -> String {
    const KEEP: usize = 64;
    let count = name.chars().count();
    if count <= KEEP {
        let clean = !name
            .chars()
            .any(|c| c.is_control() || is_invisible(c) || c == '"');
        if clean {
            return format!("\"{name}\"");
        }
        return format!("{name:?}");
    }
    let head: String = name.chars().take(KEEP).collect();
    format!("{head:?}… ({count} characters)")
}

impl crate::Policy {
    /// Checks the names a node acts on in a resolved policy (received from a collector):
    /// module names become script file names, variable names environment variable names.
    pub fn check_names(&self) -> Result<(), NameError> {
        for m in &self.modules {
            check(NameKind::Module, &m.name)?;
        }
        for rs in &self.rulesets {
            for v in &rs.variables {
                check(NameKind::Variable, &v.name)?;
            }
        }
        Ok(())
    }
}

/// The first name problem of a bundle: an invalid name of an object, module, variable or
/// publication group, or a module or variable listed twice in the same moduleset or ruleset.
pub(crate) fn bundle_problem(bundle: &crate::Bundle) -> Result<(), crate::model::Problem> {
    use crate::model::{ObjectKind, Problem};
    use std::collections::HashMap;
    let problem = |kind, name: &str, message: String| Problem {
        kind,
        name: name.to_string(),
        message,
    };
    let own = |kind: ObjectKind, nk: NameKind, name: &str| {
        check(nk, name).map_err(|e| {
            problem(
                kind,
                name,
                format!("invalid name: {} (allowed: {})", e.reason, nk.grammar()),
            )
        })
    };
    let groups = |kind: ObjectKind, name: &str, meta: &crate::Meta| {
        for (field, list) in [
            ("publications", &meta.publications),
            ("responsibles", &meta.responsibles),
        ] {
            for g in list {
                check(NameKind::Team, g)
                    .map_err(|e| problem(kind, name, format!("{field}: {e}")))?;
            }
        }
        Ok(())
    };
    for rs in bundle.rulesets.values() {
        own(ObjectKind::Ruleset, NameKind::Ruleset, &rs.name)?;
        groups(ObjectKind::Ruleset, &rs.name, &rs.meta)?;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, v) in rs.variables.iter().enumerate() {
            check(NameKind::Variable, &v.name)
                .map_err(|e| problem(ObjectKind::Ruleset, &rs.name, e.to_string()))?;
            if let Some(first) = seen.insert(&v.name, i) {
                return Err(problem(
                    ObjectKind::Ruleset,
                    &rs.name,
                    format!(
                        "variable {} is defined twice (variables {} and {})",
                        shown(&v.name),
                        first + 1,
                        i + 1
                    ),
                ));
            }
        }
    }
    for fs in bundle.filtersets.values() {
        own(ObjectKind::Filterset, NameKind::Filterset, &fs.name)?;
    }
    for ms in bundle.modulesets.values() {
        own(ObjectKind::Moduleset, NameKind::Moduleset, &ms.name)?;
        groups(ObjectKind::Moduleset, &ms.name, &ms.meta)?;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, m) in ms.modules.iter().enumerate() {
            check(NameKind::Module, &m.name)
                .map_err(|e| problem(ObjectKind::Moduleset, &ms.name, e.to_string()))?;
            if let Some(first) = seen.insert(&m.name, i) {
                return Err(problem(
                    ObjectKind::Moduleset,
                    &ms.name,
                    format!(
                        "module {} is listed twice (modules {} and {})",
                        shown(&m.name),
                        first + 1,
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_refuses_the_hazards() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        let hazards = [
            "",
            "a/b",
            "a\\b",
            "..",
            "a..b",
            "a\nb",
            "a\0b",
            "a\tb",
            "a\u{202E}b",
            "a\u{2066}b",
            "a\u{200B}b",
            "a\u{FEFF}",
            long.as_str(),
        ];
        for kind in [
            NameKind::Ruleset,
            NameKind::Moduleset,
            NameKind::Filterset,
            NameKind::Module,
            NameKind::Variable,
            NameKind::Team,
            NameKind::Node,
            NameKind::Service,
            NameKind::Form,
            NameKind::FactField,
        ] {
            for h in hazards {
                let e = check(kind, h).expect_err(&format!("{kind} {h:?} must be refused"));
                assert_eq!(e.kind, kind);
                assert!(e.to_string().contains(kind.as_str()), "{e}");
            }
            assert!(check(kind, &"a".repeat(MAX_NAME_BYTES)).is_ok(), "{kind}");
            assert!(check(kind, "spdc.kernel_1-x").is_ok(), "{kind}");
        }
    }

    #[test]
    fn labels_allow_spaces_inside_and_punctuation() {
        for ok in [
            "servers with systemd",
            "opensvc solaris servers",
            "robert'); DROP TABLE nodes;--",
            "é café",
        ] {
            check(NameKind::Filterset, ok).unwrap();
            check(NameKind::Ruleset, ok).unwrap();
        }
        for bad in [" lead", "trail ", "."] {
            assert!(check(NameKind::Filterset, bad).is_err(), "{bad:?}");
        }
        assert!(check(NameKind::Filterset, "a,b").is_ok());
        for kind in [NameKind::Ruleset, NameKind::Moduleset, NameKind::Module] {
            let e = check(kind, "a,b").unwrap_err();
            assert!(e.reason.contains("','"), "{e}");
        }
    }

    #[test]
    fn variables_are_opensvc_identifiers() {
        for ok in [
            "spdc_pkg",
            "50-master-dnsmasq-configuration.file.etc_NetworkManager_dispatcher.d_forcedns",
        ] {
            check(NameKind::Variable, ok).unwrap();
        }
        for (bad, why) in [
            ("a=b", "'='"),
            ("a b", "' '"),
            ("a\nb", "control"),
            ("a\0b", "control"),
            ("é", "'é'"),
        ] {
            let e = check(NameKind::Variable, bad).unwrap_err();
            assert!(e.reason.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn host_names_start_with_a_letter_or_digit() {
        for ok in ["node-a", "n1", "db01.example.com", "spdc_1"] {
            check(NameKind::Node, ok).unwrap();
            check(NameKind::Service, ok).unwrap();
        }
        for bad in ["-a", ".a", "_a", "a b", "a;b", "a'b", "a:b"] {
            assert!(check(NameKind::Node, bad).is_err(), "{bad:?}");
        }
    }

    fn load(text: &str) -> String {
        crate::toml_format::from_toml_str(text, "p.toml")
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn loading_refuses_bad_names_naming_file_object_and_variable() {
        // Issue 12 item 13: a variable name with '=', a newline or NUL would reach a script's
        // environment broken.
        for (var, shown) in [
            ("a=b", "\"a=b\""),
            ("a\\nb", "\"a\\nb\""),
            ("a\\u0000b", "\"a\\0b\""),
        ] {
            let text = format!(
                "[[ruleset]]\nname = \"r\"\n[[ruleset.variable]]\nname = \"{var}\"\nclass = \"raw\"\nvalue = 1\n"
            );
            let e = load(&text);
            assert!(
                e.starts_with("p.toml:1:1: ruleset r: invalid variable name"),
                "{e}"
            );
            assert!(e.contains(shown), "{shown}: {e}");
        }
        let e = load("[[moduleset]]\nname = \"a/b\"\n");
        assert!(
            e.contains("moduleset \"a/b\": invalid name: holds '/'"),
            "{e}"
        );
        let e = load("[[filterset]]\nname = \"..\"\n");
        assert!(e.contains("\"..\""), "{e}");
    }

    #[test]
    fn duplicates_within_an_object_are_refused_by_name() {
        let e = load(
            "[[moduleset]]\nname = \"m\"\nmodules = [{ name = \"x\" }, { name = \"y\" }, { name = \"x\" }]\n",
        );
        assert!(
            e.contains("moduleset m: module \"x\" is listed twice (modules 1 and 3)"),
            "{e}"
        );
        let e = load(
            "[[ruleset]]\nname = \"r\"\n[[ruleset.variable]]\nname = \"v\"\nclass = \"raw\"\nvalue = 1\n[[ruleset.variable]]\nname = \"v\"\nclass = \"raw\"\nvalue = 2\n",
        );
        assert!(
            e.contains("ruleset r: variable \"v\" is defined twice (variables 1 and 2)"),
            "{e}"
        );
    }

    #[test]
    fn messages_escape_and_cut_names() {
        let e = check(NameKind::Ruleset, "a\nforged log line").unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("\\n"), "{e}");
        let huge = "x".repeat(100_000);
        let e = check(NameKind::Ruleset, &huge).unwrap_err();
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
        assert!(e.to_string().contains("100000 characters"), "{e}");
    }
}
