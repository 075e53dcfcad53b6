//! Prometheus metrics: requests, latencies and errors by code, served at
//! `/metrics`. One process-wide registry.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use steward_types::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    event: String,
    kind: String,
    risk_tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    kind: String,
    risk_tier: String,
}

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    approvals: Family<ApprovalLabels, Counter>,
    time_to_approval: Family<TierLabels, Histogram>,
}

fn approval_histogram() -> Histogram {
    Histogram::new([
        10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
    ])
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
    ])
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("steward");
    let requests = Family::<RequestLabels, Counter>::default();
    let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
        latency_histogram as fn() -> Histogram,
    );
    let errors = Family::<ErrorLabels, Counter>::default();
    registry.register(
        "http_requests",
        "HTTP requests by method, route and status",
        requests.clone(),
    );
    registry.register(
        "http_request_duration_seconds",
        "HTTP request latency by route",
        latency.clone(),
    );
    registry.register(
        "errors",
        "Error responses by stable error code",
        errors.clone(),
    );
    let approvals = Family::<ApprovalLabels, Counter>::default();
    let time_to_approval = Family::<TierLabels, Histogram>::new_with_constructor(
        approval_histogram as fn() -> Histogram,
    );
    registry.register(
        "approvals",
        "Approval events (requested, approved, denied, expired, used) by kind and risk tier",
        approvals.clone(),
    );
    registry.register(
        "approval_time_to_approval_seconds",
        "Seconds from an approval request to its final approval, by kind and risk tier",
        time_to_approval.clone(),
    );
    Metrics {
        registry,
        requests,
        latency,
        errors,
        approvals,
        time_to_approval,
    }
});

/// Count an error response by its code.
pub fn record_error(code: ErrorCode) {
    METRICS
        .errors
        .get_or_create(&ErrorLabels {
            code: code.as_str().into(),
        })
        .inc();
}

/// Count an approval event (`approval.requested`, `approval.approved`, ...)
/// and, for a final approval, observe its time to approval.
pub fn record_approval(event: &str, a: &steward_types::Approval) {
    let kind = a.kind.as_str().to_string();
    let risk_tier = a.risk_tier.as_str().to_string();
    METRICS
        .approvals
        .get_or_create(&ApprovalLabels {
            event: event.trim_start_matches("approval.").into(),
            kind: kind.clone(),
            risk_tier: risk_tier.clone(),
        })
        .inc();
    if event == "approval.approved"
        && let Some(decided) = a.decided_at
    {
        let secs = (decided - a.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        METRICS
            .time_to_approval
            .get_or_create(&TierLabels { kind, risk_tier })
            .observe(secs);
    }
}

/// A request method as a label: the standard ones by name, any other as
/// `OTHER`, so a client inventing methods cannot grow the series without
/// bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("OTHER", |(_, name)| name)
}

/// Middleware: count and time every request by its route template.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method()).to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let labels = RouteLabels {
        method: method.clone(),
        route: route.clone(),
    };
    METRICS
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    METRICS
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render() -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &METRICS.registry).is_err() {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed",
        )
            .into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::method_label;
    use axum::http::Method;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for m in ["M1", "FOO", "get"] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "OTHER", "{m}");
        }
    }
}
