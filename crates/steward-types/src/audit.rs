//! Audit records as read over the API. Every change passes through the audit
//! sink and becomes one of these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Who did something: the credential and, where known, the person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Actor {
    /// `token`, `agent` or `system`.
    pub kind: String,
    /// Token id, agent id, or the system task's name.
    pub id: String,
    /// The human behind the credential.
    pub human_id: Option<String>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the log (all tenants share one log), from 1, without gaps.
    pub seq: i64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Tenant.
    pub tenant_id: String,
    /// Who did it.
    pub actor: Actor,
    /// What was done, for example `agent.suspend`.
    pub action: String,
    /// Kind of the thing it was done to (`agent`, `human`, ...).
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
    /// State before (administrative changes).
    pub before: Option<serde_json::Value>,
    /// State after.
    pub after: Option<serde_json::Value>,
    /// Why, when a reason was given.
    pub reason: Option<String>,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// The address the request came from.
    #[serde(default)]
    pub source: Option<String>,
    /// Hex SHA-256 leaf hash of the entry's canonical encoding (RFC 9162).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_hash: Option<String>,
}

/// Filters for reading the audit log. Every filter given must match (they
/// combine with AND); within one filter the alternatives combine with OR.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Entries about this agent (id or name): it acted, it was acted on, or
    /// it is the principal or in the delegation chain of a decision.
    pub agent: Option<String>,
    /// Entries about this human (id or e-mail): the person behind the
    /// credential that acted, the person acted on, or the human a decision
    /// was made on behalf of.
    pub human: Option<String>,
    /// Entries about the team (id or name) and about its agents (as for
    /// `agent`).
    pub team: Option<String>,
    /// This action, or every action starting with a prefix when it ends in
    /// `*` (`decision.*`).
    pub action: Option<String>,
    /// Entries about this resource: its id, or `type:id`.
    pub resource: Option<String>,
    /// Only entries about this exact resource id.
    pub resource_id: Option<String>,
    /// Only decisions with this outcome: `allow`, `deny` or
    /// `approval_required`.
    pub decision: Option<String>,
    /// Entries at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Entries before this time (RFC 3339).
    pub until: Option<String>,
    /// Only the last N matching entries (1..=500), still oldest first.
    pub last: Option<u32>,
    /// Cursor (a sequence number) from a previous page.
    pub cursor: Option<String>,
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
}

/// Query of an export: a time range and a format.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditExportQuery {
    /// Entries at or after this time (RFC 3339; default: the beginning).
    pub since: Option<String>,
    /// Entries before this time (RFC 3339; default: now).
    pub until: Option<String>,
    /// `jsonl` (default: one entry per line) or `ocsf` (one OCSF event per
    /// line).
    pub format: Option<String>,
}

/// An export bundle: the entries file and its signed manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditExport {
    /// The signed manifest (`steward_audit::SignedManifest`): what the file
    /// holds, its SHA-256, the checkpoints covering it and the log's
    /// signature. Write it to `manifest.json` as is.
    pub manifest: serde_json::Value,
    /// The entries file, one JSON object per line; write it byte for byte
    /// (its SHA-256 is signed).
    pub entries: String,
}

/// The key that verifies the log's checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPublicKey {
    /// Ed25519 public key, standard base64.
    pub public_key: String,
    /// Its id (first 8 hex digits of its SHA-256).
    pub key_id: String,
    /// The log's origin line, signed into every checkpoint.
    pub origin: String,
}

/// A signed checkpoint (tree head) of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Entries covered.
    pub size: u64,
    /// Merkle root over them, hex.
    pub root: String,
    /// When it was signed (Unix milliseconds).
    pub time_ms: i64,
    /// Ed25519 signature over the checkpoint text, base64.
    pub signature: String,
    /// Key id of the signer.
    pub key_id: String,
}

/// Proof that entry `seq` is in the tree of `tree_size` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    /// The entry (1-based).
    pub seq: u64,
    /// Its leaf hash, hex.
    pub leaf_hash: String,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The root at that size, hex.
    pub root: String,
    /// Audit path, hex, leaf to root (RFC 9162 §2.1.3).
    pub proof: Vec<String>,
}

/// Proof that the tree of `from` entries is a prefix of the tree of `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    /// The older size.
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// Root at `from`, hex.
    pub from_root: String,
    /// Root at `to`, hex.
    pub to_root: String,
    /// Consistency proof, hex (RFC 9162 §2.1.4).
    pub proof: Vec<String>,
}

/// Query of an inclusion proof.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The entry's sequence number.
    pub seq: u64,
    /// Tree size (default: the latest checkpoint's).
    pub size: Option<u64>,
}

/// Query of a consistency proof.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older size.
    pub from: u64,
    /// The newer size (default: the latest checkpoint's).
    pub to: Option<u64>,
}

/// The outcome of verifying the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// True when nothing is wrong.
    pub ok: bool,
    /// Entries checked.
    pub entries_checked: u64,
    /// Checkpoints whose signature and root matched.
    pub checkpoints_checked: u64,
    /// Entries covered by a matching signed checkpoint.
    pub checkpointed_size: u64,
    /// First bad position, when entries are at fault.
    pub first_bad_position: Option<u64>,
    /// What is wrong, for a person.
    pub problem: Option<String>,
    /// Root over the entries checked, hex.
    pub root: String,
}

/// A legal hold: while it is active, no entry of its tenant is pruned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LegalHold {
    /// Hold id.
    pub id: String,
    /// The tenant whose entries it keeps.
    pub tenant_id: String,
    /// Why (a case, a request from counsel).
    pub reason: String,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When it was released, if it was.
    pub released_at: Option<DateTime<Utc>>,
}

/// Place a legal hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceHold {
    /// Why.
    pub reason: String,
}

/// Prune payloads past retention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Prune entries older than this (default: now minus the configured
    /// retention). Retention is a minimum: a cut-off later than that is
    /// refused.
    pub older_than: Option<DateTime<Utc>>,
}

/// What pruning did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PruneResult {
    /// Entries whose payload was dropped.
    pub pruned: u64,
    /// The cut-off used.
    pub older_than: DateTime<Utc>,
}
