//! `steward agents ...`: register, find, change and move agents through
//! their lifecycle.

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use steward_client::AgentTransition;
use steward_types::{Agent, AgentFilter, AgentState, RegisterAgent, TransitionResult, UpdateAgent};

use super::{Ctx, PageArgs, labels_to_map, list, non_empty, parse_label, parse_time};
use crate::output::{self, OutputFormat, render_detail};

/// Agent subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Register an agent (submitted for approval unless --draft).
    Register(RegisterArgs),
    /// List agents, with filters.
    List(ListArgs),
    /// Show one agent.
    Show {
        /// Agent id or name.
        id: String,
    },
    /// Change an agent's owner, team, purpose, platform, model, labels or expiry.
    Update(UpdateArgs),
    /// Submit a draft (proposed) agent for approval.
    Submit(TransitionArgs),
    /// Approve a pending agent so it may act.
    Activate(TransitionArgs),
    /// Refuse a pending agent.
    Reject(TransitionArgs),
    /// Stop an active agent for now; its keys stop working.
    Suspend {
        /// Agent id or name.
        id: String,
        /// Why (recorded on the agent and in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Let a suspended agent act again.
    Resume(TransitionArgs),
    /// Retire an agent and its descendants for good, revoking their keys.
    Decommission(TransitionArgs),
}

/// `agents register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Unique name in the tenant.
    #[arg(long)]
    pub name: String,
    /// Accountable human: id or e-mail.
    #[arg(long)]
    pub owner: String,
    /// Owning team: id or name.
    #[arg(long)]
    pub team: Option<String>,
    /// Why the agent exists.
    #[arg(long, default_value = "")]
    pub purpose: String,
    /// Platform or vendor it runs on.
    #[arg(long, default_value = "")]
    pub platform: String,
    /// Model it uses.
    #[arg(long, default_value = "")]
    pub model: String,
    /// Persona id or name (supplies roles and classifications not given here).
    #[arg(long)]
    pub persona: Option<String>,
    /// Role name (repeatable; default: the persona's).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Data classification (repeatable; default: the persona's).
    #[arg(long = "classification", value_name = "CLASSIFICATION")]
    pub classifications: Vec<String>,
    /// Label as key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Parent agent id or name, when this agent is spawned by another.
    #[arg(long)]
    pub parent: Option<String>,
    /// When it stops being allowed to act (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Keep it as a draft (proposed) instead of submitting it.
    #[arg(long)]
    pub draft: bool,
}

impl RegisterArgs {
    fn into_request(self) -> anyhow::Result<RegisterAgent> {
        Ok(RegisterAgent {
            name: self.name,
            owner: self.owner,
            team: self.team,
            purpose: self.purpose,
            platform: self.platform,
            model: self.model,
            persona: self.persona,
            roles: non_empty(self.roles),
            classifications: non_empty(self.classifications),
            labels: labels_to_map(self.labels)?,
            parent: self.parent,
            expires_at: self.expires_at,
            draft: self.draft,
        })
    }
}

/// `agents list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Owner id or e-mail.
    #[arg(long)]
    pub owner: Option<String>,
    /// Team id or name.
    #[arg(long)]
    pub team: Option<String>,
    /// Persona id or name.
    #[arg(long)]
    pub persona: Option<String>,
    /// Lifecycle state (proposed, pending_approval, active, suspended,
    /// decommissioned, rejected, expired).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<String>,
    /// Risk tier.
    #[arg(long, value_parser = ["low", "medium", "high"])]
    pub risk_tier: Option<String>,
    /// Parent agent id.
    #[arg(long)]
    pub parent: Option<String>,
    /// Only agents whose owner has been deactivated.
    #[arg(long)]
    pub orphaned: bool,
    #[command(flatten)]
    pub page: PageArgs,
}

impl ListArgs {
    fn filter(&self, cursor: Option<String>) -> AgentFilter {
        AgentFilter {
            owner: self.owner.clone(),
            team: self.team.clone(),
            persona: self.persona.clone(),
            state: self.state.clone(),
            risk_tier: self.risk_tier.clone(),
            parent: self.parent.clone(),
            orphaned: self.orphaned.then_some(true),
            cursor,
            limit: self.page.limit,
        }
    }
}

fn parse_state(text: &str) -> Result<String, String> {
    match AgentState::parse(text) {
        Some(state) => Ok(state.as_str().to_owned()),
        None => {
            let names: Vec<&str> = AgentState::ALL.iter().map(|s| s.as_str()).collect();
            Err(format!("expected one of: {}", names.join(", ")))
        }
    }
}

