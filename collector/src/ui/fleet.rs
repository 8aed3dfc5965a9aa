//! The fleet page (`GET /ui/?q=FILTER&page=N`): counts of nodes and module statuses, the
//! compliant share, the 30-day trend, the worst modules, the nodes late on their usual
//! schedule, and the nodes, a page at a time. The filter narrows every panel.
//!
//! Filter syntax (words separated by blanks, all of them must hold): `name:TEXT` (or a bare
//! word: node names containing it), `FIELD=VALUE` (a fact of the node), `module:NAME` (nodes
//! with a status of that module), `status:ok|nok|n/a`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::chart;
use super::layout::{self, badge, enc, module_link, node_link};
use super::session::Session;
use crate::api::AppState;
use crate::store::{DailyCompliance, FleetFilter, FleetNode, ModuleCount, NodeState};

/// Nodes per page.
pub const PAGE_SIZE: usize = 50;
/// Days of history a node's usual interval between runs is taken from.
const RATE_DAYS: i64 = 7;
/// A node's usual interval when it has no history yet.
const DEFAULT_INTERVAL: f64 = 86_400.0;
/// How long the usual intervals are kept before being read again (they change once a day,
/// when a day is rolled up).
const RATES_TTL: Duration = Duration::from_secs(600);
/// Late nodes listed (the count covers them all).
const LATE_SHOWN: usize = 20;

/// Query of the fleet page.
#[derive(Debug, Default, Deserialize)]
pub struct FleetQuery {
    /// The filter.
    #[serde(default)]
    pub q: Option<String>,
    /// The page of nodes, from 1.
    #[serde(default)]
    pub page: Option<usize>,
}

/// Parses the filter box.
pub fn parse_filter(q: &str) -> Result<FleetFilter, String> {
    let mut f = FleetFilter::default();
    for word in q.split_whitespace() {
        if let Some((field, value)) = word.split_once('=') {
            if field.is_empty() {
                return Err(format!("{word:?}: a fact filter is FIELD=VALUE"));
            }
            f.facts.push((field.to_string(), value.to_string()));
            continue;
        }
        let (key, value) = match word.split_once(':') {
            Some((k, v)) => (k, v),
            None => ("name", word),
        };
        if value.is_empty() {
            return Err(format!("{word:?}: give a value after {key}:"));
        }
        let slot = match key {
            "name" => &mut f.name,
            "module" => &mut f.module,
            "status" => {
                if f.state.is_some() {
                    return Err("status: given twice".into());
                }
                f.state = Some(match value {
                    "ok" => NodeState::Ok,
                    "nok" => NodeState::Nok,
                    "n/a" | "na" => NodeState::Na,
                    other => {
                        return Err(format!(
                            "status:{other}: use status:ok, status:nok or status:n/a"
                        ));
                    }
                });
                continue;
            }
            other => {
                return Err(format!(
                    "{other}: unknown filter (use name:, module:, status: or FIELD=VALUE)"
                ));
            }
        };
        if slot.replace(value.to_string()).is_some() {
            return Err(format!("{key}: given twice"));
        }
    }
    Ok(f)
}

/// Seconds since the epoch of a store time (`YYYY-MM-DD HH:MM:SS`, UTC).
pub fn epoch(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (proleptic Gregorian).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// "3 h 20 min", "2 d 4 h", "45 s".
pub fn human(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Each node's usual interval between runs, in seconds, from the last days' aggregates
/// (cached: they change once a day).
fn rates(state: &AppState) -> crate::Result<Arc<HashMap<String, f64>>> {
    if let Some((at, r)) = state.console.rates.lock().expect("rates lock").as_ref()
        && at.elapsed() < RATES_TTL
    {
        return Ok(r.clone());
    }
    let since = chart::last_days(RATE_DAYS)
        .into_iter()
        .next()
        .unwrap_or_default();
    let map: HashMap<String, f64> = state
        .store
        .run_rates(&since)?
        .into_iter()
        .filter(|r| r.runs > 0)
        .map(|r| (r.node_id, 86_400.0 * r.days as f64 / r.runs as f64))
        .collect();
    let map = Arc::new(map);
    *state.console.rates.lock().expect("rates lock") = Some((Instant::now(), map.clone()));
    Ok(map)
}

/// A node late on its schedule: not seen for longer than twice its usual interval (and ten
/// minutes), or never.
pub struct Late<'a> {
    node: &'a FleetNode,
    /// Seconds since it was last seen (`None`: never).
    since: Option<f64>,
    interval: f64,
}

fn late<'a>(nodes: &'a [FleetNode], rates: &HashMap<String, f64>, now: i64) -> Vec<Late<'a>> {
    let mut out: Vec<Late<'a>> = nodes
        .iter()
        .filter_map(|n| {
            let interval = rates.get(&n.node_id).copied().unwrap_or(DEFAULT_INTERVAL);
            match n.last_seen.as_deref().and_then(epoch) {
                None => Some(Late {
                    node: n,
                    since: None,
                    interval,
                }),
                Some(t) => {
                    let since = (now - t) as f64;
                    (since > 2.0 * interval + 600.0).then_some(Late {
                        node: n,
                        since: Some(since),
                        interval,
                    })
                }
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.since
            .unwrap_or(f64::MAX)
            .total_cmp(&a.since.unwrap_or(f64::MAX))
            .then_with(|| a.node.name.cmp(&b.node.name))
    });
    out
}

