//! Who is making a change, in which tenant, and when. Time is passed in, never
//! read from a clock inside the domain, so expiry is testable without sleeping.

use chrono::{DateTime, Utc};
use steward_types::Actor;

/// The context of one change: the audit sink records all of it.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    /// Tenant the change happens in.
    pub tenant_id: String,
    /// Who makes it.
    pub actor: Actor,
    /// The HTTP request id, when there is one.
    pub request_id: Option<String>,
    /// The address the request came from, when there is one.
    pub source: Option<String>,
    /// The time of the change.
    pub now: DateTime<Utc>,
}

impl ChangeContext {
    /// A change made by Steward itself (the expiry sweep, start-up seeding).
    pub fn system(tenant_id: &str, task: &str, now: DateTime<Utc>) -> Self {
        ChangeContext {
            tenant_id: tenant_id.to_string(),
            actor: Actor {
                kind: "system".into(),
                id: task.into(),
                human_id: None,
            },
            request_id: None,
            source: None,
            now,
        }
    }
}

/// One record for the audit sink: what changed, with before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// What was done, for example `agent.suspend`.
    pub action: String,
    /// Kind of thing changed.
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
    /// State before.
    pub before: Option<serde_json::Value>,
    /// State after.
    pub after: Option<serde_json::Value>,
    /// Why, when given.
    pub reason: Option<String>,
}

/// Deployment-wide rules the inventory checks against (from configuration).
#[derive(Debug, Clone, Default)]
pub struct InventoryRules {
    /// Known data classifications and their tiers.
    pub classifications: crate::risk::ClassificationCatalog,
    /// Spawn limits for agents whose persona does not set them.
    pub default_limits: crate::spawn::SpawnLimits,
    /// Approver groups for registrations and tier-raising changes, per tier.
    pub approval_chains: crate::approval::TierChains,
    /// How long approvals and grants live.
    pub approval_times: crate::approval::ApprovalTimes,
}
