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
use steward_core::{ChangeContext, Error};
use steward_types::{
    ApplyRequest, ApplyResponse, CreateHuman, CreatePersona, CreateRole, CreateTeam,
    DeclaredIssuer, ErrorCode, PutMcpServer, RegisterAgent, UpdateAgent, UpdateHuman,
};

use crate::state::AppState;

mod execute;
mod inventory;
mod policies;

use execute::execute;
use inventory::plan_inventory;

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
    // A team named twice (or by name and by id) is one team.
    v.dedup();
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

/// Plan and (unless `dry_run`) apply; `may_run_commands` says whether the
/// caller may set a stdio upstream's command.
///
/// The plan is read before the transaction, so another writer (typically
/// the same directory applied twice at once) may create what this apply
/// planned to create. Such a failure is planned again from what then
/// exists: when the plan moved, the apply runs again (and finds less to
/// do); when it did not, the failure is the request's own.
pub async fn apply(
    state: &AppState,
    ctx: &ChangeContext,
    may_run_commands: bool,
    mut req: ApplyRequest,
) -> Result<ApplyResponse, Error> {
    check_policies(&mut req)?;
    let mut lost: Option<(Fingerprint, Error)> = None;
    for attempt in 0..=ATTEMPTS {
        let plan = plan_inventory(state, ctx, may_run_commands, &req).await?;
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
