//! Proven delegation (OAuth 2.0 Token Exchange, RFC 8693): an agent trades
//! a person's identity-provider token for a short-lived `stwd_` token that
//! acts for that person. This file verifies the person's token (a JWT
//! signed by a key of a trusted issuer's JWKS) and decides whom a request
//! may act for; the store keeps what was proven.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use steward_core::Error;
use steward_store::delegation::NewDelegation;
use steward_types::{
    ACCESS_TOKEN_TYPE, DELEGATION_TOKEN_PREFIX, ErrorCode, Issuer, MatchClaim,
    TOKEN_EXCHANGE_GRANT, TokenExchanged,
};

use crate::auth::Caller;
use crate::state::AppState;

/// Clock skew allowed on the person's token's `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// Token types accepted as the subject token: each must be a signed JWT.
const SUBJECT_TOKEN_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];

/// Why an exchange was refused, as RFC 6749 §5.2 names it.
#[derive(Debug)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The OAuth error code.
    pub error: &'static str,
    /// For a person.
    pub description: String,
}

impl Refusal {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Refusal {
            status,
            error,
            description: description.into(),
        }
    }

    fn grant(description: impl Into<String>) -> Self {
        Refusal::new(400, "invalid_grant", description)
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        match e.code {
            ErrorCode::Unauthenticated => Refusal::grant(e.message),
            ErrorCode::StoreUnavailable => Refusal::new(503, "temporarily_unavailable", e.message),
            _ => Refusal::new(500, "server_error", e.message),
        }
    }
}

/// The form of a token exchange request (RFC 8693 §2.1); every field
/// optional here so that a missing one gets an OAuth error, not a
/// framework one.
#[derive(Debug, Default, Deserialize)]
pub struct ExchangeForm {
    /// Must be the token-exchange grant.
    pub grant_type: Option<String>,
    /// The person's token.
    pub subject_token: Option<String>,
    /// Its type.
    pub subject_token_type: Option<String>,
    /// Only Steward's own token type may be asked for.
    pub requested_token_type: Option<String>,
}

/// Check a key set before it is stored: a JSON Web Key Set of public
/// signing keys (RSA, EC or Ed25519), each usable.
pub fn check_jwks(jwks: &serde_json::Value) -> Result<(), Error> {
    let set: JwkSet = serde_json::from_value(jwks.clone()).map_err(|e| {
        Error::invalid(
            "jwks",
            format!("not a JSON Web Key Set ({{\"keys\": [...]}}): {e}"),
        )
    })?;
    if set.keys.is_empty() {
        return Err(Error::invalid("jwks", "holds no keys"));
    }
    for (i, key) in set.keys.iter().enumerate() {
        if matches!(key.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(Error::invalid(
                "jwks",
                format!("key {i} is a shared secret (kty oct); only public keys are trusted"),
            ));
        }
        check_key(key).map_err(|why| Error::invalid("jwks", format!("key {i}: {why}")))?;
        DecodingKey::from_jwk(key).map_err(|e| {
            Error::invalid("jwks", format!("key {i} cannot verify signatures: {e}"))
        })?;
    }
    Ok(())
}

/// A key's parts have the sizes its kind needs (a point's coordinates on
/// its curve, an RSA modulus of at least 2048 bits), so a mistyped key is
/// refused when stored rather than failing every exchange later.
fn check_key(key: &Jwk) -> Result<(), String> {
    use jsonwebtoken::jwk::EllipticCurve;
    let bytes = |field: &str, text: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| format!("{field} is not base64url"))
    };
    match &key.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => {
            let size = match ec.curve {
                EllipticCurve::P256 => 32,
                EllipticCurve::P384 => 48,
                _ => return Err("only P-256 and P-384 EC keys are supported".into()),
            };
            for (field, text) in [("x", &ec.x), ("y", &ec.y)] {
                if bytes(field, text)?.len() != size {
                    return Err(format!("{field} is not a {}-byte coordinate", size));
                }
            }
        }
        AlgorithmParameters::RSA(rsa) => {
            let n = bytes("n", &rsa.n)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "an RSA modulus of {bits} bits; at least 2048 are needed"
                ));
            }
            if bytes("e", &rsa.e)?.is_empty() {
                return Err("e is empty".into());
            }
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err("only Ed25519 OKP keys are supported".into());
            }
            if bytes("x", &okp.x)?.len() != 32 {
                return Err("x is not a 32-byte Ed25519 key".into());
            }
        }
        AlgorithmParameters::OctetKey(_) => return Err("a shared secret".into()),
    }
    Ok(())
}

