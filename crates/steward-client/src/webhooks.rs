//! Webhook subscriptions and deliveries.

use steward_types::{
    CreateWebhook, CreatedWebhook, DeliveryQuery, Page, PageQuery, Webhook, WebhookDelivery,
};

use crate::{Client, Result};

impl Client {
    /// `GET /v1/webhooks`.
    pub async fn list_webhooks(&self, page: &PageQuery) -> Result<Page<Webhook>> {
        self.get_query(&["v1", "webhooks"], page).await
    }

    /// `POST /v1/webhooks`: subscribe; the secret is returned once.
    pub async fn create_webhook(&self, request: &CreateWebhook) -> Result<CreatedWebhook> {
        self.post(&["v1", "webhooks"], request).await
    }

    /// `DELETE /v1/webhooks/{id}`.
    pub async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.delete(&["v1", "webhooks", id]).await
    }

    /// `GET /v1/webhooks/{id}/deliveries`.
    pub async fn list_deliveries(
        &self,
        id: &str,
        query: &DeliveryQuery,
    ) -> Result<Page<WebhookDelivery>> {
        self.get_query(&["v1", "webhooks", id, "deliveries"], query)
            .await
    }
}
