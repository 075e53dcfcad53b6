//! Quotas, usage and decision outcomes.

use steward_types::{Outcome, PutQuota, Quota, QuotaUsage, Settlement, UsageQuery};

use crate::{Client, Result};

impl Client {
    /// `GET /v1/quotas`.
    pub async fn list_quotas(&self) -> Result<Vec<Quota>> {
        self.get(&["v1", "quotas"]).await
    }

    /// `POST /v1/quotas`: create a rule or replace the one with this name.
    pub async fn put_quota(&self, request: &PutQuota) -> Result<Quota> {
        self.post(&["v1", "quotas"], request).await
    }

    /// `GET /v1/quotas/{id}`.
    pub async fn get_quota(&self, id: &str) -> Result<Quota> {
        self.get(&["v1", "quotas", id]).await
    }

    /// `DELETE /v1/quotas/{id}`.
    pub async fn delete_quota(&self, id: &str) -> Result<()> {
        self.delete(&["v1", "quotas", id]).await
    }

    /// `GET /v1/usage`.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<QuotaUsage>> {
        self.get_query(&["v1", "usage"], query).await
    }

    /// `POST /v1/decisions/{id}/outcome`: settle a decision's reservation.
    pub async fn report_outcome(&self, decision_id: &str, outcome: &Outcome) -> Result<Settlement> {
        self.post(&["v1", "decisions", decision_id, "outcome"], outcome)
            .await
    }
}
