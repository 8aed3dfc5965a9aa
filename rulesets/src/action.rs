//! Collector-queued actions: the allow-list of commands an admin may queue for a node, and
//! the wire types of the action queue. The collector validates a command when it is queued;
//! the agent validates it again before running it, with this same parser, so nothing but these
//! commands ever runs from the queue.
//!
//! Allowed (OpenSVC's command text, without the `nodemgr` / `om node` head):
//! ```text
//! compliance check|fix|fixable|auto [--moduleset A[,B]] | [--module M[,N]] [--service SVC]
//! pushasset
//! release add URL --version V [--sha256 HEX] [--force]
//! release remove V
//! ```
//! A release URL is `http://` or `https://` (no `file://` from the queue), without spaces or
//! quotes; a version is `[A-Za-z0-9_][A-Za-z0-9._-]*`.
//! Options take their value as the next word or after `=`; names are letters, digits and
//! `. _ - , @ + : /`, never starting with `-`.
//!
//! Statuses, as OpenSVC's `action_queue.status`: `W` queued (waiting), `N` the node was
//! notified, `S` sent to the node (dequeued, not yet acknowledged), `R` running (acknowledged),
//! `T` terminated (`ret`, `stdout`, `stderr` set), `C` cancelled.

use serde::{Deserialize, Serialize};

/// A queued command that is not on the allow-list, or is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command not allowed: {0}")]
pub struct CommandError(pub String);

/// `compliance <action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComplianceAction {
    /// check
    Check,
    /// fix
    Fix,
    /// fixable
    Fixable,
    /// auto
    Auto,
}

impl ComplianceAction {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            ComplianceAction::Check => "check",
            ComplianceAction::Fix => "fix",
            ComplianceAction::Fixable => "fixable",
            ComplianceAction::Auto => "auto",
        }
    }
}

/// An allowed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionCommand {
    /// `compliance <action> [--moduleset ..|--module ..] [--service ..]`
    Compliance {
        /// check, fix, fixable or auto.
        action: ComplianceAction,
        /// `--moduleset`.
        moduleset: Option<String>,
        /// `--module`.
        module: Option<String>,
        /// `--service`.
        service: Option<String>,
    },
    /// `pushasset`
    Pushasset,
    /// `release add URL --version V [--sha256 HEX] [--force]`: make a release present.
    ReleaseAdd {
        /// The squashfs URL.
        source: String,
        /// The version.
        version: String,
        /// Its sha256 (hex), when known.
        sha256: Option<String>,
        /// Run every step even when the release is already present.
        force: bool,
    },
    /// `release remove V`: make a release absent.
    ReleaseRemove {
        /// The version.
        version: String,
    },
}

fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 100
        && !v.starts_with(['.', '-'])
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn valid_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() > "https://".len()
        && u.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '`' | '\\'))
}

/// `--opt value` / `--opt=value` words, each of `allowed` at most once, nothing else.
fn parse_options<const N: usize>(
    words: &[&str],
    allowed: [&str; N],
) -> Result<[Option<String>; N], CommandError> {
    let err = |m: String| CommandError(m);
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut i = 0;
    while i < words.len() {
        let (opt, value) = match words[i].split_once('=') {
            Some((o, v)) => (o, Some(v)),
            None => (words[i], None),
        };
        let Some(slot) = allowed.iter().position(|a| *a == opt) else {
            return Err(err(format!(
                "option {opt:?} is not allowed (only {})",
                allowed.join(", ")
            )));
        };
        let value = match value {
            Some(v) => v,
            None => {
                i += 1;
                *words
                    .get(i)
                    .ok_or_else(|| err(format!("{opt} needs a value")))?
            }
        };
        if values[slot].replace(value.to_string()).is_some() {
            return Err(err(format!("{opt} given twice")));
        }
        i += 1;
    }
    Ok(values)
}

fn parse_release(rest: &[&str]) -> Result<ActionCommand, CommandError> {
    let err = |m: String| CommandError(m);
    match rest {
        ["remove", version] if valid_version(version) => Ok(ActionCommand::ReleaseRemove {
            version: version.to_string(),
        }),
        ["remove", version] => Err(err(format!(
            "release remove {version:?}: not a valid version"
        ))),
        ["remove", ..] => Err(err("release remove takes one version".into())),
        ["add", source, opts @ ..] => {
            if !valid_url(source) {
                return Err(err(format!(
                    "release add {source:?}: the source must be an http:// or https:// URL"
                )));
            }
            // `--force` is the one flag (no value); it may come anywhere after the URL, once.
            let forced = opts.iter().filter(|w| **w == "--force").count();
            if forced > 1 {
                return Err(err("--force given twice".into()));
            }
            let opts: Vec<&str> = opts.iter().copied().filter(|w| *w != "--force").collect();
            let [version, sha256] = parse_options(&opts, ["--version", "--sha256"])?;
            let version = version.ok_or_else(|| err("release add needs --version".into()))?;
            if !valid_version(&version) {
                return Err(err(format!("--version {version:?}: not a valid version")));
            }
            if let Some(h) = &sha256
                && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(err(format!("--sha256 {h:?}: not 64 hex digits")));
            }
            Ok(ActionCommand::ReleaseAdd {
                source: source.to_string(),
                version,
                sha256,
                force: forced == 1,
            })
        }
        _ => Err(err(
            "release: only `add URL --version V` and `remove V` may be queued".into(),
        )),
    }
}

