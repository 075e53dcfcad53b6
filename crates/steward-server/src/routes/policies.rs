//! Resource types, actions, policies and known resources. Every change is
//! validated with Cedar against the complete new state before anything is
//! written, then the tenant's engine is swapped without a restart.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_core::ChangeContext;
use steward_store::policies::PolicyChange;
use steward_types::{
    ActionDef, Page, Policy, PolicyQuery, PutAction, PutPolicy, PutResourceType, ResourceEntity,
    ResourceType,
};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// Apply `changes` with an admin's context. Every handler takes it with
/// `caller.admin()` before it looks anything up, so a refusal tells a
/// non-admin nothing of what exists.
async fn change(
    state: &AppState,
    ctx: &ChangeContext,
    changes: Vec<PolicyChange>,
) -> ApiResult<steward_store::policies::ChangeReport> {
    Ok(state.engines.change(&state.store, ctx, changes).await?)
}

/// Declared resource types.
#[utoipa::path(get, path = "/v1/resource-types", tag = "policies", responses((status = 200, body = Vec<ResourceType>)))]
pub async fn list_resource_types(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ResourceType>>> {
    Ok(Json(
        state
            .store
            .policy_state(caller.reader()?)
            .await?
            .resource_types,
    ))
}

/// Declare or replace a resource type (refused if it would break a policy).
#[utoipa::path(post, path = "/v1/resource-types", tag = "policies", request_body = PutResourceType,
    responses((status = 200, body = ResourceType), (status = 400, body = steward_types::ErrorBody)))]
pub async fn put_resource_type(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PutResourceType>,
) -> ApiResult<Json<ResourceType>> {
    let ctx = caller.admin()?;
    let name = req.name.clone();
    let report = change(&state, &ctx, vec![PolicyChange::PutResourceType(req)]).await?;
    let rt = report
        .state
        .resource_types
        .into_iter()
        .find(|r| r.name == name);
    rt.map(Json)
        .ok_or_else(|| steward_core::Error::internal("resource type vanished").into())
}

/// Remove a resource type (refused while an action or policy uses it, or
/// entities of the type are stored).
#[utoipa::path(delete, path = "/v1/resource-types/{name}", tag = "policies", params(("name" = String, Path, description = "Type name")),
    responses((status = 204), (status = 400, body = steward_types::ErrorBody)))]
pub async fn delete_resource_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let ctx = caller.admin()?;
    let current = state.store.policy_state(&ctx.tenant_id).await?;
    if !current.resource_types.iter().any(|r| r.name == name) {
        return Err(steward_core::Error::not_found("resource type", &name).into());
    }
    change(&state, &ctx, vec![PolicyChange::DeleteResourceType(name)]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Declared actions.
#[utoipa::path(get, path = "/v1/actions", tag = "policies", responses((status = 200, body = Vec<ActionDef>)))]
pub async fn list_actions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ActionDef>>> {
    Ok(Json(
        state.store.policy_state(caller.reader()?).await?.actions,
    ))
}

/// Declare or replace an action.
#[utoipa::path(post, path = "/v1/actions", tag = "policies", request_body = PutAction,
    responses((status = 200, body = ActionDef), (status = 400, body = steward_types::ErrorBody)))]
pub async fn put_action(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PutAction>,
) -> ApiResult<Json<ActionDef>> {
    let ctx = caller.admin()?;
    let name = req.name.clone();
    let report = change(&state, &ctx, vec![PolicyChange::PutAction(req)]).await?;
    let a = report.state.actions.into_iter().find(|a| a.name == name);
    a.map(Json)
        .ok_or_else(|| steward_core::Error::internal("action vanished").into())
}

/// Remove an action (refused while a policy names it).
#[utoipa::path(delete, path = "/v1/actions/{name}", tag = "policies", params(("name" = String, Path, description = "Action name")),
    responses((status = 204), (status = 400, body = steward_types::ErrorBody)))]
