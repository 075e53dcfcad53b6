//! `steward alerts` and `steward baseline`: agents acting out of character.

use clap::{Args, Subcommand, ValueEnum};
use steward_types::{AlertQuery, BehaviourSettings, ResolveAlert, Signal};

use super::{Ctx, PageArgs, list};
use crate::output;

/// How an alert is resolved.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Resolution {
    /// The activity was normal after all.
    Expected,
    /// A real problem, dealt with.
    Confirmed,
}

/// `steward alerts ...`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List alerts, oldest first.
    List {
        /// Only this agent's (id or name).
        #[arg(long)]
        agent: Option<String>,
        /// `open` or `resolved`.
        #[arg(long)]
        status: Option<String>,
        /// Only this signal (requests, denials, bytes, records, spawns, hours, new_action).
        #[arg(long)]
        signal: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one alert.
    Show {
        /// Alert id.
        id: String,
    },
    /// Resolve an open alert.
    Resolve {
        /// Alert id.
        id: String,
        /// `expected` (normal after all) or `confirmed` (a real problem).
        #[arg(long = "as", value_enum)]
        resolution: Resolution,
        /// A note for the record.
        #[arg(long)]
        note: Option<String>,
    },
    /// Show the tenant's settings, or change those given.
    Settings(SettingsArgs),
}

/// `steward alerts settings`.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Turn alerts on or off.
    #[arg(long)]
    enabled: Option<bool>,
    /// Days of history each hour is compared with (1-90).
    #[arg(long)]
    baseline_days: Option<u32>,
    /// Days an agent acts before anything is flagged (0-30).
    #[arg(long)]
    learning_days: Option<u32>,
    /// How many times its busiest baseline hour a count must exceed (1.5-100).
    #[arg(long)]
    factor: Option<f64>,
    /// Signals whose alert also suspends the agent (comma-separated; `none` for none).
    #[arg(long, value_delimiter = ',')]
    suspend_on: Option<Vec<String>>,
}

/// Run an `alerts` subcommand.
pub async fn alerts(ctx: &Ctx, command: AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::List {
            agent,
            status,
            signal,
            page,
        } => {
            list(ctx, &page, async |cursor| {
                ctx.client
                    .list_alerts(&AlertQuery {
                        agent: agent.clone(),
                        status: status.clone(),
                        signal: signal.clone(),
                        cursor,
                        limit: page.limit,
                    })
                    .await
            })
            .await
        }
        AlertsCommand::Show { id } => {
            let alert = ctx.client.get_alert(&id).await?;
            output::print_record(ctx.output, &alert)
        }
        AlertsCommand::Resolve {
            id,
            resolution,
            note,
        } => {
            let resolution = match resolution {
                Resolution::Expected => "expected",
                Resolution::Confirmed => "confirmed",
            };
            let alert = ctx
                .client
                .resolve_alert(
                    &id,
                    &ResolveAlert {
                        resolution: resolution.into(),
                        note,
                    },
                )
                .await?;
            output::print_outcome(ctx.output, &alert, |a| {
                let still = if a.suspended {
                    format!(
                        "\n{} was suspended by this alert and stays suspended: `steward agents resume {}` lets it act again.",
                        a.agent_name, a.agent_name
                    )
                } else {
                    String::new()
                };
                format!("Resolved {} as {resolution}.{still}", a.id)
            })
        }
        AlertsCommand::Settings(args) => settings(ctx, args).await,
    }
}

async fn settings(ctx: &Ctx, args: SettingsArgs) -> anyhow::Result<()> {
    let current = ctx.client.behaviour_settings().await?;
    let changed = args.enabled.is_some()
        || args.baseline_days.is_some()
        || args.learning_days.is_some()
        || args.factor.is_some()
        || args.suspend_on.is_some();
    let settings = if changed {
        let suspend_on = match args.suspend_on {
            None => current.suspend_on.clone(),
            Some(names) => names
                .iter()
                .filter(|n| n.as_str() != "none")
                .map(|n| {
                    Signal::parse(n.trim()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown signal {n:?}: expected one of {}",
                            Signal::ALL.map(Signal::as_str).join(", ")
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        ctx.client
            .set_behaviour_settings(&BehaviourSettings {
                enabled: args.enabled.unwrap_or(current.enabled),
                baseline_days: args.baseline_days.unwrap_or(current.baseline_days),
                learning_days: args.learning_days.unwrap_or(current.learning_days),
                factor: args.factor.unwrap_or(current.factor),
                suspend_on,
            })
            .await?
    } else {
        current
    };
    output::print_record(ctx.output, &settings)
}

/// `steward baseline AGENT`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Agent id or name.
    agent: String,
}

/// Show what normal looks like for an agent.
pub async fn baseline(ctx: &Ctx, args: BaselineArgs) -> anyhow::Result<()> {
    let b = ctx.client.agent_baseline(&args.agent).await?;
    output::print_record(ctx.output, &b)
}
