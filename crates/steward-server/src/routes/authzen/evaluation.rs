//! `POST /access/v1/evaluation` and `POST /access/v1/evaluations`: one
//! request through the decision service, or a batch of them with defaults.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use steward_core::{AuditEvent, Error};
use steward_types::{Decision, DecisionRequest, DecisionResponse, PrincipalRef};

use super::wire::{
    ACTION_HINT, AuthzenAction, AuthzenBody, AuthzenEntity, AuthzenJson, ENTITY_HINT,
    EvaluationRequest, EvaluationResponse, EvaluationsAnswer, EvaluationsOptions,
    EvaluationsRequest, EvaluationsResponse, action_name, entity_id, entity_type, merged_context,
    objects_where_expected, present,
};
use super::{
    MAX_EVALUATIONS, change_context, is_unknown, may_ask, principal_type, resource_ref,
    resource_type,
};
use crate::auth::Caller;
use crate::decisions::{decide, recorded_attributes, resolve_resource};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

// ---------------------------------------------------------------- evaluation

/// A complete evaluation, validated.
#[derive(Debug, Clone)]
struct Query {
    subject_type: String,
    subject_id: String,
    action: String,
    resource_type: String,
    resource_id: String,
    resource_properties: Map<String, Value>,
    context: Map<String, Value>,
}

impl Query {
    /// Subject, action and resource must all be there before their fields
    /// are looked at.
    fn of(req: &EvaluationRequest) -> Result<Query, Error> {
        let s = present(req.subject.as_ref(), "subject", ENTITY_HINT)?;
        let a = present(req.action.as_ref(), "action", ACTION_HINT)?;
        let r = present(req.resource.as_ref(), "resource", ENTITY_HINT)?;
        let q = Query {
            subject_type: entity_type(s, "subject")?,
            subject_id: entity_id(s, "subject")?,
            action: action_name(a)?,
            resource_type: entity_type(r, "resource")?,
            resource_id: entity_id(r, "resource")?,
            resource_properties: r.properties.clone().unwrap_or_default(),
            context: merged_context(Some(a), req.context.as_ref()),
        };
        // Checked before anything is looked up or recorded: even a request
        // refused as unknown is recorded with these, and a value no store
        // can keep must fail this request alone, not its batch of records.
        for (field, value) in [
            ("subject.type", &q.subject_type),
            ("subject.id", &q.subject_id),
            ("action.name", &q.action),
            ("resource.type", &q.resource_type),
            ("resource.id", &q.resource_id),
        ] {
            steward_core::validate::key(field, value)?;
        }
        Ok(q)
    }
}

/// The context of a denial.
fn denial_context(r: &DecisionResponse) -> Value {
    let reason = r
        .remediation
        .as_ref()
        .map(|h| h.message.clone())
        .filter(|m| !m.is_empty())
        .or_else(|| r.errors.first().cloned())
        .unwrap_or_else(|| "no policy permits this request".into());
    let outcome = match r.decision {
        Decision::ApprovalRequired => "approval_required",
        _ => "deny",
    };
    let mut context = json!({
        "decision_id": r.decision_id,
        "reason": reason,
        "outcome": outcome,
        "policies": r.policies.iter().map(|p| &p.id).collect::<Vec<_>>(),
    });
    if let Some(a) = &r.approval {
        // In the spirit of the draft AuthZEN access-request profile: what
        // to wait for, where, and until when.
        context["approval"] = json!({
            "id": a.id,
            "status": a.status,
            "approver_groups": a.groups,
            "expires_at": a.expires_at,
            "wait": { "method": "GET", "href": a.wait, "max_seconds": crate::approvals::MAX_WAIT_SECS },
            "retry": "send the identical request again once approved; it is allowed once",
        });
    }
    if let Some(roles) = r
        .remediation
        .as_ref()
        .map(|h| &h.roles_that_allow)
        .filter(|roles| !roles.is_empty())
    {
        context["roles_that_allow"] = json!(roles);
    }
    if let Some(q) = &r.exceeded {
        context["quota"] = json!(q);
    }
    context
}

