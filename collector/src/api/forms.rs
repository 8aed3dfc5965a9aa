//! Forms: render a service configuration from a template and typed inputs (the same
//! `tenet-templates` code as `tenet template render`), store it, serve it to the service's
//! nodes.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tenet_templates::{ErrorKind, FormOptions};

use super::{Admin, ApiError, AppState, Caller, blocking};
use crate::store::{ServiceConfig, now_text};
use tenet_rulesets::names::{self, NameKind};

/// `POST /api/v1/forms/{name}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormRequest {
    /// The form's inputs (an object), checked against its `form.toml`.
    inputs: serde_json::Map<String, serde_json::Value>,
    /// The service to store the configuration for. Forms that name their service (a `service`
    /// key in `form.toml`) derive it from the inputs; giving it too must agree.
    #[serde(default)]
    service: Option<String>,
    /// Apply the defaults of mandatory inputs not given (what a form UI pre-fills).
    #[serde(default)]
    defaults: bool,
}

fn template_error(e: tenet_templates::Error) -> ApiError {
    let status = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::Template | ErrorKind::Io => return ApiError::internal(e),
    };
    ApiError::new(status, e.to_string())
}

/// `GET /api/v1/forms` (admin): the forms and their inputs.
pub async fn list_forms(State(state): State<AppState>, Admin(_): Admin) -> Response {
    let forms: Vec<serde_json::Value> = state
        .templates
        .names()
        .into_iter()
        .filter_map(|n| {
            let info = state.templates.info(&n)?;
            let form = info.form.as_ref()?;
            Some(serde_json::json!({
                "name": n,
                "inputs": form.inputs.iter().map(|i| serde_json::json!({
                    "name": i.name, "type": format!("{:?}", i.kind).to_lowercase(),
                    "mandatory": i.mandatory, "default": i.default, "label": i.label,
                    "min": i.min, "max": i.max, "choices": i.choices,
                })).collect::<Vec<_>>(),
            }))
        })
        .collect();
    Json(forms).into_response()
}

/// `POST /api/v1/forms/{name}` (admin): renders the form and stores the result as the
/// service's configuration. Bad inputs: 400 naming each one; nothing is stored.
pub async fn render_form(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    body: std::result::Result<Json<FormRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let options = FormOptions {
        use_defaults: req.defaults,
    };
    let rendered = state
        .templates
        .render_form(&name, &req.inputs, options)
        .map_err(template_error)?;
    let config = store_rendered(
        &state,
        caller.actor(),
        &name,
        req.inputs,
        rendered,
        req.service,
    )
    .await?;
    let answer = serde_json::json!({
        "service": config.service, "form": name, "sha256": config.sha256,
        "bytes": config.config.len(), "updated_at": config.updated_at,
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Stores a rendered form as its service's configuration: the one path of the API and the
/// web console, so both store the same bytes for the same inputs. The service is the one the
/// inputs name (a form's `service` template) or, for a form that names none, `given`.
pub(crate) async fn store_rendered(
    state: &AppState,
    actor: String,
    name: &str,
    inputs: serde_json::Map<String, serde_json::Value>,
    rendered: tenet_templates::RenderedForm,
    given: Option<String>,
) -> Result<ServiceConfig, ApiError> {
    let service = match (rendered.service, given) {
        (Some(derived), Some(given)) if derived != given => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "service: {given:?} differs from the service the inputs name ({derived:?})"
                ),
            ));
        }
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("service: missing (form {name} does not name its service)"),
            ));
        }
    };
    names::check(NameKind::Service, &service)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("service: {e}")))?;
    let config = ServiceConfig {
        service,
        form: name.to_string(),
        inputs: serde_json::Value::Object(inputs),
        sha256: hex::encode(Sha256::digest(rendered.text.as_bytes())),
        config: rendered.text,
        updated_at: now_text(),
    };
    let store = state.store.clone();
    let stored = config.clone();
    blocking(move || store.put_service_config(&stored, &actor)).await?;
    Ok(config)
}

/// `GET /api/v1/services/{svc}/config`: the configuration text, for an admin or a node an
/// admin assigned the service. `ETag` is its SHA-256.
pub async fn service_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(svc): Path<String>,
) -> Result<Response, ApiError> {
    if let Caller::Node(n) = &caller {
        super::node::check_service(&state, &caller, &n.id, Some(&svc)).await?;
    } else {
        names::check(NameKind::Service, &svc)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    let store = state.store.clone();
    let s = svc.clone();
    let Some(cfg) = blocking(move || store.service_config(&s)).await? else {
        return Err(crate::Error::not_found("service configuration", svc).into());
    };
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        cfg.config,
    )
        .into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", cfg.sha256)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cfg.form) {
        h.insert("x-tenet-form", v);
    }
    if let Ok(v) = HeaderValue::from_str(&cfg.updated_at) {
        h.insert("x-tenet-updated", v);
    }
    Ok(resp)
}
