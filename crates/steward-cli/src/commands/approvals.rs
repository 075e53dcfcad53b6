//! `steward approvals ...`: list, show, approve, deny and wait for human
//! approvals. Approvers act with their own token (`steward tokens create
//! --human EMAIL`), so every decision is attributable.

use clap::Subcommand;
use steward_types::{Approval, ApprovalFilter};

use super::{Ctx, PageArgs, list};
use crate::output::{self, Detail, Tabular, optional_time, time};

/// Approval subcommands.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approvals, oldest first.
    List {
        /// pending, approved, denied, expired, used or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// action, registration or change.
        #[arg(long)]
        kind: Option<String>,
        /// Agent id or name.
        #[arg(long)]
        agent: Option<String>,
        /// Only those waiting for this approver group (a role).
        #[arg(long)]
        group: Option<String>,
        /// low, medium or high.
        #[arg(long)]
        risk_tier: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one approval: the exact request, the chain, who decided what.
    Show {
        /// Approval id.
        id: String,
    },
    /// Approve the step waiting for your group.
    Approve {
        /// Approval id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Deny it; a comment is required.
    Deny {
        /// Approval id.
        id: String,
        /// Why (shown to the requester and recorded).
        #[arg(long)]
        comment: String,
    },
    /// Wait until it is decided or expires (at most 30 seconds per call).
    Wait {
        /// Approval id.
        id: String,
        /// Seconds to wait.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=30))]
        timeout: u32,
    },
}

/// Run an `approvals` subcommand.
pub async fn run(ctx: &Ctx, command: ApprovalsCommand) -> anyhow::Result<()> {
    let approval = match command {
        ApprovalsCommand::List {
            status,
            kind,
            agent,
            group,
            risk_tier,
            page,
        } => {
            return list(ctx, &page, async |cursor| {
                let filter = ApprovalFilter {
                    status: status.clone(),
                    kind: kind.clone(),
                    agent: agent.clone(),
                    group: group.clone(),
                    risk_tier: risk_tier.clone(),
                    cursor,
                    limit: page.limit,
                };
                ctx.client.list_approvals(&filter).await
            })
            .await;
        }
        ApprovalsCommand::Show { id } => ctx.client.get_approval(&id).await?,
        ApprovalsCommand::Approve { id, comment } => {
            ctx.client.approve(&id, comment.as_deref()).await?
        }
        ApprovalsCommand::Deny { id, comment } => ctx.client.deny(&id, Some(&comment)).await?,
        ApprovalsCommand::Wait { id, timeout } => ctx.client.wait_approval(&id, timeout).await?,
    };
    output::print_record(ctx.output, &approval)
}

/// What an approval is about, in a few words.
pub fn subject(a: &Approval) -> String {
    let agent = a.agent_name.clone().unwrap_or_else(|| "-".into());
    match a.kind {
        steward_types::ApprovalKind::Action => format!(
            "{agent}: {} {}:{} {}",
            a.request["action"].as_str().unwrap_or("?"),
            a.request["resource"]["type"].as_str().unwrap_or("?"),
            a.request["resource"]["id"].as_str().unwrap_or("?"),
            a.request["context"]
        ),
        steward_types::ApprovalKind::Registration => format!("register {agent}"),
        steward_types::ApprovalKind::Change => format!(
            "{agent}: roles {} classifications {}",
            a.request["to"]["roles"], a.request["to"]["classifications"]
        ),
    }
}

fn chain(a: &Approval) -> String {
    a.steps
        .iter()
        .map(|s| match &s.decided_by_email {
            Some(who) => format!("{} {} by {who}", s.group, s.status),
            None => format!("{} {}", s.group, s.status),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

impl Tabular for Approval {
    const HEADERS: &'static [&'static str] = &[
        "ID",
        "KIND",
        "STATUS",
        "RISK",
        "WAITS FOR",
        "ABOUT",
        "EXPIRES",
    ];
    const PLURAL: &'static str = "approvals";
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.kind.as_str().to_owned(),
            self.status.as_str().to_owned(),
            self.risk_tier.as_str().to_owned(),
            self.current_group().unwrap_or("-").to_owned(),
            subject(self),
            time(&self.expires_at),
        ]
    }
}

impl Detail for Approval {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let comments: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| s.comment.as_ref().map(|c| format!("{}: {c}", s.group)))
            .collect();
        vec![
            ("id", self.id.clone()),
            ("kind", self.kind.as_str().to_owned()),
            ("status", self.status.as_str().to_owned()),
            ("risk", self.risk_tier.as_str().to_owned()),
            ("about", subject(self)),
            ("why", self.reason.clone()),
            ("chain", chain(self)),
            (
                "comments",
                if comments.is_empty() {
                    "-".into()
                } else {
                    comments.join("; ")
                },
            ),
            ("requested by", self.requested_by.clone()),
            ("requested", time(&self.created_at)),
            ("sla due", time(&self.sla_due_at)),
            ("expires", time(&self.expires_at)),
            ("grant until", optional_time(self.grant_expires_at.as_ref())),
            (
                "used by",
                self.used_by_decision.clone().unwrap_or_else(|| "-".into()),
            ),
            ("request", self.request.to_string()),
        ]
    }
}
