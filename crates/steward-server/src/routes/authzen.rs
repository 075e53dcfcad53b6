//! The OpenID AuthZEN Authorization API 1.0 on top of Steward's decision
//! service: `POST /access/v1/evaluation`, `POST /access/v1/evaluations`,
//! `POST /access/v1/search/{subject,resource,action}` and
//! `GET /.well-known/authzen-configuration`.
//!
//! # How AuthZEN maps onto Steward
//!
//! - **Subject.** `type` `user` or `human` (any case) is a Steward human,
//!   looked up by id, e-mail or external id (the id the identity provider
//!   knows them by, such as the Todo scenario's PIDs); `agent` is an agent,
//!   by id or name. Subject `properties` are ignored: Steward's inventory
//!   (roles, teams, persona, lifecycle state) is the source of truth for
//!   identities, and a caller cannot talk a subject into a role. An unknown
//!   subject, or a subject type other than these, is a denial, not an error.
//! - **Resource.** If the tenant declares a resource type with exactly the
//!   request's `type` (for example `todo`, or `user` in the Todo scenario), the
//!   resource is of that type; its `properties` become attributes (laid over
//!   the stored attributes of a known resource with that id; undeclared ones
//!   are ignored). Otherwise `agent` is a Steward agent (id or name), `human`
//!   or `user` a human (id, e-mail or external id) and `team` a team (id or
//!   name), with their attributes from the inventory. Any other type, or an
//!   agent, human or team that does not exist, is a denial.
//! - **Action.** `name` is the Steward action; an undeclared action is a
//!   denial. The action's `properties` are merged into the context (a key in
//!   `context` wins), so they are usable as `context.NAME` once the action
//!   declares them.
//! - **Context.** The request's `context` object is the decision context;
//!   attributes the action does not declare are ignored.
//!
//! # Answers
//!
//! `{"decision": true}` for an allow. A deny is `200 {"decision": false,
//! "context": {...}}` with the `decision_id` (its audit record), a `reason` a
//! person can act on (Steward's remediation hint), the `outcome` (`deny`, or
//! `approval_required` until the approvals feature answers those) and the
//! deciding policy ids. In a batch each evaluated item is exactly
//! `{"decision": bool}` (interop harnesses compare items as JSON text); an item
//! that could not be evaluated (missing fields once defaults are applied,
//! wrong types, an agent asking about another) is `{"decision": false,
//! "context": {"error": {"status", "code", "message"}}}` in its place.
//! Malformed requests (not JSON, missing or mistyped subject, action or
//! resource fields, an unknown `evaluations_semantic`) are `400` with the
//! catalogue's error body; unknown fields are ignored.
//!
//! # Who may ask
//!
//! An enforcement point with an admin token asks about anyone; an agent with
//! its own key asks about itself only (subject search needs an admin token).
//!
//! # Auditing
//!
//! Every evaluation, including the denials for unknown subjects, resource
//! types or resources, is recorded (`decision.allow`, `decision.deny`,
//! `decision.approval_required`) before it is answered, exactly as
//! `POST /v1/decisions` records. Items of a batch that could not be evaluated
//! decided nothing and are not recorded. A search evaluates every candidate it
//! examines but records one summary entry per request (`decision.search`: the
//! fixed parts of the query, how many candidates were examined and the ids it
//! returned); recording one decision per candidate would flood the log with
//! the denials that filter the results.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, header};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use steward_core::{AuditEvent, ChangeContext, Error};
use steward_policy::{DecisionInput, Engine, EntityData, Subject};
use steward_types::{
    AgentFilter, Decision, DecisionRequest, DecisionResponse, ErrorCode, PageQuery, PolicyQuery,
    PrincipalRef, ResourceRef,
};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::decisions::{decide, resolve_chain, resolve_resource};
use crate::error::{ApiError, ApiJson, ApiResult, current_request_id};
use crate::state::AppState;

/// Most items one `evaluations` request may carry.
pub const MAX_EVALUATIONS: usize = 1000;
/// Default number of results per search page.
pub const DEFAULT_SEARCH_LIMIT: u32 = 50;
/// Largest number of results per search page.
pub const MAX_SEARCH_LIMIT: u32 = 500;
/// Most candidates one search request examines; past this it answers what it
/// found with a `next_token` to continue from.
pub const MAX_EXAMINED: usize = 5000;
/// Candidates read from the store at a time while searching.
const SCAN_BATCH: u32 = 100;

// ---------------------------------------------------------------- wire types

/// A subject or resource: `type` and `id` (both required in an evaluation;
/// see each search for which it needs), and optional `properties`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuthzenEntity {
    /// Its type (`user`, `agent`, a declared resource type...).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    /// Its id, scoped to the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Further attributes (resources: become attributes; subjects: ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
}

