//! `steward tenants ...`: isolation boundaries (platform administrators).

use clap::Subcommand;
use steward_types::CreateTenant;

use super::{Ctx, PageArgs, list};
use crate::output;

/// Tenant subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// Lower-case id: letters, digits and dashes.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Run a `tenants` subcommand.
pub async fn run(ctx: &Ctx, command: TenantsCommand) -> anyhow::Result<()> {
    match command {
        TenantsCommand::Create { id, name } => {
            let tenant = ctx.client.create_tenant(&CreateTenant { id, name }).await?;
            output::print_record(ctx.output, &tenant)
        }
        TenantsCommand::List { page } => {
            list(ctx, &page, async |cursor| {
                ctx.client.list_tenants(&page.query(cursor)).await
            })
            .await
        }
    }
}
