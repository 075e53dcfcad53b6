//! Reading the audit log.

use axum::Json;
use axum::extract::State;
use steward_types::{AuditEntry, AuditFilter, Page};

use crate::auth::Caller;
use crate::error::{ApiQuery, ApiResult};
use crate::state::AppState;

/// The tenant's audit log, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditFilter), responses((status = 200, body = Page<AuditEntry>)))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    Ok(Json(state.store.list_audit(caller.reader()?, q).await?))
}
