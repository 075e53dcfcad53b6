//! Reading the audit log, its checkpoints and proofs, and verifying it.

use axum::Json;
use axum::extract::State;
use steward_audit::{Hash, SignedTreeHead};
use steward_types::{
    AuditEntry, AuditFilter, AuditPublicKey, AuditVerification, Checkpoint, ConsistencyProof,
    ConsistencyQuery, InclusionProof, InclusionQuery, Page,
};

use crate::auth::Caller;
use crate::error::{ApiQuery, ApiResult};
use crate::state::AppState;

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(Hash::to_hex).collect()
}

fn checkpoint(sth: SignedTreeHead) -> Checkpoint {
    Checkpoint {
        origin: sth.head.origin,
        size: sth.head.size,
        root: sth.head.root.to_hex(),
        time_ms: sth.head.time_ms,
        signature: sth.signature,
        key_id: sth.key_id,
    }
}

async fn latest_size(state: &AppState) -> ApiResult<u64> {
    Ok(state
        .audit
        .checkpoint(&state.store)
        .await?
        .map_or(0, |c| c.head.size))
}

/// The tenant's audit log, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditFilter), responses((status = 200, body = Page<AuditEntry>)))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditFilter>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    Ok(Json(state.store.list_audit(caller.reader()?, q).await?))
}

/// The public key that verifies checkpoints (no credential needed).
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit", security(()), responses((status = 200, body = AuditPublicKey)))]
pub async fn public_key(State(state): State<AppState>) -> Json<AuditPublicKey> {
    Json(AuditPublicKey {
        public_key: state.audit.public_key(),
        key_id: state.audit.key_id(),
        origin: state.audit.origin().into(),
    })
}

/// The latest signed checkpoint (signed now if the log grew).
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit", responses((status = 200, body = Checkpoint), (status = 404, body = steward_types::ErrorBody)))]
pub async fn latest_checkpoint(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Checkpoint>> {
    caller.reader()?;
    let sth = state.audit.checkpoint(&state.store).await?;
    sth.map(|s| Json(checkpoint(s)))
        .ok_or_else(|| steward_core::Error::not_found("checkpoint", "latest").into())
}

/// Every signed checkpoint, smallest first.
#[utoipa::path(get, path = "/v1/audit/checkpoints", tag = "audit", responses((status = 200, body = Vec<Checkpoint>)))]
pub async fn checkpoints(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Checkpoint>>> {
    caller.reader()?;
    // Sign the log as it is now if it can be; a refusal to sign (see
    // `AuditLog::checkpoint`) leaves the checkpoints already signed to list.
    if let Err(e) = state.audit.checkpoint(&state.store).await {
        tracing::warn!(error = %e, "listing audit checkpoints without signing a new one");
    }
    Ok(Json(
        state
            .store
            .checkpoints()
            .await?
            .into_iter()
            .map(checkpoint)
            .collect(),
    ))
}

/// Inclusion proof of an entry in a tree size (default: the latest checkpoint).
#[utoipa::path(get, path = "/v1/audit/proofs/inclusion", tag = "audit", params(InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = 400, body = steward_types::ErrorBody)))]
pub async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> ApiResult<Json<InclusionProof>> {
    caller.reader()?;
    let size = match q.size {
        Some(s) => s,
        None => latest_size(&state).await?,
    };
    state.audit.catch_up(&state.store).await?;
    let (leaf, proof, root) = state.audit.inclusion(q.seq, size)?;
    Ok(Json(InclusionProof {
        seq: q.seq,
        leaf_hash: leaf.to_hex(),
        tree_size: size,
        root: root.to_hex(),
        proof: hexes(&proof),
    }))
}

/// Consistency proof between two tree sizes.
#[utoipa::path(get, path = "/v1/audit/proofs/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 400, body = steward_types::ErrorBody)))]
pub async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    caller.reader()?;
    let to = match q.to {
        Some(t) => t,
        None => latest_size(&state).await?,
    };
    state.audit.catch_up(&state.store).await?;
    let (from_root, to_root, proof) = state.audit.consistency(q.from, to)?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to,
        from_root: from_root.to_hex(),
        to_root: to_root.to_hex(),
        proof: hexes(&proof),
    }))
}

/// Verify the whole stored log: every entry re-hashed, the sequence without
/// gaps, every checkpoint's signature and root. Names the first bad position.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", responses((status = 200, body = AuditVerification)))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<AuditVerification>> {
    caller.reader()?;
    let r = state.audit.verify_store(&state.store).await?;
    Ok(Json(AuditVerification {
        ok: r.ok,
        entries_checked: r.entries_checked,
        checkpoints_checked: r.checkpoints_checked,
        checkpointed_size: r.checkpointed_size,
        first_bad_position: r.first_bad_position,
        problem: r.problem,
        root: r.root.to_hex(),
    }))
}

/// The retention cut-off at `now`.
pub fn retention_cutoff(
    state: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    now - chrono::Duration::days(i64::from(state.config.audit_retention_days))
}

/// Drop the payload of entries past retention (platform administrator),
/// except under a legal hold. What the Merkle tree needs stays.
#[utoipa::path(post, path = "/v1/audit/prune", tag = "audit", request_body = steward_types::PruneRequest,
    responses((status = 200, body = steward_types::PruneResult), (status = 400, body = steward_types::ErrorBody)))]
pub async fn prune(
    State(state): State<AppState>,
    caller: Caller,
    crate::error::OptionalJson(req): crate::error::OptionalJson<steward_types::PruneRequest>,
) -> ApiResult<Json<steward_types::PruneResult>> {
    let ctx = caller.platform_admin()?;
    let cutoff = retention_cutoff(&state, ctx.now);
    let older_than = match req.older_than {
        Some(t) if t > cutoff => {
            return Err(steward_core::Error::invalid(
                "older_than",
                format!("{t} is within the retention period ({} days); the latest allowed cut-off is {cutoff}", state.config.audit_retention_days),
            )
            .into());
        }
        Some(t) => t,
        None => cutoff,
    };
    let pruned = state.store.prune_audit(&ctx, older_than).await?;
    Ok(Json(steward_types::PruneResult { pruned, older_than }))
}

/// The tenant's legal holds.
#[utoipa::path(get, path = "/v1/audit/holds", tag = "audit", responses((status = 200, body = Vec<steward_types::LegalHold>)))]
pub async fn list_holds(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<steward_types::LegalHold>>> {
    Ok(Json(state.store.legal_holds(caller.reader()?).await?))
}

/// Place a legal hold: nothing of this tenant is pruned while it is active.
#[utoipa::path(post, path = "/v1/audit/holds", tag = "audit", request_body = steward_types::PlaceHold,
    responses((status = 201, body = steward_types::LegalHold)))]
pub async fn place_hold(
    State(state): State<AppState>,
    caller: Caller,
    crate::error::ApiJson(req): crate::error::ApiJson<steward_types::PlaceHold>,
) -> ApiResult<(axum::http::StatusCode, Json<steward_types::LegalHold>)> {
    let ctx = caller.admin()?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(state.store.place_hold(&ctx, &req.reason).await?),
    ))
}

/// Release a legal hold.
#[utoipa::path(post, path = "/v1/audit/holds/{id}/release", tag = "audit", params(("id" = String, Path, description = "Hold id")),
    responses((status = 200, body = steward_types::LegalHold), (status = 404, body = steward_types::ErrorBody)))]
pub async fn release_hold(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<steward_types::LegalHold>> {
    let ctx = caller.admin()?;
    Ok(Json(state.store.release_hold(&ctx, &id).await?))
}