/// The context of an allowed decision that quotas apply to: the tightest
/// quota's standing and any warnings.
fn quota_context(r: &DecisionResponse) -> Option<Value> {
    let q = r.quota.as_ref()?;
    let mut context = json!({ "decision_id": r.decision_id, "quota": q });
    if !r.warnings.is_empty() {
        context["warnings"] = json!(r.warnings.iter().map(|w| &w.message).collect::<Vec<_>>());
    }
    Some(context)
}

fn answer(r: &DecisionResponse) -> EvaluationResponse {
    match r.decision {
        Decision::Allow => EvaluationResponse {
            decision: true,
            context: quota_context(r),
        },
        Decision::Deny | Decision::ApprovalRequired => EvaluationResponse {
            decision: false,
            context: Some(denial_context(r)),
        },
    }
}

/// Record and answer a denial for something Steward does not know (a subject,
/// a resource type, a resource), in the shape of any other decision record.
async fn refuse(
    state: &AppState,
    caller: &Caller,
    q: &Query,
    message: String,
) -> Result<EvaluationResponse, Error> {
    let decision_id = format!("dec_{}", uuid::Uuid::now_v7().simple());
    let principal = refused_principal(state, caller.tenant_id(), q).await?;
    let attributes = refused_attributes(state, caller.tenant_id(), q).await?;
    let event = AuditEvent {
        action: "decision.deny".into(),
        resource_type: q.resource_type.clone(),
        resource_id: q.resource_id.clone(),
        before: None,
        after: Some(json!({
            "decision_id": decision_id,
            "decision": "deny",
            "principal": principal,
            "action": q.action,
            "resource": { "type": q.resource_type, "id": q.resource_id, "attributes": attributes },
            "context": q.context,
            "chain": [],
            "policies": [],
            "errors": [message],
            "api": "authzen",
        })),
        reason: Some(message.clone()),
    };
    state
        .audit
        .record(change_context(caller), event)
        .await
        .map(|_| ())?;
    Ok(EvaluationResponse {
        decision: false,
        context: Some(json!({
            "decision_id": decision_id,
            "reason": message,
            "outcome": "deny",
            "policies": [],
        })),
    })
}

/// The principal of a refusal, named as other decision records name theirs
/// (`kind`, `id`, `name`) when the subject is an identity Steward knows, so
/// that the refusal counts toward that identity's behaviour and is found
/// under it; otherwise the subject as the request gave it, with no kind.
async fn refused_principal(state: &AppState, tenant: &str, q: &Query) -> Result<Value, Error> {
    let known = match principal_type(&q.subject_type) {
        Some("agent") => state
            .store
            .agent_context(tenant, &q.subject_id)
            .await?
            .map(|ctx| ("agent", ctx.agent.id, ctx.agent.name)),
        Some(_) => state
            .store
            .human_context(tenant, &q.subject_id)
            .await?
            .map(|(h, _)| ("human", h.id, h.email)),
        None => None,
    };
    Ok(match known {
        Some((kind, id, name)) => json!({ "kind": kind, "id": id, "name": name }),
        None => json!({ "kind": null, "type": q.subject_type, "id": q.subject_id }),
    })
}

