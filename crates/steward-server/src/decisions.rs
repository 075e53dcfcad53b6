//! The decision service: resolve the principal, its ancestors and the human
//! it acts for from the inventory (fresh on every request, so a suspension
//! or a removed role changes the very next decision), ask the tenant's engine,
//! and record the decision in the audit log before answering.

use chrono::Utc;
use serde_json::{Map, Value, json};
use steward_core::{AuditEvent, Error};
use steward_policy::{DecisionInput, EntityData, Subject};
use steward_store::agents::AgentContext;
use steward_store::approvals::GrantUse;
use steward_types::{
    AgentState, Decision, DecisionRequest, DecisionResponse, ErrorCode, HumanStatus, ResourceRef,
};

use crate::audit_log::Recording;
use crate::auth::Caller;
use crate::state::AppState;

/// Deepest spawn chain walked; deeper means a corrupt inventory.
const MAX_CHAIN: usize = 64;

fn agent_subject(ctx: &AgentContext, now: chrono::DateTime<Utc>) -> Subject {
    let a = &ctx.agent;
    let inactive = if a.state != AgentState::Active {
        Some(format!("agent '{}' is {}", a.name, a.state.as_str()))
    } else if a.expires_at.is_some_and(|e| e <= now) {
        Some(format!("agent '{}' passed its expiry time", a.name))
    } else {
        None
    };
    let mut parents: Vec<(String, String)> = a
        .roles
        .iter()
        .map(|r| ("Role".to_string(), r.clone()))
        .collect();
    if let Some(p) = &ctx.persona {
        parents.push(("Persona".into(), p.clone()));
    }
    if let Some(t) = &ctx.team {
        parents.push(("Team".into(), t.clone()));
    }
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let attrs = json!({
        "name": a.name, "owner": ctx.owner_email, "risk_tier": a.risk_tier.as_str(),
        "classifications": a.classifications, "labels": labels, "depth": a.depth,
        "platform": a.platform, "model": a.model, "purpose": a.purpose,
        "persona": ctx.persona.clone().unwrap_or_default(), "team": ctx.team.clone().unwrap_or_default(),
        "active": inactive.is_none(), "orphaned": a.orphaned,
    });
    Subject {
        kind: "agent",
        name: a.name.clone(),
        inactive,
        entity: entity("Agent", &a.id, attrs, parents),
    }
}

fn human_subject(h: &steward_types::Human, teams: &[String]) -> Subject {
    let inactive =
        (h.status != HumanStatus::Active).then(|| format!("human '{}' is deactivated", h.email));
    let mut parents: Vec<(String, String)> = h
        .roles
        .iter()
        .map(|r| ("Role".to_string(), r.clone()))
        .collect();
    parents.extend(teams.iter().map(|t| ("Team".to_string(), t.clone())));
    let attrs = json!({
        "email": h.email, "external_id": h.external_id.clone().unwrap_or_default(),
        "display_name": h.display_name, "active": inactive.is_none(),
    });
    Subject {
        kind: "human",
        name: h.email.clone(),
        inactive,
        entity: entity("Human", &h.id, attrs, parents),
    }
}

