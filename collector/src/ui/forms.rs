//! Forms: the list (`/ui/forms`), a form generated from its `form.toml`
//! (`/ui/forms/{name}`: typed inputs with their defaults, each problem shown next to its
//! input), a preview of the rendered configuration (`POST .../preview`, stores nothing) and
//! submit (`POST /ui/forms/{name}`), which stores the configuration through the same code as
//! `POST /api/v1/forms/{name}` (`api::forms::store_rendered`): the same inputs give the same
//! bytes. Inputs are checked by the same `Form` as the API's (types, bounds, patterns, the
//! form's checks).

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};
use tenet_templates::{Form, FormOptions, InputType};

use super::layout::{self, csrf, enc};
use super::mask;
use super::session::{Session, serde_urlencoded_pairs};
use crate::api::AppState;

/// `GET /ui/forms`.
pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let forms: Vec<(String, Option<String>, usize)> = state
        .templates
        .names()
        .into_iter()
        .filter_map(|n| {
            let form = state.templates.info(&n)?.form.as_ref()?;
            Some((n, form.description.clone(), form.inputs.len()))
        })
        .collect();
    let body = html! {
        @if forms.is_empty() { p { "No form: a template with a form.toml beside its template.hbs is a form." } }
        @else {
            table #forms {
                thead { tr { th scope="col" { "Form" } th scope="col" { "What it makes" } th scope="col" { "Inputs" } } }
                tbody {
                    @for (name, description, inputs) in &forms {
                        tr {
                            td { a href={ "/ui/forms/" (enc(name)) } { (name) } }
                            td { (layout::or_dash(description.as_deref())) }
                            td.num { (inputs) }
                        }
                    }
                }
            }
        }
    };
    layout::page(&session, "Forms", "Forms", body)
}

/// What a form page shows besides its inputs.
#[derive(Default)]
struct Outcome {
    /// Problems per input.
    by_input: HashMap<String, Vec<String>>,
    /// Problems of the whole form.
    general: Vec<String>,
    /// The rendered configuration (preview).
    preview: Option<(String, Option<String>)>,
    /// A notice (stored).
    notice: Option<Markup>,
}

/// The form `name`, or the page saying there is none.
fn find_form<'a>(state: &'a AppState, name: &str) -> Result<&'a Form, Box<Response>> {
    state.templates.form(name).map_err(|e| {
        Box::new(layout::error_page(
            StatusCode::NOT_FOUND,
            "No such form",
            &e.to_string(),
        ))
    })
}

/// Query of a form page.
#[derive(Debug, Default, Deserialize)]
pub struct FormQuery {
    /// The service whose configuration was just stored.
    #[serde(default)]
    stored: Option<String>,
}

/// `GET /ui/forms/{name}`: the form with its defaults.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    query: Result<Query<FormQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let form = match find_form(&state, &name) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let values: Vec<(String, String)> = form
        .inputs
        .iter()
        .filter_map(|i| {
            let d = i.default.as_ref()?;
            Some((
                i.name.clone(),
                d.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| d.to_string()),
            ))
        })
        .collect();
    let mut outcome = Outcome::default();
    if let Ok(Query(FormQuery { stored: Some(svc) })) = query {
        let store = state.store.clone();
        let s = svc.clone();
        if let Ok(Ok(Some(cfg))) =
            tokio::task::spawn_blocking(move || store.service_config(&s)).await
            && cfg.form == name
        {
            outcome.notice = Some(html! {
                div.notice #stored role="status" {
                    p { "Stored the configuration of service " strong #stored-service { (cfg.service) } ": "
                        span #stored-bytes { (cfg.config.len()) } " bytes, sha256 " span.mono #stored-sha { (cfg.sha256) } ", at " (cfg.updated_at) "." }
                    p { "Its nodes get it with " code { "tenet svc pull " (cfg.service) } "; the API serves it at "
                        code { "GET /api/v1/services/" (cfg.service) "/config" } "." }
                }
            });
        }
    }
    layout::page(
        &session,
        "Forms",
        &format!("Form {name}"),
        form_markup(&session, &name, form, &values, &outcome),
    )
}

/// A posted form's fields.
struct Fields {
    /// The inputs, typed by the form (empty fields are not given: an optional input then
    /// takes its default, a mandatory one is reported missing).
    inputs: Result<Map<String, Value>, tenet_templates::Error>,
    /// The service field.
    service: Option<String>,
    /// The values as typed, to show again.
    raw: Vec<(String, String)>,
}

