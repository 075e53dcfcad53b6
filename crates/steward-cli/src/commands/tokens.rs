//! `steward tokens ...`: API tokens for people and automation.

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use steward_types::{CreateToken, TokenRole};

use super::keys::secret_notice;
use super::{Ctx, PageArgs, list, parse_time};
use crate::output::{self, render_detail};

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an API token; the secret is printed once.
    Create {
        /// A name for the token.
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The person it belongs to (id or e-mail), so its actions are attributable.
        #[arg(long)]
        human: Option<String>,
        /// Tenant to create it in (platform administrators only).
        #[arg(long)]
        tenant: Option<String>,
        /// When it stops working (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        expires_at: Option<DateTime<Utc>>,
    },
    /// List API tokens (never their secrets).
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Revoke a token; it stops working at once.
    Revoke {
        /// Token id.
        id: String,
    },
}

/// `--role` of a token.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Read and change everything in the tenant.
    Admin,
    /// Read everything in the tenant, change nothing.
    Auditor,
    /// An enforcement point's: ask for decisions only.
    Pep,
}

impl From<RoleArg> for TokenRole {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => TokenRole::Admin,
            RoleArg::Auditor => TokenRole::Auditor,
            RoleArg::Pep => TokenRole::Pep,
        }
    }
}

/// Run a `tokens` subcommand.
pub async fn run(ctx: &Ctx, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create {
            name,
            role,
            human,
            tenant,
            expires_at,
        } => {
            let request = CreateToken {
                name,
                role: role.into(),
                human,
                expires_at,
                tenant,
            };
            let created = ctx.client.create_token(&request).await?;
            output::print_outcome(ctx.output, &created, |created| {
                secret_notice("token", &render_detail(&created.token), &created.secret)
            })
        }
        TokensCommand::List { page } => {
            list(ctx, &page, async |cursor| {
                ctx.client.list_tokens(&page.query(cursor)).await
            })
            .await
        }
        TokensCommand::Revoke { id } => {
            let token = ctx.client.revoke_token(&id).await?;
            output::print_record(ctx.output, &token)
        }
    }
}
