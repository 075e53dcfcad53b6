//! Authentication: every request names its credential with
//! `Authorization: Bearer ...`. Agent keys (`stw_`) authenticate agents; API
//! tokens authenticate people and automation as admin or auditor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::Utc;
use steward_core::ChangeContext;
use steward_core::credentials::{KeyRefusal, admit_agent_key};
use steward_core::lifecycle::Transition;
use steward_types::{
    AGENT_KEY_PREFIX, Actor, Agent, ApiKey, ApiToken, DELEGATION_TOKEN_PREFIX, ErrorCode, TokenRole,
};

use crate::error::{ApiError, current_request_id};
use crate::state::AppState;

/// Header a platform administrator uses to act in another tenant.
pub const TENANT_HEADER: &str = "x-steward-tenant";

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A person or automation with an API token.
    Token {
        /// The tenant it acts in (its own, or the `X-Steward-Tenant` one for a platform admin).
        tenant_id: String,
        /// The token.
        token: ApiToken,
        /// Whether it may manage tenants.
        platform_admin: bool,
    },
    /// An agent with an API key.
    Agent {
        /// The agent's tenant.
        tenant_id: String,
        /// The agent.
        agent: Box<Agent>,
        /// The key it used.
        key: ApiKey,
        /// The delegation it presented (a `stwd_` token): it acts for
        /// that person, proven by their identity provider.
        delegation: Option<Box<steward_types::Delegation>>,
    },
}

impl Caller {
    /// The tenant the call acts in.
    pub fn tenant_id(&self) -> &str {
        match self {
            Caller::Token { tenant_id, .. } | Caller::Agent { tenant_id, .. } => tenant_id,
        }
    }

    /// The audit actor.
    pub fn actor(&self) -> Actor {
        match self {
            Caller::Token { token, .. } => Actor {
                kind: "token".into(),
                id: token.id.clone(),
                human_id: token.human_id.clone(),
            },
            Caller::Agent {
                agent, delegation, ..
            } => Actor {
                kind: "agent".into(),
                id: agent.id.clone(),
                human_id: delegation.as_ref().map(|d| d.human_id.clone()),
            },
        }
    }

    /// A change context for an administrator, or `forbidden`.
    pub fn admin(&self) -> Result<ChangeContext, ApiError> {
        match self {
            Caller::Token { token, .. } if token.role == TokenRole::Admin => Ok(self.context()),
            Caller::Token { token, .. } if token.role == TokenRole::Pep => Err(pep_only()),
            Caller::Token { .. } => Err(ApiError::new(
                ErrorCode::Forbidden,
                "auditor tokens are read-only; this needs an admin token",
            )),
            Caller::Agent { .. } => Err(ApiError::new(
                ErrorCode::Forbidden,
                "agent keys cannot administer Steward; use an admin token",
            )),
        }
    }

    /// A token that may ask for decisions about any principal of its
    /// tenant (admin or pep), or `forbidden`. Agent keys ask about
    /// themselves, which each route checks.
    pub fn decider(&self) -> Result<(), ApiError> {
        match self {
            Caller::Token { token, .. } if token.role == TokenRole::Auditor => Err(ApiError::new(
                ErrorCode::Forbidden,
                "auditor tokens are read-only; decisions need an admin or pep token",
            )),
            _ => Ok(()),
        }
    }

    /// The tenant, for an admin or auditor reading, or `forbidden` for agents
    /// and pep tokens.
    pub fn reader(&self) -> Result<&str, ApiError> {
        match self {
            Caller::Token { token, .. } if token.role == TokenRole::Pep => Err(pep_only()),
            Caller::Token { tenant_id, .. } => Ok(tenant_id),
            Caller::Agent { .. } => Err(ApiError::new(
                ErrorCode::Forbidden,
                "agent keys cannot read the inventory; use an admin or auditor token",
            )),
        }
    }

    /// A change context for the platform administrator, or `forbidden`.
    pub fn platform_admin(&self) -> Result<ChangeContext, ApiError> {
        match self {
            Caller::Token {
                platform_admin: true,
                ..
            } => self.admin(),
            _ => Err(ApiError::new(
                ErrorCode::Forbidden,
                "only the platform administrator (bootstrap token) manages tenants",
            )),
        }
    }

    /// The context of a change or decision made by this caller, now.
    pub fn context(&self) -> ChangeContext {
        ChangeContext {
            tenant_id: self.tenant_id().to_string(),
            actor: self.actor(),
            request_id: current_request_id(),
            source: crate::error::current_source(),
            now: Utc::now(),
        }
    }
}

/// What a pep token is told outside the decision endpoints.
fn pep_only() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "pep tokens only ask for decisions (/v1/decisions, /access/v1/...); this needs an admin or auditor token",
    )
}

/// How long a looked-up API token is trusted without reading the store again.
/// Revoking a token on this node takes effect at once; on another node of a
/// cluster within this time. Agent keys are cached by the store only until
/// the next committed change (and only on SQLite, a single node): an agent's
/// suspension or a key's revocation counts on the very next request.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Recently authenticated API tokens, by secret hash.
#[derive(Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<TokenEntries>,
}

