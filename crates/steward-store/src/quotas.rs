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
use steward_core::quota::{self, Rule, Tat, Window};
use steward_core::{ChangeContext, Error};
use steward_types::{
    ErrorCode, Metric, OnExceed, Outcome, PutQuota, Quota, QuotaScope, QuotaStatus, SettledEntry,
    Settlement, WindowUsage,
};

use crate::audit::{append, event};
use crate::rows;
use crate::{Store, Tx, db_error};

/// The counter row every reservation locks first.
const HEAD: i64 = -1;
/// The alert key of going over an alert_only limit.
const EXCEEDED: u32 = 1000;
/// Most unreported reservations one [`Store::settle_expired`] settles.
const SETTLE_AT_ONCE: i64 = 1000;
/// Low bits of a rate's remainder row holding the remainder
/// ([`Tat::behind`]; rates are below 2^40 units a second). The bits above
/// hold the low bits of the head it goes with.
const REMAINDER_BITS: u32 = 40;
const REMAINDER_MASK: i64 = (1 << REMAINDER_BITS) - 1;
const HEAD_CHECK_MASK: i64 = (1 << (63 - REMAINDER_BITS)) - 1;

/// The row beside a rate's head that holds the remainder of its arrival
/// time, keyed by the rate: a rule whose rate changed never reads another
/// rate's remainder. (Slices and windows have keys ≥ 0.)
fn remainder_key(per_second: i64) -> i64 {
    HEAD - per_second.max(1)
}

/// The remainder row's value for `tat`; -1 (read as no remainder, a later
/// time, never in the spender's favour) if it does not fit.
fn pack_remainder(tat: Tat) -> i64 {
    if (0..=REMAINDER_MASK).contains(&tat.behind) {
        ((tat.us & HEAD_CHECK_MASK) << REMAINDER_BITS) | tat.behind
    } else {
        -1
    }
}

/// A rate's arrival time from its head (microseconds, rounded up: all that
/// older versions stored) and its remainder row. A remainder written with
/// another head (by an older version, or under another rate) is ignored:
/// the head alone is a later time, so never in the spender's favour.
fn unpack_tat(head: i64, remainder: Option<i64>, per_second: i64) -> Tat {
    match remainder {
        Some(r)
            if r >= 0
                && r >> REMAINDER_BITS == head & HEAD_CHECK_MASK
                && (r & REMAINDER_MASK) < per_second =>
        {
            Tat {
                us: head,
                behind: r & REMAINDER_MASK,
            }
        }
        _ => Tat::at(head),
    }
}

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
    /// The counter row a charge goes to (a rate's head).
    key: i64,
    /// Rates: the arrival time if admitted (None: refused).
    next_tat: Option<Tat>,
    /// The key alerts are deduplicated by (one per threshold per window).
    alert_window: i64,
}

/// What an alert is about: the tenant, what moved the counter, when.
struct Source<'a> {
    tenant: &'a str,
    cause: Cause<'a>,
    now: DateTime<Utc>,
}

/// What moved a counter.
#[derive(Clone, Copy)]
enum Cause<'a> {
    /// A decision (its reservation or its outcome), by id.
    Decision(&'a str),
    /// An agent registered under this one (a child_agents quota).
    Spawn(&'a str),
}

impl Cause<'_> {
    /// The webhook `data` field naming it, and its value.
    fn field(self) -> (&'static str, String) {
        match self {
            Cause::Decision(id) => ("decision_id", id.to_string()),
            Cause::Spawn(parent) => ("parent", parent.to_string()),
        }
    }
}

/// The counter a settled entry moves, as a charge of its rule, if its
/// thresholds are watched: a windowed rule still there, and the entry's
/// window still the current one (usage moved in a past window crosses
/// nothing that is still counted).
async fn watched(
    tx: &mut Tx,
    tenant: &str,
    e: &Entry,
    now: DateTime<Utc>,
) -> Result<Option<Charge>, Error> {
    let Some(rule) = rule_by_id(tx, tenant, &e.quota_id, now).await? else {
        return Ok(None);
    };
    let current = match rule.window {
        Window::Calendar(unit, tz) => {
            rows::ms(quota::calendar_bounds(unit, tz, now).0) == e.window_start
        }
        Window::Rolling(unit) => quota::rolling_range(unit, now).0 <= e.window_start,
        Window::Rate { .. } | Window::Live => false,
    };
    Ok(current.then(|| Charge {
        rule,
        subject: e.subject.clone(),
        estimate: 0,
    }))
}

