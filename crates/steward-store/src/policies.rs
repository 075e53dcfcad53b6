//! Declarations (resource types, actions), policies with their version
//! history, known resource entities, and the per-tenant epoch every node
//! watches to reload its compiled engine.
//!
//! All changes go through [`Store::change_policies`]: it applies the changes
//! in memory to the tenant's committed state and lets the caller check the
//! result (the server compiles it with Cedar) before any transaction starts,
//! so a large policy set compiles without holding the store's writer. Inside
//! the transaction it reads the tenant's policy epoch: if the state moved
//! meanwhile, the state is loaded again and checked again there. Then it
//! writes. An invalid batch changes nothing.
//!
//! Stored entities must fit their declared type: a batch that changes a
//! type's attributes has the check see the type's stored entities too, and
//! deleting a type that still has entities is refused.

use std::collections::{BTreeMap, HashMap, HashSet};

use steward_core::{ChangeContext, Error, validate};
use steward_types::{
    ActionDef, ErrorCode, Page, Policy, PolicyQuery, PutAction, PutPolicy, PutResourceType,
    ResourceEntity, ResourceType,
};

use crate::audit::{append, event};
use crate::rows::{self, Cursor, Param, Select};
use crate::{Store, Tx, db_error};

/// A tenant's declarations and policies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyState {
    /// Declared resource types.
    pub resource_types: Vec<ResourceType>,
    /// Declared actions.
    pub actions: Vec<ActionDef>,
    /// Current policies.
    pub policies: Vec<Policy>,
    /// Increases with every change.
    pub epoch: i64,
}

/// One change to a tenant's policy state.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyChange {
    /// Declare or replace a resource type.
    PutResourceType(PutResourceType),
    /// Remove a resource type.
    DeleteResourceType(String),
    /// Declare or replace an action.
    PutAction(PutAction),
    /// Remove an action.
    DeleteAction(String),
    /// Create or replace a policy.
    PutPolicy(PutPolicy),
    /// Remove a policy.
    DeletePolicy(String),
    /// Record a known resource.
    PutEntity(ResourceEntity),
    /// Forget a known resource.
    DeleteEntity(String, String),
}

/// The caller's check of a batch's resulting state: each policy's effect
/// (`permit` or `forbid`), or why the state is refused.
pub type CheckResult = Result<BTreeMap<String, String>, Error>;

/// A batch checked against the committed state before its transaction
/// ([`Store::precheck_policies`]); the transaction reuses the outcome when it
/// finds the same state.
#[derive(Debug)]
pub struct Prechecked {
    /// The committed state, read whole between two equal epochs.
    before: Option<PolicyState>,
    after: PolicyState,
    outcome: CheckResult,
}

/// What a batch of changes did: one line per effective change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeReport {
    /// Human-readable lines such as `policy readers-read: updated (version 3)`.
    pub changes: Vec<String>,
    /// Ids of the policies the batch created: not stored before it (a
    /// deleted policy put again is created again).
    pub created_policies: Vec<String>,
    /// The state after the batch.
    pub state: PolicyState,
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("corrupt stored declaration: {e}")))
}

/// How many times [`Store::policy_state`] reads the state when changes
/// keep committing while it reads.
const STATE_READS: usize = 3;

/// The tenant's policy epoch as `conn` sees it (0 before any change).
async fn read_epoch(conn: &mut sqlx::AnyConnection, tenant_id: &str) -> Result<i64, Error> {
    let epoch: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM policy_epochs WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
    Ok(epoch.unwrap_or(0))
}

/// The epoch, then the state labelled with the epoch read after it.
async fn read_between_epochs(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
) -> Result<(i64, PolicyState), Error> {
    let first = read_epoch(conn, tenant_id).await?;
    Ok((first, load_state(conn, tenant_id).await?))
}

/// Read the state between two reads of the epoch ([`read_between_epochs`]
/// is `read`) until both agree, at most `tries` times. Every change to the
/// state moves the epoch in its own commit, so when they agree the state is
/// that epoch's (`true`). Otherwise a change committed in between, and the
/// last state read is labelled with the epoch read before it: it may be
/// newer than its label but not older, so an engine built from it is
/// rebuilt at the next refresh rather than kept as the newer epoch's.
async fn until_consistent<F, Fut>(tries: usize, mut read: F) -> Result<(PolicyState, bool), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(i64, PolicyState), Error>>,
{
    let mut reads = 0;
    loop {
        let (first, mut state) = read().await?;
        reads += 1;
        let consistent = state.epoch == first;
        if consistent || reads >= tries {
            state.epoch = first;
            return Ok((state, consistent));
        }
    }
}

