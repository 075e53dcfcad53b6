//! Governance as code: the desired state of a tenant, as `steward apply`
//! sends it after reading a directory, and the plan the server answers with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    CreateHuman, CreatePersona, CreateRole, CreateTeam, PutAction, PutMcpServer, PutPolicy,
    PutResourceType, RegisterAgent, ResourceEntity,
};

/// Everything a directory declares. Absent lists declare nothing (apply
/// never deletes inventory; policies, actions and types not in the directory
/// are kept unless `prune_policies` is set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// Only compute and return the plan.
    #[serde(default)]
    pub dry_run: bool,
    /// Delete policies that are not in the directory.
    #[serde(default)]
    pub prune_policies: bool,
    /// Teams.
    #[serde(default)]
    pub teams: Vec<CreateTeam>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<CreateRole>,
    /// Humans.
    #[serde(default)]
    pub humans: Vec<CreateHuman>,
    /// Personas.
    #[serde(default)]
    pub personas: Vec<CreatePersona>,
    /// Agents.
    #[serde(default)]
    pub agents: Vec<RegisterAgent>,
    /// Names of agents to activate if they wait for approval (the reviewed
    /// directory is the approval).
    #[serde(default)]
    pub activate: Vec<String>,
    /// Resource types.
    #[serde(default)]
    pub resource_types: Vec<PutResourceType>,
    /// Actions.
    #[serde(default)]
    pub actions: Vec<PutAction>,
    /// Known resources.
    #[serde(default)]
    pub entities: Vec<ResourceEntity>,
    /// Policies.
    #[serde(default)]
    pub policies: Vec<PutPolicy>,
    /// Quotas (created or replaced by name; quotas not in the directory are kept).
    #[serde(default)]
    pub quotas: Vec<crate::PutQuota>,
    /// Upstream MCP servers for the gateway (created or replaced; never deleted).
    #[serde(default)]
    pub mcp_servers: Vec<PutMcpServer>,
    /// Trusted identity providers for proven delegation (created or
    /// replaced; never deleted).
    #[serde(default)]
    pub delegation_issuers: Vec<crate::DeclaredIssuer>,
}

/// The plan, and whether it was carried out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    /// One line per change, such as `agent reviewer: register`.
    pub changes: Vec<String>,
    /// Items already as declared.
    pub unchanged: usize,
    /// Differences apply does not make (for example role changes of an
    /// existing agent, which need an approval).
    pub warnings: Vec<String>,
    /// False for a dry run.
    pub applied: bool,
}