fn read_inputs(form: &Form, body: &[u8]) -> Fields {
    let pairs = serde_urlencoded_pairs(body);
    let mut given = Vec::new();
    let mut raw = Vec::new();
    let mut service = None;
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => {}
            "service" => service = Some(v.trim().to_string()).filter(|s| !s.is_empty()),
            _ => {
                raw.push((k.clone(), v.clone()));
                if !v.is_empty() {
                    given.push((k, v));
                }
            }
        }
    }
    Fields {
        inputs: form.inputs_from_pairs(&given),
        service,
        raw,
    }
}

/// Sorts a form error's problems by input; a check's message naming an input first
/// (`npods: ...`) goes with that input.
fn problems(form: &Form, e: &tenet_templates::Error, outcome: &mut Outcome) {
    match e {
        tenet_templates::Error::Invalid { problems, .. } => {
            for p in problems {
                let input = p.input.clone().or_else(|| {
                    form.inputs
                        .iter()
                        .find(|i| p.message.starts_with(&format!("{}: ", i.name)))
                        .map(|i| i.name.clone())
                });
                match input {
                    Some(i) if form.input(&i).is_some() => outcome
                        .by_input
                        .entry(i)
                        .or_default()
                        .push(p.message.clone()),
                    Some(i) => outcome.general.push(format!("{i}: {}", p.message)),
                    None => outcome.general.push(p.message.clone()),
                }
            }
        }
        other => outcome.general.push(other.to_string()),
    }
}

/// A posted form, rendered.
struct Posted {
    /// The typed inputs.
    inputs: Map<String, Value>,
    /// The text and the service it names.
    rendered: tenet_templates::RenderedForm,
    /// The service field, for forms that do not name their service.
    service: Option<String>,
    /// The fields as typed, to show again.
    raw: Vec<(String, String)>,
}

/// Renders a posted form: `Ok` with the text and service, or the page showing what is wrong.
async fn render_posted(
    state: &AppState,
    session: &Session,
    name: &str,
    body: &[u8],
) -> Result<Posted, Box<Response>> {
    let form = find_form(state, name)?;
    let Fields {
        inputs,
        service,
        raw,
    } = read_inputs(form, body);
    let mut outcome = Outcome::default();
    let rendered = inputs.and_then(|inputs| {
        state
            .templates
            .render_form(name, &inputs, FormOptions::default())
            .map(|r| (inputs, r))
    });
    match rendered {
        Ok((inputs, rendered)) => Ok(Posted {
            inputs,
            rendered,
            service,
            raw,
        }),
        Err(e) => {
            problems(form, &e, &mut outcome);
            Err(Box::new(layout::page_with_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                session,
                "Forms",
                &format!("Form {name}"),
                form_markup(session, name, form, &raw, &outcome),
            )))
        }
    }
}

