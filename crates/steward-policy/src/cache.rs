//! Cedar entities of recent requests, reused when a request brings exactly
//! the same identities and resource again.
//!
//! Building a request's Cedar entities (attribute values, parents, Cedar's
//! transitive closure) costs more than evaluating the policies. An entry
//! keeps a copy of the data it was built from and is used only when the new
//! request's chain and resource are equal to that copy in every field (type,
//! id, attributes, parents): the entities are then the ones the data would
//! build again, so decisions always reflect the data passed in. Changed data
//! (a role removed, an attribute such as `active` edited) misses and replaces
//! the entry; whether an identity may act at all (`Subject::inactive`) is not
//! part of the entities and is read on every call. Entries are only stored
//! after the data passed every check, so invalid data is refused on every
//! call. The cache belongs to one compiled engine and goes with it when
//! policies or declarations change. At most [`CAPACITY`] entries, each a
//! copy of the request's identities and resource plus their Cedar form.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{Entities, EntityUid};

use crate::decide::{EntityData, Subject};

/// Entries per engine; when full, an arbitrary entry makes room.
pub(crate) const CAPACITY: usize = 1024;

/// What was built for one chain and resource, with the data it was built
/// from.
pub(crate) struct Cached {
    chain: Vec<EntityData>,
    resource: EntityData,
    pub(crate) entities: Entities,
    pub(crate) resource_uid: EntityUid,
    /// The uid of each identity of the chain, in order.
    pub(crate) principals: Vec<EntityUid>,
}

impl Cached {
    pub(crate) fn new(
        chain: &[Subject],
        resource: &EntityData,
        entities: Entities,
        resource_uid: EntityUid,
        principals: Vec<EntityUid>,
    ) -> Cached {
        Cached {
            chain: chain.iter().map(|s| s.entity.clone()).collect(),
            resource: resource.clone(),
            entities,
            resource_uid,
            principals,
        }
    }

    /// Whether these entities were built from exactly this data.
    fn built_from(&self, chain: &[Subject], resource: &EntityData) -> bool {
        self.chain.len() == chain.len()
            && same(&self.resource, resource)
            && self
                .chain
                .iter()
                .zip(chain)
                .all(|(c, s)| same(c, &s.entity))
    }
}

/// `a == b`, faster when the attributes come in the same order (as they do
/// when the same code builds them): equal in order implies equal as maps,
/// and only a difference in order falls back to the lookups of `==`.
fn same(a: &EntityData, b: &EntityData) -> bool {
    a.entity_type == b.entity_type
        && a.id == b.id
        && a.parents == b.parents
        && a.attrs.len() == b.attrs.len()
        && (a.attrs.iter().eq(b.attrs.iter()) || a.attrs == b.attrs)
}

/// Recent requests' entities, keyed by the uids of their chain and resource.
#[derive(Default)]
pub(crate) struct EntityCache {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, Arc<Cached>>>,
}

impl EntityCache {
    /// The key of a request: its identities' and resource's types and ids.
    /// Two requests with the same key may still differ in their data; a
    /// lookup compares the data too.
    pub(crate) fn key(&self, chain: &[Subject], resource: &EntityData) -> u64 {
        let mut h = self.hasher.build_hasher();
        chain.len().hash(&mut h);
        for e in chain.iter().map(|s| &s.entity).chain([resource]) {
            e.entity_type.hash(&mut h);
            e.id.hash(&mut h);
        }
        h.finish()
    }

    /// The entities built from exactly this data, if they are here.
    pub(crate) fn get(
        &self,
        key: u64,
        chain: &[Subject],
        resource: &EntityData,
    ) -> Option<Arc<Cached>> {
        let found = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()?;
        found.built_from(chain, resource).then_some(found)
    }

    /// Keep `cached` under `key`, replacing what was there.
    pub(crate) fn put(&self, key: u64, cached: Arc<Cached>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let evicted = if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            let first = entries.keys().next().copied();
            first.and_then(|k| entries.remove(&k))
        } else {
            None
        };
        let replaced = entries.insert(key, cached);
        drop(entries);
        // Dropped outside the lock: freeing entities is not free.
        drop((evicted, replaced));
    }

    /// Entries held (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
