//! `/metrics` in the Prometheus text format: request counts by route, method and status,
//! latency histograms by route, and store gauges (nodes, nok modules, cached policies).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, blocking};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request counters and latency histograms.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    fn observe(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
        {
            let mut requests = self.requests.lock().expect("metrics");
            let key = (route.to_string(), method, status);
            match requests.get_mut(&key) {
                Some(n) => *n += 1,
                None => {
                    requests.insert(key, 1);
                }
            }
        }
        let mut latency = self.latency.lock().expect("metrics");
        if !latency.contains_key(route) {
            latency.insert(route.to_string(), Histogram::default());
        }
        let h = latency.get_mut(route).expect("inserted above");
        h.count += 1;
        h.sum += seconds;
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.buckets[i] += 1;
            }
        }
    }
}

/// Middleware recording every request under its route template (`/api/v1/nodes/{node}/policy`),
/// never under the concrete path, and its method as one of nine standard ones or `other`: the
/// label set is bounded by the routes, whatever clients send.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    state.metrics.observe(
        &route,
        method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// The method label: a standard method, else `other` (a client may invent any number of
/// methods; each label combination is kept for the life of the process).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let gauges = blocking(move || store.gauges()).await;
    let mut out = String::new();
    out.push_str("# HELP tenet_http_requests_total HTTP requests by route, method and status.\n");
    out.push_str("# TYPE tenet_http_requests_total counter\n");
    for ((route, method, status), n) in state.metrics.requests.lock().expect("metrics").iter() {
        let _ = writeln!(
            out,
            "tenet_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
            escape(route)
        );
    }
    out.push_str("# HELP tenet_http_request_duration_seconds HTTP request latency by route.\n");
    out.push_str("# TYPE tenet_http_request_duration_seconds histogram\n");
    for (route, h) in state.metrics.latency.lock().expect("metrics").iter() {
        let r = escape(route);
        for (le, n) in BUCKETS.iter().zip(h.buckets.iter()) {
            let _ = writeln!(
                out,
                "tenet_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "tenet_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "tenet_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "tenet_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
            h.count
        );
    }
    match gauges {
        Ok(g) => {
            out.push_str("# HELP tenet_nodes Registered nodes.\n# TYPE tenet_nodes gauge\n");
            let _ = writeln!(out, "tenet_nodes {}", g.nodes);
            out.push_str(
                "# HELP tenet_modules_nok Latest module statuses that are nok.\n# TYPE tenet_modules_nok gauge\n",
            );
            let _ = writeln!(out, "tenet_modules_nok {}", g.modules_nok);
        }
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e:?}\n")).into_response();
        }
    }
    out.push_str(
        "# HELP tenet_policy_cache_entries Resolved policies cached.\n# TYPE tenet_policy_cache_entries gauge\n",
    );
    let _ = writeln!(
        out,
        "tenet_policy_cache_entries {}",
        state.policies.cached()
    );
    out.push_str(
        "# HELP tenet_policy_cache_bytes Bytes held by the policy cache.\n# TYPE tenet_policy_cache_bytes gauge\n",
    );
    let _ = writeln!(out, "tenet_policy_cache_bytes {}", state.policies.bytes());
    out.push_str(
        "# HELP tenet_auth_failure_addresses Source addresses with recent failed authentications.\n# TYPE tenet_auth_failure_addresses gauge\n",
    );
    let _ = writeln!(
        out,
        "tenet_auth_failure_addresses {}",
        state.throttle.tracked()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..1000 {
            let method = axum::http::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
            m.observe("unmatched", method_label(&method), 405, 0.001);
        }
        m.observe(
            "unmatched",
            method_label(&axum::http::Method::GET),
            404,
            0.001,
        );
        let requests = m.requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[&("unmatched".to_string(), "other", 405)], 1000);
    }
}