/// A rule by its id: a stored one, or a persona's default
/// (`persona:NAME:METRIC:WINDOW`, see [`quota::template_rule`]). None if it
/// is gone (or no longer valid).
async fn rule_by_id(
    tx: &mut Tx,
    tenant: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Rule>, Error> {
    if let Some(rest) = id.strip_prefix("persona:") {
        let mut parts = rest.rsplitn(3, ':');
        let (Some(window), Some(metric), Some(persona)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT quotas FROM personas WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(persona)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let templates: Vec<steward_types::QuotaTemplate> = rows::from_json(&row, "quotas")?;
        return Ok(templates
            .iter()
            .find(|t| t.metric == metric && t.window == window)
            .and_then(|t| quota::template_rule(persona, t, now).ok()));
    }
    let row = sqlx::query("SELECT body FROM quotas WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    match row {
        Some(row) => Ok(Rule::new(quota_row(&row)?).ok()),
        None => Ok(None),
    }
}

/// Whether two windows count the same stretches of time, so that a rule
/// changed from one to the other keeps counting where it was: the same
/// calendar unit in the same zone, the same rolling unit, or two rates (a
/// rate's limit is its own; its arrival time carries on) or gauges.
fn same_window(a: Window, b: Window) -> bool {
    match (a, b) {
        (Window::Calendar(u, tz), Window::Calendar(v, tz2)) => u == v && tz == tz2,
        (Window::Rolling(u), Window::Rolling(v)) => u == v,
        (Window::Rate { .. }, Window::Rate { .. }) | (Window::Live, Window::Live) => true,
        _ => false,
    }
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
            // The slice of `now` and the 60 before it: the oldest may hold
            // usage of less than a window ago, which must still count.
            let (from, slice, _) = quota::rolling_range(unit, now);
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
            let resets_at = oldest.map(|o| rows::time(quota::rolling_leaves_at(unit, o)));
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
            let remainder: Option<i64> = sqlx::query_scalar(
                "SELECT used FROM quota_usage WHERE tenant_id = $1 AND quota_id = $2 AND subject = $3 AND window_start = $4",
            )
            .bind(tenant)
            .bind(&q.id)
            .bind(&c.subject)
            .bind(remainder_key(per_second))
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
            let tat = unpack_tat(head, remainder, per_second);
            let now_us = now.timestamp_micros();
            let remaining = quota::gcra_remaining(tat, now_us, per_second, burst);
            let next_tat = quota::gcra(tat, now_us, per_second, burst, c.estimate).ok();
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
        // An applied directory holds the tenant's epoch lock, then the
        // audit log's head, then locks its rules: taking the epoch first
        // here too keeps the order one (no deadlock on PostgreSQL).
        self.lock_policy_epoch_in(&mut tx, &ctx.tenant_id).await?;
        let out = self.put_quota_in(&mut tx, ctx, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::put_quota`] inside a caller's transaction. A replaced rule
    /// keeps its id, and so its counters; one whose window or time zone
    /// changes starts counting anew (its usage is not carried over). Two
    /// first puts of one name at once are a create and then a replace (or
    /// nothing, if they are the same), whatever locks the caller holds.
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
        // Locked until the transaction ends (PostgreSQL; SQLite has one
        // writer): a rule deleted or replaced meanwhile is waited for, not
        // updated in place after it is gone.
        let lock = self.backend.for_update();
        for _ in 0..2 {
            match self
                .quota_in(tx, &ctx.tenant_id, &rule.quota.name, lock)
                .await
            {
                Ok(before) => return self.replace_quota_in(tx, ctx, &rule, before).await,
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
            let quota = &rule.quota;
            // A create of the same name under way in another transaction
            // is waited for (PostgreSQL); if it commits, this inserts
            // nothing and replaces what it created instead.
            let inserted = sqlx::query("INSERT INTO quotas (id, tenant_id, name, body, scope, updated_at, subject, metric) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, name) DO NOTHING")
                .bind(&quota.id)
                .bind(&ctx.tenant_id)
                .bind(&quota.name)
                .bind(rows::to_json(quota))
                .bind(quota.scope.as_str())
                .bind(rows::ms(quota.updated_at))
                .bind(&quota.subject)
                .bind(quota.metric.as_str())
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            if inserted.rows_affected() == 1 {
                append(
                    tx,
                    ctx,
                    event("quota.create", "quota", &quota.id, None, Some(quota), None),
                )
                .await?;
                return Ok(quota.clone());
            }
        }
        Err(Error::internal(format!(
            "quota '{}' was created and deleted while this change waited; send it again",
            rule.quota.name
        )))
    }

    /// Replace `before`, locked, with `rule`: nothing if they are the same.
    async fn replace_quota_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        rule: &Rule,
        before: Quota,
    ) -> Result<Quota, Error> {
        let mut quota = rule.quota.clone();
        quota.id = before.id.clone();
        if before.metric != quota.metric
            || before.scope != quota.scope
            || before.subject != quota.subject
        {
            return Err(Error::invalid(
                "name",
                format!(
                    "quota '{}' counts {} for {}: delete it to count something else under this name",
                    before.name,
                    before.metric.as_str(),
                    before.scope.as_str()
                ),
            ));
        }
        let mut same = quota.clone();
        same.updated_at = before.updated_at;
        if same == before {
            return Ok(same);
        }
        let updated = sqlx::query(
            "UPDATE quotas SET body = $1, updated_at = $2 WHERE id = $3 AND tenant_id = $4",
        )
        .bind(rows::to_json(&quota))
        .bind(rows::ms(quota.updated_at))
        .bind(&quota.id)
        .bind(&ctx.tenant_id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        // The row is locked, so it is there; were it gone, answering
        // that it was replaced would acknowledge a change not made.
        if updated.rows_affected() != 1 {
            return Err(Error::internal(format!(
                "quota '{}' changed while it was being replaced; send the change again",
                quota.name
            )));
        }
        // Nothing is moved: the new window reads the rows at its own keys
        // (where its windows or slices start), so it starts anew.
        let reason = match Rule::new(before.clone()) {
            Ok(old) if !same_window(old.window, rule.window) => Some(format!(
                "window changed from {} to {}: the counter restarts; usage counted under the old window is not carried into the new one",
                old.window_label(),
                rule.window_label()
            )),
            _ => None,
        };
        append(
            tx,
            ctx,
            event(
                "quota.update",
                "quota",
                &quota.id,
                Some(&before),
                Some(&quota),
                reason.as_deref(),
            ),
        )
        .await?;
        if reason.is_some() {
            // Alerts are kept by where their window starts, and a new
            // window may start where an old one did (an hour at midnight, a
            // rolling day's bucket): the old window's alerts would hold back
            // the new one's. Deleted after the audit head is held, so that a
            // decision waiting for it holds no alert this waits for.
            sqlx::query("DELETE FROM quota_alerts WHERE tenant_id = $1 AND quota_id = $2")
                .bind(&ctx.tenant_id)
                .bind(&quota.id)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
        }
        Ok(quota)
    }

    /// A rule by id or name, its row locked with `lock` (for a write).
    async fn quota_in(
        &self,
        tx: &mut Tx,
        tenant: &str,
        key: &str,
        lock: &str,
    ) -> Result<Quota, Error> {
        let row = crate::tenants::find_row(&mut **tx, "quotas", "name", tenant, key, lock).await?;
        match row {
            Some(r) => quota_row(&r),
            None => Err(Error::not_found("quota", key)),
        }
    }

    /// A rule by id or name.
    pub async fn get_quota(&self, tenant: &str, key: &str) -> Result<Quota, Error> {
        let mut tx = self.begin_read().await?;
        self.quota_in(&mut tx, tenant, key, "").await
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
        // As in `put_quota`: the tenant's epoch first.
        self.lock_policy_epoch_in(&mut tx, &ctx.tenant_id).await?;
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
        // Locked first: a concurrent replace or delete waits for this one.
        let lock = self.backend.for_update();
        let q = self.quota_in(tx, &ctx.tenant_id, key, lock).await?;
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
        let deleted = sqlx::query("DELETE FROM quotas WHERE tenant_id = $1 AND id = $2")
            .bind(&ctx.tenant_id)
            .bind(&q.id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        if deleted.rows_affected() != 1 {
            return Err(Error::not_found("quota", key));
        }
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
                (Window::Rate { per_second, .. }, Some(tat)) => {
                    sqlx::query("UPDATE quota_usage SET used = $4 WHERE tenant_id = $1 AND quota_id = $2 AND subject = $3 AND window_start = -1")
                        .bind(tenant)
                        .bind(&q.id)
                        .bind(&c.subject)
                        .bind(tat.us)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                    // Written under the head's lock, like the head.
                    sqlx::query(
                        "INSERT INTO quota_usage (tenant_id, quota_id, subject, window_start, used) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (tenant_id, quota_id, subject, window_start) DO UPDATE SET used = excluded.used",
                    )
                    .bind(tenant)
                    .bind(&q.id)
                    .bind(&c.subject)
                    .bind(remainder_key(per_second))
                    .bind(pack_remainder(tat))
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                    heads.insert(key(c), tat.us);
                    r = read_counter(tx, tenant, c, tat.us, now).await?;
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
            let s = status(&c.rule, &c.subject, &r);
            let source = Source {
                tenant,
                cause: Cause::Decision(decision_id),
                now,
            };
            let mut crossed = self.alert_in(tx, &source, c, &r, &s, candidates).await?;
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

    /// Record each of `candidates` (thresholds, or [`EXCEEDED`] over an
    /// alert_only limit) reached in `r`'s window, once per window on any
    /// number of nodes, and queue a webhook for each first: those.
    async fn alert_in(
        &self,
        tx: &mut Tx,
        from: &Source<'_>,
        c: &Charge,
        r: &Reading,
        s: &QuotaStatus,
        candidates: Vec<u32>,
    ) -> Result<Vec<u32>, Error> {
        let q = &c.rule.quota;
        let mut crossed = Vec::new();
        for t in candidates {
            let first = sqlx::query("INSERT INTO quota_alerts (tenant_id, quota_id, subject, window_start, threshold, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
                .bind(from.tenant)
                .bind(&q.id)
                .bind(&c.subject)
                .bind(r.alert_window)
                .bind(i64::from(t))
                .bind(rows::ms(from.now))
                .execute(&mut **tx)
                .await
                .map_err(db_error)?
                .rows_affected()
                == 1;
            if first {
                crossed.push(t);
            }
        }
        for t in &crossed {
            let (name, text) = if *t != EXCEEDED {
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
            let mut data = serde_json::json!({ "quota": q, "threshold": t.min(&100), "status": s });
            let (field, id) = from.cause.field();
            data[field] = serde_json::json!(id);
            self.notify_in(tx, from.tenant, name, &text, data, from.now)
                .await?;
        }
        Ok(crossed)
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
        // Kept in the reservation and its record as sent: the same on
        // either store (PostgreSQL refuses a NUL), and bounded.
        if let Some(detail) = &outcome.detail {
            steward_core::validate::text("detail", detail)?;
        }
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
                // More than estimated can cross a threshold of the window
                // it counts in, as a reservation can.
                let watched = if actual > e.estimate {
                    watched(&mut tx, &ctx.tenant_id, e, ctx.now).await?
                } else {
                    None
                };
                let before = match &watched {
                    Some(c) => Some(read_counter(&mut tx, &ctx.tenant_id, c, 0, ctx.now).await?),
                    None => None,
                };
                add_usage(
                    &mut tx,
                    &ctx.tenant_id,
                    &e.quota_id,
                    &e.subject,
                    e.window_start,
                    actual - e.estimate,
                )
                .await?;
                if let (Some(c), Some(before)) = (watched, before) {
                    let r = read_counter(&mut tx, &ctx.tenant_id, &c, 0, ctx.now).await?;
                    let q = &c.rule.quota;
                    let candidates = quota::crossed(before.used, r.used, r.limit, &q.thresholds);
                    if !candidates.is_empty() {
                        let s = status(&c.rule, &c.subject, &r);
                        let source = Source {
                            tenant: &ctx.tenant_id,
                            cause: Cause::Decision(decision_id),
                            now: ctx.now,
                        };
                        self.alert_in(&mut tx, &source, &c, &r, &s, candidates)
                            .await?;
                    }
                }
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

    /// Settle, at their estimates, reservations not reported by `now`: at
    /// most [`SETTLE_AT_ONCE`] a call, a tenant's in one transaction, each
    /// recorded (`quota.settle_unreported`, by the system). A reservation
    /// settled meanwhile by its report is left alone.
    pub async fn settle_expired(&self, now: DateTime<Utc>) -> Result<u64, Error> {
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT tenant_id, decision_id FROM quota_reservations \
             WHERE settled_at IS NULL AND settle_by <= $1 ORDER BY tenant_id, decision_id LIMIT $2",
        )
        .bind(rows::ms(now))
        .bind(SETTLE_AT_ONCE)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        let mut settled = 0;
        for tenant_due in due.chunk_by(|a, b| a.0 == b.0) {
            let ctx = ChangeContext::system(&tenant_due[0].0, "quota-settlement", now);
            let mut tx = self.begin().await?;
            for (_, decision_id) in tenant_due {
                let done = sqlx::query(
                    "UPDATE quota_reservations SET settled_at = $1, \
                     outcome = '{\"status\":\"unreported\"}' \
                     WHERE tenant_id = $2 AND decision_id = $3 AND settled_at IS NULL",
                )
                .bind(rows::ms(now))
                .bind(&ctx.tenant_id)
                .bind(decision_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if done.rows_affected() == 0 {
                    continue;
                }
                let after = serde_json::json!({"settled_at": "the estimate"});
                append(
                    &mut tx,
                    &ctx,
                    event(
                        "quota.settle_unreported",
                        "decision",
                        decision_id,
                        None,
                        Some(&after),
                        Some("no outcome was reported in time"),
                    ),
                )
                .await?;
                settled += 1;
            }
            tx.commit_unchanged().await.map_err(db_error)?;
        }
        Ok(settled)
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
    /// past a child_agents quota (its own, or its persona's default); else
    /// alert as [`Store::check_child_quotas_at`] does, at the clock's time.
    pub(crate) async fn check_child_quotas(
        &self,
        tx: &mut Tx,
        tenant: &str,
        parent: &steward_types::Agent,
    ) -> Result<(), Error> {
        self.check_child_quotas_at(tx, tenant, parent, Utc::now())
            .await
    }

    /// [`Store::check_child_quotas`] at `now` (the registration's time).
    /// A spawn that is allowed moves each such quota's count of live
    /// agents up by one: thresholds it reaches send `quota.threshold`, and
    /// going over an alert_only limit sends `quota.exceeded`, each once
    /// until the count falls back below it (a gauge has no window to
    /// reset them).
    pub(crate) async fn check_child_quotas_at(
        &self,
        tx: &mut Tx,
        tenant: &str,
        parent: &steward_types::Agent,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let lock = self.backend.for_update();
        let mut next = Some(parent.clone());
        let mut depth = 0;
        // Alerts wait until every ancestor has admitted the spawn.
        let mut counted = Vec::new();
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
                counted.extend(rules.into_iter().map(|r| (r, a.id.clone(), live)));
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
        let source = Source {
            tenant,
            cause: Cause::Spawn(&parent.id),
            now,
        };
        for (rule, agent, live) in counted {
            self.alert_live_in(tx, &source, rule, agent, live).await?;
        }
        Ok(())
    }

    /// The alerts of a child_agents quota of `agent` whose live count goes
    /// from `live` to one more: each threshold reached, and going over an
    /// alert_only limit, once; one the count was below re-arms first.
    async fn alert_live_in(
        &self,
        tx: &mut Tx,
        source: &Source<'_>,
        rule: Rule,
        agent: String,
        live: i64,
    ) -> Result<(), Error> {
        let limit = rule.limit;
        let reached = |used: i64, key: u32| {
            if key == EXCEEDED {
                used > limit
            } else {
                quota::highest_reached(used, limit, &[key]).is_some()
            }
        };
        let alert_only = rule.quota.on_exceed == OnExceed::AlertOnly;
        let keys: Vec<u32> = rule
            .quota
            .thresholds
            .iter()
            .copied()
            .chain(alert_only.then_some(EXCEEDED))
            .collect();
        for key in keys.iter().filter(|k| !reached(live, **k)) {
            sqlx::query("DELETE FROM quota_alerts WHERE tenant_id = $1 AND quota_id = $2 AND subject = $3 AND window_start = $4 AND threshold = $5")
                .bind(source.tenant)
                .bind(&rule.quota.id)
                .bind(&agent)
                .bind(HEAD)
                .bind(i64::from(*key))
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
        }
        let after = live + 1;
        let candidates: Vec<u32> = keys.into_iter().filter(|k| reached(after, *k)).collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let r = Reading {
            used: after,
            limit,
            window_start: None,
            resets_at: None,
            key: HEAD,
            next_tat: None,
            alert_window: HEAD,
        };
        let c = Charge {
            rule,
            subject: agent,
            estimate: 1,
        };
        let s = status(&c.rule, &c.subject, &r);
        self.alert_in(tx, source, &c, &r, &s, candidates).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap()
    }

    async fn sqlite() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/s.db", dir.path().display());
        (Store::open(&url).await.unwrap(), dir)
    }

    /// The test PostgreSQL database (`STEWARD_TEST_PG_URL`, else the machine's).
    fn postgres_base() -> String {
        std::env::var("STEWARD_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A store in a fresh, empty schema of the test PostgreSQL database.
    async fn postgres() -> Store {
        use sqlx::{Connection, Executor};
        let base = postgres_base();
        let schema = format!("st_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Store::open(&url).await.unwrap()
    }

    /// Each test on SQLite and on PostgreSQL (`sqlite::name`, `postgres::name`).
    macro_rules! on_both_stores {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $( #[tokio::test]
                   async fn $name() { let (store, _dir) = super::sqlite().await; super::$name(&store).await } )*
            }
            mod postgres {
                $( #[tokio::test]
                   async fn $name() { super::$name(&super::postgres().await).await } )*
            }
        };
    }

    on_both_stores!(
        rolling_usage_leaves_a_slice_late_never_early,
        a_rate_admits_its_whole_burst,
        reported_usage_crosses_thresholds,
        an_hour_the_clock_repeats_has_a_counter_of_its_own,
    );

    /// The tenant `default`, and a system change context in it at `now`.
    async fn tenant(store: &Store, now: DateTime<Utc>) -> ChangeContext {
        let ctx = ChangeContext::system("default", "test", now);
        store
            .ensure_tenant(&ctx, "default", "Default")
            .await
            .unwrap();
        ctx
    }

    /// A tenant rule counting `metric` per `window`.
    fn request(name: &str, metric: &str, window: &str, limit: f64) -> PutQuota {
        PutQuota {
            name: name.into(),
            metric: metric.into(),
            window: window.into(),
            limit,
            ..Default::default()
        }
    }

    async fn rule(store: &Store, ctx: &ChangeContext, req: PutQuota) -> Rule {
        Rule::new(store.put_quota(ctx, req).await.unwrap()).unwrap()
    }

    fn reservation(rule: &Rule, id: &str, estimate: i64, now: DateTime<Utc>) -> Reservation {
        Reservation {
            tenant: "default".into(),
            decision_id: id.into(),
            principal: String::new(),
            charges: vec![Charge {
                rule: rule.clone(),
                subject: "default".into(),
                estimate,
            }],
            now,
            settle_by: now + Duration::minutes(15),
            approved: false,
        }
    }

    async fn reserve(
        store: &Store,
        rule: &Rule,
        id: &str,
        estimate: i64,
        now: DateTime<Utc>,
    ) -> Admission {
        let r = reservation(rule, id, estimate, now);
        match store
            .write_batch(vec![Write::Reserve(r)])
            .await
            .unwrap()
            .pop()
        {
            Some(Written::Reserved(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    /// The whole audit log.
    async fn audit(store: &Store) -> Vec<steward_types::AuditEntry> {
        store
            .audit_rows_all(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.read.unwrap().0)
            .collect()
    }

    fn admitted(a: &Admission) -> bool {
        matches!(a, Admission::Admitted(_))
    }

    /// A rolling minute of 10: 10 spent at 12:00:00.999 still count at
    /// 12:01:00.999 (else 20 would pass within a minute), and are gone at
    /// 12:01:01, when the refusal said they would be.
    async fn rolling_usage_leaves_a_slice_late_never_early(store: &Store) {
        let spent = at("2026-03-01T12:00:00.999Z");
        let ctx = tenant(store, spent).await;
        let mut req = request("rolling", "requests", "minute", 10.0);
        req.rolling = true;
        let q = rule(store, &ctx, req).await;
        for i in 0..10 {
            assert!(admitted(
                &reserve(store, &q, &format!("d{i}"), 1, spent).await
            ));
        }
        for (i, now) in ["2026-03-01T12:01:00Z", "2026-03-01T12:01:00.999Z"]
            .into_iter()
            .enumerate()
        {
            match reserve(store, &q, &format!("late{i}"), 1, at(now)).await {
                Admission::Refused(c) => {
                    assert_eq!(c.status.used, 10.0);
                    assert_eq!(c.status.resets_at, Some(at("2026-03-01T12:01:01Z")));
                }
                a => panic!("admitted at {now}: {a:?}"),
            }
        }
        let later = reserve(store, &q, "later", 1, at("2026-03-01T12:01:01Z")).await;
        assert!(admitted(&later), "{later:?}");
    }

    /// Rates whose unit takes a fraction of a microsecond to earn back
    /// admit their whole burst, within one transaction and across several.
    async fn a_rate_admits_its_whole_burst(store: &Store) {
        let now = at("2026-03-01T12:00:00Z");
        let ctx = tenant(store, now).await;
        let mut req = request("three", "requests", "second", 3.0);
        req.burst = Some(3);
        let q = rule(store, &ctx, req).await;
        let batch = (0..4)
            .map(|i| Write::Reserve(reservation(&q, &format!("a{i}"), 1, now)))
            .collect();
        let got: Vec<bool> = store
            .write_batch(batch)
            .await
            .unwrap()
            .iter()
            .map(|w| matches!(w, Written::Reserved(Admission::Admitted(_))))
            .collect();
        assert_eq!(got, [true, true, true, false]);
        let second = now + Duration::seconds(1);
        for i in 0..4 {
            let a = reserve(store, &q, &format!("b{i}"), 1, second).await;
            assert_eq!(admitted(&a), i < 3, "{i}: {a:?}");
        }
        // 3 a second, 1 at once: one every 333333⅓ µs, never refused for good.
        let mut req = request("one-at-once", "requests", "second", 3.0);
        req.burst = Some(1);
        let q = rule(store, &ctx, req).await;
        let t = now + Duration::seconds(10);
        assert!(admitted(&reserve(store, &q, "c0", 1, t).await));
        let early = t + Duration::microseconds(333_333);
        assert!(!admitted(&reserve(store, &q, "c1", 1, early).await));
        let due = t + Duration::microseconds(333_334);
        assert!(admitted(&reserve(store, &q, "c2", 1, due).await));
    }

    #[test]
    fn remainders_of_other_heads_are_ignored() {
        let tat = Tat {
            us: 1_772_366_400_333_334,
            behind: 2,
        };
        let stored = Some(pack_remainder(tat));
        assert_eq!(unpack_tat(tat.us, stored, 3), tat);
        // Written with another head (an older version moved it), under
        // another rate, or not at all: the head alone, a later time.
        assert_eq!(unpack_tat(tat.us + 1, stored, 3), Tat::at(tat.us + 1));
        assert_eq!(unpack_tat(tat.us, stored, 2), Tat::at(tat.us));
        assert_eq!(unpack_tat(tat.us, None, 3), Tat::at(tat.us));
        assert_eq!(unpack_tat(tat.us, Some(-1), 3), Tat::at(tat.us));
        let fast = Tat {
            us: 5,
            behind: 999_999_999_999,
        };
        assert_eq!(
            unpack_tat(5, Some(pack_remainder(fast)), 1_000_000_000_000),
            fast
        );
        assert_ne!(remainder_key(3), HEAD);
        assert!(remainder_key(1_000_000_000_000) < HEAD);
    }

    /// Usage reported over the estimate crosses thresholds too, once.
    async fn reported_usage_crosses_thresholds(store: &Store) {
        let now = Utc::now();
        let ctx = tenant(store, now).await;
        let mut req = request("tokens", "tokens", "day", 100.0);
        req.thresholds = Some(vec![50, 80]);
        let q = rule(store, &ctx, req).await;
        let alerts = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT threshold FROM quota_alerts WHERE quota_id = $1 ORDER BY threshold",
            )
            .bind(&q.quota.id)
            .fetch_all(&store.write)
            .await
            .unwrap()
        };
        assert!(admitted(&reserve(store, &q, "d1", 10, now).await));
        assert!(alerts().await.is_empty());
        let reported = Outcome {
            tokens: Some(60),
            ..Default::default()
        };
        store.settle(&ctx, "d1", None, &reported).await.unwrap();
        assert_eq!(alerts().await, [50]);
        match reserve(store, &q, "d2", 25, now).await {
            Admission::Admitted(c) => assert_eq!(c[0].crossed, [80]),
            a => panic!("{a:?}"),
        }
        let less = Outcome {
            tokens: Some(1),
            ..Default::default()
        };
        store.settle(&ctx, "d2", None, &less).await.unwrap();
        assert_eq!(alerts().await, [50, 80]);
    }

    /// An hourly limit of 1 in Paris: the two real hours the clock shows
    /// 02:xx on 25 October 2026 are two windows, each with its own 1.
    async fn an_hour_the_clock_repeats_has_a_counter_of_its_own(store: &Store) {
        let ctx = tenant(store, at("2026-10-25T00:00:00Z")).await;
        let mut req = request("hourly", "requests", "hour", 1.0);
        req.timezone = Some("Europe/Paris".into());
        let q = rule(store, &ctx, req).await;
        let first = at("2026-10-25T00:30:00Z");
        assert!(admitted(&reserve(store, &q, "cest", 1, first).await));
        let again = reserve(store, &q, "cest-again", 1, first + Duration::minutes(29)).await;
        assert!(!admitted(&again), "{again:?}");
        let repeated = at("2026-10-25T01:05:00Z");
        let second = reserve(store, &q, "cet", 1, repeated).await;
        assert!(
            admitted(&second),
            "the repeated hour is a new hour: {second:?}"
        );
        match second {
            Admission::Admitted(c) => {
                assert_eq!(c[0].status.window_start, Some(at("2026-10-25T01:00:00Z")));
                assert_eq!(c[0].status.resets_at, Some(at("2026-10-25T02:00:00Z")));
            }
            a => panic!("{a:?}"),
        }
    }

    /// Two first puts of one rule at once, on PostgreSQL, where nothing
    /// but the name's unique index stands between them (no epoch lock):
    /// the second waits for the first, then replaces what it created.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simultaneous_first_puts_are_a_create_and_a_replace_on_postgres() {
        let store = postgres().await;
        let ctx = tenant(&store, Utc::now()).await;
        let mut first = store.begin().await.unwrap();
        store
            .put_quota_in(&mut first, &ctx, request("calls", "requests", "day", 10.0))
            .await
            .unwrap();
        let second = put_once_waiting(&store, &ctx).await;
        first.commit().await.unwrap();
        let put = second.await.unwrap().expect("a replace, not a conflict");
        let kept = store.get_quota("default", "calls").await.unwrap();
        assert_eq!(kept, put);
        assert_eq!(kept.limit, 20.0);
        let actions: Vec<String> = audit(&store)
            .await
            .into_iter()
            .map(|e| e.action)
            .filter(|a| a.starts_with("quota."))
            .collect();
        assert_eq!(actions, ["quota.create", "quota.update"]);
    }

    /// A replace that read the rule while a delete of it was under way
    /// waits for the delete, then creates the rule anew: it never answers
    /// that it replaced a rule that is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replace_racing_a_delete_is_not_lost_on_postgres() {
        let store = postgres().await;
        let ctx = tenant(&store, Utc::now()).await;
        store
            .put_quota(&ctx, request("calls", "requests", "day", 10.0))
            .await
            .unwrap();
        let mut deleting = store.begin().await.unwrap();
        store
            .delete_quota_in(&mut deleting, &ctx, "calls")
            .await
            .unwrap();
        // Let the delete go once the replace waits for a lock it holds.
        let replacing = put_once_waiting(&store, &ctx).await;
        deleting.commit().await.unwrap();
        let put = replacing.await.unwrap().unwrap();
        let kept = store.get_quota("default", "calls").await.unwrap();
        assert_eq!(kept, put);
        assert_eq!(kept.limit, 20.0);
    }

    /// A put of `calls` (20 a day) on a transaction of its own, returned
    /// once PostgreSQL shows it waiting for a lock (or it has finished).
    async fn put_once_waiting(
        store: &Store,
        ctx: &ChangeContext,
    ) -> tokio::task::JoinHandle<Result<Quota, Error>> {
        use sqlx::Connection;
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
        let put = {
            let (store, ctx) = (store.clone(), ctx.clone());
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let pid: i64 = sqlx::query_scalar("SELECT CAST(pg_backend_pid() AS BIGINT)")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                pid_tx.send(pid).unwrap();
                let put = store
                    .put_quota_in(&mut tx, &ctx, request("calls", "requests", "day", 20.0))
                    .await;
                tx.commit().await.unwrap();
                put
            })
        };
        let pid = pid_rx.await.unwrap();
        let mut watch = sqlx::PgConnection::connect(&postgres_base()).await.unwrap();
        loop {
            let waiting: Option<String> =
                sqlx::query_scalar("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1")
                    .bind(i32::try_from(pid).unwrap())
                    .fetch_optional(&mut watch)
                    .await
                    .unwrap()
                    .flatten();
            if waiting.as_deref() == Some("Lock") || put.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        watch.close().await.unwrap();
        put
    }
}
