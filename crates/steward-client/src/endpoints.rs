//! One method per API endpoint, grouped by resource. Path parameters named
//! `id` accept an id or a unique name (an e-mail address for humans).

use steward_types::{
    Agent, AgentFilter, ApiKey, ApiToken, AuditEntry, AuditFilter, CreateHuman, CreateKey,
    CreatePersona, CreateRole, CreateTeam, CreateTenant, CreateToken, CreatedKey, CreatedToken,
    Health, Human, HumanDeactivated, Page, PageQuery, Persona, RegisterAgent, Role, Team, Tenant,
    TransitionRequest, TransitionResult, UpdateAgent, UpdateHuman, WhoAmI,
};

use crate::{Client, Result};

/// The body sent to action endpoints that take no parameters (`{}`).
fn no_parameters() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// A lifecycle transition of an agent: the last segment of
/// `POST /v1/agents/{id}/{transition}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentTransition {
    /// `proposed` to `pending_approval` (or straight to `active` for low risk).
    Submit,
    /// Approve a pending registration.
    Activate,
    /// Refuse a pending registration.
    Reject,
    /// Stop an active agent for now; its keys stop working.
    Suspend,
    /// Let a suspended agent act again.
    Resume,
    /// Retire an agent and its descendants for good, revoking their keys.
    Decommission,
}

impl AgentTransition {
    /// Every transition.
    pub const ALL: [AgentTransition; 6] = [
        AgentTransition::Submit,
        AgentTransition::Activate,
        AgentTransition::Reject,
        AgentTransition::Suspend,
        AgentTransition::Resume,
        AgentTransition::Decommission,
    ];

    /// The path segment (and verb): `submit`, `activate`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            AgentTransition::Submit => "submit",
            AgentTransition::Activate => "activate",
            AgentTransition::Reject => "reject",
            AgentTransition::Suspend => "suspend",
            AgentTransition::Resume => "resume",
            AgentTransition::Decommission => "decommission",
        }
    }
}

impl std::fmt::Display for AgentTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health and identity.
impl Client {
    /// `GET /healthz`: is the process up.
    pub async fn health(&self) -> Result<Health> {
        self.get(&["healthz"]).await
    }

    /// `GET /readyz`: can it serve (is the store reachable).
    pub async fn ready(&self) -> Result<Health> {
        self.get(&["readyz"]).await
    }

    /// `GET /v1/whoami`: who the server takes this client's credential for.
    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.get(&["v1", "whoami"]).await
    }
}

/// Tenants and API tokens.
impl Client {
    /// `GET /v1/tenants`.
    pub async fn list_tenants(&self, query: &PageQuery) -> Result<Page<Tenant>> {
        self.get_query(&["v1", "tenants"], query).await
    }

    /// `POST /v1/tenants` (platform administrators only).
    pub async fn create_tenant(&self, request: &CreateTenant) -> Result<Tenant> {
        self.post(&["v1", "tenants"], request).await
    }

    /// `GET /v1/tokens`.
    pub async fn list_tokens(&self, query: &PageQuery) -> Result<Page<ApiToken>> {
        self.get_query(&["v1", "tokens"], query).await
    }

    /// `POST /v1/tokens`: the answer holds the secret, shown only this once.
    pub async fn create_token(&self, request: &CreateToken) -> Result<CreatedToken> {
        self.post(&["v1", "tokens"], request).await
    }

    /// `POST /v1/tokens/{id}/revoke`.
    pub async fn revoke_token(&self, id: &str) -> Result<ApiToken> {
        self.post(&["v1", "tokens", id, "revoke"], &no_parameters())
            .await
    }
}

/// Teams, humans, roles and personas.
impl Client {
    /// `GET /v1/teams`.
    pub async fn list_teams(&self, query: &PageQuery) -> Result<Page<Team>> {
        self.get_query(&["v1", "teams"], query).await
    }

    /// `POST /v1/teams`.
    pub async fn create_team(&self, request: &CreateTeam) -> Result<Team> {
        self.post(&["v1", "teams"], request).await
    }

    /// `GET /v1/teams/{id}`.
    pub async fn get_team(&self, id: &str) -> Result<Team> {
        self.get(&["v1", "teams", id]).await
    }

    /// `GET /v1/humans`, filtered by `status` and `team` when set in `query`.
    pub async fn list_humans(&self, query: &PageQuery) -> Result<Page<Human>> {
        self.get_query(&["v1", "humans"], query).await
    }

    /// `POST /v1/humans`.
    pub async fn create_human(&self, request: &CreateHuman) -> Result<Human> {
        self.post(&["v1", "humans"], request).await
    }

    /// `GET /v1/humans/{id}` (id or e-mail).
    pub async fn get_human(&self, id: &str) -> Result<Human> {
        self.get(&["v1", "humans", id]).await
    }

    /// `PATCH /v1/humans/{id}`.
    pub async fn update_human(&self, id: &str, request: &UpdateHuman) -> Result<Human> {
        self.patch(&["v1", "humans", id], request).await
    }

    /// `POST /v1/humans/{id}/deactivate`: the answer lists the agents that
    /// became orphaned.
    pub async fn deactivate_human(
        &self,
        id: &str,
        request: &TransitionRequest,
    ) -> Result<HumanDeactivated> {
        self.post(&["v1", "humans", id, "deactivate"], request)
            .await
    }

    /// `POST /v1/humans/{id}/reactivate`.
    pub async fn reactivate_human(&self, id: &str) -> Result<Human> {
        self.post(&["v1", "humans", id, "reactivate"], &no_parameters())
            .await
    }

    /// `GET /v1/roles`.
    pub async fn list_roles(&self, query: &PageQuery) -> Result<Page<Role>> {
        self.get_query(&["v1", "roles"], query).await
    }