/// `agents update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Agent id or name.
    pub id: String,
    /// New owner: id or e-mail (clears the orphaned flag).
    #[arg(long)]
    pub owner: Option<String>,
    /// New team: id or name.
    #[arg(long)]
    pub team: Option<String>,
    /// New purpose.
    #[arg(long)]
    pub purpose: Option<String>,
    /// New platform.
    #[arg(long)]
    pub platform: Option<String>,
    /// New model.
    #[arg(long)]
    pub model: Option<String>,
    /// Label as key=value (repeatable); replaces all labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// New expiry (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Replacement role (repeatable). Raising an active agent's risk tier
    /// waits for approval (`steward approvals list`).
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Replacement data classification (repeatable); approval as for --role.
    #[arg(long = "classification")]
    pub classifications: Vec<String>,
}

impl UpdateArgs {
    fn into_request(self) -> anyhow::Result<(String, UpdateAgent)> {
        let labels = if self.labels.is_empty() {
            None
        } else {
            Some(labels_to_map(self.labels)?)
        };
        let request = UpdateAgent {
            owner: self.owner,
            team: self.team,
            purpose: self.purpose,
            platform: self.platform,
            model: self.model,
            labels,
            expires_at: self.expires_at,
            roles: (!self.roles.is_empty()).then_some(self.roles),
            classifications: (!self.classifications.is_empty()).then_some(self.classifications),
        };
        let nothing = request.owner.is_none()
            && request.team.is_none()
            && request.purpose.is_none()
            && request.platform.is_none()
            && request.model.is_none()
            && request.labels.is_none()
            && request.expires_at.is_none()
            && request.roles.is_none()
            && request.classifications.is_none();
        if nothing {
            bail!(
                "nothing to change: pass at least one of --owner, --team, --purpose, \
                 --platform, --model, --label, --expires-at, --role, --classification"
            );
        }
        Ok((self.id, request))
    }
}

/// An agent and an optional reason, for most transitions.
#[derive(Debug, Args)]
pub struct TransitionArgs {
    /// Agent id or name.
    pub id: String,
    /// Why (recorded on the agent and in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
}

/// Run an `agents` subcommand.
pub async fn run(ctx: &Ctx, command: AgentsCommand) -> anyhow::Result<()> {
    match command {
        AgentsCommand::Register(args) => {
            let agent = ctx.client.register_agent(&args.into_request()?).await?;
            output::print_outcome(ctx.output, &agent, describe_registered)
        }
        AgentsCommand::List(args) => {
            list(ctx, &args.page, async |cursor| {
                ctx.client.list_agents(&args.filter(cursor)).await
            })
            .await
        }
        AgentsCommand::Show { id } => {
            let agent = ctx.client.get_agent(&id).await?;
            output::print_record(ctx.output, &agent)
        }
        AgentsCommand::Update(args) => {
            let (id, request) = args.into_request()?;
            let (agent, held) = ctx.client.update_agent_or_hold(&id, &request).await?;
            match held {
                Some(approval) => output::print_outcome(ctx.output, &agent, |agent| {
                    format!(
                        "The change to {} raises its risk and waits for approval {approval}; \
                         nothing changed yet.\nSee it with: steward approvals show {approval}",
                        agent.name
                    )
                }),
                None => output::print_record(ctx.output, &agent),
            }
        }
        AgentsCommand::Submit(args) => transition(ctx, AgentTransition::Submit, args).await,
        AgentsCommand::Activate(args) => transition(ctx, AgentTransition::Activate, args).await,
        AgentsCommand::Reject(args) => transition(ctx, AgentTransition::Reject, args).await,
        AgentsCommand::Suspend { id, reason } => {
            let args = TransitionArgs {
                id,
                reason: Some(reason),
            };
            transition(ctx, AgentTransition::Suspend, args).await
        }
        AgentsCommand::Resume(args) => transition(ctx, AgentTransition::Resume, args).await,
        AgentsCommand::Decommission(args) => {
            transition(ctx, AgentTransition::Decommission, args).await
        }
    }
}

async fn transition(
    ctx: &Ctx,
    transition: AgentTransition,
    args: TransitionArgs,
) -> anyhow::Result<()> {
    let result = ctx
        .client
        .transition_agent(&args.id, transition, args.reason.as_deref())
        .await?;
    print_transition(ctx.output, &result)
}

/// Print a transition's answer: a sentence, or the JSON.
pub fn print_transition(format: OutputFormat, result: &TransitionResult) -> anyhow::Result<()> {
    output::print_outcome(format, result, describe_transition)
}