/// The resource attributes a refusal records: as a decision records them
/// (a declared type's attributes as the decision service resolves them,
/// stored ones over the request's, undeclared ones left out), never a value
/// the request claimed but the store would overrule. A resource type Steward
/// does not declare, or one of its own entities (agent, human, team, whose
/// attributes come from the inventory, not the request), records none.
/// Values a decision would refuse (`invalid_entity`, in the context or the
/// resource's attributes) refuse the request here too, before anything is
/// recorded.
async fn refused_attributes(
    state: &AppState,
    tenant: &str,
    q: &Query,
) -> Result<Map<String, Value>, Error> {
    let engine = state.engines.get(&state.store, tenant).await?;
    let Some(resource_type) = resource_type(&engine, &q.resource_type) else {
        return Ok(Map::new());
    };
    let resource = if engine.is_resource_type(&resource_type) {
        let r = resource_ref(
            resource_type.clone(),
            &q.resource_id,
            &q.resource_properties,
        );
        match resolve_resource(state, tenant, &engine, &r).await {
            Ok(resource) => Some(resource),
            Err(e) if is_unknown(&e) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    engine.check_values(&q.action, &resource_type, resource.as_ref(), &q.context)?;
    Ok(resource
        .map(|r| recorded_attributes(&engine, &r))
        .unwrap_or_default())
}

/// Evaluate one complete request through the decision service.
async fn evaluate(
    state: &AppState,
    caller: &Caller,
    q: &Query,
) -> Result<EvaluationResponse, Error> {
    // An agent asks about itself only, whatever it asks; checked before a
    // refusal is recorded under the subject it named.
    if let Caller::Agent { agent, .. } = caller {
        crate::decisions::asks_about_itself(
            agent,
            principal_type(&q.subject_type).unwrap_or_default(),
            &q.subject_id,
        )?;
    }
    let Some(principal_type) = principal_type(&q.subject_type) else {
        let message = format!(
            "subject.type: '{}' is not a kind of identity Steward knows (user, human or agent)",
            q.subject_type
        );
        return refuse(state, caller, q, message).await;
    };
    let engine = state.engines.get(&state.store, caller.tenant_id()).await?;
    let Some(resource_type) = resource_type(&engine, &q.resource_type) else {
        let message = format!(
            "resource.type: '{}' is neither a declared resource type nor agent, human, user or team",
            q.resource_type
        );
        return refuse(state, caller, q, message).await;
    };
    let request = DecisionRequest {
        principal: Some(PrincipalRef {
            principal_type: principal_type.into(),
            id: q.subject_id.clone(),
        }),
        action: q.action.clone(),
        resource: resource_ref(resource_type, &q.resource_id, &q.resource_properties),
        context: q.context.clone(),
        on_behalf_of: None,
        estimate: None,
        call_arguments: None,
    };
    match decide(state, caller, request).await {
        Ok(r) => Ok(answer(&r)),
        Err(e) if is_unknown(&e) => refuse(state, caller, q, e.message).await,
        Err(e) => Err(e),
    }
}

/// May this subject do this action on this resource? A deny is
/// `200 {"decision": false, "context": {...}}`; an unknown subject, resource
/// or action is a deny. Every decision is audited before it is answered.
#[utoipa::path(post, path = "/access/v1/evaluation", tag = "authzen",
    request_body = EvaluationRequest,
    responses(
        (status = 200, body = EvaluationResponse),
        (status = 400, body = steward_types::ErrorBody),
        (status = 401, body = steward_types::ErrorBody),
        (status = 403, body = steward_types::ErrorBody)))]
pub async fn evaluation(
    State(state): State<AppState>,
    caller: Caller,
    AuthzenJson(req): AuthzenJson<EvaluationRequest>,
) -> ApiResult<(axum::http::HeaderMap, Json<EvaluationResponse>)> {
    may_ask(&caller)?;
    let q = Query::of(&req)?;
    let answer = evaluate(&state, &caller, &q).await?;
    let headers = answer
        .context
        .as_ref()
        .and_then(|c| {
            serde_json::from_value::<steward_types::QuotaStatus>(c.get("quota")?.clone()).ok()
        })
        .map(|s| crate::quotas::headers(&s, chrono::Utc::now()))
        .unwrap_or_default();
    Ok((headers, Json(answer)))
}

// ---------------------------------------------------------------- evaluations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

