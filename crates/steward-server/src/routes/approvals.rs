//! `/v1/approvals`: list, show, approve, deny, wait, metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use steward_store::approvals::Verdict;
use steward_types::{Approval, ApprovalFilter, ApprovalStats, ApprovalVerdict, Page, WaitQuery};

use crate::approvals::{self, MAX_WAIT_SECS};
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery, ApiResult, OptionalJson};
use crate::state::AppState;

/// The tenant's approvals, oldest first, filtered by status, kind, agent,
/// the group the current step waits for, or risk tier.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalFilter),
    responses((status = 200, body = Page<Approval>), (status = 400, body = steward_types::ErrorBody)))]
pub async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ApprovalFilter>,
) -> ApiResult<Json<Page<Approval>>> {
    Ok(Json(state.store.list_approvals(caller.reader()?, q).await?))
}

/// One approval: the exact request, the chain and who decided what. An
/// agent may read its own.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path, description = "Approval id")),
    responses((status = 200, body = Approval), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(approvals::visible(&state, &caller, &id).await?))
}

/// Approve the current step, as the person the token belongs to (they must
/// hold the step's group role, and may not be the requester or the agent's
/// owner). The last step activates a registration, applies a change, or
/// grants an action once.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", request_body = ApprovalVerdict,
    params(("id" = String, Path, description = "Approval id")),
    responses((status = 200, body = Approval), (status = 403, body = steward_types::ErrorBody), (status = 409, body = steward_types::ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<ApprovalVerdict>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(
        approvals::decide(&state, &caller, &id, Verdict::Approve, req.comment).await?,
    ))
}

/// Deny, with a comment (required). A denied registration rejects the agent.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals", request_body = ApprovalVerdict,
    params(("id" = String, Path, description = "Approval id")),
    responses((status = 200, body = Approval), (status = 400, body = steward_types::ErrorBody), (status = 403, body = steward_types::ErrorBody)))]
pub async fn deny(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<ApprovalVerdict>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(
        approvals::decide(&state, &caller, &id, Verdict::Deny, req.comment).await?,
    ))
}

/// Wait up to `timeout` seconds (at most 30) for the approval to be decided
/// or to expire; answers as soon as it is, or with it still pending. An
/// agent may wait for its own approvals.
#[utoipa::path(get, path = "/v1/approvals/{id}/wait", tag = "approvals", params(("id" = String, Path, description = "Approval id"), WaitQuery),
    responses((status = 200, body = Approval), (status = 404, body = steward_types::ErrorBody)))]
pub async fn wait(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<Approval>> {
    let secs = q.timeout.unwrap_or(10);
    if secs > MAX_WAIT_SECS {
        return Err(ApiError::new(
            steward_types::ErrorCode::InvalidQuery,
            format!("timeout: {secs} is more than {MAX_WAIT_SECS} seconds; wait again instead"),
        ));
    }
    let timeout = Duration::from_secs(u64::from(secs));
    Ok(Json(approvals::wait(&state, &caller, &id, timeout).await?))
}

/// Approved, denied, expired and pending counts and time-to-approval
/// percentiles per risk tier.
#[utoipa::path(get, path = "/v1/approvals/stats", tag = "approvals", responses((status = 200, body = ApprovalStats)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ApprovalStats>> {
    Ok(Json(approvals::stats(&state, caller.reader()?).await?))
}
