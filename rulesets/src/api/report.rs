//! The run-report vocabulary, defined once: the statuses, actions and module kinds of a run, and
//! the report the engine returns, `tenet compliance ... --format json` prints, the agent posts
//! to the collector (with its delivery fields, [`RunResults`]) and the collector validates and
//! stores. Every side (de)serializes these same types, so the wire format cannot drift between
//! them: the engine's report *is* what the collector reads.
//!
//! The vocabulary words (`ok`, `nok`, `n/a`; `check`, `fix`, `fixable`, `auto`; `script`,
//! `auto`) are written and read as plain JSON strings. A word outside a vocabulary is refused
//! while deserializing with a [`NotOneOf`] error (`"x" is not one of ok, nok, n/a`), which the
//! collector answers with a 400 naming the field.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word outside a vocabulary: `"bogus" is not one of check, fix, fixable, auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}{NOT_ONE_OF}{expected}")]
pub struct NotOneOf {
    /// What was given.
    pub value: String,
    /// The words allowed, comma-separated.
    pub expected: String,
}

/// What every [`NotOneOf`] message holds between the value and the allowed words.
const NOT_ONE_OF: &str = " is not one of ";

impl NotOneOf {
    /// Whether a (de)serialization error message is a [`NotOneOf`] refusal: serde carries
    /// custom errors as text only, so the collector recognises them by their wording.
    pub fn is_refusal(message: &str) -> bool {
        message.starts_with('"') && message.contains(NOT_ONE_OF)
    }
}

/// Defines a vocabulary: a fieldless enum written as one of its words (serde, `Display`,
/// `FromStr`), refusing any other word with [`NotOneOf`].
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the order error messages list them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word, as written on the wire and printed.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = NotOneOf;

            fn from_str(s: &str) -> Result<$name, NotOneOf> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| NotOneOf {
                        value: s.to_string(),
                        expected: $name::ALL
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                d.deserialize_str(WordVisitor(std::marker::PhantomData))
            }
        }
    };
}

/// Reads a vocabulary word from a string.
struct WordVisitor<T>(std::marker::PhantomData<T>);

impl<T: FromStr<Err = NotOneOf>> serde::de::Visitor<'_> for WordVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        s.parse().map_err(E::custom)
    }
}

vocabulary! {
    /// The outcome of a check, fixable or fix, for a rule, a variable or a module.
    pub enum Status {
        /// Compliant (exit code 0).
        Ok = "ok",
        /// Not compliant, or failed (exit code 1).
        Nok = "nok",
        /// Not applicable (exit code 2).
        NotApplicable = "n/a",
    }
}

impl Status {
    /// The OpenSVC exit code: 0 ok, 1 nok, 2 n/a.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Nok => 1,
            Status::NotApplicable => 2,
        }
    }

    /// Reads an OpenSVC exit code: 0 ok, 2 n/a, anything else nok.
    pub fn from_exit_code(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            2 => Status::NotApplicable,
            _ => Status::Nok,
        }
    }

    /// OM3 merge: any nok gives nok; ok with n/a gives ok; n/a only when both are n/a.
    pub fn merge(self, other: Status) -> Status {
        match (self, other) {
            (Status::Nok, _) | (_, Status::Nok) => Status::Nok,
            (Status::Ok, _) | (_, Status::Ok) => Status::Ok,
            _ => Status::NotApplicable,
        }
    }

    /// Merges many statuses; nothing at all is n/a.
    pub fn merge_all(statuses: impl IntoIterator<Item = Status>) -> Status {
        statuses
            .into_iter()
            .fold(Status::NotApplicable, Status::merge)
    }
}

vocabulary! {
    /// What a run does, and each step a module goes through (`check`, `fixable`, `fix`; a
    /// module's steps are never `auto`, which the engine resolves to `fix` or `check` first).
    pub enum RunAction {
        /// Report compliance; change nothing.
        Check = "check",
        /// Bring modules to compliance.
        Fix = "fix",
        /// Report whether fixes are possible.
        Fixable = "fixable",
        /// Fix autofix modules, check the others.
        Auto = "auto",
    }
}

vocabulary! {
    /// Whether a module is a script or an auto-module.
    pub enum ModuleKind {
        /// An `NN-name` executable.
        Script = "script",
        /// Variables run by built-in classes.
        Auto = "auto",
    }
}

/// Counts of module statuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Modules ending ok.
    pub ok: usize,
    /// Modules ending nok.
    pub nok: usize,
    /// Modules ending n/a.
    pub na: usize,
}

impl Summary {
    /// Counts `n` more modules ending `status`.
    pub fn add(&mut self, status: Status, n: usize) {
        match status {
            Status::Ok => self.ok += n,
            Status::Nok => self.nok += n,
            Status::NotApplicable => self.na += n,
        }
    }
}

impl FromIterator<Status> for Summary {
    fn from_iter<I: IntoIterator<Item = Status>>(statuses: I) -> Summary {
        let mut summary = Summary::default();
        for s in statuses {
            summary.add(s, 1);
        }
        summary
    }
}

/// The report of a run: the JSON contract of `tenet compliance ... --format json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// `check`, `fix`, `fixable` or `auto`.
    pub action: RunAction,
    /// Hash of the policy the run was evaluated against.
    pub policy_hash: String,
    /// Modules, in run order.
    pub modules: Vec<ModuleReport>,
    /// Counts of module statuses.
    pub summary: Summary,
    /// Wall time of the whole run.
    pub duration_ms: u64,
}

