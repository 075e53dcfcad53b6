//! `steward issuers` and `steward delegations`: proven delegation. An agent
//! exchanges a person's identity-provider token for a delegated token that
//! acts for that person (OAuth 2.0 Token Exchange, RFC 8693).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use steward_types::{DelegationQuery, DelegationSettings, ErrorCode, MatchClaim, PutIssuer};

use super::{Ctx, PageArgs, list};
use crate::output;
use crate::views::duration_text;

/// `steward issuers ...`.
#[derive(Debug, Subcommand)]
pub enum IssuersCommand {
    /// Trust an identity provider (or replace the one with this name, for
    /// example to rotate its keys).
    Put {
        /// A name for it in Steward.
        name: String,
        /// The `iss` its tokens carry, exactly (`https://login.example.com/`).
        #[arg(long, value_name = "URL")]
        issuer: String,
        /// The `aud` its tokens must carry for Steward.
        #[arg(long, value_name = "AUD")]
        audience: String,
        /// A file holding its public keys as a JSON Web Key Set (`{"keys": [...]}`).
        #[arg(long, value_name = "FILE")]
        jwks: PathBuf,
        /// Which claim names the person: `email` (the human's e-mail) or
        /// `sub` (the human's external id).
        #[arg(long, value_parser = parse_match_claim, default_value = "email")]
        match_claim: MatchClaim,
        /// Accept only tokens whose `may_act.sub` claim names the agent
        /// exchanging them.
        #[arg(long)]
        require_may_act: bool,
        /// With `--match-claim email`, accept tokens that do not say their
        /// address is verified (no `email_verified` claim).
        #[arg(long)]
        accept_unverified_email: bool,
    },
    /// List the trusted identity providers.
    List,
    /// Stop trusting an identity provider.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `steward delegations ...`.
#[derive(Debug, Subcommand)]
pub enum DelegationsCommand {
    /// List delegated tokens (never their secrets).
    List {
        /// Only this agent's (id or name).
        #[arg(long)]
        agent: Option<String>,
        /// Only those acting for this person (id or e-mail).
        #[arg(long)]
        human: Option<String>,
        /// Only those still usable (not revoked, not expired).
        #[arg(long)]
        active: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Revoke a delegated token; it stops working at once.
    Revoke {
        /// Delegation id (`dlg_...`).
        id: String,
    },
    /// Show the tenant's delegation settings, or change those given.
    Settings(SettingsArgs),
    /// Exchange a person's identity-provider token for a delegated token,
    /// with the agent's key.
    Exchange(ExchangeArgs),
}

/// `steward delegations settings`.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Refuse agent keys that only name whom they act for: acting for a
    /// person then needs a delegated token.
    #[arg(long, value_name = "true|false")]
    require_proof: Option<bool>,
    /// Longest life of a delegated token, in seconds (60-86400).
    #[arg(long, value_name = "SECS")]
    max_lifetime: Option<u32>,
}

/// `steward delegations exchange`.
#[derive(Debug, Args)]
pub struct ExchangeArgs {
    /// The person's token from the identity provider (a signed JWT); `-`
    /// reads it from standard input.
    #[arg(long, value_name = "TOKEN")]
    subject_token: String,
    /// Its type: `jwt` (default), `id_token`, `access_token`, or a full
    /// `urn:ietf:params:oauth:token-type:...`.
    #[arg(long, value_name = "TYPE")]
    subject_token_type: Option<String>,
    /// The agent's key (`stw_...`): the delegated token acts as this agent.
    #[arg(
        long,
        env = "STEWARD_AGENT_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    agent_key: String,
}

fn parse_match_claim(s: &str) -> Result<MatchClaim, String> {
    match s {
        "email" => Ok(MatchClaim::Email),
        "sub" => Ok(MatchClaim::Sub),
        other => Err(format!("expected email or sub, got {other:?}")),
    }
}

/// A short token type (`id_token`) as its URN; a URN as given.
fn token_type_urn(text: &str) -> String {
    if text.contains(':') {
        text.to_owned()
    } else {
        format!("urn:ietf:params:oauth:token-type:{text}")
    }
}

/// Read a JWKS file: it must exist, be JSON, and hold a `keys` array.
fn read_jwks(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the JWKS file {}", path.display()))?;
    let jwks: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "the JWKS file {} is not JSON (expected {{\"keys\": [...]}})",
            path.display()
        )
    })?;
    if !jwks.get("keys").is_some_and(serde_json::Value::is_array) {
        bail!(
            "the JWKS file {} has no \"keys\" array (expected {{\"keys\": [...]}})",
            path.display()
        );
    }
    Ok(jwks)
}

