//! Quotas: rules, exact counters, reservations and their settlement.
//!
//! A reservation locks the head row of every counter it touches (in a fixed
//! order, so two decisions never deadlock), reads the counters, checks every
//! limit, and writes all of them or none, in one transaction. SQLite has one
//! writer; PostgreSQL row locks serialise decisions on any number of nodes.
//! So a limit of N admits exactly N, however many nodes share the store.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use steward_core::quota::{self, Rule, Window};
use steward_core::{ChangeContext, Error};
use steward_types::{
    ErrorCode, Metric, OnExceed, Outcome, PutQuota, Quota, QuotaScope, QuotaStatus, SettledEntry,
    Settlement, WindowUsage,
};

use crate::audit::{append, event};
use crate::rows;
use crate::{Store, Tx, db_error, is_unique_violation};

/// The counter row every reservation locks first.
const HEAD: i64 = -1;
/// The alert key of going over an alert_only limit.
const EXCEEDED: u32 = 1000;

/// One counter a decision charges: a rule, whose usage (the agent, persona,
/// team, owner or tenant key), and how much.
#[derive(Debug, Clone)]
pub struct Charge {
    /// The rule.
    pub rule: Rule,
    /// Whose counter.
    pub subject: String,
    /// Stored units to reserve.
    pub estimate: i64,
}

/// A counter after a decision (or as it stands).
#[derive(Debug, Clone)]
pub struct Counted {
    /// Where it stands.
    pub status: QuotaStatus,
    /// Thresholds crossed for the first time in this window (webhooks sent).
    pub crossed: Vec<u32>,
    /// The highest threshold reached.
    pub reached: Option<u32>,
    /// What the rule says to do over the limit.
    pub on_exceed: OnExceed,
    /// Whether this decision went over (alert_only rules only).
    pub over: bool,
}

/// One decision's reservation request.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The tenant.
    pub tenant: String,
    /// The decision.
    pub decision_id: String,
    /// The agent (or human) decided for; only it may report the outcome.
    pub principal: String,
    /// What to charge.
    pub charges: Vec<Charge>,
    /// The decision's time.
    pub now: DateTime<Utc>,
    /// When an unreported reservation settles at its estimate.
    pub settle_by: DateTime<Utc>,
    /// A human approved this request: `approval_required` quotas let it go over.
    pub approved: bool,
}

/// What a reservation came to.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Every limit holds (or only alert_only ones were passed): reserved.
    Admitted(Vec<Counted>),
    /// A deny or approval_required rule would go over: nothing reserved.
    Refused(Box<Counted>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    quota_id: String,
    subject: String,
    metric: Metric,
    /// Counter row charged (window or slice start; -1 for a rate).
    window_start: i64,
    estimate: i64,
}

fn quota_row(row: &AnyRow) -> Result<Quota, Error> {
    rows::from_json(row, "body")
}

/// Where a counter stands at `now` (read in `tx`, after its head is locked).
struct Reading {
    used: i64,
    limit: i64,
    window_start: Option<DateTime<Utc>>,
    resets_at: Option<DateTime<Utc>>,
    /// The counter row a charge goes to; for a rate, the new arrival time.
    key: i64,
    /// Rates: the arrival time if admitted (None: refused).
    next_tat: Option<i64>,
    /// The key alerts are deduplicated by (one per threshold per window).
    alert_window: i64,
}

/// Whether `c` fits under its counter as `r` read it.
fn fits(c: &Charge, r: &Reading) -> bool {
    match c.rule.window {
        Window::Rate { .. } => r.next_tat.is_some(),
        _ => quota::admits(r.used, c.estimate, r.limit),
    }
}

