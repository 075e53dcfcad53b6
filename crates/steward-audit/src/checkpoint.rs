//! Checkpoints: tree heads signed with the log's Ed25519 key.
//!
//! The signed bytes are a text body in the shape of a C2SP signed note's
//! checkpoint: the origin line, the tree size in decimal, the root in
//! base64, then one extension line with the time. A person can read it, and
//! a verifier rebuilds it from the fields, so nothing but the fields is
//! trusted.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hash::Hash;

/// The state of the log at one moment: its size and root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHead {
    /// Names the log (for example `steward.example.com/audit`); one line.
    pub origin: String,
    /// The number of entries the root covers.
    pub size: u64,
    /// MTH of the first `size` entries.
    pub root: Hash,
    /// When the head was signed, in milliseconds since the Unix epoch.
    pub time_ms: i64,
}

impl TreeHead {
    /// The bytes that are signed:
    ///
    /// ```text
    /// <origin>
    /// <size in decimal>
    /// <root in base64>
    /// time <time_ms in decimal>
    /// ```
    ///
    /// each line ending in `\n`. The last three lines have fixed shapes and
    /// the origin is everything before them, so distinct heads never share a
    /// body, even if an origin held a newline (which callers should avoid:
    /// signed-note tools expect one line).
    pub fn canonical_text(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            self.root.to_base64(),
            self.time_ms
        )
    }
}

/// A tree head with the log's signature over [`TreeHead::canonical_text`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTreeHead {
    /// The signed tree head.
    pub head: TreeHead,
    /// The Ed25519 signature, standard base64 (88 characters).
    pub signature: String,
    /// Which key signed: see [`LogSigner::key_id`].
    pub key_id: String,
}

/// Why a signature, or what it covers, was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The public key is not base64 of a valid 32-byte Ed25519 key.
    #[error("the public key is not a valid Ed25519 key: {0}")]
    InvalidPublicKey(String),
    /// The signature is not base64 of 64 bytes.
    #[error("the signature is not base64 of an Ed25519 signature: {0}")]
    MalformedSignature(String),
    /// The object names a different key than the one it is checked with.
    #[error("signed by key {actual}, but the key given is {expected}")]
    KeyIdMismatch {
        /// The id of the key given to the verifier.
        expected: String,
        /// The id the signed object names.
        actual: String,
    },
    /// The signature does not verify: the contents or the signature changed,
    /// or another key signed.
    #[error("the signature does not match the signed contents and key")]
    BadSignature,
    /// A bundle manifest carries a public key other than the trusted one.
    #[error("the manifest carries public key {actual}, not the trusted key {expected}")]
    PublicKeyMismatch {
        /// The trusted key, base64.
        expected: String,
        /// The key in the manifest, base64.
        actual: String,
    },
    /// An exported entries file whose SHA-256 is not the manifest's.
    #[error("the entries file has SHA-256 {actual}, the manifest says {expected}")]
    EntriesDigestMismatch {
        /// The digest in the manifest, hex.
        expected: String,
        /// The digest of the file, hex.
        actual: String,
    },
    /// The signed object could not be encoded for signing.
    #[error("could not encode the signed contents: {0}")]
    Encoding(String),
}

/// The log's signing key (Ed25519).
///
/// The secret never leaves this value except through
/// [`LogSigner::seed_bytes`], for storage; `Debug` shows only the key id.
#[derive(Clone)]
pub struct LogSigner {
    key: SigningKey,
}

impl fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl LogSigner {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The key for a stored 32-byte seed (the Ed25519 secret key).
    pub fn from_seed_bytes(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte seed, to store the key. Keep it secret.
    pub fn seed_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key, standard base64 of its 32 bytes: what verifiers need.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.key.verifying_key().as_bytes())
    }

    /// A short name for the key: the first 8 hex characters of the SHA-256
    /// of the public key's 32 bytes.
    pub fn key_id(&self) -> String {
        key_id_for(self.key.verifying_key().as_bytes())
    }

    /// Signs a tree head.
    pub fn sign(&self, head: TreeHead) -> SignedTreeHead {
        let signature = self.sign_bytes(head.canonical_text().as_bytes());
        SignedTreeHead {
            head,
            signature,
            key_id: self.key_id(),
        }
    }

    /// Signs arbitrary bytes, returning the signature in base64.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> String {
        BASE64.encode(self.key.sign(message).to_bytes())
    }
}

/// The key id (see [`LogSigner::key_id`]) of a base64 public key.
pub fn key_id_of(public_key_base64: &str) -> Result<String, VerifyError> {
    let key = parse_public_key(public_key_base64)?;
    Ok(key_id_for(key.as_bytes()))
}

/// Checks a signed tree head against the log's public key (base64).
pub fn verify_tree_head(
    public_key_base64: &str,
    signed: &SignedTreeHead,
) -> Result<(), VerifyError> {
    let key = parse_public_key(public_key_base64)?;
    check_key_id(&key, &signed.key_id)?;
    verify_bytes(
        &key,
        signed.head.canonical_text().as_bytes(),
        &signed.signature,
    )
}

