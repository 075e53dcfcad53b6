//! Export bundles: a file of entries plus a manifest, signed with the log's
//! key, that someone holding only the public key can check offline.
//!
//! Checking a bundle takes three steps: [`verify_manifest`] (the manifest is
//! the log's, unaltered), [`BundleManifest::check_entries_file`] (the entries
//! file is the one the manifest describes), then
//! [`crate::LogVerifier::after_prefix`] with the manifest's
//! `prefix_subtrees`, fed the entries, against the manifest's checkpoints.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical::canonical_json;
use crate::checkpoint::{
    LogSigner, SignedTreeHead, TreeHead, VerifyError, check_key_id, parse_public_key, verify_bytes,
};
use crate::hash::Hash;

/// Prefixed to the manifest's canonical JSON before signing, so a manifest
/// signature can never be taken for a signature over anything else.
const MANIFEST_CONTEXT: &[u8] = b"steward audit bundle manifest v1\n";

/// How the exported entries are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleFormat {
    /// One canonical entry per line (JSON Lines).
    Jsonl,
    /// One OCSF event per line, for SIEMs.
    Ocsf,
}

impl BundleFormat {
    /// The name used in manifests: `jsonl` or `ocsf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Ocsf => "ocsf",
        }
    }
}

/// What an export bundle holds, and the evidence to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// The log's origin line (see [`TreeHead::origin`]).
    pub origin: String,
    /// The log's public key, base64; a verifier compares it with the key it
    /// trusts.
    pub public_key: String,
    /// The key's id (see [`LogSigner::key_id`]).
    pub key_id: String,
    /// The first exported sequence number (1-based).
    pub from_seq: u64,
    /// The last exported sequence number.
    pub to_seq: u64,
    /// How many entries the file holds.
    pub entry_count: u64,
    /// SHA-256, hex, of the exported file's bytes (see [`entries_sha256`]).
    pub entries_sha256: String,
    /// The roots of the perfect subtrees covering entries 1 to
    /// `from_seq - 1`, largest first (see
    /// [`crate::MerkleTree::prefix_subtrees`]); empty when the export starts
    /// at entry 1. With them the verifier recomputes roots at the
    /// checkpoints' sizes without the earlier entries, and any forgery of
    /// them shows as a checkpoint mismatch.
    #[serde(default)]
    pub prefix_subtrees: Vec<Hash>,
    /// Signed checkpoints covering the exported entries.
    pub checkpoints: Vec<SignedTreeHead>,
    /// How the entries are written.
    pub format: BundleFormat,
}