async fn read_counter(
    tx: &mut Tx,
    tenant: &str,
    c: &Charge,
    head: i64,
    now: DateTime<Utc>,
) -> Result<Reading, Error> {
    let q = &c.rule.quota;
    let sum = |from: i64, to: i64| {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT CAST(SUM(used) AS BIGINT) FROM quota_usage WHERE tenant_id = $1 AND quota_id = $2 AND subject = $3 AND window_start >= $4 AND window_start <= $5",
        )
        .bind(tenant.to_string())
        .bind(q.id.clone())
        .bind(c.subject.clone())
        .bind(from)
        .bind(to)
    };
    match c.rule.window {
        Window::Calendar(unit, tz) => {
            let (start, end) = quota::calendar_bounds(unit, tz, now);
            let key = rows::ms(start);
            let used = sum(key, key)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?
                .unwrap_or(0);
            Ok(Reading {
                used,
                limit: c.rule.limit,
                window_start: Some(start),
                resets_at: Some(end),
                key,
                next_tat: None,
                alert_window: key,
            })
        }
        Window::Rolling(unit) => {
            let (slice, len) = quota::rolling_slice(unit, now);
            let from = slice - (quota::ROLLING_SLICES - 1) * len;
            let used = sum(from, slice)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?
                .unwrap_or(0);
            let oldest: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(window_start) FROM quota_usage WHERE tenant_id = $1 AND quota_id = $2 AND subject = $3 AND window_start >= $4 AND used > 0",
            )
            .bind(tenant)
            .bind(&q.id)
            .bind(&c.subject)
            .bind(from)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
            let length = unit.length().num_milliseconds();
            let resets_at = oldest.map(|o| rows::time(o + length));
            Ok(Reading {
                used,
                limit: c.rule.limit,
                window_start: None,
                resets_at,
                key: slice,
                next_tat: None,
                alert_window: slice - slice.rem_euclid(length),
            })
        }
        Window::Rate { per_second, burst } => {
            let now_us = now.timestamp_micros();
            let remaining = quota::gcra_remaining(head, now_us, per_second, burst);
            let next_tat = quota::gcra(head, now_us, per_second, burst, c.estimate).ok();
            let full_at = head.max(now_us);
            Ok(Reading {
                used: burst - remaining,
                limit: burst,
                window_start: None,
                resets_at: DateTime::from_timestamp_micros(full_at),
                key: HEAD,
                next_tat,
                // A rate has no thresholds; going over an alert_only rate
                // alerts once an hour.
                alert_window: now_us - now_us.rem_euclid(3_600_000_000),
            })
        }
        Window::Live => Err(Error::internal("live quotas are checked at registration")),
    }
}

fn status(rule: &Rule, subject: &str, r: &Reading) -> QuotaStatus {
    let q = &rule.quota;
    let m = q.metric;
    QuotaStatus {
        quota_id: q.id.clone(),
        name: q.name.clone(),
        metric: m,
        subject: subject.to_string(),
        used: quota::from_units(m, r.used),
        limit: quota::from_units(m, r.limit),
        remaining: quota::from_units(m, (r.limit - r.used).max(0)),
        window: rule.window_label(),
        window_start: r.window_start,
        resets_at: r.resets_at,
        currency: q.currency.clone(),
    }
}

/// Locked counter heads by (tenant, quota, subject), with their values.
pub(crate) type Heads = HashMap<(String, String, String), i64>;

