//! `steward recert`: recertification campaigns.

use clap::{Subcommand, ValueEnum};
use steward_types::{Attest, CampaignItemQuery, OnOverdue, RiskTier, StartCampaign};

use super::{Ctx, PageArgs, list};
use crate::output;

/// What an owner says about an agent.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Decision {
    /// Still needed, its access still right.
    Keep,
    /// Stop it for now.
    Suspend,
    /// Retire it (and its descendants).
    Decommission,
}

/// `steward recert ...`.
#[derive(Debug, Subcommand)]
pub enum RecertCommand {
    /// Start a campaign: owners attest each agent in scope by the due date.
    Start {
        /// A name people recognise (`2026-Q4`).
        name: String,
        /// Days owners have (1-90, default 14).
        #[arg(long)]
        due_in_days: Option<u32>,
        /// Only agents at this risk tier or above (low, medium, high).
        #[arg(long, value_parser = parse_tier)]
        min_risk_tier: Option<RiskTier>,
        /// Only this team's agents.
        #[arg(long)]
        team: Option<String>,
        /// Only report agents not attested in time instead of suspending them.
        #[arg(long)]
        report_only: bool,
    },
    /// List campaigns with where their agents stand.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one campaign.
    Show {
        /// Campaign id or name.
        id: String,
    },
    /// A campaign's agents and their owners' answers.
    Items {
        /// Campaign id or name.
        id: String,
        /// pending, kept, suspended, decommissioned or overdue.
        #[arg(long)]
        status: Option<String>,
        /// Only this owner's agents (id or e-mail).
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Attest an agent you own: keep, suspend or decommission it.
    Attest {
        /// Campaign id or name.
        id: String,
        /// Agent id or name.
        agent: String,
        /// keep, suspend or decommission.
        #[arg(value_enum)]
        decision: Decision,
        /// Why (required to suspend or decommission).
        #[arg(long)]
        note: Option<String>,
    },
}

fn parse_tier(s: &str) -> Result<RiskTier, String> {
    match s {
        "low" => Ok(RiskTier::Low),
        "medium" => Ok(RiskTier::Medium),
        "high" => Ok(RiskTier::High),
        other => Err(format!("expected low, medium or high, got {other:?}")),
    }
}

/// Run a `recert` subcommand.
pub async fn run(ctx: &Ctx, command: RecertCommand) -> anyhow::Result<()> {
    match command {
        RecertCommand::Start {
            name,
            due_in_days,
            min_risk_tier,
            team,
            report_only,
        } => {
            let c = ctx
                .client
                .start_campaign(&StartCampaign {
                    name,
                    due_in_days,
                    min_risk_tier,
                    team,
                    on_overdue: Some(if report_only {
                        OnOverdue::Report
                    } else {
                        OnOverdue::Suspend
                    }),
                })
                .await?;
            output::print_outcome(ctx.output, &c, |c| {
                format!(
                    "Started {} ({}): {} agents for their owners to attest by {}.",
                    c.name,
                    c.id,
                    c.counts.total,
                    output::time(&c.due_at)
                )
            })
        }
        RecertCommand::List { page } => {
            list(ctx, &page, async |cursor| {
                ctx.client.list_campaigns(&page.query(cursor)).await
            })
            .await
        }
        RecertCommand::Show { id } => {
            let c = ctx.client.get_campaign(&id).await?;
            output::print_record(ctx.output, &c)
        }
        RecertCommand::Items {
            id,
            status,
            owner,
            page,
        } => {
            list(ctx, &page, async |cursor| {
                ctx.client
                    .list_campaign_items(
                        &id,
                        &CampaignItemQuery {
                            status: status.clone(),
                            owner: owner.clone(),
                            cursor,
                            limit: page.limit,
                        },
                    )
                    .await
            })
            .await
        }
        RecertCommand::Attest {
            id,
            agent,
            decision,
            note,
        } => {
            let decision = match decision {
                Decision::Keep => "keep",
                Decision::Suspend => "suspend",
                Decision::Decommission => "decommission",
            };
            let item = ctx
                .client
                .attest(
                    &id,
                    &agent,
                    &Attest {
                        decision: decision.into(),
                        note,
                    },
                )
                .await?;
            output::print_outcome(ctx.output, &item, |i| {
                format!("{}: {} in {}.", i.agent_name, i.status, i.campaign_id)
            })
        }
    }
}
