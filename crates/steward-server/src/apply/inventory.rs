//! The inventory part of an apply: the declared humans, teams, roles,
//! personas, agents, MCP servers and issuers against the store.

use steward_core::{ChangeContext, Error};
use steward_types::{AgentState, ApplyRequest, RegisterAgent, UpdateAgent, UpdateHuman};

use crate::state::AppState;

use super::*;

/// Compare the declared inventory (and MCP servers, issuers) with the store.
pub(super) async fn plan_inventory(
    state: &AppState,
    ctx: &ChangeContext,
    may_run_commands: bool,
    req: &ApplyRequest,
) -> Result<Plan, Error> {
    let store = &state.store;
    let tenant = ctx.tenant_id.as_str();
    let mut plan = Plan::default();
    let out = &mut plan.out;

    for r in &req.roles {
        match store.get_role(tenant, &r.name).await {
            Ok(_) => out.unchanged += 1,
            Err(e) if missing(&e) => {
                out.changes.push(format!("role {}: create", r.name));
                plan.new_roles.push(r.clone());
            }
            Err(e) => return Err(e),
        }
    }
    for t in &req.teams {
        match store.get_team(tenant, &t.name).await {
            Ok(_) => out.unchanged += 1,
            Err(e) if missing(&e) => {
                out.changes.push(format!("team {}: create", t.name));
                plan.new_teams.push(t.clone());
            }
            Err(e) => return Err(e),
        }
    }
    for h in &req.humans {
        match store.get_human(tenant, &h.email).await {
            Ok(existing) => {
                // Teams are declared by id or name and stored by id: compare
                // ids. A team not found yet (created by this apply) differs.
                let mut declared_teams = Vec::new();
                for t in &h.teams {
                    declared_teams.push(id_or_new(store.get_team(tenant, t).await, t, |x| x.id)?);
                }
                let mut update = UpdateHuman::default();
                if existing.display_name != h.display_name {
                    update.display_name = Some(h.display_name.clone());
                }
                if sorted(existing.teams.clone()) != sorted(declared_teams) {
                    update.teams = Some(h.teams.clone());
                }
                if sorted(existing.roles.clone()) != sorted(h.roles.clone()) {
                    update.roles = Some(h.roles.clone());
                }
                if h.external_id.is_some() && existing.external_id != h.external_id {
                    out.warnings.push(format!(
                        "human {}: external id differs; apply does not change it",
                        h.email
                    ));
                }
                if update.display_name.is_some() || update.teams.is_some() || update.roles.is_some()
                {
                    out.changes.push(format!("human {}: update", h.email));
                    plan.human_updates.push((h.email.clone(), update));
                } else {
                    out.unchanged += 1;
                }
            }
            Err(e) if missing(&e) => {
                out.changes.push(format!("human {}: create", h.email));
                plan.new_humans.push(h.clone());
            }
            Err(e) => return Err(e),
        }
    }
    // What a new persona may hold for approval: the tenant's actions, the
    // directory's, and the gateway's when it registers MCP servers.
    let mut declared = state.engines.get(store, tenant).await?.action_names();
    declared.extend(req.actions.iter().map(|a| a.name.clone()));
    if !req.mcp_servers.is_empty() {
        let all = steward_store::policies::PolicyState::default();
        declared.extend(
            crate::routes::mcp_servers::missing_declarations(&all)
                .into_iter()
                .filter_map(|c| match c {
                    steward_store::policies::PolicyChange::PutAction(a) => Some(a.name),
                    _ => None,
                }),
        );
    }
    for p in &req.personas {
        match store.get_persona(tenant, &p.name).await {
            Ok(_) => out.unchanged += 1,
            Err(e) if missing(&e) => {
                crate::routes::catalog::check_persona_actions(p, &declared)
                    .map_err(about(format!("persona {}", p.name)))?;
                out.changes.push(format!("persona {}: create", p.name));
                plan.new_personas.push(p.clone());
            }
            Err(e) => return Err(e),
        }
    }
    for a in &req.agents {
        let expires_at = a.expires_at.map(as_stored);
        match store.get_agent(tenant, &a.name).await {
            Ok(existing) => {
                let mut update = UpdateAgent::default();
                let owner_changed = match store.get_human(tenant, &a.owner).await {
                    Ok(h) => h.id != existing.owner_id,
                    Err(e) if missing(&e) => true,
                    Err(e) => return Err(e),
                };
                if owner_changed {
                    update.owner = Some(a.owner.clone());
                }
                let team_id = match &a.team {
                    Some(t) => store.get_team(tenant, t).await.ok().map(|t| t.id),
                    None => None,
                };
                if a.team.is_some() && team_id != existing.team_id {
                    update.team = a.team.clone();
                }
                // No update takes a team or an expiry away: say so rather
                // than report the agent as matching the directory.
                if a.team.is_none() && existing.team_id.is_some() {
                    out.warnings.push(format!(
                        "agent {}: the directory names no team, but the agent has one; apply changes a team, it does not remove one",
                        a.name
                    ));
                }
                if expires_at.is_none() && existing.expires_at.is_some() {
                    out.warnings.push(format!(
                        "agent {}: the directory sets no expiry, but the agent expires; apply sets or changes an expiry, it does not remove one",
                        a.name
                    ));
                }
                if a.purpose != existing.purpose {
                    update.purpose = Some(a.purpose.clone());
                }
                if a.platform != existing.platform {
                    update.platform = Some(a.platform.clone());
                }
                if a.model != existing.model {
                    update.model = Some(a.model.clone());
                }
                if a.labels != existing.labels {
                    update.labels = Some(a.labels.clone());
                }
                if expires_at.is_some() && expires_at != existing.expires_at {
                    update.expires_at = expires_at;
                }
                let roles_differ = a
                    .roles
                    .as_ref()
                    .is_some_and(|r| sorted(r.clone()) != sorted(existing.roles.clone()));
                let classes_differ = a
                    .classifications
                    .as_ref()
                    .is_some_and(|c| sorted(c.clone()) != sorted(existing.classifications.clone()));
                if roles_differ || classes_differ {
                    out.warnings.push(format!(
                        "agent {}: roles or classifications differ from the directory; changing them is a mover change that needs approval, and apply leaves them",
                        a.name
                    ));
                }
                // Persona and parent are set when an agent is registered:
                // its roles came from the persona, and a child's grants are
                // bounded by its parent's. No update path changes them.
                let persona_id = match &a.persona {
                    Some(p) => Some(id_or_new(store.get_persona(tenant, p).await, p, |x| x.id)?),
                    None => None,
                };
                if persona_id != existing.persona_id {
                    out.warnings.push(format!(
                        "agent {}: persona differs from the directory; an agent's persona is fixed when it is registered, and apply leaves it",
                        a.name
                    ));
                }
                let parent_id = match &a.parent {
                    Some(p) => Some(id_or_new(store.get_agent(tenant, p).await, p, |x| x.id)?),
                    None => None,
                };
                if parent_id != existing.parent_id {
                    out.warnings.push(format!(
                        "agent {}: parent differs from the directory; an agent's parent is fixed when it is spawned, and apply leaves it",
                        a.name
                    ));
                }
                let changed = update.owner.is_some()
                    || update.team.is_some()
                    || update.purpose.is_some()
                    || update.platform.is_some()
                    || update.model.is_some()
                    || update.labels.is_some()
                    || update.expires_at.is_some();
                if changed {
                    out.changes.push(format!("agent {}: update", a.name));
                    plan.agent_updates.push((a.name.clone(), update));
                } else {
                    out.unchanged += 1;
                }
                if matches!(
                    existing.state,
                    AgentState::PendingApproval | AgentState::Proposed
                ) {
                    plan.pending_names.insert(a.name.clone());
                }
            }
            Err(e) if missing(&e) => {
                out.changes.push(format!("agent {}: register", a.name));
                plan.new_agents.push(RegisterAgent {
                    expires_at,
                    ..a.clone()
                });
            }
            Err(e) => return Err(e),
        }
    }

    // Upstream MCP servers: created or replaced when they differ.
    for m in &req.mcp_servers {
        steward_store::mcp_servers::validate_mcp_server(m)
            .map_err(about(format!("mcp_server {}", m.name)))?;
        let existing = match store.get_mcp_server(tenant, &m.name).await {
            Ok(existing) => Some(existing),
            Err(e) if missing(&e) => None,
            Err(e) => return Err(e),
        };
        crate::routes::mcp_servers::check_command(may_run_commands, m, existing.as_ref())?;
        crate::routes::mcp_servers::check_destination(&state.outbound, m)?;
        match existing {
            Some(existing) => {
                if existing.matches(m) {
                    out.unchanged += 1;
                } else {
                    out.changes.push(format!("mcp_server {}: update", m.name));
                    plan.mcp_servers.push(m.clone());
                }
            }
            None => {
                out.changes.push(format!("mcp_server {}: register", m.name));
                plan.mcp_servers.push(m.clone());
            }
        }
    }

    // Trusted identity providers: created or replaced when they differ.
    if !req.delegation_issuers.is_empty() {
        let known = store.issuers(tenant).await?;
        for d in &req.delegation_issuers {
            let put = d.put();
            let about_it = || about(format!("delegation_issuer {}", d.name));
            steward_store::delegation::check_issuer(&d.name, &put).map_err(about_it())?;
            crate::delegation::check_jwks(&put.jwks).map_err(about_it())?;
            match known.iter().find(|k| k.name == d.name) {
                Some(k) if k.matches(&put) => out.unchanged += 1,
                Some(_) => {
                    out.changes
                        .push(format!("delegation_issuer {}: update", d.name));
                    plan.issuers.push(d.clone());
                }
                None => {
                    out.changes
                        .push(format!("delegation_issuer {}: create", d.name));
                    plan.issuers.push(d.clone());
                }
            }
        }
    }
    Ok(plan)
}
