//! `steward personas ...`: reusable agent templates.

use clap::Subcommand;

use super::{Ctx, PageArgs, list};
use crate::output;

/// Persona subcommands.
#[derive(Debug, Subcommand)]
pub enum PersonasCommand {
    /// List personas.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one persona, with its defaults and limits.
    Show {
        /// Id or name.
        id: String,
    },
}

/// Run a `personas` subcommand.
pub async fn run(ctx: &Ctx, command: PersonasCommand) -> anyhow::Result<()> {
    match command {
        PersonasCommand::List { page } => {
            list(ctx, &page, async |cursor| {
                ctx.client.list_personas(&page.query(cursor)).await
            })
            .await
        }
        PersonasCommand::Show { id } => {
            let persona = ctx.client.get_persona(&id).await?;
            output::print_record(ctx.output, &persona)
        }
    }
}