pub(crate) fn parse_public_key(public_key_base64: &str) -> Result<VerifyingKey, VerifyError> {
    let bytes = BASE64
        .decode(public_key_base64.trim())
        .map_err(|e| VerifyError::InvalidPublicKey(e.to_string()))?;
    let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        VerifyError::InvalidPublicKey(format!("{} bytes, expected 32", bytes.len()))
    })?;
    VerifyingKey::from_bytes(&array).map_err(|e| VerifyError::InvalidPublicKey(e.to_string()))
}

pub(crate) fn check_key_id(key: &VerifyingKey, claimed: &str) -> Result<(), VerifyError> {
    let expected = key_id_for(key.as_bytes());
    if claimed != expected {
        return Err(VerifyError::KeyIdMismatch {
            expected,
            actual: claimed.to_owned(),
        });
    }
    Ok(())
}

/// Verifies a base64 signature strictly (no weak keys, no malleable
/// signatures), so one message has one valid signature per key.
pub(crate) fn verify_bytes(
    key: &VerifyingKey,
    message: &[u8],
    signature_base64: &str,
) -> Result<(), VerifyError> {
    let bytes = BASE64
        .decode(signature_base64)
        .map_err(|e| VerifyError::MalformedSignature(e.to_string()))?;
    let array: [u8; 64] = bytes.as_slice().try_into().map_err(|_| {
        VerifyError::MalformedSignature(format!("{} bytes, expected 64", bytes.len()))
    })?;
    let signature = Signature::from_bytes(&array);
    key.verify_strict(message, &signature)
        .map_err(|_| VerifyError::BadSignature)
}

fn key_id_for(public_key: &[u8; 32]) -> String {
    let digest = Hash(Sha256::digest(public_key).into());
    let mut hex = digest.to_hex();
    hex.truncate(8);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    fn head() -> TreeHead {
        TreeHead {
            origin: "steward.test/audit".into(),
            size: 42,
            root: leaf_hash(b"root"),
            time_ms: 1_764_151_320_000,
        }
    }

    #[test]
    fn canonical_text_is_the_documented_note_body() {
        let head = head();
        assert_eq!(
            head.canonical_text(),
            format!(
                "steward.test/audit\n42\n{}\ntime 1764151320000\n",
                head.root.to_base64()
            )
        );
    }

    #[test]
    fn a_signed_head_verifies_and_round_trips_through_json() {
        let signer = LogSigner::generate();
        let signed = signer.sign(head());
        verify_tree_head(&signer.public_key_base64(), &signed).unwrap();
        let json = serde_json::to_string(&signed).unwrap();
        let back: SignedTreeHead = serde_json::from_str(&json).unwrap();
        assert_eq!(back, signed);
        verify_tree_head(&signer.public_key_base64(), &back).unwrap();
    }

    #[test]
    fn the_seed_restores_the_same_key() {
        let signer = LogSigner::generate();
        let restored = LogSigner::from_seed_bytes(&signer.seed_bytes());
        assert_eq!(restored.public_key_base64(), signer.public_key_base64());
        assert_eq!(restored.key_id(), signer.key_id());
        assert_eq!(restored.key_id().len(), 8);
        assert_eq!(
            key_id_of(&signer.public_key_base64()).unwrap(),
            signer.key_id()
        );
        // Ed25519 signatures are deterministic.
        assert_eq!(restored.sign(head()), signer.sign(head()));
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let signer = LogSigner::from_seed_bytes(&[7u8; 32]);
        let shown = format!("{signer:?}");
        assert!(shown.contains(&signer.key_id()));
        assert!(!shown.contains("7, 7"));
    }

    #[test]
    fn tampering_is_rejected() {
        let signer = LogSigner::generate();
        let key = signer.public_key_base64();
        let signed = signer.sign(head());

        let mut changed = signed.clone();
        changed.head.size += 1;
        assert_eq!(
            verify_tree_head(&key, &changed),
            Err(VerifyError::BadSignature)
        );

        let mut changed = signed.clone();
        changed.head.time_ms -= 1;
        assert_eq!(
            verify_tree_head(&key, &changed),
            Err(VerifyError::BadSignature)
        );

        let mut changed = signed.clone();
        changed.head.origin.push('x');
        assert_eq!(
            verify_tree_head(&key, &changed),
            Err(VerifyError::BadSignature)
        );

        let mut changed = signed.clone();
        changed.signature = "AAAA".into();
        assert!(matches!(
            verify_tree_head(&key, &changed),
            Err(VerifyError::MalformedSignature(_))
        ));

        let other = LogSigner::generate();
        assert!(matches!(
            verify_tree_head(&other.public_key_base64(), &signed),
            Err(VerifyError::KeyIdMismatch { .. })
        ));
        let mut relabelled = signed.clone();
        relabelled.key_id = other.key_id();
        assert_eq!(
            verify_tree_head(&other.public_key_base64(), &relabelled),
            Err(VerifyError::BadSignature)
        );

        assert!(matches!(
            verify_tree_head("not a key", &signed),
            Err(VerifyError::InvalidPublicKey(_))
        ));
    }
}
