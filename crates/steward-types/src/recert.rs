//! Recertification campaigns: owners re-attest, agent by agent, that each
//! agent they own is still needed, or withdraw it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::RiskTier;

/// What happens to an agent nobody attested by the due date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnOverdue {
    /// Suspend it (its owner resumes it after attesting late): the default.
    #[default]
    Suspend,
    /// Only report it as overdue.
    Report,
}

impl OnOverdue {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnOverdue::Suspend => "suspend",
            OnOverdue::Report => "report",
        }
    }
}

/// Starting a campaign (`POST /v1/recertifications`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCampaign {
    /// A name people recognise, unique in the tenant (`2026-Q4`).
    pub name: String,
    /// Days owners have to attest, 1..=90 (default 14).
    #[serde(default)]
    pub due_in_days: Option<u32>,
    /// Only agents at this risk tier or above (default every tier).
    #[serde(default)]
    pub min_risk_tier: Option<RiskTier>,
    /// Only agents of this team (id or name).
    #[serde(default)]
    pub team: Option<String>,
    /// What happens to agents not attested by the due date (default
    /// `suspend`).
    #[serde(default)]
    pub on_overdue: Option<OnOverdue>,
}

/// How many of a campaign's agents are where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CampaignCounts {
    /// Agents in the campaign.
    pub total: u64,
    /// Not yet attested.
    pub pending: u64,
    /// Kept by their owner.
    pub kept: u64,
    /// Suspended by their owner.
    pub suspended: u64,
    /// Decommissioned by their owner.
    pub decommissioned: u64,
    /// Not attested by the due date.
    pub overdue: u64,
}

/// A recertification campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Campaign {
    /// `rc_...`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `open` or `closed`.
    pub status: String,
    /// The tier filter it started with.
    pub min_risk_tier: Option<RiskTier>,
    /// The team filter it started with (team id).
    pub team_id: Option<String>,
    /// What happens to agents not attested in time.
    pub on_overdue: OnOverdue,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// Who started it (token id).
    pub created_by: String,
    /// When owners must have attested.
    pub due_at: DateTime<Utc>,
    /// When it closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Where its agents are.
    pub counts: CampaignCounts,
}

/// One agent of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CampaignItem {
    /// The campaign.
    pub campaign_id: String,
    /// The agent.
    pub agent_id: String,
    /// Its name.
    pub agent_name: String,
    /// Its risk tier when the campaign started.
    pub risk_tier: RiskTier,
    /// The owner asked to attest (human id) when the campaign started.
    pub owner_id: String,
    /// `pending`, `kept`, `suspended`, `decommissioned` or `overdue`.
    pub status: String,
    /// Who attested (token id), or `system` for an overdue item.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// What the owner said.
    pub note: Option<String>,
}

/// Filters for a campaign's agents.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignItemQuery {
    /// Only items in this status.
    pub status: Option<String>,
    /// Only agents of this owner (human id or e-mail).
    pub owner: Option<String>,
    /// Cursor from a previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
}

/// An owner's attestation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attest {
    /// `keep` (still needed, access still right), `suspend` or
    /// `decommission`.
    pub decision: String,
    /// Why (required to suspend or decommission).
    #[serde(default)]
    pub note: Option<String>,
}
