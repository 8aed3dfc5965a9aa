//! # tenet-templates: rendering configuration files
//!
//! Role: one handlebars registry set up for configuration files rather than HTML: no HTML
//! escaping (`a & <b>` stays as written) and strict mode (a missing variable is an error, not
//! an empty string). Service-configuration forms and templated file contents build on it.
//!
//! Must not depend on: tenet-modules, tenet-agent, tenet-collector, any network or process
//! crate. Rendering is pure: template text + JSON data in, text out.
//!
//! Invariant: an error names the template and the line and column at fault.

use handlebars::Handlebars;
use serde_json::Value;

/// A rendering failure, naming the template.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template does not parse.
    #[error("template {name}: {message}")]
    Parse {
        /// Template name.
        name: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// Rendering failed (a missing variable in strict mode, a helper error).
    #[error("template {name}: {message}")]
    Render {
        /// Template name.
        name: String,
        /// The renderer's message (with line and column).
        message: String,
    },
}

/// A template registry configured for configuration files.
pub struct Renderer {
    hb: Handlebars<'static>,
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer::new()
    }
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Renderer {
    /// An empty registry: strict, no escaping.
    pub fn new() -> Renderer {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        Renderer { hb }
    }

    /// Registers a named template.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), Error> {
        self.hb
            .register_template_string(name, text)
            .map_err(|e| Error::Parse {
                name: name.into(),
                message: e.to_string(),
            })
    }

    /// Renders a registered template with `data`.
    pub fn render(&self, name: &str, data: &Value) -> Result<String, Error> {
        self.hb.render(name, data).map_err(|e| Error::Render {
            name: name.into(),
            message: e.to_string(),
        })
    }

    /// Renders a one-off template text.
    pub fn render_text(&self, name: &str, text: &str, data: &Value) -> Result<String, Error> {
        self.hb
            .render_template(text, data)
            .map_err(|e| Error::Render {
                name: name.into(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_text_is_not_html_escaped() {
        let r = Renderer::new();
        let out = r
            .render_text("t", "x={{v}}", &json!({"v": "a & <b>"}))
            .unwrap();
        assert_eq!(out, "x=a & <b>");
    }

    #[test]
    fn missing_variable_is_an_error_naming_the_template() {
        let mut r = Renderer::new();
        r.add("svc.conf", "a\n{{nope}}\n").unwrap();
        let e = r.render("svc.conf", &json!({})).unwrap_err().to_string();
        assert!(e.contains("svc.conf") && e.contains("nope"), "{e}");
    }
}
