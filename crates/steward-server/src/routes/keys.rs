//! Agent API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_types::{ApiKey, CreateKey, CreatedKey, Page, PageQuery};

use crate::auth::Caller;
use crate::error::{ApiQuery, ApiResult, OptionalJson};
use crate::state::AppState;

/// An agent's keys (metadata only, never the secret).
#[utoipa::path(get, path = "/v1/agents/{id}/keys", tag = "agents", params(("id" = String, Path, description = "Agent id or name"), PageQuery),
    responses((status = 200, body = Page<ApiKey>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<ApiKey>>> {
    Ok(Json(state.store.list_keys(caller.reader()?, &id, q).await?))
}

/// Create a key for an agent; the secret is in this response only.
#[utoipa::path(post, path = "/v1/agents/{id}/keys", tag = "agents", request_body = CreateKey,
    params(("id" = String, Path, description = "Agent id or name")), responses((status = 201, body = CreatedKey)))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let ctx = caller.admin()?;
    let created = state
        .store
        .create_key(&ctx, &id, req, |s| state.hasher.hash(s))
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revoke a key: it never authenticates again.
#[utoipa::path(post, path = "/v1/agents/{id}/keys/{key_id}/revoke", tag = "agents",
    params(("id" = String, Path, description = "Agent id or name"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 200, body = ApiKey), (status = 404, body = steward_types::ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Json<ApiKey>> {
    let ctx = caller.admin()?;
    let key = state.store.revoke_key(&ctx, &id, &key_id).await?;
    // Its gateway sessions end now, event streams included.
    state.mcp.close_unauthenticated(&state.store).await;
    Ok(Json(key))
}
