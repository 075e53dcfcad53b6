//! `GET /v1/audit/export`: a time range of the tenant's log as a bundle
//! that can be checked offline with the log's public key.
//!
//! The log is global (one sequence for every tenant) while an export is one
//! tenant's, so the bundle covers the contiguous range of log positions from
//! the tenant's first entry in the time range to the first signed
//! checkpoint at or after its last one. The tenant's entries in the range
//! are written in full; every other position (another tenant's entry, one
//! outside the time range, one whose payload was pruned) only as its
//! sequence number and leaf hash (see `steward_audit::BundleWriter`). The
//! positions before the range are represented by the roots of the perfect
//! subtrees covering them, so the verifier recomputes the roots the
//! checkpoints signed without seeing anything else.

use axum::Json;
use axum::extract::State;
use serde_json::json;
use steward_audit::{
    BundleFormat, BundleManifest, BundleWriter, Hash, SignedTreeHead, entries_sha256, leaf_hash,
};
use steward_core::{AuditEvent, Error};
use steward_store::audit::{bad_filter, canonical_entry, parse_time_range};
use steward_types::{AuditExport, AuditExportQuery};

use crate::auth::Caller;
use crate::error::{ApiQuery, ApiResult};
use crate::state::AppState;

/// The most log positions one export may span; a larger range is refused
/// with a request to narrow it (the bundle is built in memory).
pub const MAX_EXPORT_POSITIONS: i64 = 1_000_000;

/// The most checkpoints a manifest carries: the first and the last of the
/// range are always kept, others thinned evenly. The last one alone binds
/// every entry; more of them narrow down where a forgery starts.
const MAX_MANIFEST_CHECKPOINTS: usize = 128;

/// Rows read from the store at a time.
const PAGE: i64 = 10_000;

