//! The example roles and personas from the discussion, seeded into a new
//! default tenant: Code Review Bot, Data Pipeline Agent and Customer Support
//! Assistant.

use steward_core::{ChangeContext, Error, InventoryRules};
use steward_store::Store;
use steward_types::{CreatePersona, CreateRole, QuotaTemplate, RiskTier};

const ROLES: &[(&str, &str, bool)] = &[
    ("repo-reader", "Read source repositories", false),
    ("pr-commenter", "Write comments on pull requests", true),
    ("db-reader", "Read operational databases", false),
    ("warehouse-writer", "Write to the data warehouse", true),
    ("kb-reader", "Read the knowledge base", false),
    ("ticket-reader", "Read support tickets", false),
    ("response-writer", "Write responses to customers", true),
    ("refund-issuer", "Issue refunds to customers", true),
    // Approver groups: people holding these roles decide approvals.
    (
        "approvers",
        "Approves agents' high-risk actions at run time",
        false,
    ),
    (
        "security",
        "Reviews agent registrations and access changes",
        false,
    ),
    (
        "legal",
        "Reviews high-risk agent registrations after security",
        false,
    ),
];

/// Seed the example catalogue into `ctx.tenant_id`.
pub async fn seed_examples(
    store: &Store,
    ctx: &ChangeContext,
    rules: &InventoryRules,
) -> Result<(), Error> {
    for (name, description, writes) in ROLES {
        store
            .create_role(
                ctx,
                CreateRole {
                    name: (*name).into(),
                    description: (*description).into(),
                    writes: *writes,
                },
            )
            .await?;
    }
    let list = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let personas = [
        CreatePersona {
            name: "Code Review Bot".into(),
            description: "Reads repositories and writes pull-request comments.".into(),
            roles: list(&["repo-reader", "pr-commenter"]),
            classifications: list(&["internal"]),
            quotas: vec![QuotaTemplate { metric: "requests".into(), window: "day".into(), limit: 1000 }],
            max_children: Some(0),
            max_depth: Some(0),
            approval_tier: None,
            approval_required_for: vec![],
        },
        CreatePersona {
            name: "Data Pipeline Agent".into(),
            description: "Reads from databases and writes to the warehouse; may spawn up to 5 child agents.".into(),
            roles: list(&["db-reader", "warehouse-writer"]),
            classifications: list(&["internal", "confidential"]),
            quotas: vec![QuotaTemplate { metric: "child_agents".into(), window: "live".into(), limit: 5 }],
            max_children: Some(5),
            max_depth: Some(2),
            approval_tier: None,
            approval_required_for: vec![],
        },
        CreatePersona {
            name: "Customer Support Assistant".into(),
            description: "Reads the knowledge base and tickets, writes responses; refunds need a human's approval.".into(),
            roles: list(&["kb-reader", "ticket-reader", "response-writer", "refund-issuer"]),
            classifications: list(&["internal", "pii"]),
            quotas: vec![],
            max_children: Some(0),
            max_depth: Some(0),
            approval_tier: Some(RiskTier::High),
            approval_required_for: list(&["issue_refund"]),
        },
    ];
    for persona in personas {
        store.create_persona(ctx, rules, persona).await?;
    }
    Ok(())
}
