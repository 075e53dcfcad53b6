//! Approvals of agents: a registration waits for its tier's chain (and
//! activation through the API is refused while it does); new roles or
//! classifications that raise an active agent's tier wait for approval.

use serde_json::json;
use steward_core::approval;
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, Error, InventoryRules, validate};
use steward_types::{Agent, AgentState, Approval, ApprovalKind, ErrorCode, RiskTier};

use super::{AccessChange, NewApproval};
use crate::agents::{effective_tier, lock_agent, roles_write};
use crate::audit::{append, event};
use crate::humans::check_roles;
use crate::{Store, Tx, db_error};

/// The roles and classifications `agent` holds once the change approval
/// `a` applies to it as it is now: what the change added is added, what it
/// dropped is dropped, and whatever changed in the meantime stays.
pub(super) fn changed_access(
    a: &Approval,
    agent: &Agent,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let list = |side: &str, field: &str| -> Result<Vec<String>, Error> {
        serde_json::from_value(a.request[side][field].clone())
            .map_err(|e| Error::internal(format!("approval {}: {e}", a.id)))
    };
    let roles =
        approval::apply_change(&agent.roles, &list("from", "roles")?, &list("to", "roles")?);
    let classifications = approval::apply_change(
        &agent.classifications,
        &list("from", "classifications")?,
        &list("to", "classifications")?,
    );
    Ok((roles, classifications))
}

/// The tier, and its chain, that `roles` and `classifications` would take
/// `agent` to through the change approval `a`, when `a` does not cover it:
/// a raise of the agent's tier, above the tier `a` was filed for, to a tier
/// whose chain has a group none of `a`'s steps asks. `None` when covered.
pub(super) async fn beyond_change(
    tx: &mut Tx,
    ctx: &ChangeContext,
    rules: &InventoryRules,
    a: &Approval,
    agent: &Agent,
    roles: &[String],
    classifications: &[String],
) -> Result<Option<(RiskTier, Vec<String>)>, Error> {
    let writes = roles_write(tx, &ctx.tenant_id, roles).await?;
    let mut after = agent.clone();
    after.risk_tier = rules.classifications.risk_tier(classifications, writes);
    let tier = effective_tier(tx, &after).await?;
    if tier <= a.risk_tier || tier <= effective_tier(tx, agent).await? {
        return Ok(None);
    }
    let chain = rules.approval_chains.for_tier(tier).to_vec();
    if chain.iter().all(|g| a.steps.iter().any(|s| &s.group == g)) {
        return Ok(None);
    }
    Ok(Some((tier, chain)))
}

