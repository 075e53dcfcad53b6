//! The audit sink: the one place every change is recorded, inside the
//! transaction that makes it, so a change and its record land together or not
//! at all.
//!
//! Each entry gets the next sequence number under the head row's lock (so the
//! log has no gaps, across nodes too) and stores the leaf hash of its
//! canonical encoding ([`canonical_entry`]); the Merkle tree over those
//! leaves, signed checkpoints and proofs are built from them.

use chrono::{DateTime, Utc};
use sqlx::{Any, Row, Transaction};
use steward_audit::{Hash, SignedTreeHead, TreeHead, canonical_json, leaf_hash};
use steward_core::{AuditEvent, ChangeContext, Error};
use steward_types::{Actor, AuditEntry, AuditFilter, ErrorCode, Page};

use crate::rows::{self, Cursor, Param, Select};
use crate::{Store, db_error};

/// The bytes an entry's leaf hash covers: its fields as canonical JSON.
#[allow(clippy::too_many_arguments)]
pub fn canonical_entry(e: &AuditEntry) -> Vec<u8> {
    canonical_json(&serde_json::json!({
        "seq": e.seq,
        "time": e.time.timestamp_millis(),
        "tenant_id": e.tenant_id,
        "actor": { "kind": e.actor.kind, "id": e.actor.id, "human_id": e.actor.human_id },
        "action": e.action,
        "resource_type": e.resource_type,
        "resource_id": e.resource_id,
        "before": e.before,
        "after": e.after,
        "reason": e.reason,
        "request_id": e.request_id,
    }))
}

/// Lock the log's head and return its size (the last sequence number).
async fn lock_head(tx: &mut Transaction<'static, Any>, lock: &str) -> Result<i64, Error> {
    sqlx::query_scalar(&format!("SELECT size FROM audit_head WHERE id = 1{lock}"))
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
}

