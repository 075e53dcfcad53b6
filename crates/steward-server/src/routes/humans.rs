//! Humans: the people who own agents. Deactivating one orphans their agents.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_types::{
    CreateHuman, Human, HumanDeactivated, Page, PageQuery, TransitionRequest, UpdateHuman,
};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult, OptionalJson};
use crate::state::AppState;

/// The tenant's humans, by status or team.
#[utoipa::path(get, path = "/v1/humans", tag = "inventory", params(PageQuery), responses((status = 200, body = Page<Human>)))]
pub async fn list_humans(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Human>>> {
    Ok(Json(state.store.list_humans(caller.reader()?, q).await?))
}

/// Create a human.
#[utoipa::path(post, path = "/v1/humans", tag = "inventory", request_body = CreateHuman,
    responses((status = 201, body = Human), (status = 409, body = steward_types::ErrorBody)))]
pub async fn create_human(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateHuman>,
) -> ApiResult<(StatusCode, Json<Human>)> {
    let ctx = caller.admin()?;
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_human(&ctx, req).await?),
    ))
}

/// A human by id or e-mail.
#[utoipa::path(get, path = "/v1/humans/{id}", tag = "inventory", params(("id" = String, Path, description = "Human id or e-mail")),
    responses((status = 200, body = Human), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_human(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Human>> {
    Ok(Json(state.store.get_human(caller.reader()?, &id).await?))
}

/// Change a human's name, teams or roles.
#[utoipa::path(patch, path = "/v1/humans/{id}", tag = "inventory", request_body = UpdateHuman,
    params(("id" = String, Path, description = "Human id or e-mail")), responses((status = 200, body = Human)))]
pub async fn update_human(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateHuman>,
) -> ApiResult<Json<Human>> {
    let ctx = caller.admin()?;
    Ok(Json(state.store.update_human(&ctx, &id, req).await?))
}

/// Deactivate a human (a leaver): their agents are flagged orphaned.
#[utoipa::path(post, path = "/v1/humans/{id}/deactivate", tag = "inventory", request_body = TransitionRequest,
    params(("id" = String, Path, description = "Human id or e-mail")), responses((status = 200, body = HumanDeactivated)))]
pub async fn deactivate_human(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<TransitionRequest>,
) -> ApiResult<Json<HumanDeactivated>> {
    let ctx = caller.admin()?;
    let done = state.store.deactivate_human(&ctx, &id, req.reason).await?;
    if !done.revoked_tokens.is_empty() {
        // Revoked tokens stop at once on this node (other nodes' caches
        // expire within seconds, as for any revocation).
        state.tokens.clear();
    }
    // Their delegated tokens were revoked with them: gateway sessions
    // opened with one end now, event streams included.
    state.mcp.close_unauthenticated(&state.store).await;
    Ok(Json(done))
}

/// Reactivate a human: their agents are no longer orphaned.
#[utoipa::path(post, path = "/v1/humans/{id}/reactivate", tag = "inventory", request_body = TransitionRequest,
    params(("id" = String, Path, description = "Human id or e-mail")), responses((status = 200, body = Human)))]
pub async fn reactivate_human(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<TransitionRequest>,
) -> ApiResult<Json<Human>> {
    let ctx = caller.admin()?;
    Ok(Json(
        state
            .store
            .reactivate_human(&ctx, &id, req.reason)
            .await?
            .human,
    ))
}