/// "Agent X (id) is now suspended." plus what came with it.
pub fn describe_transition(result: &TransitionResult) -> String {
    let agent = &result.agent;
    let mut text = format!(
        "Agent {} ({}) is now {}.",
        agent.name,
        agent.id,
        agent.state.as_str()
    );
    if result.keys_revoked > 0 {
        text.push_str(&format!(
            " {} credential{} revoked.",
            result.keys_revoked,
            plural(result.keys_revoked)
        ));
    }
    if !result.cascaded.is_empty() {
        text.push_str(&format!(
            "\nDescendants changed with it: {}",
            result.cascaded.join(", ")
        ));
    }
    text
}

fn describe_registered(agent: &Agent) -> String {
    let next_step = match agent.state {
        AgentState::PendingApproval => format!(
            "\n\nIt needs an approval before it may act: find it with `steward approvals list --agent {}`, \
             and an approver grants it with `steward approvals approve ID`",
            agent.name
        ),
        AgentState::Proposed => format!(
            "\n\nIt is a draft; submit it with: steward agents submit {}",
            agent.name
        ),
        _ => String::new(),
    };
    format!(
        "Registered agent {} ({}): {}, {} risk.{next_step}\n\n{}",
        agent.name,
        agent.id,
        agent.state.as_str(),
        agent.risk_tier.as_str(),
        render_detail(agent)
    )
}

/// `s` unless there is exactly one.
pub fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(subcommand)]
        command: AgentsCommand,
    }

    fn parse(args: &[&str]) -> Result<AgentsCommand, clap::Error> {
        let argv = std::iter::once("agents").chain(args.iter().copied());
        Harness::try_parse_from(argv).map(|h| h.command)
    }

    #[test]
    fn register_flags_become_the_request() {
        let command = parse(&[
            "register",
            "--name",
            "docs-helper",
            "--owner",
            "alice@example.com",
            "--classification",
            "public",
            "--label",
            "env=prod",
            "--label",
            "tier=2",
            "--expires-at",
            "2030-01-01T00:00:00Z",
            "--draft",
        ])
        .unwrap();
        let AgentsCommand::Register(args) = command else {
            panic!("expected register, got {command:?}");
        };
        let request = args.into_request().unwrap();
        assert_eq!(request.name, "docs-helper");
        assert_eq!(request.owner, "alice@example.com");
        assert_eq!(request.roles, None, "no --role leaves the persona's roles");
        assert_eq!(request.classifications, Some(vec!["public".to_owned()]));
        assert_eq!(request.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(request.labels.len(), 2);
        assert!(request.draft);
        assert!(request.expires_at.is_some());
    }

    #[test]
    fn a_malformed_label_is_a_usage_error() {
        let err =
            parse(&["register", "--name", "x", "--owner", "o", "--label", "oops"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn list_filters_are_validated_and_passed_on() {
        let command = parse(&[
            "list",
            "--state",
            "active",
            "--risk-tier",
            "high",
            "--orphaned",
            "--limit",
            "10",
        ])
        .unwrap();
        let AgentsCommand::List(args) = command else {
            panic!("expected list, got {command:?}");
        };
        let filter = args.filter(Some("c".into()));
        assert_eq!(filter.state.as_deref(), Some("active"));
        assert_eq!(filter.risk_tier.as_deref(), Some("high"));
        assert_eq!(filter.orphaned, Some(true));
        assert_eq!(filter.limit, Some(10));
        assert_eq!(filter.cursor.as_deref(), Some("c"));

        assert!(parse(&["list", "--state", "sleeping"]).is_err());
        assert!(parse(&["list", "--limit", "0"]).is_err());
    }

    #[test]
    fn update_needs_something_to_change() {
        let AgentsCommand::Update(args) = parse(&["update", "bot"]).unwrap() else {
            panic!("expected update");
        };
        assert!(args.into_request().is_err());

        let AgentsCommand::Update(args) =
            parse(&["update", "bot", "--owner", "bob@example.com"]).unwrap()
        else {
            panic!("expected update");
        };
        let (id, request) = args.into_request().unwrap();
        assert_eq!(id, "bot");
        assert_eq!(request.owner.as_deref(), Some("bob@example.com"));
        assert_eq!(request.labels, None);
    }

    #[test]
    fn suspend_requires_a_reason() {
        assert!(parse(&["suspend", "bot"]).is_err());
        assert!(parse(&["suspend", "bot", "--reason", "leaked key"]).is_ok());
    }
}