async fn insert(
    tx: &mut Transaction<'static, Any>,
    seq: i64,
    ctx: &ChangeContext,
    event: AuditEvent,
) -> Result<(), Error> {
    // Times are kept to the millisecond, as stored.
    let time = DateTime::from_timestamp_millis(ctx.now.timestamp_millis()).unwrap_or_default();
    let entry = AuditEntry {
        seq,
        time,
        tenant_id: ctx.tenant_id.clone(),
        actor: ctx.actor.clone(),
        action: event.action,
        resource_type: event.resource_type,
        resource_id: event.resource_id,
        before: event.before,
        after: event.after,
        reason: event.reason,
        request_id: ctx.request_id.clone(),
        leaf_hash: None,
    };
    let leaf = leaf_hash(&canonical_entry(&entry));
    sqlx::query(
        "INSERT INTO audit_log (seq, tenant_id, time, actor_kind, actor_id, actor_human_id, action, \
         resource_type, resource_id, before, after, reason, request_id, leaf_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(seq)
    .bind(&entry.tenant_id)
    .bind(rows::ms(entry.time))
    .bind(&entry.actor.kind)
    .bind(&entry.actor.id)
    .bind(&entry.actor.human_id)
    .bind(&entry.action)
    .bind(&entry.resource_type)
    .bind(&entry.resource_id)
    .bind(entry.before.map(|v| v.to_string()))
    .bind(entry.after.map(|v| v.to_string()))
    .bind(&entry.reason)
    .bind(&entry.request_id)
    .bind(leaf.to_hex())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn set_head(tx: &mut Transaction<'static, Any>, size: i64) -> Result<(), Error> {
    sqlx::query("UPDATE audit_head SET size = $1 WHERE id = 1")
        .bind(size)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Append one event to the log within `tx`.
pub async fn append(
    tx: &mut Transaction<'static, Any>,
    ctx: &ChangeContext,
    event: AuditEvent,
) -> Result<(), Error> {
    // SQLite has one writer; PostgreSQL serialises appends on the head row.
    let lock = if tx.backend_name() == "PostgreSQL" {
        " FOR UPDATE"
    } else {
        ""
    };
    let seq = lock_head(tx, lock).await? + 1;
    insert(tx, seq, ctx, event).await?;
    set_head(tx, seq).await
}

/// Append the event and commit: the change and its record land together or
/// not at all.
pub async fn commit(
    mut tx: Transaction<'static, Any>,
    ctx: &ChangeContext,
    event: AuditEvent,
) -> Result<(), Error> {
    append(&mut tx, ctx, event).await?;
    tx.commit().await.map_err(db_error)
}

/// An event for a change from `before` to `after`, without a reason.
pub fn change<T: serde::Serialize>(
    action: &str,
    resource_type: &str,
    resource_id: &str,
    before: &T,
    after: &T,
) -> AuditEvent {
    event(
        action,
        resource_type,
        resource_id,
        Some(before),
        Some(after),
        None,
    )
}

/// An event describing a change from `before` to `after`.
pub fn event<T: serde::Serialize>(
    action: &str,
    resource_type: &str,
    resource_id: &str,
    before: Option<&T>,
    after: Option<&T>,
    reason: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        action: action.into(),
        resource_type: resource_type.into(),
        resource_id: resource_id.into(),
        before: before.and_then(|b| serde_json::to_value(b).ok()),
        after: after.and_then(|a| serde_json::to_value(a).ok()),
        reason: reason.map(str::to_string),
    }
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Store {
    /// Record events that are not part of another change (decisions), many
    /// at once: one transaction, one commit (group commit). Returns their
    /// sequence numbers.
    pub async fn append_batch(
        &self,
        events: Vec<(ChangeContext, AuditEvent)>,
    ) -> Result<Vec<i64>, Error> {
        let mut tx = self.begin().await?;
        let start = lock_head(&mut tx, self.backend.for_update()).await?;
        let mut seqs = Vec::with_capacity(events.len());
        for (i, (ctx, event)) in events.into_iter().enumerate() {
            let seq = start + 1 + i as i64;
            insert(&mut tx, seq, &ctx, event).await?;
            seqs.push(seq);
        }
        if let Some(last) = seqs.last() {
            set_head(&mut tx, *last).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(seqs)
    }

    /// Record one event on its own.
    pub async fn record_event(&self, ctx: &ChangeContext, event: AuditEvent) -> Result<(), Error> {
        let tx = self.begin().await?;
        commit(tx, ctx, event).await
    }

    /// Read the tenant's log, oldest first.
    pub async fn list_audit(
        &self,
        tenant_id: &str,
        filter: AuditFilter,
    ) -> Result<Page<AuditEntry>, Error> {
        let cursor = Cursor::seq(filter.cursor, filter.limit)?;
        let mut q = Select::tenant_rows("audit_log", tenant_id);
        if let Some(r) = filter.resource_id {
            q = q.and("resource_id = ?", Param::Text(r));
        }
        if let Some(a) = filter.action {
            q = q.and("action = ?", Param::Text(a));
        }
        q.page(&self.read, "seq", &cursor, rows::audit_entry, |e| {
            e.seq.to_string()
        })
        .await
    }

    /// Leaf hashes of entries `from..=to` (1-based), in order.
    pub async fn audit_leaves(&self, from: i64, to: i64) -> Result<Vec<(i64, Hash)>, Error> {
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT seq, leaf_hash FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|(seq, h)| {
                let h = h.ok_or_else(|| {
                    Error::internal(format!("audit entry {seq} has no leaf hash"))
                })?;
                Ok((
                    seq,
                    Hash::from_hex(&h)
                        .map_err(|e| Error::internal(format!("audit entry {seq}: {e}")))?,
                ))
            })
            .collect()
    }

    /// The log's size (the last sequence number).
    pub async fn audit_size(&self) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT size FROM audit_head WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(db_error)
    }

    /// Every entry from `after` on (all tenants), in order, for verification:
    /// the entry and its stored leaf hash. Reads in pages to bound memory.
    pub async fn audit_page_all(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(AuditEntry, Option<String>, bool)>, Error> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let leaf: Option<String> = row.try_get("leaf_hash").map_err(db_error)?;
                let pruned: i64 = row.try_get("pruned").map_err(db_error)?;
                Ok((rows::audit_entry(row)?, leaf, pruned != 0))
            })
            .collect()
    }

    /// Store a signed checkpoint (another node may have stored the same size).
    pub async fn insert_checkpoint(&self, sth: &SignedTreeHead) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, origin, root, time_ms, signature, key_id) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(i64::try_from(sth.head.size).unwrap_or(i64::MAX))
        .bind(&sth.head.origin)
        .bind(sth.head.root.to_hex())
        .bind(sth.head.time_ms)
        .bind(&sth.signature)
        .bind(&sth.key_id)
        .execute(&self.write)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Every checkpoint, smallest first.
    pub async fn checkpoints(&self) -> Result<Vec<SignedTreeHead>, Error> {
        let rows: Vec<(i64, String, String, i64, String, String)> = sqlx::query_as(
            "SELECT size, origin, root, time_ms, signature, key_id FROM audit_checkpoints ORDER BY size",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|(size, origin, root, time_ms, signature, key_id)| {
                Ok(SignedTreeHead {
                    head: TreeHead {
                        origin,
                        size: u64::try_from(size).unwrap_or(0),
                        root: Hash::from_hex(&root)
                            .map_err(|e| Error::internal(format!("checkpoint {size}: {e}")))?,
                        time_ms,
                    },
                    signature,
                    key_id,
                })
            })
            .collect()
    }

    /// Rebuild an entry from its row for an error message.
    pub fn audit_time(ms: i64) -> DateTime<Utc> {
        time(ms)
    }
}

/// `invalid_query` for a bad audit filter value.
pub fn bad_filter(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidQuery, message)
}

/// The actor of an entry (for readers that only need it).
pub fn actor_of(e: &AuditEntry) -> &Actor {
    &e.actor
}
