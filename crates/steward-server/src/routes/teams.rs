//! Teams.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_types::{CreateTeam, Page, PageQuery, Team};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// The tenant's teams.
#[utoipa::path(get, path = "/v1/teams", tag = "inventory", params(PageQuery), responses((status = 200, body = Page<Team>)))]
pub async fn list_teams(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Team>>> {
    Ok(Json(state.store.list_teams(caller.reader()?, q).await?))
}

/// Create a team.
#[utoipa::path(post, path = "/v1/teams", tag = "inventory", request_body = CreateTeam,
    responses((status = 201, body = Team), (status = 409, body = steward_types::ErrorBody)))]
pub async fn create_team(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateTeam>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    let ctx = caller.admin()?;
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_team(&ctx, req).await?),
    ))
}

/// A team by id or name.
#[utoipa::path(get, path = "/v1/teams/{id}", tag = "inventory", params(("id" = String, Path, description = "Team id or name")),
    responses((status = 200, body = Team), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_team(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Team>> {
    Ok(Json(state.store.get_team(caller.reader()?, &id).await?))
}
