//! The one error type of this crate. Every variant names the template (and the file it came
//! from), and the line when there is one, so a message alone is enough to find the fault.

use std::fmt;

/// What can go wrong loading or rendering a template or a form.
///
/// `Clone` so that a template that failed to load can report the same error every time it is
/// asked for (I/O errors are kept as their message for that reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No template of that name in the library.
    #[error("unknown template {name:?}; known templates: {}", list(known))]
    UnknownTemplate {
        /// The name asked for.
        name: String,
        /// The templates the library has.
        known: Vec<String>,
    },
    /// The template has no `form.toml`, so it takes no typed inputs.
    #[error("template {name:?} is not a form (it has no form.toml beside its template.hbs)")]
    NotAForm {
        /// The template name.
        name: String,
    },
    /// A template (or an inline template such as a rule's `path`) does not parse.
    #[error("template {template} ({origin}){}: syntax error: {message}", at(*line, *column))]
    Syntax {
        /// Template name.
        template: String,
        /// Where it came from: a file path, or the rule field for inline templates.
        origin: String,
        /// 1-based line, when the parser gave one.
        line: Option<usize>,
        /// Column, when the parser gave one.
        column: Option<usize>,
        /// The parser's reason.
        message: String,
    },
    /// Rendering referenced a variable the data does not hold (strict mode, `{{#if}}` and
    /// helper arguments included).
    #[error("template {template} ({origin}){}: missing variable `{variable}`", at(*line, *column))]
    MissingVariable {
        /// Template (or partial) name where the reference is.
        template: String,
        /// Where it came from.
        origin: String,
        /// 1-based line.
        line: Option<usize>,
        /// Column.
        column: Option<usize>,
        /// The variable path as written (`pods.0.name`).
        variable: String,
    },
    /// Any other rendering failure: a helper refusing its arguments, a partial not found.
    #[error("template {template} ({origin}){}: {message}", at(*line, *column))]
    Render {
        /// Template (or partial) name.
        template: String,
        /// Where it came from.
        origin: String,
        /// 1-based line.
        line: Option<usize>,
        /// Column.
        column: Option<usize>,
        /// What went wrong.
        message: String,
    },
    /// Inputs given to a form are wrong: unknown, missing, of the wrong type, out of range,
    /// or failing one of the form's checks. Every problem found is listed.
    #[error("form {form}: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The form (template) name.
        form: String,
        /// The problems, inputs in form order, then failed checks.
        problems: Vec<Problem>,
    },
    /// A `form.toml` is malformed (the message names the key).
    #[error("{origin}: {message}")]
    FormSpec {
        /// The file.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A template directory could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The OS error's message.
        message: String,
    },
}

/// One problem with a form's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The input concerned; `None` for a failed cross-input check.
    pub input: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.input {
            Some(i) => write!(f, "input {i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How a caller (the CLI, the collector's HTTP API) should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The template or form does not exist (HTTP 404).
    NotFound,
    /// The caller's inputs are wrong (HTTP 400 / 422).
    BadInput,
    /// The template or form itself is broken, or its data lacks something (HTTP 500).
    Template,
    /// The library could not be read.
    Io,
}

impl Error {
    /// The class of the error, for exit codes and HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownTemplate { .. } | Error::NotAForm { .. } => ErrorKind::NotFound,
            Error::Invalid { .. } => ErrorKind::BadInput,
            Error::Syntax { .. }
            | Error::MissingVariable { .. }
            | Error::Render { .. }
            | Error::FormSpec { .. } => ErrorKind::Template,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, e: &std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" line {l}, column {c}"),
        (Some(l), None) => format!(" line {l}"),
        _ => String::new(),
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