/// Counts over the nodes: (nodes ok, nok, n/a; module statuses ok, nok, n/a).
fn counts(nodes: &[FleetNode]) -> ([usize; 3], [usize; 3]) {
    let mut n = [0; 3];
    let mut m = [0; 3];
    for node in nodes {
        match NodeState::of(&node.compliance) {
            NodeState::Ok => n[0] += 1,
            NodeState::Nok => n[1] += 1,
            NodeState::Na => n[2] += 1,
        }
        m[0] += node.compliance.ok;
        m[1] += node.compliance.nok;
        m[2] += node.compliance.na;
    }
    (n, m)
}

/// `GET /ui/`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<FleetQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let text = q.q.clone().unwrap_or_default();
    let filter = match parse_filter(&text) {
        Ok(f) => f,
        Err(problem) => {
            let body = html! { (filter_form(&text, Some(&problem))) };
            return layout::page_with_status(
                StatusCode::BAD_REQUEST,
                &session,
                "Fleet",
                "Fleet",
                body,
            );
        }
    };
    let days = chart::last_days(chart::TREND_DAYS);
    let since = days.first().cloned().unwrap_or_default();
    let st = state.clone();
    let f = filter.clone();
    let read = tokio::task::spawn_blocking(move || -> crate::Result<_> {
        let nodes = st.store.fleet_nodes(&f)?;
        let worst = st.store.worst_modules(&f, 10)?;
        let trend = st.store.fleet_daily(&since, &f)?;
        let rates = rates(&st)?;
        Ok((nodes, worst, trend, rates))
    })
    .await;
    let (nodes, worst, trend, rates) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return layout::api_error(e.into()),
        Err(e) => return layout::internal(e),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let late = late(&nodes, &rates, now);
    let pages = nodes.len().div_ceil(PAGE_SIZE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let shown =
        &nodes[((page - 1) * PAGE_SIZE).min(nodes.len())..(page * PAGE_SIZE).min(nodes.len())];
    let body = html! {
        (filter_form(&text, None))
        (summary(&nodes))
        (trend_panel(&days, &trend, filter.is_empty()))
        div.columns {
            (worst_panel(&worst))
            (late_panel(&late))
        }
        (nodes_panel(shown, nodes.len(), page, pages, &text))
    };
    layout::page(&session, "Fleet", "Fleet", body)
}

fn filter_form(text: &str, problem: Option<&str>) -> Markup {
    html! {
        form.filter method="get" action="/ui/" role="search" {
            label for="q" { "Filter" }
            input #q type="search" name="q" value=(text) aria-describedby="q-help"
                placeholder="name:web os_name=Linux module:spdc.kernel status:nok";
            button type="submit" { "Apply" }
            @if !text.is_empty() { a href="/ui/" { "Clear" } }
            @if let Some(p) = problem {
                p.error #q-error role="alert" { (p) }
            }
            p.help #q-help {
                "Words, all of which must hold: " code { "name:TEXT" } " (or a bare word), "
                code { "FIELD=VALUE" } " (a fact), " code { "module:NAME" } ", "
                code { "status:ok|nok|n/a" } "."
            }
        }
    }
}

