//! `POST /v1/decisions`: may this principal do this action on this resource?
//! `POST /v1/decisions/{id}/outcome`: what it actually used.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use steward_core::Error;
use steward_types::{DecisionRequest, DecisionResponse, Outcome, Settlement};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::state::AppState;

/// Decide a request. An agent asks about itself with its key; an enforcement
/// point with an admin token names the principal. The answer carries the
/// deciding policies, the delegation chain, the tightest quota (also as
/// `RateLimit` headers) and, for a denial, what to do. Every decision is in
/// the audit log before it is answered.
#[utoipa::path(post, path = "/v1/decisions", tag = "decisions", request_body = DecisionRequest,
    responses((status = 200, body = DecisionResponse), (status = 400, body = steward_types::ErrorBody)))]
pub async fn create_decision(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> ApiResult<(HeaderMap, Json<DecisionResponse>)> {
    caller.decider()?;
    let response = crate::decisions::decide(&state, &caller, req).await?;
    let headers = response
        .quota
        .as_ref()
        .map(|q| crate::quotas::headers(q, chrono::Utc::now()))
        .unwrap_or_default();
    Ok((headers, Json(response)))
}

/// Report what an allowed decision actually used (tokens, cost, records,
/// bytes) and whether the action succeeded; its quota reservation settles
/// at these figures. Unreported reservations settle at their estimates
/// after `quota_settle_secs`. An agent reports only its own decisions.
#[utoipa::path(post, path = "/v1/decisions/{id}/outcome", tag = "decisions", request_body = Outcome,
    params(("id" = String, Path, description = "The decision id")),
    responses((status = 200, body = Settlement), (status = 404, body = steward_types::ErrorBody),
        (status = 409, body = steward_types::ErrorBody)))]
pub async fn report_outcome(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(outcome): ApiJson<Outcome>,
) -> ApiResult<Json<Settlement>> {
    let (ctx, principal) = match &caller {
        Caller::Token { .. } => {
            caller.decider()?;
            (caller.context(), None)
        }
        Caller::Agent { agent, .. } => (caller.context(), Some(agent.id.clone())),
    };
    if let Some(s) = outcome
        .status
        .as_deref()
        .filter(|s| !matches!(*s, "success" | "error"))
    {
        return Err(ApiError(Error::invalid(
            "status",
            format!("'{s}' is not success or error"),
        )));
    }
    Ok(Json(
        state
            .store
            .settle(&ctx, &id, principal.as_deref(), &outcome)
            .await?,
    ))
}
