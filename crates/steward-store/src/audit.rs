//! The audit sink: the one place every change is recorded, inside the
//! transaction that makes it, so a change and its record land together or not
//! at all.

use sqlx::{Any, Transaction};
use steward_core::{AuditEvent, ChangeContext, Error};
use steward_types::{AuditEntry, AuditFilter, Page};

use crate::rows::{self, Cursor, Param, Select};
use crate::{Store, db_error};

/// Append one event to the log within `tx`.
pub async fn append(
    tx: &mut Transaction<'static, Any>,
    ctx: &ChangeContext,
    event: AuditEvent,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, time, actor_kind, actor_id, actor_human_id, action, \
         resource_type, resource_id, before, after, reason, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&ctx.tenant_id)
    .bind(rows::ms(ctx.now))
    .bind(&ctx.actor.kind)
    .bind(&ctx.actor.id)
    .bind(&ctx.actor.human_id)
    .bind(event.action)
    .bind(event.resource_type)
    .bind(event.resource_id)
    .bind(event.before.map(|v| v.to_string()))
    .bind(event.after.map(|v| v.to_string()))
    .bind(event.reason)
    .bind(&ctx.request_id)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
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

impl Store {
    /// Record an event that is not part of another change (a decision).
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
}