fn valid_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 255
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-,@+:/".contains(c))
}

impl ActionCommand {
    /// Parses a command against the allow-list.
    pub fn parse(text: &str) -> Result<ActionCommand, CommandError> {
        let err = |m: String| CommandError(m);
        if text.len() > 1024 {
            return Err(err("longer than 1024 bytes".into()));
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            [] => Err(err("empty command".into())),
            ["pushasset"] => Ok(ActionCommand::Pushasset),
            ["pushasset", rest @ ..] => Err(err(format!(
                "pushasset takes no argument (got {:?})",
                rest.join(" ")
            ))),
            ["release", rest @ ..] => parse_release(rest),
            ["compliance", action, rest @ ..] => {
                let action = match *action {
                    "check" => ComplianceAction::Check,
                    "fix" => ComplianceAction::Fix,
                    "fixable" => ComplianceAction::Fixable,
                    "auto" => ComplianceAction::Auto,
                    other => {
                        return Err(err(format!(
                            "compliance {other:?}: only check, fix, fixable and auto may be queued"
                        )));
                    }
                };
                let [moduleset, module, service] =
                    parse_options(rest, ["--moduleset", "--module", "--service"])?;
                for (opt, value) in [
                    ("--moduleset", &moduleset),
                    ("--module", &module),
                    ("--service", &service),
                ] {
                    if let Some(v) = value
                        && !valid_name(v)
                    {
                        return Err(err(format!("{opt} {v:?}: not a valid name")));
                    }
                }
                if moduleset.is_some() && module.is_some() {
                    return Err(err("--moduleset and --module exclude each other".into()));
                }
                Ok(ActionCommand::Compliance {
                    action,
                    moduleset,
                    module,
                    service,
                })
            }
            [first, ..] => Err(err(format!(
                "{first:?} is not an allowed command (compliance check|fix|fixable|auto, pushasset, release add|remove)"
            ))),
        }
    }

    /// The `tenet` arguments that run it (after any global option). Release commands run
    /// in place (`release run ...`): the task runner is what queued them.
    pub fn args(&self) -> Vec<String> {
        match self {
            ActionCommand::ReleaseAdd { .. } | ActionCommand::ReleaseRemove { .. } => {
                let mut v = vec!["release".to_string(), "run".to_string()];
                v.extend(self.words().into_iter().skip(1));
                v
            }
            _ => self.words(),
        }
    }

    fn words(&self) -> Vec<String> {
        match self {
            ActionCommand::ReleaseAdd {
                source,
                version,
                sha256,
                force,
            } => {
                let mut v = vec![
                    "release".to_string(),
                    "add".to_string(),
                    source.clone(),
                    "--version".to_string(),
                    version.clone(),
                ];
                if let Some(h) = sha256 {
                    v.push("--sha256".into());
                    v.push(h.clone());
                }
                if *force {
                    v.push("--force".into());
                }
                v
            }
            ActionCommand::ReleaseRemove { version } => {
                vec!["release".into(), "remove".into(), version.clone()]
            }
            ActionCommand::Pushasset => vec!["pushasset".into()],
            ActionCommand::Compliance {
                action,
                moduleset,
                module,
                service,
            } => {
                let mut v = vec!["compliance".to_string(), action.as_str().to_string()];
                for (opt, val) in [
                    ("--moduleset", moduleset),
                    ("--module", module),
                    ("--service", service),
                ] {
                    if let Some(x) = val {
                        v.push(opt.into());
                        v.push(x.clone());
                    }
                }
                v
            }
        }
    }

    /// The canonical text (what the collector stores).
    pub fn canonical(&self) -> String {
        self.words().join(" ")
    }
}

/// Action statuses, as OpenSVC's.
pub mod status {
    /// Queued, the node not yet notified.
    pub const WAITING: &str = "W";
    /// The node was notified over TCP.
    pub const NOTIFIED: &str = "N";
    /// Sent to the node by a dequeue, not yet acknowledged.
    pub const SENT: &str = "S";
    /// Acknowledged by the node: running (or about to).
    pub const RUNNING: &str = "R";
    /// Terminated: `ret`, `stdout` and `stderr` are set.
    pub const TERMINATED: &str = "T";
    /// Cancelled before the node acknowledged it.
    pub const CANCELLED: &str = "C";
    /// Every status.
    pub const ALL: [&str; 6] = [WAITING, NOTIFIED, SENT, RUNNING, TERMINATED, CANCELLED];
}

/// `POST /api/v1/actions` request (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueAction {
    /// Node id or name.
    pub node: String,
    /// The command (allow-listed).
    pub command: String,
}

