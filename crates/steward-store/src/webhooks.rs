//! Webhook subscriptions and the delivery outbox. Deliveries are inserted in
//! the transaction of the event they report ([`Store::enqueue_webhooks_in`]),
//! claimed by any node with a lease ([`Store::claim_delivery`]) and finished
//! with an audit record ([`Store::finish_delivery`]).

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use steward_core::{ChangeContext, Error, validate};
use steward_types::{
    CreateWebhook, DeliveryQuery, DeliveryStatus, Page, PageQuery, Webhook, WebhookDelivery,
};

use crate::audit::{append, event};
use crate::rows::{self, Cursor, Select};
use crate::{Store, Tx, db_error, is_unique_violation};

/// A delivery due for an attempt, with where and how to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery.
    pub delivery: WebhookDelivery,
    /// Its tenant.
    pub tenant_id: String,
    /// The receiver.
    pub url: String,
    /// The signing key.
    pub secret: String,
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// 2xx.
    Delivered {
        /// The receiver's status.
        status: u16,
    },
    /// Anything else; `retry_at` is `None` when no attempt is left.
    Failed {
        /// The receiver's status, when it answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        retry_at: Option<DateTime<Utc>>,
    },
}

fn webhook(row: &AnyRow) -> Result<Webhook, Error> {
    Ok(Webhook {
        id: rows::get(row, "id")?,
        name: rows::get(row, "name")?,
        url: rows::get(row, "url")?,
        events: rows::from_json(row, "events")?,
        created_at: rows::get_time(row, "created_at")?,
    })
}

fn status(s: &str) -> Result<DeliveryStatus, Error> {
    match s {
        "pending" => Ok(DeliveryStatus::Pending),
        "delivered" => Ok(DeliveryStatus::Delivered),
        "failed" => Ok(DeliveryStatus::Failed),
        other => Err(Error::internal(format!("corrupt delivery status {other}"))),
    }
}

fn delivery(row: &AnyRow) -> Result<WebhookDelivery, Error> {
    let status = status(&rows::get::<String>(row, "status")?)?;
    Ok(WebhookDelivery {
        id: rows::get(row, "id")?,
        webhook_id: rows::get(row, "webhook_id")?,
        event: rows::get(row, "event")?,
        payload: rows::from_json(row, "payload")?,
        status,
        attempts: rows::get(row, "attempts")?,
        next_attempt_at: match status {
            DeliveryStatus::Pending => Some(rows::get_time(row, "next_attempt_at")?),
            _ => None,
        },
        last_error: rows::get(row, "last_error")?,
        response_status: rows::get(row, "response_status")?,
        created_at: rows::get_time(row, "created_at")?,
        delivered_at: rows::get_opt_time(row, "delivered_at")?,
    })
}

/// A Slack-compatible body: `text` for people, the event for machines.
pub fn payload(
    event: &str,
    tenant_id: &str,
    text: &str,
    data: serde_json::Value,
    at: DateTime<Utc>,
) -> serde_json::Value {
    serde_json::json!({ "text": text, "event": event, "tenant": tenant_id, "occurred_at": at, "data": data })
}

/// Whether `event` matches a subscription's patterns (`x.*` is a prefix).
pub fn subscribed(patterns: &[String], event: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => event.starts_with(prefix),
            None => p == event,
        })
}

fn check_url(url: &str) -> Result<(), Error> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| Error::invalid("url", "must start with http:// or https://"))?;
    if rest.is_empty()
        || rest.starts_with('/')
        || url.len() > 2048
        || url.contains(char::is_whitespace)
    {
        return Err(Error::invalid("url", format!("'{url}' is not a URL")));
    }
    Ok(())
}