impl Store {
    /// After registering or submitting an agent that waits in
    /// `pending_approval`: file its registration approval with the chain of
    /// its tier, or activate it at once when that chain is empty.
    pub async fn request_registration_approval_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        agent: &Agent,
    ) -> Result<Option<Approval>, Error> {
        if agent.state != AgentState::PendingApproval {
            return Ok(None);
        }
        let tier = effective_tier(tx, agent).await?;
        let chain = rules.approval_chains.for_tier(tier).to_vec();
        if chain.is_empty() {
            self.transition_agent_in(
                tx,
                ctx,
                &agent.id,
                Transition::Activate,
                Some(format!("{} risk needs no approval here", tier.as_str())),
            )
            .await?;
            return Ok(None);
        }
        let subject = json!({
            "agent": agent.id, "name": agent.name, "owner_id": agent.owner_id,
            "persona_id": agent.persona_id, "parent_id": agent.parent_id,
            "roles": agent.roles, "classifications": agent.classifications,
            "risk_tier": tier, "purpose": agent.purpose, "platform": agent.platform, "model": agent.model,
        });
        let new = NewApproval {
            kind: ApprovalKind::Registration,
            risk_tier: tier,
            digest: approval::subject_digest("registration", &subject),
            agent: Some((agent.id.clone(), agent.name.clone())),
            excluded: vec![agent.owner_id.clone()],
            request: subject,
            reason: format!(
                "registration of a {} risk agent: {}",
                tier.as_str(),
                chain.join(" then ")
            ),
            groups: chain,
            expires_at: ctx.now + rules.approval_times.registration_ttl,
            sla_due_at: ctx.now + rules.approval_times.sla,
        };
        self.create_approval_in(tx, ctx, new).await.map(Some)
    }

    /// Give an agent new roles and/or classifications. A change that raises
    /// the tier of an active or suspended agent, when that tier has an
    /// approval chain, waits for it (the agent is unchanged and the approval
    /// returned); any other change applies at once.
    pub async fn change_agent_access_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        key: &str,
        roles: Option<Vec<String>>,
        classifications: Option<Vec<String>>,
    ) -> Result<AccessChange, Error> {
        let lock = self.backend.for_update();
        let agent = lock_agent(tx, lock, &ctx.tenant_id, key).await?;
        if agent.state.is_terminal() {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!(
                    "agent '{}' is {}; it can no longer be changed",
                    agent.name,
                    agent.state.as_str()
                ),
            ));
        }
        let roles = roles.unwrap_or_else(|| agent.roles.clone());
        let classifications = classifications.unwrap_or_else(|| agent.classifications.clone());
        self.check_access(tx, ctx, rules, &agent, &roles, &classifications)
            .await?;
        if roles == agent.roles && classifications == agent.classifications {
            return Ok(AccessChange {
                agent,
                approval: None,
            });
        }
        if agent.state == AgentState::PendingApproval {
            return Err(Error::new(
                ErrorCode::ApprovalPending,
                format!(
                    "agent '{}' waits for its registration approval; decide it (or reject the agent) before changing its roles or classifications",
                    agent.name
                ),
            ));
        }
        let writes = roles_write(tx, &ctx.tenant_id, &roles).await?;
        let new_tier = rules.classifications.risk_tier(&classifications, writes);
        let old_tier = effective_tier(tx, &agent).await?;
        let mut raised = agent.clone();
        raised.risk_tier = new_tier;
        let new_effective = effective_tier(tx, &raised).await?;
        let chain = rules.approval_chains.for_tier(new_effective).to_vec();
        let gated = matches!(agent.state, AgentState::Active | AgentState::Suspended)
            && new_effective > old_tier
            && !chain.is_empty();
        if !gated {
            // It applies at once, unless the agent has a change waiting for
            // approval and the two together would take it to a tier that
            // approval does not cover (once approved, that change applies
            // to the agent as this one leaves it).
            if let Some(open) = self
                .open_agent_approval_in(tx, &ctx.tenant_id, &agent.id, ApprovalKind::Change)
                .await?
            {
                let mut changed = agent.clone();
                changed.roles = roles.clone();
                changed.classifications = classifications.clone();
                let (with_roles, with_classifications) = changed_access(&open, &changed)?;
                if let Some((tier, chain)) = beyond_change(
                    tx,
                    ctx,
                    rules,
                    &open,
                    &agent,
                    &with_roles,
                    &with_classifications,
                )
                .await?
                {
                    return Err(Error::new(
                        ErrorCode::ApprovalPending,
                        format!(
                            "agent '{}' has a change waiting for approval ({}, {} risk); together with it, \
                             this change would take the agent to {} risk, which needs {}: decide that one first",
                            agent.name,
                            open.id,
                            open.risk_tier.as_str(),
                            tier.as_str(),
                            chain.join(" then ")
                        ),
                    )
                    .with_details(json!({ "approval": open.id, "risk_tier": tier, "chain": chain })));
                }
            }
            let agent = self
                .apply_access_in(tx, ctx, rules, &agent, roles, classifications, None)
                .await?;
            return Ok(AccessChange {
                agent,
                approval: None,
            });
        }
        if let Some(open) = self
            .open_agent_approval_in(tx, &ctx.tenant_id, &agent.id, ApprovalKind::Change)
            .await?
        {
            return Err(Error::new(
                ErrorCode::ApprovalPending,
                format!(
                    "agent '{}' already has a change waiting for approval ({}); decide that one first",
                    agent.name, open.id
                ),
            )
            .with_details(json!({ "approval": open.id })));
        }
        let request = json!({
            "agent": agent.id, "name": agent.name,
            "from": { "roles": agent.roles, "classifications": agent.classifications, "risk_tier": old_tier },
            "to": { "roles": roles, "classifications": classifications, "risk_tier": new_effective },
        });
        let new = NewApproval {
            kind: ApprovalKind::Change,
            risk_tier: new_effective,
            digest: approval::subject_digest("change", &request),
            agent: Some((agent.id.clone(), agent.name.clone())),
            excluded: vec![agent.owner_id.clone()],
            request,
            reason: format!(
                "the change raises agent '{}' from {} to {} risk: {}",
                agent.name,
                old_tier.as_str(),
                new_effective.as_str(),
                chain.join(" then ")
            ),
            groups: chain,
            expires_at: ctx.now + rules.approval_times.registration_ttl,
            sla_due_at: ctx.now + rules.approval_times.sla,
        };
        let approval = self.create_approval_in(tx, ctx, new).await?;
        Ok(AccessChange {
            agent,
            approval: Some(approval),
        })
    }

    /// Roles and classifications must exist, and a child's stay within its parent's.
    async fn check_access(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        agent: &Agent,
        roles: &[String],
        classifications: &[String],
    ) -> Result<(), Error> {
        validate::name_list("roles", roles)?;
        validate::name_list("classifications", classifications)?;
        check_roles(tx, &ctx.tenant_id, "roles", roles).await?;
        rules
            .classifications
            .validate("classifications", classifications)?;
        crate::agents::check_grants_along_chain(tx, &ctx.tenant_id, agent, roles, classifications)
            .await?;
        Ok(())
    }

    /// Write new roles and classifications (and the tier they imply).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply_access_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        agent: &Agent,
        roles: Vec<String>,
        classifications: Vec<String>,
        reason: Option<&str>,
    ) -> Result<Agent, Error> {
        self.check_access(tx, ctx, rules, agent, &roles, &classifications)
            .await?;
        let after =
            crate::agents::write_access_in(tx, ctx, rules, agent, roles, classifications).await?;
        append(
            tx,
            ctx,
            event(
                "agent.update",
                "agent",
                &after.id,
                Some(agent),
                Some(&after),
                reason,
            ),
        )
        .await?;
        Ok(after)
    }

    /// Register an agent and, when it waits for approval, file its
    /// registration approval (or activate it when its tier's chain is empty).
    pub async fn register_agent_for_approval(
        &self,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        req: steward_types::RegisterAgent,
    ) -> Result<(Agent, Option<Approval>), Error> {
        let mut tx = self.begin().await?;
        let agent = self.register_agent_in(&mut tx, ctx, rules, req).await?;
        let approval = self
            .request_registration_approval_in(&mut tx, ctx, rules, &agent)
            .await?;
        let agent = lock_agent(&mut tx, "", &ctx.tenant_id, &agent.id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok((agent, approval))
    }

    /// A lifecycle transition through the API: `activate` is refused for an
    /// agent whose registration needs an approval chain (the chain's last
    /// approval activates it), and `submit` files that approval.
    pub async fn transition_agent_gated(
        &self,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        key: &str,
        transition: Transition,
        reason: Option<String>,
    ) -> Result<(steward_types::TransitionResult, Option<Approval>), Error> {
        let mut tx = self.begin().await?;
        if transition == Transition::Activate {
            let lock = self.backend.for_update();
            let agent = lock_agent(&mut tx, lock, &ctx.tenant_id, key).await?;
            if matches!(
                agent.state,
                AgentState::Proposed | AgentState::PendingApproval
            ) {
                let tier = effective_tier(&mut tx, &agent).await?;
                let chain = rules.approval_chains.for_tier(tier);
                if !chain.is_empty() {
                    let open = self
                        .open_agent_approval_in(
                            &mut tx,
                            &ctx.tenant_id,
                            &agent.id,
                            ApprovalKind::Registration,
                        )
                        .await?;
                    let how = match &open {
                        Some(a) => {
                            format!("approve {} (`steward approvals approve {}`)", a.id, a.id)
                        }
                        None => "submit it to file its registration approval".into(),
                    };
                    return Err(Error::new(
                        ErrorCode::ApprovalPending,
                        format!(
                            "agent '{}' is {} risk: its registration needs approval by {}, and the last approval activates it; {how}",
                            agent.name,
                            tier.as_str(),
                            chain.join(" then ")
                        ),
                    )
                    .with_details(json!({ "approval": open.map(|a| a.id), "chain": chain })));
                }
            }
        }
        let result = self
            .transition_agent_in(&mut tx, ctx, key, transition, reason)
            .await?;
        let approval = if transition == Transition::Submit {
            self.request_registration_approval_in(&mut tx, ctx, rules, &result.agent)
                .await?
        } else {
            None
        };
        let agent = lock_agent(&mut tx, "", &ctx.tenant_id, &result.agent.id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok((
            steward_types::TransitionResult { agent, ..result },
            approval,
        ))
    }

    /// An agent by id or name, read inside a transaction.
    pub async fn get_agent_in(
        &self,
        tx: &mut Tx,
        tenant_id: &str,
        key: &str,
    ) -> Result<Agent, Error> {
        lock_agent(tx, "", tenant_id, key).await
    }
}
