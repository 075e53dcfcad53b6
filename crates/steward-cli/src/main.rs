//! `steward`: run the server (`serve`), try it (`demo`), or manage a running
//! one over its HTTP API (every other command).

mod commands;
mod demo;
mod logging;
mod output;
mod views;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use steward_client::Client;

use commands::Ctx;
use output::OutputFormat;

/// Help heading of the options every command accepts.
const GLOBAL: &str = "Global options";

/// Steward: a governance platform for AI agents.
#[derive(Debug, Parser)]
#[command(name = "steward", version, about, propagate_version = true)]
struct Cli {
    /// Server to talk to.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "STEWARD_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    server: String,
    /// API token (`stwt_...`) or agent key (`stw_...`).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "STEWARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// How to print results.
    #[arg(
        short,
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Steward server.
    Serve(commands::serve::ServeArgs),
    /// Start a throwaway server on a temporary store and play a short scenario.
    Demo(demo::DemoArgs),
    /// Register agents and move them through their lifecycle.
    #[command(subcommand)]
    Agents(commands::agents::AgentsCommand),
    /// Agents' API keys.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// People who own agents.
    #[command(subcommand)]
    Humans(commands::humans::HumansCommand),
    /// Teams of people.
    #[command(subcommand)]
    Teams(commands::teams::TeamsCommand),
    /// Reusable agent templates.
    #[command(subcommand)]
    Personas(commands::personas::PersonasCommand),
    /// Named roles.
    #[command(subcommand)]
    Roles(commands::roles::RolesCommand),
    /// API tokens for people and automation.
    #[command(subcommand)]
    Tokens(commands::tokens::TokensCommand),
    /// Tenants (platform administrators).
    #[command(subcommand)]
    Tenants(commands::tenants::TenantsCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(commands::audit::AuditCommand),
    /// Show what `apply` would change for a governance directory; changes nothing.
    Plan(commands::apply::PlanArgs),
    /// Bring the tenant to what a governance directory declares, in one transaction.
    Apply(commands::apply::ApplyArgs),
    /// Human approvals: list, show, approve, deny, wait.
    #[command(subcommand)]
    Approvals(commands::approvals::ApprovalsCommand),
    /// Ask for a decision and explain it (exit code 0 allow, 3 deny, 4 approval required).
    Check(commands::check::CheckArgs),
    /// Cedar policies.
    #[command(subcommand)]
    Policies(commands::policies::PoliciesCommand),
    /// Declared resource types.
    #[command(subcommand)]
    ResourceTypes(commands::policies::ResourceTypesCommand),
    /// Declared actions.
    #[command(subcommand)]
    Actions(commands::policies::ActionsCommand),
    /// Quotas, budgets and rate limits.
    #[command(subcommand)]
    Quotas(commands::quotas::QuotasCommand),
    /// Draw each quota that applies (to an agent) as a bar: used/limit and time to reset.
    Usage(commands::quotas::UsageArgs),
    /// Signed notifications of events (quota thresholds, approvals).
    #[command(subcommand)]
    Webhooks(commands::quotas::WebhooksCommand),
    /// Behaviour alerts: agents acting out of character (list, show, resolve, settings).
    #[command(subcommand)]
    Alerts(commands::behaviour::AlertsCommand),
    /// Show what normal looks like for an agent: busiest hours, thresholds, actions used.
    Baseline(commands::behaviour::BaselineArgs),
    /// Recertification campaigns: owners re-attest the agents they own.
    #[command(subcommand)]
    Recert(commands::recert::RecertCommand),
    /// Identity providers whose tokens prove whom an agent acts for.
    #[command(subcommand)]
    Issuers(commands::delegation::IssuersCommand),
    /// Delegated tokens: list, revoke, settings, and the token exchange.
    #[command(subcommand)]
    Delegations(commands::delegation::DelegationsCommand),
    /// Upstream MCP servers behind the gateway at /mcp/NAME.
    #[command(subcommand)]
    McpServers(commands::mcp_servers::McpServersCommand),
    /// Print the tenant's Cedar schema.
    Schema,
    /// Show who the server takes your credential for.
    Whoami,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors end here, with exit code 2.
    let mut cli = Cli::parse();
    // `STEWARD_TOKEN=` (set but empty) means no token, not an empty one.
    cli.token = cli.token.filter(|token| !token.trim().is_empty());
    let server = cli.server.clone();
    let has_token = cli.token.is_some();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if commands::check::refusal_code(&err).is_some() => {
            ExitCode::from(commands::check::refusal_code(&err).unwrap_or(1))
        }
        Err(err) => {
            eprintln!("{}", output::render_error(&err, &server, has_token));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        client: Client::new(&cli.server, cli.token),
        output: cli.output,
    };
    match cli.command {
        Command::Serve(args) => commands::serve::run(args).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Agents(command) => commands::agents::run(&ctx, command).await,
        Command::Keys(command) => commands::keys::run(&ctx, command).await,
        Command::Humans(command) => commands::humans::run(&ctx, command).await,
        Command::Teams(command) => commands::teams::run(&ctx, command).await,
        Command::McpServers(command) => commands::mcp_servers::run(&ctx, command).await,
        Command::Personas(command) => commands::personas::run(&ctx, command).await,
        Command::Roles(command) => commands::roles::run(&ctx, command).await,
        Command::Tokens(command) => commands::tokens::run(&ctx, command).await,
        Command::Tenants(command) => commands::tenants::run(&ctx, command).await,
        Command::Audit(command) => commands::audit::run(&ctx, command).await,
        Command::Plan(args) => commands::apply::plan(&ctx, args).await,
        Command::Apply(args) => commands::apply::apply(&ctx, args).await,
        Command::Check(args) => commands::check::run(&ctx, args).await,
        Command::Approvals(command) => commands::approvals::run(&ctx, command).await,
        Command::Policies(command) => commands::policies::run(&ctx, command).await,
        Command::ResourceTypes(command) => {
            commands::policies::run_resource_types(&ctx, command).await
        }
        Command::Actions(command) => commands::policies::run_actions(&ctx, command).await,
        Command::Schema => commands::policies::schema(&ctx).await,
        Command::Quotas(command) => commands::quotas::run(&ctx, command).await,
        Command::Usage(args) => commands::quotas::usage(&ctx, args).await,
        Command::Webhooks(command) => commands::quotas::webhooks(&ctx, command).await,
        Command::Alerts(command) => commands::behaviour::alerts(&ctx, command).await,
        Command::Baseline(args) => commands::behaviour::baseline(&ctx, args).await,
        Command::Recert(command) => commands::recert::run(&ctx, command).await,
        Command::Issuers(command) => commands::delegation::issuers(&ctx, command).await,
        Command::Delegations(command) => commands::delegation::delegations(&ctx, command).await,
        Command::Whoami => commands::whoami(&ctx).await,
    }
}

/// The reader went away (`steward agents list | head`): not worth an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "steward",
            "agents",
            "list",
            "-o",
            "json",
            "--server",
            "http://example:1",
        ])
        .unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.server, "http://example:1");
    }

    #[test]
    fn usage_errors_exit_with_code_2() {
        let err = Cli::try_parse_from(["steward", "agents", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn broken_pipes_are_recognised_through_context() {
        let err = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("printing");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
