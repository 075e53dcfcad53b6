//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use steward_types::Health;

use crate::error::ApiResult;
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        store: None,
    })
}

/// The store answers; 503 `store_unavailable` otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Health), (status = 503, body = steward_types::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.store.ping().await?;
    Ok(Json(Health {
        status: "ok".into(),
        store: Some(state.store.backend().as_str().into()),
    }))
}

/// The error catalogue: every stable code, its HTTP status and meaning.
#[utoipa::path(get, path = "/v1/errors", tag = "operations", security(()),
    responses((status = 200, body = Vec<steward_types::ErrorCatalogueEntry>)))]
pub async fn errors() -> Json<Vec<steward_types::ErrorCatalogueEntry>> {
    Json(steward_types::ErrorCode::catalogue())
}
