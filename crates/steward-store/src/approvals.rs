//! Human approvals: requests, step decisions (which activate or reject a
//! registration and apply an approved change), the atomic one-time use of a
//! runtime grant, expiry and the facts metrics are computed from.
//!
//! A grant is used with a locked read (`FOR UPDATE` on PostgreSQL; SQLite's
//! single writer) followed by a conditional update: of two concurrent uses
//! exactly one changes the row.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;
use steward_core::approval::{self, Approver};
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, Error, InventoryRules, validate};
use steward_types::{
    Agent, AgentState, Approval, ApprovalFilter, ApprovalKind, ApprovalStatus, ErrorCode, Page,
    RiskTier,
};

mod agents;

use crate::agents::lock_agent;
use crate::audit::{append, event};
use crate::humans::lock_human;
use crate::quotas::{Admission, Reservation};
use crate::rows::{self, Cursor, Param, Select};
use crate::{Store, Tx, db_error};

/// Builds a decision's audit record once its admission and the grants it
/// used are known, inside the same transaction; `None` (an
/// `approval_required` quota refused) leaves everything unchanged.
pub type RecordWithGrants = Box<
    dyn FnOnce(&Admission, &[Approval]) -> Option<(ChangeContext, steward_core::AuditEvent)> + Send,
>;

/// What [`Store::decide_with_grants`] came to.
#[derive(Debug)]
pub enum GrantUse {
    /// No unused approved grant covers the ask at this index: nothing
    /// changed.
    Missing(usize),
    /// An `approval_required` quota would go over and no ask covers it:
    /// nothing changed.
    QuotaHeld(Admission),
    /// Decided and recorded, with the grants used (none when a quota
    /// denied the request).
    Decided {
        /// The grants used, now `used`.
        used: Vec<Approval>,
        /// What the reservation came to.
        admission: Admission,
    },
}

/// What a new approval request holds.
#[derive(Debug, Clone)]
pub struct NewApproval {
    /// What it is about.
    pub kind: ApprovalKind,
    /// The tier it is filed under.
    pub risk_tier: RiskTier,
    /// The digest it is bound to.
    pub digest: String,
    /// The agent concerned.
    pub agent: Option<(String, String)>,
    /// Ids and e-mails of people who may not decide it.
    pub excluded: Vec<String>,
    /// The request shown to approvers.
    pub request: Value,
    /// Why an approval is needed.
    pub reason: String,
    /// Approver groups, in order.
    pub groups: Vec<String>,
    /// When it expires if undecided.
    pub expires_at: DateTime<Utc>,
    /// When approvers should have decided.
    pub sla_due_at: DateTime<Utc>,
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Approve the current step.
    Approve,
    /// Deny (ends the approval).
    Deny,
}

/// The outcome of asking for new roles or classifications.
#[derive(Debug, Clone)]
pub struct AccessChange {
    /// The agent (changed, or as it was while the change waits).
    pub agent: Agent,
    /// The approval the change waits for, if it raises the tier.
    pub approval: Option<Approval>,
}

/// How many approved requests per tier time-to-approval percentiles are
/// computed over: the latest, by when they were decided.
pub const STATS_TIMES: i64 = 10_000;

/// One tier's approvals, for metrics.
#[derive(Debug, Clone)]
pub struct TierFacts {
    /// The tier.
    pub risk_tier: RiskTier,
    /// How many there are in each status (statuses with none left out).
    pub counts: Vec<(ApprovalStatus, u64)>,
    /// Approved (or approved and used) after their SLA was due.
    pub sla_breached: u64,
    /// Seconds from request to approval, the latest [`STATS_TIMES`]
    /// approvals, newest first.
    pub seconds_to_approval: Vec<f64>,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, Error>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(db_error)
}

fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, name: &str) -> Result<T, Error> {
    let text: String = col(row, name)?;
    serde_json::from_str(&text)
        .map_err(|e| Error::internal(format!("corrupt approvals.{name}: {e}")))
}

fn tier(s: &str) -> Result<RiskTier, Error> {
    rows::parse_tier(s)
}

