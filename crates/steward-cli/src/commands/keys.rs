//! `steward keys ...`: agent API keys.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use steward_types::CreateKey;

use super::{Ctx, PageArgs, list, parse_time};
use crate::output::{self, render_detail};

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for an agent; the secret is printed once.
    Create {
        /// Agent id or name.
        agent: String,
        /// A name for the key (where it is deployed).
        #[arg(long, default_value = "")]
        name: String,
        /// When it stops working (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        expires_at: Option<DateTime<Utc>>,
    },
    /// List an agent's keys (never their secrets).
    List {
        /// Agent id or name.
        agent: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Revoke a key; it stops working at once.
    Revoke {
        /// Agent id or name.
        agent: String,
        /// Key id.
        key_id: String,
    },
}

/// Run a `keys` subcommand.
pub async fn run(ctx: &Ctx, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            agent,
            name,
            expires_at,
        } => {
            let created = ctx
                .client
                .create_key(&agent, &CreateKey { name, expires_at })
                .await?;
            output::print_outcome(ctx.output, &created, |created| {
                secret_notice("key", &render_detail(&created.key), &created.secret)
            })
        }
        KeysCommand::List { agent, page } => {
            list(ctx, &page, async |cursor| {
                ctx.client.list_keys(&agent, &page.query(cursor)).await
            })
            .await
        }
        KeysCommand::Revoke { agent, key_id } => {
            let key = ctx.client.revoke_key(&agent, &key_id).await?;
            output::print_record(ctx.output, &key)
        }
    }
}

/// The detail of a new credential, its secret, and the warning that it is
/// shown only once.
pub fn secret_notice(kind: &str, detail: &str, secret: &str) -> String {
    format!(
        "{detail}\n\nSecret: {secret}\n\nStore this {kind} now: it is never shown again, \
         and anyone holding it can act with it."
    )
}