fn entity(entity_type: &str, id: &str, attrs: Value, parents: Vec<(String, String)>) -> EntityData {
    EntityData {
        entity_type: entity_type.into(),
        id: id.into(),
        attrs: match attrs {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        parents,
    }
}

/// The agent and each ancestor, nearest first.
pub(crate) async fn agent_chain(
    state: &AppState,
    tenant: &str,
    key: &str,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Subject>, Error> {
    let mut chain = Vec::new();
    let mut next = Some(key.to_string());
    while let Some(key) = next.take() {
        if chain.len() >= MAX_CHAIN {
            return Err(Error::internal(
                "spawn chain deeper than 64: the inventory is inconsistent",
            ));
        }
        let ctx = state
            .store
            .agent_context(tenant, &key)
            .await?
            .ok_or_else(|| {
                if chain.is_empty() {
                    Error::not_found("agent", &key)
                } else {
                    Error::internal(format!("ancestor {key} is missing"))
                }
            })?;
        next = ctx.agent.parent_id.clone();
        chain.push(agent_subject(&ctx, now));
    }
    Ok(chain)
}

async fn human_by_key(
    state: &AppState,
    tenant: &str,
    key: &str,
    field: &str,
) -> Result<Subject, Error> {
    let (h, teams) = state
        .store
        .human_context(tenant, key)
        .await?
        .ok_or_else(|| Error::unknown_reference(field, "human", key))?;
    Ok(human_subject(&h, &teams))
}

/// The principal chain of a request: the principal (and its ancestors), then
/// the human acted for.
/// An agent's key asks about that agent only (named by id or name, as a
/// principal of type `agent`); enforcement points use an admin token.
pub(crate) fn asks_about_itself(
    agent: &steward_types::Agent,
    principal_type: &str,
    id: &str,
) -> Result<(), Error> {
    if principal_type == "agent" && (id == agent.id || id == agent.name) {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::Forbidden,
        "an agent may only ask about itself; enforcement points use an admin token",
    ))
}

pub async fn resolve_chain(
    state: &AppState,
    caller: &Caller,
    principal: Option<&steward_types::PrincipalRef>,
    on_behalf_of: Option<&str>,
) -> Result<Vec<Subject>, Error> {
    let tenant = caller.tenant_id();
    let now = Utc::now();
    let mut chain = match (caller, principal) {
        (Caller::Agent { agent, .. }, None) => agent_chain(state, tenant, &agent.id, now).await?,
        (Caller::Agent { agent, .. }, Some(p)) => {
            asks_about_itself(agent, &p.principal_type, &p.id)?;
            agent_chain(state, tenant, &agent.id, now).await?
        }
        (Caller::Token { .. }, None) => {
            return Err(Error::invalid(
                "principal",
                "name the principal ({\"type\": \"agent\", \"id\": ...}) when asking with a token",
            ));
        }
        (Caller::Token { .. }, Some(p)) => match p.principal_type.as_str() {
            "agent" => agent_chain(state, tenant, &p.id, now).await.map_err(|e| {
                if e.code == ErrorCode::NotFound {
                    Error::unknown_reference("principal", "agent", &p.id)
                } else {
                    e
                }
            })?,
            "human" | "user" => vec![human_by_key(state, tenant, &p.id, "principal").await?],
            other => {
                return Err(Error::invalid(
                    "principal.type",
                    format!("'{other}' is not a principal type (agent or human)"),
                ));
            }
        },
    };
    if let Some(h) = crate::delegation::acting_for(state, caller, on_behalf_of).await? {
        let found = state.store.human_context(tenant, &h).await?;
        chain.push(match (caller, found) {
            // An agent naming a person without proof learns only whether
            // that person may be acted for: someone unknown and someone
            // deactivated are the same denial, so an agent key cannot probe
            // the tenant's directory for e-mails.
            (
                Caller::Agent {
                    delegation: None, ..
                },
                found,
            ) if found
                .as_ref()
                .is_none_or(|(p, _)| p.status != HumanStatus::Active) =>
            {
                no_active_person(&h)
            }
            (_, Some((p, teams))) => human_subject(&p, &teams),
            (_, None) => return Err(Error::unknown_reference("on_behalf_of", "human", &h)),
        });
    }
    Ok(chain)
}

/// The person an agent named, as its chain shows them when they are not
/// an active person of the tenant (unknown or deactivated alike).
fn no_active_person(named: &str) -> Subject {
    let attrs = json!({
        "email": named, "external_id": "", "display_name": "", "active": false,
    });
    Subject {
        kind: "human",
        name: named.to_string(),
        inactive: Some(format!("'{named}' is not an active person of this tenant")),
        entity: entity("Human", named, attrs, vec![]),
    }
}

/// An agent, person or team the tenant does not know, as an agent asking
/// about it as a resource is decided on: one that is not active, with
/// nothing else to it. An agent key learns what it may do, never whether
/// the tenant has an identity by that name (as with a person it names
/// without proof); the decision and its record go on as for any resource.
pub(crate) fn unknown_identity(resource_type: &str, id: &str) -> Option<EntityData> {
    match resource_type {
        "Agent" => {
            let attrs = json!({
                "name": id, "owner": "", "risk_tier": "high", "classifications": [],
                "labels": [], "depth": 0, "platform": "", "model": "", "purpose": "",
                "persona": "", "team": "", "active": false, "orphaned": false,
            });
            Some(entity("Agent", id, attrs, vec![]))
        }
        "Human" => Some(no_active_person(id).entity),
        "Team" => Some(entity("Team", id, json!({}), vec![])),
        _ => None,
    }
}

/// The resource entity: a declared type (the request's attributes under the
/// stored ones: a request may add what the store lacks but never change what
/// an admin stored, or an agent could rewrite the classification a guardrail
/// reads; undeclared attributes ignored) or an agent, human or team.
pub async fn resolve_resource(
    state: &AppState,
    tenant: &str,
    engine: &steward_policy::Engine,
    r: &ResourceRef,
) -> Result<EntityData, Error> {
    steward_core::validate::key("resource.id", &r.id)?;
    let now = Utc::now();
    match r.resource_type.as_str() {
        "Agent" => match state.store.agent_context(tenant, &r.id).await? {
            Some(ctx) => Ok(agent_subject(&ctx, now).entity),
            None => Err(Error::unknown_reference("resource", "agent", &r.id)),
        },
        "Human" => Ok(human_by_key(state, tenant, &r.id, "resource").await?.entity),
        "Team" => {
            let team = state.store.get_team(tenant, &r.id).await.map_err(|e| {
                if e.code == ErrorCode::NotFound {
                    Error::unknown_reference("resource", "team", &r.id)
                } else {
                    e
                }
            })?;
            Ok(entity("Team", &team.name, json!({}), vec![]))
        }
        t => {
            let declared = engine.resource_attributes(t).ok_or_else(|| {
                Error::new(
                    ErrorCode::UnknownResourceType,
                    format!("resource.type: '{t}' is not a declared resource type"),
                )
            })?;
            let mut attrs: Map<String, Value> = r
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let stored = if state.engines.has_stored(tenant, t) {
                state.store.get_resource_entity(tenant, t, &r.id).await?
            } else {
                None
            };
            if let Some(stored) = stored {
                attrs.extend(stored.attributes);
            }
            attrs.retain(|k, _| declared.contains_key(k));
            Ok(entity(t, &r.id, Value::Object(attrs), vec![]))
        }
    }
}

/// The attributes a decision's record shows for its resolved resource:
/// a declared resource's as the decision used them (stored over the
/// request's, undeclared left out); none for an agent, human or team, which
/// is decided on as the inventory has it, whatever the request said.
pub fn recorded_attributes(
    engine: &steward_policy::Engine,
    resource: &EntityData,
) -> Map<String, Value> {
    if engine.is_resource_type(&resource.entity_type) {
        resource.attrs.clone()
    } else {
        Map::new()
    }
}

/// Decide, audit, answer. The decision is answered only once its audit
/// record is stored; a store that cannot record it makes the request fail.
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    req: DecisionRequest,
) -> Result<DecisionResponse, Error> {
    decide_with(state, caller, req, |_| false)
        .await
        .map(|(response, _)| response)
}