fn decode(row: &AnyRow) -> Result<Approval, Error> {
    let kind: String = col(row, "kind")?;
    let status: String = col(row, "status")?;
    Ok(Approval {
        id: col(row, "id")?,
        kind: ApprovalKind::parse(&kind)
            .ok_or_else(|| Error::internal(format!("unknown approval kind {kind}")))?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| Error::internal(format!("unknown approval status {status}")))?,
        risk_tier: tier(&col::<String>(row, "risk_tier")?)?,
        digest: col(row, "digest")?,
        agent_id: col(row, "agent_id")?,
        agent_name: col(row, "agent_name")?,
        requested_by: col(row, "requested_by")?,
        requested_by_human: col(row, "requested_by_human")?,
        request: json_col(row, "request")?,
        reason: col(row, "reason")?,
        steps: json_col(row, "steps")?,
        created_at: time(col(row, "created_at")?),
        expires_at: time(col(row, "expires_at")?),
        sla_due_at: time(col(row, "sla_due_at")?),
        decided_at: col::<Option<i64>>(row, "decided_at")?.map(time),
        grant_expires_at: col::<Option<i64>>(row, "grant_expires_at")?.map(time),
        used_at: col::<Option<i64>>(row, "used_at")?.map(time),
        used_by_decision: col(row, "used_by_decision")?,
    })
}

