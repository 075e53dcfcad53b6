//! Webhook subscriptions and deliveries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A subscription: events matching `events` are POSTed to `url`, signed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Webhook {
    /// `whk_...`.
    pub id: String,
    /// Unique in the tenant.
    pub name: String,
    /// `http://` or `https://` receiver (a Slack incoming-webhook URL works).
    pub url: String,
    /// Event patterns: exact names (`quota.threshold`) or prefixes (`approval.*`); empty = all.
    pub events: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Subscribe a receiver.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Unique in the tenant.
    pub name: String,
    /// `http://` or `https://` receiver.
    pub url: String,
    /// Event patterns; empty or absent = every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Signing secret (at least 16 characters); generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A new subscription with its signing secret (shown once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// The subscription.
    pub webhook: Webhook,
    /// The HMAC-SHA256 key for `X-Steward-Signature`.
    pub secret: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet delivered; will be (re)tried at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed; it will not be retried.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One event sent (or to be sent) to one subscription.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct WebhookDelivery {
    /// `whd_...`, also sent as `X-Steward-Delivery`.
    pub id: String,
    /// The subscription.
    pub webhook_id: String,
    /// The event name, also sent as `X-Steward-Event`.
    pub event: String,
    /// The JSON body sent.
    pub payload: serde_json::Value,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// The receiver's last HTTP status.
    pub response_status: Option<i64>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When the receiver acknowledged it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Filters for a subscription's deliveries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries in this status.
    pub status: Option<DeliveryStatus>,
    /// Opaque cursor from `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (1..=500, default 50).
    pub limit: Option<u32>,
}
