//! The compiled policy engine of each tenant, kept in memory and swapped
//! whole. A decision never reads policy data from the store: it takes the
//! current `Arc<Engine>`. Changes made on this node swap the engine at once;
//! changes made on another node are noticed by comparing the tenant's epoch
//! in the store, once a second, and the engine is rebuilt.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use steward_core::{ChangeContext, Error};
use steward_policy::{Catalog, Engine};
use steward_store::Store;
use steward_store::policies::{ChangeReport, PolicyChange, PolicyState};
use steward_types::{ErrorCode, ResourceEntity};

struct Compiled {
    epoch: i64,
    engine: Arc<Engine>,
    /// Resource types with stored entities: a decision reads the store for
    /// a resource's stored attributes only when its type has some.
    stored_types: Arc<HashSet<String>>,
}

/// Every tenant's engine.
#[derive(Default)]
pub struct Engines {
    by_tenant: RwLock<HashMap<String, Compiled>>,
}

type Personas = Vec<(String, Vec<String>)>;

fn catalog(
    state: &PolicyState,
    roles: Vec<String>,
    personas: Personas,
    changed_policies: Vec<String>,
    tolerated_impossible: Option<Vec<String>>,
) -> Catalog {
    Catalog {
        resource_types: state.resource_types.clone(),
        actions: state.actions.clone(),
        policies: state.policies.clone(),
        roles,
        personas,
        changed_policies,
        tolerated_impossible,
    }
}

/// Compile a catalog. A large policy set takes seconds: on a multi-threaded
/// runtime the worker first hands its queued tasks (decisions among them)
/// to another thread, so they do not wait for the compile.
/// What the tenant's previous engine checked is reused (unchanged policies
/// under an unchanged schema are not validated again).
fn compile(catalog: &Catalog, previous: Option<&Engine>) -> Result<Engine, Error> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| Engine::compile_after(catalog, previous))
        }
        _ => Engine::compile_after(catalog, previous),
    }
}

/// The policies of the tenant's current engine that can never apply: a
/// change may leave them so (they were stored before such policies were
/// refused), but not make another one so.
pub(crate) fn already_impossible(engine: &Engine) -> Vec<String> {
    engine
        .impossible()
        .iter()
        .map(|(id, _)| id.clone())
        .collect()
}

/// Ids of the policies a batch writes.
pub(crate) fn written_policies(changes: &[PolicyChange]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            PolicyChange::PutPolicy(p) => Some(p.id.clone()),
            _ => None,
        })
        .collect()
}

/// Check a complete new state: declarations, policies and the entities
/// being written.
pub(crate) fn check(
    state: &PolicyState,
    written: &[&ResourceEntity],
    roles: Vec<String>,
    personas: Personas,
    changed: Vec<String>,
    tolerated: Vec<String>,
    previous: Option<&Engine>,
) -> Result<(Engine, BTreeMap<String, String>), Error> {
    let names: Vec<String> = state
        .resource_types
        .iter()
        .map(|r| r.name.clone())
        .collect();
    for rt in &state.resource_types {
        steward_policy::schema::check_resource_type(&steward_types::PutResourceType {
            name: rt.name.clone(),
            description: rt.description.clone(),
            attributes: rt.attributes.clone(),
        })?;
    }
    for a in &state.actions {
        steward_policy::schema::check_action(
            &steward_types::PutAction {
                name: a.name.clone(),
                description: a.description.clone(),
                resource_types: a.resource_types.clone(),
                context: a.context.clone(),
            },
            &names,
        )?;
    }
    let engine = compile(
        &catalog(state, roles, personas, changed, Some(tolerated)),
        previous,
    )?;
    for e in written {
        engine.check_entity(e)?;
    }
    let effects = state
        .policies
        .iter()
        .filter_map(|p| {
            engine
                .policy(&p.id)
                .map(|m| (p.id.clone(), m.effect.clone()))
        })
        .collect();
    Ok((engine, effects))
}

/// A stored entity must fit its type as redeclared: decisions read its
/// attributes, and one that no longer fits fails every decision on it.
fn check_stored_entity(engine: &Engine, e: &ResourceEntity) -> Result<(), Error> {
    engine.check_stored_entity(e).map_err(|err| {
        let mut details = err.details.unwrap_or_else(|| serde_json::json!({}));
        if let Some(d) = details.as_object_mut() {
            d.insert(
                "entity".into(),
                format!("{}::{}", e.resource_type, e.id).into(),
            );
        }
        Error::new(
            ErrorCode::InvalidSchema,
            format!(
                "the change would break {}; update or delete the entity first",
                err.message
            ),
        )
        .with_details(details)
    })
}

/// A resource type the batch deletes must not be left in an action: say
/// which action, rather than that the action names an undeclared type.
fn refuse_deleting_types_in_use(state: &PolicyState, deleted: &[String]) -> Result<(), Error> {
    for name in deleted {
        if state.resource_types.iter().any(|r| &r.name == name) {
            continue;
        }
        if let Some(a) = state
            .actions
            .iter()
            .find(|a| a.resource_types.contains(name))
        {
            return Err(Error::new(
                ErrorCode::InvalidSchema,
                format!(
                    "resource type '{name}' is used by action '{}': remove it from the action's resource types, or delete the action, first",
                    a.name
                ),
            )
            .with_details(serde_json::json!({ "resource_type": name, "action": a.name })));
        }
    }
    Ok(())
}