/// An action, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Action id.
    pub id: i64,
    /// Node id.
    pub node_id: String,
    /// Node name.
    pub node: String,
    /// The command, canonical.
    pub command: String,
    /// W, N, S, R, T or C.
    pub status: String,
    /// Exit code, once terminated.
    pub ret: Option<i32>,
    /// Standard output, once terminated.
    pub stdout: Option<String>,
    /// Standard error, once terminated.
    pub stderr: Option<String>,
    /// Who queued it (`admin:<token name>`).
    pub queued_by: String,
    /// When it was queued (`YYYY-MM-DD HH:MM:SS`, UTC, as every collector time).
    pub queued_at: String,
    /// When the node was notified.
    pub notified_at: Option<String>,
    /// Why the last notification failed, if it did.
    pub notify_error: Option<String>,
    /// When it was last sent to the node.
    pub sent_at: Option<String>,
    /// How many times it was sent (more than once: re-offered, unacknowledged).
    pub sent_count: i64,
    /// When the node acknowledged it (OpenSVC's `date_dequeued`).
    pub acked_at: Option<String>,
    /// When its result arrived, or it was cancelled.
    pub done_at: Option<String>,
}

/// An action sent to its node by a dequeue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DequeuedAction {
    /// Action id.
    pub id: i64,
    /// The command, canonical.
    pub command: String,
    /// When it was queued.
    pub queued_at: String,
}

/// `POST /api/v1/nodes/{node}/actions/dequeue` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dequeued {
    /// The actions now sent (status S), oldest first.
    pub actions: Vec<DequeuedAction>,
}

/// `POST /api/v1/nodes/{node}/actions/ack` request and response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckActions {
    /// Action ids (in the response: those now running; others were cancelled or unknown).
    pub ids: Vec<i64>,
}

/// `POST /api/v1/nodes/{node}/actions/result` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionResult {
    /// Action id.
    pub id: i64,
    /// Exit code (non-zero: failed).
    pub ret: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_commands_parse_to_their_canonical_form() {
        for (text, canonical) in [
            ("pushasset", "pushasset"),
            ("  compliance   check ", "compliance check"),
            (
                "compliance fix --moduleset spdc.node",
                "compliance fix --moduleset spdc.node",
            ),
            (
                "compliance fixable --module=m1,m2 --service spdc",
                "compliance fixable --module m1,m2 --service spdc",
            ),
            (
                "compliance auto --service=ns/svc --moduleset a,b",
                "compliance auto --moduleset a,b --service ns/svc",
            ),
            (
                "release add https://swus.example/r.squashfs --version=9999.0.0.0-1",
                "release add https://swus.example/r.squashfs --version 9999.0.0.0-1",
            ),
            (
                "release   remove 9999.0.0.0-1",
                "release remove 9999.0.0.0-1",
            ),
            (
                "release add https://x/r.sqfs --force --version 1",
                "release add https://x/r.sqfs --version 1 --force",
            ),
        ] {
            let c = ActionCommand::parse(text).unwrap();
            assert_eq!(c.canonical(), canonical, "{text}");
            assert_eq!(ActionCommand::parse(&c.canonical()).unwrap(), c);
        }
    }

    #[test]
    fn release_commands_run_in_place() {
        let c =
            ActionCommand::parse("release add https://x/r.sqfs --version 1 --sha256").unwrap_err();
        assert!(c.0.contains("--sha256 needs a value"), "{c}");
        let c = ActionCommand::parse("release add https://x/r.sqfs --version 1").unwrap();
        assert_eq!(
            c.args(),
            [
                "release",
                "run",
                "add",
                "https://x/r.sqfs",
                "--version",
                "1"
            ]
        );
        let c = ActionCommand::parse("release add https://x/r.sqfs --version 1 --force").unwrap();
        assert_eq!(
            c.args(),
            [
                "release",
                "run",
                "add",
                "https://x/r.sqfs",
                "--version",
                "1",
                "--force"
            ]
        );
        let c = ActionCommand::parse("release remove 1").unwrap();
        assert_eq!(c.args(), ["release", "run", "remove", "1"]);
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "rm -rf /",
            "compliance",
            "compliance env",
            "compliance attach --moduleset x",
            "compliance check --force",
            "compliance check --policy /tmp/x",
            "compliance check --moduleset",
            "compliance check --moduleset --module",
            "compliance check --moduleset a --module b",
            "compliance check --moduleset a --moduleset b",
            "compliance check --moduleset a;reboot",
            "compliance check --moduleset $(id)",
            "compliance check --service=-x",
            "pushasset --sync",
            "release add file:///etc/shadow --version 1",
            "release add https://x/r.sqfs",
            "release add https://x/r.sqfs --version ../1",
            "release add https://x/r'$(id)' --version 1",
            "release add https://x/r.sqfs --version 1 --force --force",
            "release add https://x/r.sqfs --version 1 --force=yes",
            "release remove 1 --force",
            "release add https://x/r.sqfs --version 1 --sha256 abc",
            "release remove",
            "release remove 1 2",
            "release remove -rf",
            "release list",
            "sh -c 'compliance check'",
        ] {
            assert!(ActionCommand::parse(text).is_err(), "{text:?} accepted");
        }
    }
}
