//! Inventory records as they travel over the wire: teams, humans, roles,
//! personas and agents, with the requests that create and change them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A tenant: the isolation boundary. Every record belongs to exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// Stable id; the default tenant's id is `default`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Create a tenant (platform administrators only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lower-case id: letters, digits and dashes.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A team of humans that owns agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Team {
    /// Stable id.
    pub id: String,
    /// Unique name in the tenant.
    pub name: String,
    /// What the team does.
    pub description: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Create a team.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// Unique name in the tenant.
    pub name: String,
    /// What the team does.
    #[serde(default)]
    pub description: String,
}

/// Whether a human may own agents and act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HumanStatus {
    /// Works here; may own agents.
    Active,
    /// Left or disabled; their agents are flagged orphaned.
    Deactivated,
}

/// A person in the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Human {
    /// Stable id.
    pub id: String,
    /// Unique e-mail address in the tenant (stored lower-case).
    pub email: String,
    /// Name to show.
    pub display_name: String,
    /// The id another system knows this person by (IdP subject, AuthZEN PID).
    pub external_id: Option<String>,
    /// Active or deactivated.
    pub status: HumanStatus,
    /// Ids of the teams the human belongs to.
    pub teams: Vec<String>,
    /// Roles the human holds (used by decisions made on their behalf).
    pub roles: Vec<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Create a human.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHuman {
    /// E-mail address; unique in the tenant, case-insensitive.
    pub email: String,
    /// Name to show.
    pub display_name: String,
    /// The id another system knows this person by; unique in the tenant.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Team ids or names.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Change a human's name, teams or roles. Absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateHuman {
    /// New display name.
    pub display_name: Option<String>,
    /// Replacement list of team ids or names.
    pub teams: Option<Vec<String>>,
    /// Replacement list of role names.
    pub roles: Option<Vec<String>>,
}

/// A named role. Its permissions are Cedar policies that name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Role {
    /// Stable id.
    pub id: String,
    /// Unique name in the tenant, used to refer to the role.
    pub name: String,
    /// What the role is for.
    pub description: String,
    /// Whether the role lets its holder change data (raises the risk tier).
    pub writes: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Create a role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    /// Unique name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// What the role is for.
    #[serde(default)]
    pub description: String,
    /// Whether the role lets its holder change data.
    #[serde(default)]
    pub writes: bool,
}

/// Risk tier of an agent, derived from what it may touch and do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RiskTier {
    /// Public data only.
    Low,
    /// Internal data, or confidential data read-only.
    Medium,
    /// PII, financial data, or writes to confidential data.
    High,
}

impl RiskTier {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskTier::Low => "low",
            RiskTier::Medium => "medium",
            RiskTier::High => "high",
        }
    }
}

/// A default quota a persona gives its agents (enforced by the quotas feature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaTemplate {
    /// What is counted: `requests`, `tool_calls`, `tokens`, `cost`, `records`, `bytes`.
    pub metric: String,
    /// `minute`, `hour`, `day` or `month`.
    pub window: String,
    /// The limit per window.
    pub limit: u64,
}

/// A reusable agent template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Persona {
    /// Stable id.
    pub id: String,
    /// Unique name in the tenant.
    pub name: String,
    /// What agents of this persona do.
    pub description: String,
    /// Roles given to agents registered without an explicit list.
    pub roles: Vec<String>,
    /// Data classifications given to agents registered without an explicit list.
    pub classifications: Vec<String>,
    /// Default quotas of its agents.
    pub quotas: Vec<QuotaTemplate>,
    /// How many live children one agent of this persona may have.
    pub max_children: u32,
    /// How deep below a root agent a descendant of this persona may be.
    pub max_depth: u32,
    /// The approval tier its registrations follow, when stricter than the derived risk.
    pub approval_tier: Option<RiskTier>,
    /// Actions that need a human's approval at run time (used by the approvals feature).
    pub approval_required_for: Vec<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Create a persona.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePersona {
    /// Unique name in the tenant.
    pub name: String,
    /// What agents of this persona do.
    #[serde(default)]
    pub description: String,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Data classifications.
    #[serde(default)]
    pub classifications: Vec<String>,
    /// Default quotas.
    #[serde(default)]
    pub quotas: Vec<QuotaTemplate>,
    /// Live children per agent (default from server config).
    pub max_children: Option<u32>,
    /// Maximum spawn depth (default from server config).
    pub max_depth: Option<u32>,
    /// Approval tier override.
    pub approval_tier: Option<RiskTier>,
    /// Actions needing runtime approval.
    #[serde(default)]
    pub approval_required_for: Vec<String>,
}

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// A draft, not yet submitted.
    Proposed,
    /// Waiting for an approval before it may act.
    PendingApproval,
    /// May authenticate and act.
    Active,
    /// Temporarily stopped; may be resumed.
    Suspended,
    /// Retired for good; credentials revoked.
    Decommissioned,
    /// Registration was refused.
    Rejected,
    /// Passed its expiry time.
    Expired,
}