/// An action: `name` (required) and optional `properties`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuthzenAction {
    /// The Steward action's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Merged into the context (a key in `context` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
}

/// `POST /access/v1/evaluation`, and each item of `evaluations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationRequest {
    /// Who: `{type, id}`.
    #[serde(default)]
    pub subject: Option<AuthzenEntity>,
    /// What: `{name}`.
    #[serde(default)]
    pub action: Option<AuthzenAction>,
    /// On what: `{type, id, properties?}`.
    #[serde(default)]
    pub resource: Option<AuthzenEntity>,
    /// The decision context.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
}

/// How a batch is executed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationsOptions {
    /// `execute_all` (default), `deny_on_first_deny` or `permit_on_first_permit`.
    #[serde(default)]
    pub evaluations_semantic: Option<String>,
}

/// `POST /access/v1/evaluations`: the top-level subject, action, resource and
/// context are defaults for each item of `evaluations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationsRequest {
    /// Default subject.
    #[serde(default)]
    pub subject: Option<AuthzenEntity>,
    /// Default action.
    #[serde(default)]
    pub action: Option<AuthzenAction>,
    /// Default resource.
    #[serde(default)]
    pub resource: Option<AuthzenEntity>,
    /// Default context.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
    /// Execution options.
    #[serde(default)]
    pub options: Option<EvaluationsOptions>,
    /// The evaluations; absent or empty means one evaluation of the defaults.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EvaluationRequest>>)]
    pub evaluations: Option<Vec<Value>>,
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationResponse {
    /// Whether the request may go ahead.
    pub decision: bool,
    /// For a denial: `decision_id`, `reason`, `outcome`, `policies`; for an
    /// item that could not be evaluated: `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// The decisions of a batch, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationsResponse {
    /// One per evaluated item (fewer when a short-circuit semantic stopped).
    pub evaluations: Vec<EvaluationResponse>,
}

/// The answer of `/access/v1/evaluations`: a batch, or a single decision when
/// the request had no `evaluations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EvaluationsAnswer {
    /// The request had items.
    Batch(EvaluationsResponse),
    /// The request had none: one evaluation of the top level.
    Single(EvaluationResponse),
}

/// Paging of a search request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchPage {
    /// The `next_token` of the previous page.
    #[serde(default)]
    pub next_token: Option<String>,
    /// Most results wanted, 1..=500 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A search: the element searched for carries only its `type` (subject,
/// resource) or is absent (action); the others are fixed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchRequest {
    /// The subject (subject search: only `type`).
    #[serde(default)]
    pub subject: Option<AuthzenEntity>,
    /// The action (absent in an action search).
    #[serde(default)]
    pub action: Option<AuthzenAction>,
    /// The resource (resource search: only `type`).
    #[serde(default)]
    pub resource: Option<AuthzenEntity>,
    /// The decision context.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
    /// Paging.
    #[serde(default)]
    pub page: Option<SearchPage>,
}

/// Paging of a search answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchPageOut {
    /// Pass in `page.next_token` for more; empty on the last page.
    pub next_token: String,
}

/// The allowed subjects, resources or actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    /// `{type, id}` for subjects and resources, `{name}` for actions.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
    /// Paging.
    pub page: SearchPageOut,
}

/// `/.well-known/authzen-configuration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuthzenConfiguration {
    /// Base URL of this decision point.
    pub policy_decision_point: String,
    /// `POST` single evaluations here.
    pub access_evaluation_endpoint: String,
    /// `POST` batches here.
    pub access_evaluations_endpoint: String,
    /// Subject search.
    pub search_subject_endpoint: String,
    /// Resource search.
    pub search_resource_endpoint: String,
    /// Action search.
    pub search_action_endpoint: String,
}

// ---------------------------------------------------------------- extractor

/// [`ApiJson`], except that a body sent with another content type is a `400`
/// (AuthZEN's answer for any malformed request) rather than a `415`.
pub struct AuthzenJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AuthzenJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match ApiJson::<T>::from_request(req, state).await {
            Ok(ApiJson(v)) => Ok(AuthzenJson(v)),
            Err(ApiError(e)) if e.code == ErrorCode::UnsupportedMediaType => {
                Err(ApiError::new(ErrorCode::InvalidRequest, e.message))
            }
            Err(e) => Err(e),
        }
    }
}

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

/// A required, non-empty string field.
fn required(value: Option<&String>, field: &str, hint: &str) -> Result<String, Error> {
    match value {
        None => Err(Error::invalid(field, format!("required ({hint})"))),
        Some(v) if v.trim().is_empty() => Err(Error::invalid(field, "must not be empty")),
        Some(v) => Ok(v.clone()),
    }
}

fn present<'a, T>(value: Option<&'a T>, field: &str, hint: &str) -> Result<&'a T, Error> {
    value.ok_or_else(|| Error::invalid(field, format!("required ({hint})")))
}