/// `POST /ui/forms/{name}/preview`: renders, stores nothing.
pub async fn preview(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Posted { rendered, raw, .. } = match render_posted(&state, &session, &name, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let form = match find_form(&state, &name) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let outcome = Outcome {
        preview: Some((rendered.text, rendered.service)),
        ..Outcome::default()
    };
    layout::page(
        &session,
        "Forms",
        &format!("Form {name}"),
        form_markup(&session, &name, form, &raw, &outcome),
    )
}

/// `POST /ui/forms/{name}`: renders and stores the service's configuration.
pub async fn submit(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Posted {
        inputs,
        rendered,
        service,
        raw,
    } = match render_posted(&state, &session, &name, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match crate::api::forms::store_rendered(
        &state,
        session.actor(),
        &name,
        inputs,
        rendered,
        service,
    )
    .await
    {
        Ok(cfg) => {
            tracing::info!(form = name, service = cfg.service, "console: form stored");
            Redirect::to(&format!(
                "/ui/forms/{}?stored={}",
                enc(&name),
                enc(&cfg.service)
            ))
            .into_response()
        }
        Err(e) if e.status().is_client_error() => {
            let form = match find_form(&state, &name) {
                Ok(f) => f,
                Err(r) => return *r,
            };
            let outcome = Outcome {
                general: vec![e.to_string()],
                ..Outcome::default()
            };
            layout::page_with_status(
                e.status(),
                &session,
                "Forms",
                &format!("Form {name}"),
                form_markup(&session, &name, form, &raw, &outcome),
            )
        }
        Err(e) => layout::api_error(e),
    }
}

fn help(i: &tenet_templates::Input) -> String {
    let mut parts = Vec::new();
    parts.push(match i.kind {
        InputType::Integer => match (i.min, i.max) {
            (Some(a), Some(b)) => format!("an integer from {a} to {b}"),
            (Some(a), None) => format!("an integer, at least {a}"),
            (None, Some(b)) => format!("an integer, at most {b}"),
            (None, None) => "an integer".into(),
        },
        InputType::String => i.pattern_help.clone().unwrap_or_else(|| "text".into()),
        InputType::Boolean => "yes or no".into(),
    });
    parts.push(if i.mandatory {
        "required".into()
    } else {
        "optional".into()
    });
    parts.join("; ")
}

fn form_markup(
    session: &Session,
    name: &str,
    form: &Form,
    values: &[(String, String)],
    outcome: &Outcome,
) -> Markup {
    let value_of = |input: &str| {
        values
            .iter()
            .find(|(k, _)| k == input)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let action = format!("/ui/forms/{}", enc(name));
    html! {
        @if let Some(d) = &form.description { p.help { (d) } }
        @if let Some(n) = &outcome.notice { (n) }
        @if !outcome.general.is_empty() || !outcome.by_input.is_empty() {
            div.error #form-errors role="alert" {
                p { "The form was not accepted:" }
                ul {
                    @for g in &outcome.general { li { (g) } }
                    @for i in &form.inputs {
                        @for m in outcome.by_input.get(&i.name).into_iter().flatten() {
                            li { a href={ "#in-" (i.name) } { (i.label.as_deref().unwrap_or(&i.name)) } ": " (m) }
                        }
                    }
                }
            }
        }
        // `novalidate`: the collector checks every input and shows its own message next to
        // each, the same checks as the API's.
        form.generated #form method="post" action=(action) novalidate {
            (csrf(session))
            @for i in &form.inputs {
                @let id = format!("in-{}", i.name);
                @let err_id = format!("err-{}", i.name);
                @let help_id = format!("help-{}", i.name);
                @let errors = outcome.by_input.get(&i.name);
                @let described = if errors.is_some() { format!("{err_id} {help_id}") } else { help_id.clone() };
                div.field {
                    label for=(id) { (i.label.as_deref().unwrap_or(&i.name)) }
                    div.control {
                        @match i.kind {
                            InputType::Integer => {
                                input id=(id) name=(i.name) type="number" inputmode="numeric" step="1"
                                    min=[i.min] max=[i.max] value=(value_of(&i.name)) required[i.mandatory]
                                    aria-invalid=[errors.map(|_| "true")] aria-describedby=(described);
                            }
                            InputType::Boolean => {
                                select id=(id) name=(i.name) aria-invalid=[errors.map(|_| "true")] aria-describedby=(described) {
                                    @if !i.mandatory { option value="" selected[value_of(&i.name).is_empty()] { "(default)" } }
                                    option value="true" selected[value_of(&i.name) == "true"] { "yes" }
                                    option value="false" selected[value_of(&i.name) == "false"] { "no" }
                                }
                            }
                            InputType::String => {
                                @if let Some(choices) = &i.choices {
                                    select id=(id) name=(i.name) aria-invalid=[errors.map(|_| "true")] aria-describedby=(described) {
                                        @for c in choices {
                                            @let v = c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string());
                                            option value=(v) selected[value_of(&i.name) == v] { (v) }
                                        }
                                    }
                                } @else {
                                    input id=(id) name=(i.name)
                                        type=(if mask::is_secret_name(&i.name) { "password" } else { "text" })
                                        autocomplete="off" value=(value_of(&i.name)) required[i.mandatory]
                                        aria-invalid=[errors.map(|_| "true")] aria-describedby=(described);
                                }
                            }
                        }
                        @for m in errors.into_iter().flatten() {
                            p.error id=(err_id) { (m) }
                        }
                        p.help id=(help_id) { code { (i.name) } " · " (help(i)) }
                    }
                }
            }
            @if form.service.is_none() {
                div.field {
                    label for="in-service" { "Service" }
                    div.control {
                        input #in-service name="service" type="text" value=(value_of("service")) required aria-describedby="help-service";
                        p.help #help-service { "The service the configuration is stored for." }
                    }
                }
            }
            div.buttons {
                button.secondary #preview-button type="submit" formaction={ (action) "/preview" } { "Preview" }
                button #submit-button type="submit" { "Submit: store the configuration" }
            }
        }
        @if let Some((text, service)) = &outcome.preview {
            section.panel aria-labelledby="preview-h" {
                h2 #preview-h { "Preview" @if let Some(s) = service { " of service " (s) } }
                p.help { (text.len()) " bytes; nothing is stored until you submit." }
                // HTML drops a newline right after `<pre>`: this one, so that a text starting
                // with a newline shows (and copies) byte for byte.
                pre #preview { "\n" (text) }
            }
        }
    }
}
