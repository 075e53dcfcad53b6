//! Agents: registration (with the spawn rules, checked against every agent
//! above the child), changes (a narrowed agent narrows those below it),
//! lifecycle transitions (decommission cascades and revokes credentials)
//! and the expiry sweep.
//!
//! Lock order among agents: above before below (an agent's ancestors root
//! first, then the agent, then its descendants shallowest first), agents
//! before their owners, and all of them before the audit log's head.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use steward_core::lifecycle::{self, Transition};
use steward_core::spawn::{self, Ancestor, ChildRequest, SpawnLimits};
use steward_core::{ChangeContext, Error, InventoryRules, validate};
use steward_types::{
    Agent, AgentFilter, AgentState, ErrorCode, HumanStatus, Page, RegisterAgent, RiskTier,
    TransitionResult, UpdateAgent,
};

use crate::approvals::AccessChange;
use crate::audit::{append, append_all, change, event};
use crate::humans::{check_roles, lock_human};
use crate::rows::{self, Cursor, Param, Select};
use crate::tenants::find_row;
use crate::{Store, Tx, db_error, is_unique_violation};

/// A number of agents sharing a state, a risk tier and whether they are orphaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCount {
    /// Their lifecycle state.
    pub state: AgentState,
    /// Their risk tier.
    pub risk_tier: RiskTier,
    /// Whether their owner has left.
    pub orphaned: bool,
    /// How many.
    pub count: u64,
}

pub(crate) const LIVE_STATES: &str = "('proposed', 'pending_approval', 'active', 'suspended')";

