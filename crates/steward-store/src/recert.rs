//! Recertification campaigns: a campaign's agents are fixed when it starts
//! (one item each, for the owner to attest); an attestation and the
//! lifecycle change it asks for (suspend, decommission) are one
//! transaction with their audit record; at the due date the campaign closes
//! and items still pending are overdue (and their agents suspended, unless
//! the campaign only reports).

use chrono::{DateTime, Duration, Utc};
use sqlx::any::AnyRow;
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, Error, validate};
use steward_types::{
    Agent, AgentState, Attest, Campaign, CampaignCounts, CampaignItem, CampaignItemQuery,
    ErrorCode, OnOverdue, Page, PageQuery, RiskTier, StartCampaign,
};

use crate::audit::{append, event};
use crate::rows::{self, Cursor, Param, Select};
use crate::tenants::find_row;
use crate::{Store, Tx, db_error, is_unique_violation};

/// Item statuses, in the order counts list them.
const STATUSES: [&str; 5] = ["pending", "kept", "suspended", "decommissioned", "overdue"];

fn on_overdue(s: &str) -> Result<OnOverdue, Error> {
    match s {
        "suspend" => Ok(OnOverdue::Suspend),
        "report" => Ok(OnOverdue::Report),
        other => Err(Error::internal(format!("corrupt on_overdue {other}"))),
    }
}

fn campaign(row: &AnyRow, counts: CampaignCounts) -> Result<Campaign, Error> {
    Ok(Campaign {
        id: rows::get(row, "id")?,
        name: rows::get(row, "name")?,
        status: rows::get(row, "status")?,
        min_risk_tier: rows::get::<Option<String>>(row, "min_risk_tier")?
            .map(|t| rows::parse_tier(&t))
            .transpose()?,
        team_id: rows::get(row, "team_id")?,
        on_overdue: on_overdue(&rows::get::<String>(row, "on_overdue")?)?,
        created_at: rows::get_time(row, "created_at")?,
        created_by: rows::get(row, "created_by")?,
        due_at: rows::get_time(row, "due_at")?,
        closed_at: rows::get_opt_time(row, "closed_at")?,
        counts,
    })
}

fn item(row: &AnyRow) -> Result<CampaignItem, Error> {
    Ok(CampaignItem {
        campaign_id: rows::get(row, "campaign_id")?,
        agent_id: rows::get(row, "agent_id")?,
        agent_name: rows::get(row, "agent_name")?,
        risk_tier: rows::parse_tier(&rows::get::<String>(row, "risk_tier")?)?,
        owner_id: rows::get(row, "owner_id")?,
        status: rows::get(row, "status")?,
        decided_by: rows::get(row, "decided_by")?,
        decided_at: rows::get_opt_time(row, "decided_at")?,
        note: rows::get(row, "note")?,
    })
}

async fn counts<'e, E>(executor: E, campaign_id: &str) -> Result<CampaignCounts, Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM recert_items WHERE campaign_id = $1 GROUP BY status",
    )
    .bind(campaign_id)
    .fetch_all(executor)
    .await
    .map_err(db_error)?;
    let mut c = CampaignCounts::default();
    for (status, n) in rows {
        let n = u64::try_from(n).unwrap_or(0);
        c.total += n;
        match status.as_str() {
            "pending" => c.pending += n,
            "kept" => c.kept += n,
            "suspended" => c.suspended += n,
            "decommissioned" => c.decommissioned += n,
            _ => c.overdue += n,
        }
    }
    Ok(c)
}

fn closed(message: String) -> Error {
    Error::new(ErrorCode::RecertificationClosed, message)
}

