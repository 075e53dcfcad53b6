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

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, Error};
use steward_store::policies::{PolicyChange, PolicyState};
use steward_types::{
    AgentState, ApplyRequest, ApplyResponse, CreateHuman, CreatePersona, CreateRole, CreateTeam,
    DeclaredIssuer, ErrorCode, PutMcpServer, RegisterAgent, UpdateAgent, UpdateHuman,
};

use crate::state::AppState;

/// How many times an apply that lost a race with another writer runs again
/// before it gives up.
const ATTEMPTS: usize = 3;

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

/// A time as the store keeps it (to the millisecond). A declared time is
/// compared and written in this form: compared at full precision, an expiry
/// with microseconds would differ from its stored self on every apply.
fn as_stored(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The id of what a lookup of `key` found, or, when it does not exist yet
/// (this apply creates it), a marker no stored id equals.
fn id_or_new<T>(
    found: Result<T, Error>,
    key: &str,
    id: impl FnOnce(T) -> String,
) -> Result<String, Error> {
    match found {
        Ok(x) => Ok(id(x)),
        Err(e) if missing(&e) => Ok(format!("new:{key}")),
        Err(e) => Err(e),
    }
}

/// What the inventory part of an apply will do, from what exists.
#[derive(Default)]
struct Plan {
    out: ApplyResponse,
    new_roles: Vec<CreateRole>,
    new_teams: Vec<CreateTeam>,
    new_humans: Vec<CreateHuman>,
    human_updates: Vec<(String, UpdateHuman)>,
    new_personas: Vec<CreatePersona>,
    new_agents: Vec<RegisterAgent>,
    agent_updates: Vec<(String, UpdateAgent)>,
    /// Existing agents that wait for approval or are drafts.
    pending_names: HashSet<String>,
    mcp_servers: Vec<PutMcpServer>,
    issuers: Vec<DeclaredIssuer>,
}

/// What two plans must share to be the same plan: the changes, and the
/// agents that wait for approval.
type Fingerprint = (Vec<String>, Vec<String>);

impl Plan {
    /// This plan's [`Fingerprint`].
    fn fingerprint(&self) -> Fingerprint {
        let pending = sorted(self.pending_names.iter().cloned().collect());
        (self.out.changes.clone(), pending)
    }
}

/// Plan and (unless `dry_run`) apply.
///
/// The plan is read before the transaction, so another writer (typically
/// the same directory applied twice at once) may create what this apply
/// planned to create. Such a failure is planned again from what then
/// exists: when the plan moved, the apply runs again (and finds less to
/// do); when it did not, the failure is the request's own.
pub async fn apply(
    state: &AppState,
    ctx: &ChangeContext,
    mut req: ApplyRequest,
) -> Result<ApplyResponse, Error> {
    check_policies(&mut req)?;
    let mut lost: Option<(Fingerprint, Error)> = None;
    for attempt in 0..=ATTEMPTS {
        let plan = plan_inventory(state, ctx, &req).await?;
        let fingerprint = plan.fingerprint();
        if let Some((before, mut err)) = lost.take() {
            if before == fingerprint {
                return Err(err);
            }
            if attempt == ATTEMPTS {
                err.message = format!(
                    "{}; other changes to the tenant kept racing this apply, and nothing was changed: apply again",
                    err.message
                );
                return Err(err);
            }
        }
        match execute(state, ctx, &req, plan).await {
            Err(e) if may_be_a_race(&e) => lost = Some((fingerprint, e)),
            done => return done,
        }
    }
    Err(Error::internal("apply ended without an outcome"))
}

/// Failures another writer's commit between the plan and the transaction
/// can cause: what was to be created exists, what was to be activated is.
fn may_be_a_race(e: &Error) -> bool {
    matches!(
        e.code,
        ErrorCode::AlreadyExists | ErrorCode::InvalidTransition
    )
}

/// Each declared policy's id, description and owner, checked as
/// `POST /v1/policies` checks them, before anything is read or written.
fn check_policies(req: &mut ApplyRequest) -> Result<(), Error> {
    for p in &mut req.policies {
        let about_it = about(format!("policy {}", p.id));
        steward_policy::files::settle_policy_fields(p).map_err(about_it)?;
    }
    Ok(())
}

/// Compare the declared inventory (and MCP servers, issuers) with the store.
async fn plan_inventory(
    state: &AppState,
    ctx: &ChangeContext,
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
    for p in &req.personas {
        match store.get_persona(tenant, &p.name).await {
            Ok(_) => out.unchanged += 1,
            Err(e) if missing(&e) => {
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
        match store.get_mcp_server(tenant, &m.name).await {
            Ok(existing) => {
                if existing.matches(m) {
                    out.unchanged += 1;
                } else {
                    out.changes.push(format!("mcp_server {}: update", m.name));
                    plan.mcp_servers.push(m.clone());
                }
            }
            Err(e) if missing(&e) => {
                out.changes.push(format!("mcp_server {}: register", m.name));
                plan.mcp_servers.push(m.clone());
            }
            Err(e) => return Err(e),
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

/// The policy part of an apply: declarations, entities and policies.
struct PolicyPlan {
    changes: Vec<PolicyChange>,
    /// The declarations MCP policies talk about that the tenant lacks
    /// (first in `changes`).
    mcp_declarations: Vec<PolicyChange>,
}

/// Turn the policy part into changes. Each declared resource type and
/// action is checked on its own first, so a refusal names it.
async fn plan_policies(
    state: &AppState,
    tenant: &str,
    req: &ApplyRequest,
) -> Result<PolicyPlan, Error> {
    let store = &state.store;
    let needs_state = !req.mcp_servers.is_empty()
        || req.prune_policies
        || !req.resource_types.is_empty()
        || !req.actions.is_empty();
    let current = if needs_state {
        Some(store.policy_state(tenant).await?)
    } else {
        None
    };
    // What MCP policies talk about, where the tenant lacks it (the
    // directory's own declarations come later and win).
    let mcp_declarations = match &current {
        Some(current) if !req.mcp_servers.is_empty() => {
            crate::routes::mcp_servers::missing_declarations(current)
        }
        _ => Vec::new(),
    };
    let mut type_names: Vec<String> = current
        .iter()
        .flat_map(|c| c.resource_types.iter().map(|r| r.name.clone()))
        .collect();
    type_names.extend(mcp_declarations.iter().filter_map(|c| match c {
        PolicyChange::PutResourceType(rt) => Some(rt.name.clone()),
        _ => None,
    }));
    for rt in &req.resource_types {
        steward_policy::schema::check_resource_type(rt)
            .map_err(about(format!("resource type {}", rt.name)))?;
        type_names.push(rt.name.clone());
    }
    for a in &req.actions {
        steward_policy::schema::check_action(a, &type_names)
            .map_err(about(format!("action {}", a.name)))?;
    }

    let mut changes = mcp_declarations.clone();
    changes.extend(
        req.resource_types
            .iter()
            .cloned()
            .map(PolicyChange::PutResourceType),
    );
    changes.extend(req.actions.iter().cloned().map(PolicyChange::PutAction));
    changes.extend(req.entities.iter().cloned().map(PolicyChange::PutEntity));
    changes.extend(req.policies.iter().cloned().map(PolicyChange::PutPolicy));
    if let Some(current) = current.filter(|_| req.prune_policies) {
        let declared: HashSet<&str> = req.policies.iter().map(|p| p.id.as_str()).collect();
        for p in current.policies {
            if !declared.contains(&p.id.as_str()) {
                changes.push(PolicyChange::DeletePolicy(p.id));
            }
        }
    }
    Ok(PolicyPlan {
        changes,
        mcp_declarations,
    })
}

/// Carry out a plan in one transaction (rolled back for a dry run).
async fn execute(
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
        out.unchanged += (mcp_declarations.len()
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

/// Name the declaration behind a refusal of the whole new policy state, so
/// that the CLI can point at the file that declares it: Cedar refuses the
/// schema as a whole, and a stored policy or entity the directory does not
/// name breaks because of a declaration it does.
async fn blame(
    state: &AppState,
    ctx: &ChangeContext,
    req: &ApplyRequest,
    mcp_declarations: &[PolicyChange],
    err: Error,
) -> Error {
    if req.resource_types.is_empty() && req.actions.is_empty() {
        return err;
    }
    let Ok(current) = state.store.policy_state(&ctx.tenant_id).await else {
        return err;
    };
    match culprit(&current, mcp_declarations, req, ctx.now, &err) {
        Some(item) => about(item)(err),
        None => err,
    }
}

/// The declared resource type or action that `err` comes from, if one can
/// be told (see [`blame`]).
fn culprit(
    current: &PolicyState,
    mcp_declarations: &[PolicyChange],
    req: &ApplyRequest,
    now: DateTime<Utc>,
    err: &Error,
) -> Option<String> {
    let declared: Vec<PolicyChange> = req
        .resource_types
        .iter()
        .cloned()
        .map(PolicyChange::PutResourceType)
        .chain(req.actions.iter().cloned().map(PolicyChange::PutAction))
        .collect();
    let item = |change: &PolicyChange| match change {
        PolicyChange::PutResourceType(rt) => Some(format!("resource type {}", rt.name)),
        PolicyChange::PutAction(a) => Some(format!("action {}", a.name)),
        _ => None,
    };
    // The declarations alone (policies do not affect one another).
    let mut state = PolicyState {
        resource_types: current.resource_types.clone(),
        actions: current.actions.clone(),
        ..PolicyState::default()
    };
    let apply = |state: &mut PolicyState, changes: &[PolicyChange]| {
        steward_store::policies::apply_changes(state, changes, now, &mut Vec::new());
    };
    apply(&mut state, mcp_declarations);

    // A stored entity that no longer fits its (re-)declared type.
    let entity = err
        .details
        .as_ref()
        .and_then(|d| d.get("entity"))
        .and_then(|e| e.as_str())
        .or_else(|| err.message.strip_prefix("entity ")?.split(": ").next());
    if let Some(entity) = entity {
        let declared_here = req
            .entities
            .iter()
            .any(|e| format!("{}::{}", e.resource_type, e.id) == entity);
        let type_name = entity.split("::").next()?;
        let retyped = req.resource_types.iter().any(|r| r.name == type_name);
        return (!declared_here && retyped).then(|| format!("resource type {type_name}"));
    }

    // A stored policy the directory does not name: the first declaration
    // that, added to what exists, breaks it.
    let policy = err
        .details
        .as_ref()
        .and_then(|d| d.get("policy"))
        .and_then(|p| p.as_str());
    if let Some(id) = policy {
        if req.policies.iter().any(|p| p.id == id) {
            return None;
        }
        let stored = current.policies.iter().find(|p| p.id == id)?;
        let breaks = |state: &PolicyState| {
            steward_policy::build_schema(&state.resource_types, &state.actions).is_ok_and(
                |(schema, _)| {
                    steward_policy::check_policy(&schema, &stored.id, &stored.text).is_err()
                },
            )
        };
        if breaks(&state) {
            return None;
        }
        for change in &declared {
            apply(&mut state, std::slice::from_ref(change));
            if breaks(&state) {
                return item(change);
            }
        }
        return None;
    }

    // A schema Cedar refuses: the declaration that fails on its own, the
    // other types present without their attributes (so references to
    // them resolve).
    if err.code == ErrorCode::InvalidSchema {
        apply(&mut state, &declared);
        let bare: Vec<_> = state
            .resource_types
            .iter()
            .map(|r| steward_types::ResourceType {
                attributes: Default::default(),
                ..r.clone()
            })
            .collect();
        for rt in &req.resource_types {
            let alone: Vec<_> = bare
                .iter()
                .map(|b| {
                    let full = state.resource_types.iter().find(|r| r.name == b.name);
                    match full {
                        Some(full) if full.name == rt.name => full.clone(),
                        _ => b.clone(),
                    }
                })
                .collect();
            if steward_policy::build_schema(&alone, &[]).is_err() {
                return Some(format!("resource type {}", rt.name));
            }
        }
        for a in &req.actions {
            let Some(def) = state.actions.iter().find(|d| d.name == a.name) else {
                continue;
            };
            if steward_policy::build_schema(&bare, std::slice::from_ref(def)).is_err() {
                return Some(format!("action {}", a.name));
            }
        }
    }
    None
}
