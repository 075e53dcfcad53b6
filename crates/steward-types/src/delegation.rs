//! Proven delegation: an agent exchanges a person's identity-provider
//! token (a signed JWT) for a short-lived Steward token that acts for that
//! person (OAuth 2.0 Token Exchange, RFC 8693), so "on behalf of" is
//! something the person's login proves rather than something the agent says.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Prefix of every delegated token.
pub const DELEGATION_TOKEN_PREFIX: &str = "stwd_";

/// The grant type of a token exchange (RFC 8693 §2.1).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The token type Steward issues (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Which claim of the person's token names the Steward human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchClaim {
    /// `email`, matched to the human's e-mail (case-insensitive): the default.
    #[default]
    Email,
    /// `sub`, matched to the human's `external_id`.
    Sub,
}

impl MatchClaim {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchClaim::Email => "email",
            MatchClaim::Sub => "sub",
        }
    }
}

/// An identity provider whose tokens prove who an agent acts for
/// (`PUT /v1/delegation/issuers/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutIssuer {
    /// The `iss` its tokens carry, exactly (`https://login.example.com/`).
    pub issuer: String,
    /// The `aud` its tokens must carry for Steward.
    pub audience: String,
    /// Its public keys as a JSON Web Key Set (`{"keys": [...]}`): RSA, EC
    /// (P-256, P-384) or Ed25519 signing keys. Replace it to rotate keys.
    #[schema(value_type = Object)]
    pub jwks: serde_json::Value,
    /// Which claim names the person (default `email`).
    #[serde(default)]
    pub match_claim: MatchClaim,
    /// Accept only tokens whose `may_act` claim (RFC 8693 §4.4) names the
    /// exchanging agent (`{"may_act": {"sub": "<agent id or name>"}}`), so
    /// a person's token serves only the agent their login chose. Default
    /// `false`: any active agent of the tenant may exchange it.
    #[serde(default)]
    pub require_may_act: bool,
    /// With `match_claim` `email`: accept a token that does not say its
    /// address is verified (no `email_verified` claim, as some providers
    /// issue). Default `false`: only `email_verified: true` names a person,
    /// since an address nobody verified could be anyone's. A token saying
    /// `false` is refused either way.
    #[serde(default)]
    pub accept_unverified_email: bool,
}

/// A trusted identity provider as a governance directory declares it
/// (`[[delegation_issuer]]`): its name and the fields of [`PutIssuer`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredIssuer {
    /// Its name in Steward.
    pub name: String,
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    /// Its public keys as a JSON Web Key Set.
    #[schema(value_type = Object)]
    pub jwks: serde_json::Value,
    /// Which claim names the person (default `email`).
    #[serde(default)]
    pub match_claim: MatchClaim,
    /// Whether tokens must name the exchanging agent in `may_act`.
    #[serde(default)]
    pub require_may_act: bool,
    /// Whether an e-mail not marked verified still names a person.
    #[serde(default)]
    pub accept_unverified_email: bool,
}

impl DeclaredIssuer {
    /// The request that puts it.
    pub fn put(&self) -> PutIssuer {
        PutIssuer {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            jwks: self.jwks.clone(),
            match_claim: self.match_claim,
            require_may_act: self.require_may_act,
            accept_unverified_email: self.accept_unverified_email,
        }
    }
}

/// A trusted identity provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Issuer {
    /// Its name in Steward.
    pub name: String,
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    /// Its public keys.
    #[schema(value_type = Object)]
    pub jwks: serde_json::Value,
    /// Which claim names the person.
    pub match_claim: MatchClaim,
    /// Whether tokens must name the exchanging agent in `may_act`.
    #[serde(default)]
    pub require_may_act: bool,
    /// Whether an e-mail not marked verified still names a person.
    #[serde(default)]
    pub accept_unverified_email: bool,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Issuer {
    /// Whether putting `req` would change nothing.
    pub fn matches(&self, req: &PutIssuer) -> bool {
        self.issuer == req.issuer
            && self.audience == req.audience
            && self.jwks == req.jwks
            && self.match_claim == req.match_claim
            && self.require_may_act == req.require_may_act
            && self.accept_unverified_email == req.accept_unverified_email
    }
}

/// A tenant's delegation rules (`GET, PUT /v1/delegation/settings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegationSettings {
    /// Refuse an agent key that only says whom it acts for (the
    /// `on_behalf_of` field or the MCP header): acting for a person then
    /// needs a delegated token. Enforcement points' tokens are trusted as
    /// before. Default `false`.
    #[serde(default)]
    pub require_proof: bool,
    /// Longest life of a delegated token, 60..=86400 seconds (default 3600);
    /// it never outlives the person's token either.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_secs: u32,
}

fn default_max_lifetime() -> u32 {
    3600
}

impl Default for DelegationSettings {
    fn default() -> Self {
        DelegationSettings {
            require_proof: false,
            max_lifetime_secs: default_max_lifetime(),
        }
    }
}

/// A delegated token's record; never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delegation {
    /// Its id (`dlg_...`).
    pub id: String,
    /// The agent that acts.
    pub agent_id: String,
    /// The person it acts for.
    pub human_id: String,
    /// The identity provider that proved it.
    pub issuer: String,
    /// The person's token's `sub`.
    pub subject: String,
    /// The agent key it was exchanged with: revoking the key ends it.
    pub key_id: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked (by an admin, or by the person leaving).
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Filters of `GET /v1/delegations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DelegationQuery {
    /// Only this agent's (id or name).
    pub agent: Option<String>,
    /// Only those acting for this person (id or e-mail).
    pub human: Option<String>,
    /// Only those still usable (not revoked, not expired).
    pub active: Option<bool>,
    /// How many (1..=500, default 100).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The answer to a token exchange (RFC 8693 §2.2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenExchanged {
    /// The delegated token, `stwd_...`: use it as the agent's bearer token.
    pub access_token: String,
    /// Always `urn:ietf:params:oauth:token-type:access_token`.
    pub issued_token_type: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Its record's id, to find or revoke it.
    pub delegation_id: String,
}

/// An OAuth error (RFC 6749 §5.2), as the token endpoint answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unsupported_grant_type` or `invalid_target`.
    pub error: String,
    /// What was wrong, for a person.
    pub error_description: String,
}
