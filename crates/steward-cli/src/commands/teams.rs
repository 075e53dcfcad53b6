//! `steward teams ...`: teams of humans that own agents.

use clap::Subcommand;
use steward_types::CreateTeam;

use super::{Ctx, PageArgs, list};
use crate::output;

/// Team subcommands.
#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Create a team.
    Create {
        /// Unique name in the tenant.
        name: String,
        /// What the team does.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List teams.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one team.
    Show {
        /// Id or name.
        id: String,
    },
}

/// Run a `teams` subcommand.
pub async fn run(ctx: &Ctx, command: TeamsCommand) -> anyhow::Result<()> {
    match command {
        TeamsCommand::Create { name, description } => {
            let team = ctx
                .client
                .create_team(&CreateTeam { name, description })
                .await?;
            output::print_record(ctx.output, &team)
        }
        TeamsCommand::List { page } => {
            list(ctx, &page, async |cursor| {
                ctx.client.list_teams(&page.query(cursor)).await
            })
            .await
        }
        TeamsCommand::Show { id } => {
            let team = ctx.client.get_team(&id).await?;
            output::print_record(ctx.output, &team)
        }
    }
}