/// The action's properties under the request's context.
fn merged_context(
    action: Option<&AuthzenAction>,
    context: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut merged = action
        .and_then(|a| a.properties.clone())
        .unwrap_or_default();
    if let Some(c) = context {
        merged.extend(c.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    merged
}

impl Query {
    fn from_parts(
        subject: Option<&AuthzenEntity>,
        action: Option<&AuthzenAction>,
        resource: Option<&AuthzenEntity>,
        context: Option<&Map<String, Value>>,
    ) -> Result<Query, Error> {
        let s = present(subject, "subject", "{\"type\": ..., \"id\": ...}")?;
        let a = present(action, "action", "{\"name\": ...}")?;
        let r = present(resource, "resource", "{\"type\": ..., \"id\": ...}")?;
        Ok(Query {
            subject_type: required(s.entity_type.as_ref(), "subject.type", "a string")?,
            subject_id: required(s.id.as_ref(), "subject.id", "a string")?,
            action: required(a.name.as_ref(), "action.name", "a string")?,
            resource_type: required(r.entity_type.as_ref(), "resource.type", "a string")?,
            resource_id: required(r.id.as_ref(), "resource.id", "a string")?,
            resource_properties: r.properties.clone().unwrap_or_default(),
            context: merged_context(Some(a), context),
        })
    }
}

/// Steward's principal type for an AuthZEN subject type.
fn principal_type(subject_type: &str) -> Option<&'static str> {
    match subject_type.to_ascii_lowercase().as_str() {
        "user" | "human" => Some("human"),
        "agent" => Some("agent"),
        _ => None,
    }
}

/// Steward's resource type for an AuthZEN resource type: a declared type of
/// that exact name, else agent, human/user or team.
fn resource_type(engine: &Engine, requested: &str) -> Option<String> {
    if engine.is_resource_type(requested) {
        return Some(requested.to_string());
    }
    match requested.to_ascii_lowercase().as_str() {
        "agent" => Some("Agent".into()),
        "human" | "user" => Some("Human".into()),
        "team" => Some("Team".into()),
        _ => None,
    }
}

/// Errors that mean "Steward does not know this", which AuthZEN answers
/// with a denial.
fn is_unknown(e: &Error) -> bool {
    matches!(
        e.code,
        ErrorCode::UnknownReference | ErrorCode::UnknownResourceType | ErrorCode::NotFound
    )
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
    if let Some(roles) = r
        .remediation
        .as_ref()
        .map(|h| &h.roles_that_allow)
        .filter(|roles| !roles.is_empty())
    {
        context["roles_that_allow"] = json!(roles);
    }
    context
}

fn answer(r: &DecisionResponse) -> EvaluationResponse {
    match r.decision {
        Decision::Allow => EvaluationResponse {
            decision: true,
            context: None,
        },
        Decision::Deny | Decision::ApprovalRequired => EvaluationResponse {
            decision: false,
            context: Some(denial_context(r)),
        },
    }
}

fn change_context(caller: &Caller) -> ChangeContext {
    ChangeContext {
        tenant_id: caller.tenant_id().into(),
        actor: caller.actor(),
        request_id: current_request_id(),
        now: Utc::now(),
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
    let event = AuditEvent {
        action: "decision.deny".into(),
        resource_type: q.resource_type.clone(),
        resource_id: q.resource_id.clone(),
        before: None,
        after: Some(json!({
            "decision_id": decision_id,
            "decision": "deny",
            "principal": { "type": q.subject_type, "id": q.subject_id },
            "action": q.action,
            "resource": { "type": q.resource_type, "id": q.resource_id, "attributes": q.resource_properties },
            "context": q.context,
            "chain": [],
            "policies": [],
            "errors": [message],
            "api": "authzen",
        })),
        reason: Some(message.clone()),
    };
    state
        .store
        .record_event(&change_context(caller), event)
        .await?;
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

/// Evaluate one complete request through the decision service.
async fn evaluate(
    state: &AppState,
    caller: &Caller,
    q: &Query,
) -> Result<EvaluationResponse, Error> {
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
        resource: ResourceRef {
            resource_type,
            id: q.resource_id.clone(),
            attributes: q
                .resource_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        },
        context: q.context.clone(),
        on_behalf_of: None,
    };
    match decide(state, caller, request).await {
        Ok(r) => Ok(answer(&r)),
        Err(e) if is_unknown(&e) => refuse(state, caller, q, e.message).await,
        Err(e) => Err(e),
    }
}

/// Admin tokens ask about anyone, agents about themselves (checked by the
/// decision service), auditor tokens not at all.
fn may_ask(caller: &Caller) -> ApiResult<()> {
    if let Caller::Token { .. } = caller {
        caller.admin()?;
    }
    Ok(())
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
) -> ApiResult<Json<EvaluationResponse>> {
    may_ask(&caller)?;
    let q = Query::from_parts(
        req.subject.as_ref(),
        req.action.as_ref(),
        req.resource.as_ref(),
        req.context.as_ref(),
    )?;
    Ok(Json(evaluate(&state, &caller, &q).await?))
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

/// An item's entity over the default: the item's replaces the default's
/// whole, except that a missing `type` or `id` falls back to the default's.
fn merge_entity(
    item: Option<&AuthzenEntity>,
    default: Option<&AuthzenEntity>,
) -> Option<AuthzenEntity> {
    match (item, default) {
        (Some(i), Some(d)) => Some(AuthzenEntity {
            entity_type: i.entity_type.clone().or_else(|| d.entity_type.clone()),
            id: i.id.clone().or_else(|| d.id.clone()),
            properties: i.properties.clone(),
        }),
        (Some(i), None) => Some(i.clone()),
        (None, d) => d.cloned(),
    }
}

fn merge_action(
    item: Option<&AuthzenAction>,
    default: Option<&AuthzenAction>,
) -> Option<AuthzenAction> {
    match (item, default) {
        (Some(i), Some(d)) => Some(AuthzenAction {
            name: i.name.clone().or_else(|| d.name.clone()),
            properties: i.properties.clone(),
        }),
        (Some(i), None) => Some(i.clone()),
        (None, d) => d.cloned(),
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
    item: Value,
) -> Result<EvaluationResponse, Error> {
    let item: EvaluationRequest = match serde_json::from_value(item) {
        Ok(i) => i,
        Err(e) => {
            return Ok(item_error(&Error::invalid(
                &format!("evaluations[{index}]"),
                format!("does not match the expected shape: {e}"),
            )));
        }
    };
    let subject = merge_entity(item.subject.as_ref(), defaults.subject.as_ref());
    let action = merge_action(item.action.as_ref(), defaults.action.as_ref());
    let resource = merge_entity(item.resource.as_ref(), defaults.resource.as_ref());
    let context = item.context.as_ref().or(defaults.context.as_ref());
    let outcome = match Query::from_parts(
        subject.as_ref(),
        action.as_ref(),
        resource.as_ref(),
        context,
    ) {
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
        let q = Query::from_parts(
            req.subject.as_ref(),
            req.action.as_ref(),
            req.resource.as_ref(),
            req.context.as_ref(),
        )?;
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

// ---------------------------------------------------------------- search

/// Which search a page token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchKind {
    Subject,
    Resource,
    Action,
}

impl SearchKind {
    fn as_str(self) -> &'static str {
        match self {
            SearchKind::Subject => "subject",
            SearchKind::Resource => "resource",
            SearchKind::Action => "action",
        }
    }
}

/// An opaque page token: the kind of search and the position, hex-encoded.
fn encode_token(kind: SearchKind, position: &str) -> String {
    format!("{}:{position}", kind.as_str())
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_token(kind: SearchKind, token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Error::invalid(
            "page.next_token",
            format!("not a token from a {} search", kind.as_str()),
        )
    };
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    match text.split_once(':') {
        Some((k, position)) if k == kind.as_str() && !position.is_empty() => {
            Ok(Some(position.to_string()))
        }
        _ => Err(bad()),
    }
}

/// The page size and start position of a search.
fn paging(kind: SearchKind, page: Option<&SearchPage>) -> Result<(usize, Option<String>), Error> {
    let limit = page.and_then(|p| p.limit).unwrap_or(DEFAULT_SEARCH_LIMIT);
    if limit == 0 || limit > MAX_SEARCH_LIMIT {
        return Err(Error::invalid(
            "page.limit",
            format!("{limit} is not between 1 and {MAX_SEARCH_LIMIT}"),
        ));
    }
    let start = match page.and_then(|p| p.next_token.as_deref()) {
        Some(token) => decode_token(kind, token)?,
        None => None,
    };
    Ok((limit as usize, start))
}

/// Where candidates come from.
#[derive(Debug, Clone)]
enum Source {
    Humans,
    Agents,
    Teams,
    Entities(String),
}

/// One candidate: its store key (for paging), the id to answer with, and
/// what is needed to evaluate it.
enum Candidate {
    Human {
        key: String,
        answer_id: String,
    },
    Agent {
        key: String,
        answer_id: String,
    },
    Team {
        key: String,
        name: String,
    },
    Entity {
        key: String,
        attributes: Map<String, Value>,
    },
}

impl Candidate {
    fn key(&self) -> &str {
        match self {
            Candidate::Human { key, .. }
            | Candidate::Agent { key, .. }
            | Candidate::Team { key, .. }
            | Candidate::Entity { key, .. } => key,
        }
    }

    /// The id a PEP names it by: a human's external id (else e-mail), an
    /// agent's or team's name, a resource's id. Each resolves back to the
    /// same identity in an evaluation.
    fn answer_id(&self) -> &str {
        match self {
            Candidate::Human { answer_id, .. } | Candidate::Agent { answer_id, .. } => answer_id,
            Candidate::Team { name, .. } => name,
            Candidate::Entity { key, .. } => key,
        }
    }
}

/// One page of candidates from the store.
async fn candidates(
    state: &AppState,
    tenant: &str,
    source: &Source,
    cursor: Option<String>,
) -> Result<(Vec<Candidate>, Option<String>), Error> {
    let limit = Some(SCAN_BATCH);
    Ok(match source {
        Source::Humans => {
            let page = state
                .store
                .list_humans(
                    tenant,
                    PageQuery {
                        cursor,
                        limit,
                        ..Default::default()
                    },
                )
                .await?;
            let items = page
                .items
                .into_iter()
                .map(|h| Candidate::Human {
                    answer_id: h.external_id.clone().unwrap_or_else(|| h.email.clone()),
                    key: h.id,
                })
                .collect();
            (items, page.next_cursor)
        }
        Source::Agents => {
            let page = state
                .store
                .list_agents(
                    tenant,
                    AgentFilter {
                        cursor,
                        limit,
                        ..Default::default()
                    },
                )
                .await?;
            let items = page
                .items
                .into_iter()
                .map(|a| Candidate::Agent {
                    answer_id: a.name,
                    key: a.id,
                })
                .collect();
            (items, page.next_cursor)
        }
        Source::Teams => {
            let page = state
                .store
                .list_teams(
                    tenant,
                    PageQuery {
                        cursor,
                        limit,
                        ..Default::default()
                    },
                )
                .await?;
            let items = page
                .items
                .into_iter()
                .map(|t| Candidate::Team {
                    key: t.id,
                    name: t.name,
                })
                .collect();
            (items, page.next_cursor)
        }
        Source::Entities(t) => {
            let page = state
                .store
                .list_resource_entities(tenant, t, PolicyQuery { cursor, limit })
                .await?;
            let items = page
                .items
                .into_iter()
                .map(|e| Candidate::Entity {
                    key: e.id,
                    attributes: e.attributes.into_iter().collect(),
                })
                .collect();
            (items, page.next_cursor)
        }
    })
}

/// What a search holds fixed while it varies the subject or the resource.
enum Fixed {
    /// Subject search: the resource.
    Resource(EntityData),
    /// Resource search: the subject's chain, the type searched, and the
    /// properties a resource must have (resource search only).
    Chain {
        chain: Vec<Subject>,
        resource_type: String,
        filter: Map<String, Value>,
    },
}

/// A subject or resource search in progress.
struct Scan<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    engine: &'a Engine,
    action: String,
    context: Map<String, Value>,
    fixed: Fixed,
}

impl Scan<'_> {
    fn allowed(&self, chain: Vec<Subject>, resource: EntityData) -> Result<bool, Error> {
        let outcome = self.engine.decide(&DecisionInput {
            chain,
            action: self.action.clone(),
            resource,
            context: self.context.clone(),
        })?;
        Ok(outcome.decision == Decision::Allow)
    }

    async fn check(&self, c: &Candidate) -> Result<bool, Error> {
        let tenant = self.caller.tenant_id();
        match &self.fixed {
            Fixed::Resource(resource) => {
                let principal_type = match c {
                    Candidate::Human { .. } => "human",
                    Candidate::Agent { .. } => "agent",
                    _ => return Ok(false),
                };
                let principal = PrincipalRef {
                    principal_type: principal_type.into(),
                    id: c.key().to_string(),
                };
                let chain = resolve_chain(self.state, self.caller, Some(&principal), None).await?;
                self.allowed(chain, resource.clone())
            }
            Fixed::Chain {
                chain,
                resource_type,
                filter,
            } => {
                let resource = match c {
                    Candidate::Entity { key, attributes } => {
                        if filter.iter().any(|(k, v)| attributes.get(k) != Some(v)) {
                            return Ok(false);
                        }
                        let declared = self.engine.resource_attributes(resource_type);
                        let mut attrs = attributes.clone();
                        attrs.retain(|k, _| declared.is_some_and(|d| d.contains_key(k)));
                        EntityData {
                            entity_type: resource_type.clone(),
                            id: key.clone(),
                            attrs,
                            parents: vec![],
                        }
                    }
                    Candidate::Team { name, .. } => EntityData {
                        entity_type: "Team".into(),
                        id: name.clone(),
                        attrs: Map::new(),
                        parents: vec![],
                    },
                    Candidate::Human { key, .. } | Candidate::Agent { key, .. } => {
                        let kind = if matches!(c, Candidate::Human { .. }) {
                            "Human"
                        } else {
                            "Agent"
                        };
                        let r = ResourceRef {
                            resource_type: kind.into(),
                            id: key.clone(),
                            attributes: BTreeMap::new(),
                        };
                        resolve_resource(self.state, tenant, self.engine, &r).await?
                    }
                };
                self.allowed(chain.clone(), resource)
            }
        }
    }

    /// Walk the candidates from `start`, keeping the allowed ones, until
    /// `limit` results or [`MAX_EXAMINED`] candidates; the next token is the
    /// last candidate examined when any remain.
    async fn run(
        &self,
        source: &Source,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>, usize), Error> {
        let tenant = self.caller.tenant_id();
        let mut results = Vec::new();
        let mut examined = 0;
        let mut cursor = start;
        loop {
            let (items, next) = candidates(self.state, tenant, source, cursor.clone()).await?;
            let count = items.len();
            for (i, c) in items.iter().enumerate() {
                examined += 1;
                if self.check(c).await? {
                    results.push(c.answer_id().to_string());
                }
                if results.len() >= limit || examined >= MAX_EXAMINED {
                    let more = i + 1 < count || next.is_some();
                    return Ok((results, more.then(|| c.key().to_string()), examined));
                }
            }
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok((results, None, examined)),
            }
        }
    }
}

/// One summary audit record per search request.
async fn record_search(
    state: &AppState,
    caller: &Caller,
    kind: SearchKind,
    req: &SearchRequest,
    examined: usize,
    results: &[Value],
    next_token: &str,
) -> Result<(), Error> {
    let event = AuditEvent {
        action: "decision.search".into(),
        resource_type: "authzen_search".into(),
        resource_id: kind.as_str().into(),
        before: None,
        after: Some(json!({
            "search": kind.as_str(),
            "subject": req.subject,
            "action": req.action,
            "resource": req.resource,
            "context": req.context,
            "examined": examined,
            "results": results,
            "next_token": next_token,
            "api": "authzen",
        })),
        reason: None,
    };
    state
        .store
        .record_event(&change_context(caller), event)
        .await
}

async fn finish_search(
    state: &AppState,
    caller: &Caller,
    kind: SearchKind,
    req: &SearchRequest,
    results: Vec<Value>,
    next: Option<String>,
    examined: usize,
) -> ApiResult<Json<SearchResponse>> {
    let next_token = next.map(|n| encode_token(kind, &n)).unwrap_or_default();
    record_search(state, caller, kind, req, examined, &results, &next_token).await?;
    Ok(Json(SearchResponse {
        results,
        page: SearchPageOut { next_token },
    }))
}

/// The subject chain a resource or action search holds fixed; `None` when
/// Steward does not know the subject (no results, not an error).
async fn fixed_chain(
    state: &AppState,
    caller: &Caller,
    subject_type: &str,
    subject_id: &str,
) -> Result<Option<Vec<Subject>>, Error> {
    let Some(principal_type) = principal_type(subject_type) else {
        return Ok(None);
    };
    let principal = PrincipalRef {
        principal_type: principal_type.into(),
        id: subject_id.into(),
    };
    match resolve_chain(state, caller, Some(&principal), None).await {
        Ok(chain) => Ok(Some(chain)),
        Err(e) if is_unknown(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The resource a subject or action search holds fixed; `None` when Steward
/// does not know it.
async fn fixed_resource(
    state: &AppState,
    tenant: &str,
    engine: &Engine,
    r: &AuthzenEntity,
    resource_type_name: &str,
    resource_id: &str,
) -> Result<Option<EntityData>, Error> {
    let Some(resource_type) = resource_type(engine, resource_type_name) else {
        return Ok(None);
    };
    let r = ResourceRef {
        resource_type,
        id: resource_id.into(),
        attributes: r
            .properties
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    };
    match resolve_resource(state, tenant, engine, &r).await {
        Ok(e) => Ok(Some(e)),
        Err(e) if is_unknown(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// No candidates: nothing found, nothing examined.
fn nothing() -> (Vec<String>, Option<String>, usize) {
    (Vec::new(), None, 0)
}

/// Which subjects of `subject.type` (`user`/`human`: humans; `agent`:
/// agents) may do `action` on `resource`? Results are `{type, id}` with the
/// requested type; humans are named by external id, else e-mail; agents by
/// name. Needs an admin token. Paged with `page.next_token` and `page.limit`.
#[utoipa::path(post, path = "/access/v1/search/subject", tag = "authzen",
    request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, body = steward_types::ErrorBody),
        (status = 403, body = steward_types::ErrorBody)))]
pub async fn search_subject(
    State(state): State<AppState>,
    caller: Caller,
    AuthzenJson(req): AuthzenJson<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    if !matches!(caller, Caller::Token { .. }) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "subject search needs an admin token; an agent asks only about itself",
        ));
    }
    caller.admin()?;
    let kind = SearchKind::Subject;
    let s = present(req.subject.as_ref(), "subject", "{\"type\": ...}")?;
    let subject_type = required(s.entity_type.as_ref(), "subject.type", "a string")?;
    let a = present(req.action.as_ref(), "action", "{\"name\": ...}")?;
    let action = required(a.name.as_ref(), "action.name", "a string")?;
    let r = present(
        req.resource.as_ref(),
        "resource",
        "{\"type\": ..., \"id\": ...}",
    )?;
    let rtype = required(r.entity_type.as_ref(), "resource.type", "a string")?;
    let rid = required(r.id.as_ref(), "resource.id", "a string")?;
    let (limit, start) = paging(kind, req.page.as_ref())?;
    let tenant = caller.tenant_id().to_string();
    let engine = state.engines.get(&state.store, &tenant).await?;
    let source = match principal_type(&subject_type) {
        Some("human") => Some(Source::Humans),
        Some(_) => Some(Source::Agents),
        None => None,
    };
    let resource = fixed_resource(&state, &tenant, &engine, r, &rtype, &rid).await?;
    let (ids, next, examined) = match (source, resource) {
        (Some(source), Some(resource)) => {
            let scan = Scan {
                state: &state,
                caller: &caller,
                engine: &engine,
                action,
                context: merged_context(Some(a), req.context.as_ref()),
                fixed: Fixed::Resource(resource),
            };
            scan.run(&source, start, limit).await?
        }
        _ => nothing(),
    };
    let results = ids
        .into_iter()
        .map(|id| json!({ "type": subject_type, "id": id }))
        .collect();
    finish_search(&state, &caller, kind, &req, results, next, examined).await
}

