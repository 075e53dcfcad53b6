//! `steward audit ...`: read the audit log.

use clap::Subcommand;
use steward_types::AuditFilter;

use super::{Ctx, PageArgs, list};

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, oldest first.
    List {
        /// Only entries about this resource id.
        #[arg(long)]
        resource: Option<String>,
        /// Only this action, for example `agent.suspend`.
        #[arg(long)]
        action: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Run an `audit` subcommand.
pub async fn run(ctx: &Ctx, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List {
            resource,
            action,
            page,
        } => {
            list(ctx, &page, async |cursor| {
                let filter = AuditFilter {
                    resource_id: resource.clone(),
                    action: action.clone(),
                    cursor,
                    limit: page.limit,
                };
                ctx.client.list_audit(&filter).await
            })
            .await
        }
    }
}