impl Store {
    /// Subscribe a receiver with `secret` as its signing key.
    pub async fn create_webhook(
        &self,
        ctx: &ChangeContext,
        req: CreateWebhook,
        secret: &str,
    ) -> Result<Webhook, Error> {
        validate::name("name", &req.name)?;
        check_url(&req.url)?;
        for p in &req.events {
            let body = p.strip_suffix('*').unwrap_or(p);
            if p.is_empty()
                || p.len() > 128
                || body.contains('*')
                || body.contains(char::is_whitespace)
            {
                return Err(Error::invalid(
                    "events",
                    format!("'{p}' is not an event name or a prefix ending in '*'"),
                ));
            }
        }
        let hook = Webhook {
            id: rows::new_id("whk"),
            name: req.name,
            url: req.url,
            events: req.events,
            created_at: ctx.now,
        };
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO webhooks (id, tenant_id, name, url, secret, events, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&hook.id)
            .bind(&ctx.tenant_id)
            .bind(&hook.name)
            .bind(&hook.url)
            .bind(secret)
            .bind(rows::to_json(&hook.events))
            .bind(rows::ms(hook.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| if is_unique_violation(&e) { Error::already_exists("webhook", &hook.name) } else { db_error(e) })?;
        append(
            &mut tx,
            ctx,
            event(
                "webhook.create",
                "webhook",
                &hook.id,
                None,
                Some(&redacted(&hook)),
                None,
            ),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(hook)
    }

    /// The tenant's subscriptions.
    pub async fn list_webhooks(
        &self,
        tenant_id: &str,
        page: PageQuery,
    ) -> Result<Page<Webhook>, Error> {
        let cursor = Cursor::text(page.cursor, page.limit)?;
        Select::tenant_rows("webhooks", tenant_id)
            .page(&self.read, "id", &cursor, webhook, |w| w.id.clone())
            .await
    }

    async fn webhook_in(tx: &mut Tx, tenant_id: &str, key: &str) -> Result<Webhook, Error> {
        let row =
            crate::tenants::find_row(&mut **tx, "webhooks", "name", tenant_id, key, "").await?;
        match row {
            Some(row) => webhook(&row),
            None => Err(Error::not_found("webhook", key)),
        }
    }

    /// Unsubscribe; deliveries not yet made are dropped with it.
    pub async fn delete_webhook(&self, ctx: &ChangeContext, key: &str) -> Result<Webhook, Error> {
        let mut tx = self.begin().await?;
        let hook = Self::webhook_in(&mut tx, &ctx.tenant_id, key).await?;
        for sql in [
            "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
            "DELETE FROM webhooks WHERE id = $1",
        ] {
            sqlx::query(sql)
                .bind(&hook.id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        append(
            &mut tx,
            ctx,
            event(
                "webhook.delete",
                "webhook",
                &hook.id,
                Some(&redacted(&hook)),
                None,
                None,
            ),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(hook)
    }

    /// Queue `payload` as `event` for every subscription of the tenant that
    /// wants it, inside the transaction of the change it reports. Returns the
    /// number of deliveries queued.
    pub async fn enqueue_webhooks_in(
        &self,
        tx: &mut Tx,
        tenant_id: &str,
        event_name: &str,
        payload: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<usize, Error> {
        let hooks = sqlx::query("SELECT * FROM webhooks WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_error)?;
        let mut queued = 0;
        for row in &hooks {
            let hook = webhook(row)?;
            if !subscribed(&hook.events, event_name) {
                continue;
            }
            sqlx::query("INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event, payload, status, attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)")
                .bind(rows::new_id("whd"))
                .bind(tenant_id)
                .bind(&hook.id)
                .bind(event_name)
                .bind(rows::to_json(payload))
                .bind(rows::ms(now))
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            queued += 1;
        }
        Ok(queued)
    }

    /// Tell the tenant's subscribers of `event_name` about a change, inside
    /// its transaction: a [`payload`] with `text` for people and `data` for
    /// machines, queued by [`Store::enqueue_webhooks_in`].
    pub async fn notify_in(
        &self,
        tx: &mut Tx,
        tenant_id: &str,
        event_name: &str,
        text: &str,
        data: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<usize, Error> {
        let body = payload(event_name, tenant_id, text, data, now);
        self.enqueue_webhooks_in(tx, tenant_id, event_name, &body, now)
            .await
    }

    /// [`Store::enqueue_webhooks_in`] in a transaction of its own.
    pub async fn enqueue_webhooks(
        &self,
        tenant_id: &str,
        event_name: &str,
        payload: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<usize, Error> {
        let mut tx = self.begin().await?;
        let n = self
            .enqueue_webhooks_in(&mut tx, tenant_id, event_name, payload, now)
            .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(n)
    }

    /// Deliveries due at `now` (any tenant), oldest first.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT d.*, w.url, w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at, d.id LIMIT {limit}"
        ))
        .bind(rows::ms(now))
        .fetch_all(&self.write)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    delivery: delivery(row)?,
                    tenant_id: rows::get(row, "tenant_id")?,
                    url: rows::get(row, "url")?,
                    secret: rows::get(row, "secret")?,
                })
            })
            .collect()
    }

    /// Take a due delivery for one attempt: no other node attempts it until
    /// `lease_until`. False when another node took it first.
    pub async fn claim_delivery(
        &self,
        due: &WebhookDelivery,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Some(expected) = due.next_attempt_at else {
            return Ok(false);
        };
        let done = sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = $1, attempts = attempts + 1 WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3")
            .bind(rows::ms(lease_until))
            .bind(&due.id)
            .bind(rows::ms(expected))
            .execute(&self.write)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// Record how an attempt went, with an audit record when the delivery
    /// is settled (delivered, or failed for good).
    pub async fn finish_delivery(
        &self,
        ctx: &ChangeContext,
        id: &str,
        result: AttemptResult,
    ) -> Result<WebhookDelivery, Error> {
        let mut tx = self.begin().await?;
        let (status, code, error, next) = match &result {
            AttemptResult::Delivered { status } => ("delivered", Some(*status), None, ctx.now),
            AttemptResult::Failed {
                status,
                error,
                retry_at,
            } => (
                if retry_at.is_some() {
                    "pending"
                } else {
                    "failed"
                },
                *status,
                Some(error.clone()),
                retry_at.unwrap_or(ctx.now),
            ),
        };
        sqlx::query("UPDATE webhook_deliveries SET status = $1, response_status = $2, last_error = $3, next_attempt_at = $4, delivered_at = $5 WHERE id = $6 AND tenant_id = $7")
            .bind(status)
            .bind(code.map(i64::from))
            .bind(error)
            .bind(rows::ms(next))
            .bind((status == "delivered").then(|| rows::ms(ctx.now)))
            .bind(id)
            .bind(&ctx.tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let d = delivery(&row)?;
        if status != "pending" {
            let summary = serde_json::json!({
                "delivery_id": d.id, "webhook_id": d.webhook_id, "event": d.event,
                "status": status, "attempts": d.attempts, "response_status": d.response_status,
                "last_error": d.last_error,
            });
            append(
                &mut tx,
                ctx,
                event(
                    &format!("webhook.{status}"),
                    "webhook",
                    &d.webhook_id,
                    None,
                    Some(&summary),
                    d.last_error.as_deref(),
                ),
            )
            .await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(d)
    }

    /// A subscription's deliveries, oldest first.
    pub async fn list_deliveries(
        &self,
        tenant_id: &str,
        webhook_key: &str,
        q: DeliveryQuery,
    ) -> Result<Page<WebhookDelivery>, Error> {
        let cursor = Cursor::text(q.cursor, q.limit)?;
        let hook = {
            let mut tx = self.begin_read().await?;
            Self::webhook_in(&mut tx, tenant_id, webhook_key).await?
        };
        let mut select = Select::tenant_rows("webhook_deliveries", tenant_id)
            .and("webhook_id = ?", rows::Param::Text(hook.id));
        if let Some(s) = q.status {
            select = select.and("status = ?", rows::Param::Text(s.as_str().into()));
        }
        select
            .page(&self.read, "id", &cursor, delivery, |d| d.id.clone())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subscribed(&[], "quota.threshold"));
        assert!(subscribed(&p(&["quota.*"]), "quota.threshold"));
        assert!(!subscribed(&p(&["quota.*"]), "approval.created"));
        assert!(subscribed(&p(&["approval.created"]), "approval.created"));
        assert!(!subscribed(&p(&["approval.created"]), "approval.created.x"));
    }

    #[test]
    fn urls_must_be_http() {
        assert!(check_url("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(check_url("http://127.0.0.1:9/x").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("https://a b").is_err());
    }
}

/// A receiver's URL as the audit log and readers see it: scheme, host and
/// port only. The path and query often carry the credential (a Slack
/// incoming webhook's URL is one), and so may a user name or password.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if end == rest.len() || &rest[end..] == "/" {
        format!("{scheme}://{host}{}", &rest[end..])
    } else {
        format!("{scheme}://{host}/***")
    }
}

/// A subscription with its URL redacted by [`redacted_url`].
pub fn redacted(hook: &Webhook) -> Webhook {
    Webhook {
        url: redacted_url(&hook.url),
        ..hook.clone()
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::redacted_url;

    #[test]
    fn only_scheme_host_and_port_remain() {
        assert_eq!(
            redacted_url("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(
            redacted_url("http://user:pw@10.0.0.1:9000/hook?token=abc"),
            "http://10.0.0.1:9000/***"
        );
        assert_eq!(redacted_url("https://example.com/"), "https://example.com/");
        assert_eq!(redacted_url("https://example.com"), "https://example.com");
        assert_eq!(redacted_url("not a url"), "***");
    }
}
