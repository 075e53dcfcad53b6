//! `steward quotas ...`, `steward usage` and `steward webhooks ...`.

use chrono::Utc;
use clap::{Args, Subcommand};
use steward_types::{CreateWebhook, DeliveryQuery, OnExceed, PutQuota, QuotaScope, UsageQuery};

use super::{Ctx, PageArgs, list};
use crate::output::{self, OutputFormat};
use crate::views;

/// Quota subcommands.
#[derive(Debug, Subcommand)]
pub enum QuotasCommand {
    /// List the tenant's quota rules (persona defaults are on the personas).
    List,
    /// Create a rule, or replace the one with this name (its counters are kept).
    Set(Box<SetArgs>),
    /// Show one rule.
    Show {
        /// Id or name.
        id: String,
    },
    /// Delete a rule and its counters.
    Delete {
        /// Id or name.
        id: String,
    },
}

/// `steward quotas set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Unique name in the tenant.
    name: String,
    /// requests, tool_calls, tokens, cost, records, bytes or child_agents.
    #[arg(long)]
    metric: String,
    /// second (a rate), minute, hour, day, month, or live (child_agents).
    #[arg(long)]
    window: String,
    /// The limit per window (a decimal for cost).
    #[arg(long)]
    limit: f64,
    /// agent, persona, team, owner or tenant.
    #[arg(long, value_parser = parse_scope, default_value = "tenant")]
    scope: QuotaScope,
    /// The agent, persona, team or owner it applies to.
    #[arg(long)]
    subject: Option<String>,
    /// A sliding window instead of a calendar-aligned one.
    #[arg(long)]
    rolling: bool,
    /// IANA time zone calendar windows align to (default UTC).
    #[arg(long)]
    timezone: Option<String>,
    /// For a per-second rate: how many at once.
    #[arg(long)]
    burst: Option<u64>,
    /// ISO 4217 code for cost (default USD).
    #[arg(long)]
    currency: Option<String>,
    /// Warning percentages, comma-separated (default 50,80,95).
    #[arg(long, value_delimiter = ',')]
    thresholds: Option<Vec<u32>>,
    /// deny, approval_required or alert_only.
    #[arg(long, value_parser = parse_on_exceed, default_value = "deny")]
    on_exceed: OnExceed,
    /// Count only this action.
    #[arg(long)]
    action: Option<String>,
    /// Count only this resource type.
    #[arg(long)]
    resource_type: Option<String>,
    /// Count only this resource id.
    #[arg(long)]
    resource_id: Option<String>,
    /// What the quota is for.
    #[arg(long, default_value = "")]
    description: String,
}

fn parse_scope(s: &str) -> Result<QuotaScope, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("'{s}' is not agent, persona, team, owner or tenant"))
}

fn parse_on_exceed(s: &str) -> Result<OnExceed, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("'{s}' is not deny, approval_required or alert_only"))
}

/// Run a `quotas` subcommand.
pub async fn run(ctx: &Ctx, command: QuotasCommand) -> anyhow::Result<()> {
    match command {
        QuotasCommand::List => {
            let quotas = ctx.client.list_quotas().await?;
            match ctx.output {
                OutputFormat::Json => output::print_json(&quotas),
                OutputFormat::Table => Ok(output::say(output::render_list(&quotas))?),
            }
        }
        QuotasCommand::Set(a) => {
            let a = *a;
            let quota = ctx
                .client
                .put_quota(&PutQuota {
                    name: a.name,
                    description: a.description,
                    scope: Some(a.scope),
                    subject: a.subject,
                    metric: a.metric,
                    action: a.action,
                    resource_type: a.resource_type,
                    resource_id: a.resource_id,
                    window: a.window,
                    rolling: a.rolling,
                    timezone: a.timezone,
                    burst: a.burst,
                    limit: a.limit,
                    currency: a.currency,
                    thresholds: a.thresholds,
                    on_exceed: a.on_exceed,
                })
                .await?;
            output::print_record(ctx.output, &quota)
        }
        QuotasCommand::Show { id } => {
            output::print_record(ctx.output, &ctx.client.get_quota(&id).await?)
        }
        QuotasCommand::Delete { id } => {
            ctx.client.delete_quota(&id).await?;
            output::print_outcome(ctx.output, &serde_json::json!({ "deleted": id }), |_| {
                format!("Deleted quota {id} and its counters.")
            })
        }
    }
}

/// `steward usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The agent (id or name); without it, every rule with a fixed subject.
    agent: Option<String>,
    /// Only this quota.
    #[arg(long)]
    quota: Option<String>,
    /// Past windows to show per quota.
    #[arg(long, default_value_t = 0)]
    history: u32,
}

/// Draw each quota as a bar with used/limit and time to reset.
pub async fn usage(ctx: &Ctx, args: UsageArgs) -> anyhow::Result<()> {
    let usage = ctx
        .client
        .usage(&UsageQuery {
            agent: args.agent.clone(),
            quota: args.quota,
            history: Some(args.history),
        })
        .await?;
    match ctx.output {
        OutputFormat::Json => output::print_json(&usage),
        OutputFormat::Table => {
            if usage.is_empty() {
                let whom = args
                    .agent
                    .map_or("this tenant".to_string(), |a| format!("agent {a}"));
                output::say(format!("No quotas apply to {whom}."))?;
            }
            for u in &usage {
                output::say(views::usage_bar(u, Utc::now()))?;
            }
            Ok(())
        }
    }
}

/// Webhook subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List subscriptions.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Subscribe a receiver; prints the signing secret once.
    Add {
        /// Unique name.
        name: String,
        /// The receiver's URL (a Slack incoming webhook works).
        url: String,
        /// Event patterns (`quota.*`, `approval.created`); default all.
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// Unsubscribe.
    Remove {
        /// Id or name.
        id: String,
    },
    /// What was sent to a subscription and how it went.
    Deliveries {
        /// Id or name.
        id: String,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Run a `webhooks` subcommand.
pub async fn webhooks(ctx: &Ctx, command: WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::List { page } => {
            list(ctx, &page, async |cursor| {
                ctx.client.list_webhooks(&page.query(cursor)).await
            })
            .await
        }
        WebhooksCommand::Add { name, url, events } => {
            let created = ctx
                .client
                .create_webhook(&CreateWebhook {
                    name,
                    url,
                    events,
                    secret: None,
                })
                .await?;
            output::print_outcome(ctx.output, &created, |c| {
                format!(
                    "Subscribed {} to {}.\nSigning secret (shown once): {}",
                    c.webhook.name, c.webhook.url, c.secret
                )
            })
        }
        WebhooksCommand::Remove { id } => {
            ctx.client.delete_webhook(&id).await?;
            output::print_outcome(ctx.output, &serde_json::json!({ "deleted": id }), |_| {
                format!("Unsubscribed {id}.")
            })
        }
        WebhooksCommand::Deliveries { id, page } => {
            list(ctx, &page, async |cursor| {
                ctx.client
                    .list_deliveries(
                        &id,
                        &DeliveryQuery {
                            cursor,
                            limit: page.limit,
                            status: None,
                        },
                    )
                    .await
            })
            .await
        }
    }
}
