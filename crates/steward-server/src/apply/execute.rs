//! Carrying out an apply's plan in one transaction.

use std::collections::HashSet;
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, Error};

use steward_store::policies::PolicyChange;
use steward_types::{AgentState, ApplyRequest, ApplyResponse, RegisterAgent};

use crate::state::AppState;

use super::policies::{PolicyPlan, blame, plan_policies};
use super::*;

/// Carry out a plan in one transaction (rolled back for a dry run).
pub(super) async fn execute(
    state: &AppState,
    ctx: &ChangeContext,
    req: &ApplyRequest,
    plan: Plan,
) -> Result<ApplyResponse, Error> {
    let store = &state.store;
    let tenant = ctx.tenant_id.as_str();
    let Plan {
        mut out,
        new_roles,
        new_teams,
        new_humans,
        human_updates,
        new_personas,
        new_agents,
        agent_updates,
        mut pending_names,
        mcp_servers,
        issuers,
    } = plan;
    let PolicyPlan {
        changes: policy_changes,
        mcp_declarations,
    } = plan_policies(state, tenant, req).await?;
    // An entity's key is checked before its batch is read, by the store:
    // named here, so that the refusal leads to the entity's file and line.
    for e in &req.entities {
        steward_store::policies::check_entity_key(e)
            .map_err(about(format!("entity {}::{}", e.resource_type, e.id)))?;
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

    // Execute everything in one transaction. It takes the tenant's policy
    // epoch lock before anything is audited: roles, personas and policies
    // move the epoch, and every transaction that does so locks the epoch
    // before the audit log's head (two orders would deadlock).
    let mut tx = store.begin().await?;
    store.lock_policy_epoch_in(&mut tx, tenant).await?;
    // Then the agents and people it will change (with the agents above
    // them), before the first record: a PATCH locks its agent and then
    // the audit log's head, so waiting for that agent while holding the
    // head would deadlock.
    let (agents, humans) = rows_to_lock(req, &new_agents, &agent_updates, &human_updates);
    store
        .lock_for_changes_in(&mut tx, tenant, &agents, &humans)
        .await?;
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
        let report = match store
            .change_policies_in(&mut tx, ctx, policy_changes, prechecked, |st, entities| {
                check.run(st, entities)
            })
            .await
        {
            Ok(report) => report,
            Err(e) => {
                // Name the declaration behind it with the writer released.
                drop(tx);
                return Err(blame(state, ctx, req, &mcp_declarations, e).await);
            }
        };
        policy_report = report.changes;
        // A declaration the MCP servers need and the directory makes too is
        // one item, reported once.
        let mcp_only = mcp_declarations
            .iter()
            .filter(|c| match c {
                PolicyChange::PutResourceType(t) => {
                    !req.resource_types.iter().any(|r| r.name == t.name)
                }
                PolicyChange::PutAction(a) => !req.actions.iter().any(|r| r.name == a.name),
                _ => true,
            })
            .count();
        out.unchanged += (mcp_only
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
    // Parents before their children, whatever order the files give; a
    // parent the directory activates is active before its children are
    // spawned (only an active agent spawns).
    let mut activated = HashSet::new();
    for a in parents_first(new_agents) {
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
            let spawns = req
                .agents
                .iter()
                .any(|c| c.parent.as_deref() == Some(name.as_str()));
            if spawns && req.activate.contains(&name) {
                activate(store, &mut tx, ctx, &name).await?;
                out.changes.push(format!("agent {name}: activate"));
                activated.insert(name);
            } else {
                pending_names.insert(name);
            }
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
            activate(store, &mut tx, ctx, name).await?;
            out.changes.push(format!("agent {name}: activate"));
        } else if !activated.contains(name)
            && store.get_agent(tenant, name).await.is_err()
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
    // Sessions on a server the directory moved to another transport end now.
    state.mcp.registrations_replaced(store, tenant).await;
    // The committed state is what the engine must reflect: rebuild it. The
    // apply is committed whatever happens here; if the rebuild fails, the
    // next refresh does it (an apply that changed what the engine is built
    // from moved the epoch past the engine's).
    let compiled = policy_check.and_then(|(_, check)| check.compiled);
    if let Err(e) = state
        .engines
        .reload_after(store, tenant, compiled.as_ref())
        .await
    {
        tracing::warn!(tenant, error = %e, "could not rebuild the policy engine after an apply; the next refresh retries");
    }
    Ok(out)
}

/// The existing agents and humans an apply's transaction will lock, by
/// name, id or e-mail: agents it updates or activates and the parents it
/// spawns under; the humans it updates and those it makes owners.
fn rows_to_lock(
    req: &ApplyRequest,
    new_agents: &[RegisterAgent],
    agent_updates: &[(String, UpdateAgent)],
    human_updates: &[(String, UpdateHuman)],
) -> (Vec<String>, Vec<String>) {
    let mut agents: Vec<String> = agent_updates.iter().map(|(n, _)| n.clone()).collect();
    agents.extend(new_agents.iter().filter_map(|a| a.parent.clone()));
    agents.extend(req.activate.iter().cloned());
    let mut humans: Vec<String> = human_updates.iter().map(|(e, _)| e.clone()).collect();
    humans.extend(new_agents.iter().map(|a| a.owner.clone()));
    humans.extend(agent_updates.iter().filter_map(|(_, u)| u.owner.clone()));
    (agents, humans)
}

/// Activate a pending agent: the reviewed directory is the approval, so its
/// open registration approval is closed, saying so.
async fn activate(
    store: &steward_store::Store,
    tx: &mut steward_store::Tx,
    ctx: &ChangeContext,
    name: &str,
) -> Result<(), Error> {
    let agent = store
        .get_agent_in(tx, &ctx.tenant_id, name)
        .await
        .map_err(about(format!("activate {name}")))?;
    store
        .cancel_agent_approvals_in(
            tx,
            ctx,
            &agent.id,
            "approved by applying a reviewed governance directory",
        )
        .await
        .map_err(about(format!("activate {name}")))?;
    store
        .transition_agent_in(
            tx,
            ctx,
            name,
            Transition::Activate,
            Some("activated by governance directory".into()),
        )
        .await
        .map_err(about(format!("activate {name}")))?;
    Ok(())
}

/// New agents with every parent the directory declares before its
/// children (declaration order otherwise); a cycle is left to registration
/// to refuse.
fn parents_first(agents: Vec<RegisterAgent>) -> Vec<RegisterAgent> {
    let mut left = agents;
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let waiting = |a: &RegisterAgent| {
            a.parent.as_deref().is_some_and(|p| {
                left.iter()
                    .any(|other| other.name == p && other.name != a.name)
            })
        };
        let ready: Vec<bool> = left.iter().map(|a| !waiting(a)).collect();
        if !ready.contains(&true) {
            out.append(&mut left);
            break;
        }
        let mut keep = Vec::new();
        for (a, ready) in left.into_iter().zip(ready) {
            if ready {
                out.push(a);
            } else {
                keep.push(a);
            }
        }
        left = keep;
    }
    out
}