/// What happened to one module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleReport {
    /// Module name.
    pub module: String,
    /// The moduleset it was run from.
    pub moduleset: String,
    /// `script` or `auto`: the engine always says; a result posted without it is stored
    /// without it.
    #[serde(default)]
    pub kind: Option<ModuleKind>,
    /// Final status.
    pub status: Status,
    /// Every executed step, in order.
    #[serde(default)]
    pub actions: Vec<ActionReport>,
    /// For auto-modules: per-variable results of the last check (or of the action run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleReport>>,
    /// Wall time of the module.
    #[serde(default)]
    pub duration_ms: u64,
}

/// One executed step of a module (check, fixable or fix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionReport {
    /// `check`, `fixable` or `fix`.
    pub action: RunAction,
    /// 0 ok, 1 nok, 2 n/a (what a script returned, or the merged class result).
    pub exit_code: i32,
    /// Output lines; lines from stderr start with `ERR: `.
    pub log: String,
    /// Wall time.
    pub duration_ms: u64,
}

/// The result of one variable of an auto-module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleReport {
    /// Variable name.
    pub variable: String,
    /// Its class.
    pub class: String,
    /// Result.
    pub status: Status,
    /// Why (the last error line), or what was seen.
    pub message: String,
}

/// `POST /api/v1/nodes/{node}/results` request: a [`RunReport`] with its delivery fields
/// first (the order the body is written in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResults {
    /// Unique id of the run, chosen by the agent (a UUID). The collector records a run once:
    /// posting the same `run_id` again is acknowledged without storing it twice, which makes
    /// the agent's retries exactly-once.
    pub run_id: String,
    /// `tenet` version that ran.
    pub agent_version: String,
    /// The service the run was for (`None` for a node run).
    #[serde(default)]
    pub service: Option<String>,
    /// When the run started (`YYYY-MM-DD HH:MM:SS`, UTC).
    #[serde(default)]
    pub started_at: Option<String>,
    /// [`RunReport::action`].
    pub action: RunAction,
    /// [`RunReport::policy_hash`].
    pub policy_hash: String,
    /// [`RunReport::modules`].
    pub modules: Vec<ModuleReport>,
    /// [`RunReport::summary`].
    pub summary: Summary,
    /// [`RunReport::duration_ms`].
    pub duration_ms: u64,
}

impl RunResults {
    /// The results to post for `report`. (The report's fields are not a flattened member:
    /// serde cannot refuse unknown fields through `flatten`, and the collector must.)
    pub fn new(
        report: RunReport,
        run_id: String,
        agent_version: String,
        service: Option<String>,
        started_at: Option<String>,
    ) -> RunResults {
        let RunReport {
            action,
            policy_hash,
            modules,
            summary,
            duration_ms,
        } = report;
        RunResults {
            run_id,
            agent_version,
            service,
            started_at,
            action,
            policy_hash,
            modules,
            summary,
            duration_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_follows_om3() {
        use Status::*;
        assert_eq!(Ok.merge(Ok), Ok);
        assert_eq!(Ok.merge(Nok), Nok);
        assert_eq!(Ok.merge(NotApplicable), Ok);
        assert_eq!(Nok.merge(NotApplicable), Nok);
        assert_eq!(NotApplicable.merge(NotApplicable), NotApplicable);
        assert_eq!(Status::merge_all([]), NotApplicable);
        assert_eq!(Status::from_exit_code(3), Nok);
    }

    #[test]
    fn words_are_the_wire_format() {
        for (value, word) in [
            (serde_json::to_string(&Status::NotApplicable), "\"n/a\""),
            (serde_json::to_string(&RunAction::Fixable), "\"fixable\""),
            (serde_json::to_string(&ModuleKind::Script), "\"script\""),
        ] {
            assert_eq!(value.unwrap(), word);
        }
        for s in Status::ALL {
            let back: Status = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(back, *s);
            assert_eq!(s.as_str().parse::<Status>(), std::result::Result::Ok(*s));
        }
        assert_eq!(Status::Nok, "nok");
    }

    #[test]
    fn a_word_outside_the_vocabulary_is_refused_naming_the_words() {
        let e = serde_json::from_str::<RunAction>("\"bogus\"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"bogus\" is not one of check, fix, fixable, auto at line 1 column 7"
        );
        assert!(NotOneOf::is_refusal(&e.to_string()));
        let e = "weird".parse::<Status>().unwrap_err();
        assert_eq!(e.to_string(), "\"weird\" is not one of ok, nok, n/a");
        // Another type is not a refusal of a word.
        let e = serde_json::from_str::<Status>("5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid type: integer `5`, expected a string at line 1 column 1"
        );
        assert!(!NotOneOf::is_refusal(&e.to_string()));
    }

    #[test]
    fn results_are_the_report_behind_its_delivery_fields() {
        let report = RunReport {
            action: RunAction::Check,
            policy_hash: "h".into(),
            modules: vec![ModuleReport {
                module: "m".into(),
                moduleset: "ms".into(),
                kind: Some(ModuleKind::Auto),
                status: Status::Nok,
                actions: vec![ActionReport {
                    action: RunAction::Check,
                    exit_code: 1,
                    log: "ERR: x\n".into(),
                    duration_ms: 1,
                }],
                rules: Some(vec![RuleReport {
                    variable: "v".into(),
                    class: "file".into(),
                    status: Status::Nok,
                    message: "x".into(),
                }]),
                duration_ms: 2,
            }],
            summary: [Status::Nok].into_iter().collect(),
            duration_ms: 3,
        };
        let printed = serde_json::to_string(&report).unwrap();
        let run = RunResults::new(report, "r".into(), "0".into(), None, Some("t".into()));
        let posted = serde_json::to_string(&run).unwrap();
        assert_eq!(
            posted,
            format!(
                r#"{{"run_id":"r","agent_version":"0","service":null,"started_at":"t",{}"#,
                &printed[1..]
            )
        );
        assert_eq!(serde_json::from_str::<RunResults>(&posted).unwrap(), run);
    }
}
