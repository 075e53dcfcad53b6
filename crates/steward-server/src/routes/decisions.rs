//! `POST /v1/decisions`: may this principal do this action on this resource?

use axum::Json;
use axum::extract::State;
use steward_types::{DecisionRequest, DecisionResponse};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiResult};
use crate::state::AppState;

/// Decide a request. An agent asks about itself with its key; an enforcement
/// point with an admin token names the principal. The answer carries the
/// deciding policies, the delegation chain and, for a denial, what to do.
/// Every decision is in the audit log before it is answered.
#[utoipa::path(post, path = "/v1/decisions", tag = "decisions", request_body = DecisionRequest,
    responses((status = 200, body = DecisionResponse), (status = 400, body = steward_types::ErrorBody)))]
pub async fn create_decision(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> ApiResult<Json<DecisionResponse>> {
    if let Caller::Token { .. } = caller {
        caller.admin()?;
    }
    Ok(Json(crate::decisions::decide(&state, &caller, req).await?))
}
