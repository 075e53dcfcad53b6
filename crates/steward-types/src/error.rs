//! The error catalogue: every error Steward returns has a stable code, an HTTP
//! status and a message a person can act on. Codes are data: one table below.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where every server publishes the catalogue; each error links to its entry.
pub const ERROR_DOCS: &str = "/v1/errors";

macro_rules! catalogue {
    ($( $variant:ident => ($code:literal, $status:literal, $summary:literal) ),* $(,)?) => {
        /// A stable error code. The string form never changes once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode { $( #[doc = $summary] $variant, )* }

        impl ErrorCode {
            /// Every code, in catalogue order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The stable string form, as it appears in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// The HTTP status this code is answered with.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            /// One line saying what the code means.
            pub fn summary(self) -> &'static str {
                match self { $( ErrorCode::$variant => $summary, )* }
            }
        }
    };
}

catalogue! {
    InvalidJson => ("invalid_json", 400, "The body is not valid JSON."),
    InvalidRequest => ("invalid_request", 400, "A field is missing, has the wrong type or an invalid value."),
    InvalidQuery => ("invalid_query", 400, "A query parameter (filter, cursor, limit) is invalid."),
    UnsupportedMediaType => ("unsupported_media_type", 415, "The body must be sent as application/json."),
    PayloadTooLarge => ("payload_too_large", 413, "The body exceeds the configured size limit."),
    Unauthenticated => ("unauthenticated", 401, "No credential, or a credential that is unknown, revoked or expired."),
    AgentNotActive => ("agent_not_active", 401, "The key belongs to an agent that is suspended, decommissioned, rejected, expired or not yet active."),
    Forbidden => ("forbidden", 403, "The credential is valid but its role does not allow this operation."),
    NotFound => ("not_found", 404, "No such resource in this tenant."),
    RouteNotFound => ("route_not_found", 404, "No such endpoint."),
    MethodNotAllowed => ("method_not_allowed", 405, "The endpoint does not accept this HTTP method."),
    AlreadyExists => ("already_exists", 409, "A resource with this unique name already exists in the tenant."),
    AlreadySettled => ("already_settled", 409, "The decision's outcome was already reported, or its reservation settled at the estimate after the timeout."),
    QuotaExceeded => ("quota_exceeded", 429, "A quota would be exceeded (for example an agent's live child agents); the error names the quota, its usage and limit."),
    InvalidTransition => ("invalid_transition", 409, "The agent's lifecycle state does not allow this transition."),
    OwnerInactive => ("owner_inactive", 422, "The named owner is deactivated; agents need an active human owner."),
    UnknownReference => ("unknown_reference", 422, "A referenced team, human, persona, role, classification or parent does not exist."),
    ParentNotActive => ("parent_not_active", 409, "Only an active agent can spawn children."),
    SpawnLimitExceeded => ("spawn_limit_exceeded", 409, "The parent already has as many live children as its persona allows."),
    SpawnDepthExceeded => ("spawn_depth_exceeded", 409, "The child would be deeper in the spawn tree than the parent's persona allows."),
    ExceedsParent => ("exceeds_parent", 422, "A child agent may only hold roles, classifications and expiry within its parent's."),
    InvalidPolicy => ("invalid_policy", 400, "The Cedar policy does not parse or does not validate against the schema; the message gives the location."),
    InvalidSchema => ("invalid_schema", 400, "The resource type or action declaration is invalid, or would break existing policies."),
    UnknownAction => ("unknown_action", 400, "The action is not declared for this tenant."),
    UnknownResourceType => ("unknown_resource_type", 400, "The resource type is not declared for this tenant."),
    InvalidEntity => ("invalid_entity", 400, "Attributes or context do not match their declared types."),
    ApprovalPending => ("approval_pending", 409, "This needs a human approval that has not been given yet; the details name the approval."),
    ApprovalClosed => ("approval_closed", 409, "The approval was already decided, used, cancelled or has expired."),
    AlertResolved => ("alert_resolved", 409, "The behaviour alert was already resolved."),
    DelegationRequired => ("delegation_required", 403, "Acting for a person needs a delegated token (a token exchange with the person's identity-provider token) in this tenant, or the token acts for someone else."),
    RecertificationClosed => ("recertification_closed", 409, "The recertification campaign is closed, or the agent was already attested in it."),
    NotAnApprover => ("not_an_approver", 403, "The caller is not a member of the approver group this step waits for, or is not a person."),
    SeparationOfDuties => ("separation_of_duties", 403, "Nobody approves their own request, one for an agent they own, or two steps of the same approval."),
    StoreUnavailable => ("store_unavailable", 503, "The store cannot be reached; Steward fails closed."),
    Internal => ("internal", 500, "An unexpected error; the request id identifies it in the server log."),
}

/// One entry of the published catalogue (`GET /v1/errors`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorCatalogueEntry {
    /// The stable code.
    pub code: ErrorCode,
    /// The HTTP status it is answered with.
    pub status: u16,
    /// What it means.
    pub summary: String,
}

impl ErrorCode {
    /// The whole catalogue, in order.
    pub fn catalogue() -> Vec<ErrorCatalogueEntry> {
        ErrorCode::ALL
            .iter()
            .map(|c| ErrorCatalogueEntry {
                code: *c,
                status: c.http_status(),
                summary: c.summary().into(),
            })
            .collect()
    }
}

/// The JSON body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code from the catalogue.
    pub code: ErrorCode,
    /// A sentence a person can act on.
    pub message: String,
    /// Link to the catalogue entry.
    pub docs: String,
    /// Structured details (the limit that was hit, the offending field, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// The request id, to find the request in the server log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorDetail {
    /// A detail with the catalogue's documentation link.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorDetail {
            code,
            message: message.into(),
            docs: format!("{ERROR_DOCS}#{}", code.as_str()),
            details: None,
            request_id: None,
        }
    }
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_serialise_as_their_string() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {}", code.as_str());
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().into()));
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
