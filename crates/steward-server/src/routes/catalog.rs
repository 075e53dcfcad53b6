//! Roles and personas. The policy engine lists both for its remediation
//! hints, so creating one moves the tenant's policy epoch (every node
//! rebuilds the engine) and rebuilds this node's engine at once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_types::{CreatePersona, CreateRole, Page, PageQuery, Persona, Role};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// The tenant's roles.
#[utoipa::path(get, path = "/v1/roles", tag = "inventory", params(PageQuery), responses((status = 200, body = Page<Role>)))]
pub async fn list_roles(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Role>>> {
    Ok(Json(state.store.list_roles(caller.reader()?, q).await?))
}

/// Create a role.
#[utoipa::path(post, path = "/v1/roles", tag = "inventory", request_body = CreateRole,
    responses((status = 201, body = Role), (status = 409, body = steward_types::ErrorBody)))]
pub async fn create_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let ctx = caller.admin()?;
    let role = state.store.create_role(&ctx, req).await?;
    state
        .engines
        .catalog_changed(&state.store, &ctx.tenant_id)
        .await;
    Ok((StatusCode::CREATED, Json(role)))
}

/// A role by id or name.
#[utoipa::path(get, path = "/v1/roles/{id}", tag = "inventory", params(("id" = String, Path, description = "Role id or name")),
    responses((status = 200, body = Role), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Role>> {
    Ok(Json(state.store.get_role(caller.reader()?, &id).await?))
}

/// The tenant's personas.
#[utoipa::path(get, path = "/v1/personas", tag = "inventory", params(PageQuery), responses((status = 200, body = Page<Persona>)))]
pub async fn list_personas(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Persona>>> {
    Ok(Json(state.store.list_personas(caller.reader()?, q).await?))
}

/// Create a persona.
#[utoipa::path(post, path = "/v1/personas", tag = "inventory", request_body = CreatePersona,
    responses((status = 201, body = Persona), (status = 409, body = steward_types::ErrorBody)))]
pub async fn create_persona(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreatePersona>,
) -> ApiResult<(StatusCode, Json<Persona>)> {
    let ctx = caller.admin()?;
    let declared = state
        .engines
        .get(&state.store, &ctx.tenant_id)
        .await?
        .action_names();
    check_persona_actions(&req, &declared)?;
    let persona = state.store.create_persona(&ctx, &state.rules, req).await?;
    state
        .engines
        .catalog_changed(&state.store, &ctx.tenant_id)
        .await;
    state.quotas.invalidate(&ctx.tenant_id);
    Ok((StatusCode::CREATED, Json(persona)))
}

/// Each action a persona holds for approval is a declared one: a misspelt
/// name would never match, and the approval it meant would silently never
/// be asked.
pub(crate) fn check_persona_actions(
    persona: &steward_types::CreatePersona,
    declared: &[String],
) -> Result<(), steward_core::Error> {
    match persona
        .approval_required_for
        .iter()
        .find(|a| !declared.contains(a))
    {
        Some(unknown) => Err(steward_core::Error::unknown_reference(
            "approval_required_for",
            "action",
            unknown,
        )),
        None => Ok(()),
    }
}

/// A persona by id or name.
#[utoipa::path(get, path = "/v1/personas/{id}", tag = "inventory", params(("id" = String, Path, description = "Persona id or name")),
    responses((status = 200, body = Persona), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_persona(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Persona>> {
    Ok(Json(state.store.get_persona(caller.reader()?, &id).await?))
}