/// [`decide`], except that an allowed decision no approval or quota touches,
/// whose input `may_queue` accepts, comes back with its record queued rather
/// than durable. The caller must wait for the [`Recording`] before anything
/// it did on the decision's strength is answered. Every other decision is
/// durable on return.
pub async fn decide_queued(
    state: &AppState,
    caller: &Caller,
    req: DecisionRequest,
    may_queue: impl Fn(&DecisionInput) -> bool,
) -> Result<(DecisionResponse, Option<Recording>), Error> {
    decide_with(state, caller, req, may_queue).await
}

async fn decide_with(
    state: &AppState,
    caller: &Caller,
    req: DecisionRequest,
    may_queue: impl Fn(&DecisionInput) -> bool,
) -> Result<(DecisionResponse, Option<Recording>), Error> {
    // Everything that reaches the audit log's indexed columns: a value the
    // store cannot keep would fail the whole group commit it shares (the
    // resource's id is checked where it is resolved).
    steward_core::validate::key("action", &req.action)?;
    steward_core::validate::key("resource.type", &req.resource.resource_type)?;
    if let Some(p) = &req.principal {
        steward_core::validate::key("principal.id", &p.id)?;
    }
    if let Some(h) = &req.on_behalf_of {
        steward_core::validate::key("on_behalf_of", h)?;
    }
    let tenant = caller.tenant_id().to_string();
    let engine = state.engines.get(&state.store, &tenant).await?;
    let chain = resolve_chain(
        state,
        caller,
        req.principal.as_ref(),
        req.on_behalf_of.as_deref(),
    )
    .await?;
    let resource = match resolve_resource(state, &tenant, &engine, &req.resource).await {
        Err(e)
            if matches!(caller, Caller::Agent { .. }) && e.code == ErrorCode::UnknownReference =>
        {
            unknown_identity(&req.resource.resource_type, &req.resource.id).ok_or(e)?
        }
        resolved => resolved?,
    };
    // What is recorded (and what an approval is bound to) is what was
    // decided on: a declared resource's attributes as the decision used
    // them, stored ones over the request's, undeclared ones left out. An
    // audit record never shows a value the request claimed but the store
    // overruled.
    let mut req = req;
    req.resource.attributes = recorded_attributes(&engine, &resource)
        .into_iter()
        .collect();
    let input = DecisionInput {
        chain,
        action: req.action.clone(),
        resource,
        context: req.context.clone(),
    };
    if let Some(e) = &req.estimate {
        crate::quotas::check_estimate(e)?;
    }
    let mut outcome = engine.decide(&input)?;
    // A remediation names an agent, person or team resource as the request
    // did, not by the id the inventory keeps: an agent reading it learns
    // nothing about who exists (see `unknown_identity`).
    if let Some(hint) = outcome.remediation.as_mut()
        && input.resource.id != req.resource.id
    {
        let t = &input.resource.entity_type;
        hint.message = hint.message.replace(
            &format!("{t}::\"{}\"", input.resource.id),
            &format!("{t}::\"{}\"", req.resource.id),
        );
    }
    let mut response = DecisionResponse {
        decision: outcome.decision,
        decision_id: format!("dec_{}", uuid::Uuid::now_v7().simple()),
        policies: outcome.policies,
        errors: outcome.errors,
        chain: outcome.chain,
        remediation: outcome.remediation,
        approval: None,
        quota: None,
        warnings: Vec::new(),
        exceeded: None,
    };
    // What still allowed needs: the approvals its policies or personas ask
    // for, then its quotas; going over an `approval_required` quota asks
    // for one more approval.
    let mut asks: Vec<crate::approvals::Ask> =
        crate::approvals::policy_ask(state, caller, &engine, &req, &input, &response)
            .await?
            .into_iter()
            .collect();
    if response.decision == Decision::Allow {
        let rules = state.quotas.get(&state.store, &tenant).await?;
        let charges = crate::quotas::charges(&rules, &tenant, &input, &req)?;
        let principal = input
            .chain
            .first()
            .map(|s| s.entity.id.clone())
            .unwrap_or_default();
        let now = Utc::now();
        // At most ten years, so the sum cannot overflow.
        let settle_after =
            chrono::Duration::seconds(state.config.quota_settle_secs.min(315_360_000) as i64);
        let request = steward_store::quotas::Reservation {
            tenant: tenant.clone(),
            decision_id: response.decision_id.clone(),
            principal,
            charges,
            now,
            settle_by: now + settle_after,
            approved: false,
        };
        if asks.is_empty() {
            if request.charges.is_empty() {
                if may_queue(&input) {
                    let event = decision_event(&req, &response);
                    let recording = state.audit.queue_record(caller.context(), event).await?;
                    return Ok((response, Some(recording)));
                }
                record(state, caller, &req, &response).await?;
                return Ok((response, None));
            }
            match reserve_and_record(state, caller, &req, &mut response, request.clone()).await? {
                None => return Ok((response, None)),
                Some(status) => asks.push(crate::approvals::Ask::quota(state, status)),
            }
        }
        // At most twice: a quota may ask for its approval on the way.
        loop {
            let approved = asks.iter().any(|a| a.quota.is_some());
            let reservation = steward_store::quotas::Reservation {
                approved,
                ..request.clone()
            };
            match decide_with_grants(
                state,
                caller,
                &engine,
                &req,
                &input,
                &mut response,
                &asks,
                reservation,
            )
            .await?
            {
                GrantOutcome::Decided => return Ok((response, None)),
                GrantOutcome::Held => break,
                GrantOutcome::QuotaHeld(status) if !approved => {
                    asks.push(crate::approvals::Ask::quota(state, status));
                }
                GrantOutcome::QuotaHeld(status) => {
                    return Err(Error::internal(format!(
                        "quota '{}' refused an approved request",
                        status.name
                    )));
                }
            }
        }
    }
    let recorded = with_person_ids(state, &tenant, &response).await?;
    record(state, caller, &req, &recorded).await?;
    Ok((response, None))
}