/// Which resources of `resource.type` may `subject` do `action` on? Declared
/// types list the known resources (`POST /v1/entities`; `resource.properties`
/// keeps those whose stored attributes equal them); `agent`, `human`/`user`
/// and `team` list the inventory. Paged with `page.next_token` and
/// `page.limit`.
#[utoipa::path(post, path = "/access/v1/search/resource", tag = "authzen",
    request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, body = steward_types::ErrorBody),
        (status = 403, body = steward_types::ErrorBody)))]
pub async fn search_resource(
    State(state): State<AppState>,
    caller: Caller,
    AuthzenJson(req): AuthzenJson<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    may_ask(&caller)?;
    let kind = SearchKind::Resource;
    let s = present(
        req.subject.as_ref(),
        "subject",
        "{\"type\": ..., \"id\": ...}",
    )?;
    let subject_type = required(s.entity_type.as_ref(), "subject.type", "a string")?;
    let subject_id = required(s.id.as_ref(), "subject.id", "a string")?;
    let a = present(req.action.as_ref(), "action", "{\"name\": ...}")?;
    let action = required(a.name.as_ref(), "action.name", "a string")?;
    let r = present(req.resource.as_ref(), "resource", "{\"type\": ...}")?;
    let rtype = required(r.entity_type.as_ref(), "resource.type", "a string")?;
    let (limit, start) = paging(kind, req.page.as_ref())?;
    let tenant = caller.tenant_id().to_string();
    let engine = state.engines.get(&state.store, &tenant).await?;
    let steward_type = resource_type(&engine, &rtype);
    let source = match steward_type.as_deref() {
        Some("Agent") => Some(Source::Agents),
        Some("Human") => Some(Source::Humans),
        Some("Team") => Some(Source::Teams),
        Some(t) => Some(Source::Entities(t.to_string())),
        None => None,
    };
    let chain = fixed_chain(&state, &caller, &subject_type, &subject_id).await?;
    let (ids, next, examined) = match (source, steward_type, chain) {
        (Some(source), Some(resource_type), Some(chain)) => {
            let scan = Scan {
                state: &state,
                caller: &caller,
                engine: &engine,
                action,
                context: merged_context(Some(a), req.context.as_ref()),
                fixed: Fixed::Chain {
                    chain,
                    resource_type,
                    filter: r.properties.clone().unwrap_or_default(),
                },
            };
            scan.run(&source, start, limit).await?
        }
        _ => nothing(),
    };
    let results = ids
        .into_iter()
        .map(|id| json!({ "type": rtype, "id": id }))
        .collect();
    finish_search(&state, &caller, kind, &req, results, next, examined).await
}

