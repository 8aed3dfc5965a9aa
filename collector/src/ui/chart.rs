//! Charts drawn on the server as SVG (no script, no image files): the compliant share per day,
//! and a node's run history as a grid of module statuses. Each chart carries a text
//! alternative (`role="img"` with a label, `<title>` per point) and the page gives the same
//! figures as a table.

use maud::{Markup, html};

use crate::store::{DailyCompliance, RunModules};

/// Days of the trend chart.
pub const TREND_DAYS: i64 = 30;

const W: f64 = 640.0;
const H: f64 = 180.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Compliant share per day over `days` (oldest first), for the days `[first, last]`: a line
/// through the days that have data, a gap where a day has none.
pub fn trend(days: &[String], rows: &[DailyCompliance], label: &str) -> Markup {
    let n = days.len().max(2) as f64;
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1.0);
    let y = |share: f64| TOP + (H - TOP - BOTTOM) * (1.0 - share);
    let by_day: std::collections::HashMap<&str, &DailyCompliance> =
        rows.iter().map(|r| (r.day.as_str(), r)).collect();
    // Runs of consecutive days with data, each one polyline.
    let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut points: Vec<(f64, f64, String)> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for (i, day) in days.iter().enumerate() {
        match by_day.get(day.as_str()).filter(|r| r.subjects > 0) {
            Some(r) => {
                let share = r.compliant as f64 / r.subjects as f64;
                let p = (x(i), y(share));
                current.push(p);
                points.push((
                    p.0,
                    p.1,
                    format!(
                        "{day}: {:.1}% compliant ({} of {})",
                        share * 100.0,
                        r.compliant,
                        r.subjects
                    ),
                ));
            }
            None => {
                if !current.is_empty() {
                    segments.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    let poly = |s: &Vec<(f64, f64)>| {
        s.iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg.chart #trend-chart viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(label)
            xmlns="http://www.w3.org/2000/svg" {
            title { (label) }
            @for pct in [0.0f64, 0.25, 0.5, 0.75, 1.0] {
                line.grid x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", y(pct))) y2=(format!("{:.1}", y(pct))) {}
                text.axis x=(LEFT - 6.0) y=(format!("{:.1}", y(pct) + 4.0)) text-anchor="end" {
                    (format!("{:.0}%", pct * 100.0))
                }
            }
            @if let (Some(first), Some(last)) = (days.first(), days.last()) {
                text.axis x=(LEFT) y=(H - 8.0) { (first) }
                text.axis x=(W - RIGHT) y=(H - 8.0) text-anchor="end" { (last) }
            }
            @for s in &segments {
                polyline.line points=(poly(s)) {}
            }
            @for (px, py, t) in &points {
                circle.point cx=(format!("{px:.1}")) cy=(format!("{py:.1}")) r="3" {
                    title { (t) }
                }
            }
            @if points.is_empty() {
                text.empty x=(W / 2.0) y=(H / 2.0) text-anchor="middle" {
                    "No day rolled up yet: the trend starts the day after the first runs."
                }
            }
        }
    }
}

/// A node's runs (oldest left) by module (rows): each cell one module's status in one run.
pub fn timeline(history: &[RunModules]) -> Markup {
    let mut modules: Vec<&str> = Vec::new();
    for r in history.iter().rev() {
        for (m, _) in &r.modules {
            if !modules.contains(&m.as_str()) {
                modules.push(m);
            }
        }
    }
    let cell = 14.0;
    let label_w = 190.0;
    let width = label_w + cell * history.len().max(1) as f64 + 8.0;
    let height = cell * modules.len().max(1) as f64 + 24.0;
    let runs: Vec<&RunModules> = history.iter().rev().collect();
    html! {
        svg.timeline #timeline viewBox={ "0 0 " (width) " " (height) } role="img"
            aria-label={ "Status of each module in the last " (runs.len()) " runs, oldest first" }
            xmlns="http://www.w3.org/2000/svg" {
            @for (row, m) in modules.iter().enumerate() {
                text.axis x=(label_w - 6.0) y=(format!("{:.1}", row as f64 * cell + cell - 3.0)) text-anchor="end" { (m) }
                @for (col, r) in runs.iter().enumerate() {
                    @let status = r.modules.iter().find(|(name, _)| name == m).map(|(_, s)| s.as_str());
                    @let class = match status { Some("ok") => "cell ok", Some("nok") => "cell nok", Some(_) => "cell na", None => "cell none" };
                    rect class=(class) x=(format!("{:.1}", label_w + col as f64 * cell)) y=(format!("{:.1}", row as f64 * cell))
                        width=(cell - 2.0) height=(cell - 2.0) {
                        title { (r.run.received_at) " " (r.run.action.as_str()) ": " (m) " " (status.unwrap_or("not run")) }
                    }
                }
            }
            @if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
                text.axis x=(label_w) y=(height - 6.0) { (first.run.received_at) }
                text.axis x=(width - 4.0) y=(height - 6.0) text-anchor="end" { (last.run.received_at) }
            }
        }
    }
}

/// The `days` days ending yesterday (UTC: the last day rolled up), oldest first, as
/// `YYYY-MM-DD`.
pub fn last_days(days: i64) -> Vec<String> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    let today = time::OffsetDateTime::now_utc().date();
    (1..=days)
        .rev()
        .map(|back| {
            (today - time::Duration::days(back))
                .format(&f)
                .unwrap_or_default()
        })
        .collect()
}
