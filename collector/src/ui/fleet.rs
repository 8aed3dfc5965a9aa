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

/// The daily aggregates of the trend window, per node, in memory: the trend of a filtered
/// selection is summed from it (a selection of thousands of nodes would otherwise read tens of
/// thousands of rows per page), and each node's usual interval between runs taken from its
/// last days. Read again when a new day is rolled up (or after [`HISTORY_TTL`]).
pub struct History {
    /// The rolled-up day and window it was read for.
    key: (Option<String>, String),
    /// Per node: (index of the day in the window, ok, nok, na) of its rows (its services'
    /// included).
    days: HashMap<String, Vec<(u16, i64, i64, i64)>>,
    /// Per node: its usual interval between runs, in seconds.
    rates: HashMap<String, f64>,
}

/// How long the history may be kept without checking for a new day.
const HISTORY_TTL: Duration = Duration::from_secs(3600);

fn history(state: &AppState, days: &[String]) -> crate::Result<Arc<History>> {
    let since = days.first().cloned().unwrap_or_default();
    let rolled = state.store.retention_state()?.0;
    let key = (rolled, since.clone());
    if let Some((at, h)) = state.console.history.lock().expect("history lock").as_ref()
        && h.key == key
        && at.elapsed() < HISTORY_TTL
    {
        return Ok(h.clone());
    }
    let index: HashMap<&str, u16> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i as u16))
        .collect();
    let rate_from = days.len().saturating_sub(RATE_DAYS as usize);
    let mut by_node: HashMap<String, Vec<(u16, i64, i64, i64)>> = HashMap::new();
    let mut runs: HashMap<String, (i64, i64)> = HashMap::new();
    for r in state.store.node_days(&since)? {
        let Some(&i) = index.get(r.day.as_str()) else {
            continue;
        };
        if !r.service && usize::from(i) >= rate_from {
            let e = runs.entry(r.node_id.clone()).or_default();
            e.0 += r.runs;
            e.1 += 1;
        }
        by_node
            .entry(r.node_id)
            .or_default()
            .push((i, r.ok, r.nok, r.na));
    }
    let rates = runs
        .into_iter()
        .filter(|(_, (runs, _))| *runs > 0)
        .map(|(id, (runs, days))| (id, 86_400.0 * days as f64 / runs as f64))
        .collect();
    let h = Arc::new(History {
        key,
        days: by_node,
        rates,
    });
    *state.console.history.lock().expect("history lock") = Some((Instant::now(), h.clone()));
    Ok(h)
}

/// Compliance per day of `nodes`, from the history (the same sums as the store's).
fn trend_of(history: &History, days: &[String], nodes: &[FleetNode]) -> Vec<DailyCompliance> {
    let mut per_day = vec![[0i64; 5]; days.len()];
    for n in nodes {
        for (i, ok, nok, na) in history.days.get(&n.node_id).into_iter().flatten() {
            let d = &mut per_day[usize::from(*i)];
            d[0] += 1;
            d[1] += i64::from(*nok == 0);
            d[2] += ok;
            d[3] += nok;
            d[4] += na;
        }
    }
    days.iter()
        .zip(per_day)
        .filter(|(_, d)| d[0] > 0)
        .map(|(day, d)| DailyCompliance {
            day: day.clone(),
            subjects: d[0],
            compliant: d[1],
            ok: d[2],
            nok: d[3],
            na: d[4],
        })
        .collect()
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
    let window = days.clone();
    let read = tokio::task::spawn_blocking(move || -> crate::Result<_> {
        let nodes = st.store.fleet_nodes(&f)?;
        let worst = st.store.worst_modules(&f, 10)?;
        let history = history(&st, &window)?;
        // The whole fleet's trend is kept by the store; a selection's is summed here.
        let trend = if f.is_empty() {
            st.store.fleet_daily(&since, &f)?
        } else {
            trend_of(&history, &window, &nodes)
        };
        Ok((nodes, worst, trend, history))
    })
    .await;
    let (nodes, worst, trend, history) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return layout::api_error(e.into()),
        Err(e) => return layout::internal(e),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let late = late(&nodes, &history.rates, now);
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
    fn a_selections_trend_sums_its_nodes_rows() {
        let days: Vec<String> = vec![
            "2026-01-01".into(),
            "2026-01-02".into(),
            "2026-01-03".into(),
        ];
        let mut h = History {
            key: (None, String::new()),
            days: HashMap::new(),
            rates: HashMap::new(),
        };
        // a: ok then nok; its service: ok on day 2; b: nok on day 1; c: not selected.
        h.days
            .insert("a".into(), vec![(0, 3, 0, 0), (1, 2, 1, 0), (1, 1, 0, 0)]);
        h.days.insert("b".into(), vec![(0, 1, 2, 1)]);
        h.days.insert("c".into(), vec![(0, 9, 9, 9), (2, 9, 0, 0)]);
        let node = |id: &str| FleetNode {
            node_id: id.into(),
            name: id.into(),
            last_seen: None,
            compliance: Default::default(),
        };
        let t = trend_of(&h, &days, &[node("a"), node("b")]);
        assert_eq!(t.len(), 2, "day 3 has no selected row");
        assert_eq!(
            (
                t[0].day.as_str(),
                t[0].subjects,
                t[0].compliant,
                t[0].ok,
                t[0].nok,
                t[0].na
            ),
            ("2026-01-01", 2, 1, 4, 2, 1)
        );
        assert_eq!((t[1].subjects, t[1].compliant, t[1].nok), (2, 1, 1));
    }

    #[test]
    fn store_times_convert_to_epoch_seconds() {
        assert_eq!(epoch("1970-01-01 00:00:00"), Some(0));
        assert_eq!(epoch("2026-11-22 10:00:00"), Some(1_795_341_600));
        assert_eq!(epoch("garbage"), None);
    }
}