impl Store {
    /// Register an agent. Low risk is active at once; medium and high wait in
    /// `pending_approval`; a draft stays `proposed`.
    pub async fn register_agent(
        &self,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        req: RegisterAgent,
    ) -> Result<Agent, Error> {
        let mut tx = self.begin().await?;
        let out = self.register_agent_in(&mut tx, ctx, rules, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::register_agent`] inside a caller's transaction.
    pub async fn register_agent_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        req: RegisterAgent,
    ) -> Result<Agent, Error> {
        validate::name("name", &req.name)?;
        validate::text("purpose", &req.purpose)?;
        validate::text("platform", &req.platform)?;
        validate::text("model", &req.model)?;
        validate_labels(&req.labels)?;
        check_future("expires_at", req.expires_at, ctx.now)?;
        // Kept to the millisecond, as stored: what is returned and audited is
        // what a later read gives back.
        let expires_at = req.expires_at.map(|t| rows::time(rows::ms(t)));
        let lock = self.backend.for_update();
        // The parent and every agent above it, each bounding the child:
        // locked root first (the order a narrowing or a decommission takes
        // agents in), and before the owner (agents before their owners).
        let above = match &req.parent {
            Some(key) => {
                let row = find_row(&mut **tx, "agents", "name", &ctx.tenant_id, key, "")
                    .await?
                    .ok_or_else(|| Error::unknown_reference("parent", "agent", key))?;
                let parent = rows::agent(&row)?;
                let mut above = chain(tx, lock, &ctx.tenant_id, &parent.id).await?;
                above.reverse();
                if above.first().is_none_or(|p| p.id != parent.id) {
                    return Err(Error::internal(format!(
                        "agent '{}' is not found above itself",
                        parent.name
                    )));
                }
                above
            }
            None => Vec::new(),
        };
        let owner = active_owner(tx, lock, &ctx.tenant_id, &req.owner).await?;
        let team_id = match &req.team {
            Some(t) => Some(resolve(tx, "teams", "name", &ctx.tenant_id, "team", "team", t).await?),
            None => None,
        };
        let persona = match &req.persona {
            Some(p) => {
                let row = find_row(&mut **tx, "personas", "name", &ctx.tenant_id, p, "")
                    .await?
                    .ok_or_else(|| Error::unknown_reference("persona", "persona", p))?;
                Some(rows::persona(&row)?)
            }
            None => None,
        };
        let roles = req
            .roles
            .or_else(|| persona.as_ref().map(|p| p.roles.clone()))
            .unwrap_or_default();
        let classifications = req
            .classifications
            .or_else(|| persona.as_ref().map(|p| p.classifications.clone()))
            .unwrap_or_default();
        validate::name_list("roles", &roles)?;
        validate::name_list("classifications", &classifications)?;
        check_roles(tx, &ctx.tenant_id, "roles", &roles).await?;
        rules
            .classifications
            .validate("classifications", &classifications)?;

        let (parent_id, depth) = match above.first() {
            Some(parent) => {
                let mut limits = Vec::with_capacity(above.len());
                for a in &above {
                    limits.push(spawn_limits(tx, rules, a).await?);
                }
                let links: Vec<Ancestor<'_>> = above
                    .iter()
                    .zip(limits)
                    .map(|(agent, limits)| Ancestor { agent, limits })
                    .collect();
                let live: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM agents WHERE parent_id = $1 AND state IN {LIVE_STATES}"
                ))
                .bind(&parent.id)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?;
                let child = ChildRequest {
                    roles: &roles,
                    classifications: &classifications,
                    expires_at,
                };
                let depth = spawn::check_spawn(&links, u64::try_from(live).unwrap_or(0), child)?;
                self.check_child_quotas(tx, &ctx.tenant_id, parent).await?;
                (Some(parent.id.clone()), depth)
            }
            None => (None, 0),
        };

        let writes = roles_write(tx, &ctx.tenant_id, &roles).await?;
        let risk_tier = rules.classifications.risk_tier(&classifications, writes);
        let approval_tier = persona
            .as_ref()
            .and_then(|p| p.approval_tier)
            .map_or(risk_tier, |t| t.max(risk_tier));
        // The tier's approval chain decides: none means active at once.
        let state = if req.draft {
            AgentState::Proposed
        } else if rules.approval_chains.for_tier(approval_tier).is_empty() {
            AgentState::Active
        } else {
            AgentState::PendingApproval
        };
        let agent = Agent {
            id: rows::new_id("agt"),
            name: req.name,
            owner_id: owner,
            team_id,
            purpose: req.purpose,
            platform: req.platform,
            model: req.model,
            persona_id: persona.map(|p| p.id),
            roles,
            classifications,
            labels: req.labels,
            parent_id,
            depth,
            expires_at,
            state,
            state_reason: None,
            risk_tier,
            orphaned: false,
            created_at: ctx.now,
            updated_at: ctx.now,
            last_seen_at: None,
        };
        sqlx::query(
            "INSERT INTO agents (id, tenant_id, name, owner_id, team_id, purpose, platform, model, persona_id, \
             roles, classifications, labels, parent_id, depth, expires_at, state, state_reason, risk_tier, \
             orphaned, created_at, updated_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, NULL, $17, 0, $18, $18, NULL)",
        )
        .bind(&agent.id)
        .bind(&ctx.tenant_id)
        .bind(&agent.name)
        .bind(&agent.owner_id)
        .bind(&agent.team_id)
        .bind(&agent.purpose)
        .bind(&agent.platform)
        .bind(&agent.model)
        .bind(&agent.persona_id)
        .bind(rows::to_json(&agent.roles))
        .bind(rows::to_json(&agent.classifications))
        .bind(rows::to_json(&agent.labels))
        .bind(&agent.parent_id)
        .bind(i64::from(agent.depth))
        .bind(rows::opt_ms(agent.expires_at))
        .bind(agent.state.as_str())
        .bind(agent.risk_tier.as_str())
        .bind(rows::ms(ctx.now))
        .execute(&mut **tx)
        .await
        .map_err(|e| if is_unique_violation(&e) { Error::already_exists("agent", &agent.name) } else { db_error(e) })?;
        append(
            tx,
            ctx,
            event(
                "agent.register",
                "agent",
                &agent.id,
                None,
                Some(&agent),
                None,
            ),
        )
        .await?;
        Ok(agent)
    }

    /// An agent by id or name.
    pub async fn get_agent(&self, tenant_id: &str, key: &str) -> Result<Agent, Error> {
        match find_row(&self.read, "agents", "name", tenant_id, key, "").await? {
            Some(row) => Ok(self.seen(rows::agent(&row)?)),
            None => Err(Error::not_found("agent", key)),
        }
    }

    /// An agent by id, in any tenant (authentication resolves keys to agents).
    pub async fn get_agent_by_id(&self, id: &str) -> Result<Option<(String, Agent)>, Error> {
        let row = sqlx::query("SELECT * FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => {
                let tenant: String = sqlx::Row::try_get(&row, "tenant_id").map_err(db_error)?;
                Ok(Some((tenant, rows::agent(&row)?)))
            }
            None => Ok(None),
        }
    }

    /// How many of the tenant's agents are in each state, risk tier and
    /// orphaned or not: one row per combination that has any.
    pub async fn agent_counts(&self, tenant_id: &str) -> Result<Vec<AgentCount>, Error> {
        let rows = sqlx::query(
            "SELECT state, risk_tier, orphaned, COUNT(*) AS n FROM agents \
             WHERE tenant_id = $1 GROUP BY state, risk_tier, orphaned",
        )
        .bind(tenant_id)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let state: String = rows::get(row, "state")?;
                let orphaned: i64 = rows::get(row, "orphaned")?;
                let n: i64 = rows::get(row, "n")?;
                Ok(AgentCount {
                    state: AgentState::parse(&state)
                        .ok_or_else(|| Error::internal(format!("corrupt agent state '{state}'")))?,
                    risk_tier: rows::parse_tier(&rows::get::<String>(row, "risk_tier")?)?,
                    orphaned: orphaned != 0,
                    count: u64::try_from(n).unwrap_or(0),
                })
            })
            .collect()
    }

    /// The tenant's agents, filtered.
    pub async fn list_agents(
        &self,
        tenant_id: &str,
        filter: AgentFilter,
    ) -> Result<Page<Agent>, Error> {
        let cursor = Cursor::text(filter.cursor, filter.limit)?;
        let mut q = Select::tenant_rows("agents", tenant_id);
        if let Some(owner) = filter.owner {
            q = q.and(
                "owner_id IN (SELECT id FROM humans WHERE id = ? OR email = ?)",
                Param::Text(owner.to_lowercase()),
            );
        }
        if let Some(team) = filter.team {
            q = q.and(
                "team_id IN (SELECT id FROM teams WHERE id = ? OR name = ?)",
                Param::Text(team),
            );
        }
        if let Some(persona) = filter.persona {
            q = q.and(
                "persona_id IN (SELECT id FROM personas WHERE id = ? OR name = ?)",
                Param::Text(persona),
            );
        }
        if let Some(state) = filter.state {
            let state = AgentState::parse(&state).ok_or_else(|| {
                let all: Vec<&str> = AgentState::ALL.iter().map(|s| s.as_str()).collect();
                Error::new(
                    ErrorCode::InvalidQuery,
                    format!("state: '{state}' is not one of {}", all.join(", ")),
                )
            })?;
            q = q.and("state = ?", Param::Text(state.as_str().into()));
        }
        if let Some(tier) = filter.risk_tier {
            rows::parse_tier(&tier).map_err(|_| {
                Error::new(
                    ErrorCode::InvalidQuery,
                    format!("risk_tier: '{tier}' is not low, medium or high"),
                )
            })?;
            q = q.and("risk_tier = ?", Param::Text(tier));
        }
        if let Some(parent) = filter.parent {
            q = q.and(
                "parent_id IN (SELECT id FROM agents WHERE id = ? OR name = ?)",
                Param::Text(parent),
            );
        }
        if let Some(orphaned) = filter.orphaned {
            q = q.and("orphaned = ?", Param::Int(i64::from(orphaned)));
        }
        let mut page = q
            .page(&self.read, "id", &cursor, rows::agent, |a| a.id.clone())
            .await?;
        page.items = page.items.into_iter().map(|a| self.seen(a)).collect();
        Ok(page)
    }

    /// An agent as last seen: a use of its keys noted on this node and not
    /// yet written counts (see [`crate::key_uses`]).
    fn seen(&self, mut agent: Agent) -> Agent {
        agent.last_seen_at =
            crate::key_uses::latest(agent.last_seen_at, self.key_uses.agent(&agent.id));
        agent
    }

    /// Change an agent's descriptive fields, owner or expiry.
    pub async fn update_agent(
        &self,
        ctx: &ChangeContext,
        key: &str,
        req: UpdateAgent,
    ) -> Result<Agent, Error> {
        let mut tx = self.begin().await?;
        let out = self.update_agent_in(&mut tx, ctx, key, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::update_agent`] inside a caller's transaction.
    pub async fn update_agent_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        key: &str,
        req: UpdateAgent,
    ) -> Result<Agent, Error> {
        for (field, value) in [
            ("purpose", &req.purpose),
            ("platform", &req.platform),
            ("model", &req.model),
        ] {
            if let Some(v) = value {
                validate::text(field, v)?;
            }
        }
        if let Some(labels) = &req.labels {
            validate_labels(labels)?;
        }
        check_future("expires_at", req.expires_at, ctx.now)?;
        let expires_at = req.expires_at.map(|t| rows::time(rows::ms(t)));
        let lock = self.backend.for_update();
        // A new expiry is bounded by every agent above: they are locked
        // too, root first and then the agent, as spawning locks them.
        let (before, above) = if expires_at.is_some() {
            let found = lock_agent(tx, "", &ctx.tenant_id, key).await?;
            let mut above = chain(tx, lock, &ctx.tenant_id, &found.id).await?;
            let before = above
                .pop()
                .filter(|a| a.id == found.id)
                .ok_or_else(|| Error::not_found("agent", key))?;
            above.reverse();
            (before, above)
        } else {
            (lock_agent(tx, lock, &ctx.tenant_id, key).await?, Vec::new())
        };
        if before.state.is_terminal() {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!(
                    "agent '{}' is {}; it can no longer be changed",
                    before.name,
                    before.state.as_str()
                ),
            ));
        }
        let mut after = before.clone();
        if let Some(owner) = &req.owner {
            after.owner_id = active_owner(tx, lock, &ctx.tenant_id, owner).await?;
            after.orphaned = false;
        }
        if let Some(team) = &req.team {
            after.team_id =
                Some(resolve(tx, "teams", "name", &ctx.tenant_id, "team", "team", team).await?);
        }
        if let Some(expires_at) = expires_at {
            let above: Vec<&Agent> = above.iter().collect();
            spawn::check_expiry_within(&above, Some(expires_at))?;
            // Nor may a parent come to expire before an agent below it,
            // which would outlive it (an expiry does not cascade).
            let below = descendants(tx, "", &ctx.tenant_id, &before.id).await?;
            if let Some(outliving) = below
                .iter()
                .find(|d| !d.state.is_terminal() && d.expires_at.is_none_or(|e| e > expires_at))
            {
                return Err(Error::new(
                    ErrorCode::ExceedsParent,
                    format!(
                        "expires_at: '{}' below this agent would outlive it; give it an earlier expiry first, or decommission it",
                        outliving.name
                    ),
                ));
            }
            after.expires_at = Some(expires_at);
        }
        after.purpose = req.purpose.unwrap_or(after.purpose);
        after.platform = req.platform.unwrap_or(after.platform);
        after.model = req.model.unwrap_or(after.model);
        after.labels = req.labels.unwrap_or(after.labels);
        after.updated_at = ctx.now;
        sqlx::query(
            "UPDATE agents SET owner_id = $1, team_id = $2, purpose = $3, platform = $4, model = $5, labels = $6, \
             expires_at = $7, orphaned = $8, updated_at = $9 WHERE id = $10",
        )
        .bind(&after.owner_id)
        .bind(&after.team_id)
        .bind(&after.purpose)
        .bind(&after.platform)
        .bind(&after.model)
        .bind(rows::to_json(&after.labels))
        .bind(rows::opt_ms(after.expires_at))
        .bind(i64::from(after.orphaned))
        .bind(rows::ms(ctx.now))
        .bind(&after.id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        append(
            tx,
            ctx,
            change("agent.update", "agent", &after.id, &before, &after),
        )
        .await?;
        Ok(after)
    }

    /// Move an agent through its lifecycle. Decommission cascades to every
    /// descendant and revokes all their keys, in one transaction.
    pub async fn transition_agent(
        &self,
        ctx: &ChangeContext,
        key: &str,
        transition: Transition,
        reason: Option<String>,
    ) -> Result<TransitionResult, Error> {
        let mut tx = self.begin().await?;
        let out = self
            .transition_agent_in(&mut tx, ctx, key, transition, reason)
            .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::transition_agent`] inside a caller's transaction.
    pub async fn transition_agent_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        key: &str,
        transition: Transition,
        reason: Option<String>,
    ) -> Result<TransitionResult, Error> {
        if let Some(r) = &reason {
            validate::text("reason", r)?;
        }
        let lock = self.backend.for_update();
        let agent = lock_agent(tx, lock, &ctx.tenant_id, key).await?;
        let to = lifecycle::next_state(agent.state, transition)?;
        if to == AgentState::Active {
            check_may_become_active(tx, &ctx.tenant_id, &agent, ctx.now).await?;
        }
        let mut targets = vec![agent];
        if transition == Transition::Decommission {
            targets.extend(descendants(tx, lock, &ctx.tenant_id, &targets[0].id).await?);
        }
        // The delegations of every agent leaving for good end with it, all
        // before the first audit append (delegation rows are locked before
        // the audit head).
        if to.is_terminal() {
            for t in targets.iter().filter(|t| !t.state.is_terminal()) {
                crate::delegation::end_delegations(tx, ctx, "agent_id", &t.id).await?;
            }
        }
        let (changed, keys_revoked) = self
            .apply_transition(tx, ctx, targets, transition, to, reason)
            .await?;
        let mut changed = changed.into_iter();
        let agent = changed
            .next()
            .ok_or_else(|| Error::internal("transition changed nothing"))?;
        Ok(TransitionResult {
            agent,
            cascaded: changed.map(|a| a.id).collect(),
            keys_revoked,
        })
    }

    /// Move `targets` (locked by the caller, in that order) that are not
    /// yet terminal to `to` by `transition`: each row updated, a
    /// decommissioned agent's keys revoked, one record per agent appended
    /// together, then what each agent leaving for good had pending
    /// cancelled. Returns the agents as they are now and the keys revoked.
    pub(crate) async fn apply_transition(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        targets: Vec<Agent>,
        transition: Transition,
        to: AgentState,
        reason: Option<String>,
    ) -> Result<(Vec<Agent>, u64), Error> {
        let mut changed = Vec::new();
        let mut records = Vec::new();
        let mut keys_revoked = 0;
        let action = format!("agent.{}", transition.as_str());
        for before in targets {
            if before.state.is_terminal() {
                continue;
            }
            let mut after = before.clone();
            after.state = to;
            after.state_reason = reason.clone();
            after.updated_at = ctx.now;
            records.push(event(
                &action,
                "agent",
                &after.id,
                Some(&before),
                Some(&after),
                reason.as_deref(),
            ));
            changed.push(after);
        }
        // The rows in statements of up to 500 agents; one record per agent,
        // appended together; then what each one leaving for good had
        // pending is cancelled, with its own records.
        for some in changed.chunks(500) {
            let sql = format!(
                "UPDATE agents SET state = $1, state_reason = $2, updated_at = $3 WHERE id IN ({})",
                rows::marks(4, some.len())
            );
            let mut q = sqlx::query(&sql)
                .bind(to.as_str())
                .bind(&reason)
                .bind(rows::ms(ctx.now));
            for a in some {
                q = q.bind(&a.id);
            }
            q.execute(&mut **tx).await.map_err(db_error)?;
            if to == AgentState::Decommissioned {
                let sql = format!(
                    "UPDATE agent_keys SET revoked_at = $1 WHERE revoked_at IS NULL AND agent_id IN ({})",
                    rows::marks(2, some.len())
                );
                let mut q = sqlx::query(&sql).bind(rows::ms(ctx.now));
                for a in some {
                    q = q.bind(&a.id);
                }
                keys_revoked += q
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
            }
        }
        crate::audit::append_all(tx, ctx, records).await?;
        if to.is_terminal() {
            for after in &changed {
                let why = format!("agent '{}' is {}", after.name, to.as_str());
                self.cancel_agent_approvals_in(tx, ctx, &after.id, &why)
                    .await?;
            }
        }
        Ok((changed, keys_revoked))
    }

    /// Agents whose expiry time has passed but which are not yet terminal,
    /// as (tenant, agent id), at most `limit` of them (a sweep does not
    /// hold up the other background work; an expired key is refused at
    /// authentication whether or not a sweep has reached its agent).
    pub async fn agents_due_to_expire(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(String, String)>, Error> {
        // The condition matches the partial index `agents_expiry_live`.
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT tenant_id, id FROM agents WHERE expires_at IS NOT NULL AND expires_at <= $1 \
             AND state IN {LIVE_STATES} ORDER BY id LIMIT $2"
        ))
        .bind(rows::ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        Ok(rows)
    }
}

impl Store {
    /// `PATCH /v1/agents/{id}`: descriptive fields change at once (see
    /// [`Store::update_agent_in`]); new roles or classifications go through
    /// [`Store::change_agent_access_in`] and must be held by every agent
    /// above this one, not only its parent. When the change takes a role or
    /// classification away, every live agent below loses it too
    /// ([`Store::narrow_below_in`]), in the same transaction. Widening
    /// never cascades.
    pub async fn change_agent(
        &self,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        key: &str,
        mut req: UpdateAgent,
    ) -> Result<AccessChange, Error> {
        let roles = req.roles.take();
        let classifications = req.classifications.take();
        let descriptive = req.owner.is_some()
            || req.team.is_some()
            || req.purpose.is_some()
            || req.platform.is_some()
            || req.model.is_some()
            || req.labels.is_some()
            || req.expires_at.is_some();
        let mut tx = self.begin().await?;
        if roles.is_none() && classifications.is_none() {
            let agent = self.update_agent_in(&mut tx, ctx, key, req).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(AccessChange {
                agent,
                approval: None,
            });
        }
        // The whole lineage, above before below, before anything is
        // audited: a narrowing changes the agents below after this one's
        // record, and a change holding the audit log's head must not then
        // wait for an agent another change holds while it waits for the head.
        let lock = self.backend.for_update();
        let found = lock_agent(&mut tx, "", &ctx.tenant_id, key).await?;
        let mut lineage = chain(&mut tx, lock, &ctx.tenant_id, &found.id).await?;
        let before = lineage
            .pop()
            .filter(|a| a.id == found.id)
            .ok_or_else(|| Error::not_found("agent", key))?;
        descendants(&mut tx, lock, &ctx.tenant_id, &before.id).await?;
        if descriptive {
            self.update_agent_in(&mut tx, ctx, &before.id, req).await?;
        }
        let wanted = (
            roles.clone().unwrap_or_else(|| before.roles.clone()),
            classifications
                .clone()
                .unwrap_or_else(|| before.classifications.clone()),
        );
        let change = self
            .change_agent_access_in(&mut tx, ctx, rules, &before.id, roles, classifications)
            .await?;
        // Checked after the store's own checks (a misspelt role is an
        // unknown one first); nothing is committed if this refuses.
        check_grants_along_chain(&mut tx, &ctx.tenant_id, &before, &wanted.0, &wanted.1).await?;
        if change.approval.is_none() && lost_any(&before, &change.agent) {
            self.narrow_below_in(&mut tx, ctx, rules, &change.agent)
                .await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(change)
    }

    /// Lock every agent below `agent_id`, shallowest first (on PostgreSQL;
    /// SQLite has one writer). A change that may narrow an agent takes these
    /// locks before it appends to the audit log, then calls
    /// [`Store::narrow_below_in`] once the agent is written.
    pub async fn lock_below_in(
        &self,
        tx: &mut Tx,
        tenant_id: &str,
        agent_id: &str,
    ) -> Result<(), Error> {
        let lock = self.backend.for_update();
        if lock.is_empty() {
            return Ok(());
        }
        descendants(tx, lock, tenant_id, agent_id).await.map(drop)
    }

    /// After `agent` (as now written) lost roles or classifications: every
    /// live agent below it loses those it holds that `agent`, an agent
    /// above `agent`, or an agent between them does not hold, and has its
    /// risk tier derived again. One record per agent changed, by the same
    /// actor, whose reason names `agent`. Returns the agents changed.
    /// Nothing is ever added: widening does not cascade.
    pub async fn narrow_below_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        agent: &Agent,
    ) -> Result<Vec<Agent>, Error> {
        let lock = self.backend.for_update();
        let below = descendants(tx, lock, &ctx.tenant_id, &agent.id).await?;
        if below.is_empty() {
            return Ok(Vec::new());
        }
        let mut above = chain(tx, "", &ctx.tenant_id, &agent.id).await?;
        above.retain(|a| a.id != agent.id);
        let mut changed = Vec::new();
        let mut records = Vec::new();
        for narrowed in spawn::narrow_below(agent, &above, &below) {
            let Some(before) = below.get(narrowed.index) else {
                continue;
            };
            let after = write_access_in(
                tx,
                ctx,
                rules,
                before,
                narrowed.roles,
                narrowed.classifications,
            )
            .await?;
            let mut lost = Vec::new();
            if !narrowed.lost_roles.is_empty() {
                lost.push(format!("roles {}", narrowed.lost_roles.join(", ")));
            }
            if !narrowed.lost_classifications.is_empty() {
                lost.push(format!(
                    "classifications {}",
                    narrowed.lost_classifications.join(", ")
                ));
            }
            let reason = format!(
                "narrowed with agent '{}' above it: {} no longer held along its chain",
                agent.name,
                lost.join("; ")
            );
            records.push(event(
                "agent.update",
                "agent",
                &after.id,
                Some(before),
                Some(&after),
                Some(&reason),
            ));
            changed.push(after);
        }
        append_all(tx, ctx, records).await?;
        Ok(changed)
    }

    /// Lock, before anything is audited, the agents a batch of changes (an
    /// apply) will change, spawn under or activate, with every agent above
    /// them, then the humans it will change or make owners: in the order
    /// single changes take them (above before below, agents before their
    /// owners). A PATCH holding an agent waits for the audit log's head;
    /// a batch that held the head and then waited for that agent would
    /// deadlock with it. Names that match nothing (yet) are passed over.
    /// Nothing to do on SQLite, whose writer is one.
    pub async fn lock_for_changes_in(
        &self,
        tx: &mut Tx,
        tenant_id: &str,
        agents: &[String],
        humans: &[String],
    ) -> Result<(), Error> {
        let lock = self.backend.for_update();
        if lock.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::new();
        for key in agents {
            if let Some(row) = find_row(&mut **tx, "agents", "name", tenant_id, key, "").await? {
                ids.push(rows::get::<String>(&row, "id")?);
            }
        }
        ids.sort();
        ids.dedup();
        // Every agent above them too, then all of them locked root first
        // (by depth, then id: the order of every other lock on agents).
        let mut lineage: Vec<(i64, String)> = Vec::new();
        for some in ids.chunks(500) {
            let sql = format!(
                "WITH RECURSIVE up(id, parent_id) AS (\
                 SELECT id, parent_id FROM agents WHERE tenant_id = $1 AND id IN ({}) \
                 UNION \
                 SELECT a.id, a.parent_id FROM up JOIN agents a ON a.id = up.parent_id) \
                 SELECT depth, id FROM agents WHERE id IN (SELECT id FROM up)",
                rows::marks(2, some.len())
            );
            let mut q = sqlx::query_as(&sql).bind(tenant_id);
            for id in some {
                q = q.bind(id);
            }
            let found: Vec<(i64, String)> = q.fetch_all(&mut **tx).await.map_err(db_error)?;
            lineage.extend(found);
        }
        lineage.sort();
        lineage.dedup();
        for some in lineage.chunks(500) {
            let sql = format!(
                "SELECT id FROM agents WHERE id IN ({}) ORDER BY depth, id{lock}",
                rows::marks(1, some.len())
            );
            let mut q = sqlx::query(&sql);
            for (_, id) in some {
                q = q.bind(id);
            }
            q.fetch_all(&mut **tx).await.map_err(db_error)?;
        }
        let mut people = Vec::new();
        for key in humans {
            match lock_human(tx, "", tenant_id, key).await {
                Ok(h) => people.push(h.id),
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        people.sort();
        people.dedup();
        for some in people.chunks(500) {
            let sql = format!(
                "SELECT id FROM humans WHERE id IN ({}) ORDER BY id{lock}",
                rows::marks(1, some.len())
            );
            let mut q = sqlx::query(&sql);
            for id in some {
                q = q.bind(id);
            }
            q.fetch_all(&mut **tx).await.map_err(db_error)?;
        }
        Ok(())
    }
}

/// Refuse `roles` or `classifications` for `agent` that its parent, or any
/// agent above it, does not hold (read, not locked: a change locks what it
/// needs before it calls this).
pub(crate) async fn check_grants_along_chain(
    tx: &mut crate::Tx,
    tenant_id: &str,
    agent: &Agent,
    roles: &[String],
    classifications: &[String],
) -> Result<(), Error> {
    if agent.parent_id.is_none() {
        return Ok(());
    }
    let mut above = chain(tx, "", tenant_id, &agent.id).await?;
    above.retain(|a| a.id != agent.id);
    let nearest_first: Vec<&Agent> = above.iter().rev().collect();
    spawn::check_grants_within(&nearest_first, roles, classifications)
}

/// Give `agent` these roles and classifications, with the risk tier they
/// make, in its row; the agent as it now is (its record is the caller's).
pub(crate) async fn write_access_in(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    rules: &InventoryRules,
    agent: &Agent,
    roles: Vec<String>,
    classifications: Vec<String>,
) -> Result<Agent, Error> {
    let writes = roles_write(tx, &ctx.tenant_id, &roles).await?;
    let mut after = agent.clone();
    after.risk_tier = rules.classifications.risk_tier(&classifications, writes);
    after.roles = roles;
    after.classifications = classifications;
    after.updated_at = ctx.now;
    sqlx::query(
        "UPDATE agents SET roles = $1, classifications = $2, risk_tier = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(rows::to_json(&after.roles))
    .bind(rows::to_json(&after.classifications))
    .bind(after.risk_tier.as_str())
    .bind(rows::ms(ctx.now))
    .bind(&after.id)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(after)
}

/// Whether `after` holds less than `before`: a role or a classification gone.
pub(crate) fn lost_any(before: &Agent, after: &Agent) -> bool {
    before.roles.iter().any(|r| !after.roles.contains(r))
        || before
            .classifications
            .iter()
            .any(|c| !after.classifications.contains(c))
}

/// Lock and read an agent inside a write transaction.
pub(crate) async fn lock_agent(
    tx: &mut crate::Tx,
    lock: &str,
    tenant_id: &str,
    key: &str,
) -> Result<Agent, Error> {
    let row = find_row(&mut **tx, "agents", "name", tenant_id, key, lock)
        .await?
        .ok_or_else(|| Error::not_found("agent", key))?;
    rows::agent(&row)
}

/// The id of the owner named by id or e-mail, who must exist and be active.
async fn active_owner(
    tx: &mut crate::Tx,
    lock: &str,
    tenant_id: &str,
    key: &str,
) -> Result<String, Error> {
    let owner = lock_human(tx, lock, tenant_id, key).await.map_err(|e| {
        if e.code == ErrorCode::NotFound {
            Error::unknown_reference("owner", "human", key)
        } else {
            e
        }
    })?;
    if owner.status != HumanStatus::Active {
        return Err(Error::new(
            ErrorCode::OwnerInactive,
            format!(
                "owner: '{}' is deactivated; choose an active human as the agent's owner",
                owner.email
            ),
        )
        .with_details(serde_json::json!({ "field": "owner", "human": owner.id })));
    }
    Ok(owner.id)
}

/// The id of the row named by id or name, or `unknown_reference`.
async fn resolve(
    tx: &mut crate::Tx,
    table: &str,
    name_col: &str,
    tenant_id: &str,
    field: &str,
    kind: &str,
    key: &str,
) -> Result<String, Error> {
    let row = find_row(&mut **tx, table, name_col, tenant_id, key, "")
        .await?
        .ok_or_else(|| Error::unknown_reference(field, kind, key))?;
    sqlx::Row::try_get(&row, "id").map_err(db_error)
}

pub(crate) async fn roles_write(
    tx: &mut crate::Tx,
    tenant_id: &str,
    roles: &[String],
) -> Result<bool, Error> {
    for role in roles {
        let writes: Option<i64> =
            sqlx::query_scalar("SELECT writes FROM roles WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(role)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db_error)?;
        if writes.unwrap_or(0) != 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn spawn_limits(
    tx: &mut crate::Tx,
    rules: &InventoryRules,
    parent: &Agent,
) -> Result<SpawnLimits, Error> {
    let Some(persona_id) = &parent.persona_id else {
        return Ok(rules.default_limits);
    };
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT max_children, max_depth FROM personas WHERE id = $1")
            .bind(persona_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
    Ok(match row {
        Some((c, d)) => SpawnLimits {
            max_children: u32::try_from(c).unwrap_or(0),
            max_depth: u32::try_from(d).unwrap_or(0),
        },
        None => rules.default_limits,
    })
}

/// The tier registration approval follows: the derived tier, raised to the
/// persona's approval tier when that is stricter.
pub(crate) async fn effective_tier(tx: &mut crate::Tx, agent: &Agent) -> Result<RiskTier, Error> {
    let Some(persona_id) = &agent.persona_id else {
        return Ok(agent.risk_tier);
    };
    let tier: Option<Option<String>> =
        sqlx::query_scalar("SELECT approval_tier FROM personas WHERE id = $1")
            .bind(persona_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
    match tier.flatten() {
        Some(t) => Ok(rows::parse_tier(&t)?.max(agent.risk_tier)),
        None => Ok(agent.risk_tier),
    }
}

/// An agent may become active only with an active owner, before its expiry,
/// and (for a child) while its parent is active.
async fn check_may_become_active(
    tx: &mut crate::Tx,
    tenant_id: &str,
    agent: &Agent,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if agent.orphaned {
        return Err(Error::new(
            ErrorCode::OwnerInactive,
            format!(
                "agent '{}' is orphaned: assign an active owner (PATCH owner) before it can act again",
                agent.name
            ),
        ));
    }
    if agent.expires_at.is_some_and(|e| e <= now) {
        return Err(Error::new(
            ErrorCode::InvalidTransition,
            format!(
                "agent '{}' passed its expiry time; it cannot become active",
                agent.name
            ),
        ));
    }
    if agent.parent_id.is_some() {
        // Every agent above it, nearest first.
        let above = chain(tx, "", tenant_id, &agent.id).await?;
        let stopped = above
            .iter()
            .rev()
            .filter(|a| a.id != agent.id)
            .find(|a| a.state != AgentState::Active);
        if let Some(stopped) = stopped {
            let message = if agent.parent_id.as_deref() == Some(stopped.id.as_str()) {
                format!(
                    "parent agent '{}' is {}; a child can only be active under an active parent",
                    stopped.name,
                    stopped.state.as_str()
                )
            } else {
                format!(
                    "agent '{}' above it is {}; an agent can only be active while every agent above it is",
                    stopped.name,
                    stopped.state.as_str()
                )
            };
            return Err(
                Error::new(ErrorCode::ParentNotActive, message).with_details(
                    serde_json::json!({ "agent": stopped.id, "state": stopped.state.as_str() }),
                ),
            );
        }
    }
    Ok(())
}

/// Every descendant of an agent (`$2`, in tenant `$1`), shallowest first,
/// then by id: one recursive query. Only the first step names the tenant: a
/// child is always in its parent's tenant, and a tenant condition in the
/// recursive step let SQLite 3.46 walk the tenant's whole `agents_owner`
/// index once per level instead of the children's `agents_parent_state`
/// entries (3.5 s for a tree of 1 111 among 10 000 agents). The plan is
/// held by `growing_tables_are_read_through_indexes_on_sqlite`.
pub const DESCENDANTS: &str = "WITH RECURSIVE tree(id) AS (\
     SELECT id FROM agents WHERE tenant_id = $1 AND parent_id = $2 \
     UNION ALL \
     SELECT a.id FROM tree JOIN agents a ON a.parent_id = tree.id) \
     SELECT * FROM agents WHERE id IN (SELECT id FROM tree) ORDER BY depth, id";

/// [`DESCENDANTS`] of `root`, locked on PostgreSQL.
async fn descendants(
    tx: &mut crate::Tx,
    lock: &str,
    tenant_id: &str,
    root: &str,
) -> Result<Vec<Agent>, Error> {
    let rows = sqlx::query(&format!("{DESCENDANTS}{lock}"))
        .bind(tenant_id)
        .bind(root)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    rows.iter().map(rows::agent).collect()
}

/// An agent (`$2`, in tenant `$1`) and every agent above it, root first
/// (the agent itself last). `UNION` rather than `UNION ALL`: a loop in
/// corrupt data ends the walk instead of running forever.
const CHAIN: &str = "WITH RECURSIVE up(id, parent_id) AS (\
     SELECT id, parent_id FROM agents WHERE tenant_id = $1 AND id = $2 \
     UNION \
     SELECT a.id, a.parent_id FROM up JOIN agents a ON a.id = up.parent_id) \
     SELECT * FROM agents WHERE id IN (SELECT id FROM up) ORDER BY depth, id";

/// [`CHAIN`] of `id`, locked on PostgreSQL root first.
async fn chain(
    tx: &mut crate::Tx,
    lock: &str,
    tenant_id: &str,
    id: &str,
) -> Result<Vec<Agent>, Error> {
    let rows = sqlx::query(&format!("{CHAIN}{lock}"))
        .bind(tenant_id)
        .bind(id)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    rows.iter().map(rows::agent).collect()
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), Error> {
    if labels.len() > 64 {
        return Err(Error::invalid("labels", "at most 64 labels"));
    }
    for (k, v) in labels {
        validate::name("labels", k)?;
        if v.len() > 256 {
            return Err(Error::invalid(
                "labels",
                format!("the value of '{k}' is longer than 256 bytes"),
            ));
        }
    }
    Ok(())
}

fn check_future(field: &str, t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<(), Error> {
    match t {
        Some(t) if t <= now => Err(Error::invalid(field, format!("{t} is not in the future"))),
        _ => Ok(()),
    }
}

/// An agent with the names its policies refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentContext {
    /// The agent.
    pub agent: Agent,
    /// Its persona's name.
    pub persona: Option<String>,
    /// Its team's name.
    pub team: Option<String>,
    /// Its owner's e-mail.
    pub owner_email: String,
}

impl Store {
    /// An agent by id or name with its persona, team and owner names, in one
    /// query (the decision path reads one of these per identity in a chain).
    pub async fn agent_context(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<AgentContext>, Error> {
        if let Some(hit) = self.identities.agent(tenant_id, key) {
            return Ok(Some(hit));
        }
        let seen = self.identities.before_read();
        let row = sqlx::query(
            "SELECT a.*, p.name AS persona_name, t.name AS team_name, h.email AS owner_email \
             FROM agents a LEFT JOIN personas p ON p.id = a.persona_id LEFT JOIN teams t ON t.id = a.team_id \
             JOIN humans h ON h.id = a.owner_id WHERE a.tenant_id = $1 AND (a.id = $2 OR a.name = $2) \
             ORDER BY CASE WHEN a.id = $2 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(&self.read)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(AgentContext {
                agent: rows::agent(&row)?,
                persona: sqlx::Row::try_get(&row, "persona_name").map_err(db_error)?,
                team: sqlx::Row::try_get(&row, "team_name").map_err(db_error)?,
                owner_email: sqlx::Row::try_get(&row, "owner_email").map_err(db_error)?,
            })
        })
        .transpose()
        .inspect(|found| {
            if let (Some(seen), Some(ctx)) = (seen, found) {
                self.identities.put_agent(tenant_id, key, seen, ctx);
            }
        })
    }

    /// A human by id, e-mail or external id, with the names of their teams.
    pub async fn human_context(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<(steward_types::Human, Vec<String>)>, Error> {
        if let Some(hit) = self.identities.human(tenant_id, key) {
            return Ok(Some(hit));
        }
        let seen = self.identities.before_read();
        let human = match self.get_human(tenant_id, key).await {
            Ok(h) => h,
            Err(e) if e.code == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let teams: Vec<String> = sqlx::query_scalar(
            "SELECT t.name FROM team_members m JOIN teams t ON t.id = m.team_id WHERE m.human_id = $1 ORDER BY t.name",
        )
        .bind(&human.id)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        let found = (human, teams);
        if let Some(seen) = seen {
            self.identities.put_human(tenant_id, key, seen, &found);
        }
        Ok(Some(found))
    }

    /// Names of the tenant's roles, and its personas with their roles (for
    /// remediation hints).
    pub async fn role_and_persona_names(
        &self,
        tenant_id: &str,
    ) -> Result<(Vec<String>, Vec<(String, Vec<String>)>), Error> {
        let roles = sqlx::query_scalar("SELECT name FROM roles WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant_id)
            .fetch_all(&self.read)
            .await
            .map_err(db_error)?;
        let personas: Vec<(String, String)> =
            sqlx::query_as("SELECT name, roles FROM personas WHERE tenant_id = $1 ORDER BY name")
                .bind(tenant_id)
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
        let personas = personas
            .into_iter()
            .map(|(name, roles)| (name, serde_json::from_str(&roles).unwrap_or_default()))
            .collect();
        Ok((roles, personas))
    }
}
