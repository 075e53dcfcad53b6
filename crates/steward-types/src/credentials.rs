//! Credentials: agent API keys and human/admin API tokens. Secrets appear in
//! exactly one response (the one that creates them) and are stored hashed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Prefix of every agent API key.
pub const AGENT_KEY_PREFIX: &str = "stw_";
/// Prefix of every human or admin API token.
pub const API_TOKEN_PREFIX: &str = "stwt_";

/// Metadata of an agent API key; never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// Key id.
    pub id: String,
    /// The agent it belongs to.
    pub agent_id: String,
    /// A name for the key (where it is deployed).
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last successful authentication.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Create an agent API key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A name for the key.
    #[serde(default)]
    pub name: String,
    /// When it stops working (must be in the future).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A freshly created key: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key's metadata.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret, `stw_...`. Store it now: it is never shown again.
    pub secret: String,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Read and change everything in its tenant.
    Admin,
    /// Read everything in its tenant, change nothing.
    Auditor,
    /// An enforcement point's: ask for decisions (`/v1/decisions`, their
    /// outcomes, AuthZEN) about any principal of its tenant, and nothing
    /// else: it reads no inventory and changes nothing.
    Pep,
}

impl TokenRole {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Auditor => "auditor",
            TokenRole::Pep => "pep",
        }
    }
}

/// Metadata of an API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    /// Token id.
    pub id: String,
    /// Tenant it acts in.
    pub tenant_id: String,
    /// A name for the token.
    pub name: String,
    /// Admin or auditor.
    pub role: TokenRole,
    /// The human it belongs to, so their actions are attributable.
    pub human_id: Option<String>,
    /// The first characters of the token.
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last successful authentication.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Create an API token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name for the token.
    pub name: String,
    /// Admin or auditor.
    pub role: TokenRole,
    /// The human (id or e-mail) it belongs to.
    pub human: Option<String>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Tenant to create it in (platform administrators only; default: the caller's).
    pub tenant: Option<String>,
}

/// A freshly created token: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token's metadata.
    #[serde(flatten)]
    pub token: ApiToken,
    /// The secret, `stwt_...`. Store it now: it is never shown again.
    pub secret: String,
}

/// Who the caller is, as the server sees its credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WhoAmI {
    /// An agent authenticated by an API key.
    Agent {
        /// Tenant.
        tenant_id: String,
        /// The agent.
        agent_id: String,
        /// Its name.
        agent_name: String,
        /// The key used.
        key_id: String,
        /// The person it acts for, when it presented a delegated token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acting_for: Option<String>,
    },
    /// A person or automation with an API token.
    Token {
        /// Tenant.
        tenant_id: String,
        /// Token id (`bootstrap` for the bootstrap admin token).
        token_id: String,
        /// Admin or auditor.
        role: TokenRole,
        /// The human it belongs to.
        human_id: Option<String>,
        /// True for the platform administrator (may manage tenants).
        platform_admin: bool,
    },
}
