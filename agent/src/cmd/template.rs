//! `tenet template render|list|show`: forms and templates from the command line, through the
//! same `tenet_templates::Library::render_form` the collector's form API uses.
//!
//! Every failure of `render` (unknown template, bad input, broken template) exits 2 with the
//! message on stderr and nothing on stdout, so `tenet template render x > file` never leaves
//! a half-rendered file behind a success status.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Map, Value};
use tenet_templates::{Error, FormOptions, Library};

use crate::cli::{RenderArgs, TemplateCmd, TemplateDirArgs};
use crate::error::CliError;
use crate::output::note_as;

/// Runs a `template` subcommand.
pub fn run(c: TemplateCmd) -> Result<ExitCode, CliError> {
    match c {
        TemplateCmd::Render(a) => render(&a),
        TemplateCmd::List(d) => list(&d),
        TemplateCmd::Show { name, dirs } => show(&name, &dirs),
    }
}

/// The shipped templates plus `--template-dir`.
pub fn library(dirs: &TemplateDirArgs) -> Result<Library, CliError> {
    let extra: Vec<_> = dirs.template_dir.iter().cloned().collect();
    Library::load(&extra).map_err(|e| CliError::usage(format!("template directory: {e}")))
}

/// A failure of `render`: exit 2, nothing on stdout.
fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("tenet template render: {e}"))
}

/// Reads `--input`: a JSON object from a file, or from stdin for `-`.
fn read_inputs(path: &Path) -> Result<Map<String, Value>, String> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("--input -: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("--input {}: {e}", path.display()))?
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!(
            "--input {}: expected a JSON object of inputs",
            path.display()
        )),
        Err(e) => Err(format!("--input {}: not JSON: {e}", path.display())),
    }
}

fn render(a: &RenderArgs) -> Result<ExitCode, CliError> {
    let lib = library(&a.dirs)?;
    let mut pairs = Vec::new();
    for s in &a.set {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
            _ => return Err(fail(format!("--set {s:?}: expected KEY=VALUE"))),
        }
    }
    let mut inputs = match &a.input {
        Some(p) => read_inputs(p).map_err(fail)?,
        None => Map::new(),
    };
    let text = match lib.form(&a.name) {
        Ok(form) => {
            inputs.extend(form.inputs_from_pairs(&pairs).map_err(fail)?);
            let options = FormOptions {
                use_defaults: a.defaults,
            };
            lib.render_form(&a.name, &inputs, options).map(|r| r.text)
        }
        // A plain template: the inputs are its data, `--set` values are strings.
        Err(Error::NotAForm { .. }) => {
            for (k, v) in pairs {
                inputs.insert(k, Value::String(v));
            }
            lib.render(&a.name, &Value::Object(inputs))
        }
        Err(e) => Err(e),
    };
    let text = text.map_err(fail)?;
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not an error of the rendering.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(ExitCode::SUCCESS)
}

fn list(dirs: &TemplateDirArgs) -> Result<ExitCode, CliError> {
    let lib = library(dirs)?;
    for name in lib.names() {
        let info = lib.info(&name);
        let form = info.and_then(|i| i.form.as_ref());
        let origin = info.map(|i| i.origin.as_str()).unwrap_or_default();
        match form {
            Some(f) => outln!(
                "{name}\tform\t{origin}\t{}",
                f.description.as_deref().unwrap_or("")
            ),
            None => outln!("{name}\ttemplate\t{origin}\t"),
        }
    }
    for problem in lib.problems() {
        note_as(
            "tenet template list",
            format_args!("does not load: {problem}"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(name: &str, dirs: &TemplateDirArgs) -> Result<ExitCode, CliError> {
    let lib = library(dirs)?;
    let form = lib
        .form(name)
        .map_err(|e| CliError::Usage(format!("tenet template show: {e}")))?;
    outln!("form {name} ({})", form.origin);
    if let Some(d) = &form.description {
        outln!("  {d}");
    }
    outln!("inputs:");
    for i in &form.inputs {
        let mut facts = vec![format!("{:?}", i.kind).to_lowercase()];
        facts.push(if i.mandatory { "mandatory" } else { "optional" }.into());
        if let Some(d) = &i.default {
            facts.push(format!("default {d}"));
        }
        if let Some(m) = i.min {
            facts.push(format!("min {m}"));
        }
        if let Some(m) = i.max {
            facts.push(format!("max {m}"));
        }
        if let Some(p) = i.pattern_help.as_ref().or(i.pattern.as_ref()) {
            facts.push(format!("format: {p}"));
        }
        if let Some(c) = &i.choices {
            let c: Vec<String> = c.iter().map(Value::to_string).collect();
            facts.push(format!("one of {}", c.join(", ")));
        }
        outln!(
            "  {:<12} {}  ({})",
            i.name,
            i.label.as_deref().unwrap_or(""),
            facts.join(", ")
        );
    }
    if !form.checks.is_empty() {
        outln!("checks:");
        for c in &form.checks {
            outln!("  {}", c.condition);
        }
    }
    Ok(ExitCode::SUCCESS)
}
