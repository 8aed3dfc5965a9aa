//! The releases page (`GET /ui/releases`): per version, each node's state, step, percent and
//! last error, as the nodes reported them (`tenet release status`).

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::layout::{self, badge, node_link, or_dash};
use super::mask;
use super::session::Session;
use crate::api::AppState;
use crate::store::ReleaseRow;

/// `GET /ui/releases`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let store = state.store.clone();
    let rows = match tokio::task::spawn_blocking(move || store.release_statuses(None, None)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return layout::api_error(e.into()),
        Err(e) => return layout::internal(e),
    };
    let mut by_version: BTreeMap<&str, Vec<ReleaseRow>> = BTreeMap::new();
    for r in &rows {
        by_version
            .entry(r.version.as_str())
            .or_default()
            .push(r.clone());
    }
    let versions: Vec<(&str, BTreeMap<&str, usize>, &Vec<ReleaseRow>)> = by_version
        .iter()
        .rev()
        .map(|(v, nodes)| {
            let mut states: BTreeMap<&str, usize> = BTreeMap::new();
            for r in nodes {
                *states.entry(r.state.as_str()).or_default() += 1;
            }
            (*v, states, nodes)
        })
        .collect();
    let body = html! {
        @if rows.is_empty() {
            p { "No node reported a release yet." }
        }
        @for (version, states, nodes) in &versions {
            section.panel aria-labelledby={ "v-" (version) } {
                h2 id={ "v-" (version) } { "Version " (version) }
                p {
                    @for (i, (s, n)) in states.iter().enumerate() {
                        @if i > 0 { ", " }
                        (n) " " (badge(s))
                    }
                }
                (table(nodes, true))
            }
        }
    };
    layout::page(&session, "Releases", "Releases", body)
}

/// A table of release statuses (with the node column, or the version one on a node's page).
pub fn table(rows: &[ReleaseRow], by_node: bool) -> Markup {
    html! {
        table.releases {
            thead {
                tr {
                    @if by_node { th scope="col" { "Node" } } @else { th scope="col" { "Version" } }
                    th scope="col" { "State" } th scope="col" { "Operation" } th scope="col" { "Step" }
                    th scope="col" { "Progress" } th scope="col" { "Message" } th scope="col" { "Last error" }
                    th scope="col" { "Updated" }
                }
            }
            tbody {
                @for r in rows {
                    @let doc = &r.doc;
                    @let percent = doc["percent"].as_u64();
                    tr {
                        @if by_node { td { (node_link(&r.node)) } } @else { td { (r.version) } }
                        td { (badge(&r.state)) }
                        td { (or_dash(doc["operation"].as_str())) }
                        td { (or_dash(doc["step"].as_str())) }
                        td {
                            @if let Some(p) = percent {
                                progress max="100" value=(p) aria-label={ (p) "%" } {} " " (p) "%"
                            } @else { "—" }
                        }
                        td { (mask::text(or_dash(doc["message"].as_str()))) }
                        td { (mask::text(or_dash(doc["last_error"].as_str()))) }
                        td { (or_dash(doc["updated_at"].as_str().or(Some(&r.received_at)))) }
                    }
                }
            }
        }
    }
}