/// Export the tenant's entries in a time range, as JSON Lines or OCSF, with
/// a manifest signed by the log's key (admin or auditor token).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(AuditExportQuery),
    responses((status = 200, body = AuditExport), (status = 400, body = steward_types::ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditExportQuery>,
) -> ApiResult<Json<AuditExport>> {
    let tenant = caller.reader()?.to_string();
    let format = parse_format(q.format.as_deref())?;
    let (since, until) = parse_time_range(q.since.as_deref(), q.until.as_deref())?;
    let since = since.unwrap_or(i64::MIN);
    let until = until.unwrap_or(i64::MAX);
    // Sign the log as it is now, so that every entry read below is covered.
    let size = state
        .audit
        .checkpoint(&state.store)
        .await?
        .map_or(0, |c| i64::try_from(c.head.size).unwrap_or(i64::MAX));
    let span = state
        .store
        .audit_tenant_span(&tenant, since, until, size)
        .await?;
    let (manifest, entries) = match span {
        None => empty_bundle(&state, format),
        Some((first, last)) => build(&state, &tenant, format, (since, until), first, last).await?,
    };
    let signed = state.audit.sign_manifest(manifest);
    record_export(&state, &caller, &q, &signed.manifest).await?;
    let manifest = serde_json::to_value(&signed).map_err(|e| Error::internal(e.to_string()))?;
    Ok(Json(AuditExport { manifest, entries }))
}

fn parse_format(format: Option<&str>) -> Result<BundleFormat, Error> {
    match format.map(str::trim) {
        None | Some("jsonl") => Ok(BundleFormat::Jsonl),
        Some("ocsf") => Ok(BundleFormat::Ocsf),
        Some(other) => Err(bad_filter(format!(
            "format: '{other}' is not an export format (jsonl or ocsf)"
        ))),
    }
}

fn empty_bundle(state: &AppState, format: BundleFormat) -> (BundleManifest, String) {
    let manifest = BundleManifest {
        origin: state.audit.origin().into(),
        public_key: state.audit.public_key(),
        key_id: state.audit.key_id(),
        from_seq: 1,
        to_seq: 0,
        entry_count: 0,
        entries_sha256: entries_sha256(b""),
        prefix_subtrees: Vec::new(),
        checkpoints: Vec::new(),
        format,
    };
    (manifest, String::new())
}

/// The bundle of positions `first..=` the checkpoint covering `last`.
async fn build(
    state: &AppState,
    tenant: &str,
    format: BundleFormat,
    (since, until): (i64, i64),
    first: i64,
    last: i64,
) -> Result<(BundleManifest, String), Error> {
    let end = state
        .store
        .checkpoint_covering(last)
        .await?
        .ok_or_else(|| Error::internal(format!("no signed checkpoint covers entry {last}")))?;
    let to_seq = i64::try_from(end.head.size).unwrap_or(i64::MAX);
    let prefix = first - 1;
    if to_seq - prefix > MAX_EXPORT_POSITIONS {
        return Err(bad_filter(format!(
            "the time range spans {} log positions; export at most {MAX_EXPORT_POSITIONS} at a \
             time (narrow since and until)",
            to_seq - prefix
        )));
    }
    let prefix_subtrees = state
        .audit
        .prefix_subtrees(u64::try_from(prefix).unwrap_or(0))?;
    let checkpoints = thin(state.store.checkpoints_between(prefix, to_seq).await?);
    let mut writer = BundleWriter::new(format);
    let mut after = prefix;
    while after < to_seq {
        let page = state
            .store
            .audit_page_all(after, PAGE.min(to_seq - after))
            .await?;
        let Some((newest, _, _)) = page.last() else {
            // Rows are missing: the bundle ends early and its verification
            // says where.
            break;
        };
        after = newest.seq;
        for (mut entry, stored, pruned) in page {
            let leaf = stored
                .as_deref()
                .and_then(|h| Hash::from_hex(h).ok())
                .unwrap_or_else(|| leaf_hash(&canonical_entry(&entry)));
            let time = entry.time.timestamp_millis();
            let exported = entry.tenant_id == tenant && !pruned && (since..until).contains(&time);
            if exported {
                entry.leaf_hash = Some(leaf.to_hex());
                let value =
                    serde_json::to_value(&entry).map_err(|e| Error::internal(e.to_string()))?;
                writer.entry(value);
            } else {
                writer.withheld(u64::try_from(entry.seq).unwrap_or(0), leaf);
            }
        }
    }
    let entry_count = writer.entry_count();
    let file = writer.finish();
    let manifest = BundleManifest {
        origin: state.audit.origin().into(),
        public_key: state.audit.public_key(),
        key_id: state.audit.key_id(),
        from_seq: u64::try_from(first).unwrap_or(0),
        to_seq: end.head.size,
        entry_count,
        entries_sha256: entries_sha256(file.as_bytes()),
        prefix_subtrees,
        checkpoints,
        format,
    };
    Ok((manifest, file))
}

/// At most [`MAX_MANIFEST_CHECKPOINTS`], evenly spread, first and last kept.
fn thin(checkpoints: Vec<SignedTreeHead>) -> Vec<SignedTreeHead> {
    let n = checkpoints.len();
    if n <= MAX_MANIFEST_CHECKPOINTS {
        return checkpoints;
    }
    let keep = MAX_MANIFEST_CHECKPOINTS - 1;
    let mut wanted: Vec<usize> = (0..=keep).map(|i| i * (n - 1) / keep).collect();
    wanted.dedup();
    checkpoints
        .into_iter()
        .enumerate()
        .filter(|(i, _)| wanted.binary_search(i).is_ok())
        .map(|(_, c)| c)
        .collect()
}

/// Exports are recorded: who took which range of the log.
async fn record_export(
    state: &AppState,
    caller: &Caller,
    q: &AuditExportQuery,
    manifest: &BundleManifest,
) -> Result<(), Error> {
    let ctx = caller.context();
    let event = AuditEvent {
        action: "audit.export".into(),
        resource_type: "audit_log".into(),
        resource_id: format!("{}-{}", manifest.from_seq, manifest.to_seq),
        before: None,
        after: Some(json!({
            "format": manifest.format.as_str(),
            "since": q.since,
            "until": q.until,
            "from_seq": manifest.from_seq,
            "to_seq": manifest.to_seq,
            "entry_count": manifest.entry_count,
            "entries_sha256": manifest.entries_sha256,
        })),
        reason: None,
    };
    state.audit.record(ctx, event).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_audit::{LogSigner, TreeHead};

    fn checkpoints(n: u64) -> Vec<SignedTreeHead> {
        let signer = LogSigner::generate();
        (1..=n)
            .map(|size| {
                signer.sign(TreeHead {
                    origin: "o".into(),
                    size,
                    root: Hash::default(),
                    time_ms: 0,
                })
            })
            .collect()
    }

    #[test]
    fn many_checkpoints_are_thinned_keeping_both_ends() {
        assert_eq!(thin(checkpoints(5)).len(), 5);
        let thinned = thin(checkpoints(1000));
        assert_eq!(thinned.len(), MAX_MANIFEST_CHECKPOINTS);
        assert_eq!(thinned.first().map(|c| c.head.size), Some(1));
        assert_eq!(thinned.last().map(|c| c.head.size), Some(1000));
    }

    #[test]
    fn formats_are_jsonl_or_ocsf() {
        assert_eq!(parse_format(None).ok(), Some(BundleFormat::Jsonl));
        assert_eq!(parse_format(Some("ocsf")).ok(), Some(BundleFormat::Ocsf));
        assert!(parse_format(Some("csv")).is_err());
    }
}