fn summary(nodes: &[FleetNode]) -> Markup {
    let (n, m) = counts(nodes);
    let share = if nodes.is_empty() {
        0.0
    } else {
        n[0] as f64 / nodes.len() as f64 * 100.0
    };
    html! {
        section.panel aria-labelledby="summary-h" {
            h2 #summary-h { "Compliance" }
            div.tiles {
                div.tile { span.big #nodes-total { (nodes.len()) } span { "nodes" } }
                div.tile.ok { span.big #nodes-ok { (n[0]) } span { "compliant (ok)" } }
                div.tile.nok { span.big #nodes-nok { (n[1]) } span { "not compliant (nok)" } }
                div.tile.na { span.big #nodes-na { (n[2]) } span { "n/a" } }
                div.tile { span.big #share { (format!("{share:.1}%")) } span { "compliant share" } }
            }
            p.modules {
                "Module statuses: "
                span #modules-ok { (m[0]) } " ok, "
                span #modules-nok { (m[1]) } " nok, "
                span #modules-na { (m[2]) } " n/a."
            }
        }
    }
}

fn trend_panel(days: &[String], rows: &[DailyCompliance], whole_fleet: bool) -> Markup {
    let label = format!(
        "Compliant share per day over the last {} days{}",
        days.len(),
        if whole_fleet { "" } else { ", filtered nodes" }
    );
    html! {
        section.panel aria-labelledby="trend-h" {
            h2 #trend-h { "Trend" }
            (chart::trend(days, rows, &label))
            details {
                summary { "The figures" }
                table.compact #trend-table {
                    thead { tr { th scope="col" { "Day" } th scope="col" { "Nodes" } th scope="col" { "Compliant" } th scope="col" { "Share" } } }
                    tbody {
                        @for r in rows {
                            tr {
                                td { (r.day) } td { (r.subjects) } td { (r.compliant) }
                                td { (format!("{:.1}%", if r.subjects > 0 { r.compliant as f64 * 100.0 / r.subjects as f64 } else { 0.0 })) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn worst_panel(worst: &[ModuleCount]) -> Markup {
    html! {
        section.panel aria-labelledby="worst-h" {
            h2 #worst-h { "Worst modules" }
            @if worst.is_empty() {
                p { "No module is nok." }
            } @else {
                table #worst {
                    thead { tr { th scope="col" { "Module" } th scope="col" { "nok" } th scope="col" { "of" } } }
                    tbody {
                        @for w in worst {
                            tr {
                                td { (module_link(&w.module)) } td.num { (w.nok) }
                                td.num { @match w.total { Some(t) => (t), None => "—" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn late_panel(late: &[Late<'_>]) -> Markup {
    html! {
        section.panel aria-labelledby="late-h" {
            h2 #late-h { "Late nodes " span.count #late-count { "(" (late.len()) ")" } }
            p.help { "Not seen for more than twice their usual interval between runs (from the last "
                (RATE_DAYS) " days; a day for a node with no history)." }
            @if late.is_empty() {
                p { "Every node reported on time." }
            } @else {
                table #late {
                    thead { tr { th scope="col" { "Node" } th scope="col" { "Last seen" } th scope="col" { "Usual interval" } } }
                    tbody {
                        @for l in late.iter().take(LATE_SHOWN) {
                            tr {
                                td { (node_link(&l.node.name)) }
                                td { @match l.since { Some(s) => { (human(s)) " ago" }, None => "never" } }
                                td { (human(l.interval)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn nodes_panel(shown: &[FleetNode], total: usize, page: usize, pages: usize, q: &str) -> Markup {
    let link = |p: usize| {
        if q.is_empty() {
            format!("/ui/?page={p}")
        } else {
            format!("/ui/?q={}&page={p}", enc(q))
        }
    };
    html! {
        section.panel aria-labelledby="nodes-h" {
            h2 #nodes-h { "Nodes" }
            table #nodes {
                thead {
                    tr {
                        th scope="col" { "Node" } th scope="col" { "State" }
                        th scope="col" { "ok" } th scope="col" { "nok" } th scope="col" { "n/a" }
                        th scope="col" { "Last seen" }
                    }
                }
                tbody {
                    @for n in shown {
                        tr {
                            td { (node_link(&n.name)) }
                            td { (badge(NodeState::of(&n.compliance).as_str())) }
                            td.num { (n.compliance.ok) } td.num { (n.compliance.nok) } td.num { (n.compliance.na) }
                            td { (layout::or_dash(n.last_seen.as_deref())) }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages of nodes" {
                @if page > 1 { a rel="prev" href=(link(page - 1)) { "← Previous" } }
                span #page-info { "Page " (page) " of " (pages) " (" (total) " nodes)" }
                @if page < pages { a rel="next" href=(link(page + 1)) { "Next →" } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_ones_say_why() {
        let f = parse_filter("web os_name=Linux module:spdc.kernel status:nok").unwrap();
        assert_eq!(f.name.as_deref(), Some("web"));
        assert_eq!(f.facts, vec![("os_name".into(), "Linux".into())]);
        assert_eq!(f.module.as_deref(), Some("spdc.kernel"));
        assert_eq!(f.state, Some(NodeState::Nok));
        assert!(parse_filter("").unwrap().is_empty());
        assert!(
            parse_filter("status:bad")
                .unwrap_err()
                .contains("status:nok")
        );
        assert!(
            parse_filter("colour:red")
                .unwrap_err()
                .contains("unknown filter")
        );
        assert!(parse_filter("a b").unwrap_err().contains("twice"));
    }

    #[test]
    fn store_times_convert_to_epoch_seconds() {
        assert_eq!(epoch("1970-01-01 00:00:00"), Some(0));
        assert_eq!(epoch("2026-11-22 10:00:00"), Some(1_795_341_600));
        assert_eq!(epoch("garbage"), None);
    }
}