/// `response` as its record shows it. A person an agent names who is not
/// an active person of the tenant is answered under the name the agent gave,
/// so that someone unknown and someone deactivated look alike to it; the
/// record names a person the tenant knows by their id, so the audit log
/// finds the decision under them (a leaver's investigation looks there).
async fn with_person_ids<'a>(
    state: &AppState,
    tenant: &str,
    response: &'a DecisionResponse,
) -> Result<std::borrow::Cow<'a, DecisionResponse>, Error> {
    let mut recorded = std::borrow::Cow::Borrowed(response);
    for (i, link) in response.chain.iter().enumerate() {
        if link.kind != "human" || link.id.starts_with("hum_") {
            continue;
        }
        if let Some((person, _)) = state.store.human_context(tenant, &link.id).await? {
            recorded.to_mut().chain[i].id = person.id;
        }
    }
    Ok(recorded)
}

/// What [`decide_with_grants`] came to.
enum GrantOutcome {
    /// Decided (allowed on its grants, or denied by a quota) and recorded.
    Decided,
    /// Held for an approval, or denied after a human's refusal: the caller
    /// records the answer.
    Held,
    /// An `approval_required` quota would go over: it needs an approval too.
    QuotaHeld(steward_types::QuotaStatus),
}

/// Decide an allowed request that needs `asks`' approvals: use its
/// approved grants, reserve its quota and record it in one transaction, or
/// hold it for the first approval it lacks.
#[allow(clippy::too_many_arguments)]
async fn decide_with_grants(
    state: &AppState,
    caller: &Caller,
    engine: &steward_policy::Engine,
    req: &DecisionRequest,
    input: &DecisionInput,
    response: &mut DecisionResponse,
    asks: &[crate::approvals::Ask],
    reservation: steward_store::quotas::Reservation,
) -> Result<GrantOutcome, Error> {
    let bound = crate::approvals::bind(engine, req, response);
    let groups: Vec<Vec<String>> = asks.iter().map(|a| a.groups.clone()).collect();
    let (ctx, req_copy, mut recorded) = (caller.context(), req.clone(), response.clone());
    let build: steward_store::approvals::RecordWithGrants = Box::new(move |admission, used| {
        let answer = crate::quotas::answer(admission);
        if answer.needs_approval().is_some() {
            return None;
        }
        answer.apply(&mut recorded);
        recorded.approval = used.last().map(crate::approvals::reference);
        Some((ctx, decision_event(&req_copy, &recorded)))
    });
    let used = state
        .store
        .decide_with_grants(
            &caller.context(),
            &bound.digest,
            &groups,
            reservation,
            build,
        )
        .await?;
    match used {
        GrantUse::Missing(i) => {
            crate::approvals::hold(state, caller, input, response, asks[i].clone(), bound).await?;
            Ok(GrantOutcome::Held)
        }
        GrantUse::QuotaHeld(admission) => {
            let status = crate::quotas::answer(&admission)
                .needs_approval()
                .cloned()
                .ok_or_else(|| Error::internal("a quota held a request it admitted"))?;
            Ok(GrantOutcome::QuotaHeld(status))
        }
        GrantUse::Decided { used, admission } => {
            for a in &used {
                crate::approvals::announce(state, "approval.used", a);
            }
            crate::quotas::answer(&admission).apply(response);
            response.approval = used.last().map(crate::approvals::reference);
            Ok(GrantOutcome::Decided)
        }
    }
}

