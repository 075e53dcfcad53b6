//! The policy part of an apply: declarations, entities and policies, and
//! naming the declaration behind a refusal of the whole new policy state.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use steward_core::{ChangeContext, Error};
use steward_store::policies::{PolicyChange, PolicyState};
use steward_types::{ApplyRequest, ErrorCode};

use crate::state::AppState;

use super::*;

/// The policy part of an apply: declarations, entities and policies.
pub(super) struct PolicyPlan {
    pub(super) changes: Vec<PolicyChange>,
    /// The declarations MCP policies talk about that the tenant lacks
    /// (first in `changes`).
    pub(super) mcp_declarations: Vec<PolicyChange>,
}

/// Turn the policy part into changes. Each declared resource type and
/// action is checked on its own first, so a refusal names it.
pub(super) async fn plan_policies(
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

/// Name the declaration behind a refusal of the whole new policy state, so
/// that the CLI can point at the file that declares it: Cedar refuses the
/// schema as a whole, and a stored policy or entity the directory does not
/// name breaks because of a declaration it does.
pub(super) async fn blame(
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