/// Which declared actions may `subject` do on `resource`? Results are
/// `{name}` in name order. Paged with `page.next_token` and `page.limit`.
#[utoipa::path(post, path = "/access/v1/search/action", tag = "authzen",
    request_body = SearchRequest,
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, body = steward_types::ErrorBody),
        (status = 403, body = steward_types::ErrorBody)))]
pub async fn search_action(
    State(state): State<AppState>,
    caller: Caller,
    AuthzenJson(req): AuthzenJson<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    may_ask(&caller)?;
    let kind = SearchKind::Action;
    let s = present(
        req.subject.as_ref(),
        "subject",
        "{\"type\": ..., \"id\": ...}",
    )?;
    let subject_type = required(s.entity_type.as_ref(), "subject.type", "a string")?;
    let subject_id = required(s.id.as_ref(), "subject.id", "a string")?;
    let r = present(
        req.resource.as_ref(),
        "resource",
        "{\"type\": ..., \"id\": ...}",
    )?;
    let rtype = required(r.entity_type.as_ref(), "resource.type", "a string")?;
    let rid = required(r.id.as_ref(), "resource.id", "a string")?;
    let (limit, start) = paging(kind, req.page.as_ref())?;
    let tenant = caller.tenant_id().to_string();
    let engine = state.engines.get(&state.store, &tenant).await?;
    let chain = fixed_chain(&state, &caller, &subject_type, &subject_id).await?;
    let resource = fixed_resource(&state, &tenant, &engine, r, &rtype, &rid).await?;
    let context = merged_context(None, req.context.as_ref());
    let mut results = Vec::new();
    let mut next = None;
    let mut examined = 0;
    if let (Some(chain), Some(resource)) = (chain, resource) {
        let names: Vec<String> = engine
            .action_names()
            .into_iter()
            .filter(|n| start.as_ref().is_none_or(|s| n > s))
            .collect();
        for (i, name) in names.iter().enumerate() {
            examined += 1;
            let outcome = engine.decide(&DecisionInput {
                chain: chain.clone(),
                action: name.clone(),
                resource: resource.clone(),
                context: context.clone(),
            })?;
            if outcome.decision == Decision::Allow {
                results.push(json!({ "name": name }));
            }
            if results.len() >= limit || examined >= MAX_EXAMINED {
                if i + 1 < names.len() {
                    next = Some(name.clone());
                }
                break;
            }
        }
    }
    finish_search(&state, &caller, kind, &req, results, next, examined).await
}