/// Reserve an allowed decision's quota charges and record the decision in
/// the same commit (one wait, not two). An `approval_required` quota that
/// refuses leaves the decision unrecorded and unchanged and is returned:
/// the caller asks for approval and records the outcome.
async fn reserve_and_record(
    state: &AppState,
    caller: &Caller,
    req: &DecisionRequest,
    response: &mut DecisionResponse,
    reservation: steward_store::quotas::Reservation,
) -> Result<Option<steward_types::QuotaStatus>, Error> {
    let (ctx, req_copy, mut recorded) = (caller.context(), req.clone(), response.clone());
    let build: steward_store::quotas::RecordAfter = Box::new(move |admission| {
        let answer = crate::quotas::answer(admission);
        if answer.needs_approval().is_some() {
            return None;
        }
        answer.apply(&mut recorded);
        Some((ctx, decision_event(&req_copy, &recorded)))
    });
    let written = state
        .audit
        .writer()
        .submit(steward_store::quotas::Write::Decision(reservation, build))
        .await?;
    let steward_store::quotas::Written::Decided(admission, recorded) = written else {
        return Err(Error::internal("the decision writer mixed up two writes"));
    };
    let answer = crate::quotas::answer(&admission);
    match (answer.needs_approval().cloned(), recorded) {
        (Some(status), None) => Ok(Some(status)),
        (None, Some(_)) => {
            answer.apply(response);
            Ok(None)
        }
        _ => Err(Error::internal(
            "the decision writer recorded a decision it should have held",
        )),
    }
}

