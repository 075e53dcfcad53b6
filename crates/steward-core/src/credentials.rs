//! Credential secrets: generation, keyed hashing and constant-time checks.
//!
//! Keys carry 256 bits of randomness, so a fast keyed hash (HMAC-SHA256 with a
//! server-side pepper) is the right store: slow password hashes buy nothing
//! against guessing a 256-bit secret and would cost every request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How many characters of a secret are kept in clear to recognise it.
pub const DISPLAY_PREFIX_LEN: usize = 12;

/// A new secret: `prefix` followed by 32 random bytes in base64url.
pub fn generate_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The part of a secret shown in listings.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// Random bytes for a new pepper.
pub fn generate_pepper() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// Hashes secrets with a server-wide pepper.
#[derive(Clone)]
pub struct SecretHasher {
    pepper: Vec<u8>,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHasher(..)")
    }
}

impl SecretHasher {
    /// A hasher keyed with `pepper`.
    pub fn new(pepper: Vec<u8>) -> Self {
        SecretHasher { pepper }
    }

    /// The stored form of a secret: hex HMAC-SHA256.
    pub fn hash(&self, secret: &str) -> String {
        hex_encode(&self.mac(secret))
    }

    /// Whether `secret` hashes to `stored`, compared in constant time.
    pub fn verify(&self, secret: &str, stored: &str) -> bool {
        let computed = self.hash(secret);
        computed.as_bytes().ct_eq(stored.as_bytes()).into()
    }

    fn mac(&self, secret: &str) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail; fall back to an
        // empty tag (which matches no stored hash) rather than panic.
        match Hmac::<Sha256>::new_from_slice(&self.pepper) {
            Ok(mut mac) => {
                mac.update(secret.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_unique_and_verify() {
        let a = generate_secret("stw_");
        let b = generate_secret("stw_");
        assert!(a.starts_with("stw_") && a.len() == 4 + 43);
        assert_ne!(a, b);
        let h = SecretHasher::new(generate_pepper());
        let stored = h.hash(&a);
        assert!(!stored.contains(&a));
        assert!(h.verify(&a, &stored));
        assert!(!h.verify(&b, &stored));
        let other = SecretHasher::new(generate_pepper());
        assert!(!other.verify(&a, &stored), "the pepper is part of the hash");
        assert_eq!(display_prefix(&a).len(), DISPLAY_PREFIX_LEN);
    }
}

/// Why a presented credential was refused, before any lookup of rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// The key was revoked.
    Revoked,
    /// The key itself passed its expiry time.
    KeyExpired,
    /// The agent passed its expiry time (it is marked expired now).
    AgentExpired,
    /// The agent is not active (suspended, decommissioned, pending, ...).
    AgentNotActive(steward_types::AgentState),
}

/// Whether an agent key may authenticate at `now`. Only an active agent whose
/// own expiry has not passed, holding an unrevoked, unexpired key, gets in.
pub fn admit_agent_key(
    agent_state: steward_types::AgentState,
    agent_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    key_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    key_revoked: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), KeyRefusal> {
    if key_revoked {
        return Err(KeyRefusal::Revoked);
    }
    if key_expires_at.is_some_and(|e| e <= now) {
        return Err(KeyRefusal::KeyExpired);
    }
    if !crate::lifecycle::may_act(agent_state) {
        return Err(KeyRefusal::AgentNotActive(agent_state));
    }
    if agent_expires_at.is_some_and(|e| e <= now) {
        return Err(KeyRefusal::AgentExpired);
    }
    Ok(())
}

#[cfg(test)]
mod admission_tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use proptest::prelude::*;
    use steward_types::AgentState;

    proptest! {
        /// Keys of a suspended, decommissioned, expired (by state or by time),
        /// rejected or not-yet-active agent never authenticate; revoked or
        /// expired keys never authenticate.
        #[test]
        fn only_active_unexpired_agents_with_live_keys_get_in(
            state in prop::sample::select(AgentState::ALL.to_vec()),
            agent_exp in proptest::option::of(-1000i64..1000),
            key_exp in proptest::option::of(-1000i64..1000),
            revoked in any::<bool>(),
        ) {
            let now = Utc.timestamp_opt(1_800_000_000, 0).single().unwrap();
            let at = |s: i64| now + Duration::seconds(s);
            let result = admit_agent_key(state, agent_exp.map(at), key_exp.map(at), revoked, now);
            let expected_ok = state == AgentState::Active
                && agent_exp.is_none_or(|s| s > 0)
                && key_exp.is_none_or(|s| s > 0)
                && !revoked;
            prop_assert_eq!(result.is_ok(), expected_ok);
        }
    }
}