pub async fn delete_action(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let ctx = caller.admin()?;
    let current = state.store.policy_state(&ctx.tenant_id).await?;
    if !current.actions.iter().any(|a| a.name == name) {
        return Err(steward_core::Error::not_found("action", &name).into());
    }
    change(&state, &ctx, vec![PolicyChange::DeleteAction(name)]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's Cedar schema, as generated from the declarations.
#[utoipa::path(get, path = "/v1/schema", tag = "policies", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn schema(State(state): State<AppState>, caller: Caller) -> ApiResult<String> {
    let tenant = caller.reader()?.to_string();
    Ok(state
        .engines
        .get(&state.store, &tenant)
        .await?
        .schema_text())
}

/// The tenant's policies.
#[utoipa::path(get, path = "/v1/policies", tag = "policies", params(PolicyQuery), responses((status = 200, body = Page<Policy>)))]
pub async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult<Json<Page<Policy>>> {
    Ok(Json(state.store.list_policies(caller.reader()?, q).await?))
}

/// Create or replace a policy. It is validated against the schema first: an
/// invalid policy is `400 invalid_policy` with Cedar's message, line and
/// column, and nothing changes. `201` when the policy is created (a deleted
/// one put again included), `200` when it is replaced or was already so.
#[utoipa::path(post, path = "/v1/policies", tag = "policies", request_body = PutPolicy,
    responses((status = 201, body = Policy), (status = 200, body = Policy), (status = 400, body = steward_types::ErrorBody)))]
pub async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut req): ApiJson<PutPolicy>,
) -> ApiResult<(StatusCode, Json<Policy>)> {
    let ctx = caller.admin()?;
    steward_policy::files::settle_policy_fields(&mut req)?;
    let id = req.id.clone();
    let report = change(&state, &ctx, vec![PolicyChange::PutPolicy(req)]).await?;
    let status = if report.created_policies.contains(&id) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let policy = report
        .state
        .policies
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| steward_core::Error::internal("policy vanished"))?;
    Ok((status, Json(policy)))
}

/// One policy.
#[utoipa::path(get, path = "/v1/policies/{id}", tag = "policies", params(("id" = String, Path, description = "Policy id")),
    responses((status = 200, body = Policy), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(state.store.get_policy(caller.reader()?, &id).await?))
}

/// Remove a policy.
#[utoipa::path(delete, path = "/v1/policies/{id}", tag = "policies", params(("id" = String, Path, description = "Policy id")),
    responses((status = 204), (status = 404, body = steward_types::ErrorBody)))]
pub async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let ctx = caller.admin()?;
    state.store.get_policy(&ctx.tenant_id, &id).await?;
    change(&state, &ctx, vec![PolicyChange::DeletePolicy(id)]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every version of a policy, newest first.
#[utoipa::path(get, path = "/v1/policies/{id}/versions", tag = "policies", params(("id" = String, Path, description = "Policy id")),
    responses((status = 200, body = Vec<Policy>)))]
pub async fn policy_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Policy>>> {
    Ok(Json(
        state.store.policy_history(caller.reader()?, &id).await?,
    ))
}

/// Record a known resource (its attributes are checked against its type).
#[utoipa::path(post, path = "/v1/entities", tag = "policies", request_body = ResourceEntity,
    responses((status = 200, body = ResourceEntity), (status = 400, body = steward_types::ErrorBody)))]
pub async fn put_entity(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ResourceEntity>,
) -> ApiResult<Json<ResourceEntity>> {
    let ctx = caller.admin()?;
    change(&state, &ctx, vec![PolicyChange::PutEntity(req.clone())]).await?;
    Ok(Json(req))
}

/// Known resources of a type.
#[utoipa::path(get, path = "/v1/entities/{type}", tag = "policies", params(("type" = String, Path, description = "Resource type"), PolicyQuery),
    responses((status = 200, body = Page<ResourceEntity>)))]
pub async fn list_entities(
    State(state): State<AppState>,
    caller: Caller,
    Path(entity_type): Path<String>,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult<Json<Page<ResourceEntity>>> {
    Ok(Json(
        state
            .store
            .list_resource_entities(caller.reader()?, &entity_type, q)
            .await?,
    ))
}

/// Forget a known resource.
#[utoipa::path(delete, path = "/v1/entities/{type}/{id}", tag = "policies",
    params(("type" = String, Path, description = "Resource type"), ("id" = String, Path, description = "Resource id")),
    responses((status = 204), (status = 404, body = steward_types::ErrorBody)))]
pub async fn delete_entity(
    State(state): State<AppState>,
    caller: Caller,
    Path((entity_type, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let ctx = caller.admin()?;
    change(
        &state,
        &ctx,
        vec![PolicyChange::DeleteEntity(entity_type, id)],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