impl BundleManifest {
    /// Checks that an exported file is the one this manifest describes.
    pub fn check_entries_file(&self, file: &[u8]) -> Result<(), VerifyError> {
        let actual = entries_sha256(file);
        if !actual.eq_ignore_ascii_case(&self.entries_sha256) {
            return Err(VerifyError::EntriesDigestMismatch {
                expected: self.entries_sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// The signed bytes: a context line, then the canonical JSON of every
    /// field. Built field by field (not through serde) so that renaming a
    /// field for the wire never changes what was signed, and adding one
    /// fails to compile here until it is signed too.
    fn signing_bytes(&self) -> Vec<u8> {
        let Self {
            origin,
            public_key,
            key_id,
            from_seq,
            to_seq,
            entry_count,
            entries_sha256,
            prefix_subtrees,
            checkpoints,
            format,
        } = self;
        let mut fields = Map::new();
        fields.insert("origin".into(), Value::from(origin.as_str()));
        fields.insert("public_key".into(), Value::from(public_key.as_str()));
        fields.insert("key_id".into(), Value::from(key_id.as_str()));
        fields.insert("from_seq".into(), Value::from(*from_seq));
        fields.insert("to_seq".into(), Value::from(*to_seq));
        fields.insert("entry_count".into(), Value::from(*entry_count));
        fields.insert(
            "entries_sha256".into(),
            Value::from(entries_sha256.as_str()),
        );
        fields.insert(
            "prefix_subtrees".into(),
            Value::Array(
                prefix_subtrees
                    .iter()
                    .map(|hash| Value::from(hash.to_hex()))
                    .collect(),
            ),
        );
        fields.insert(
            "checkpoints".into(),
            Value::Array(checkpoints.iter().map(checkpoint_value).collect()),
        );
        fields.insert("format".into(), Value::from(format.as_str()));
        let mut bytes = MANIFEST_CONTEXT.to_vec();
        bytes.extend_from_slice(&canonical_json(&Value::Object(fields)));
        bytes
    }
}

fn checkpoint_value(signed: &SignedTreeHead) -> Value {
    let SignedTreeHead {
        head:
            TreeHead {
                origin,
                size,
                root,
                time_ms,
            },
        signature,
        key_id,
    } = signed;
    let mut head = Map::new();
    head.insert("origin".into(), Value::from(origin.as_str()));
    head.insert("size".into(), Value::from(*size));
    head.insert("root".into(), Value::from(root.to_hex()));
    head.insert("time_ms".into(), Value::from(*time_ms));
    let mut fields = Map::new();
    fields.insert("head".into(), Value::Object(head));
    fields.insert("signature".into(), Value::from(signature.as_str()));
    fields.insert("key_id".into(), Value::from(key_id.as_str()));
    Value::Object(fields)
}

/// A manifest with the log's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The manifest.
    pub manifest: BundleManifest,
    /// Ed25519 signature, base64, over the manifest's signed bytes.
    pub signature: String,
}

impl LogSigner {
    /// Signs an export manifest.
    pub fn sign_manifest(&self, manifest: BundleManifest) -> SignedManifest {
        let signature = self.sign_bytes(&manifest.signing_bytes());
        SignedManifest {
            manifest,
            signature,
        }
    }
}

/// Checks a signed manifest with the trusted public key (base64): the
/// manifest must carry that key and its id, and the signature must verify.
pub fn verify_manifest(
    public_key_base64: &str,
    signed: &SignedManifest,
) -> Result<(), VerifyError> {
    let key = parse_public_key(public_key_base64)?;
    let carried = BASE64.decode(signed.manifest.public_key.trim()).ok();
    if carried.as_deref() != Some(key.as_bytes().as_slice()) {
        return Err(VerifyError::PublicKeyMismatch {
            expected: public_key_base64.trim().to_owned(),
            actual: signed.manifest.public_key.clone(),
        });
    }
    check_key_id(&key, &signed.manifest.key_id)?;
    verify_bytes(&key, &signed.manifest.signing_bytes(), &signed.signature)
}

/// SHA-256, lowercase hex, of an exported file's bytes.
pub fn entries_sha256(file: &[u8]) -> String {
    Hash(Sha256::digest(file).into()).to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    fn manifest(signer: &LogSigner, file: &[u8]) -> BundleManifest {
        let checkpoint = signer.sign(TreeHead {
            origin: "steward.test/audit".into(),
            size: 3,
            root: leaf_hash(b"root"),
            time_ms: 1_764_151_320_000,
        });
        BundleManifest {
            origin: "steward.test/audit".into(),
            public_key: signer.public_key_base64(),
            key_id: signer.key_id(),
            from_seq: 1,
            to_seq: 3,
            entry_count: 3,
            entries_sha256: entries_sha256(file),
            prefix_subtrees: vec![],
            checkpoints: vec![checkpoint],
            format: BundleFormat::Jsonl,
        }
    }

    #[test]
    fn a_signed_manifest_verifies_and_round_trips() {
        let signer = LogSigner::generate();
        let file = b"{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}\n";
        let signed = signer.sign_manifest(manifest(&signer, file));
        verify_manifest(&signer.public_key_base64(), &signed).unwrap();
        signed.manifest.check_entries_file(file).unwrap();

        let json = serde_json::to_string(&signed).unwrap();
        assert!(json.contains("\"format\":\"jsonl\""));
        let back: SignedManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, signed);
        verify_manifest(&signer.public_key_base64(), &back).unwrap();
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let signer = LogSigner::generate();
        let key = signer.public_key_base64();
        let signed = signer.sign_manifest(manifest(&signer, b"x"));
        let edits: Vec<fn(&mut BundleManifest)> = vec![
            |m| m.origin.push('x'),
            |m| m.from_seq += 1,
            |m| m.to_seq += 1,
            |m| m.entry_count -= 1,
            |m| m.entries_sha256 = entries_sha256(b"y"),
            |m| m.prefix_subtrees.push(leaf_hash(b"p")),
            |m| m.checkpoints.clear(),
            |m| m.checkpoints[0].head.size += 1,
            |m| m.checkpoints[0].head.time_ms += 1,
            |m| m.checkpoints[0].signature = String::new(),
            |m| m.format = BundleFormat::Ocsf,
        ];
        for (i, edit) in edits.into_iter().enumerate() {
            let mut changed = signed.clone();
            edit(&mut changed.manifest);
            assert_eq!(
                verify_manifest(&key, &changed),
                Err(VerifyError::BadSignature),
                "edit {i}"
            );
        }
    }

    #[test]
    fn another_key_or_file_is_rejected() {
        let signer = LogSigner::generate();
        let other = LogSigner::generate();
        let signed = signer.sign_manifest(manifest(&signer, b"x"));
        assert!(matches!(
            verify_manifest(&other.public_key_base64(), &signed),
            Err(VerifyError::PublicKeyMismatch { .. })
        ));

        // Swapping in the other key everywhere still needs its signature.
        let mut forged = signed.clone();
        forged.manifest.public_key = other.public_key_base64();
        forged.manifest.key_id = other.key_id();
        assert_eq!(
            verify_manifest(&other.public_key_base64(), &forged),
            Err(VerifyError::BadSignature)
        );

        assert!(matches!(
            signed.manifest.check_entries_file(b"y"),
            Err(VerifyError::EntriesDigestMismatch { .. })
        ));
    }
}
