//! Tenants (platform administrators only) and `whoami`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use steward_types::{CreateTenant, Page, PageQuery, Tenant, WhoAmI};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// Who the credential in `Authorization` belongs to.
#[utoipa::path(get, path = "/v1/whoami", tag = "access",
    responses((status = 200, body = WhoAmI), (status = 401, body = steward_types::ErrorBody)))]
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(match caller {
        Caller::Agent {
            tenant_id,
            agent,
            key,
            delegation,
        } => WhoAmI::Agent {
            tenant_id,
            agent_id: agent.id,
            agent_name: agent.name,
            key_id: key.id,
            acting_for: delegation.map(|d| d.human_id),
        },
        Caller::Token {
            tenant_id,
            token,
            platform_admin,
        } => WhoAmI::Token {
            tenant_id,
            token_id: token.id,
            role: token.role,
            human_id: token.human_id,
            platform_admin,
        },
    })
}

/// Every tenant.
#[utoipa::path(get, path = "/v1/tenants", tag = "access", params(PageQuery),
    responses((status = 200, body = Page<Tenant>)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Tenant>>> {
    caller.platform_admin()?;
    Ok(Json(state.store.list_tenants(q).await?))
}

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = "access", request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 409, body = steward_types::ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let ctx = caller.platform_admin()?;
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_tenant(&ctx, req).await?),
    ))
}
