//! Inline templates (a rule's `path`, a form's checks and service): the syntax check, and
//! handlebars syntax errors turned into ours. Both `form` (checks at parse time) and `library`
//! (rendering) use it; it depends on neither, so they do not depend on each other both ways.

use handlebars::{Template, TemplateError};

use crate::error::{Error, Result};

/// Checks that `text`, an inline template, parses; `label` names it in messages.
pub(crate) fn check(label: &str, text: &str) -> Result<()> {
    Template::compile(text)
        .map(|_| ())
        .map_err(|e| syntax_error(label, label, &e))
}

/// A handlebars syntax error as ours, naming the template and where it came from.
pub(crate) fn syntax_error(name: &str, origin: &str, e: &TemplateError) -> Error {
    let (line, column) = match e.pos() {
        Some((l, c)) => (Some(l), Some(c)),
        None => (None, None),
    };
    Error::Syntax {
        template: name.to_string(),
        origin: origin.to_string(),
        line,
        column,
        message: e.reason().to_string(),
    }
}