/// The claims Steward reads from the person's token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    may_act: Option<serde_json::Value>,
}

/// The `iss` of an unverified JWT, to find whose keys verify it.
fn unverified_issuer(token: &str) -> Result<String, Refusal> {
    let malformed = || Refusal::grant("the subject token is not a JWT (header.payload.signature)");
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| malformed())?;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let iss: Iss = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    iss.iss
        .ok_or_else(|| Refusal::grant("the subject token has no iss claim"))
}

/// Whether a key of this kind signs with `alg`.
fn key_takes(key: &Jwk, alg: Algorithm) -> bool {
    use Algorithm::*;
    if key.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
        return false;
    }
    let family_fits = match &key.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => alg == EdDSA,
        AlgorithmParameters::OctetKey(_) => false,
    };
    let pinned = key
        .common
        .key_algorithm
        .and_then(|a| a.to_string().parse::<Algorithm>().ok());
    family_fits && pinned.is_none_or(|p| p == alg)
}

/// Verify the person's token against the issuer: signature by one of its
/// keys (the one its `kid` names, if it names one), `iss`, `aud`, `exp`
/// and `nbf`. Returns the claims and the claim that names the person.
fn verify(token: &str, issuer: &Issuer) -> Result<(Claims, String), Refusal> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| Refusal::grant(format!("the subject token's header is unreadable: {e}")))?;
    let set: JwkSet = serde_json::from_value(issuer.jwks.clone())
        .map_err(|e| Refusal::new(500, "server_error", format!("stored key set: {e}")))?;
    let candidates: Vec<&Jwk> = set
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .filter(|k| key_takes(k, header.alg))
        .collect();
    if candidates.is_empty() {
        return Err(Refusal::grant(format!(
            "issuer '{}' has no {:?} key{}",
            issuer.name,
            header.alg,
            header
                .kid
                .as_deref()
                .map(|k| format!(" with kid '{k}'"))
                .unwrap_or_default()
        )));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer.issuer.as_str()]);
    validation.set_audience(&[issuer.audience.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    let mut last = None;
    for key in candidates {
        let Ok(decoding) = DecodingKey::from_jwk(key) else {
            continue;
        };
        match jsonwebtoken::decode::<Claims>(token, &decoding, &validation) {
            Ok(data) => {
                let claims = data.claims;
                let verified = match &claims.email_verified {
                    Some(v) if *v == serde_json::json!(true) || *v == serde_json::json!("true") => {
                        Some(true)
                    }
                    Some(_) => Some(false),
                    None => None,
                };
                let named = match issuer.match_claim {
                    // An address the provider has not verified names
                    // nobody: someone could have typed another's. One it
                    // says nothing about names someone only where the
                    // issuer is trusted to (`accept_unverified_email`).
                    MatchClaim::Email if verified == Some(false) => {
                        return Err(Refusal::grant(
                            "the subject token's email is not verified (email_verified is false)",
                        ));
                    }
                    MatchClaim::Email if verified.is_none() && !issuer.accept_unverified_email => {
                        return Err(Refusal::grant(format!(
                            "the subject token does not say its email is verified (no \
                             email_verified claim), and issuer '{}' names people by verified \
                             e-mail only: have the provider send email_verified, match by sub, \
                             or put the issuer with accept_unverified_email if its addresses \
                             cannot be changed by their users",
                            issuer.name
                        )));
                    }
                    MatchClaim::Email => claims.email.clone().ok_or_else(|| {
                        Refusal::grant("the subject token has no email claim to name the person")
                    })?,
                    MatchClaim::Sub => claims.sub.clone(),
                };
                return Ok((claims, named));
            }
            Err(e) => last = Some(e),
        }
    }
    use jsonwebtoken::errors::ErrorKind;
    let why = match last.as_ref().map(|e| e.kind()) {
        Some(ErrorKind::ExpiredSignature) => "the subject token has expired".to_string(),
        Some(ErrorKind::ImmatureSignature) => "the subject token is not valid yet (nbf)".into(),
        Some(ErrorKind::InvalidAudience) => format!(
            "the subject token is not for this audience (Steward expects aud '{}')",
            issuer.audience
        ),
        Some(ErrorKind::InvalidIssuer) => "the subject token's iss does not match".into(),
        Some(ErrorKind::InvalidSignature) => format!(
            "the subject token's signature does not verify with issuer '{}''s keys",
            issuer.name
        ),
        Some(ErrorKind::MissingRequiredClaim(c)) => format!("the subject token has no {c} claim"),
        Some(other) => format!("the subject token was refused: {other:?}"),
        None => "no key of the issuer could be used".into(),
    };
    Err(Refusal::grant(why))
}

/// Exchange a person's token for a delegated one, for the agent `caller`
/// (authenticated by the key whose lookup hash is `key_hash`).
pub async fn exchange(
    state: &AppState,
    caller: &Caller,
    key_hash: String,
    form: ExchangeForm,
) -> Result<TokenExchanged, Refusal> {
    let Caller::Agent {
        agent,
        key,
        delegation,
        ..
    } = caller
    else {
        return Err(Refusal::new(
            401,
            "invalid_client",
            "the token endpoint takes an agent key (Authorization: Bearer stw_...)",
        ));
    };
    if delegation.is_some() {
        return Err(Refusal::new(
            401,
            "invalid_client",
            "exchange with the agent's own key, not with a delegated token",
        ));
    }
    match form.grant_type.as_deref() {
        Some(TOKEN_EXCHANGE_GRANT) => {}
        Some(other) => {
            return Err(Refusal::new(
                400,
                "unsupported_grant_type",
                format!("grant_type '{other}': only {TOKEN_EXCHANGE_GRANT} is supported"),
            ));
        }
        None => {
            return Err(Refusal::new(
                400,
                "invalid_request",
                "grant_type is missing",
            ));
        }
    }
    let token = form
        .subject_token
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| Refusal::new(400, "invalid_request", "subject_token is missing"))?;
    match form.subject_token_type.as_deref() {
        Some(t) if SUBJECT_TOKEN_TYPES.contains(&t) => {}
        Some(t) => {
            return Err(Refusal::new(
                400,
                "invalid_request",
                format!(
                    "subject_token_type '{t}': a signed JWT is expected ({})",
                    SUBJECT_TOKEN_TYPES.join(", ")
                ),
            ));
        }
        None => {
            return Err(Refusal::new(
                400,
                "invalid_request",
                "subject_token_type is missing",
            ));
        }
    }
    if let Some(t) = form
        .requested_token_type
        .as_deref()
        .filter(|t| *t != ACCESS_TOKEN_TYPE)
    {
        return Err(Refusal::new(
            400,
            "invalid_target",
            format!("requested_token_type '{t}': Steward issues {ACCESS_TOKEN_TYPE} only"),
        ));
    }
    let tenant = caller.tenant_id();
    let iss = unverified_issuer(&token)?;
    let issuer =
        state.store.issuer_for(tenant, &iss).await?.ok_or_else(|| {
            Refusal::grant(format!("issuer '{iss}' is not trusted in this tenant"))
        })?;
    let (claims, named) = verify(&token, &issuer)?;
    if issuer.require_may_act {
        let may = claims
            .may_act
            .as_ref()
            .and_then(|m| m.get("sub"))
            .and_then(serde_json::Value::as_str);
        if may != Some(agent.id.as_str()) && may != Some(agent.name.as_str()) {
            return Err(Refusal::grant(format!(
                "issuer '{}' requires the subject token to name the agent in may_act.sub; \
                 it names {}, not '{}'",
                issuer.name,
                may.map(|m| format!("'{m}'"))
                    .unwrap_or_else(|| "no agent".into()),
                agent.name
            )));
        }
    }
    let settings = state.store.delegation_settings(tenant).await?;
    let now = Utc::now();
    let mut expires_at = now + chrono::Duration::seconds(i64::from(settings.max_lifetime_secs));
    let caps = [
        DateTime::from_timestamp(claims.exp, 0),
        key.expires_at,
        agent.expires_at,
    ];
    for cap in caps.into_iter().flatten() {
        expires_at = expires_at.min(cap);
    }
    if expires_at <= now {
        return Err(Refusal::grant(
            "the delegation would already have expired (the person's token or the agent key ends now)",
        ));
    }
    let secret = steward_core::credentials::generate_secret(DELEGATION_TOKEN_PREFIX);
    let d = state
        .store
        .issue_delegation(
            &caller.context(),
            NewDelegation {
                token_hash: state.hasher.hash(&secret),
                agent_id: agent.id.clone(),
                key_id: key.id.clone(),
                key_hash,
                issuer: issuer.name.clone(),
                subject: claims.sub,
                match_claim: issuer.match_claim,
                claimed: named,
                expires_at,
            },
        )
        .await?;
    Ok(TokenExchanged {
        access_token: secret,
        issued_token_type: ACCESS_TOKEN_TYPE.into(),
        token_type: "Bearer".into(),
        expires_in: (d.expires_at - now).num_seconds(),
        delegation_id: d.id,
    })
}

