//! Audit records as read over the API. Every change passes through the audit
//! sink and becomes one of these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Who did something: the credential and, where known, the person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Actor {
    /// `token`, `agent` or `system`.
    pub kind: String,
    /// Token id, agent id, or the system task's name.
    pub id: String,
    /// The human behind the credential.
    pub human_id: Option<String>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the log (all tenants share one log), from 1, without gaps.
    pub seq: i64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Tenant.
    pub tenant_id: String,
    /// Who did it.
    pub actor: Actor,
    /// What was done, for example `agent.suspend`.
    pub action: String,
    /// Kind of the thing it was done to (`agent`, `human`, ...).
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
    /// State before (administrative changes).
    pub before: Option<serde_json::Value>,
    /// State after.
    pub after: Option<serde_json::Value>,
    /// Why, when a reason was given.
    pub reason: Option<String>,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// Hex SHA-256 leaf hash of the entry's canonical encoding (RFC 9162).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_hash: Option<String>,
}

/// Filters for reading the audit log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only entries about this resource id.
    pub resource_id: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Cursor (a sequence number) from a previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
}