impl Store {
    /// Start a campaign over the tenant's active and suspended agents in
    /// scope, each to be attested by its owner before `due_in_days`.
    pub async fn start_campaign(
        &self,
        ctx: &ChangeContext,
        req: &StartCampaign,
    ) -> Result<Campaign, Error> {
        validate::name("name", &req.name)?;
        let days = req.due_in_days.unwrap_or(14);
        if !(1..=90).contains(&days) {
            return Err(Error::invalid("due_in_days", "must be 1 to 90"));
        }
        let on_overdue = req.on_overdue.unwrap_or_default();
        let mut tx = self.begin().await?;
        let team_id = match &req.team {
            Some(key) => Some(
                find_row(&mut *tx, "teams", "name", &ctx.tenant_id, key, "")
                    .await?
                    .ok_or_else(|| Error::unknown_reference("team", "team", key))
                    .and_then(|row| rows::get::<String>(&row, "id"))?,
            ),
            None => None,
        };
        let id = rows::new_id("rc");
        let due_at = ctx.now + Duration::days(i64::from(days));
        let inserted = sqlx::query(
            "INSERT INTO recert_campaigns (id, tenant_id, name, status, min_risk_tier, team_id, on_overdue, \
             created_at, created_by, due_at) VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&ctx.tenant_id)
        .bind(&req.name)
        .bind(req.min_risk_tier.map(|t| t.as_str()))
        .bind(&team_id)
        .bind(on_overdue.as_str())
        .bind(rows::ms(ctx.now))
        .bind(&ctx.actor.id)
        .bind(rows::ms(due_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::already_exists("recertification", &req.name));
            }
            other => other.map_err(db_error)?,
        };
        // Every item in one statement: a campaign over many agents holds
        // the (single, on SQLite) writer for one statement, not one per agent.
        let mut tiers: Vec<&str> = [RiskTier::Low, RiskTier::Medium, RiskTier::High]
            .into_iter()
            .filter(|tier| req.min_risk_tier.is_none_or(|min| *tier >= min))
            .map(RiskTier::as_str)
            .collect();
        while tiers.len() < 3 {
            tiers.push(tiers[0]);
        }
        sqlx::query(
            "INSERT INTO recert_items (campaign_id, tenant_id, agent_id, agent_name, risk_tier, owner_id, status) \
             SELECT $1, tenant_id, id, name, risk_tier, owner_id, 'pending' FROM agents \
             WHERE tenant_id = $2 AND state IN ('active', 'suspended') AND risk_tier IN ($3, $4, $5) \
             AND ($6 = '' OR team_id = $6)",
        )
        .bind(&id)
        .bind(&ctx.tenant_id)
        .bind(tiers[0])
        .bind(tiers[1])
        .bind(tiers[2])
        .bind(team_id.as_deref().unwrap_or_default())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let started = self.campaign_in(&mut tx, &ctx.tenant_id, &id).await?;
        append(
            &mut tx,
            ctx,
            event(
                "recertification.start",
                "recertification",
                &id,
                None,
                Some(&started),
                None,
            ),
        )
        .await?;
        let text = format!(
            "Recertification {} started: {} agents for their owners to attest by {}",
            started.name,
            started.counts.total,
            started.due_at.format("%Y-%m-%d %H:%M UTC")
        );
        self.notify_in(
            &mut tx,
            &ctx.tenant_id,
            "recertification.started",
            &text,
            serde_json::json!({ "campaign": started }),
            ctx.now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(started)
    }

    async fn campaign_in(
        &self,
        tx: &mut Tx,
        tenant_id: &str,
        key: &str,
    ) -> Result<Campaign, Error> {
        let lock = self.backend.for_update();
        let row = find_row(&mut **tx, "recert_campaigns", "name", tenant_id, key, lock)
            .await?
            .ok_or_else(|| Error::not_found("recertification", key))?;
        let id: String = rows::get(&row, "id")?;
        let c = counts(&mut **tx, &id).await?;
        campaign(&row, c)
    }

    /// One campaign, by id or name.
    pub async fn get_campaign(&self, tenant_id: &str, key: &str) -> Result<Campaign, Error> {
        let row = find_row(&self.read, "recert_campaigns", "name", tenant_id, key, "")
            .await?
            .ok_or_else(|| Error::not_found("recertification", key))?;
        let id: String = rows::get(&row, "id")?;
        campaign(&row, counts(&self.read, &id).await?)
    }

    /// The tenant's campaigns, oldest first.
    pub async fn list_campaigns(
        &self,
        tenant_id: &str,
        page: PageQuery,
    ) -> Result<Page<Campaign>, Error> {
        let cursor = Cursor::text(page.cursor, page.limit)?;
        let mut found = Select::tenant_rows("recert_campaigns", tenant_id)
            .page(
                &self.read,
                "id",
                &cursor,
                |row| campaign(row, CampaignCounts::default()),
                |c| c.id.clone(),
            )
            .await?;
        for c in &mut found.items {
            c.counts = counts(&self.read, &c.id).await?;
        }
        Ok(found)
    }

    /// A campaign's agents, by agent id.
    pub async fn list_campaign_items(
        &self,
        tenant_id: &str,
        key: &str,
        q: CampaignItemQuery,
    ) -> Result<Page<CampaignItem>, Error> {
        let cursor = Cursor::text(q.cursor, q.limit)?;
        let c = self.get_campaign(tenant_id, key).await?;
        let mut select = Select::tenant_rows("recert_items", tenant_id)
            .and("campaign_id = ?", Param::Text(c.id));
        if let Some(status) = q.status {
            if !STATUSES.contains(&status.as_str()) {
                return Err(crate::audit::bad_filter(format!(
                    "status must be one of {}",
                    STATUSES.join(", ")
                )));
            }
            select = select.and("status = ?", Param::Text(status));
        }
        if let Some(owner) = q.owner {
            let human = self.get_human(tenant_id, &owner).await?;
            select = select.and("owner_id = ?", Param::Text(human.id));
        }
        select
            .page(&self.read, "agent_id", &cursor, item, |i| {
                i.agent_id.clone()
            })
            .await
    }

    /// What `human_id` still has to attest: pending items of open campaigns
    /// for agents they own now, with each campaign's name and due date.
    pub async fn awaiting_attestation(
        &self,
        tenant_id: &str,
        human_id: &str,
    ) -> Result<Vec<(CampaignItem, String, DateTime<Utc>)>, Error> {
        let rows = sqlx::query(
            "SELECT i.*, c.name AS campaign_name, c.due_at AS campaign_due FROM recert_items i \
             JOIN recert_campaigns c ON c.id = i.campaign_id AND c.tenant_id = i.tenant_id \
             JOIN agents g ON g.id = i.agent_id AND g.tenant_id = i.tenant_id \
             WHERE i.tenant_id = $1 AND g.owner_id = $2 AND c.status = 'open' AND i.status = 'pending' \
             ORDER BY c.due_at, i.agent_name LIMIT 100",
        )
        .bind(tenant_id)
        .bind(human_id)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    item(r)?,
                    rows::get(r, "campaign_name")?,
                    rows::get_time(r, "campaign_due")?,
                ))
            })
            .collect()
    }

    /// An attestation of one agent of an open campaign: by its owner (the
    /// person `human_id` of the caller), or by an admin (`admin`) when the
    /// agent is orphaned. `suspend` and `decommission` change the agent in
    /// the same transaction.
    pub async fn attest(
        &self,
        ctx: &ChangeContext,
        human_id: Option<&str>,
        admin: bool,
        campaign_key: &str,
        agent_key: &str,
        req: &Attest,
    ) -> Result<CampaignItem, Error> {
        let (status, transition) = match req.decision.as_str() {
            "keep" => ("kept", None),
            "suspend" => ("suspended", Some(Transition::Suspend)),
            "decommission" => ("decommissioned", Some(Transition::Decommission)),
            _ => {
                return Err(Error::invalid(
                    "decision",
                    "must be keep, suspend or decommission",
                ));
            }
        };
        if let Some(note) = &req.note {
            validate::text("note", note)?;
        }
        let note = req.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
        if transition.is_some() && note.is_none() {
            return Err(Error::invalid(
                "note",
                "say why the agent should be suspended or decommissioned",
            ));
        }
        let mut tx = self.begin().await?;
        let lock = self.backend.for_update();
        // Lock order as elsewhere: the agent, then what is about it.
        let agent = crate::agents::lock_agent(&mut tx, lock, &ctx.tenant_id, agent_key).await?;
        let c = self
            .campaign_in(&mut tx, &ctx.tenant_id, campaign_key)
            .await?;
        let may_attest = human_id.is_some_and(|h| h == agent.owner_id) || (admin && agent.orphaned);
        if !may_attest {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!(
                    "only the owner of {} ({}) attests for it; an admin may attest only for an orphaned agent",
                    agent.name, agent.owner_id
                ),
            ));
        }
        // Decommissioning cascades to descendants, which may be others'.
        if transition == Some(Transition::Decommission) && !admin {
            return Err(Error::new(
                ErrorCode::Forbidden,
                "decommissioning takes an admin token (it retires the agent's descendants too); keep or suspend it with this one",
            ));
        }
        if c.status != "open" || ctx.now >= c.due_at {
            return Err(closed(format!(
                "recertification {} closed {}",
                c.name,
                c.closed_at.unwrap_or(c.due_at).format("%Y-%m-%d %H:%M UTC")
            )));
        }
        let row = sqlx::query(&format!(
            "SELECT * FROM recert_items WHERE tenant_id = $1 AND campaign_id = $2 AND agent_id = $3{lock}"
        ))
        .bind(&ctx.tenant_id)
        .bind(&c.id)
        .bind(&agent.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::not_found("agent in this recertification", agent_key))?;
        let before = item(&row)?;
        if before.status != "pending" {
            return Err(closed(format!(
                "{} was already attested in {}: {}",
                agent.name, c.name, before.status
            )));
        }
        if let Some(t) = transition {
            let reason = format!("recertification {}: {}", c.name, note.unwrap_or_default());
            match self
                .transition_agent_in(&mut tx, ctx, &agent.id, t, Some(reason))
                .await
            {
                Ok(_) => {}
                // Already suspended: the owner's answer stands. An agent
                // that cannot be suspended (expired, decommissioned, not
                // yet active) is not recorded as suspended.
                Err(e)
                    if e.code == ErrorCode::InvalidTransition
                        && t == Transition::Suspend
                        && agent.state == AgentState::Suspended => {}
                Err(e) => return Err(e),
            }
        }
        sqlx::query(
            "UPDATE recert_items SET status = $1, decided_by = $2, decided_at = $3, note = $4 \
             WHERE campaign_id = $5 AND agent_id = $6 AND tenant_id = $7",
        )
        .bind(status)
        .bind(&ctx.actor.id)
        .bind(rows::ms(ctx.now))
        .bind(note)
        .bind(&c.id)
        .bind(&agent.id)
        .bind(&ctx.tenant_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let after = CampaignItem {
            status: status.into(),
            decided_by: Some(ctx.actor.id.clone()),
            decided_at: Some(ctx.now),
            note: note.map(str::to_string),
            ..before.clone()
        };
        append(
            &mut tx,
            ctx,
            event(
                "recertification.attest",
                "agent",
                &agent.id,
                Some(&before),
                Some(&after),
                note,
            ),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(after)
    }

    /// Close every campaign due by `now`: pending items become overdue and,
    /// unless the campaign only reports, their agents are suspended.
    pub async fn close_due_campaigns(&self, now: DateTime<Utc>) -> Result<Vec<Campaign>, Error> {
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT tenant_id, id FROM recert_campaigns WHERE status = 'open' AND due_at <= $1 ORDER BY id",
        )
        .bind(rows::ms(now))
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        let mut closed_now = Vec::new();
        for (tenant, id) in due {
            let ctx = ChangeContext::system(&tenant, "recertification", now);
            // One campaign's trouble does not hold up the others'.
            match self.close_campaign(&ctx, &id).await {
                Ok(Some(c)) => closed_now.push(c),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "could not close a recertification; will retry")
                }
            }
        }
        Ok(closed_now)
    }

    /// Close one campaign (the sweep above, for one): `None` when it was
    /// closed already.
    #[doc(hidden)]
    pub async fn close_campaign(
        &self,
        ctx: &ChangeContext,
        id: &str,
    ) -> Result<Option<Campaign>, Error> {
        // What happens to the overdue never changes after the start. A
        // campaign that only reports marks its pending items in one
        // statement; one that suspends changes each agent, audited.
        let suspends =
            self.get_campaign(&ctx.tenant_id, id).await?.on_overdue == OnOverdue::Suspend;
        let mut tx = self.begin().await?;
        let lock = self.backend.for_update();
        // Pending agents first, locked in one statement above before below
        // (agent rows before the campaign's, as an attestation locks them;
        // agents in the order every lock on several takes them), then the
        // campaign.
        let agents: Vec<Agent> = if suspends {
            sqlx::query(&format!(
                "SELECT * FROM agents WHERE tenant_id = $1 AND id IN (SELECT agent_id FROM recert_items \
                 WHERE tenant_id = $1 AND campaign_id = $2 AND status = 'pending') ORDER BY depth, id{lock}"
            ))
            .bind(&ctx.tenant_id)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .iter()
            .map(rows::agent)
            .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let c = self.campaign_in(&mut tx, &ctx.tenant_id, id).await?;
        if c.status != "open" {
            tx.rollback().await.map_err(db_error)?;
            return Ok(None);
        }
        // A campaign that suspends: every agent still pending and active,
        // each with its record, together. (An owner who attested between
        // the first read and the locks has settled their item.)
        let still_pending: std::collections::HashSet<String> = if suspends {
            sqlx::query_scalar(
                "SELECT agent_id FROM recert_items WHERE tenant_id = $1 AND campaign_id = $2 AND status = 'pending'",
            )
            .bind(&ctx.tenant_id)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .into_iter()
            .collect()
        } else {
            Default::default()
        };
        let targets: Vec<Agent> = agents
            .into_iter()
            .filter(|a| still_pending.contains(&a.id) && a.state == AgentState::Active)
            .collect();
        let reason = format!(
            "recertification {} closed without its owner attesting",
            c.name
        );
        let (changed, _) = self
            .apply_transition(
                &mut tx,
                ctx,
                targets,
                Transition::Suspend,
                AgentState::Suspended,
                Some(reason),
            )
            .await?;
        let suspended: Vec<String> = changed.into_iter().map(|a| a.name).collect();
        // Whatever is still pending is overdue, in one statement; then the
        // campaign is closed.
        for close in [
            "UPDATE recert_items SET status = 'overdue', decided_by = 'system', decided_at = $1 \
             WHERE tenant_id = $2 AND campaign_id = $3 AND status = 'pending'",
            "UPDATE recert_campaigns SET status = 'closed', closed_at = $1 WHERE tenant_id = $2 AND id = $3",
        ] {
            sqlx::query(close)
                .bind(rows::ms(ctx.now))
                .bind(&ctx.tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        let after = self.campaign_in(&mut tx, &ctx.tenant_id, id).await?;
        append(
            &mut tx,
            ctx,
            event(
                "recertification.close",
                "recertification",
                id,
                Some(&c),
                Some(&after),
                None,
            ),
        )
        .await?;
        let text = format!(
            "Recertification {} closed: {} kept, {} suspended, {} decommissioned by their owners; {} not attested{}",
            after.name,
            after.counts.kept,
            after.counts.suspended,
            after.counts.decommissioned,
            after.counts.overdue,
            if suspended.is_empty() {
                String::new()
            } else {
                format!(" (suspended: {})", suspended.join(", "))
            }
        );
        self.notify_in(
            &mut tx,
            &ctx.tenant_id,
            "recertification.closed",
            &text,
            serde_json::json!({ "campaign": after, "suspended": suspended }),
            ctx.now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(after))
    }
}