/// The person a request acts for: a delegated token's person (a request
/// may name them again, never someone else), or the one named, unless the
/// tenant requires proof from agent keys. Enforcement points' tokens name
/// whom they like, as before.
pub async fn acting_for(
    state: &AppState,
    caller: &Caller,
    named: Option<&str>,
) -> Result<Option<String>, Error> {
    let Caller::Agent { delegation, .. } = caller else {
        return Ok(named.map(str::to_string));
    };
    match (delegation, named) {
        // The person's own id (as the MCP gateway passes it on) needs no read.
        (Some(d), None) => Ok(Some(d.human_id.clone())),
        (Some(d), Some(named)) if named == d.human_id => Ok(Some(d.human_id.clone())),
        (Some(d), Some(named)) => {
            let human = state
                .store
                .human_context(caller.tenant_id(), named)
                .await?
                .map(|(h, _)| h.id);
            if human.as_deref() == Some(d.human_id.as_str()) {
                Ok(Some(d.human_id.clone()))
            } else {
                Err(Error::new(
                    ErrorCode::DelegationRequired,
                    format!(
                        "this delegated token acts for {} only; it cannot act for '{named}'",
                        d.human_id
                    ),
                ))
            }
        }
        (None, None) => Ok(None),
        (None, Some(named)) => {
            if state
                .store
                .delegation_settings(caller.tenant_id())
                .await?
                .require_proof
            {
                Err(Error::new(
                    ErrorCode::DelegationRequired,
                    format!(
                        "this tenant needs proof to act for '{named}': exchange the person's \
                         identity-provider token for a delegated token (POST /oauth/token, \
                         grant_type {TOKEN_EXCHANGE_GRANT}) and use that token"
                    ),
                ))
            } else {
                Ok(Some(named.to_string()))
            }
        }
    }
}
