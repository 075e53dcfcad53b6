//! What every handler shares: the store, the secret hasher and the rules.

use std::sync::Arc;

use steward_core::InventoryRules;
use steward_core::credentials::SecretHasher;
use steward_store::Store;

use crate::Config;

/// Shared, cheaply cloned server state.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// The state's contents.
pub struct Inner {
    /// The store.
    pub store: Store,
    /// Hashes presented secrets for lookup.
    pub hasher: SecretHasher,
    /// Classifications and default spawn limits.
    pub rules: InventoryRules,
    /// Each tenant's compiled policy engine.
    pub engines: crate::engines::Engines,
    /// The tamper-evident log: group-commit writer, Merkle tree, signer.
    pub audit: crate::audit_log::AuditLog,
    /// Approval wake-ups and persona approval rules.
    pub approvals: crate::approvals::Approvals,
    /// Recently authenticated API tokens.
    pub tokens: crate::auth::TokenCache,
    /// Each tenant's quota rules, briefly cached.
    pub quotas: crate::quotas::QuotaRules,
    /// The webhook delivery worker's handle.
    pub webhooks: crate::webhooks::Webhooks,
    /// Where outgoing requests may go (`[outbound]`).
    pub outbound: crate::outbound::Outbound,
    /// The MCP gateway's sessions.
    pub mcp: crate::mcp::Gateway,
    /// The configuration the server started with.
    pub config: Config,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