impl AgentState {
    /// Every state.
    pub const ALL: [AgentState; 7] = [
        AgentState::Proposed,
        AgentState::PendingApproval,
        AgentState::Active,
        AgentState::Suspended,
        AgentState::Decommissioned,
        AgentState::Rejected,
        AgentState::Expired,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Proposed => "proposed",
            AgentState::PendingApproval => "pending_approval",
            AgentState::Active => "active",
            AgentState::Suspended => "suspended",
            AgentState::Decommissioned => "decommissioned",
            AgentState::Rejected => "rejected",
            AgentState::Expired => "expired",
        }
    }

    /// Parse the snake_case name.
    pub fn parse(s: &str) -> Option<AgentState> {
        AgentState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            AgentState::Decommissioned | AgentState::Rejected | AgentState::Expired
        )
    }
}

/// An AI agent: a first-class, owned identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    /// Stable id.
    pub id: String,
    /// Unique name in the tenant.
    pub name: String,
    /// Id of the accountable human.
    pub owner_id: String,
    /// Id of the owning team.
    pub team_id: Option<String>,
    /// Why the agent exists.
    pub purpose: String,
    /// Platform or vendor it runs on.
    pub platform: String,
    /// Model it uses.
    pub model: String,
    /// Id of its persona.
    pub persona_id: Option<String>,
    /// Role names.
    pub roles: Vec<String>,
    /// Data classifications it may touch.
    pub classifications: Vec<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Id of the agent that spawned it.
    pub parent_id: Option<String>,
    /// 0 for a root agent, parent's depth + 1 for a child.
    pub depth: u32,
    /// When it stops being allowed to act.
    pub expires_at: Option<DateTime<Utc>>,
    /// Lifecycle state.
    pub state: AgentState,
    /// Why it is in this state (suspension reason, ...).
    pub state_reason: Option<String>,
    /// Derived risk tier.
    pub risk_tier: RiskTier,
    /// True when its owner has been deactivated and it needs a new one.
    pub orphaned: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last time one of its keys authenticated.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// Register an agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// Unique name in the tenant.
    pub name: String,
    /// Owner: a human id or e-mail. Must be active.
    pub owner: String,
    /// Team id or name.
    pub team: Option<String>,
    /// Why the agent exists.
    #[serde(default)]
    pub purpose: String,
    /// Platform or vendor.
    #[serde(default)]
    pub platform: String,
    /// Model.
    #[serde(default)]
    pub model: String,
    /// Persona id or name; supplies roles and classifications when those are absent.
    pub persona: Option<String>,
    /// Role names (default: the persona's).
    pub roles: Option<Vec<String>>,
    /// Classifications (default: the persona's).
    pub classifications: Option<Vec<String>>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Parent agent id or name, when spawned.
    pub parent: Option<String>,
    /// Expiry time.
    pub expires_at: Option<DateTime<Utc>>,
    /// Keep it as a draft (`proposed`) instead of submitting it.
    #[serde(default)]
    pub draft: bool,
}

/// Change an agent. Absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    /// New owner (id or e-mail); clears the orphaned flag.
    pub owner: Option<String>,
    /// New team id or name.
    pub team: Option<String>,
    /// New purpose.
    pub purpose: Option<String>,
    /// New platform.
    pub platform: Option<String>,
    /// New model.
    pub model: Option<String>,
    /// Replacement labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// New expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Replacement roles. A change that raises an active agent's risk tier
    /// waits for the tier's approval chain (the answer is then 202).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Replacement data classifications (approval as for `roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifications: Option<Vec<String>>,
}

/// A lifecycle transition with an optional reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// Why (recorded in the audit log and on the agent).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to a transition: every agent whose state changed (the target
/// first, then descendants for a cascading decommission).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransitionResult {
    /// The agent after the transition.
    pub agent: Agent,
    /// Ids of descendants that changed state with it.
    pub cascaded: Vec<String>,
    /// How many credentials were revoked.
    pub keys_revoked: u64,
}

/// Filters for listing agents.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentFilter {
    /// Owner id or e-mail.
    pub owner: Option<String>,
    /// Team id or name.
    pub team: Option<String>,
    /// Persona id or name.
    pub persona: Option<String>,
    /// Lifecycle state.
    pub state: Option<String>,
    /// Risk tier.
    pub risk_tier: Option<String>,
    /// Parent agent id.
    pub parent: Option<String>,
    /// Only orphaned agents (`true`) or only owned ones (`false`).
    pub orphaned: Option<bool>,
    /// Cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
}

/// Cursor and size for the other lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// Filter by status (humans: `active` or `deactivated`).
    pub status: Option<String>,
    /// Filter by team id or name (humans).
    pub team: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The records, oldest first.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The answer to deactivating a human: the agents that became orphaned.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HumanDeactivated {
    /// The human after the change.
    pub human: Human,
    /// Ids of the agents they owned, now flagged orphaned.
    pub orphaned_agents: Vec<String>,
    /// Ids of their API tokens, revoked by a deactivation (a leaver's
    /// credentials stop working; reactivating does not bring them back).
    #[serde(default)]
    pub revoked_tokens: Vec<String>,
    /// Ids of the delegations that let agents act for them, revoked by a
    /// deactivation.
    #[serde(default)]
    pub revoked_delegations: Vec<String>,
}

/// Liveness and readiness answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
    /// The store backend (`sqlite` or `postgres`).
    pub store: Option<String>,
}
