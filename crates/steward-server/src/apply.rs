//! Governance as code: bring a tenant to the state a directory declares.
//!
//! The plan is computed by comparing the declaration with the store; then
//! every change runs in ONE transaction, in dependency order (roles, teams,
//! humans, personas, resource types, actions, entities and policies, agents,
//! activations). Any failure rolls everything back and names the item. A dry
//! run executes the same transaction and rolls it back, so `steward plan`
//! validates exactly what `steward apply` would do. Applying the same
//! directory twice changes nothing the second time. Apply creates and updates;
//! it never deletes inventory (policies only with `prune_policies`).

use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, Error};
use steward_store::policies::PolicyChange;
use steward_types::{AgentState, ApplyRequest, ApplyResponse, ErrorCode, UpdateAgent, UpdateHuman};

use crate::state::AppState;

/// Prefix an error with the item it concerns.
fn about(item: String) -> impl FnOnce(Error) -> Error {
    move |mut e| {
        e.message = format!("{item}: {}", e.message);
        e
    }
}

fn missing(e: &Error) -> bool {
    e.code == ErrorCode::NotFound
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Plan and (unless `dry_run`) apply.
pub async fn apply(
    state: &AppState,
    ctx: &ChangeContext,
    req: ApplyRequest,
) -> Result<ApplyResponse, Error> {
    let store = &state.store;
    let tenant = ctx.tenant_id.as_str();
    let mut out = ApplyResponse::default();

    // Plan the inventory part from what exists.
    let mut new_roles = Vec::new();
    for r in &req.roles {
        match store.get_role(tenant, &r.name).await {
            Ok(_) => out.unchanged += 1,
            Err(e) if missing(&e) => {
                out.changes.push(format!("role {}: create", r.name));
                new_roles.push(r.clone());
            }
            Err(e) => return Err(e),
        }
    }
    let mut new_teams = Vec::new();
    for t in &req.teams {
        match store.get_team(tenant, &t.name).await {
            Ok(_) => out.unchanged += 1,
            Err(e) if missing(&e) => {
                out.changes.push(format!("team {}: create", t.name));
                new_teams.push(t.clone());
            }
            Err(e) => return Err(e),
        }
    }
    let mut new_humans = Vec::new();
    let mut human_updates = Vec::new();
    for h in &req.humans {
        match store.get_human(tenant, &h.email).await {
            Ok(existing) => {
                let mut team_names = Vec::new();
                for id in &existing.teams {
                    team_names.push(store.get_team(tenant, id).await?.name);
                }
                let mut update = UpdateHuman::default();
                if existing.display_name != h.display_name {
                    update.display_name = Some(h.display_name.clone());
                }
                if sorted(team_names) != sorted(h.teams.clone()) {
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
                    human_updates.push((h.email.clone(), update));
                } else {
                    out.unchanged += 1;
                }
            }
            Err(e) if missing(&e) => {
                out.changes.push(format!("human {}: create", h.email));
                new_humans.push(h.clone());
            }
            Err(e) => return Err(e),
        }
    }
    let mut new_personas = Vec::new();
    for p in &req.personas {
        match store.get_persona(tenant, &p.name).await {
            Ok(_) => out.unchanged += 1,
            Err(e) if missing(&e) => {
                out.changes.push(format!("persona {}: create", p.name));
                new_personas.push(p.clone());
            }
            Err(e) => return Err(e),
        }
    }
    let mut new_agents = Vec::new();
    let mut agent_updates = Vec::new();
    let mut pending_names = std::collections::HashSet::new();
    for a in &req.agents {
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
                if a.expires_at.is_some() && a.expires_at != existing.expires_at {
                    update.expires_at = a.expires_at;
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
                let changed = update.owner.is_some()
                    || update.team.is_some()
                    || update.purpose.is_some()
                    || update.platform.is_some()
                    || update.model.is_some()
                    || update.labels.is_some()
                    || update.expires_at.is_some();
                if changed {
                    out.changes.push(format!("agent {}: update", a.name));
                    agent_updates.push((a.name.clone(), update));
                } else {
                    out.unchanged += 1;
                }
                if matches!(
                    existing.state,
                    AgentState::PendingApproval | AgentState::Proposed
                ) {
                    pending_names.insert(a.name.clone());
                }
            }
            Err(e) if missing(&e) => {
                out.changes.push(format!("agent {}: register", a.name));
                new_agents.push(a.clone());
            }
            Err(e) => return Err(e),
        }
    }

    // Upstream MCP servers: created or replaced when they differ.
    let mut mcp_servers = Vec::new();
    for m in &req.mcp_servers {
        steward_store::mcp_servers::validate_mcp_server(m)
            .map_err(about(format!("mcp_server {}", m.name)))?;
        match store.get_mcp_server(tenant, &m.name).await {
            Ok(existing) => {
                if existing.matches(m) {
                    out.unchanged += 1;
                } else {
                    out.changes.push(format!("mcp_server {}: update", m.name));
                    mcp_servers.push(m.clone());
                }
            }
            Err(e) if missing(&e) => {
                out.changes.push(format!("mcp_server {}: register", m.name));
                mcp_servers.push(m.clone());
            }
            Err(e) => return Err(e),
        }
    }

    // Trusted identity providers: created or replaced when they differ.
    let mut issuers = Vec::new();
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
                    issuers.push(d.clone());
                }
                None => {
                    out.changes
                        .push(format!("delegation_issuer {}: create", d.name));
                    issuers.push(d.clone());
                }
            }
        }
    }

    // The policy part: declarations, entities and policies.
    let mut policy_changes = Vec::new();
    // What MCP policies talk about, where the tenant lacks it (the
    // directory's own declarations come later and win).
    let mcp_declarations = if req.mcp_servers.is_empty() {
        Vec::new()
    } else {
        crate::routes::mcp_servers::missing_declarations(&store.policy_state(tenant).await?)
    };
    let mcp_declared = mcp_declarations.len();
    policy_changes.extend(mcp_declarations);
    policy_changes.extend(
        req.resource_types
            .iter()
            .cloned()
            .map(PolicyChange::PutResourceType),
    );
    policy_changes.extend(req.actions.iter().cloned().map(PolicyChange::PutAction));
    policy_changes.extend(req.entities.iter().cloned().map(PolicyChange::PutEntity));
    policy_changes.extend(req.policies.iter().cloned().map(PolicyChange::PutPolicy));
    if req.prune_policies {
        let declared: std::collections::HashSet<&str> =
            req.policies.iter().map(|p| p.id.as_str()).collect();
        for p in store.policy_state(tenant).await?.policies {
            if !declared.contains(&p.id.as_str()) {
                policy_changes.push(PolicyChange::DeletePolicy(p.id));
            }
        }
    }

    // The policy part is compiled and checked before the transaction, so a
    // large set does not hold the store's writer while Cedar works; the
    // transaction checks again only if the policy state moved meanwhile.
    // The engine compiled last serves the rebuild after the commit.
    let mut policy_check = if policy_changes.is_empty() {
        None
    } else {
        let mut check =
            crate::engines::ChangeCheck::new(&state.engines, store, tenant, &policy_changes)
                .await?;
        let prechecked = store
            .precheck_policies(ctx, &policy_changes, &mut |st, entities| {
                check.run(st, entities)
            })
            .await?;
        Some((Some(prechecked), check))
    };

    // Execute everything in one transaction.
    let mut tx = store.begin().await?;
    for r in new_roles {
        let name = r.name.clone();
        store
            .create_role_in(&mut tx, ctx, r)
            .await
            .map_err(about(format!("role {name}")))?;
    }
    for t in new_teams {
        let name = t.name.clone();
        store
            .create_team_in(&mut tx, ctx, t)
            .await
            .map_err(about(format!("team {name}")))?;
    }
    for h in new_humans {
        let email = h.email.clone();
        store
            .create_human_in(&mut tx, ctx, h)
            .await
            .map_err(about(format!("human {email}")))?;
    }
    for (email, update) in human_updates {
        store
            .update_human_in(&mut tx, ctx, &email, update)
            .await
            .map_err(about(format!("human {email}")))?;
    }
    for p in new_personas {
        let name = p.name.clone();
        store
            .create_persona_in(&mut tx, ctx, &state.rules, p)
            .await
            .map_err(about(format!("persona {name}")))?;
    }
    let mut policy_report = Vec::new();
    if let Some((prechecked, check)) = policy_check.as_mut() {
        let prechecked = prechecked.take();
        let report = store
            .change_policies_in(&mut tx, ctx, policy_changes, prechecked, |st, entities| {
                check.run(st, entities)
            })
            .await?;
        policy_report = report.changes;
        out.unchanged += (mcp_declared
            + req.resource_types.len()
            + req.actions.len()
            + req.entities.len()
            + req.policies.len())
        .saturating_sub(
            policy_report
                .iter()
                .filter(|l| !l.ends_with("deleted"))
                .count(),
        );
    }
    out.changes.extend(policy_report);
    for m in mcp_servers {
        let name = m.name.clone();
        store
            .put_mcp_server_in(&mut tx, ctx, m)
            .await
            .map_err(about(format!("mcp_server {name}")))?;
    }
    for d in issuers {
        store
            .put_issuer_in(&mut tx, ctx, &d.name, &d.put())
            .await
            .map_err(about(format!("delegation_issuer {}", d.name)))?;
    }
    for a in new_agents {
        let name = a.name.clone();
        let agent = store
            .register_agent_in(&mut tx, ctx, &state.rules, a)
            .await
            .map_err(about(format!("agent {name}")))?;
        // A pending registration files its approval (or, with an empty
        // chain for its tier, is active at once).
        let agent = match store
            .request_registration_approval_in(&mut tx, ctx, &state.rules, &agent)
            .await
            .map_err(about(format!("agent {name}")))?
        {
            Some(_) => agent,
            None if agent.state == AgentState::PendingApproval => steward_types::Agent {
                state: AgentState::Active,
                ..agent
            },
            None => agent,
        };
        if matches!(
            agent.state,
            AgentState::PendingApproval | AgentState::Proposed
        ) {
            pending_names.insert(name);
        }
    }
    for (name, update) in agent_updates {
        store
            .update_agent_in(&mut tx, ctx, &name, update)
            .await
            .map_err(about(format!("agent {name}")))?;
    }
    for name in &req.activate {
        if pending_names.contains(name) {
            // The reviewed directory is the approval: its open
            // registration approval is closed, saying so.
            let agent = store
                .get_agent_in(&mut tx, tenant, name)
                .await
                .map_err(about(format!("activate {name}")))?;
            store
                .cancel_agent_approvals_in(
                    &mut tx,
                    ctx,
                    &agent.id,
                    "approved by applying a reviewed governance directory",
                )
                .await
                .map_err(about(format!("activate {name}")))?;
            store
                .transition_agent_in(
                    &mut tx,
                    ctx,
                    name,
                    Transition::Activate,
                    Some("activated by governance directory".into()),
                )
                .await
                .map_err(about(format!("activate {name}")))?;
            out.changes.push(format!("agent {name}: activate"));
        } else if store.get_agent(tenant, name).await.is_err()
            && !req.agents.iter().any(|a| &a.name == name)
        {
            return Err(Error::unknown_reference("activate", "agent", name));
        }
    }
    for q in &req.quotas {
        let before = match store.get_quota(tenant, &q.name).await {
            Ok(b) => Some(b),
            Err(e) if missing(&e) => None,
            Err(e) => return Err(e),
        };
        let after = store
            .put_quota_in(&mut tx, ctx, q.clone())
            .await
            .map_err(about(format!("quota {}", q.name)))?;
        match before {
            None => out.changes.push(format!("quota {}: create", q.name)),
            Some(b) if b.updated_at == after.updated_at => out.unchanged += 1,
            Some(_) => out.changes.push(format!("quota {}: update", q.name)),
        }
    }
    if req.dry_run {
        tx.rollback()
            .await
            .map_err(|e| Error::internal(format!("rollback failed: {e}")))?;
        return Ok(out);
    }
    tx.commit()
        .await
        .map_err(|e| Error::internal(format!("commit failed: {e}")))?;
    out.applied = true;
    state.quotas.invalidate(tenant);
    state.mcp.registrations_changed(tenant);
    // The committed state is what the engine must reflect: rebuild it.
    let compiled = policy_check.and_then(|(_, check)| check.compiled);
    state
        .engines
        .reload_after(store, tenant, compiled.as_ref())
        .await?;
    Ok(out)
}
