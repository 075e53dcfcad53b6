//! API tokens for people and automation (admin or auditor).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_core::Error;
use steward_types::{ApiToken, CreateToken, CreatedToken, Page, PageQuery};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// The tenant's tokens (metadata only).
#[utoipa::path(get, path = "/v1/tokens", tag = "access", params(PageQuery), responses((status = 200, body = Page<ApiToken>)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<ApiToken>>> {
    Ok(Json(state.store.list_tokens(caller.reader()?, q).await?))
}

/// Create a token; the secret is in this response only.
#[utoipa::path(post, path = "/v1/tokens", tag = "access", request_body = CreateToken,
    responses((status = 201, body = CreatedToken)))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let mut ctx = caller.admin()?;
    if let Some(tenant) = req.tenant.as_ref().filter(|t| **t != ctx.tenant_id) {
        ctx = caller.platform_admin()?;
        if !state.store.tenant_exists(tenant).await? {
            return Err(ApiError(Error::unknown_reference(
                "tenant", "tenant", tenant,
            )));
        }
        ctx.tenant_id = tenant.clone();
    }
    let created = state
        .store
        .create_token(&ctx, req, |s| state.hasher.hash(s))
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revoke a token.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "access", params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = ApiToken), (status = 404, body = steward_types::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiToken>> {
    let ctx = caller.admin()?;
    let revoked = state.store.revoke_token(&ctx, &id).await?;
    state.tokens.clear();
    Ok(Json(revoked))
}
