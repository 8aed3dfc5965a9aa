//! The web console: `/ui/` pages served by `tenet-collector serve` itself (documented for
//! users in `docs/console.md`).
//!
//! Server-rendered HTML from maud templates (checked and escaped at compile time), one
//! stylesheet and one small script (`static/`, embedded in the binary: no build step besides
//! `cargo build`). Every page reads with JavaScript off; the script only makes the action list
//! follow statuses without a reload. Charts are SVG drawn here.
//!
//! Must not: read the database other than through [`crate::store::Store`] (and the API's
//! shared parts: the policy resolver, the form renderer, the action notifier); let a request
//! that changes anything through without an admin session and its CSRF token ([`session::guard`]
//! decides that before any handler runs); put a token in a URL or a page; show a secret value
//! ([`mask`]).

mod actions;
mod assets;
mod chart;
mod fleet;
mod forms;
mod layout;
pub mod mask;
mod node;
mod policy;
mod releases;
pub mod session;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

pub use fleet::parse_filter;
pub use session::{Console, ConsoleOptions};

use crate::api::AppState;

/// The console's routes (full paths under `/ui`), behind [`session::guard`].
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(fleet::page))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/nodes/{node}", get(node::page))
        .route("/ui/policy", get(policy::index))
        .route("/ui/modules/{module}", get(policy::module_page))
        .route("/ui/rulesets/{name}", get(policy::ruleset_page))
        .route("/ui/audit", get(policy::audit_page))
        .route("/ui/forms", get(forms::list))
        .route("/ui/forms/{name}", get(forms::page).post(forms::submit))
        .route("/ui/forms/{name}/preview", post(forms::preview))
        .route("/ui/actions", get(actions::page).post(actions::queue))
        .route("/ui/actions/live", get(actions::live))
        .route("/ui/actions/{id}", get(actions::show))
        .route("/ui/actions/{id}/cancel", post(actions::cancel))
        .route("/ui/releases", get(releases::page))
        .route("/ui/static/console.css", get(assets::css))
        .route("/ui/static/console.js", get(assets::js))
        .route_layer(axum::middleware::from_fn_with_state(state, session::guard))
}
