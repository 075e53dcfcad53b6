//! `steward roles ...`: named roles that policies refer to.

use clap::Subcommand;
use steward_types::CreateRole;

use super::{Ctx, PageArgs, list};
use crate::output;

/// Role subcommands.
#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// List roles.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one role.
    Show {
        /// Id or name.
        id: String,
    },
    /// Create a role.
    Create {
        /// Unique name: letters, digits, `-`, `_`, `.`.
        name: String,
        /// What the role is for.
        #[arg(long, default_value = "")]
        description: String,
        /// The role lets its holder change data (raises agents' risk tier).
        #[arg(long)]
        writes: bool,
    },
}

/// Run a `roles` subcommand.
pub async fn run(ctx: &Ctx, command: RolesCommand) -> anyhow::Result<()> {
    match command {
        RolesCommand::List { page } => {
            list(ctx, &page, async |cursor| {
                ctx.client.list_roles(&page.query(cursor)).await
            })
            .await
        }
        RolesCommand::Show { id } => {
            let role = ctx.client.get_role(&id).await?;
            output::print_record(ctx.output, &role)
        }
        RolesCommand::Create {
            name,
            description,
            writes,
        } => {
            let request = CreateRole {
                name,
                description,
                writes,
            };
            let role = ctx.client.create_role(&request).await?;
            output::print_record(ctx.output, &role)
        }
    }
}
