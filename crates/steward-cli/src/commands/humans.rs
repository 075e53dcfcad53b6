//! `steward humans ...`: the people who own agents.

use clap::{Args, Subcommand};
use steward_types::{CreateHuman, HumanDeactivated, TransitionRequest};

use super::{Ctx, PageArgs, list};
use crate::output;

/// Human subcommands.
#[derive(Debug, Subcommand)]
pub enum HumansCommand {
    /// Add a person to the inventory.
    Create {
        /// E-mail address (unique in the tenant).
        #[arg(long)]
        email: String,
        /// Name to show.
        #[arg(long)]
        name: String,
        /// Team id or name (repeatable).
        #[arg(long = "team", value_name = "TEAM")]
        teams: Vec<String>,
        /// Role name (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// The id another system knows them by (IdP subject, AuthZEN PID).
        #[arg(long)]
        external_id: Option<String>,
    },
    /// List people.
    List(ListArgs),
    /// Show one person.
    Show {
        /// Id or e-mail.
        id: String,
    },
    /// Deactivate a person; the agents they own become orphaned.
    Deactivate {
        /// Id or e-mail.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reactivate a deactivated person.
    Reactivate {
        /// Id or e-mail.
        id: String,
    },
}

/// `humans list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only people with this status.
    #[arg(long, value_parser = ["active", "deactivated"])]
    pub status: Option<String>,
    /// Only members of this team (id or name).
    #[arg(long)]
    pub team: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

/// Run a `humans` subcommand.
pub async fn run(ctx: &Ctx, command: HumansCommand) -> anyhow::Result<()> {
    match command {
        HumansCommand::Create {
            email,
            name,
            teams,
            roles,
            external_id,
        } => {
            let request = CreateHuman {
                external_id,
                email,
                display_name: name,
                teams,
                roles,
            };
            let human = ctx.client.create_human(&request).await?;
            output::print_record(ctx.output, &human)
        }
        HumansCommand::List(args) => {
            list(ctx, &args.page, async |cursor| {
                let mut query = args.page.query(cursor);
                query.status = args.status.clone();
                query.team = args.team.clone();
                ctx.client.list_humans(&query).await
            })
            .await
        }
        HumansCommand::Show { id } => {
            let human = ctx.client.get_human(&id).await?;
            output::print_record(ctx.output, &human)
        }
        HumansCommand::Deactivate { id, reason } => {
            let answer = ctx
                .client
                .deactivate_human(&id, &TransitionRequest { reason })
                .await?;
            output::print_outcome(ctx.output, &answer, describe_deactivated)
        }
        HumansCommand::Reactivate { id } => {
            let human = ctx.client.reactivate_human(&id).await?;
            output::print_record(ctx.output, &human)
        }
    }
}

/// Who was deactivated and which agents now need a new owner.
fn describe_deactivated(answer: &HumanDeactivated) -> String {
    let human = &answer.human;
    let orphaned = &answer.orphaned_agents;
    let tokens = match answer.revoked_tokens.len() {
        0 => String::new(),
        1 => " Their API token was revoked.".to_string(),
        n => format!(" Their {n} API tokens were revoked."),
    };
    let tokens = match answer.revoked_delegations.len() {
        0 => tokens,
        1 => format!("{tokens} The delegated token acting for them was revoked."),
        n => format!("{tokens} The {n} delegated tokens acting for them were revoked."),
    };
    if orphaned.is_empty() {
        return format!(
            "Deactivated {} ({}).{tokens} They owned no agents.",
            human.email, human.id
        );
    }
    let mut text = format!(
        "Deactivated {} ({}).{tokens} {} agent{} orphaned and need{} a new owner:",
        human.email,
        human.id,
        orphaned.len(),
        if orphaned.len() == 1 { " is" } else { "s are" },
        if orphaned.len() == 1 { "s" } else { "" },
    );
    for agent in orphaned {
        text.push_str(&format!("\n  {agent}"));
    }
    text.push_str("\nReassign one with: steward agents update AGENT --owner EMAIL");
    text.push_str("\nList them with: steward agents list --orphaned");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use steward_types::{Human, HumanStatus};

    fn deactivated(orphaned: &[&str]) -> HumanDeactivated {
        HumanDeactivated {
            human: Human {
                id: "hu_1".into(),
                email: "alice@example.com".into(),
                display_name: "Alice".into(),
                external_id: None,
                status: HumanStatus::Deactivated,
                teams: vec![],
                roles: vec![],
                created_at: Utc::now(),
                updated_at: Utc::now(),
            },
            orphaned_agents: orphaned.iter().map(|s| s.to_string()).collect(),
            revoked_tokens: vec!["tok_1".into()],
            revoked_delegations: vec![],
        }
    }

    #[test]
    fn deactivation_names_the_orphaned_agents() {
        let text = describe_deactivated(&deactivated(&["ag_1", "ag_2"]));
        assert!(text.contains("2 agents are orphaned"), "{text}");
        assert!(text.contains("\n  ag_1\n  ag_2"), "{text}");

        let text = describe_deactivated(&deactivated(&["ag_1"]));
        assert!(text.contains("1 agent is orphaned and needs"), "{text}");

        let text = describe_deactivated(&deactivated(&[]));
        assert!(text.contains("owned no agents"), "{text}");
        assert!(text.contains("Their API token was revoked."), "{text}");
    }
}
