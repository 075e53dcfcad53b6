//! `steward policies ...`, `steward resource-types list`, `steward actions
//! list` and `steward schema`: the Cedar policies of a tenant and the
//! declarations they are checked against.

use std::path::PathBuf;

use clap::Subcommand;
use steward_types::{ActionDef, Policy, ResourceType};

use super::{Ctx, PageArgs, list};
use crate::output::{self, Detail, Tabular, or_dash, render_detail, render_list, time};

/// Policy subcommands.
#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// List policies.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one policy and its Cedar text.
    Show {
        /// Policy id.
        id: String,
    },
    /// Every version of a policy, newest first.
    Versions {
        /// Policy id.
        id: String,
    },
    /// Delete a policy.
    Delete {
        /// Policy id.
        id: String,
    },
    /// Create or replace every policy of a `.cedar` file, all or none.
    Put {
        /// A `.cedar` file; each policy carries `@id("...")`, and optionally
        /// `@description("...")` and `@owner("...")`.
        file: PathBuf,
    },
}

/// Resource type subcommands.
#[derive(Debug, Subcommand)]
pub enum ResourceTypesCommand {
    /// List the declared resource types and their attributes.
    List,
}

/// Action subcommands.
#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// List the declared actions.
    List,
}

/// Run a `policies` subcommand.
pub async fn run(ctx: &Ctx, command: PoliciesCommand) -> anyhow::Result<()> {
    match command {
        PoliciesCommand::List { page } => {
            list(ctx, &page, async |cursor| {
                let query = steward_types::PolicyQuery {
                    cursor,
                    limit: page.limit,
                };
                ctx.client.list_policies(&query).await
            })
            .await
        }
        PoliciesCommand::Show { id } => {
            let policy = ctx.client.get_policy(&id).await?;
            output::print_outcome(ctx.output, &policy, |p| {
                format!("{}\n\n{}", render_detail(p), p.text.trim_end())
            })
        }
        PoliciesCommand::Versions { id } => {
            let versions = ctx.client.policy_versions(&id).await?;
            output::print_outcome(ctx.output, &versions, |v| render_list(v))
        }
        PoliciesCommand::Delete { id } => {
            ctx.client.delete_policy(&id).await?;
            output::print_outcome(ctx.output, &serde_json::json!({ "deleted": id }), |_| {
                format!("Deleted policy {id}.")
            })
        }
        // One transaction through the apply endpoint: a file whose last
        // policy is invalid leaves the first ones unchanged too.
        PoliciesCommand::Put { file } => {
            let declared = super::apply::load_policy_file(&file)?;
            super::apply::submit(ctx, &declared).await
        }
    }
}

/// Run a `resource-types` subcommand.
pub async fn run_resource_types(ctx: &Ctx, command: ResourceTypesCommand) -> anyhow::Result<()> {
    match command {
        ResourceTypesCommand::List => {
            let types = ctx.client.list_resource_types().await?;
            output::print_outcome(ctx.output, &types, |t| render_list(t))
        }
    }
}

/// Run an `actions` subcommand.
pub async fn run_actions(ctx: &Ctx, command: ActionsCommand) -> anyhow::Result<()> {
    match command {
        ActionsCommand::List => {
            let actions = ctx.client.list_actions().await?;
            output::print_outcome(ctx.output, &actions, |a| render_list(a))
        }
    }
}

/// `steward schema`: the tenant's Cedar schema (as text even with `-o json`,
/// where it is the `schema` field).
pub async fn schema(ctx: &Ctx) -> anyhow::Result<()> {
    let text = ctx.client.schema().await?;
    output::print_outcome(ctx.output, &serde_json::json!({ "schema": text }), |_| {
        text.trim_end().to_owned()
    })
}

/// `name: Type, ...`, `-` when empty.
fn typed_fields(fields: &std::collections::BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = fields.iter().map(|(k, t)| format!("{k}: {t}")).collect();
    or_dash(&pairs.join(", "))
}

impl Tabular for Policy {
    const HEADERS: &'static [&'static str] =
        &["ID", "EFFECT", "VERSION", "OWNER", "UPDATED", "DESCRIPTION"];
    const PLURAL: &'static str = "policies";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.effect.clone(),
            self.version.to_string(),
            or_dash(&self.owner),
            time(&self.updated_at),
            or_dash(&self.description),
        ]
    }
}

impl Detail for Policy {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("effect", self.effect.clone()),
            ("version", self.version.to_string()),
            ("owner", or_dash(&self.owner)),
            ("description", or_dash(&self.description)),
            ("updated", time(&self.updated_at)),
        ]
    }
}

impl Tabular for ResourceType {
    const HEADERS: &'static [&'static str] = &["NAME", "ATTRIBUTES", "DESCRIPTION"];
    const PLURAL: &'static str = "resource types";
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            typed_fields(&self.attributes),
            or_dash(&self.description),
        ]
    }
}

impl Tabular for ActionDef {
    const HEADERS: &'static [&'static str] = &["NAME", "RESOURCE TYPES", "CONTEXT", "DESCRIPTION"];
    const PLURAL: &'static str = "actions";
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            output::list(&self.resource_types),
            typed_fields(&self.context),
            or_dash(&self.description),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn policies_show_as_rows_and_details() {
        let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        let policy = Policy {
            id: "no-pii".into(),
            description: "No pii without the classification".into(),
            owner: String::new(),
            text: "forbid(principal, action, resource);".into(),
            effect: "forbid".into(),
            version: 2,
            updated_at: at,
        };
        assert_eq!(
            policy.row(),
            [
                "no-pii",
                "forbid",
                "2",
                "-",
                "2025-01-02 03:04",
                "No pii without the classification"
            ]
        );
        assert_eq!(policy.fields().len(), 6);
    }

    #[test]
    fn declarations_list_their_typed_fields() {
        let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        let action = ActionDef {
            name: "issue_refund".into(),
            description: String::new(),
            resource_types: vec!["refund".into()],
            context: [("amount".to_string(), "Long".to_string())].into(),
            updated_at: at,
        };
        assert_eq!(
            action.row(),
            ["issue_refund", "refund", "amount: Long", "-"]
        );
    }
}