// ---------------------------------------------------------------- metadata

/// The base URL clients reached this server at: `X-Forwarded-Proto` (http or
/// https) and the `Host` header, else the listening address.
fn base_url(headers: &HeaderMap, state: &AppState) -> String {
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map(String::from)
        .unwrap_or_else(|| state.config.listen.to_string());
    format!("{proto}://{host}")
}

/// AuthZEN policy decision point metadata (no credential needed): where the
/// evaluation and search endpoints are, as absolute URLs.
#[utoipa::path(get, path = "/.well-known/authzen-configuration", tag = "authzen",
    security(()),
    responses((status = 200, body = AuthzenConfiguration)))]
pub async fn configuration(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Json<AuthzenConfiguration> {
    let base = base_url(&headers, &state);
    Json(AuthzenConfiguration {
        access_evaluation_endpoint: format!("{base}/access/v1/evaluation"),
        access_evaluations_endpoint: format!("{base}/access/v1/evaluations"),
        search_subject_endpoint: format!("{base}/access/v1/search/subject"),
        search_resource_endpoint: format!("{base}/access/v1/search/resource"),
        search_action_endpoint: format!("{base}/access/v1/search/action"),
        policy_decision_point: base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_search() {
        let t = encode_token(SearchKind::Resource, "todo-1");
        assert_eq!(
            decode_token(SearchKind::Resource, &t)
                .ok()
                .flatten()
                .as_deref(),
            Some("todo-1")
        );
        assert!(decode_token(SearchKind::Subject, &t).is_err());
        assert!(decode_token(SearchKind::Resource, "zz").is_err());
        assert!(decode_token(SearchKind::Resource, "abc").is_err());
        assert_eq!(decode_token(SearchKind::Action, "").ok(), Some(None));
    }

    #[test]
    fn items_replace_defaults_but_keep_missing_type_and_id() {
        let default = AuthzenEntity {
            entity_type: Some("record".into()),
            id: Some("r0".into()),
            properties: Some(Map::from_iter([("a".to_string(), json!(1))])),
        };
        let item = AuthzenEntity {
            id: Some("r1".into()),
            ..Default::default()
        };
        let merged = merge_entity(Some(&item), Some(&default));
        assert_eq!(
            merged,
            Some(AuthzenEntity {
                entity_type: Some("record".into()),
                id: Some("r1".into()),
                properties: None,
            })
        );
        assert_eq!(merge_entity(None, Some(&default)), Some(default.clone()));
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

    #[test]
    fn action_properties_sit_under_the_context() {
        let action = AuthzenAction {
            name: Some("delete".into()),
            properties: Some(Map::from_iter([
                ("soft".to_string(), json!(true)),
                ("x".to_string(), json!(1)),
            ])),
        };
        let context = Map::from_iter([("x".to_string(), json!(2))]);
        let merged = merged_context(Some(&action), Some(&context));
        assert_eq!(Value::Object(merged), json!({"soft": true, "x": 2}));
    }
}
