//! Human approvals in the server: the runtime gate on decisions, deciding
//! steps, waiting for an outcome, expiry, metrics and announcements.
//!
//! **When a decision needs an approval.** Only a request the policies allow
//! can need one (a denial stays a denial). It needs one when a permitting
//! policy carries `@approval("group, ...")` (those groups, in order), or when
//! the principal agent's persona lists the action in `approval_required_for`
//! (the configured `runtime_group`, default `approvers`) and not every
//! permitting policy waives it with `@approval("none")`. Approver groups are
//! human roles.
//!
//! **Binding and use.** The approval is bound to the digest of the principal
//! chain, action, resource and context. Once every group approved, the
//! identical request is allowed exactly once within the grant's validity;
//! any other request, a denied or an expired approval means no. A request
//! may need several approvals (its policies' or persona's, and an
//! `approval_required` quota's): each needs its own grant approved by the
//! groups it names, and the grants are used in the same transaction that
//! reserves the quota and records the decision, only if it is admitted.
//!
//! **Waiting.** A waiter is woken by a local change at once, and re-reads the
//! store every second, so a decision taken on another node is seen too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use steward_core::Error;
use steward_core::approval::{self, RequestBinding};
use steward_policy::DecisionInput;
use steward_store::approvals::{NewApproval, Verdict};
use steward_types::{
    Approval, ApprovalKind, ApprovalRef, ApprovalStats, ApprovalStatus, Decision, DecisionRequest,
    DecisionResponse, ErrorCode, QuotaStatus, Remediation, RiskTier, TierApprovalStats,
};
use tokio::sync::Notify;

use crate::auth::Caller;
use crate::state::AppState;

/// Longest a wait may last, in seconds.
pub const MAX_WAIT_SECS: u32 = 30;
/// How often a waiter re-reads the store (decisions taken on other nodes).
const RECHECK: Duration = Duration::from_secs(1);

/// Shared approval state of one server: wake-ups for waiters and the
/// personas' approval rules (personas never change once created).
#[derive(Default)]
pub struct Approvals {
    changed: Notify,
    persona_actions: Mutex<PersonaActions>,
}

/// (tenant, persona name) → the actions its agents need approval for.
type PersonaActions = HashMap<(String, String), Arc<Vec<String>>>;

impl Approvals {
    fn wake(&self) {
        self.changed.notify_waiters();
    }
}

/// How a decision refers to an approval.
pub fn reference(a: &Approval) -> ApprovalRef {
    ApprovalRef {
        id: a.id.clone(),
        status: a.status,
        groups: a.steps.iter().map(|s| s.group.clone()).collect(),
        expires_at: a.expires_at,
        wait: format!("/v1/approvals/{}/wait", a.id),
    }
}

/// The actions a persona's agents need a runtime approval for.
async fn persona_actions(
    state: &AppState,
    tenant: &str,
    persona: &str,
) -> Result<Arc<Vec<String>>, Error> {
    let key = (tenant.to_string(), persona.to_string());
    if let Some(found) = state
        .approvals
        .persona_actions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return Ok(found.clone());
    }
    let actions = Arc::new(
        state
            .store
            .get_persona(tenant, persona)
            .await?
            .approval_required_for,
    );
    state
        .approvals
        .persona_actions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, actions.clone());
    Ok(actions)
}

fn attr<'a>(input: &'a DecisionInput, index: usize, name: &str) -> Option<&'a str> {
    input
        .chain
        .get(index)
        .and_then(|s| s.entity.attrs.get(name))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The approval the policies and personas ask for before an allowed
/// request may go ahead, if any.
pub async fn policy_ask(
    state: &AppState,
    caller: &Caller,
    engine: &steward_policy::Engine,
    req: &DecisionRequest,
    input: &DecisionInput,
    response: &DecisionResponse,
) -> Result<Option<Ask>, Error> {
    if response.decision != Decision::Allow {
        return Ok(None);
    }
    approval_ask(
        state,
        caller.tenant_id(),
        engine,
        &req.action,
        input,
        &response.policies,
    )
    .await
}