/// The tenant's state, labelled with the epoch read last: consistent only
/// where no change can commit meanwhile (inside a change's transaction,
/// which holds the epoch). Elsewhere use [`read_between_epochs`].
async fn load_state(conn: &mut sqlx::AnyConnection, tenant_id: &str) -> Result<PolicyState, Error> {
    let types: Vec<(String, String, String, i64)> =
        sqlx::query_as("SELECT name, description, attributes, updated_at FROM resource_types WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant_id)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
    let actions: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT name, description, resource_types, context, updated_at FROM actions WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let policies: Vec<(String, String, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, description, owner, text, effect, version, updated_at FROM policies WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    let epoch = read_epoch(conn, tenant_id).await?;
    let time = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    Ok(PolicyState {
        resource_types: types
            .into_iter()
            .map(|(name, description, attributes, at)| {
                Ok(ResourceType {
                    name,
                    description,
                    attributes: from_json(&attributes)?,
                    updated_at: time(at),
                })
            })
            .collect::<Result<_, Error>>()?,
        actions: actions
            .into_iter()
            .map(|(name, description, types, context, at)| {
                Ok(ActionDef {
                    name,
                    description,
                    resource_types: from_json(&types)?,
                    context: from_json(&context)?,
                    updated_at: time(at),
                })
            })
            .collect::<Result<_, Error>>()?,
        policies: policies
            .into_iter()
            .map(
                |(id, description, owner, text, effect, version, at)| Policy {
                    id,
                    description,
                    owner,
                    text,
                    effect,
                    version,
                    updated_at: time(at),
                },
            )
            .collect(),
        epoch,
    })
}

impl Store {
    /// The tenant's declarations and policies. Its epoch is never newer
    /// than the state: read again while changes commit meanwhile (a few
    /// times), and if they keep committing, labelled with the epoch read
    /// before the state.
    pub async fn policy_state(&self, tenant_id: &str) -> Result<PolicyState, Error> {
        Ok(self.consistent_policy_state(tenant_id).await?.0)
    }

    /// [`Store::policy_state`], and whether it is exactly its epoch's.
    async fn consistent_policy_state(&self, tenant_id: &str) -> Result<(PolicyState, bool), Error> {
        until_consistent(STATE_READS, || async {
            let mut conn = self.read.acquire().await.map_err(db_error)?;
            read_between_epochs(&mut conn, tenant_id).await
        })
        .await
    }

    /// The tenant's policy epoch (0 before any change).
    pub async fn policy_epoch(&self, tenant_id: &str) -> Result<i64, Error> {
        let epoch: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM policy_epochs WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(&self.read)
                .await
                .map_err(db_error)?;
        Ok(epoch.unwrap_or(0))
    }

    /// Apply a batch of changes atomically. `check` sees the complete new
    /// state and the entities being written, and returns each policy's effect
    /// (`permit` or `forbid`); if it fails, nothing is written. It runs before
    /// the transaction, and again inside it only if the state moved between.
    pub async fn change_policies(
        &self,
        ctx: &ChangeContext,
        changes: Vec<PolicyChange>,
        mut check: impl FnMut(&PolicyState, &[ResourceEntity]) -> CheckResult,
    ) -> Result<ChangeReport, Error> {
        let prechecked = self.precheck_policies(ctx, &changes, &mut check).await?;
        let mut tx = self.begin().await?;
        let out = self
            .change_policies_in(&mut tx, ctx, changes, Some(prechecked), check)
            .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// Check a batch against the committed state, outside any transaction:
    /// the costly part of a change (compiling the whole policy set) then
    /// holds no lock. [`Store::change_policies_in`] uses the outcome, a
    /// refusal included, when the state is still the one checked.
    pub async fn precheck_policies(
        &self,
        ctx: &ChangeContext,
        changes: &[PolicyChange],
        check: &mut impl FnMut(&PolicyState, &[ResourceEntity]) -> CheckResult,
    ) -> Result<Prechecked, Error> {
        check_entity_keys(changes)?;
        // Every change to the state, stored entities included, moves the
        // epoch in its own commit, so a state read between two equal epochs
        // is one committed state (and the entities read after it are that
        // state's, or the epoch moved and the transaction checks again).
        let (before, consistent) = self.consistent_policy_state(&ctx.tenant_id).await?;
        let mut after = before.clone();
        let mut entities = Vec::new();
        apply_changes(&mut after, changes, ctx.now, &mut entities);
        if !redeclared_types(&before, &after).is_empty() {
            let mut conn = self.read.acquire().await.map_err(db_error)?;
            entities.extend(
                entities_to_recheck(&mut conn, &ctx.tenant_id, &before, &after, changes).await?,
            );
        }
        let outcome = check(&after, &entities);
        Ok(Prechecked {
            before: consistent.then_some(before),
            after,
            outcome,
        })
    }

    /// [`Store::change_policies`] inside a caller's transaction, with the
    /// outcome of [`Store::precheck_policies`] when the caller has one.
    pub async fn change_policies_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        changes: Vec<PolicyChange>,
        prechecked: Option<Prechecked>,
        mut check: impl FnMut(&PolicyState, &[ResourceEntity]) -> CheckResult,
    ) -> Result<ChangeReport, Error> {
        check_entity_keys(&changes)?;
        let epoch = self.lock_policy_epoch_in(tx, &ctx.tenant_id).await?;
        // The state checked before the transaction is still the state: its
        // outcome stands, and the policy set is not read again.
        let (before, mut after, effects) = match prechecked {
            Some(Prechecked {
                before: Some(before),
                after,
                outcome,
            }) if before.epoch == epoch => (before, after, outcome?),
            _ => {
                let before = load_state(tx, &ctx.tenant_id).await?;
                let mut after = before.clone();
                let mut entities = Vec::new();
                apply_changes(&mut after, &changes, ctx.now, &mut entities);
                entities.extend(
                    entities_to_recheck(tx, &ctx.tenant_id, &before, &after, &changes).await?,
                );
                let effects = check(&after, &entities)?;
                (before, after, effects)
            }
        };
        refuse_deleting_used_types(tx, &ctx.tenant_id, &before, &after, &changes).await?;
        for p in &mut after.policies {
            if let Some(e) = effects.get(&p.id) {
                p.effect = e.clone();
            }
        }
        let mut report = Vec::new();
        let mut created_policies = Vec::new();
        write_diff(
            tx,
            ctx,
            &before,
            &mut after,
            &mut report,
            &mut created_policies,
        )
        .await?;
        for change in &changes {
            match change {
                PolicyChange::PutEntity(e) => put_entity(tx, ctx, e, &mut report).await?,
                PolicyChange::DeleteEntity(t, id) => {
                    delete_entity(tx, ctx, t, id, &mut report).await?
                }
                _ => {}
            }
        }
        if !report.is_empty() {
            after.epoch = before.epoch + 1;
            sqlx::query(
                "INSERT INTO policy_epochs (tenant_id, epoch) VALUES ($1, $2) \
                 ON CONFLICT (tenant_id) DO UPDATE SET epoch = excluded.epoch",
            )
            .bind(&ctx.tenant_id)
            .bind(after.epoch)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
        Ok(ChangeReport {
            changes: report,
            created_policies,
            state: after,
        })
    }

    /// The tenant's policies, by id.
    pub async fn list_policies(
        &self,
        tenant_id: &str,
        q: PolicyQuery,
    ) -> Result<Page<Policy>, Error> {
        let cursor = Cursor::text(q.cursor, q.limit)?;
        Select::tenant_rows("policies", tenant_id)
            .page(&self.read, "id", &cursor, rows::policy, |p| p.id.clone())
            .await
    }

    /// One policy.
    pub async fn get_policy(&self, tenant_id: &str, id: &str) -> Result<Policy, Error> {
        let row = sqlx::query("SELECT * FROM policies WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found("policy", id))?;
        rows::policy(&row)
    }

    /// Every version of a policy, newest first (a deletion has no text).
    pub async fn policy_history(&self, tenant_id: &str, id: &str) -> Result<Vec<Policy>, Error> {
        let rows: Vec<(i64, String, String, Option<String>, String, i64)> = sqlx::query_as(
            "SELECT version, description, owner, text, effect, changed_at FROM policy_versions \
             WHERE tenant_id = $1 AND id = $2 ORDER BY version DESC",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        if rows.is_empty() {
            return Err(Error::not_found("policy", id));
        }
        Ok(rows
            .into_iter()
            .map(|(version, description, owner, text, effect, at)| Policy {
                id: id.into(),
                description,
                owner,
                text: text.unwrap_or_default(),
                effect,
                version,
                updated_at: chrono::DateTime::from_timestamp_millis(at).unwrap_or_default(),
            })
            .collect())
    }

    /// A known resource, if recorded.
    pub async fn get_resource_entity(
        &self,
        tenant_id: &str,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<ResourceEntity>, Error> {
        let row: Option<String> =
            sqlx::query_scalar("SELECT attributes FROM resource_entities WHERE tenant_id = $1 AND type = $2 AND id = $3")
                .bind(tenant_id)
                .bind(entity_type)
                .bind(id)
                .fetch_optional(&self.read)
                .await
                .map_err(db_error)?;
        row.map(|attrs| stored_entity(entity_type, id, &attrs))
            .transpose()
    }

    /// Known resources of a type, by id.
    pub async fn list_resource_entities(
        &self,
        tenant_id: &str,
        entity_type: &str,
        q: PolicyQuery,
    ) -> Result<Page<ResourceEntity>, Error> {
        let cursor = Cursor::text(q.cursor, q.limit)?;
        Select::tenant_rows("resource_entities", tenant_id)
            .and("type = ?", Param::Text(entity_type.into()))
            .page(&self.read, "id", &cursor, rows::resource_entity, |e| {
                e.id.clone()
            })
            .await
    }
}

/// Apply changes to a state in memory; entities being written are collected
/// in `entities` (they are not part of the state). Linear in the size of the
/// state and the batch: a set of ten thousand policies changed by a batch of
/// ten thousand is indexed once and sorted once.
pub fn apply_changes(
    state: &mut PolicyState,
    changes: &[PolicyChange],
    now: chrono::DateTime<chrono::Utc>,
    entities: &mut Vec<ResourceEntity>,
) {
    let mut index: HashMap<String, usize> = state
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), i))
        .collect();
    let mut deleted: HashSet<String> = HashSet::new();
    // Updates and removals keep the id order; only additions need a sort.
    let mut added = false;
    for change in changes {
        match change {
            PolicyChange::PutPolicy(p) => {
                deleted.remove(&p.id);
                match index.get(&p.id) {
                    Some(&i) => {
                        let existing = &mut state.policies[i];
                        existing.description = p.description.clone();
                        existing.owner = p.owner.clone();
                        existing.text = p.text.clone();
                    }
                    None => {
                        added = true;
                        index.insert(p.id.clone(), state.policies.len());
                        state.policies.push(Policy {
                            id: p.id.clone(),
                            description: p.description.clone(),
                            owner: p.owner.clone(),
                            text: p.text.clone(),
                            effect: String::new(),
                            version: 0,
                            updated_at: now,
                        });
                    }
                }
            }
            PolicyChange::DeletePolicy(id) => {
                if index.contains_key(id) {
                    deleted.insert(id.clone());
                }
            }
            other => apply_declaration(state, other, now, entities),
        }
    }
    if !deleted.is_empty() {
        state.policies.retain(|p| !deleted.contains(&p.id));
    }
    if added {
        state.policies.sort_by(|a, b| a.id.cmp(&b.id));
    }
}

/// Apply a change to the declarations or the entities (policies are
/// [`apply_changes`]' own).
fn apply_declaration(
    state: &mut PolicyState,
    change: &PolicyChange,
    now: chrono::DateTime<chrono::Utc>,
    entities: &mut Vec<ResourceEntity>,
) {
    match change {
        PolicyChange::PutResourceType(rt) => {
            state.resource_types.retain(|r| r.name != rt.name);
            state.resource_types.push(ResourceType {
                name: rt.name.clone(),
                description: rt.description.clone(),
                attributes: rt.attributes.clone(),
                updated_at: now,
            });
            state.resource_types.sort_by(|a, b| a.name.cmp(&b.name));
        }
        PolicyChange::DeleteResourceType(name) => state.resource_types.retain(|r| &r.name != name),
        PolicyChange::PutAction(a) => {
            state.actions.retain(|x| x.name != a.name);
            state.actions.push(ActionDef {
                name: a.name.clone(),
                description: a.description.clone(),
                resource_types: a.resource_types.clone(),
                context: a.context.clone(),
                updated_at: now,
            });
            state.actions.sort_by(|a, b| a.name.cmp(&b.name));
        }
        PolicyChange::DeleteAction(name) => state.actions.retain(|a| &a.name != name),
        PolicyChange::PutEntity(e) => entities.push(e.clone()),
        PolicyChange::DeleteEntity(..)
        | PolicyChange::PutPolicy(_)
        | PolicyChange::DeletePolicy(_) => {}
    }
}

/// Write what differs between `before` and `after`, with audit records.
async fn write_diff(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    before: &PolicyState,
    after: &mut PolicyState,
    report: &mut Vec<String>,
    created_policies: &mut Vec<String>,
) -> Result<(), Error> {
    let t = &ctx.tenant_id;
    let now = rows::ms(ctx.now);
    for rt in &after.resource_types {
        let old = before.resource_types.iter().find(|r| r.name == rt.name);
        if old.is_some_and(|o| o.description == rt.description && o.attributes == rt.attributes) {
            continue;
        }
        sqlx::query(
            "INSERT INTO resource_types (tenant_id, name, description, attributes, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description, attributes = excluded.attributes, updated_at = excluded.updated_at",
        )
        .bind(t).bind(&rt.name).bind(&rt.description).bind(rows::to_json(&rt.attributes)).bind(now)
        .execute(&mut **tx).await.map_err(db_error)?;
        report.push(format!(
            "resource type {}: {}",
            rt.name,
            if old.is_some() { "updated" } else { "created" }
        ));
        append(
            tx,
            ctx,
            event(
                "resource_type.put",
                "resource_type",
                &rt.name,
                old,
                Some(rt),
                None,
            ),
        )
        .await?;
    }
    for old in before
        .resource_types
        .iter()
        .filter(|o| !after.resource_types.iter().any(|r| r.name == o.name))
    {
        sqlx::query("DELETE FROM resource_types WHERE tenant_id = $1 AND name = $2")
            .bind(t)
            .bind(&old.name)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        report.push(format!("resource type {}: deleted", old.name));
        append(
            tx,
            ctx,
            event(
                "resource_type.delete",
                "resource_type",
                &old.name,
                Some(old),
                None,
                None,
            ),
        )
        .await?;
    }
    for a in &after.actions {
        let old = before.actions.iter().find(|x| x.name == a.name);
        if old.is_some_and(|o| {
            o.description == a.description
                && o.resource_types == a.resource_types
                && o.context == a.context
        }) {
            continue;
        }
        sqlx::query(
            "INSERT INTO actions (tenant_id, name, description, resource_types, context, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description, resource_types = excluded.resource_types, \
             context = excluded.context, updated_at = excluded.updated_at",
        )
        .bind(t).bind(&a.name).bind(&a.description).bind(rows::to_json(&a.resource_types)).bind(rows::to_json(&a.context)).bind(now)
        .execute(&mut **tx).await.map_err(db_error)?;
        report.push(format!(
            "action {}: {}",
            a.name,
            if old.is_some() { "updated" } else { "created" }
        ));
        append(
            tx,
            ctx,
            event("action.put", "action", &a.name, old, Some(a), None),
        )
        .await?;
    }
    for old in before
        .actions
        .iter()
        .filter(|o| !after.actions.iter().any(|a| a.name == o.name))
    {
        sqlx::query("DELETE FROM actions WHERE tenant_id = $1 AND name = $2")
            .bind(t)
            .bind(&old.name)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        report.push(format!("action {}: deleted", old.name));
        append(
            tx,
            ctx,
            event("action.delete", "action", &old.name, Some(old), None, None),
        )
        .await?;
    }
    let by_id: HashMap<&str, &Policy> =
        before.policies.iter().map(|p| (p.id.as_str(), p)).collect();
    for p in &mut after.policies {
        let old = by_id.get(p.id.as_str()).copied();
        if let Some(o) =
            old.filter(|o| o.text == p.text && o.description == p.description && o.owner == p.owner)
        {
            p.version = o.version;
            p.updated_at = o.updated_at;
            continue;
        }
        // Continue after the highest version ever recorded (a deleted
        // policy created again keeps its history).
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM policy_versions WHERE tenant_id = $1 AND id = $2")
            .bind(t)
            .bind(&p.id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
        p.version = last + 1;
        p.updated_at = ctx.now;
        sqlx::query(
            "INSERT INTO policies (tenant_id, id, description, owner, text, effect, version, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET description = excluded.description, owner = excluded.owner, text = excluded.text, \
             effect = excluded.effect, version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(t).bind(&p.id).bind(&p.description).bind(&p.owner).bind(&p.text).bind(&p.effect).bind(p.version).bind(now)
        .execute(&mut **tx).await.map_err(db_error)?;
        record_version(tx, ctx, p, Some(&p.text)).await?;
        if old.is_none() {
            created_policies.push(p.id.clone());
        }
        report.push(format!(
            "policy {}: {} (version {})",
            p.id,
            if old.is_some() { "updated" } else { "created" },
            p.version
        ));
        append(
            tx,
            ctx,
            event("policy.put", "policy", &p.id, old, Some(&*p), None),
        )
        .await?;
    }
    let kept: HashSet<&str> = after.policies.iter().map(|p| p.id.as_str()).collect();
    for old in before
        .policies
        .iter()
        .filter(|o| !kept.contains(o.id.as_str()))
    {
        sqlx::query("DELETE FROM policies WHERE tenant_id = $1 AND id = $2")
            .bind(t)
            .bind(&old.id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        let mut tombstone = old.clone();
        tombstone.version += 1;
        record_version(tx, ctx, &tombstone, None).await?;
        report.push(format!("policy {}: deleted", old.id));
        append(
            tx,
            ctx,
            event("policy.delete", "policy", &old.id, Some(old), None, None),
        )
        .await?;
    }
    Ok(())
}

async fn record_version(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    p: &Policy,
    text: Option<&str>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO policy_versions (tenant_id, id, version, description, owner, text, effect, changed_at, changed_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&ctx.tenant_id).bind(&p.id).bind(p.version).bind(&p.description).bind(&p.owner).bind(text).bind(&p.effect)
    .bind(rows::ms(ctx.now)).bind(format!("{}:{}", ctx.actor.kind, ctx.actor.id))
    .execute(&mut **tx).await.map_err(db_error)?;
    Ok(())
}

async fn put_entity(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    e: &ResourceEntity,
    report: &mut Vec<String>,
) -> Result<(), Error> {
    let old: Option<String> = sqlx::query_scalar(
        "SELECT attributes FROM resource_entities WHERE tenant_id = $1 AND type = $2 AND id = $3",
    )
    .bind(&ctx.tenant_id)
    .bind(&e.resource_type)
    .bind(&e.id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let attrs = rows::to_json(&e.attributes);
    if old.as_deref() == Some(attrs.as_str()) {
        return Ok(());
    }
    let before = old
        .as_deref()
        .map(|a| stored_entity(&e.resource_type, &e.id, a))
        .transpose()?;
    sqlx::query(
        "INSERT INTO resource_entities (tenant_id, type, id, attributes, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, type, id) DO UPDATE SET attributes = excluded.attributes, updated_at = excluded.updated_at",
    )
    .bind(&ctx.tenant_id).bind(&e.resource_type).bind(&e.id).bind(&attrs).bind(rows::ms(ctx.now))
    .execute(&mut **tx).await.map_err(db_error)?;
    let key = format!("{}::{}", e.resource_type, e.id);
    report.push(format!(
        "entity {key}: {}",
        if old.is_some() { "updated" } else { "created" }
    ));
    append(
        tx,
        ctx,
        event("entity.put", "entity", &key, before.as_ref(), Some(e), None),
    )
    .await
}

async fn delete_entity(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    t: &str,
    id: &str,
    report: &mut Vec<String>,
) -> Result<(), Error> {
    let old: Option<String> = sqlx::query_scalar(
        "SELECT attributes FROM resource_entities WHERE tenant_id = $1 AND type = $2 AND id = $3",
    )
    .bind(&ctx.tenant_id)
    .bind(t)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let Some(old) = old else {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("no entity {t}::{id} in this tenant"),
        ));
    };
    let before = stored_entity(t, id, &old)?;
    sqlx::query("DELETE FROM resource_entities WHERE tenant_id = $1 AND type = $2 AND id = $3")
        .bind(&ctx.tenant_id)
        .bind(t)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    let key = format!("{t}::{id}");
    report.push(format!("entity {key}: deleted"));
    append(
        tx,
        ctx,
        event("entity.delete", "entity", &key, Some(&before), None, None),
    )
    .await
}

/// Check the keys of the entities a batch puts before anything is read or
/// written: a decision refuses a resource id that is empty, over-long or
/// has control characters, so such an entity could never be used, nor
/// deleted by its path. (A policy's other fields are checked where it comes
/// in, by `steward_policy::files::check_policy_fields`.)
fn check_entity_keys(changes: &[PolicyChange]) -> Result<(), Error> {
    for change in changes {
        if let PolicyChange::PutEntity(e) = change {
            check_entity_key(e)?;
        }
    }
    Ok(())
}

/// Check the type and id of an entity to be put (see [`check_entity_keys`]).
pub fn check_entity_key(e: &ResourceEntity) -> Result<(), Error> {
    validate::key("type", &e.resource_type)?;
    validate::key("id", &e.id)
}

/// A stored entity from its row.
fn stored_entity(entity_type: &str, id: &str, attributes: &str) -> Result<ResourceEntity, Error> {
    Ok(ResourceEntity {
        resource_type: entity_type.into(),
        id: id.into(),
        attributes: from_json(attributes)?,
    })
}

/// The `(type, id)` of every entity a batch puts or deletes.
fn entities_in_batch(changes: &[PolicyChange]) -> HashSet<(&str, &str)> {
    changes
        .iter()
        .filter_map(|c| match c {
            PolicyChange::PutEntity(e) => Some((e.resource_type.as_str(), e.id.as_str())),
            PolicyChange::DeleteEntity(t, id) => Some((t.as_str(), id.as_str())),
            _ => None,
        })
        .collect()
}

/// The resource types `after` declares with other attributes than
/// `before` (or newly).
fn redeclared_types<'a>(before: &PolicyState, after: &'a PolicyState) -> Vec<&'a str> {
    after
        .resource_types
        .iter()
        .filter(|rt| {
            !before
                .resource_types
                .iter()
                .any(|o| o.name == rt.name && o.attributes == rt.attributes)
        })
        .map(|rt| rt.name.as_str())
        .collect()
}

/// The stored entities of every type a batch declares or changes the
/// attributes of, less those the batch puts or deletes itself: the new
/// declaration must still fit them, or every later decision on them would
/// fail. A batch that leaves the types' attributes alone reads nothing.
async fn entities_to_recheck(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    before: &PolicyState,
    after: &PolicyState,
    changes: &[PolicyChange],
) -> Result<Vec<ResourceEntity>, Error> {
    let mut out = Vec::new();
    let mut in_batch = None;
    for name in redeclared_types(before, after) {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, attributes FROM resource_entities WHERE tenant_id = $1 AND type = $2 ORDER BY id",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        let in_batch = in_batch.get_or_insert_with(|| entities_in_batch(changes));
        for (id, attributes) in rows {
            if !in_batch.contains(&(name, id.as_str())) {
                out.push(stored_entity(name, &id, &attributes)?);
            }
        }
    }
    Ok(out)
}

/// Refuse deleting a resource type that still has stored entities (other
/// than those the batch deletes): they would be left behind, listed but of
/// no declared type. Read in the change's transaction, so no entity can be
/// added meanwhile.
async fn refuse_deleting_used_types(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    before: &PolicyState,
    after: &PolicyState,
    changes: &[PolicyChange],
) -> Result<(), Error> {
    for old in &before.resource_types {
        if after.resource_types.iter().any(|r| r.name == old.name) {
            continue;
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM resource_entities WHERE tenant_id = $1 AND type = $2 ORDER BY id",
        )
        .bind(tenant_id)
        .bind(&old.name)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        let in_batch = entities_in_batch(changes);
        let left: Vec<&String> = ids
            .iter()
            .filter(|id| !in_batch.contains(&(old.name.as_str(), id.as_str())))
            .collect();
        if let Some(first) = left.first() {
            let name = &old.name;
            return Err(Error::new(
                ErrorCode::InvalidSchema,
                format!(
                    "resource type '{name}' still has {} stored entit{} (the first is {name}::{first}); \
                     delete them first (DELETE /v1/entities/{name}/{{id}})",
                    left.len(),
                    if left.len() == 1 { "y" } else { "ies" },
                ),
            )
            .with_details(serde_json::json!({
                "resource_type": name,
                "entities": left.len(),
                "entity": format!("{name}::{first}"),
            })));
        }
    }
    Ok(())
}

impl Store {
    /// Lock the tenant's policy epoch row for the rest of a caller's
    /// transaction and read it: this serialises policy changes per tenant
    /// across nodes. A transaction that changes policies, roles or
    /// personas takes this lock before it appends to the audit log (which
    /// locks the log's head): one order everywhere, so two such
    /// transactions never wait for each other's lock. (SQLite has one
    /// writer: a plain read.)
    pub async fn lock_policy_epoch_in(&self, tx: &mut Tx, tenant_id: &str) -> Result<i64, Error> {
        let read_epoch = if self.backend == crate::Backend::Postgres {
            sqlx::query("INSERT INTO policy_epochs (tenant_id, epoch) VALUES ($1, 0) ON CONFLICT (tenant_id) DO NOTHING")
                .bind(tenant_id)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            "SELECT epoch FROM policy_epochs WHERE tenant_id = $1 FOR UPDATE"
        } else {
            "SELECT epoch FROM policy_epochs WHERE tenant_id = $1"
        };
        let epoch: Option<i64> = sqlx::query_scalar(read_epoch)
            .bind(tenant_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        Ok(epoch.unwrap_or(0))
    }

    /// Move the tenant's policy epoch in a caller's transaction without a
    /// change to its policies: what its engine is compiled from besides them
    /// (the role and persona names remediation hints offer) changed, and
    /// every node rebuilds the engine of a tenant whose epoch moved.
    pub async fn move_policy_epoch_in(&self, tx: &mut Tx, tenant_id: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO policy_epochs (tenant_id, epoch) VALUES ($1, 1) \
             ON CONFLICT (tenant_id) DO UPDATE SET epoch = policy_epochs.epoch + 1",
        )
        .bind(tenant_id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The resource types the tenant has stored entities of.
    pub async fn resource_entity_types(&self, tenant_id: &str) -> Result<Vec<String>, Error> {
        sqlx::query_scalar("SELECT DISTINCT type FROM resource_entities WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(&self.read)
            .await
            .map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Changes to a few ids, so that puts, updates and deletes of the same
    /// policy meet in one batch.
    fn change() -> impl Strategy<Value = PolicyChange> {
        (0..6u8, 0..3u8, any::<bool>()).prop_map(|(id, text, put)| {
            let id = format!("p{id}");
            if put {
                PolicyChange::PutPolicy(PutPolicy {
                    id,
                    description: format!("d{text}"),
                    owner: String::new(),
                    text: format!("t{text}"),
                })
            } else {
                PolicyChange::DeletePolicy(id)
            }
        })
    }

    /// `until_consistent` over reads answered in turn, each `(epoch
    /// read before, epoch read after)` with one policy naming its read:
    /// the state returned (its epoch and that name), whether consistent,
    /// and how many reads were made.
    async fn reads(tries: usize, answers: &[(i64, i64)]) -> (i64, String, bool, usize) {
        let mut calls = 0;
        let (state, consistent) = until_consistent(tries, || {
            let (first, last) = answers[calls];
            calls += 1;
            let state = PolicyState {
                policies: vec![Policy {
                    id: format!("read{calls}"),
                    description: String::new(),
                    owner: String::new(),
                    text: String::new(),
                    effect: "permit".into(),
                    version: 1,
                    updated_at: chrono::Utc::now(),
                }],
                epoch: last,
                ..Default::default()
            };
            async move { Ok((first, state)) }
        })
        .await
        .unwrap();
        (state.epoch, state.policies[0].id.clone(), consistent, calls)
    }

    /// A state read that a change interrupted (the epoch moved while it
    /// read) is read again; the first uninterrupted one is used.
    #[tokio::test]
    async fn an_interrupted_state_read_is_read_again() {
        assert_eq!(reads(3, &[(4, 4)]).await, (4, "read1".into(), true, 1));
        assert_eq!(
            reads(3, &[(4, 5), (5, 5)]).await,
            (5, "read2".into(), true, 2)
        );
        assert_eq!(
            reads(3, &[(4, 5), (5, 6), (6, 6)]).await,
            (6, "read3".into(), true, 3)
        );
    }

    /// Reads stop after a bound; the last one is not claimed consistent
    /// and carries the epoch read before it, never the newer one read
    /// after (an engine so labelled is rebuilt at the next refresh).
    #[tokio::test]
    async fn state_reads_are_bounded_and_never_labelled_newer() {
        let moving = [(1, 2), (2, 3), (3, 4), (4, 5)];
        assert_eq!(reads(3, &moving).await, (3, "read3".into(), false, 3));
        assert_eq!(reads(1, &moving).await, (1, "read1".into(), false, 1));
    }

    proptest! {
        /// The indexed application gives the policies one change at a
        /// time would: same ids, in id order, with the last text put.
        #[test]
        fn indexed_changes_match_one_at_a_time(
            start in proptest::collection::btree_set(0..6u8, 0..6),
            batch in proptest::collection::vec(change(), 0..12),
        ) {
            let now = chrono::Utc::now();
            let mut state = PolicyState::default();
            for id in start {
                state.policies.push(Policy {
                    id: format!("p{id}"),
                    description: "old".into(),
                    owner: String::new(),
                    text: "old".into(),
                    effect: "permit".into(),
                    version: 1,
                    updated_at: now,
                });
            }
            let mut expected: Vec<(String, String, String)> = state
                .policies
                .iter()
                .map(|p| (p.id.clone(), p.description.clone(), p.text.clone()))
                .collect();
            for c in &batch {
                match c {
                    PolicyChange::PutPolicy(p) => {
                        expected.retain(|(id, ..)| id != &p.id);
                        expected.push((p.id.clone(), p.description.clone(), p.text.clone()));
                    }
                    PolicyChange::DeletePolicy(id) => expected.retain(|(x, ..)| x != id),
                    _ => {}
                }
            }
            expected.sort();
            apply_changes(&mut state, &batch, now, &mut Vec::new());
            let got: Vec<(String, String, String)> = state
                .policies
                .iter()
                .map(|p| (p.id.clone(), p.description.clone(), p.text.clone()))
                .collect();
            prop_assert_eq!(got, expected);
        }
    }
}
