//! # tenet-templates: rendering configuration files
//!
//! Role: one handlebars registry set up for configuration files rather than HTML — no HTML
//! escaping (`a & <b>` stays as written), strict mode (a missing variable is an error, also
//! inside `{{#if}}` and in helper arguments, where handlebars' own strict mode lets it pass),
//! and helpers for configuration work (zero padding, integer arithmetic, ranges, split / join,
//! IPv4 arithmetic, base64, JSON). Around it:
//!
//! - [`Library`]: the shipped templates (`templates/library/`, embedded at build time) plus
//!   extra directories; templates, their partials and their forms;
//! - [`Form`]: typed inputs of a template (`form.toml`), validated before rendering;
//! - [`Library::render_form`]: form name + inputs JSON → the rendered text, or a typed
//!   [`Error`] whose [`ErrorKind`] says whether the caller (404 / 400) or the template is at
//!   fault. The CLI (`tenet template render`) and the collector's form API call this.
//!
//! Must not depend on: tenet-modules, tenet-agent, tenet-collector, any network or process
//! crate. Rendering is pure: template text + JSON data in, text out (reading template
//! directories is the only I/O, and only when asked).
//!
//! Invariant: an error names the template (and its file) and the line at fault, and for a
//! missing variable, the variable.
//!
//! Helpers and formats are documented in `templates/README.md`.

pub mod error;
pub mod form;
pub mod helpers;
mod inline;
pub mod library;

pub use error::{Error, ErrorKind, Problem, Result};
pub use form::{Check, Form, FormOptions, Input, InputType};
pub use library::{Library, RenderedForm, TemplateInfo};