/// The counter heads `reservations` charge, in the one lock order every
/// writer uses (sorted by tenant, quota, subject).
pub(crate) fn head_keys<'a>(
    reservations: impl Iterator<Item = &'a Reservation>,
) -> Vec<(String, String, String)> {
    let mut keys: Vec<(String, String, String)> = reservations
        .flat_map(|r| {
            r.charges
                .iter()
                .map(move |c| (r.tenant.clone(), c.rule.quota.id.clone(), c.subject.clone()))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Lock and read the counter heads `keys` name (from [`head_keys`]).
pub(crate) async fn lock_heads(
    tx: &mut Tx,
    lock: &str,
    keys: Vec<(String, String, String)>,
) -> Result<Heads, Error> {
    let mut heads = HashMap::with_capacity(keys.len());
    for key in keys {
        let head = lock_head(tx, lock, &key.0, &key.1, &key.2).await?;
        heads.insert(key, head);
    }
    Ok(heads)
}

async fn lock_head(
    tx: &mut Tx,
    lock: &str,
    tenant: &str,
    quota_id: &str,
    subject: &str,
) -> Result<i64, Error> {
    if let Some(head) = read_head(tx, lock, tenant, quota_id, subject).await? {
        return Ok(head);
    }
    // The first use of this counter: create its head row (a concurrent
    // first use on another node waits here, then finds it).
    sqlx::query("INSERT INTO quota_usage (tenant_id, quota_id, subject, window_start, used) VALUES ($1, $2, $3, -1, 0) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(quota_id)
        .bind(subject)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    read_head(tx, lock, tenant, quota_id, subject)
        .await?
        .ok_or_else(|| Error::internal("a quota counter vanished while it was locked"))
}

async fn read_head(
    tx: &mut Tx,
    lock: &str,
    tenant: &str,
    quota_id: &str,
    subject: &str,
) -> Result<Option<i64>, Error> {
    sqlx::query_scalar(&format!(
        "SELECT used FROM quota_usage WHERE tenant_id = $1 AND quota_id = $2 AND subject = $3 AND window_start = -1{lock}"
    ))
    .bind(tenant)
    .bind(quota_id)
    .bind(subject)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)
}

async fn add_usage(
    tx: &mut Tx,
    tenant: &str,
    quota_id: &str,
    subject: &str,
    window_start: i64,
    delta: i64,
) -> Result<(), Error> {
    // A counter stops at `quota::USAGE_CAP` (past any limit), so that summing
    // a window's slices never overflows, whatever usage agents report.
    sqlx::query(
        "INSERT INTO quota_usage (tenant_id, quota_id, subject, window_start, used) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, quota_id, subject, window_start) DO UPDATE SET used = CASE \
         WHEN excluded.used > 0 AND quota_usage.used > $6 - excluded.used THEN $6 \
         WHEN quota_usage.used + excluded.used < 0 THEN 0 ELSE quota_usage.used + excluded.used END",
    )
    .bind(tenant)
    .bind(quota_id)
    .bind(subject)
    .bind(window_start)
    .bind(delta.clamp(-quota::USAGE_CAP, quota::USAGE_CAP))
    .bind(quota::USAGE_CAP)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The canonical counter key of a quota's subject: an agent's id, a
/// persona's or team's name, an owner's e-mail; none for the tenant.
async fn resolve_subject(
    tx: &mut Tx,
    tenant: &str,
    scope: QuotaScope,
    subject: Option<&str>,
) -> Result<Option<String>, Error> {
    let (table, col, field, kind) = match scope {
        QuotaScope::Tenant => {
            return match subject {
                Some(_) => Err(Error::invalid("subject", "a tenant quota has no subject")),
                None => Ok(None),
            };
        }
        QuotaScope::Agent => ("agents", "name", "id", "agent"),
        QuotaScope::Persona => ("personas", "name", "name", "persona"),
        QuotaScope::Team => ("teams", "name", "name", "team"),
        QuotaScope::Owner => ("humans", "email", "email", "human"),
    };
    let key = subject.ok_or_else(|| {
        Error::invalid("subject", format!("name the {kind} this quota applies to"))
    })?;
    let found = lookup(tx, tenant, (table, col, field, kind), "subject", key).await?;
    Ok(Some(found))
}

/// The key decisions resolve an inventory resource to (an agent's or
/// person's id, a team's name), for a rule counting one such resource: a
/// rule naming it by another key would never match.
async fn resolve_resource(
    tx: &mut Tx,
    tenant: &str,
    resource_type: Option<&str>,
    resource_id: Option<String>,
) -> Result<Option<String>, Error> {
    let target = match resource_type {
        Some("Agent") => ("agents", "name", "id", "agent"),
        Some("Human") => ("humans", "email", "id", "human"),
        Some("Team") => ("teams", "name", "name", "team"),
        _ => return Ok(resource_id),
    };
    match resource_id {
        Some(key) => Ok(Some(lookup(tx, tenant, target, "resource_id", &key).await?)),
        None => Ok(None),
    }
}

/// `field` of the row of `table` whose id or `col` is `key`.
async fn lookup(
    tx: &mut Tx,
    tenant: &str,
    (table, col, field, kind): (&str, &str, &str, &str),
    named_by: &str,
    key: &str,
) -> Result<String, Error> {
    // E-mails are stored lower-cased.
    let key = if col == "email" {
        key.to_lowercase()
    } else {
        key.to_string()
    };
    let row = crate::tenants::find_row(&mut **tx, table, col, tenant, &key, "")
        .await?
        .ok_or_else(|| Error::unknown_reference(named_by, kind, &key))?;
    rows::get(&row, field)
}

impl Store {
    /// Create or replace (by name) a rule.
    pub async fn put_quota(&self, ctx: &ChangeContext, req: PutQuota) -> Result<Quota, Error> {
        let mut tx = self.begin().await?;
        let out = self.put_quota_in(&mut tx, ctx, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::put_quota`] inside a caller's transaction. A replaced rule
    /// keeps its id, and so its counters.
    pub async fn put_quota_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        req: PutQuota,
    ) -> Result<Quota, Error> {
        let scope = req.scope.unwrap_or(QuotaScope::Tenant);
        let subject = resolve_subject(tx, &ctx.tenant_id, scope, req.subject.as_deref()).await?;
        let mut req = req;
        req.resource_id = resolve_resource(
            tx,
            &ctx.tenant_id,
            req.resource_type.as_deref(),
            req.resource_id.take(),
        )
        .await?;
        let rule = quota::rule_from_request(rows::new_id("quo"), req, subject, ctx.now)?;
        let mut quota = rule.quota.clone();
        let before = match self.quota_in(tx, &ctx.tenant_id, &quota.name).await {
            Ok(q) => Some(q),
            Err(e) if e.code == ErrorCode::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(b) = &before {
            quota.id = b.id.clone();
            if b.metric != quota.metric || b.scope != quota.scope || b.subject != quota.subject {
                return Err(Error::invalid(
                    "name",
                    format!(
                        "quota '{}' counts {} for {}: delete it to count something else under this name",
                        b.name,
                        b.metric.as_str(),
                        b.scope.as_str()
                    ),
                ));
            }
            let mut same = quota.clone();
            same.updated_at = b.updated_at;
            if &same == b {
                return Ok(same);
            }
        }
        let written = if before.is_some() {
            sqlx::query(
                "UPDATE quotas SET body = $1, updated_at = $2 WHERE id = $3 AND tenant_id = $4",
            )
            .bind(rows::to_json(&quota))
            .bind(rows::ms(quota.updated_at))
            .bind(&quota.id)
            .bind(&ctx.tenant_id)
            .execute(&mut **tx)
            .await
        } else {
            sqlx::query("INSERT INTO quotas (id, tenant_id, name, body, scope, updated_at, subject, metric) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(&quota.id)
                .bind(&ctx.tenant_id)
                .bind(&quota.name)
                .bind(rows::to_json(&quota))
                .bind(quota.scope.as_str())
                .bind(rows::ms(quota.updated_at))
                .bind(&quota.subject)
                .bind(quota.metric.as_str())
                .execute(&mut **tx)
                .await
        };
        written.map_err(|e| {
            if is_unique_violation(&e) {
                Error::already_exists("quota", &quota.name)
            } else {
                db_error(e)
            }
        })?;
        let action = if before.is_some() {
            "quota.update"
        } else {
            "quota.create"
        };
        append(
            tx,
            ctx,
            event(
                action,
                "quota",
                &quota.id,
                before.as_ref(),
                Some(&quota),
                None,
            ),
        )
        .await?;
        Ok(quota)
    }

    async fn quota_in(&self, tx: &mut Tx, tenant: &str, key: &str) -> Result<Quota, Error> {
        let row = crate::tenants::find_row(&mut **tx, "quotas", "name", tenant, key, "").await?;
        match row {
            Some(r) => quota_row(&r),
            None => Err(Error::not_found("quota", key)),
        }
    }

    /// A rule by id or name.
    pub async fn get_quota(&self, tenant: &str, key: &str) -> Result<Quota, Error> {
        let mut tx = self.begin_read().await?;
        self.quota_in(&mut tx, tenant, key).await
    }

    /// Every rule of the tenant, by name.
    pub async fn list_quotas(&self, tenant: &str) -> Result<Vec<Quota>, Error> {
        let rows = sqlx::query("SELECT body FROM quotas WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant)
            .fetch_all(&self.read)
            .await
            .map_err(db_error)?;
        rows.iter().map(quota_row).collect()
    }

    /// Delete a rule with its counters.
    pub async fn delete_quota(&self, ctx: &ChangeContext, key: &str) -> Result<Quota, Error> {
        let mut tx = self.begin().await?;
        let q = self.delete_quota_in(&mut tx, ctx, key).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(q)
    }

    /// [`Store::delete_quota`] inside a caller's transaction.
    pub async fn delete_quota_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        key: &str,
    ) -> Result<Quota, Error> {
        let q = self.quota_in(tx, &ctx.tenant_id, key).await?;
        for table in ["quota_usage", "quota_alerts"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant_id = $1 AND quota_id = $2"
            ))
            .bind(&ctx.tenant_id)
            .bind(&q.id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
        sqlx::query("DELETE FROM quotas WHERE tenant_id = $1 AND id = $2")
            .bind(&ctx.tenant_id)
            .bind(&q.id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        append(
            tx,
            ctx,
            event("quota.delete", "quota", &q.id, Some(&q), None, None),
        )
        .await?;
        Ok(q)
    }

    /// Reserve one decision's charges, or none, in `tx`, where every head
    /// row it charges is locked and its value is in `heads`.
    pub(crate) async fn reserve_in(
        &self,
        tx: &mut Tx,
        r: Reservation,
        heads: &mut Heads,
    ) -> Result<Admission, Error> {
        let Reservation {
            tenant,
            decision_id,
            principal,
            mut charges,
            now,
            settle_by,
            approved,
        } = r;
        let (tenant, decision_id) = (tenant.as_str(), decision_id.as_str());
        charges.sort_by(|a, b| (&a.rule.quota.id, &a.subject).cmp(&(&b.rule.quota.id, &b.subject)));
        let mut readings = Vec::with_capacity(charges.len());
        let mut refused: Option<Counted> = None;
        let key = |c: &Charge| {
            (
                tenant.to_string(),
                c.rule.quota.id.clone(),
                c.subject.clone(),
            )
        };
        for c in &charges {
            let head = heads
                .get(&key(c))
                .copied()
                .ok_or_else(|| Error::internal("a charged counter was not locked"))?;
            let r = read_counter(tx, tenant, c, head, now).await?;
            let fits = fits(c, &r);
            let on_exceed = match c.rule.quota.on_exceed {
                OnExceed::ApprovalRequired if approved => OnExceed::AlertOnly,
                other => other,
            };
            if !fits && on_exceed != OnExceed::AlertOnly {
                let worse = refused.as_ref().is_none_or(|f| {
                    f.on_exceed == OnExceed::ApprovalRequired && on_exceed == OnExceed::Deny
                });
                if worse {
                    refused = Some(Counted {
                        status: status(&c.rule, &c.subject, &r),
                        crossed: vec![],
                        reached: None,
                        on_exceed,
                        over: true,
                    });
                }
            }
            readings.push((r, fits));
        }
        if let Some(f) = refused {
            return Ok(Admission::Refused(Box::new(f)));
        }
        let mut counted = Vec::with_capacity(charges.len());
        let mut entries = Vec::with_capacity(charges.len());
        for (c, (mut r, fits)) in charges.iter().zip(readings) {
            let q = &c.rule.quota;
            let before = r.used;
            match (c.rule.window, r.next_tat) {
                (Window::Rate { .. }, Some(tat)) => {
                    sqlx::query("UPDATE quota_usage SET used = $4 WHERE tenant_id = $1 AND quota_id = $2 AND subject = $3 AND window_start = -1")
                        .bind(tenant)
                        .bind(&q.id)
                        .bind(&c.subject)
                        .bind(tat)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                    heads.insert(key(c), tat);
                    r = read_counter(tx, tenant, c, tat, now).await?;
                }
                (Window::Rate { .. }, None) => {}
                _ => {
                    if c.estimate != 0 {
                        add_usage(tx, tenant, &q.id, &c.subject, r.key, c.estimate).await?;
                    }
                    r.used += c.estimate;
                }
            }
            // A threshold fires once per window; going over an alert_only
            // limit fires `quota.exceeded` once per window (key 1000). A
            // rate's burst filling up is what it is for: no thresholds.
            let rate = matches!(c.rule.window, Window::Rate { .. });
            let candidates = match (fits, rate) {
                (false, _) => vec![EXCEEDED],
                (true, true) => Vec::new(),
                (true, false) => quota::crossed(before, r.used, r.limit, &q.thresholds),
            };
            let mut crossed = Vec::new();
            for t in candidates {
                let first = sqlx::query("INSERT INTO quota_alerts (tenant_id, quota_id, subject, window_start, threshold, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
                    .bind(tenant)
                    .bind(&q.id)
                    .bind(&c.subject)
                    .bind(r.alert_window)
                    .bind(i64::from(t))
                    .bind(rows::ms(now))
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected()
                    == 1;
                if first {
                    crossed.push(t);
                }
            }
            let s = status(&c.rule, &c.subject, &r);
            for t in &crossed {
                let (name, text) = if fits {
                    (
                        "quota.threshold",
                        format!(
                            "Quota '{}' for {} is at {t}%: {} of {} {} used ({}), resets {}.",
                            q.name,
                            c.subject,
                            s.used,
                            s.limit,
                            q.metric.as_str(),
                            s.window,
                            s.resets_at
                                .map_or("when usage ages out".into(), |t| t.to_rfc3339()),
                        ),
                    )
                } else {
                    (
                        "quota.exceeded",
                        format!(
                            "Quota '{}' for {} is over its limit: {} of {} {} ({}); allowed because it is alert_only.",
                            q.name,
                            c.subject,
                            s.used,
                            s.limit,
                            q.metric.as_str(),
                            s.window,
                        ),
                    )
                };
                let data = serde_json::json!({ "quota": q, "threshold": t.min(&100), "status": s, "decision_id": decision_id });
                self.notify_in(tx, tenant, name, &text, data, now).await?;
            }
            entries.push(Entry {
                quota_id: q.id.clone(),
                subject: c.subject.clone(),
                metric: q.metric,
                window_start: r.key,
                estimate: c.estimate,
            });
            crossed.retain(|t| *t != EXCEEDED);
            counted.push(Counted {
                reached: match (fits, rate) {
                    (false, _) => Some(100),
                    (true, true) => None,
                    (true, false) => quota::highest_reached(r.used, r.limit, &q.thresholds),
                },
                status: s,
                crossed,
                on_exceed: q.on_exceed,
                over: !fits,
            });
        }
        sqlx::query("INSERT INTO quota_reservations (decision_id, tenant_id, entries, created_at, settle_by, principal) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(decision_id)
            .bind(tenant)
            .bind(rows::to_json(&entries))
            .bind(rows::ms(now))
            .bind(rows::ms(settle_by))
            .bind(principal)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        Ok(Admission::Admitted(counted))
    }

    /// Settle a decision's reservation with the usage reported: each
    /// counter moves by actual − estimate (in the window it was charged to).
    /// `principal`: when an agent reports, only its own decisions.
    pub async fn settle(
        &self,
        ctx: &ChangeContext,
        decision_id: &str,
        principal: Option<&str>,
        outcome: &Outcome,
    ) -> Result<Settlement, Error> {
        let lock = self.backend.for_update();
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT entries, settled_at, principal FROM quota_reservations WHERE decision_id = $1 AND tenant_id = $2 AND ($3 = '' OR principal = $3){lock}"
        ))
        .bind(decision_id)
        .bind(&ctx.tenant_id)
        .bind(principal.unwrap_or_default())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| {
            Error::new(
                ErrorCode::NotFound,
                format!("decision '{decision_id}' has no reservation in this tenant: it is unknown, was not allowed, or no quota applied to it"),
            )
        })?;
        if rows::get::<Option<i64>>(&row, "settled_at")?.is_some() {
            return Err(Error::new(
                ErrorCode::AlreadySettled,
                format!("decision '{decision_id}' is already settled; its usage is final"),
            ));
        }
        let entries: Vec<Entry> = rows::from_json(&row, "entries")?;
        let mut settled = Vec::with_capacity(entries.len());
        for e in &entries {
            let reported = match e.metric {
                Metric::Tokens => outcome.tokens.map(|v| v as f64),
                Metric::Cost => outcome.cost,
                Metric::Records => outcome.records.map(|v| v as f64),
                Metric::Bytes => outcome.bytes.map(|v| v as f64),
                _ => None,
            };
            let actual = match reported {
                Some(v) => quota::to_units(e.metric.as_str(), e.metric, v)?,
                None => e.estimate,
            };
            if actual != e.estimate && e.window_start != HEAD {
                lock_head(&mut tx, lock, &ctx.tenant_id, &e.quota_id, &e.subject).await?;
                add_usage(
                    &mut tx,
                    &ctx.tenant_id,
                    &e.quota_id,
                    &e.subject,
                    e.window_start,
                    actual - e.estimate,
                )
                .await?;
            }
            settled.push(SettledEntry {
                quota_id: e.quota_id.clone(),
                subject: e.subject.clone(),
                metric: e.metric,
                estimate: quota::from_units(e.metric, e.estimate),
                actual: quota::from_units(e.metric, actual),
            });
        }
        let settlement = Settlement {
            decision_id: decision_id.to_string(),
            entries: settled,
            settled_at: ctx.now,
        };
        sqlx::query(
            "UPDATE quota_reservations SET settled_at = $1, outcome = $2 WHERE decision_id = $3",
        )
        .bind(rows::ms(ctx.now))
        .bind(rows::to_json(outcome))
        .bind(decision_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Whose decision it was, so that an outcome an enforcement point
        // reports counts in the agent's behaviour as the agent's own does.
        let decided_for: Option<String> = rows::get(&row, "principal")?;
        let principal = match decided_for.filter(|p| !p.is_empty()) {
            Some(id) => {
                let agent = sqlx::query("SELECT id FROM agents WHERE tenant_id = $1 AND id = $2")
                    .bind(&ctx.tenant_id)
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .is_some();
                let kind = if agent { "agent" } else { "human" };
                Some(serde_json::json!({ "kind": kind, "id": id }))
            }
            None => None,
        };
        let after = serde_json::json!({
            "outcome": outcome,
            "settlement": settlement,
            "principal": principal,
        });
        append(
            &mut tx,
            ctx,
            event(
                "decision.outcome",
                "decision",
                decision_id,
                None,
                Some(&after),
                outcome.detail.as_deref(),
            ),
        )
        .await?;
        tx.commit_unchanged().await.map_err(db_error)?;
        Ok(settlement)
    }

    /// Settle, at their estimates, reservations not reported by `now`.
    pub async fn settle_expired(&self, now: DateTime<Utc>) -> Result<u64, Error> {
        let done = sqlx::query("UPDATE quota_reservations SET settled_at = $1, outcome = '{\"status\":\"unreported\"}' WHERE settled_at IS NULL AND settle_by <= $1")
            .bind(rows::ms(now))
            .execute(&self.write)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    /// Whether every one of `charges` that can refuse (`deny` or
    /// `approval_required`) would fit now: a read, reserving nothing. An
    /// AuthZEN search leaves out what an evaluation would refuse.
    pub async fn quotas_would_admit(
        &self,
        tenant: &str,
        charges: &[Charge],
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let refusing = charges.iter().filter(|c| {
            c.rule.quota.on_exceed != OnExceed::AlertOnly && c.rule.window != Window::Live
        });
        let mut tx = None;
        for c in refusing {
            let tx = match &mut tx {
                Some(tx) => tx,
                None => tx.insert(self.begin_read().await?),
            };
            let head = read_head(tx, "", tenant, &c.rule.quota.id, &c.subject).await?;
            let r = read_counter(tx, tenant, c, head.unwrap_or(0), now).await?;
            if !fits(c, &r) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Where a counter stands at `now`, with up to `history` past windows.
    pub async fn quota_usage(
        &self,
        tenant: &str,
        rule: &Rule,
        subject: &str,
        now: DateTime<Utc>,
        history: u32,
    ) -> Result<(QuotaStatus, Vec<WindowUsage>), Error> {
        let mut tx = self.begin_read().await?;
        let head = read_head(&mut tx, "", tenant, &rule.quota.id, subject).await?;
        let charge = Charge {
            rule: rule.clone(),
            subject: subject.to_string(),
            estimate: 1,
        };
        if rule.window == Window::Live {
            let used = Self::live_descendants(&mut tx, subject).await?;
            let r = Reading {
                used,
                limit: rule.limit,
                window_start: None,
                resets_at: None,
                key: HEAD,
                next_tat: None,
                alert_window: 0,
            };
            return Ok((status(rule, subject, &r), Vec::new()));
        }
        let r = read_counter(&mut tx, tenant, &charge, head.unwrap_or(0), now).await?;
        let past = match (rule.window, r.window_start) {
            (Window::Calendar(..), Some(start)) => {
                let rows = sqlx::query(&format!(
                    "SELECT window_start, used FROM quota_usage WHERE tenant_id = $1 AND quota_id = $2 AND subject = $3 AND window_start >= 0 AND window_start < $4 ORDER BY window_start DESC LIMIT {history}"
                ))
                .bind(tenant)
                .bind(&rule.quota.id)
                .bind(subject)
                .bind(rows::ms(start))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(WindowUsage {
                            start: rows::get_time(row, "window_start")?,
                            used: quota::from_units(rule.quota.metric, rows::get(row, "used")?),
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()?
            }
            _ => Vec::new(),
        };
        Ok((status(rule, subject, &r), past))
    }

    /// Live agents below `agent_id` (children, their children, ...).
    pub(crate) async fn live_descendants(tx: &mut crate::Tx, agent_id: &str) -> Result<i64, Error> {
        sqlx::query_scalar(&format!(
            "WITH RECURSIVE d(id) AS (SELECT id FROM agents WHERE parent_id = $1 UNION ALL SELECT a.id FROM agents a JOIN d ON a.parent_id = d.id) \
             SELECT COUNT(*) FROM agents WHERE id IN (SELECT id FROM d) AND state IN {}",
            crate::agents::LIVE_STATES
        ))
        .bind(agent_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
    }

    /// Refuse a spawn under `parent` that would take it, or any ancestor,
    /// past a child_agents quota (its own, or its persona's default).
    pub(crate) async fn check_child_quotas(
        &self,
        tx: &mut Tx,
        tenant: &str,
        parent: &steward_types::Agent,
    ) -> Result<(), Error> {
        let lock = self.backend.for_update();
        let mut next = Some(parent.clone());
        let mut depth = 0;
        while let Some(a) = next.take() {
            depth += 1;
            if depth > 64 {
                break;
            }
            let mut rules = Vec::new();
            let own = sqlx::query("SELECT body FROM quotas WHERE tenant_id = $1 AND metric = 'child_agents' AND scope = 'agent' AND subject = $2")
                .bind(tenant)
                .bind(&a.id)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
            for row in &own {
                rules.push(Rule::new(quota_row(row)?)?);
            }
            if let Some(pid) = &a.persona_id {
                let row = sqlx::query("SELECT name, quotas FROM personas WHERE id = $1")
                    .bind(pid)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_error)?;
                if let Some(row) = row {
                    let name: String = rows::get(&row, "name")?;
                    let templates: Vec<steward_types::QuotaTemplate> =
                        rows::from_json(&row, "quotas")?;
                    for t in templates.iter().filter(|t| t.metric == "child_agents") {
                        if !rules.iter().any(|r| r.quota.metric == Metric::ChildAgents) {
                            rules.push(quota::template_rule(&name, t, a.updated_at)?);
                        }
                    }
                }
            }
            if !rules.is_empty() {
                if a.id != parent.id {
                    sqlx::query(&format!("SELECT id FROM agents WHERE id = $1{lock}"))
                        .bind(&a.id)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db_error)?;
                }
                let live = Self::live_descendants(tx, &a.id).await?;
                for r in rules.iter().filter(|r| r.quota.on_exceed == OnExceed::Deny) {
                    if !quota::admits(live, 1, r.limit) {
                        return Err(Error::new(
                            ErrorCode::QuotaExceeded,
                            format!("quota '{}': agent '{}' already has {live} live agents below it, its limit is {}; decommission one or raise the quota", r.quota.name, a.name, r.limit),
                        )
                        .with_details(serde_json::json!({ "quota_id": r.quota.id, "agent": a.id, "used": live, "limit": r.limit })));
                    }
                }
            }
            next = match &a.parent_id {
                Some(p) => {
                    let row = sqlx::query("SELECT * FROM agents WHERE id = $1")
                        .bind(p)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db_error)?;
                    row.map(|r| rows::agent(&r)).transpose()?
                }
                None => None,
            };
        }
        Ok(())
    }
}

/// The counter key of a scope for an agent: its id, persona name, team name,
/// owner e-mail, or the tenant.
pub fn scope_key(
    scope: QuotaScope,
    agent_id: &str,
    persona: Option<&str>,
    team: Option<&str>,
    owner: &str,
    tenant: &str,
) -> Option<String> {
    match scope {
        QuotaScope::Agent => Some(agent_id.to_string()),
        QuotaScope::Persona => persona.map(str::to_string),
        QuotaScope::Team => team.map(str::to_string),
        QuotaScope::Owner => Some(owner.to_string()),
        QuotaScope::Tenant => Some(tenant.to_string()),
    }
}

impl Store {
    /// Each persona's default quotas, by persona name.
    pub async fn quota_templates(
        &self,
        tenant: &str,
    ) -> Result<Vec<(String, Vec<steward_types::QuotaTemplate>)>, Error> {
        let rows = sqlx::query(
            "SELECT name, quotas FROM personas WHERE tenant_id = $1 AND quotas <> '[]'",
        )
        .bind(tenant)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| Ok((rows::get(r, "name")?, rows::from_json(r, "quotas")?)))
            .collect()
    }
}

/// Builds a decision's audit record once its reservation's admission is
/// known, inside the same transaction; `None` leaves the decision unrecorded
/// (its caller has more to do before recording it, and records it itself).
pub type RecordAfter =
    Box<dyn FnOnce(&Admission) -> Option<(ChangeContext, steward_core::AuditEvent)> + Send>;

/// One durable write of the decision path, for group commit.
pub enum Write {
    /// Append an audit record (a decision's).
    Audit(Box<(ChangeContext, steward_core::AuditEvent)>),
    /// Reserve a decision's quota charges.
    Reserve(Reservation),
    /// Reserve a decision's charges and append its record in one go, so the
    /// decision waits for one commit, not two.
    Decision(Reservation, RecordAfter),
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Audit(a) => f.debug_tuple("Audit").field(&a.1.action).finish(),
            Write::Reserve(r) => f.debug_tuple("Reserve").field(&r.decision_id).finish(),
            Write::Decision(r, _) => f.debug_tuple("Decision").field(&r.decision_id).finish(),
        }
    }
}

/// What a [`Write`] came to.
#[derive(Debug, Clone)]
pub enum Written {
    /// The record's sequence number.
    Audited(i64),
    /// Admitted or refused.
    Reserved(Admission),
    /// Admitted or refused, and the record's sequence number if it was
    /// recorded.
    Decided(Admission, Option<i64>),
}

impl Store {
    /// Write a batch of the decision path's writes (reservations and audit
    /// records) in one transaction, one commit. Lock order: quota counter
    /// heads (sorted), then the audit head, as every other writer takes them.
    /// On SQLite a few audit records alone (decisions no quota applies to)
    /// take one round trip ([`Store::append_in_one_trip`]).
    pub async fn write_batch(&self, items: Vec<Write>) -> Result<Vec<Written>, Error> {
        if self.backend == crate::Backend::Sqlite
            && items.len() <= crate::audit::ONE_TRIP_MAX
            && items.iter().all(|w| matches!(w, Write::Audit(_)))
        {
            let records = items
                .into_iter()
                .filter_map(|w| match w {
                    Write::Audit(audit) => Some(*audit),
                    _ => None,
                })
                .collect();
            let seqs = self.append_in_one_trip(records).await?;
            return Ok(seqs.into_iter().map(Written::Audited).collect());
        }
        let lock = self.backend.for_update();
        let mut tx = self.begin().await?;
        let keys = head_keys(items.iter().filter_map(|w| match w {
            Write::Reserve(r) | Write::Decision(r, _) => Some(r),
            Write::Audit(_) => None,
        }));
        let mut heads = lock_heads(&mut tx, lock, keys).await?;
        // Every record the batch may append, claimed at the head at once;
        // a decision held for approval appends none, and the head is put
        // back to what was appended.
        let claimed = items
            .iter()
            .filter(|w| matches!(w, Write::Audit(_) | Write::Decision(..)))
            .count() as i64;
        let start = if claimed > 0 {
            crate::audit::claim_head(&mut tx, claimed).await?
        } else {
            0
        };
        let mut seq = start;
        let mut records = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        for w in items {
            out.push(match w {
                Write::Reserve(r) => {
                    Written::Reserved(self.reserve_in(&mut tx, r, &mut heads).await?)
                }
                Write::Audit(audit) => {
                    let (ctx, event) = *audit;
                    seq += 1;
                    records.push(crate::audit::entry(seq, &ctx, event));
                    Written::Audited(seq)
                }
                Write::Decision(r, record) => {
                    let admission = self.reserve_in(&mut tx, r, &mut heads).await?;
                    let recorded = match record(&admission) {
                        Some((ctx, event)) => {
                            seq += 1;
                            records.push(crate::audit::entry(seq, &ctx, event));
                            Some(seq)
                        }
                        None => None,
                    };
                    Written::Decided(admission, recorded)
                }
            });
        }
        crate::audit::insert_many(&mut tx, &records).await?;
        if seq != start + claimed {
            crate::audit::set_head(&mut tx, seq).await?;
        }
        // Audit records and counters: no identity changed.
        tx.commit_unchanged().await.map_err(db_error)?;
        Ok(out)
    }
}
