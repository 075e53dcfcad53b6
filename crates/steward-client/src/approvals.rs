//! Human approvals.

use steward_types::{Approval, ApprovalFilter, ApprovalStats, ApprovalVerdict, Page, WaitQuery};

use crate::{Client, Result};

impl Client {
    /// `GET /v1/approvals`, filtered.
    pub async fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Page<Approval>> {
        self.get_query(&["v1", "approvals"], filter).await
    }

    /// `GET /v1/approvals/{id}`.
    pub async fn get_approval(&self, id: &str) -> Result<Approval> {
        self.get(&["v1", "approvals", id]).await
    }

    /// `POST /v1/approvals/{id}/approve`, as the person the token belongs to.
    pub async fn approve(&self, id: &str, comment: Option<&str>) -> Result<Approval> {
        let body = ApprovalVerdict {
            comment: comment.map(str::to_string),
        };
        self.post(&["v1", "approvals", id, "approve"], &body).await
    }

    /// `POST /v1/approvals/{id}/deny` with a comment (required by the server).
    pub async fn deny(&self, id: &str, comment: Option<&str>) -> Result<Approval> {
        let body = ApprovalVerdict {
            comment: comment.map(str::to_string),
        };
        self.post(&["v1", "approvals", id, "deny"], &body).await
    }

    /// `GET /v1/approvals/{id}/wait?timeout=N`: the approval once decided or
    /// expired, or still pending after `timeout_secs` (at most 30).
    pub async fn wait_approval(&self, id: &str, timeout_secs: u32) -> Result<Approval> {
        let query = WaitQuery {
            timeout: Some(timeout_secs),
        };
        self.get_query(&["v1", "approvals", id, "wait"], &query)
            .await
    }

    /// `GET /v1/approvals/stats`: counts and time to approval per risk tier.
    pub async fn approval_stats(&self) -> Result<ApprovalStats> {
        self.get(&["v1", "approvals", "stats"]).await
    }
}
