//! Recertification campaigns.

use steward_types::{
    Attest, Campaign, CampaignItem, CampaignItemQuery, Page, PageQuery, StartCampaign,
};

use crate::{Client, Result};

impl Client {
    /// `POST /v1/recertifications`.
    pub async fn start_campaign(&self, request: &StartCampaign) -> Result<Campaign> {
        self.post(&["v1", "recertifications"], request).await
    }

    /// `GET /v1/recertifications`.
    pub async fn list_campaigns(&self, page: &PageQuery) -> Result<Page<Campaign>> {
        self.get_query(&["v1", "recertifications"], page).await
    }

    /// `GET /v1/recertifications/{id}`.
    pub async fn get_campaign(&self, id: &str) -> Result<Campaign> {
        self.get(&["v1", "recertifications", id]).await
    }

    /// `GET /v1/recertifications/{id}/items`.
    pub async fn list_campaign_items(
        &self,
        id: &str,
        query: &CampaignItemQuery,
    ) -> Result<Page<CampaignItem>> {
        self.get_query(&["v1", "recertifications", id, "items"], query)
            .await
    }

    /// `POST /v1/recertifications/{id}/items/{agent}`.
    pub async fn attest(&self, id: &str, agent: &str, request: &Attest) -> Result<CampaignItem> {
        self.post(&["v1", "recertifications", id, "items", agent], request)
            .await
    }
}