impl Semantic {
    fn parse(options: Option<&EvaluationsOptions>) -> Result<Semantic, Error> {
        match options.and_then(|o| o.evaluations_semantic.as_deref()) {
            None | Some("execute_all") => Ok(Semantic::ExecuteAll),
            Some("deny_on_first_deny") => Ok(Semantic::DenyOnFirstDeny),
            Some("permit_on_first_permit") => Ok(Semantic::PermitOnFirstPermit),
            Some(other) => Err(Error::invalid(
                "options.evaluations_semantic",
                format!(
                    "'{other}' is not execute_all, deny_on_first_deny or permit_on_first_permit"
                ),
            )),
        }
    }

    /// Whether this decision ends the batch.
    fn stops_at(self, decision: bool) -> bool {
        match self {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !decision,
            Semantic::PermitOnFirstPermit => decision,
        }
    }
}

/// An item's entity over the default: an item that names it replaces the
/// default whole (AuthZEN: a key given in the item takes precedence).
fn merge_entity(
    item: Option<&AuthzenEntity>,
    default: Option<&AuthzenEntity>,
) -> Option<AuthzenEntity> {
    item.or(default).cloned()
}

/// An item's action over the default, the same way.
fn merge_action(
    item: Option<&AuthzenAction>,
    default: Option<&AuthzenAction>,
) -> Option<AuthzenAction> {
    item.or(default).cloned()
}

/// An item with the batch's top level as its defaults (an item's own
/// context replaces the default context whole).
fn with_defaults(item: &EvaluationRequest, defaults: &EvaluationsRequest) -> EvaluationRequest {
    EvaluationRequest {
        subject: merge_entity(item.subject.as_ref(), defaults.subject.as_ref()),
        action: merge_action(item.action.as_ref(), defaults.action.as_ref()),
        resource: merge_entity(item.resource.as_ref(), defaults.resource.as_ref()),
        context: item.context.as_ref().or(defaults.context.as_ref()).cloned(),
    }
}

/// An item that could not be evaluated: denied in place, with the error.
fn item_error(e: &Error) -> EvaluationResponse {
    EvaluationResponse {
        decision: false,
        context: Some(json!({
            "error": { "status": e.code.http_status(), "code": e.code, "message": e.message }
        })),
    }
}

/// One item: parse, apply the defaults, validate, evaluate. Client errors
/// become an error in the item's place; server errors fail the request.
async fn evaluate_item(
    state: &AppState,
    caller: &Caller,
    defaults: &EvaluationsRequest,
    index: usize,
    mut item: Value,
) -> Result<EvaluationResponse, Error> {
    if let Err(e) = objects_where_expected(
        &mut item,
        &format!("evaluations[{index}]"),
        EvaluationRequest::READS,
    ) {
        return Ok(item_error(&e));
    }
    let item: EvaluationRequest = match serde_json::from_value(item) {
        Ok(i) => i,
        Err(e) => {
            return Ok(item_error(&Error::invalid(
                &format!("evaluations[{index}]"),
                format!("does not match the expected shape: {e}"),
            )));
        }
    };
    let outcome = match Query::of(&with_defaults(&item, defaults)) {
        Ok(q) => evaluate(state, caller, &q).await,
        Err(e) => Err(e),
    };
    match outcome {
        // Evaluated items are exactly {"decision": bool}.
        Ok(r) => Ok(EvaluationResponse {
            decision: r.decision,
            context: None,
        }),
        Err(e) if e.code.http_status() < 500 => Ok(item_error(&e)),
        Err(e) => Err(e),
    }
}

/// Several decisions in one request, answered in request order. Top-level
/// `subject`, `action`, `resource` and `context` are defaults for every item
/// (an item's own replaces them). `options.evaluations_semantic`:
/// `execute_all` (default) answers every item; `deny_on_first_deny` stops
/// after the first denial and `permit_on_first_permit` after the first permit
/// (the answer ends with that item; later items are not evaluated). Without
/// `evaluations` (or with an empty array) this is a single evaluation of the
/// top level, answered as `{"decision": ...}`.
#[utoipa::path(post, path = "/access/v1/evaluations", tag = "authzen",
    request_body = EvaluationsRequest,
    responses(
        (status = 200, body = EvaluationsAnswer),
        (status = 400, body = steward_types::ErrorBody),
        (status = 401, body = steward_types::ErrorBody),
        (status = 403, body = steward_types::ErrorBody)))]
