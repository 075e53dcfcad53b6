//! Registered upstreams, briefly cached: every gateway request names its
//! upstream, and reading the registration from the store each time cost a
//! store round trip per MCP message. A change made through this node (the
//! API or an applied governance directory) takes effect at once; one made
//! on another node of a cluster within [`REGISTRATION_TTL`], as quota rules
//! and compiled policies do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use steward_core::Error;
use steward_store::Store;
use steward_types::McpServer;

/// How long a registration read from the store is used without reading it
/// again.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(1);

/// Entries kept before expired ones are swept out.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
struct Entries {
    /// By tenant, then by the id or name the request used.
    by_tenant: HashMap<String, HashMap<String, (Arc<McpServer>, Instant)>>,
    len: usize,
    /// Bumped by every change, so that a read that raced a change does not
    /// put the old registration back.
    generation: u64,
}

/// Each tenant's recently used registrations.
#[derive(Default)]
pub struct Registrations {
    entries: Mutex<Entries>,
}

impl Registrations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The registration `key` (id or name) of `tenant`; `not_found` as the
    /// store says it.
    pub async fn get(
        &self,
        store: &Store,
        tenant: &str,
        key: &str,
    ) -> Result<Arc<McpServer>, Error> {
        let generation = {
            let entries = self.lock();
            if let Some((server, at)) = entries.by_tenant.get(tenant).and_then(|m| m.get(key))
                && at.elapsed() < REGISTRATION_TTL
            {
                return Ok(server.clone());
            }
            entries.generation
        };
        let server = Arc::new(store.get_mcp_server(tenant, key).await?);
        let mut entries = self.lock();
        if entries.generation == generation {
            if entries.len >= SWEEP_ABOVE {
                entries.by_tenant.values_mut().for_each(|m| {
                    m.retain(|_, (_, at)| at.elapsed() < REGISTRATION_TTL);
                });
                entries.by_tenant.retain(|_, m| !m.is_empty());
                entries.len = entries.by_tenant.values().map(HashMap::len).sum();
            }
            let previous = entries
                .by_tenant
                .entry(tenant.to_string())
                .or_default()
                .insert(key.to_string(), (server.clone(), Instant::now()));
            if previous.is_none() {
                entries.len += 1;
            }
        }
        Ok(server)
    }

    /// Forget the tenant's registrations (one was registered, replaced or
    /// removed on this node).
    pub fn forget(&self, tenant: &str) {
        let mut entries = self.lock();
        entries.generation = entries.generation.wrapping_add(1);
        if let Some(removed) = entries.by_tenant.remove(tenant) {
            entries.len -= removed.len();
        }
    }
}