async fn lock_approval(
    tx: &mut Tx,
    lock: &str,
    tenant_id: &str,
    id: &str,
) -> Result<(Approval, Vec<String>), Error> {
    let row = sqlx::query(&format!(
        "SELECT * FROM approvals WHERE tenant_id = $1 AND id = $2{lock}"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or_else(|| Error::not_found("approval", id))?;
    Ok((decode(&row)?, json_col(&row, "excluded")?))
}

/// Lock an approval and the agent it is about, in the one lock order
/// (agent, then approval) that changes to an agent take too: the agent's
/// id is read first without a lock (it never changes).
async fn lock_with_agent(
    tx: &mut Tx,
    lock: &str,
    tenant_id: &str,
    id: &str,
) -> Result<(Approval, Vec<String>, Option<Agent>), Error> {
    let agent_id: Option<Option<String>> =
        sqlx::query_scalar("SELECT agent_id FROM approvals WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
    let agent = match agent_id.flatten() {
        Some(agent_id) => Some(lock_agent(tx, lock, tenant_id, &agent_id).await?),
        None => None,
    };
    let (a, excluded) = lock_approval(tx, lock, tenant_id, id).await?;
    Ok((a, excluded, agent))
}

/// The current owners of an agent's ancestors, nearest first (read, not
/// locked: who owns an agent is checked again by anyone changing it).
async fn ancestor_owners(
    tx: &mut Tx,
    tenant_id: &str,
    agent: &Agent,
) -> Result<Vec<String>, Error> {
    let mut owners = Vec::new();
    let mut seen = vec![agent.id.clone()];
    let mut next = agent.parent_id.clone();
    while let Some(id) = next.filter(|id| !seen.contains(id)) {
        let parent = lock_agent(tx, "", tenant_id, &id).await?;
        owners.push(parent.owner_id);
        seen.push(id);
        next = parent.parent_id;
    }
    Ok(owners)
}

/// Audit a change of `a` (`before` is its [`audit_view`] before it).
async fn append_change(
    tx: &mut Tx,
    ctx: &ChangeContext,
    action: &str,
    before: &Value,
    a: &Approval,
    reason: Option<&str>,
) -> Result<(), Error> {
    append(
        tx,
        ctx,
        event(
            action,
            "approval",
            &a.id,
            Some(before),
            Some(&audit_view(a)),
            reason,
        ),
    )
    .await
}

/// Write an approval's changing columns.
async fn save(tx: &mut Tx, a: &Approval) -> Result<(), Error> {
    sqlx::query(
        "UPDATE approvals SET status = $1, steps = $2, current_group = $3, decided_at = $4, \
         grant_expires_at = $5, used_at = $6, used_by_decision = $7 WHERE id = $8",
    )
    .bind(a.status.as_str())
    .bind(rows::to_json(&a.steps))
    .bind(a.current_group())
    .bind(rows::opt_ms(a.decided_at))
    .bind(rows::opt_ms(a.grant_expires_at))
    .bind(rows::opt_ms(a.used_at))
    .bind(&a.used_by_decision)
    .bind(&a.id)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

fn audit_view(a: &Approval) -> Value {
    json!({
        "id": a.id, "kind": a.kind, "status": a.status, "risk_tier": a.risk_tier,
        "digest": a.digest, "agent_id": a.agent_id, "agent_name": a.agent_name,
        "request": a.request, "reason": a.reason, "steps": a.steps,
        "expires_at": a.expires_at, "sla_due_at": a.sla_due_at,
        "grant_expires_at": a.grant_expires_at, "used_by_decision": a.used_by_decision,
    })
}

/// One line a person reads in a chat channel.
fn webhook_text(event: &str, a: &Approval) -> String {
    let name = a.agent_name.as_deref().unwrap_or("a principal");
    let what = match a.kind {
        ApprovalKind::Action => format!(
            "{name} wants to {} on {}:{} (context {})",
            a.request["action"].as_str().unwrap_or("act"),
            a.request["resource"]["type"].as_str().unwrap_or("?"),
            a.request["resource"]["id"].as_str().unwrap_or("?"),
            a.request.get("context").cloned().unwrap_or(Value::Null),
        ),
        ApprovalKind::Registration => format!("registration of agent {name}"),
        ApprovalKind::Change => format!("access change of agent {name}"),
    };
    match event {
        "approval.requested" | "approval.step_approved" => format!(
            "Approval {} needed from {} ({} risk, expires {}): {what}. {}",
            a.id,
            a.current_group().unwrap_or("?"),
            a.risk_tier.as_str(),
            a.expires_at.to_rfc3339(),
            a.reason
        ),
        _ => format!("Approval {} is {}: {what}.", a.id, a.status.as_str()),
    }
}

fn requested_by(ctx: &ChangeContext) -> String {
    format!("{}:{}", ctx.actor.kind, ctx.actor.id)
}

impl Store {
    /// Queue the webhook for an approval event (`approval.requested`,
    /// `approval.step_approved`, `approval.approved`, `approval.denied`,
    /// `approval.expired`, `approval.cancelled`, `approval.used`) in the
    /// transaction of the change it reports. The body is Slack-compatible.
    async fn announce_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        event_name: &str,
        a: &Approval,
    ) -> Result<(), Error> {
        self.notify_in(
            tx,
            &ctx.tenant_id,
            event_name,
            &webhook_text(event_name, a),
            serde_json::to_value(a).unwrap_or_default(),
            ctx.now,
        )
        .await
        .map(|_| ())
    }

    /// File a new approval request (audited as `approval.request`).
    pub async fn create_approval(
        &self,
        ctx: &ChangeContext,
        new: NewApproval,
    ) -> Result<Approval, Error> {
        let mut tx = self.begin().await?;
        let out = self.create_approval_in(&mut tx, ctx, new).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::create_approval`] inside a caller's transaction.
    pub async fn create_approval_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        new: NewApproval,
    ) -> Result<Approval, Error> {
        if new.groups.is_empty() {
            return Err(Error::internal("an approval needs at least one group"));
        }
        let mut excluded = new.excluded;
        if let Some(h) = &ctx.actor.human_id {
            excluded.push(h.clone());
        }
        let (agent_id, agent_name) = new.agent.unzip();
        let a = Approval {
            id: rows::new_id("apr"),
            kind: new.kind,
            status: ApprovalStatus::Pending,
            risk_tier: new.risk_tier,
            digest: new.digest,
            agent_id,
            agent_name,
            requested_by: requested_by(ctx),
            requested_by_human: ctx.actor.human_id.clone(),
            request: new.request,
            reason: new.reason,
            steps: approval::new_steps(&new.groups),
            created_at: ctx.now,
            expires_at: new.expires_at,
            sla_due_at: new.sla_due_at.min(new.expires_at),
            decided_at: None,
            grant_expires_at: None,
            used_at: None,
            used_by_decision: None,
        };
        sqlx::query(
            "INSERT INTO approvals (id, tenant_id, kind, status, risk_tier, digest, agent_id, agent_name, \
             requested_by, requested_by_human, excluded, request, reason, steps, current_group, created_at, \
             expires_at, sla_due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(&a.id)
        .bind(&ctx.tenant_id)
        .bind(a.kind.as_str())
        .bind(a.status.as_str())
        .bind(a.risk_tier.as_str())
        .bind(&a.digest)
        .bind(&a.agent_id)
        .bind(&a.agent_name)
        .bind(&a.requested_by)
        .bind(&a.requested_by_human)
        .bind(rows::to_json(&excluded))
        .bind(rows::to_json(&a.request))
        .bind(&a.reason)
        .bind(rows::to_json(&a.steps))
        .bind(a.current_group())
        .bind(rows::ms(a.created_at))
        .bind(rows::ms(a.expires_at))
        .bind(rows::ms(a.sla_due_at))
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if crate::is_unique_violation(&e) {
                Error::already_exists("pending approval for", &a.digest)
            } else {
                db_error(e)
            }
        })?;
        append(
            tx,
            ctx,
            event(
                "approval.request",
                "approval",
                &a.id,
                None,
                Some(&audit_view(&a)),
                Some(&a.reason),
            ),
        )
        .await?;
        self.announce_in(tx, ctx, "approval.requested", &a).await?;
        Ok(a)
    }

    /// An approval by id.
    pub async fn get_approval(&self, tenant_id: &str, id: &str) -> Result<Approval, Error> {
        let row = sqlx::query("SELECT * FROM approvals WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found("approval", id))?;
        decode(&row)
    }

    /// The tenant's approvals, filtered, oldest first.
    pub async fn list_approvals(
        &self,
        tenant_id: &str,
        filter: ApprovalFilter,
    ) -> Result<Page<Approval>, Error> {
        let cursor = Cursor::text(filter.cursor, filter.limit)?;
        let bad = |field: &str, value: &str, allowed: &str| {
            Error::new(
                ErrorCode::InvalidQuery,
                format!("{field}: '{value}' is not one of {allowed}"),
            )
        };
        let mut q = Select::tenant_rows("approvals", tenant_id);
        if let Some(s) = filter.status {
            ApprovalStatus::parse(&s).ok_or_else(|| {
                bad(
                    "status",
                    &s,
                    "pending, approved, denied, expired, used, cancelled",
                )
            })?;
            q = q.and("status = ?", Param::Text(s));
        }
        if let Some(k) = filter.kind {
            ApprovalKind::parse(&k)
                .ok_or_else(|| bad("kind", &k, "action, registration, change"))?;
            q = q.and("kind = ?", Param::Text(k));
        }
        if let Some(t) = filter.risk_tier {
            tier(&t).map_err(|_| bad("risk_tier", &t, "low, medium, high"))?;
            q = q.and("risk_tier = ?", Param::Text(t));
        }
        if let Some(agent) = filter.agent {
            q = q.and("(agent_id = ? OR agent_name = ?)", Param::Text(agent));
        }
        if let Some(group) = filter.group {
            q = q.and("current_group = ?", Param::Text(group));
        }
        q.page(&self.read, "id", &cursor, decode, |a| a.id.clone())
            .await
    }

    /// A denial of this digest decided after `since`, if any (a denied
    /// request is not asked again at once).
    pub async fn recent_denial_for(
        &self,
        tenant_id: &str,
        digest: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<Approval>, Error> {
        let row = sqlx::query(
            "SELECT * FROM approvals WHERE tenant_id = $1 AND digest = $2 AND status = 'denied' \
             AND decided_at > $3 ORDER BY id DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(digest)
        .bind(rows::ms(since))
        .fetch_optional(&self.read)
        .await
        .map_err(db_error)?;
        row.as_ref().map(decode).transpose()
    }

    /// Decide a request that needs humans' approvals, in one transaction:
    /// match the approved, unused grants of `digest` to `asks` (the groups
    /// each needed approval must include; see [`approval::match_grants`]),
    /// reserve the decision's quota charges, and record it. The grants are
    /// used only when the reservation is admitted: a request a quota denies
    /// keeps them, and one an `approval_required` quota holds changes
    /// nothing. Each use is audited as `approval.use`.
    pub async fn decide_with_grants(
        &self,
        ctx: &ChangeContext,
        digest: &str,
        asks: &[Vec<String>],
        reservation: Reservation,
        record: RecordWithGrants,
    ) -> Result<GrantUse, Error> {
        let mut tx = self.begin().await?;
        let lock = self.backend.for_update();
        // Lock order: approval rows, then quota counter heads, then the
        // audit head (no writer takes them the other way round).
        let rows = sqlx::query(&format!(
            "SELECT * FROM approvals WHERE tenant_id = $1 AND digest = $2 AND status = 'approved' \
             AND grant_expires_at > $3 ORDER BY id{lock}"
        ))
        .bind(&ctx.tenant_id)
        .bind(digest)
        .bind(rows::ms(ctx.now))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let grants = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let approved: Vec<Vec<String>> = grants
            .iter()
            .map(|g| g.steps.iter().map(|s| s.group.clone()).collect())
            .collect();
        let chosen = match approval::match_grants(&approved, asks) {
            Ok(chosen) => chosen,
            Err(missing) => return Ok(GrantUse::Missing(missing)),
        };
        let decision_id = reservation.decision_id.clone();
        let mut heads = crate::quotas::lock_heads(
            &mut tx,
            lock,
            crate::quotas::head_keys(std::iter::once(&reservation)),
        )
        .await?;
        let admission = self.reserve_in(&mut tx, reservation, &mut heads).await?;
        let mut used: Vec<Approval> = match admission {
            Admission::Admitted(_) => chosen.iter().map(|&g| grants[g].clone()).collect(),
            Admission::Refused(_) => Vec::new(),
        };
        let Some((record_ctx, decision)) = record(&admission, &used) else {
            return Ok(GrantUse::QuotaHeld(admission));
        };
        for a in &mut used {
            let changed = sqlx::query(
                "UPDATE approvals SET status = 'used', used_at = $1, used_by_decision = $2 \
                 WHERE id = $3 AND status = 'approved'",
            )
            .bind(rows::ms(ctx.now))
            .bind(&decision_id)
            .bind(&a.id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if changed != 1 {
                // Used by a concurrent identical request: nothing changes.
                return Ok(GrantUse::Missing(0));
            }
            let before = audit_view(a);
            a.status = ApprovalStatus::Used;
            a.used_at = Some(ctx.now);
            a.used_by_decision = Some(decision_id.clone());
            append_change(&mut tx, ctx, "approval.use", &before, a, None).await?;
            self.announce_in(&mut tx, ctx, "approval.used", a).await?;
        }
        append(&mut tx, &record_ctx, decision).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(GrantUse::Decided { used, admission })
    }

    /// Approve or deny the current step of an approval as the human
    /// `approver` (their id). The last approval of a registration activates
    /// the agent, a denial rejects it; the last approval of a change applies
    /// it. Everything lands in one transaction with its audit records.
    pub async fn decide_approval(
        &self,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        id: &str,
        approver: &str,
        verdict: Verdict,
        comment: Option<String>,
    ) -> Result<Approval, Error> {
        if let Some(c) = &comment {
            validate::text("comment", c)?;
        }
        let mut tx = self.begin().await?;
        let lock = self.backend.for_update();
        let (mut a, mut excluded, agent) =
            lock_with_agent(&mut tx, lock, &ctx.tenant_id, id).await?;
        let human = lock_human(&mut tx, "", &ctx.tenant_id, approver).await?;
        // The agent's current owner, and for a runtime request the current
        // owners of its ancestors, whoever they are now.
        if let Some(current) = &agent {
            excluded.push(current.owner_id.clone());
            if a.kind == ApprovalKind::Action {
                excluded.extend(ancestor_owners(&mut tx, &ctx.tenant_id, current).await?);
            }
        }
        let person = Approver {
            human_id: &human.id,
            email: &human.email,
            roles: &human.roles,
            active: human.status == steward_types::HumanStatus::Active,
        };
        // An approval about an agent that went away cannot be decided. Only
        // someone who may decide it closes it: anyone else is refused as
        // for any other approval, and nothing changes.
        if let Some(agent) = &agent {
            let gone = match a.kind {
                ApprovalKind::Registration => agent.state != AgentState::PendingApproval,
                ApprovalKind::Change => agent.state.is_terminal(),
                ApprovalKind::Action => false,
            };
            if gone && a.status == ApprovalStatus::Pending {
                approval::check_decider(&a, &person, &excluded, ctx.now)?;
                let reason = format!("agent '{}' is {}", agent.name, agent.state.as_str());
                self.close_in(&mut tx, ctx, a.clone(), ApprovalStatus::Cancelled, &reason)
                    .await?;
                tx.commit().await.map_err(db_error)?;
                return Err(Error::new(
                    ErrorCode::ApprovalClosed,
                    format!("approval {id} was cancelled: {reason}"),
                ));
            }
        }
        let before = audit_view(&a);
        let finished = match verdict {
            Verdict::Approve => approval::approve(
                &mut a,
                &person,
                &excluded,
                comment.clone(),
                ctx.now,
                rules.approval_times.grant_ttl,
            )?,
            Verdict::Deny => {
                approval::deny(&mut a, &person, &excluded, comment.clone(), ctx.now)?;
                true
            }
        };
        save(&mut tx, &a).await?;
        // The grants this one is used together with are locked before the
        // audit head is, in the order `decide_with_grants` takes them
        // (approval rows, then the audit head): the other way round, the
        // two would deadlock on PostgreSQL.
        let siblings = if finished && a.status == ApprovalStatus::Approved {
            self.lock_siblings_in(&mut tx, ctx, &a).await?
        } else {
            Vec::new()
        };
        let action = match verdict {
            Verdict::Approve => "approval.approve",
            Verdict::Deny => "approval.deny",
        };
        // A change that applies may narrow the agents below its agent:
        // they are locked before the audit head, as a PATCH locks them.
        if let (ApprovalKind::Change, ApprovalStatus::Approved, Some(agent)) =
            (a.kind, a.status, &agent)
        {
            self.lock_below_in(&mut tx, &ctx.tenant_id, &agent.id)
                .await?;
        }
        append_change(&mut tx, ctx, action, &before, &a, comment.as_deref()).await?;
        let announced = match a.status {
            ApprovalStatus::Approved => "approval.approved",
            ApprovalStatus::Denied => "approval.denied",
            _ => "approval.step_approved",
        };
        self.announce_in(&mut tx, ctx, announced, &a).await?;
        if finished {
            let why = format!(
                "{} approval {} {}",
                a.kind.as_str(),
                a.id,
                if verdict == Verdict::Approve {
                    "approved"
                } else {
                    "denied"
                }
            );
            match (a.kind, verdict, &agent) {
                (ApprovalKind::Registration, Verdict::Approve, Some(agent)) => {
                    self.transition_agent_in(
                        &mut tx,
                        ctx,
                        &agent.id,
                        Transition::Activate,
                        Some(why),
                    )
                    .await?;
                }
                (ApprovalKind::Registration, Verdict::Deny, Some(agent)) => {
                    let reason = comment.map_or(why.clone(), |c| format!("{why}: {c}"));
                    self.transition_agent_in(
                        &mut tx,
                        ctx,
                        &agent.id,
                        Transition::Reject,
                        Some(reason),
                    )
                    .await?;
                }
                (ApprovalKind::Change, Verdict::Approve, Some(agent)) => {
                    // What was approved is the change from `from` to `to`,
                    // applied to the agent as it is now: a role removed
                    // while the approval waited stays removed. A change
                    // made meanwhile that, with this one, takes the agent
                    // to a tier this chain does not cover is refused:
                    // nothing changes and the step stays to decide.
                    let (roles, classifications) = agents::changed_access(&a, agent)?;
                    if let Some((tier, chain)) = agents::beyond_change(
                        &mut tx,
                        ctx,
                        rules,
                        &a,
                        agent,
                        &roles,
                        &classifications,
                    )
                    .await?
                    {
                        return Err(Error::new(
                            ErrorCode::ApprovalPending,
                            format!(
                                "approving {} would take agent '{}' as it is now to {} risk, which needs {}; \
                                 this approval was filed for {} risk ({}). Deny it and ask for the change again, \
                                 or change the agent back first",
                                a.id,
                                agent.name,
                                tier.as_str(),
                                chain.join(" then "),
                                a.risk_tier.as_str(),
                                a.steps
                                    .iter()
                                    .map(|s| s.group.as_str())
                                    .collect::<Vec<_>>()
                                    .join(" then "),
                            ),
                        )
                        .with_details(
                            json!({ "approval": a.id, "risk_tier": tier, "chain": chain }),
                        ));
                    }
                    let after = self
                        .apply_access_in(
                            &mut tx,
                            ctx,
                            rules,
                            agent,
                            roles,
                            classifications,
                            Some(&why),
                        )
                        .await?;
                    if crate::agents::lost_any(agent, &after) {
                        self.narrow_below_in(&mut tx, ctx, rules, &after).await?;
                    }
                }
                (ApprovalKind::Action, Verdict::Approve, _) => {
                    self.extend_siblings_in(&mut tx, ctx, &a, siblings).await?;
                }
                _ => {}
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(a)
    }

    /// A request needing several approvals (a policy's and a quota's) uses
    /// their grants together: when the last is approved, the grants the
    /// same request already holds are made to last as long as it does, so
    /// a first grant does not run out while the second approval waits
    /// (the expiry sweep also leaves a grant alone while another approval
    /// of its request, filed while the grant was valid, is pending).
    ///
    /// This locks those grants of the action approval `a`: the approved,
    /// unused ones that were still valid when `a` was filed. A grant that
    /// had run out by then was not waiting for `a` (the request was asked
    /// anew after it lapsed): extending it would let the request run twice.
    async fn lock_siblings_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        a: &Approval,
    ) -> Result<Vec<Approval>, Error> {
        let Some(until) = a.grant_expires_at else {
            return Ok(Vec::new());
        };
        if a.kind != ApprovalKind::Action {
            return Ok(Vec::new());
        }
        let lock = self.backend.for_update();
        let rows = sqlx::query(&format!(
            "SELECT * FROM approvals WHERE tenant_id = $1 AND digest = $2 AND status = 'approved' \
             AND id <> $3 AND grant_expires_at < $4 AND grant_expires_at > $5 ORDER BY id{lock}"
        ))
        .bind(&ctx.tenant_id)
        .bind(&a.digest)
        .bind(&a.id)
        .bind(rows::ms(until))
        .bind(rows::ms(a.created_at))
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
        rows.iter().map(decode).collect()
    }

    /// Make the grants [`Store::lock_siblings_in`] locked last as long as
    /// `a`'s. Each extension is audited.
    async fn extend_siblings_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        a: &Approval,
        siblings: Vec<Approval>,
    ) -> Result<(), Error> {
        let Some(until) = a.grant_expires_at else {
            return Ok(());
        };
        for mut sibling in siblings {
            let before = audit_view(&sibling);
            sibling.grant_expires_at = Some(until);
            save(tx, &sibling).await?;
            let why = format!("used together with approval {}", a.id);
            append_change(tx, ctx, "approval.extend", &before, &sibling, Some(&why)).await?;
        }
        Ok(())
    }

    /// Close an open approval (expired or cancelled) with its audit record.
    async fn close_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        mut a: Approval,
        status: ApprovalStatus,
        reason: &str,
    ) -> Result<Approval, Error> {
        let before = audit_view(&a);
        a.status = status;
        save(tx, &a).await?;
        let action = match status {
            ApprovalStatus::Expired => "approval.expire",
            _ => "approval.cancel",
        };
        append_change(tx, ctx, action, &before, &a, Some(reason)).await?;
        let announced = match status {
            ApprovalStatus::Expired => "approval.expired",
            _ => "approval.cancelled",
        };
        self.announce_in(tx, ctx, announced, &a).await?;
        Ok(a)
    }

    /// The open (pending) approval of `kind` for an agent, inside a transaction.
    pub async fn open_agent_approval_in(
        &self,
        tx: &mut Tx,
        tenant_id: &str,
        agent_id: &str,
        kind: ApprovalKind,
    ) -> Result<Option<Approval>, Error> {
        let row = sqlx::query(
            "SELECT * FROM approvals WHERE tenant_id = $1 AND agent_id = $2 AND kind = $3 \
             AND status = 'pending' ORDER BY id DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(kind.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        row.as_ref().map(decode).transpose()
    }

    /// Cancel every open approval about an agent (it was rejected,
    /// decommissioned or expired, or a governance directory activated it).
    pub async fn cancel_agent_approvals_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        agent_id: &str,
        reason: &str,
    ) -> Result<Vec<Approval>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM approvals WHERE tenant_id = $1 AND agent_id = $2 AND status = 'pending' ORDER BY id",
        )
        .bind(&ctx.tenant_id)
        .bind(agent_id)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            let a = decode(&row)?;
            out.push(
                self.close_in(tx, ctx, a, ApprovalStatus::Cancelled, reason)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Expire, as of `now`, every pending approval past its expiry and every
    /// unused grant past its validity, except a grant that a pending
    /// approval of its request, filed while the grant was valid, waits with
    /// (see [`Store::lock_siblings_in`]); an expired registration rejects
    /// its agent. Returns (tenant, approval) for each.
    pub async fn expire_approvals(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Approval)>, Error> {
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT tenant_id, id FROM approvals a WHERE (status = 'pending' AND expires_at <= $1) \
             OR (status = 'approved' AND grant_expires_at <= $1 AND NOT EXISTS ( \
               SELECT 1 FROM approvals p WHERE p.tenant_id = a.tenant_id AND p.digest = a.digest \
               AND p.status = 'pending' AND p.expires_at > $1 \
               AND p.created_at < a.grant_expires_at)) ORDER BY id",
        )
        .bind(rows::ms(now))
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        let mut out = Vec::new();
        let lock = self.backend.for_update();
        for (tenant, id) in due {
            let ctx = ChangeContext::system(&tenant, "approval-expiry", now);
            let mut tx = self.begin().await?;
            let (a, _, agent) = lock_with_agent(&mut tx, lock, &tenant, &id).await?;
            if approval::status_at(&a, now) != ApprovalStatus::Expired
                || a.status == ApprovalStatus::Expired
            {
                continue;
            }
            let reason = if a.status == ApprovalStatus::Approved {
                "the grant was not used in time"
            } else {
                "nobody decided in time"
            };
            let a = self
                .close_in(&mut tx, &ctx, a, ApprovalStatus::Expired, reason)
                .await?;
            if a.kind == ApprovalKind::Registration
                && let Some(agent) = &agent
                && agent.state == AgentState::PendingApproval
            {
                self.transition_agent_in(
                    &mut tx,
                    &ctx,
                    &agent.id,
                    Transition::Reject,
                    Some(format!("registration approval {} expired", a.id)),
                )
                .await?;
            }
            tx.commit().await.map_err(db_error)?;
            out.push((tenant, a));
        }
        Ok(out)
    }

    /// The tenant's approvals counted per tier and status in the store,
    /// and the time to approval of the latest [`STATS_TIMES`] approved per
    /// tier: however long the history, a bounded read.
    pub async fn approval_stats(&self, tenant_id: &str) -> Result<Vec<TierFacts>, Error> {
        let rows = sqlx::query(
            "SELECT risk_tier, status, COUNT(*) AS n, \
             SUM(CASE WHEN decided_at > sla_due_at THEN 1 ELSE 0 END) AS late \
             FROM approvals WHERE tenant_id = $1 GROUP BY risk_tier, status",
        )
        .bind(tenant_id)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        let mut out: Vec<TierFacts> = [RiskTier::Low, RiskTier::Medium, RiskTier::High]
            .into_iter()
            .map(|risk_tier| TierFacts {
                risk_tier,
                counts: Vec::new(),
                sla_breached: 0,
                seconds_to_approval: Vec::new(),
            })
            .collect();
        for row in &rows {
            let t = tier(&col::<String>(row, "risk_tier")?)?;
            let status: String = col(row, "status")?;
            let status = ApprovalStatus::parse(&status)
                .ok_or_else(|| Error::internal(format!("unknown approval status {status}")))?;
            let facts = out
                .iter_mut()
                .find(|f| f.risk_tier == t)
                .ok_or_else(|| Error::internal("unknown risk tier"))?;
            let n = u64::try_from(col::<i64>(row, "n")?).unwrap_or_default();
            facts.counts.push((status, n));
            if matches!(status, ApprovalStatus::Approved | ApprovalStatus::Used) {
                let late = col::<Option<i64>>(row, "late")?.unwrap_or_default();
                facts.sla_breached += u64::try_from(late).unwrap_or_default();
            }
        }
        for facts in &mut out {
            let rows = sqlx::query(
                "SELECT decided_at - created_at AS took FROM approvals \
                 WHERE tenant_id = $1 AND risk_tier = $2 AND status IN ('approved', 'used') \
                 AND decided_at IS NOT NULL ORDER BY decided_at DESC LIMIT $3",
            )
            .bind(tenant_id)
            .bind(facts.risk_tier.as_str())
            .bind(STATS_TIMES)
            .fetch_all(&self.read)
            .await
            .map_err(db_error)?;
            facts.seconds_to_approval = rows
                .iter()
                .map(|row| Ok(col::<i64>(row, "took")? as f64 / 1000.0))
                .collect::<Result<_, Error>>()?;
        }
        Ok(out)
    }
}

impl Store {
    /// File the runtime approval for a request digest, or return the one
    /// already pending for it (an expired one is closed first). Two
    /// concurrent identical requests share one approval.
    pub async fn file_action_approval(
        &self,
        ctx: &ChangeContext,
        new: NewApproval,
    ) -> Result<(Approval, bool), Error> {
        for _ in 0..3 {
            let mut tx = self.begin().await?;
            let lock = self.backend.for_update();
            let row = sqlx::query(&format!(
                "SELECT * FROM approvals WHERE tenant_id = $1 AND digest = $2 AND status = 'pending'{lock}"
            ))
            .bind(&ctx.tenant_id)
            .bind(&new.digest)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            if let Some(row) = row {
                let open = decode(&row)?;
                if open.expires_at > ctx.now {
                    // Whoever asks again is a requester too: they may not
                    // approve what they asked for (separation of duties),
                    // whoever filed it first (audited as
                    // `approval.exclude`).
                    let was: Vec<String> = json_col(&row, "excluded")?;
                    let mut excluded = was.clone();
                    let asking = new.excluded.iter().chain(ctx.actor.human_id.as_ref());
                    for h in asking {
                        if !excluded.contains(h) {
                            excluded.push(h.clone());
                        }
                    }
                    if excluded.len() > was.len() {
                        sqlx::query("UPDATE approvals SET excluded = $1 WHERE id = $2")
                            .bind(rows::to_json(&excluded))
                            .bind(&open.id)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_error)?;
                        let mut before = audit_view(&open);
                        before["excluded"] = json!(was);
                        let mut after = audit_view(&open);
                        after["excluded"] = json!(excluded);
                        append(
                            &mut tx,
                            ctx,
                            event(
                                "approval.exclude",
                                "approval",
                                &open.id,
                                Some(&before),
                                Some(&after),
                                Some("asked for again: whoever asks for it may not approve it"),
                            ),
                        )
                        .await?;
                        tx.commit().await.map_err(db_error)?;
                    }
                    return Ok((open, false));
                }
                self.close_in(
                    &mut tx,
                    ctx,
                    open,
                    ApprovalStatus::Expired,
                    "nobody decided in time",
                )
                .await?;
            }
            match self.create_approval_in(&mut tx, ctx, new.clone()).await {
                Ok(a) => {
                    tx.commit().await.map_err(db_error)?;
                    return Ok((a, true));
                }
                // Another request filed it first: read theirs.
                Err(e) if e.code == ErrorCode::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal(
            "could not file the approval request; try again",
        ))
    }
}