pub async fn evaluations(
    State(state): State<AppState>,
    caller: Caller,
    AuthzenJson(mut req): AuthzenJson<EvaluationsRequest>,
) -> ApiResult<Json<EvaluationsAnswer>> {
    may_ask(&caller)?;
    let semantic = Semantic::parse(req.options.as_ref())?;
    let items = req.evaluations.take().unwrap_or_default();
    if items.is_empty() {
        // The top level alone: an empty item takes every default.
        let q = Query::of(&with_defaults(&EvaluationRequest::default(), &req))?;
        return Ok(Json(EvaluationsAnswer::Single(
            evaluate(&state, &caller, &q).await?,
        )));
    }
    if items.len() > MAX_EVALUATIONS {
        return Err(ApiError(Error::invalid(
            "evaluations",
            format!(
                "{} items; at most {MAX_EVALUATIONS} per request",
                items.len()
            ),
        )));
    }
    let mut answers = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let answer = evaluate_item(&state, &caller, &req, index, item).await?;
        let stop = semantic.stops_at(answer.decision);
        answers.push(answer);
        if stop {
            break;
        }
    }
    Ok(Json(EvaluationsAnswer::Batch(EvaluationsResponse {
        evaluations: answers,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_replaces_the_default_whole() {
        let default = AuthzenEntity {
            entity_type: Some("record".into()),
            id: Some("r0".into()),
            properties: Some(Map::from_iter([("a".to_string(), json!(1))])),
        };
        let item = AuthzenEntity {
            id: Some("r1".into()),
            ..Default::default()
        };
        // Not completed from the default: the item is missing its type.
        assert_eq!(merge_entity(Some(&item), Some(&default)), Some(item));
        assert_eq!(merge_entity(None, Some(&default)), Some(default.clone()));
        let named = AuthzenAction {
            name: Some("read".into()),
            properties: None,
        };
        assert_eq!(
            merge_action(Some(&AuthzenAction::default()), Some(&named)),
            Some(AuthzenAction::default())
        );
    }

    #[test]
    fn semantics_stop_where_they_should() {
        assert!(!Semantic::ExecuteAll.stops_at(false));
        assert!(Semantic::DenyOnFirstDeny.stops_at(false));
        assert!(!Semantic::DenyOnFirstDeny.stops_at(true));
        assert!(Semantic::PermitOnFirstPermit.stops_at(true));
        let bad = EvaluationsOptions {
            evaluations_semantic: Some("sometimes".into()),
        };
        assert!(Semantic::parse(Some(&bad)).is_err());
    }

    #[test]
    fn approval_required_is_a_false_decision_that_says_so() {
        let response = DecisionResponse {
            decision: Decision::ApprovalRequired,
            decision_id: "dec_1".into(),
            policies: vec![],
            errors: vec![],
            chain: vec![],
            remediation: Some(steward_types::Remediation {
                message: "a human must approve refunds over 100".into(),
                ..Default::default()
            }),
            approval: None,
            quota: None,
            warnings: Vec::new(),
            exceeded: None,
        };
        let a = answer(&response);
        assert!(!a.decision);
        let context = a.context.unwrap_or_default();
        assert_eq!(context["outcome"], "approval_required");
        assert_eq!(context["decision_id"], "dec_1");
        assert_eq!(context["reason"], "a human must approve refunds over 100");
        let allowed = answer(&DecisionResponse {
            decision: Decision::Allow,
            remediation: None,
            ..response
        });
        assert_eq!(
            serde_json::to_value(&allowed).ok(),
            Some(json!({"decision": true}))
        );
    }
}