/// The approval an allowed decision needs, from the policies that allowed
/// it and the personas up its chain; `None` when it needs none. Writes
/// nothing: searches use it to leave out what would be held.
pub async fn approval_ask(
    state: &AppState,
    tenant: &str,
    engine: &steward_policy::Engine,
    action: &str,
    input: &DecisionInput,
    policies: &[steward_types::DeterminingPolicy],
) -> Result<Option<Ask>, Error> {
    let mut annotations = Vec::new();
    let mut rules = Vec::new();
    // `@approval("none")` on every permitting policy waives the persona's
    // rule (a reviewed policy that says "these need nobody", e.g. small refunds).
    let mut waived = !policies.is_empty();
    for p in policies {
        match engine.annotation(&p.id, "approval").map(str::trim) {
            Some("none") => {}
            Some(groups) => {
                waived = false;
                // Stored before such annotations were refused and naming no
                // group: the default approvers, never no approval.
                if groups.split(',').all(|g| g.trim().is_empty()) {
                    annotations.push(state.config.approvals.runtime_group.as_str());
                } else {
                    annotations.push(groups);
                }
                rules.push(format!("policy '{}'", p.id));
            }
            None => waived = false,
        }
    }
    // The persona rule of every agent up the chain: a child never skips an
    // approval its parent's persona requires.
    let mut persona_requires = false;
    if !waived {
        for (index, s) in input.chain.iter().enumerate() {
            if s.kind != "agent" {
                continue;
            }
            if let Some(persona) = attr(input, index, "persona")
                && persona_actions(state, tenant, persona)
                    .await?
                    .iter()
                    .any(|a| a == action)
            {
                persona_requires = true;
                let rule = format!("persona '{persona}'");
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    let groups = approval::runtime_groups(
        &annotations,
        persona_requires,
        &state.config.approvals.runtime_group,
    );
    if groups.is_empty() {
        return Ok(None);
    }
    Ok(Some(Ask {
        groups,
        why: rules.join(" and "),
        quota: None,
    }))
}

/// One approval a request needs: the groups that must approve it, in
/// order, and the rule that asks.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The approver groups, in order.
    pub groups: Vec<String>,
    /// The rule asking, for people ("policy 'x' and persona 'y'").
    pub why: String,
    /// The quota going over, when a quota asks.
    pub quota: Option<QuotaStatus>,
}

impl Ask {
    /// An `approval_required` quota's ask: the runtime group's approval to
    /// go over it.
    pub fn quota(state: &AppState, status: QuotaStatus) -> Self {
        Ask {
            groups: vec![state.config.approvals.runtime_group.clone()],
            why: format!(
                "quota '{}' ({} of {} used)",
                status.name, status.used, status.limit
            ),
            quota: Some(status),
        }
    }
}

/// A request as an approval binds it: its digest, and what approvers see.
pub struct Bound {
    /// What grants are matched by.
    pub digest: String,
    request: Value,
}

/// Bind a request: the principal chain, action, resource, the context and
/// attributes policies can read, the call's arguments and the estimate.
pub fn bind(
    engine: &steward_policy::Engine,
    req: &DecisionRequest,
    response: &DecisionResponse,
) -> Bound {
    let chain: Vec<(String, String)> = response
        .chain
        .iter()
        .map(|l| (l.kind.clone(), l.id.clone()))
        .collect();
    // The request as policies see it: context and resource attributes they
    // cannot read (undeclared, or an inventory entity's, which come from the
    // store) would make the same request look like another.
    let context: Map<String, Value> = match engine.action(&req.action) {
        Some(def) => req
            .context
            .iter()
            .filter(|(k, _)| def.context.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => req.context.clone(),
    };
    let declared = engine.resource_attributes(&req.resource.resource_type);
    let attributes: Map<String, Value> = req
        .resource
        .attributes
        .iter()
        .filter(|(k, _)| declared.is_some_and(|d| d.contains_key(*k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let estimate = req
        .estimate
        .as_ref()
        .and_then(|e| serde_json::to_value(e).ok())
        .filter(|e| {
            e.as_object()
                .is_some_and(|o| o.values().any(|v| !v.is_null()))
        });
    let binding = RequestBinding {
        chain: &chain,
        action: &req.action,
        resource_type: &req.resource.resource_type,
        resource_id: &req.resource.id,
        resource_attributes: &attributes,
        context: &context,
        arguments: req.call_arguments.as_ref(),
        estimate: estimate.as_ref(),
    };
    let mut request = binding.to_json();
    request["on_behalf_of"] = json!(crate::decisions::acted_for(req, response));
    request["decision_id"] = json!(response.decision_id);
    Bound {
        digest: binding.digest(),
        request,
    }
}

/// Hold an allowed request for `ask`, which no approved grant covers: deny
/// it if a human recently refused this exact request, or file (or reuse)
/// the pending approval and answer `approval_required`.
pub async fn hold(
    state: &AppState,
    caller: &Caller,
    input: &DecisionInput,
    response: &mut DecisionResponse,
    ask: Ask,
    bound: Bound,
) -> Result<(), Error> {
    let tenant = caller.tenant_id().to_string();
    let principal_is_agent = input.chain.first().is_some_and(|s| s.kind == "agent");
    let Bound { digest, request } = bound;
    let ctx = caller.context();
    let times = state.config.approvals.times();
    if let Some(denied) = state
        .store
        .recent_denial_for(&tenant, &digest, ctx.now - times.grant_ttl)
        .await?
    {
        let why = denied
            .steps
            .iter()
            .find_map(|s| s.comment.clone().filter(|_| s.status == "denied"))
            .unwrap_or_default();
        response.decision = Decision::Deny;
        response.remediation = Some(Remediation {
            message: format!(
                "A human denied this exact request (approval {}): {why}. Ask again later with a different request, or talk to the approvers.",
                denied.id
            ),
            ..Default::default()
        });
        response.approval = Some(reference(&denied));
        return Ok(());
    }

    // Who may not approve: the owners of every agent in the chain, the
    // humans in it (acted for), and the requester (added by the store).
    let mut excluded = Vec::new();
    for (i, s) in input.chain.iter().enumerate() {
        match s.kind {
            "agent" => excluded.extend(attr(input, i, "owner").map(String::from)),
            _ => {
                excluded.push(s.entity.id.clone());
                excluded.push(s.name.clone());
            }
        }
    }
    let risk_tier = match attr(input, 0, "risk_tier") {
        Some("low") => RiskTier::Low,
        Some("high") => RiskTier::High,
        _ => RiskTier::Medium,
    };
    let Ask { groups, why, quota } = ask;
    let new = NewApproval {
        kind: ApprovalKind::Action,
        risk_tier,
        digest,
        agent: principal_is_agent
            .then(|| {
                input
                    .chain
                    .first()
                    .map(|s| (s.entity.id.clone(), s.name.clone()))
            })
            .flatten(),
        excluded,
        request,
        reason: format!(
            "{why} requires a human approval of '{}' by {}",
            input.action,
            groups.join(" then ")
        ),
        groups,
        expires_at: ctx.now + times.request_ttl,
        sla_due_at: ctx.now + times.sla,
    };
    let (pending, created) = state.store.file_action_approval(&ctx, new).await?;
    if created {
        announce(state, "approval.requested", &pending);
    }
    response.decision = Decision::ApprovalRequired;
    response.remediation = Some(Remediation {
        message: format!(
            "{}. Approval {} is pending (expires {}); wait at GET /v1/approvals/{}/wait, then send the identical request again: it is allowed once.",
            pending.reason,
            pending.id,
            pending.expires_at.to_rfc3339(),
            pending.id
        ),
        ..Default::default()
    });
    response.approval = Some(reference(&pending));
    if let Some(status) = quota {
        response.exceeded = Some(status.clone());
        response.quota = Some(status);
    }
    Ok(())
}

/// Decide the current step of an approval as the calling person.
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    verdict: Verdict,
    comment: Option<String>,
) -> Result<Approval, Error> {
    let human = match caller {
        Caller::Token { token, .. } if token.role == steward_types::TokenRole::Pep => {
            return Err(Error::new(
                ErrorCode::Forbidden,
                "pep tokens only ask for decisions; a person decides approvals with their own token",
            ));
        }
        Caller::Token { token, .. } => token.human_id.clone(),
        Caller::Agent { .. } => {
            return Err(Error::new(
                ErrorCode::Forbidden,
                "agents cannot decide approvals; a person does, with their own token",
            ));
        }
    };
    let human = human.ok_or_else(|| {
        Error::new(
            ErrorCode::NotAnApprover,
            "approvals are decided by people: use a token issued to you (`steward tokens create --human EMAIL`), so the approval is attributable",
        )
    })?;
    let ctx = caller.context();
    let comment = comment.filter(|c| !c.trim().is_empty());
    let decided = state
        .store
        .decide_approval(&ctx, &state.rules, id, &human, verdict, comment)
        .await
        .map_err(|e| {
            if e.code == ErrorCode::NotFound && e.message.contains("human") {
                Error::new(
                    ErrorCode::NotAnApprover,
                    "the token's person is not in this tenant",
                )
            } else {
                e
            }
        });
    // A cancellation on the way is news for waiters too.
    state.approvals.wake();
    let decided = decided?;
    let event = match decided.status {
        ApprovalStatus::Approved => "approval.approved",
        ApprovalStatus::Denied => "approval.denied",
        _ => "approval.step_approved",
    };
    announce(state, event, &decided);
    Ok(decided)
}

/// An approval the caller may see: readers see all of the tenant's, an
/// agent only its own, a pep token only those its own decisions filed (to
/// wait for the one it was answered with).
pub async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<Approval, Error> {
    let a = state.store.get_approval(caller.tenant_id(), id).await?;
    let seen = match caller {
        Caller::Agent { agent, .. } => a.agent_id.as_deref() == Some(agent.id.as_str()),
        Caller::Token { token, .. } if token.role == steward_types::TokenRole::Pep => {
            a.requested_by == format!("token:{}", token.id)
        }
        Caller::Token { .. } => true,
    };
    if !seen {
        return Err(Error::not_found("approval", id));
    }
    Ok(a)
}

/// The approval with its status as of now: a pending one past its time is
/// expired, even before the sweep records it. An approved grant's expiry is
/// left to the sweep, which knows whether its request's next approval is
/// still pending (the grant then waits for it), so this answer agrees with
/// `GET /v1/approvals/{id}`.
fn current(mut a: Approval, now: DateTime<Utc>) -> Approval {
    if a.status == ApprovalStatus::Pending {
        a.status = approval::status_at(&a, now);
    }
    a
}

/// Wait up to `timeout` for an approval to leave `pending`: woken at once by
/// a change on this node, re-reading the store every second for changes on
/// others. Answers the approval as it stands.
pub async fn wait(
    state: &AppState,
    caller: &Caller,
    id: &str,
    timeout: Duration,
) -> Result<Approval, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = state.approvals.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let a = current(visible(state, caller, id).await?, Utc::now());
        let now = tokio::time::Instant::now();
        if a.status != ApprovalStatus::Pending || now >= deadline {
            return Ok(a);
        }
        let nap = (deadline - now).min(RECHECK);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// Record that something happened to an approval: wake waiters, count it,
/// and wake the webhook worker (the store queued the delivery with the change).
pub fn announce(state: &AppState, event: &str, a: &Approval) {
    state.approvals.wake();
    crate::metrics::record_approval(event, a);
    state.webhooks.wake();
}

/// Expire what is due at `now` (the background loop calls this every second).
pub async fn expire_due(state: &AppState, now: DateTime<Utc>) {
    match state.store.expire_approvals(now).await {
        Ok(expired) => {
            for (_, a) in &expired {
                announce(state, "approval.expired", a);
            }
        }
        Err(e) => tracing::warn!(error = %e, "approval expiry failed; will retry"),
    }
}

/// Counts and time-to-approval percentiles per tier, from the store (so
/// every node answers the same): counts over every approval, percentiles
/// over the latest approved ones (`steward_store::approvals::STATS_TIMES`
/// per tier).
pub async fn stats(state: &AppState, tenant: &str) -> Result<ApprovalStats, Error> {
    let mut tiers = Vec::new();
    for facts in state.store.approval_stats(tenant).await? {
        let mut s = TierApprovalStats {
            risk_tier: facts.risk_tier.as_str().into(),
            sla_breached: facts.sla_breached,
            ..Default::default()
        };
        for (status, n) in facts.counts {
            match status {
                ApprovalStatus::Pending => s.pending += n,
                ApprovalStatus::Approved | ApprovalStatus::Used => s.approved += n,
                ApprovalStatus::Denied => s.denied += n,
                ApprovalStatus::Expired => s.expired += n,
                ApprovalStatus::Cancelled => {}
            }
        }
        let mut times = facts.seconds_to_approval;
        times.sort_by(f64::total_cmp);
        s.p50_seconds = approval::percentile(&times, 50.0);
        s.p90_seconds = approval::percentile(&times, 90.0);
        s.p99_seconds = approval::percentile(&times, 99.0);
        tiers.push(s);
    }
    Ok(ApprovalStats { tiers })
}
