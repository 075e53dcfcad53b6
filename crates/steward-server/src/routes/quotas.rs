//! Quota rules and usage.

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use steward_core::Error;
use steward_core::quota::Rule;
use steward_types::{PutQuota, Quota, QuotaUsage, UsageQuery};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// The tenant's quota rules (persona defaults are on the personas).
#[utoipa::path(get, path = "/v1/quotas", tag = "quotas", responses((status = 200, body = Vec<Quota>)))]
pub async fn list_quotas(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Quota>>> {
    Ok(Json(state.store.list_quotas(caller.reader()?).await?))
}

/// Create a rule, or replace the one with this name: idempotent, and two
/// first puts at once are a create and a replace, never a conflict. Its
/// counters are kept, but a changed window or time zone restarts them:
/// usage is not carried into the new window (see docs/quotas.md).
#[utoipa::path(post, path = "/v1/quotas", tag = "quotas", request_body = PutQuota,
    responses((status = 200, body = Quota), (status = 400, body = steward_types::ErrorBody),
        (status = 422, body = steward_types::ErrorBody)))]
pub async fn put_quota(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PutQuota>,
) -> ApiResult<Json<Quota>> {
    let ctx = caller.admin()?;
    let quota = state.store.put_quota(&ctx, req).await?;
    state.quotas.invalidate(&ctx.tenant_id);
    Ok(Json(quota))
}

/// A rule by id or name.
#[utoipa::path(get, path = "/v1/quotas/{id}", tag = "quotas", params(("id" = String, Path, description = "Quota id or name")),
    responses((status = 200, body = Quota), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Quota>> {
    Ok(Json(state.store.get_quota(caller.reader()?, &id).await?))
}

/// Delete a rule and its counters.
#[utoipa::path(delete, path = "/v1/quotas/{id}", tag = "quotas", params(("id" = String, Path, description = "Quota id or name")),
    responses((status = 200, body = Quota), (status = 404, body = steward_types::ErrorBody)))]
pub async fn delete_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Quota>> {
    let ctx = caller.admin()?;
    let quota = state.store.delete_quota(&ctx, &id).await?;
    state.quotas.invalidate(&ctx.tenant_id);
    Ok(Json(quota))
}

/// Usage per quota: used, limit, window, reset time and past windows. With
/// `agent`, every quota that applies to it (its own, its persona's default,
/// its persona's, team's, owner's, the tenant's and its ancestors'); an
/// agent's key sees its own.
#[utoipa::path(get, path = "/v1/usage", tag = "quotas", params(UsageQuery),
    responses((status = 200, body = Vec<QuotaUsage>), (status = 404, body = steward_types::ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<Vec<QuotaUsage>>> {
    let tenant = caller.tenant_id().to_string();
    let agent = match (&caller, q.agent) {
        (Caller::Agent { agent, .. }, None) => Some(agent.id.clone()),
        (Caller::Agent { agent, .. }, Some(a)) if a == agent.id || a == agent.name => {
            Some(agent.id.clone())
        }
        (Caller::Agent { .. }, Some(_)) => {
            return Err(Error::new(
                steward_types::ErrorCode::Forbidden,
                "an agent sees only its own usage",
            )
            .into());
        }
        (Caller::Token { .. }, a) => {
            caller.reader()?;
            a
        }
    };
    let history = q.history.unwrap_or(7);
    if history > 100 {
        return Err(Error::new(
            steward_types::ErrorCode::InvalidQuery,
            "history: at most 100 past windows",
        )
        .into());
    }
    let now = Utc::now();
    let set = state.quotas.get(&state.store, &tenant).await?;
    let pairs: Vec<(Rule, String)> = match agent {
        Some(a) => {
            let chain = crate::decisions::agent_chain(&state, &tenant, &a, now).await?;
            crate::quotas::applicable(&set, &tenant, &chain)
        }
        None => set
            .rules
            .iter()
            .filter(|r| {
                r.quota.subject.is_some() || r.quota.scope == steward_types::QuotaScope::Tenant
            })
            .map(|r| {
                (
                    r.clone(),
                    r.quota.subject.clone().unwrap_or_else(|| tenant.clone()),
                )
            })
            .collect(),
    };
    let mut out = Vec::with_capacity(pairs.len());
    for (rule, subject) in pairs {
        if q.quota
            .as_deref()
            .is_some_and(|k| k != rule.quota.id && k != rule.quota.name)
        {
            continue;
        }
        let (status, history) = state
            .store
            .quota_usage(&tenant, &rule, &subject, now, history)
            .await?;
        out.push(QuotaUsage {
            quota: rule.quota,
            status,
            history,
        });
    }
    Ok(Json(out))
}