async fn record(
    state: &AppState,
    caller: &Caller,
    req: &DecisionRequest,
    response: &DecisionResponse,
) -> Result<(), Error> {
    let event = decision_event(req, response);
    state
        .audit
        .record(caller.context(), event)
        .await
        .map(|_| ())
}

/// A decision's audit record.
/// The person a decided request acted for, as its chain names them: the
/// human after the principal (named in the request, or fixed by a delegated
/// token), or the request's own words if the chain was never resolved.
pub(crate) fn acted_for(req: &DecisionRequest, response: &DecisionResponse) -> Option<String> {
    response
        .chain
        .iter()
        .skip(1)
        .rfind(|l| l.kind == "human")
        .map(|l| l.name.clone())
        .or_else(|| req.on_behalf_of.clone())
}

fn decision_event(req: &DecisionRequest, response: &DecisionResponse) -> AuditEvent {
    let principal = response
        .chain
        .first()
        .map(|l| json!({ "kind": l.kind, "id": l.id, "name": l.name }));
    AuditEvent {
        action: format!(
            "decision.{}",
            serde_json::to_value(response.decision)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ),
        resource_type: req.resource.resource_type.clone(),
        resource_id: req.resource.id.clone(),
        before: None,
        after: Some(json!({
            "decision_id": response.decision_id,
            "decision": response.decision,
            "principal": principal,
            "action": req.action,
            "resource": { "type": req.resource.resource_type, "id": req.resource.id, "attributes": req.resource.attributes },
            "context": req.context,
            "on_behalf_of": acted_for(req, response),
            "chain": response.chain,
            "policies": response.policies.iter().map(|p| &p.id).collect::<Vec<_>>(),
            "errors": response.errors,
            "approval": response.approval.as_ref().map(|a| &a.id),
            "estimate": req.estimate,
            "exceeded": response.exceeded,
            "warnings": response.warnings.iter().map(|w| &w.message).collect::<Vec<_>>(),
        })),
        reason: response.remediation.as_ref().map(|r| r.message.clone()),
    }
}
