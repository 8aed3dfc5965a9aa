//! The template library: the shipped templates (embedded from `templates/library/` at build
//! time) and those of extra directories, in one handlebars registry.
//!
//! Layout of a library directory:
//!
//! ```text
//! <dir>/<name>/template.hbs   the template <name> (names may nest: <dir>/spdc/db/template.hbs
//!                             is `spdc/db`)
//! <dir>/<name>/form.toml      optional: makes <name> a form with typed inputs (see form.rs)
//! <dir>/<name>/<part>.hbs     a partial of it, used as {{> <name>/<part>}}
//! <dir>/<part>.hbs            a partial shared by every template, used as {{> <part>}}
//! ```
//!
//! A template of an extra directory replaces the shipped one of the same name. A file that
//! does not load (syntax error, malformed form) does not stop the others: the error is kept
//! and returned whenever that template is used, and listed by [`Library::problems`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use handlebars::{Handlebars, RenderError, RenderErrorReason};
use serde_json::{Map, Value};

use crate::error::{Error, Problem, Result};
use crate::form::{Form, FormOptions};
use crate::helpers;
use crate::inline::{self, syntax_error};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/library.rs"));
}

/// How the shipped library's files are named in messages.
const EMBEDDED_ORIGIN: &str = "templates/library";

/// One renderable template.
#[derive(Debug, Clone)]
pub struct TemplateInfo {
    /// Where its `template.hbs` came from (`templates/library/x/template.hbs`, or a path).
    pub origin: String,
    /// Its form, when it has a `form.toml`.
    pub form: Option<Form>,
}

/// A form rendered: the configuration text and, when the form says how to name it, the
/// service it is the configuration of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedForm {
    /// The rendered template.
    pub text: String,
    /// The form's `service` template rendered with the same inputs (`None` when the form has
    /// no `service` key).
    pub service: Option<String>,
}

/// A handlebars registry for configuration files, with the helpers of this crate, strict
/// mode and no HTML escaping, holding a library of templates and forms.
pub struct Library {
    hb: Handlebars<'static>,
    templates: BTreeMap<String, TemplateInfo>,
    /// Origin of every registered name, partials included, for messages.
    origins: HashMap<String, String>,
    /// Names (templates or partials) whose files did not load, with why.
    broken: BTreeMap<String, Error>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .field("broken", &self.broken.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for Library {
    fn default() -> Self {
        Library::empty()
    }
}

static BUILTIN: LazyLock<Arc<Library>> = LazyLock::new(|| Arc::new(Library::builtin()));

/// A registry configured for configuration files: strict, no HTML escaping (`a & <b>` stays
/// as written), this crate's helpers.
fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    helpers::register(&mut hb);
    hb
}

impl Library {
    /// A library without templates (helpers and settings only).
    pub fn empty() -> Library {
        Library {
            hb: registry(),
            templates: BTreeMap::new(),
            origins: HashMap::new(),
            broken: BTreeMap::new(),
        }
    }

    /// The shipped templates (`templates/library/`, embedded at build time).
    pub fn builtin() -> Library {
        let mut lib = Library::empty();
        let files: Vec<(String, String, String)> = embedded::FILES
            .iter()
            .map(|(rel, text)| {
                (
                    rel.to_string(),
                    text.to_string(),
                    format!("{EMBEDDED_ORIGIN}/{rel}"),
                )
            })
            .collect();
        lib.add_files(files);
        lib
    }

    /// The shipped library, built once per process and shared.
    pub fn shared_builtin() -> Arc<Library> {
        BUILTIN.clone()
    }

    /// The shipped templates, then those of `dirs` in order (a later one replaces an earlier
    /// one's template of the same name). Errors only when a directory cannot be read.
    pub fn load(dirs: &[PathBuf]) -> Result<Library> {
        let mut lib = Library::builtin();
        for d in dirs {
            lib.add_dir(d)?;
        }
        Ok(lib)
    }

