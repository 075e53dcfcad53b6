//! Steward's tamper-evident log: a Merkle tree over the canonical encoding
//! of audit entries in the style of RFC 9162 (Certificate Transparency v2)
//! with SHA-256, Ed25519-signed tree heads (checkpoints), inclusion and
//! consistency proofs, and a streaming verifier that names the first bad
//! entry.
//!
//! The crate is pure: no I/O and no clock. Times are passed in, keys are
//! passed in as bytes, and entries arrive through iterators.
//!
//! Where things are:
//! - `hash.rs`: [`Hash`](struct@Hash)(struct@Hash), [`leaf_hash`], [`node_hash`], [`empty_root`].
//! - `tree.rs`: [`MerkleTree`], roots at any size, proof generation.
//! - `proof.rs`: [`verify_inclusion`], [`verify_consistency`].
//! - `checkpoint.rs`: [`TreeHead`], [`SignedTreeHead`], [`LogSigner`],
//!   [`verify_tree_head`].
//! - `canonical.rs`: [`canonical_json`], the bytes an entry's leaf hash
//!   covers.
//! - `verify.rs`: [`verify_log`], [`LogVerifier`], [`VerifyReport`].
//! - `bundle.rs`: [`BundleManifest`], [`SignedManifest`],
//!   [`verify_manifest`], for offline export bundles.
//! - `offline.rs`: the bundle's entries file ([`export_line`], OCSF
//!   events) and [`verify_bundle`], which checks a bundle with only a
//!   public key.
//!
//! ```
//! use steward_audit::{LogSigner, MerkleTree, TreeHead, leaf_hash, verify_inclusion, verify_log};
//!
//! let entries: Vec<Vec<u8>> = (1..=5).map(|i| format!("{{\"seq\":{i}}}").into_bytes()).collect();
//! let tree = MerkleTree::from_leaves(entries.iter().map(|e| leaf_hash(e)));
//!
//! let proof = tree.inclusion_proof(2, 5).unwrap();
//! verify_inclusion(&leaf_hash(&entries[2]), 2, 5, &proof, &tree.root()).unwrap();
//!
//! let signer = LogSigner::generate();
//! let checkpoint = signer.sign(TreeHead {
//!     origin: "steward.example/audit".into(),
//!     size: 5,
//!     root: tree.root(),
//!     time_ms: 1_764_151_320_000,
//! });
//! let rows = entries.iter().enumerate().map(|(i, e)| (i as u64 + 1, e.as_slice(), None));
//! let report = verify_log(rows, &[checkpoint], &signer.public_key_base64());
//! assert!(report.ok, "{:?}", report.problem);
//! ```
#![deny(missing_docs)]

mod bundle;
mod canonical;
mod checkpoint;
mod frontier;
mod hash;
mod offline;
mod proof;
mod tree;
mod verify;

#[cfg(test)]
mod rfc_vectors;

pub use bundle::{BundleFormat, BundleManifest, SignedManifest, entries_sha256, verify_manifest};
pub use canonical::{canonical_json, write_canonical, write_canonical_str};
pub use checkpoint::{
    LogSigner, SignedTreeHead, TreeHead, VerifyError, key_id_of, verify_tree_head,
};
pub use hash::{Hash, HashParseError, empty_root, leaf_hash, node_hash};
pub use offline::{
    BundleReport, BundleWriter, MANIFEST_FILE, OCSF_VERSION, WithheldEntry, canonical_entry,
    entries_file_name, export_line, ocsf_event, rfc3339_millis, verify_bundle,
};
pub use proof::{ProofError, verify_consistency, verify_inclusion};
pub use tree::{MerkleTree, TreeError};
pub use verify::{LogVerifier, VerifyReport, verify_log};
