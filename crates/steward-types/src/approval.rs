//! Human approvals: of a high-risk action at run time, of an agent's
//! registration, and of a change that raises an active agent's risk tier.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::RiskTier;

/// What an approval is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// One exact request (principal chain, action, resource, context), at run time.
    Action,
    /// An agent's registration; the last approval activates it.
    Registration,
    /// New roles or classifications that raise an active agent's risk tier.
    Change,
}

impl ApprovalKind {
    /// Every kind.
    pub const ALL: [ApprovalKind; 3] = [
        ApprovalKind::Action,
        ApprovalKind::Registration,
        ApprovalKind::Change,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Action => "action",
            ApprovalKind::Registration => "registration",
            ApprovalKind::Change => "change",
        }
    }

    /// Parse the snake_case name.
    pub fn parse(s: &str) -> Option<ApprovalKind> {
        ApprovalKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where an approval is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for (more) approvers.
    Pending,
    /// Every step approved; for an action, a grant usable once until `grant_expires_at`.
    Approved,
    /// An approver refused it.
    Denied,
    /// Nobody decided in time, or the grant was not used in time.
    Expired,
    /// The grant allowed its request once and is spent.
    Used,
    /// What it was about went away (the agent was rejected, decommissioned or expired).
    Cancelled,
}

impl ApprovalStatus {
    /// Every status.
    pub const ALL: [ApprovalStatus; 6] = [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Denied,
        ApprovalStatus::Expired,
        ApprovalStatus::Used,
        ApprovalStatus::Cancelled,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Used => "used",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    /// Parse the snake_case name.
    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        ApprovalStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the approval is decided for good (nothing more can happen to it,
    /// except that an approved grant is used or expires).
    pub fn is_final(self) -> bool {
        !matches!(self, ApprovalStatus::Pending | ApprovalStatus::Approved)
    }
}

/// One level of an approval chain: a group of approvers (people holding the
/// role of that name) and what its member decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalStep {
    /// The approver group: a role humans hold (for example `security`).
    pub group: String,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// The human who decided.
    pub decided_by: Option<String>,
    /// Their e-mail.
    pub decided_by_email: Option<String>,
    /// What they said.
    pub comment: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
}

/// A request for human approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    /// Stable id (`apr_...`).
    pub id: String,
    /// What it is about.
    pub kind: ApprovalKind,
    /// Where it is.
    pub status: ApprovalStatus,
    /// The risk tier it is filed under (the agent's, or the tier a change raises it to).
    pub risk_tier: RiskTier,
    /// SHA-256 binding the exact request: an approval covers only a request
    /// with the same digest.
    pub digest: String,
    /// The agent concerned, if any.
    pub agent_id: Option<String>,
    /// Its name.
    pub agent_name: Option<String>,
    /// Who asked: `agent:ID`, `token:ID` (and the human behind a token).
    pub requested_by: String,
    /// The human behind the requesting token, if any.
    pub requested_by_human: Option<String>,
    /// The exact request shown to approvers (for an action: principal chain,
    /// action, resource and context; for a registration: the agent; for a
    /// change: the new roles and classifications).
    pub request: serde_json::Value,
    /// Why an approval is needed (the policy or persona rule, or the tier).
    pub reason: String,
    /// The chain: every step must approve, in order, each by a different person.
    pub steps: Vec<ApprovalStep>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// A pending approval expires (and means deny) at this time.
    pub expires_at: DateTime<Utc>,
    /// Approvers should decide by this time (the service level).
    pub sla_due_at: DateTime<Utc>,
    /// When the last step approved or a step denied.
    pub decided_at: Option<DateTime<Utc>>,
    /// For an approved action: the grant allows the request once until then.
    pub grant_expires_at: Option<DateTime<Utc>>,
    /// When the grant was used.
    pub used_at: Option<DateTime<Utc>>,
    /// The decision that used it.
    pub used_by_decision: Option<String>,
}

impl Approval {
    /// The group whose approval is awaited now, if any.
    pub fn current_group(&self) -> Option<&str> {
        if self.status != ApprovalStatus::Pending {
            return None;
        }
        self.steps
            .iter()
            .find(|s| s.status == "pending")
            .map(|s| s.group.as_str())
    }
}

/// How a decision names the approval it needs or used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalRef {
    /// The approval's id.
    pub id: String,
    /// Its status (`pending` for a new request, `used` when its grant allowed this one).
    pub status: ApprovalStatus,
    /// The approver groups, in order.
    pub groups: Vec<String>,
    /// When a pending request expires.
    pub expires_at: DateTime<Utc>,
    /// Where to wait for the outcome (`GET`, long poll).
    pub wait: String,
}

/// Approve or deny one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalVerdict {
    /// Why (required to deny; shown to the requester and in the audit log).
    #[serde(default)]
    pub comment: Option<String>,
}

/// Filters for listing approvals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalFilter {
    /// `pending`, `approved`, `denied`, `expired`, `used`, `cancelled`.
    pub status: Option<String>,
    /// `action`, `registration` or `change`.
    pub kind: Option<String>,
    /// Agent id or name.
    pub agent: Option<String>,
    /// Only approvals whose current step awaits this group.
    pub group: Option<String>,
    /// `low`, `medium` or `high`.
    pub risk_tier: Option<String>,
    /// Cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
}

/// How long to wait for an outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait at most, 0..=30 (default 10). The answer comes as soon
    /// as the approval is decided or expires.
    pub timeout: Option<u32>,
}

/// Counts and time to approval for one risk tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TierApprovalStats {
    /// `low`, `medium` or `high`.
    pub risk_tier: String,
    /// Waiting now.
    pub pending: u64,
    /// Approved (including grants used since).
    pub approved: u64,
    /// Denied.
    pub denied: u64,
    /// Expired without a decision, or granted and never used.
    pub expired: u64,
    /// Approved after their SLA was due.
    pub sla_breached: u64,
    /// Median seconds from request to final approval.
    pub p50_seconds: Option<f64>,
    /// 90th percentile.
    pub p90_seconds: Option<f64>,
    /// 99th percentile.
    pub p99_seconds: Option<f64>,
}

/// Approval metrics of the tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalStats {
    /// One entry per tier, low to high.
    pub tiers: Vec<TierApprovalStats>,
}
