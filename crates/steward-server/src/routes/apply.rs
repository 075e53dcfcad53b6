//! `POST /v1/apply`: governance as code.

use axum::Json;
use axum::extract::State;
use steward_types::{ApplyRequest, ApplyResponse};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiResult};
use crate::state::AppState;

/// Bring the tenant to a declared state in one transaction; with `dry_run`,
/// validate everything and answer the plan without changing anything.
#[utoipa::path(post, path = "/v1/apply", tag = "policies", request_body = ApplyRequest,
    responses((status = 200, body = ApplyResponse), (status = 400, body = steward_types::ErrorBody)))]
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ApplyRequest>,
) -> ApiResult<Json<ApplyResponse>> {
    let ctx = caller.admin()?;
    let may_run = crate::routes::mcp_servers::may_run_commands(&state, &caller);
    Ok(Json(crate::apply::apply(&state, &ctx, may_run, req).await?))
}
