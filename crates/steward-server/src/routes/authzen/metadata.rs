//! `GET /.well-known/authzen-configuration`: where this decision point's
//! endpoints are.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};

use super::wire::AuthzenConfiguration;
use crate::state::AppState;

/// The base URL clients reached this server at: `X-Forwarded-Proto` (http or
/// https) and the `Host` header, else the listening address.
fn base_url(headers: &HeaderMap, state: &AppState) -> String {
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map(String::from)
        .unwrap_or_else(|| state.config.listen.to_string());
    format!("{proto}://{host}")
}

/// AuthZEN policy decision point metadata (no credential needed): where the
/// evaluation and search endpoints are, as absolute URLs.
#[utoipa::path(get, path = "/.well-known/authzen-configuration", tag = "authzen",
    security(()),
    responses((status = 200, body = AuthzenConfiguration)))]
pub async fn configuration(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Json<AuthzenConfiguration> {
    let base = base_url(&headers, &state);
    Json(AuthzenConfiguration {
        access_evaluation_endpoint: format!("{base}/access/v1/evaluation"),
        access_evaluations_endpoint: format!("{base}/access/v1/evaluations"),
        search_subject_endpoint: format!("{base}/access/v1/search/subject"),
        search_resource_endpoint: format!("{base}/access/v1/search/resource"),
        search_action_endpoint: format!("{base}/access/v1/search/action"),
        policy_decision_point: base,
    })
}
