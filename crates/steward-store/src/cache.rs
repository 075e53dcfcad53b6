//! Identities a decision reads (an agent with its persona, team and owner; a
//! human with their teams; a tenant's delegation rules), kept in memory
//! between changes.
//!
//! Every write transaction that commits through [`crate::Tx::commit`] bumps a
//! change counter; a cached identity is used only while the counter is what
//! it was before the identity was read, so the first decision after any
//! committed change reads the store again (a suspension, a removed role or
//! a deactivated human changes the very next decision). The decision path's
//! own writes (audit records, quota counters) change no identity and leave
//! the cache valid. Only this process's writes are seen, so the cache is on
//! for SQLite (one node) and off for PostgreSQL (several nodes write).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::agents::AgentContext;

/// Entries kept per kind before the cache starts over.
const CAPACITY: usize = 200_000;

/// The change counter, and the audit log's head as this process last
/// wrote it.
#[derive(Debug)]
pub struct Changes {
    count: AtomicU64,
    /// The log's size after this process's last one-trip append (see
    /// [`crate::audit`]); −1 when unknown. Any other write that touches the
    /// head forgets it, holding the (single) write connection as it does.
    audit_head: AtomicI64,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            count: AtomicU64::new(0),
            audit_head: AtomicI64::new(-1),
        }
    }
}

impl Changes {
    /// Something committed.
    pub(crate) fn bump(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// The count now; read it before reading what is to be cached.
    pub(crate) fn now(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// The audit log's size as last written here, if known.
    pub(crate) fn audit_head(&self) -> Option<i64> {
        Some(self.audit_head.load(Ordering::SeqCst)).filter(|h| *h >= 0)
    }

    pub(crate) fn set_audit_head(&self, size: i64) {
        self.audit_head.store(size, Ordering::SeqCst);
    }

    /// Something else moves the head: read it from the store next time.
    pub(crate) fn forget_audit_head(&self) {
        self.audit_head.store(-1, Ordering::SeqCst);
    }
}

/// A map of values each read at a known change count.
#[derive(Debug)]
struct Map<V>(RwLock<HashMap<(String, String), (u64, V)>>);

impl<V: Clone> Map<V> {
    fn new() -> Self {
        Map(RwLock::new(HashMap::new()))
    }

    fn get(&self, key: &(String, String), now: u64) -> Option<V> {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key)
            .filter(|(seen, _)| *seen == now)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: (String, String), seen: u64, value: V) {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, (seen, value));
    }
}

/// The cached identities of one store.
#[derive(Debug)]
pub struct Identities {
    enabled: bool,
    changes: Arc<Changes>,
    agents: Map<AgentContext>,
    humans: Map<(steward_types::Human, Vec<String>)>,
    keys: Map<AgentKey>,
    delegation: Map<steward_types::DelegationSettings>,
}

/// An agent key found by its hash, with the agent it belongs to.
pub type AgentKey = (crate::credentials::KeyLookup, steward_types::Agent);

fn key(tenant: &str, key: &str) -> (String, String) {
    (tenant.to_string(), key.to_string())
}

impl Identities {
    /// A cache, used only when `enabled`.
    pub(crate) fn new(enabled: bool) -> Self {
        Identities {
            enabled,
            changes: Arc::new(Changes::default()),
            agents: Map::new(),
            humans: Map::new(),
            keys: Map::new(),
            delegation: Map::new(),
        }
    }

    /// The change counter write transactions bump.
    pub(crate) fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    /// The change count to remember with what is read next; `None` when
    /// caching is off.
    pub(crate) fn before_read(&self) -> Option<u64> {
        self.enabled.then(|| self.changes.now())
    }

    pub(crate) fn agent(&self, tenant: &str, k: &str) -> Option<AgentContext> {
        let now = self.before_read()?;
        self.agents.get(&key(tenant, k), now)
    }

    pub(crate) fn put_agent(&self, tenant: &str, k: &str, seen: u64, v: &AgentContext) {
        self.agents.put(key(tenant, k), seen, v.clone());
    }

    pub(crate) fn human(
        &self,
        tenant: &str,
        k: &str,
    ) -> Option<(steward_types::Human, Vec<String>)> {
        let now = self.before_read()?;
        self.humans.get(&key(tenant, k), now)
    }

    pub(crate) fn put_human(
        &self,
        tenant: &str,
        k: &str,
        seen: u64,
        v: &(steward_types::Human, Vec<String>),
    ) {
        self.humans.put(key(tenant, k), seen, v.clone());
    }

    pub(crate) fn agent_key(&self, hash: &str) -> Option<AgentKey> {
        let now = self.before_read()?;
        self.keys.get(&key("", hash), now)
    }

    pub(crate) fn put_agent_key(&self, hash: &str, seen: u64, v: &AgentKey) {
        self.keys.put(key("", hash), seen, v.clone());
    }

    /// A tenant's delegation rules (read on each decision where an agent
    /// key names a person).
    pub(crate) fn delegation(&self, tenant: &str) -> Option<steward_types::DelegationSettings> {
        let now = self.before_read()?;
        self.delegation.get(&key(tenant, ""), now)
    }

    pub(crate) fn put_delegation(
        &self,
        tenant: &str,
        seen: u64,
        v: &steward_types::DelegationSettings,
    ) {
        self.delegation.put(key(tenant, ""), seen, v.clone());
    }

    /// A key's last use was written (a change no decision depends on): the
    /// cached copy learns it, so that it is not written again at once.
    pub(crate) fn key_used(&self, hash: &str, at: chrono::DateTime<chrono::Utc>) {
        let mut map = self
            .keys
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, (found, _))) = map.get_mut(&key("", hash)) {
            found.key.last_used_at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_serves_only_until_the_next_change() {
        let changes = Changes::default();
        let map: Map<u32> = Map::new();
        let k = key("t", "a");
        let seen = changes.now();
        map.put(k.clone(), seen, 7);
        assert_eq!(map.get(&k, changes.now()), Some(7));
        changes.bump();
        assert_eq!(map.get(&k, changes.now()), None);
        // Read before a change committed: stale at once.
        let seen = changes.now();
        changes.bump();
        map.put(k.clone(), seen, 8);
        assert_eq!(map.get(&k, changes.now()), None);
    }

    #[test]
    fn off_means_never_cached() {
        let off = Identities::new(false);
        assert_eq!(off.before_read(), None);
        let on = Identities::new(true);
        assert_eq!(on.before_read(), Some(0));
    }
}