/// The cached lookups, and how many times they were cleared: a lookup read
/// from the store before a clear is not cached after it.
#[derive(Default)]
struct TokenEntries {
    map: std::collections::HashMap<
        String,
        (steward_store::credentials::TokenLookup, std::time::Instant),
    >,
    cleared: u64,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, TokenEntries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cached lookup, or the clear count to hand [`TokenCache::put`] with
    /// the lookup read from the store.
    fn get(&self, hash: &str) -> Result<steward_store::credentials::TokenLookup, u64> {
        let entries = self.lock();
        entries
            .map
            .get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(t, _)| t.clone())
            .ok_or(entries.cleared)
    }

    /// Cache a lookup read from the store, unless the cache was cleared
    /// since `cleared` was taken (the lookup may predate a revocation).
    fn put(&self, hash: &str, token: steward_store::credentials::TokenLookup, cleared: u64) {
        let mut entries = self.lock();
        if entries.cleared != cleared {
            return;
        }
        if entries.map.len() > 10_000 {
            entries
                .map
                .retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
        }
        entries
            .map
            .insert(hash.to_string(), (token, std::time::Instant::now()));
    }

    /// Forget every cached token (after a revocation).
    pub fn clear(&self) {
        let mut entries = self.lock();
        entries.map.clear();
        entries.cleared += 1;
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = bearer_secret(&parts.headers)?;
        let tenant = parts
            .headers
            .get(TENANT_HEADER)
            .map(|t| t.to_str().unwrap_or_default());
        authenticate(state, secret, tenant).await
    }
}

/// The secret a request's `Authorization: Bearer` header carries.
fn bearer_secret(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            unauthenticated("no credential: send Authorization: Bearer <token or agent key>")
        })?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            unauthenticated("the Authorization header must be 'Bearer <token or agent key>'")
        })
}

/// What an agent authenticated with (its key, or a delegated token
/// exchanged with one), to check again while something it opened lasts: an
/// MCP session holds on for as long as its client keeps its event stream,
/// and must not outlive the credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentCredential {
    /// The secret's hash, as the store keeps it.
    hash: String,
    /// A delegated token (`stwd_`) rather than an agent key.
    delegated: bool,
}

impl AgentCredential {
    /// The agent credential a request carries, if it carries one.
    pub fn of(state: &AppState, headers: &axum::http::HeaderMap) -> Option<AgentCredential> {
        let secret = bearer_secret(headers).ok()?;
        let delegated = secret.starts_with(DELEGATION_TOKEN_PREFIX);
        (delegated || secret.starts_with(AGENT_KEY_PREFIX)).then(|| AgentCredential {
            hash: state.hasher.hash(secret),
            delegated,
        })
    }

    /// Whether it still authenticates as it did (not revoked or expired,
    /// its agent active), read from the store without counting as a use.
    pub async fn still_good(
        &self,
        store: &steward_store::Store,
    ) -> Result<bool, steward_core::Error> {
        let now = Utc::now();
        let key_hash = if self.delegated {
            let Some(found) = store.find_delegation(&self.hash).await? else {
                return Ok(false);
            };
            let d = &found.delegation;
            if d.revoked_at.is_some() || d.expires_at <= now {
                return Ok(false);
            }
            found.key_hash
        } else {
            self.hash.clone()
        };
        let Some((found, agent)) = store.find_agent_key(&key_hash).await? else {
            return Ok(false);
        };
        Ok(admit_agent_key(
            agent.state,
            agent.expires_at,
            found.key.expires_at,
            found.key.revoked_at.is_some(),
            now,
        )
        .is_ok())
    }
}

/// The caller a secret (an API token or agent key) names, acting in its own
/// tenant or, for a platform administrator, in `tenant`.
pub async fn authenticate(
    state: &AppState,
    secret: &str,
    tenant: Option<&str>,
) -> Result<Caller, ApiError> {
    let hash = state.hasher.hash(secret);
    if secret.starts_with(AGENT_KEY_PREFIX) {
        return authenticate_agent(state, &hash).await;
    }
    if secret.starts_with(DELEGATION_TOKEN_PREFIX) {
        return authenticate_delegated(state, &hash).await;
    }
    let found = match state.tokens.get(&hash) {
        Ok(t) => t,
        Err(cleared) => {
            let t = state
                .store
                .find_token(&hash)
                .await?
                .ok_or_else(|| unauthenticated("unknown token"))?;
            state.tokens.put(&hash, t.clone(), cleared);
            t
        }
    };
    admit_token(state, found, tenant).await
}

