//! The AuthZEN request and answer types, the extractor that reads them, and
//! the checks every endpoint applies to their fields.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use steward_core::Error;
use steward_types::ErrorCode;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiJson};

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
    /// The `next_token` of the previous page (AuthZEN 1.0).
    #[serde(default)]
    pub token: Option<String>,
    /// The same, as drafts of AuthZEN spelled it; taken when `token` is
    /// absent.
    #[serde(default)]
    pub next_token: Option<String>,
    /// Most results wanted, 1..=500 (default 50). A page after the first
    /// keeps the first's limit: leave it out, or send the same.
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
    /// Pass in `page.token` for more; empty on the last page.
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

/// A request body of the AuthZEN API: the members it reads that must be
/// JSON objects. Of the members some AuthZEN request reads (subject,
/// action, resource, context, options, page), the others are ignored, as
/// AuthZEN has receivers ignore what they do not know: a `page` on an
/// evaluation, an `action` on an action search.
pub trait AuthzenBody: DeserializeOwned {
    /// The members read, each an object where present.
    const READS: &'static [&'static str];
}

impl AuthzenBody for EvaluationRequest {
    const READS: &'static [&'static str] = &["subject", "action", "resource", "context"];
}

impl AuthzenBody for EvaluationsRequest {
    const READS: &'static [&'static str] = &["subject", "action", "resource", "context", "options"];
}

impl AuthzenBody for SearchRequest {
    const READS: &'static [&'static str] = &["subject", "action", "resource", "context", "page"];
}

/// An action search: a [`SearchRequest`] without an action.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct ActionSearchRequest(pub SearchRequest);

impl AuthzenBody for ActionSearchRequest {
    const READS: &'static [&'static str] = &["subject", "resource", "context", "page"];
}

/// [`ApiJson`], except that a body sent with another content type is a `400`
/// (AuthZEN's answer for any malformed request) rather than a `415`.
pub struct AuthzenJson<T>(pub T);

impl<S: Send + Sync, T: AuthzenBody> FromRequest<S> for AuthzenJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut body = match ApiJson::<Value>::from_request(req, state).await {
            Ok(ApiJson(v)) => v,
            Err(ApiError(e)) if e.code == ErrorCode::UnsupportedMediaType => {
                return Err(ApiError::new(ErrorCode::InvalidRequest, e.message));
            }
            Err(e) => return Err(e),
        };
        objects_where_expected(&mut body, "", T::READS)?;
        serde_json::from_value(body).map(AuthzenJson).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("the body does not match the expected shape: {e}"),
            )
        })
    }
}

/// AuthZEN's subjects, actions and resources are JSON objects, as are a
/// request's context, options and page: refuse an array or a scalar in
/// the place of one the request `reads` (serde would read a struct from an
/// array of its fields), and drop those it does not read. `at` names where
/// `value` sits (empty for the body).
pub(super) fn objects_where_expected(
    value: &mut Value,
    at: &str,
    reads: &[&str],
) -> Result<(), Error> {
    let field = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    let Value::Object(map) = value else {
        return Err(Error::invalid(
            if at.is_empty() { "body" } else { at },
            "must be a JSON object",
        ));
    };
    for key in [
        "subject", "action", "resource", "context", "options", "page",
    ] {
        if !reads.contains(&key) {
            map.remove(key);
            continue;
        }
        match map.get(key) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return Err(Error::invalid(&field(key), "must be a JSON object")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- fields

/// The hint for a missing subject or resource that needs its id.
pub(super) const ENTITY_HINT: &str = "{\"type\": ..., \"id\": ...}";
/// The hint for a missing subject or resource searched for by type.
pub(super) const TYPE_HINT: &str = "{\"type\": ...}";
/// The hint for a missing action.
pub(super) const ACTION_HINT: &str = "{\"name\": ...}";

/// A required, non-empty string field.
pub(super) fn required(value: Option<&String>, field: &str, hint: &str) -> Result<String, Error> {
    match value {
        None => Err(Error::invalid(field, format!("required ({hint})"))),
        Some(v) if v.trim().is_empty() => Err(Error::invalid(field, "must not be empty")),
        Some(v) => Ok(v.clone()),
    }
}

/// A required object.
pub(super) fn present<'a, T>(
    value: Option<&'a T>,
    field: &str,
    hint: &str,
) -> Result<&'a T, Error> {
    value.ok_or_else(|| Error::invalid(field, format!("required ({hint})")))
}

/// The action's name, which every evaluation and all but the action search
/// need.
pub(super) fn action_name(action: &AuthzenAction) -> Result<String, Error> {
    required(action.name.as_ref(), "action.name", "a string")
}

/// A subject's or resource's `type`; `field` is `subject` or `resource`.
pub(super) fn entity_type(entity: &AuthzenEntity, field: &str) -> Result<String, Error> {
    required(
        entity.entity_type.as_ref(),
        &format!("{field}.type"),
        "a string",
    )
}

/// A subject's or resource's `id`; `field` is `subject` or `resource`.
pub(super) fn entity_id(entity: &AuthzenEntity, field: &str) -> Result<String, Error> {
    required(entity.id.as_ref(), &format!("{field}.id"), "a string")
}

/// The action's properties under the request's context.
pub(super) fn merged_context(
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