    /// Adds the templates, forms and partials of `dir` (layout in the module documentation).
    pub fn add_dir(&mut self, dir: &Path) -> Result<()> {
        let mut paths = Vec::new();
        walk(dir, &mut paths)?;
        paths.sort();
        let mut files = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, &e))?;
            let rel = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            files.push((rel, text, p.display().to_string()));
        }
        self.add_files(files);
        Ok(())
    }

    /// Adds one template (and optionally its form's TOML text) under `name`, as if read from
    /// `<name>/template.hbs` (and `<name>/form.toml`) of a directory named `origin`.
    pub fn add_template(&mut self, name: &str, text: &str, form: Option<&str>, origin: &str) {
        let mut files = vec![(
            format!("{name}/template.hbs"),
            text.to_string(),
            format!("{origin}/{name}/template.hbs"),
        )];
        if let Some(f) = form {
            files.push((
                format!("{name}/form.toml"),
                f.to_string(),
                format!("{origin}/{name}/form.toml"),
            ));
        }
        self.add_files(files);
    }

    /// Adds a partial `name` (used as `{{> name}}`), as if read from `<name>.hbs` of a
    /// directory named `origin`.
    pub fn add_partial(&mut self, name: &str, text: &str, origin: &str) {
        self.add_files(vec![(
            format!("{name}.hbs"),
            text.to_string(),
            format!("{origin}/{name}.hbs"),
        )]);
    }

    /// Registers files given as (path relative to a library directory, text, origin).
    fn add_files(&mut self, files: Vec<(String, String, String)>) {
        let mut forms = Vec::new();
        for (rel, text, origin) in files {
            if let Some(dir) = rel.strip_suffix("/form.toml") {
                forms.push((dir.to_string(), text, origin));
                continue;
            }
            let Some(stem) = rel.strip_suffix(".hbs") else {
                continue;
            };
            let (name, is_template) = match stem.strip_suffix("/template") {
                Some(dir) => (dir.to_string(), true),
                None => (stem.to_string(), false),
            };
            self.broken.remove(&name);
            self.origins.insert(name.clone(), origin.clone());
            if is_template {
                self.templates.insert(
                    name.clone(),
                    TemplateInfo {
                        origin: origin.clone(),
                        form: None,
                    },
                );
            }
            if let Err(e) = self.hb.register_template_string(&name, &text) {
                self.broken
                    .insert(name.clone(), syntax_error(&name, &origin, &e));
            }
        }
        for (name, text, origin) in forms {
            if !self.templates.contains_key(&name) {
                self.broken.insert(
                    format!("{name}/form.toml"),
                    Error::FormSpec {
                        origin,
                        message: "a form.toml without a template.hbs beside it".into(),
                    },
                );
                continue;
            }
            match Form::parse(&name, &text, &origin) {
                Ok(form) => {
                    if let Some(info) = self.templates.get_mut(&name) {
                        info.form = Some(form);
                    }
                }
                // The template is unusable as a form: say why whenever it is used.
                Err(e) => {
                    self.broken.insert(name.clone(), e);
                }
            }
        }
    }

    /// The renderable templates (partials excluded), sorted.
    pub fn names(&self) -> Vec<String> {
        self.templates.keys().cloned().collect()
    }

    /// A template's description, if it exists.
    pub fn info(&self, name: &str) -> Option<&TemplateInfo> {
        self.templates.get(name)
    }

    /// Whether `name` is a renderable template that loaded without error.
    pub fn has(&self, name: &str) -> bool {
        self.templates.contains_key(name) && !self.broken.contains_key(name)
    }

    /// Files that did not load, with why.
    pub fn problems(&self) -> Vec<&Error> {
        self.broken.values().collect()
    }

    /// Fails when `name` is not a renderable, loaded template.
    pub fn require(&self, name: &str) -> Result<&TemplateInfo> {
        if let Some(e) = self.broken.get(name) {
            return Err(e.clone());
        }
        self.templates
            .get(name)
            .ok_or_else(|| Error::UnknownTemplate {
                name: name.to_string(),
                known: self.names(),
            })
    }

    /// The form of template `name`.
    pub fn form(&self, name: &str) -> Result<&Form> {
        self.require(name)?
            .form
            .as_ref()
            .ok_or_else(|| Error::NotAForm {
                name: name.to_string(),
            })
    }

    /// Renders template `name` with `data`.
    pub fn render(&self, name: &str, data: &Value) -> Result<String> {
        self.require(name)?;
        self.hb
            .render(name, data)
            .map_err(|e| self.render_error(e, name))
    }

    /// Checks that `text`, an inline template (a rule's `path`, a form's check), parses.
    /// `label` names it in messages (`rule path`, `form x, check 2`).
    pub fn check_inline(&self, label: &str, text: &str) -> Result<()> {
        inline::check(label, text)
    }

    /// Renders `text`, an inline template, with `data`; `label` names it in messages.
    pub fn render_inline(&self, label: &str, text: &str, data: &Value) -> Result<String> {
        if !text.contains("{{") {
            // Nothing to expand: the common case of plain paths and values.
            return Ok(text.to_string());
        }
        self.check_inline(label, text)?;
        self.hb
            .render_template(text, data)
            .map_err(|e| self.render_error(e, label))
    }

    /// Renders the form `name`: validates `inputs` against its `form.toml` (every problem
    /// listed in one [`Error::Invalid`]), then renders the template with the validated
    /// inputs (defaults applied). The collector's form endpoint and `tenet template render`
    /// both call this; it does no I/O.
    pub fn render_form(
        &self,
        name: &str,
        inputs: &Map<String, Value>,
        options: FormOptions,
    ) -> Result<RenderedForm> {
        let form = self.form(name)?;
        let data = form.validate_inputs(inputs, options)?;
        self.run_checks(form, &data)?;
        let data = Value::Object(data);
        let text = self.render(name, &data)?;
        let service = match &form.service {
            Some(t) => Some(self.render_inline(&format!("form {name}, service"), t, &data)?),
            None => None,
        };
        Ok(RenderedForm { text, service })
    }

    /// Runs the form's checks (templates over the validated inputs): each false condition is
    /// a problem, all of them reported in one [`Error::Invalid`].
    fn run_checks(&self, form: &Form, data: &Map<String, Value>) -> Result<()> {
        let inputs = Value::Object(data.clone());
        let mut problems = Vec::new();
        for (i, c) in form.checks.iter().enumerate() {
            let label = format!("{}, check {}", form.origin, i + 1);
            let verdict =
                self.render_inline(&format!("{label}, condition"), &c.condition, &inputs)?;
            match verdict.trim() {
                "true" => {}
                "false" => problems.push(Problem {
                    input: None,
                    message: self.render_inline(
                        &format!("{label}, message"),
                        &c.message,
                        &inputs,
                    )?,
                }),
                other => {
                    return Err(Error::FormSpec {
                        origin: form.origin.clone(),
                        message: format!(
                            "check {}: the condition rendered {other:?}, expected true or false",
                            i + 1
                        ),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid {
                form: form.name.clone(),
                problems,
            })
        }
    }

    fn origin_of(&self, name: &str) -> String {
        self.origins
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// Turns a handlebars rendering error into this crate's, naming the template (or the
    /// partial) at fault and its file.
    fn render_error(&self, e: RenderError, fallback: &str) -> Error {
        let template = e
            .template_name
            .clone()
            .unwrap_or_else(|| fallback.to_string());
        let origin = self.origin_of(&template);
        let (line, column) = (e.line_no, e.column_no);
        match e.reason() {
            RenderErrorReason::MissingVariable(v) => Error::MissingVariable {
                template,
                origin,
                line,
                column,
                variable: v.clone().unwrap_or_else(|| "(unnamed)".into()),
            },
            RenderErrorReason::TemplateError(te) => syntax_error(&template, &origin, te),
            RenderErrorReason::PartialNotFound(p) => match self.broken.get(p) {
                Some(broken) => broken.clone(),
                None => Error::Render {
                    template,
                    origin,
                    line,
                    column,
                    message: format!("partial {p:?} not found"),
                },
            },
            RenderErrorReason::Other(m) => Error::Render {
                template,
                origin,
                line,
                column,
                message: m.clone(),
            },
            other => Error::Render {
                template,
                origin,
                line,
                column,
                message: other.to_string(),
            },
        }
    }
}

/// Every `*.hbs` and `form.toml` under `dir`; names starting with `.` are skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, &e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, &e))?;
        let p = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let ft = entry.file_type().map_err(|e| Error::io(&p, &e))?;
        if ft.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "hbs") || entry.file_name() == "form.toml" {
            out.push(p);
        }
    }
    Ok(())
}
