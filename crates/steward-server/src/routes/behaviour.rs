//! Behavioural baselines: the tenant's settings, the alerts raised when an
//! agent acts out of character, and an agent's baseline.

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use steward_types::{AlertQuery, Baseline, BehaviourAlert, BehaviourSettings, Page, ResolveAlert};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// How the tenant's agents are watched (the defaults until changed).
#[utoipa::path(get, path = "/v1/behaviour/settings", tag = "behaviour",
    responses((status = 200, body = BehaviourSettings)))]
pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<BehaviourSettings>> {
    Ok(Json(
        state.store.behaviour_settings(caller.reader()?).await?,
    ))
}

/// Replace the tenant's settings; fields left out take their defaults.
#[utoipa::path(put, path = "/v1/behaviour/settings", tag = "behaviour", request_body = BehaviourSettings,
    responses((status = 200, body = BehaviourSettings), (status = 400, body = steward_types::ErrorBody)))]
pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(settings): ApiJson<BehaviourSettings>,
) -> ApiResult<Json<BehaviourSettings>> {
    let ctx = caller.admin()?;
    Ok(Json(
        state.store.set_behaviour_settings(&ctx, &settings).await?,
    ))
}

/// The tenant's alerts, oldest first.
#[utoipa::path(get, path = "/v1/behaviour/alerts", tag = "behaviour", params(AlertQuery),
    responses((status = 200, body = Page<BehaviourAlert>), (status = 400, body = steward_types::ErrorBody)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> ApiResult<Json<Page<BehaviourAlert>>> {
    Ok(Json(state.store.list_alerts(caller.reader()?, q).await?))
}

/// One alert.
#[utoipa::path(get, path = "/v1/behaviour/alerts/{id}", tag = "behaviour",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = BehaviourAlert), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<BehaviourAlert>> {
    Ok(Json(state.store.get_alert(caller.reader()?, &id).await?))
}

/// Resolve an open alert: `expected` (normal after all) or `confirmed` (a
/// real problem, dealt with). A suspended agent stays suspended until a
/// person resumes it.
#[utoipa::path(post, path = "/v1/behaviour/alerts/{id}/resolve", tag = "behaviour", request_body = ResolveAlert,
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = BehaviourAlert), (status = 404, body = steward_types::ErrorBody),
        (status = 409, body = steward_types::ErrorBody)))]
pub async fn resolve_alert(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResolveAlert>,
) -> ApiResult<Json<BehaviourAlert>> {
    let ctx = caller.admin()?;
    Ok(Json(state.store.resolve_alert(&ctx, &id, &req).await?))
}

/// What normal looks like for the agent: its busiest hours, the thresholds
/// above which an hour is flagged, the hours of the day it acts in and the
/// actions it uses.
#[utoipa::path(get, path = "/v1/agents/{id}/baseline", tag = "behaviour",
    params(("id" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = Baseline), (status = 404, body = steward_types::ErrorBody)))]
pub async fn agent_baseline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Baseline>> {
    let tenant = caller.reader()?;
    let agent = state.store.get_agent(tenant, &id).await?;
    Ok(Json(
        crate::behaviour::baseline(&state.store, tenant, &agent, Utc::now()).await?,
    ))
}