    /// `POST /v1/roles`.
    pub async fn create_role(&self, request: &CreateRole) -> Result<Role> {
        self.post(&["v1", "roles"], request).await
    }

    /// `GET /v1/roles/{id}`.
    pub async fn get_role(&self, id: &str) -> Result<Role> {
        self.get(&["v1", "roles", id]).await
    }

    /// `GET /v1/personas`.
    pub async fn list_personas(&self, query: &PageQuery) -> Result<Page<Persona>> {
        self.get_query(&["v1", "personas"], query).await
    }

    /// `POST /v1/personas`.
    pub async fn create_persona(&self, request: &CreatePersona) -> Result<Persona> {
        self.post(&["v1", "personas"], request).await
    }

    /// `GET /v1/personas/{id}`.
    pub async fn get_persona(&self, id: &str) -> Result<Persona> {
        self.get(&["v1", "personas", id]).await
    }
}

/// Agents and their keys.
impl Client {
    /// `GET /v1/agents` with filters, cursor and page size.
    pub async fn list_agents(&self, filter: &AgentFilter) -> Result<Page<Agent>> {
        self.get_query(&["v1", "agents"], filter).await
    }

    /// `POST /v1/agents`.
    pub async fn register_agent(&self, request: &RegisterAgent) -> Result<Agent> {
        self.post(&["v1", "agents"], request).await
    }

    /// `GET /v1/agents/{id}`.
    pub async fn get_agent(&self, id: &str) -> Result<Agent> {
        self.get(&["v1", "agents", id]).await
    }

    /// `PATCH /v1/agents/{id}`.
    pub async fn update_agent(&self, id: &str, request: &UpdateAgent) -> Result<Agent> {
        Ok(self.update_agent_or_hold(id, request).await?.0)
    }

    /// `PATCH /v1/agents/{id}`, telling a change held for approval (`202`)
    /// from one applied: the agent as it now is, and the id of the approval
    /// the change waits for, if it waits.
    pub async fn update_agent_or_hold(
        &self,
        id: &str,
        request: &UpdateAgent,
    ) -> Result<(Agent, Option<String>)> {
        let response = self
            .request(reqwest::Method::PATCH, &["v1", "agents", id])?
            .json(request)
            .send()
            .await?;
        let held = (response.status() == reqwest::StatusCode::ACCEPTED)
            .then(|| {
                response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| l.rsplit('/').next())
                    .map(str::to_owned)
            })
            .flatten();
        let agent = crate::decode(response).await?;
        Ok((agent, held))
    }

    /// `POST /v1/agents/{id}/{transition}`: move the agent through its
    /// lifecycle, recording `reason` when given.
    pub async fn transition_agent(
        &self,
        id: &str,
        transition: AgentTransition,
        reason: Option<&str>,
    ) -> Result<TransitionResult> {
        let request = TransitionRequest {
            reason: reason.map(str::to_owned),
        };
        self.post(&["v1", "agents", id, transition.as_str()], &request)
            .await
    }

    /// `POST /v1/agents/{id}/submit`: submit a draft for approval.
    pub async fn submit_agent(&self, id: &str, reason: Option<&str>) -> Result<TransitionResult> {
        self.transition_agent(id, AgentTransition::Submit, reason)
            .await
    }

    /// `POST /v1/agents/{id}/activate`: approve a pending registration.
    pub async fn activate_agent(&self, id: &str, reason: Option<&str>) -> Result<TransitionResult> {
        self.transition_agent(id, AgentTransition::Activate, reason)
            .await
    }

    /// `POST /v1/agents/{id}/reject`: refuse a pending registration.
    pub async fn reject_agent(&self, id: &str, reason: Option<&str>) -> Result<TransitionResult> {
        self.transition_agent(id, AgentTransition::Reject, reason)
            .await
    }

    /// `POST /v1/agents/{id}/suspend`.
    pub async fn suspend_agent(&self, id: &str, reason: Option<&str>) -> Result<TransitionResult> {
        self.transition_agent(id, AgentTransition::Suspend, reason)
            .await
    }

    /// `POST /v1/agents/{id}/resume`.
    pub async fn resume_agent(&self, id: &str, reason: Option<&str>) -> Result<TransitionResult> {
        self.transition_agent(id, AgentTransition::Resume, reason)
            .await
    }

    /// `POST /v1/agents/{id}/decommission`: cascades to descendants.
    pub async fn decommission_agent(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<TransitionResult> {
        self.transition_agent(id, AgentTransition::Decommission, reason)
            .await
    }

    /// `GET /v1/agents/{id}/keys`.
    pub async fn list_keys(&self, agent: &str, query: &PageQuery) -> Result<Page<ApiKey>> {
        self.get_query(&["v1", "agents", agent, "keys"], query)
            .await
    }

    /// `POST /v1/agents/{id}/keys`: the answer holds the secret, shown only
    /// this once.
    pub async fn create_key(&self, agent: &str, request: &CreateKey) -> Result<CreatedKey> {
        self.post(&["v1", "agents", agent, "keys"], request).await
    }

    /// `POST /v1/agents/{id}/keys/{key_id}/revoke`.
    pub async fn revoke_key(&self, agent: &str, key_id: &str) -> Result<ApiKey> {
        self.post(
            &["v1", "agents", agent, "keys", key_id, "revoke"],
            &no_parameters(),
        )
        .await
    }
}

/// The audit log.
impl Client {
    /// `GET /v1/audit`, filtered by resource id and action.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>> {
        self.get_query(&["v1", "audit"], filter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_name_their_path_segment() {
        let names: Vec<&str> = AgentTransition::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "submit",
                "activate",
                "reject",
                "suspend",
                "resume",
                "decommission"
            ]
        );
    }
}