/// The caller a found API token makes, if it is still good, acting in its
/// own tenant or, for a platform administrator, in `tenant`.
pub async fn admit_token(
    state: &AppState,
    found: steward_store::credentials::TokenLookup,
    tenant: Option<&str>,
) -> Result<Caller, ApiError> {
    let now = Utc::now();
    if found.token.revoked_at.is_some() {
        return Err(unauthenticated("this token was revoked"));
    }
    if found.token.expires_at.is_some_and(|e| e <= now) {
        return Err(unauthenticated("this token has expired"));
    }
    let mut tenant_id = found.token.tenant_id.clone();
    if let Some(t) = tenant {
        let t = t.to_string();
        if t != tenant_id {
            if !found.platform_admin {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only the platform administrator may act in another tenant",
                ));
            }
            if !state.store.tenant_exists(&t).await? {
                return Err(ApiError(steward_core::Error::not_found("tenant", &t)));
            }
            tenant_id = t;
        }
    }
    Ok(Caller::Token {
        tenant_id,
        token: found.token,
        platform_admin: found.platform_admin,
    })
}

async fn authenticate_agent(state: &AppState, hash: &str) -> Result<Caller, ApiError> {
    let (found, agent) = state
        .store
        .find_agent_key(hash)
        .await?
        .ok_or_else(|| unauthenticated("unknown agent key"))?;
    let tenant_id = found.tenant_id;
    let now = Utc::now();
    let admitted = admit_agent_key(
        agent.state,
        agent.expires_at,
        found.key.expires_at,
        found.key.revoked_at.is_some(),
        now,
    );
    match admitted {
        Ok(()) => {}
        Err(KeyRefusal::Revoked) => return Err(unauthenticated("this agent key was revoked")),
        Err(KeyRefusal::KeyExpired) => return Err(unauthenticated("this agent key has expired")),
        Err(KeyRefusal::AgentNotActive(s)) => {
            return Err(ApiError::new(
                ErrorCode::AgentNotActive,
                format!(
                    "agent '{}' is {}; its keys do not authenticate",
                    agent.name,
                    s.as_str()
                ),
            ));
        }
        Err(KeyRefusal::AgentExpired) => {
            // Enforce expiry now rather than waiting for the sweep.
            let ctx = ChangeContext::system(&tenant_id, "expiry", now);
            match state
                .store
                .transition_agent(
                    &ctx,
                    &agent.id,
                    Transition::Expire,
                    Some("expiry time passed".into()),
                )
                .await
            {
                Ok(_) => {
                    // Its open gateway sessions end with it.
                    let id = [agent.id.clone()];
                    state.mcp.close_agent_sessions(&id).await;
                }
                // Another request or the sweep expired it first.
                Err(e) if e.code == ErrorCode::InvalidTransition => {}
                Err(e) => return Err(e.into()),
            }
            return Err(ApiError::new(
                ErrorCode::AgentNotActive,
                format!(
                    "agent '{}' passed its expiry time and is now expired",
                    agent.name
                ),
            ));
        }
    }
    state.store.touch_key(hash, &found.key, now);
    Ok(Caller::Agent {
        tenant_id,
        agent: Box::new(agent),
        key: found.key,
        delegation: None,
    })
}

/// A delegated token: good while it is neither revoked nor expired and the
/// agent key it was exchanged with still authenticates.
async fn authenticate_delegated(state: &AppState, hash: &str) -> Result<Caller, ApiError> {
    let found = state
        .store
        .find_delegation(hash)
        .await?
        .ok_or_else(|| unauthenticated("unknown delegated token"))?;
    let d = found.delegation;
    if d.revoked_at.is_some() {
        return Err(unauthenticated("this delegated token was revoked"));
    }
    if d.expires_at <= Utc::now() {
        return Err(unauthenticated(
            "this delegated token has expired; exchange the person's token again",
        ));
    }
    match authenticate_agent(state, &found.key_hash).await? {
        Caller::Agent {
            tenant_id,
            agent,
            key,
            ..
        } if tenant_id == found.tenant_id && agent.id == d.agent_id => Ok(Caller::Agent {
            tenant_id,
            agent,
            key,
            delegation: Some(Box::new(d)),
        }),
        _ => Err(unauthenticated(
            "the agent key this token was exchanged with no longer matches it",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::TokenCache;
    use steward_store::credentials::TokenLookup;

    fn lookup() -> TokenLookup {
        TokenLookup {
            token: steward_types::ApiToken {
                id: "tok_a".into(),
                tenant_id: "t".into(),
                name: "n".into(),
                role: steward_types::TokenRole::Admin,
                human_id: None,
                prefix: "stwt_a".into(),
                created_at: chrono::Utc::now(),
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
            },
            platform_admin: false,
        }
    }

    #[test]
    fn a_lookup_older_than_a_clear_is_not_cached() {
        let cache = TokenCache::default();
        let before = cache.get("h").unwrap_err();
        cache.clear();
        cache.put("h", lookup(), before);
        assert!(cache.get("h").is_err(), "read before the revocation");
        let now = cache.get("h").unwrap_err();
        cache.put("h", lookup(), now);
        assert!(cache.get("h").is_ok());
    }
}
