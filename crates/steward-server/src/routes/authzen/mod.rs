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
//! `POST /v1/decisions` records; a refusal records the resource's attributes
//! as a decision would (stored over claimed, undeclared left out), and none
//! for a resource it cannot resolve, never the values the request claimed.
//! Items of a batch that could not be evaluated decided nothing and are not
//! recorded. A search evaluates every candidate it
//! examines but records one summary entry per request (`decision.search`: the
//! fixed parts of the query, how many candidates were examined and the ids it
//! returned); recording one decision per candidate would flood the log with
//! the denials that filter the results. A candidate the request cannot be
//! decided for (an action's declared context missing or mistyped:
//! `invalid_entity`) is not in the results; it does not fail the search.
//! A page token continues only the search that gave it: the same kind,
//! subject, action, resource, resource properties and context.
//!
//! # Where things are
//!
//! `wire` holds the request and answer types and their validation,
//! `evaluation` the two evaluation endpoints, `search` the three searches
//! (one code path; `scan` walks their candidates) and `metadata` the
//! well-known document. The mapping above is coded here (subject and
//! resource types, what counts as unknown), shared by all of them.

mod evaluation;
mod metadata;
mod scan;
mod search;
mod wire;

use serde_json::{Map, Value};
use steward_core::{ChangeContext, Error};
use steward_policy::Engine;
use steward_types::{ErrorCode, ResourceRef};

use crate::auth::Caller;
use crate::error::ApiResult;

pub use evaluation::{__path_evaluation, __path_evaluations, evaluation, evaluations};
pub use metadata::{__path_configuration, configuration};
pub use search::{
    __path_search_action, __path_search_resource, __path_search_subject, search_action,
    search_resource, search_subject,
};
pub use wire::{
    AuthzenAction, AuthzenConfiguration, AuthzenEntity, AuthzenJson, EvaluationRequest,
    EvaluationResponse, EvaluationsAnswer, EvaluationsOptions, EvaluationsRequest,
    EvaluationsResponse, SearchPage, SearchPageOut, SearchRequest, SearchResponse,
};

/// Most items one `evaluations` request may carry.
pub const MAX_EVALUATIONS: usize = 1000;
/// Default number of results per search page.
pub const DEFAULT_SEARCH_LIMIT: u32 = 50;
/// Largest number of results per search page.
pub const MAX_SEARCH_LIMIT: u32 = 500;
/// Most candidates one search request examines; past this it answers what it
/// found with a `next_token` to continue from.
pub const MAX_EXAMINED: usize = 5000;

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

/// A resource of a Steward type with the request's properties as attributes.
fn resource_ref(resource_type: String, id: &str, properties: &Map<String, Value>) -> ResourceRef {
    ResourceRef {
        resource_type,
        id: id.into(),
        attributes: properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
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

/// Who and when, for an audit record.
fn change_context(caller: &Caller) -> ChangeContext {
    caller.context()
}

/// Admin and pep tokens ask about anyone, agents about themselves (checked
/// by the decision service), auditor tokens not at all.
fn may_ask(caller: &Caller) -> ApiResult<()> {
    caller.decider()
}
