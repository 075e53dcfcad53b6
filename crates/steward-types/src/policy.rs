//! Policies, the resource types and actions they speak about, and decisions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A kind of resource agents act on (a tool, a data set, an API, a route...).
/// Attribute types are Cedar types: `String`, `Long`, `Bool`, `Set<String>`,
/// `Set<Long>`; a trailing `?` makes the attribute optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceType {
    /// Cedar identifier: letters, digits, `_`, not starting with a digit.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Attribute name → type.
    pub attributes: BTreeMap<String, String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Declare or replace a resource type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutResourceType {
    /// Cedar identifier.
    pub name: String,
    /// What it is.
    #[serde(default)]
    pub description: String,
    /// Attribute name → type (`String`, `Long?`, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// An action agents (or humans) may be allowed to take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActionDef {
    /// The action's name, as in `Action::"read"`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Resource types it applies to (declared types or `Agent`, `Human`, `Team`).
    pub resource_types: Vec<String>,
    /// Context attribute name → type, usable as `context.NAME` in policies.
    pub context: BTreeMap<String, String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Declare or replace an action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAction {
    /// The action's name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Resource types it applies to.
    pub resource_types: Vec<String>,
    /// Context attribute name → type.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// A resource Steward knows ahead of requests (for search, and attributes
/// that requests need not repeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceEntity {
    /// Its declared resource type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Its id.
    pub id: String,
    /// Attribute values (JSON matching the type's declaration).
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// A Cedar policy with its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    /// Stable id: letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// What it is for, shown with every decision it determines.
    pub description: String,
    /// Who answers for it (a human's e-mail or a team's name).
    pub owner: String,
    /// The Cedar text of exactly one policy.
    pub text: String,
    /// `permit` or `forbid` (a `forbid` is a guardrail no permit overrides).
    pub effect: String,
    /// Increases by one with every change.
    pub version: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Create or replace a policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicy {
    /// Stable id.
    pub id: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Who answers for it.
    #[serde(default)]
    pub owner: String,
    /// Cedar text of one policy.
    pub text: String,
}

/// A resource in a decision request. Unknown fields are refused, as at the
/// request's top level: a misspelt `attributes` must not silently decide
/// without them. (AuthZEN requests, which ignore unknown fields, have their
/// own wire types and never deserialize into this.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// Declared resource type (or `Agent`, `Human`, `Team`).
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Its id.
    pub id: String,
    /// Attributes for this request (merged over stored ones).
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// A principal named in the body (enforcement points with an admin token).
/// Unknown fields are refused, as at the request's top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalRef {
    /// `agent` or `human`.
    #[serde(rename = "type")]
    pub principal_type: String,
    /// Id or name (e-mail or external id for humans).
    pub id: String,
}

/// Ask for a decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// The principal; omitted when an agent asks with its own key.
    pub principal: Option<PrincipalRef>,
    /// The action's name.
    pub action: String,
    /// What it acts on.
    pub resource: ResourceRef,
    /// Request context usable as `context.*` in policies.
    #[serde(default)]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// The human the agent acts for (id, e-mail or external id).
    pub on_behalf_of: Option<String>,
    /// Usage the action expects (tokens, cost, records, bytes), reserved
    /// against quotas when it is allowed; settle with `POST /v1/decisions/{id}/outcome`.
    #[serde(default)]
    pub estimate: Option<crate::UsageEstimate>,
    /// Not part of the API: a gateway call's arguments as sent, whatever
    /// policies may read of them. An approval binds them and shows them to
    /// approvers, so approving one call never approves another.
    #[serde(skip)]
    pub call_arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Do not.
    Deny,
    /// A human must approve first.
    ApprovalRequired,
}

/// A policy that determined a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeterminingPolicy {
    /// Policy id.
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// Its description.
    pub description: String,
    /// Who answers for it.
    pub owner: String,
}

/// One identity in the delegation chain and how it fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChainLink {
    /// `agent` (the principal or an ancestor) or `human` (on behalf of).
    pub kind: String,
    /// Id.
    pub id: String,
    /// Name or e-mail.
    pub name: String,
    /// Whether this identity alone is allowed (and active).
    pub allowed: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
}

/// What a person can do about a denial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Remediation {
    /// One or two sentences to act on.
    pub message: String,
    /// Roles that would allow the request for the identity that was refused.
    pub roles_that_allow: Vec<String>,
    /// Personas whose agents would be allowed.
    pub personas_that_allow: Vec<String>,
    /// Guardrails that forbade it, with their owners.
    pub forbidden_by: Vec<DeterminingPolicy>,
}

/// The answer to a decision request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionResponse {
    /// allow, deny or approval_required.
    pub decision: Decision,
    /// Id of this decision (in the audit log).
    pub decision_id: String,
    /// The policies that determined it.
    pub policies: Vec<DeterminingPolicy>,
    /// Evaluation errors (a guardrail that errs denies).
    pub errors: Vec<String>,
    /// The delegation chain: principal, ancestors, the human acted for.
    pub chain: Vec<ChainLink>,
    /// For a denial: what to do about it.
    pub remediation: Option<Remediation>,
    /// For `approval_required`: the approval to wait for; for an allow that
    /// used a human's grant: that approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::ApprovalRef>,
    /// The tightest quota that applied, after this decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<crate::QuotaStatus>,
    /// Quotas past a warning threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::QuotaWarning>,
    /// The quota this decision would have gone over (deny or approval_required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceeded: Option<crate::QuotaStatus>,
}

/// Filters for listing policies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// Cursor from a previous page.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_requests_refuse_unknown_fields_at_every_level() {
        let good = serde_json::json!({
            "principal": {"type": "agent", "id": "bot"},
            "action": "read",
            "resource": {"type": "doc", "id": "d1", "attributes": {"level": 1}},
        });
        let parsed: DecisionRequest = serde_json::from_value(good.clone()).unwrap();
        assert_eq!(parsed.resource.attributes["level"], 1);
        // What it writes, it reads back.
        let again: DecisionRequest =
            serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(again, parsed);
        for (path, field) in [
            ("", "actoin"),
            ("principal", "name"),
            ("resource", "attribute"),
            ("resource", "properties"),
        ] {
            let mut bad = good.clone();
            let at = if path.is_empty() {
                &mut bad
            } else {
                &mut bad[path]
            };
            at[field] = serde_json::json!({"level": 1});
            let err = serde_json::from_value::<DecisionRequest>(bad).unwrap_err();
            assert!(err.to_string().contains(field), "{path}.{field}: {err}");
        }
    }
}