/// The check of one policy change, run before its transaction and again
/// inside it if the state moved; it keeps the engine it compiled last.
pub(crate) struct ChangeCheck {
    /// The tenant's epoch, read before `roles` and `personas`.
    epoch: i64,
    roles: Vec<String>,
    personas: Personas,
    changed: Vec<String>,
    tolerated: Vec<String>,
    /// `(type, id)` of the entities the change puts: every other entity the
    /// store hands the check is a stored one its new declarations must fit.
    written: HashSet<(String, String)>,
    /// Resource types the change deletes.
    deleted_types: Vec<String>,
    previous: Arc<Engine>,
    /// The engine for the state last checked.
    pub(crate) compiled: Option<Engine>,
}

impl ChangeCheck {
    /// Ready to check `changes` to the tenant's policies.
    pub(crate) async fn new(
        engines: &Engines,
        store: &Store,
        tenant_id: &str,
        changes: &[PolicyChange],
    ) -> Result<Self, Error> {
        // Read first: a role or persona created after it moves the epoch
        // past it, and the engine compiled here is then not installed as is.
        let epoch = store.policy_epoch(tenant_id).await?;
        let (roles, personas) = store.role_and_persona_names(tenant_id).await?;
        let previous = engines.get(store, tenant_id).await?;
        Ok(Self {
            epoch,
            roles,
            personas,
            changed: written_policies(changes),
            written: changes
                .iter()
                .filter_map(|c| match c {
                    PolicyChange::PutEntity(e) => Some((e.resource_type.clone(), e.id.clone())),
                    _ => None,
                })
                .collect(),
            deleted_types: changes
                .iter()
                .filter_map(|c| match c {
                    PolicyChange::DeleteResourceType(name) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
            tolerated: already_impossible(&previous),
            previous,
            compiled: None,
        })
    }

    /// Check a complete new state; see [`check`]. `entities` are those the
    /// change puts and the stored ones of the types whose attributes it
    /// changes, which must still fit them.
    pub(crate) fn run(
        &mut self,
        state: &PolicyState,
        entities: &[ResourceEntity],
    ) -> steward_store::policies::CheckResult {
        refuse_deleting_types_in_use(state, &self.deleted_types)?;
        let (written, stored): (Vec<&ResourceEntity>, Vec<&ResourceEntity>) =
            entities.iter().partition(|e| {
                self.written
                    .contains(&(e.resource_type.clone(), e.id.clone()))
            });
        let (engine, effects) = check(
            state,
            &written,
            self.roles.clone(),
            self.personas.clone(),
            self.changed.clone(),
            self.tolerated.clone(),
            Some(&self.previous),
        )?;
        for e in stored {
            check_stored_entity(&engine, e)?;
        }
        self.compiled = Some(engine);
        Ok(effects)
    }
}

impl Engines {
    /// The tenant's engine, compiled from the store on first use.
    pub async fn get(&self, store: &Store, tenant_id: &str) -> Result<Arc<Engine>, Error> {
        if let Some(c) = self.read().get(tenant_id) {
            return Ok(c.engine.clone());
        }
        self.reload(store, tenant_id).await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Compiled>> {
        self.by_tenant
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Install a tenant's engine built from the state of `epoch`, unless
    /// the one installed is of a later epoch: a rebuild that read the store
    /// before a change committed here never replaces that change's engine.
    fn install(
        &self,
        tenant_id: &str,
        epoch: i64,
        engine: Engine,
        stored_types: HashSet<String>,
    ) -> Arc<Engine> {
        let engine = Arc::new(engine);
        let stored_types = Arc::new(stored_types);
        let mut map = self
            .by_tenant
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(newer) = map.get(tenant_id).filter(|c| c.epoch > epoch) {
            // The caller decides with the newer engine too.
            let newer = newer.engine.clone();
            drop(map);
            return newer;
        }
        let replaced = map.insert(
            tenant_id.to_string(),
            Compiled {
                epoch,
                engine: engine.clone(),
                stored_types,
            },
        );
        drop(map);
        // A large engine takes a while to free: not while decisions wait
        // for the lock.
        drop(replaced);
        engine
    }

    /// Whether the tenant has stored entities of `resource_type` (true when
    /// unknown, so a cold cache never skips a read).
    pub fn has_stored(&self, tenant_id: &str, resource_type: &str) -> bool {
        self.read()
            .get(tenant_id)
            .is_none_or(|c| c.stored_types.contains(resource_type))
    }

    /// Rebuild the tenant's engine from the store.
    pub async fn reload(&self, store: &Store, tenant_id: &str) -> Result<Arc<Engine>, Error> {
        self.reload_after(store, tenant_id, None).await
    }

    /// Rebuild the tenant's engine from the store, reusing the checks of
    /// `compiled` (an engine just compiled for the change being committed)
    /// or else of the current engine.
    pub async fn reload_after(
        &self,
        store: &Store,
        tenant_id: &str,
        compiled: Option<&Engine>,
    ) -> Result<Arc<Engine>, Error> {
        let state = store.policy_state(tenant_id).await?;
        let (roles, personas) = store.role_and_persona_names(tenant_id).await?;
        let current = self.read().get(tenant_id).map(|c| c.engine.clone());
        let engine = compile(
            &catalog(&state, roles, personas, vec![], None),
            compiled.or(current.as_deref()),
        )?;
        for (id, why) in engine.impossible() {
            tracing::warn!(tenant = tenant_id, policy = %id, "{why}; it is kept but does nothing until fixed or deleted");
        }
        let stored: HashSet<String> = store
            .resource_entity_types(tenant_id)
            .await?
            .into_iter()
            .collect();
        Ok(self.install(tenant_id, state.epoch, engine, stored))
    }

    /// Apply policy changes atomically and swap in the new engine.
    pub async fn change(
        &self,
        store: &Store,
        ctx: &ChangeContext,
        changes: Vec<PolicyChange>,
    ) -> Result<ChangeReport, Error> {
        let mut check = ChangeCheck::new(self, store, &ctx.tenant_id, &changes).await?;
        let report = store
            .change_policies(ctx, changes, |state, entities| check.run(state, entities))
            .await?;
        // Committed: what follows only updates this node's engine, and if it
        // fails the next refresh does it (the epoch moved past the engine's).
        let Some(engine) = check.compiled else {
            return Ok(report);
        };
        let tenant = ctx.tenant_id.as_str();
        let before = report.state.epoch - i64::from(!report.changes.is_empty());
        if before != check.epoch {
            // Another change came between the read of the roles and
            // personas and this one: the engine compiled may not list a
            // role or persona it made. Rebuild from the store, reusing
            // the engine's checks.
            if let Err(e) = self.reload_after(store, tenant, Some(&engine)).await {
                tracing::warn!(tenant, error = %e, "could not rebuild the policy engine after a policy change; the next refresh retries");
            }
            return Ok(report);
        }
        match store.resource_entity_types(tenant).await {
            Ok(stored) => {
                self.install(
                    tenant,
                    report.state.epoch,
                    engine,
                    stored.into_iter().collect(),
                );
            }
            Err(e) => {
                tracing::warn!(tenant, error = %e, "could not install the policy engine after a policy change; the next refresh rebuilds it");
            }
        }
        Ok(report)
    }

    /// After a role or persona change committed here, rebuild the tenant's
    /// engine (if it has one) so the next decision's remediation hints
    /// offer the new lists. The change moved the tenant's epoch: other
    /// nodes rebuild theirs at their next refresh, and so does this one if
    /// this rebuild fails.
    pub async fn catalog_changed(&self, store: &Store, tenant_id: &str) {
        if !self.read().contains_key(tenant_id) {
            return;
        }
        if let Err(e) = self.reload(store, tenant_id).await {
            tracing::warn!(tenant = tenant_id, error = %e, "could not rebuild the policy engine after a role or persona change; the next refresh retries");
        }
    }

    /// Rebuild engines whose epoch moved on another node.
    pub async fn refresh(&self, store: &Store) {
        let tenants: Vec<(String, i64)> = self
            .read()
            .iter()
            .map(|(t, c)| (t.clone(), c.epoch))
            .collect();
        for (tenant, epoch) in tenants {
            let stale = match store.policy_epoch(&tenant).await {
                Ok(current) => current != epoch,
                Err(_) => false,
            };
            if !stale {
                continue;
            }
            if let Err(e) = self.reload(store, &tenant).await {
                tracing::warn!(tenant, error = %e, "could not rebuild the policy engine; keeping the previous one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::compile(&Catalog::default()).unwrap()
    }

    fn epoch_of(engines: &Engines, tenant: &str) -> Option<i64> {
        engines.read().get(tenant).map(|c| c.epoch)
    }

    /// An engine read from the store before a change committed here is
    /// not installed over that change's engine, and whoever installs it
    /// gets the newer one; an engine of the same or a later epoch is.
    #[test]
    fn an_older_engine_never_replaces_a_newer_one() {
        let engines = Engines::default();
        let newer = engines.install("t", 5, engine(), HashSet::new());
        let got = engines.install("t", 4, engine(), HashSet::from(["doc".to_string()]));
        assert!(Arc::ptr_eq(&got, &newer));
        assert_eq!(epoch_of(&engines, "t"), Some(5));
        assert!(
            !engines.has_stored("t", "doc"),
            "the older install left no trace"
        );
        let same = engines.install("t", 5, engine(), HashSet::new());
        assert!(!Arc::ptr_eq(&same, &newer));
        engines.install("t", 6, engine(), HashSet::new());
        assert_eq!(epoch_of(&engines, "t"), Some(6));
        assert_eq!(epoch_of(&engines, "other"), None);
    }
}
