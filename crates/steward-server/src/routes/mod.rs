//! One file per HTTP resource. `api` assembles them with their OpenAPI
//! descriptions; the document is generated from these annotations.

pub mod agents;
pub mod apply;
pub mod approvals;
pub mod audit;
pub mod audit_export;
pub mod authzen;
pub mod behaviour;
pub mod catalog;
pub mod decisions;
pub mod delegation;
pub mod health;
pub mod humans;
pub mod keys;
pub mod mcp_servers;
pub mod policies;
pub mod quotas;
pub mod recert;
pub mod teams;
pub mod tenants;
pub mod tokens;
pub mod webhooks;

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Steward", description = "Governance for AI agents: inventory, lifecycle, credentials and audit."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "agents", description = "Agents, their lifecycle and keys"),
        (name = "inventory", description = "Teams, humans, roles and personas"),
        (name = "access", description = "Tenants, API tokens and the caller"),
        (name = "audit", description = "The audit log"),
        (name = "policies", description = "Resource types, actions, Cedar policies and known resources"),
        (name = "decisions", description = "Decisions"),
        (name = "approvals", description = "Human approvals of actions, registrations and changes"),
        (name = "authzen", description = "OpenID AuthZEN Authorization API 1.0"),
        (name = "quotas", description = "Quotas, budgets, rate limits and usage"),
        (name = "webhooks", description = "Signed notifications of events (quota thresholds, approvals)"),
        (name = "operations", description = "Health and readiness"),
        (name = "behaviour", description = "Behavioural baselines and the alerts raised when an agent acts out of character"),
        (name = "recertification", description = "Campaigns in which owners re-attest the agents they own"),
        (name = "delegation", description = "Proven delegation: token exchange of a person's identity-provider token for a token that acts for them"),
        (name = "mcp", description = "Upstream MCP servers behind the gateway at /mcp/{name}"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API router and its OpenAPI document.
pub fn api(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::errors))
        .routes(routes!(tenants::whoami))
        .routes(routes!(tenants::list_tenants, tenants::create_tenant))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(teams::list_teams, teams::create_team))
        .routes(routes!(teams::get_team))
        .routes(routes!(humans::list_humans, humans::create_human))
        .routes(routes!(humans::get_human, humans::update_human))
        .routes(routes!(humans::deactivate_human))
        .routes(routes!(humans::reactivate_human))
        .routes(routes!(catalog::list_roles, catalog::create_role))
        .routes(routes!(catalog::get_role))
        .routes(routes!(catalog::list_personas, catalog::create_persona))
        .routes(routes!(catalog::get_persona))
        .routes(routes!(agents::list_agents, agents::register_agent))
        .routes(routes!(agents::get_agent, agents::update_agent))
        .routes(routes!(agents::transition_agent))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::public_key))
        .routes(routes!(audit::latest_checkpoint))
        .routes(routes!(audit::checkpoints))
        .routes(routes!(audit::inclusion))
        .routes(routes!(audit::consistency))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::prune))
        .routes(routes!(audit::list_holds, audit::place_hold))
        .routes(routes!(audit::release_hold))
        .routes(routes!(audit_export::export))
        .routes(routes!(
            policies::list_resource_types,
            policies::put_resource_type
        ))
        .routes(routes!(policies::delete_resource_type))
        .routes(routes!(policies::list_actions, policies::put_action))
        .routes(routes!(policies::delete_action))
        .routes(routes!(policies::schema))
        .routes(routes!(policies::list_policies, policies::put_policy))
        .routes(routes!(policies::get_policy, policies::delete_policy))
        .routes(routes!(policies::policy_versions))
        .routes(routes!(policies::put_entity))
        .routes(routes!(policies::list_entities))
        .routes(routes!(policies::delete_entity))
        .routes(routes!(decisions::create_decision))
        .routes(routes!(decisions::report_outcome))
        .routes(routes!(authzen::evaluation))
        .routes(routes!(authzen::evaluations))
        .routes(routes!(authzen::search_subject))
        .routes(routes!(authzen::search_resource))
        .routes(routes!(authzen::search_action))
        .routes(routes!(authzen::configuration))
        .routes(routes!(apply::apply))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::stats))
        .routes(routes!(approvals::get_approval))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::deny))
        .routes(routes!(approvals::wait))
        .routes(routes!(quotas::list_quotas, quotas::put_quota))
        .routes(routes!(quotas::get_quota, quotas::delete_quota))
        .routes(routes!(quotas::usage))
        .routes(routes!(behaviour::get_settings, behaviour::put_settings))
        .routes(routes!(behaviour::list_alerts))
        .routes(routes!(behaviour::get_alert))
        .routes(routes!(behaviour::resolve_alert))
        .routes(routes!(behaviour::agent_baseline))
        .routes(routes!(recert::list_campaigns, recert::start_campaign))
        .routes(routes!(recert::get_campaign))
        .routes(routes!(recert::list_items))
        .routes(routes!(recert::attest))
        .routes(routes!(delegation::list_issuers))
        .routes(routes!(delegation::put_issuer, delegation::delete_issuer))
        .routes(routes!(delegation::get_settings, delegation::put_settings))
        .routes(routes!(delegation::list_delegations))
        .routes(routes!(delegation::revoke_delegation))
        .routes(routes!(delegation::token))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(
            mcp_servers::list_mcp_servers,
            mcp_servers::put_mcp_server
        ))
        .routes(routes!(
            mcp_servers::get_mcp_server,
            mcp_servers::delete_mcp_server
        ))
        .with_state(state)
        .split_for_parts();
    (router, doc)
}
