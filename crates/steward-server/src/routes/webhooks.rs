//! Webhook subscriptions and their delivery history.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_core::Error;
use steward_types::{
    CreateWebhook, CreatedWebhook, DeliveryQuery, Page, PageQuery, Webhook, WebhookDelivery,
};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// The tenant's subscriptions (secrets are never shown again; readers who
/// are not admins see each URL's scheme and host only).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(PageQuery), responses((status = 200, body = Page<Webhook>)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Webhook>>> {
    let mut page = state.store.list_webhooks(caller.reader()?, q).await?;
    // Only admins see where events go: the URL is often the credential.
    if caller.admin().is_err() {
        page.items = page
            .items
            .iter()
            .map(steward_store::webhooks::redacted)
            .collect();
    }
    Ok(Json(page))
}

/// Subscribe a receiver; the signing secret is in this response only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 409, body = steward_types::ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut req): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let ctx = caller.admin()?;
    if let Some(why) = state.outbound.check_url(&req.url) {
        return Err(ApiError(Error::invalid("url", why)));
    }
    let secret = match req.secret.take() {
        Some(s) if s.len() < 16 || s.len() > 256 => {
            return Err(ApiError(Error::invalid(
                "secret",
                "must be 16 to 256 characters (or absent, to have one generated)",
            )));
        }
        Some(s) => s,
        None => steward_core::credentials::generate_secret("whsec_"),
    };
    let webhook = state.store.create_webhook(&ctx, req, &secret).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook { webhook, secret }),
    ))
}

/// Unsubscribe; undelivered events for it are dropped.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Webhook id or name")),
    responses((status = 200, body = Webhook), (status = 404, body = steward_types::ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    let ctx = caller.admin()?;
    Ok(Json(state.store.delete_webhook(&ctx, &id).await?))
}

/// What was sent to a subscription, and how it went.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id or name"), DeliveryQuery),
    responses((status = 200, body = Page<WebhookDelivery>), (status = 404, body = steward_types::ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<Page<WebhookDelivery>>> {
    Ok(Json(
        state
            .store
            .list_deliveries(caller.reader()?, &id, q)
            .await?,
    ))
}