/// Run an `issuers` subcommand.
pub async fn issuers(ctx: &Ctx, command: IssuersCommand) -> anyhow::Result<()> {
    match command {
        IssuersCommand::Put {
            name,
            issuer,
            audience,
            jwks,
            match_claim,
            require_may_act,
            accept_unverified_email,
        } => {
            let jwks = read_jwks(&jwks)?;
            let issuer = ctx
                .client
                .put_issuer(
                    &name,
                    &PutIssuer {
                        issuer,
                        audience,
                        jwks,
                        match_claim,
                        require_may_act,
                        accept_unverified_email,
                    },
                )
                .await?;
            output::print_record(ctx.output, &issuer)
        }
        IssuersCommand::List => {
            let issuers = ctx.client.issuers().await?;
            output::print_outcome(ctx.output, &issuers, |i| output::render_list(i))
        }
        IssuersCommand::Delete { name } => {
            ctx.client.delete_issuer(&name).await?;
            output::print_outcome(ctx.output, &serde_json::json!({"deleted": name}), |_| {
                format!("Deleted identity provider {name}; its tokens no longer prove anything.")
            })
        }
    }
}

/// Run a `delegations` subcommand.
pub async fn delegations(ctx: &Ctx, command: DelegationsCommand) -> anyhow::Result<()> {
    match command {
        DelegationsCommand::List {
            agent,
            human,
            active,
            page,
        } => {
            list(ctx, &page, async |cursor| {
                ctx.client
                    .delegations(&DelegationQuery {
                        agent: agent.clone(),
                        human: human.clone(),
                        active: active.then_some(true),
                        limit: page.limit,
                        cursor,
                    })
                    .await
            })
            .await
        }
        DelegationsCommand::Revoke { id } => {
            let d = ctx.client.revoke_delegation(&id).await?;
            output::print_outcome(ctx.output, &d, |d| {
                format!(
                    "Revoked {}: {} no longer acts for {} with it.",
                    d.id, d.agent_id, d.human_id
                )
            })
        }
        DelegationsCommand::Settings(args) => settings(ctx, args).await,
        DelegationsCommand::Exchange(args) => exchange(ctx, args).await,
    }
}

async fn settings(ctx: &Ctx, args: SettingsArgs) -> anyhow::Result<()> {
    let current = ctx.client.delegation_settings().await?;
    let settings = if args.require_proof.is_some() || args.max_lifetime.is_some() {
        ctx.client
            .set_delegation_settings(&DelegationSettings {
                require_proof: args.require_proof.unwrap_or(current.require_proof),
                max_lifetime_secs: args.max_lifetime.unwrap_or(current.max_lifetime_secs),
            })
            .await?
    } else {
        current
    };
    output::print_record(ctx.output, &settings)
}

async fn exchange(ctx: &Ctx, args: ExchangeArgs) -> anyhow::Result<()> {
    let agent_key = args.agent_key.trim();
    if agent_key.is_empty() {
        bail!("give the agent's key with --agent-key or STEWARD_AGENT_KEY");
    }
    let subject_token = if args.subject_token == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the subject token from standard input")?;
        text.trim().to_owned()
    } else {
        args.subject_token.trim().to_owned()
    };
    if subject_token.is_empty() {
        bail!("the subject token is empty");
    }
    let token_type = args.subject_token_type.as_deref().map(token_type_urn);
    let exchanged = ctx
        .client
        .with_token(agent_key)
        .exchange_token(&subject_token, token_type.as_deref())
        .await
        .map_err(|err| {
            if err.code() == Some(ErrorCode::Unauthenticated) {
                // Not `--token`'s fault: say which credential was refused.
                anyhow::anyhow!(
                    "{err}\n  hint: the exchange takes the agent's key (stw_...) from \
                     --agent-key or STEWARD_AGENT_KEY"
                )
            } else {
                err.into()
            }
        })?;
    output::print_outcome(ctx.output, &exchanged, |e| {
        let expires_at = Utc::now() + chrono::Duration::seconds(e.expires_in);
        format!(
            "Token: {}\nExpires: {} UTC (in {})\nDelegation: {}\n\nUse the token as the agent's \
             bearer token: it acts for the person until it expires or is revoked \
             (`steward delegations revoke {}`).",
            e.access_token,
            output::time(&expires_at),
            duration_text(chrono::Duration::seconds(e.expires_in)),
            e.delegation_id,
            e.delegation_id
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_token_types_become_urns() {
        assert_eq!(
            token_type_urn("id_token"),
            "urn:ietf:params:oauth:token-type:id_token"
        );
        assert_eq!(
            token_type_urn("urn:ietf:params:oauth:token-type:jwt"),
            "urn:ietf:params:oauth:token-type:jwt"
        );
    }

    #[test]
    fn a_jwks_file_must_be_json_with_keys() {
        let dir = tempfile::tempdir().unwrap();
        let missing = read_jwks(&dir.path().join("nope.json")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("cannot read the JWKS file"),
            "{missing:#}"
        );
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "not json").unwrap();
        let err = read_jwks(&garbage).unwrap_err();
        assert!(format!("{err:#}").contains("is not JSON"), "{err:#}");
        let keyless = dir.path().join("keyless.json");
        std::fs::write(&keyless, "{}").unwrap();
        let err = read_jwks(&keyless).unwrap_err();
        assert!(format!("{err:#}").contains("\"keys\""), "{err:#}");
        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"keys": []}"#).unwrap();
        assert!(read_jwks(&good).is_ok());
    }

    #[test]
    fn match_claims_are_email_or_sub() {
        assert_eq!(parse_match_claim("sub"), Ok(MatchClaim::Sub));
        assert!(parse_match_claim("upn").is_err());
    }
}
