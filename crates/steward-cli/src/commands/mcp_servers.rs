//! `steward mcp-servers ...`: upstream MCP servers behind the gateway at
//! `/mcp/{name}`.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;
use steward_types::{McpDecisionRecord, McpServer, McpToolMeta, McpTransport, PutMcpServer};

use super::{Ctx, labels_to_map, parse_label};
use crate::output::{self, Detail, Tabular, or_dash, time};

/// MCP server subcommands.
#[derive(Debug, Subcommand)]
pub enum McpServersCommand {
    /// Register an upstream MCP server (or replace the one with this name).
    Add {
        /// Name; agents connect to `/mcp/NAME`.
        name: String,
        /// Its Streamable HTTP endpoint (`http://host:port/mcp`).
        #[arg(long, conflicts_with = "command", required_unless_present = "command")]
        url: Option<String>,
        /// A program speaking MCP over stdio (one process per session);
        /// its arguments follow `--`.
        #[arg(long)]
        command: Option<String>,
        /// Environment variable for the program, `KEY=VALUE` (repeatable).
        #[arg(long = "env", value_parser = parse_label, requires = "command")]
        env: Vec<(String, String)>,
        /// Tool metadata `TOOL=CLASSIFICATION,RISK[,COST]` (repeatable);
        /// tools not named are `internal`, `medium`, cost 0.
        #[arg(long = "tool", value_parser = parse_label)]
        tools: Vec<(String, String)>,
        /// What it offers.
        #[arg(long, default_value = "")]
        description: String,
        /// Seconds to wait for the upstream (1-600, default 30).
        #[arg(long)]
        timeout_secs: Option<u32>,
        /// Write an allowed call's decision record while the call runs
        /// upstream instead of before (the answer still waits for it; see
        /// docs/mcp.md for what a crash in that window means).
        #[arg(long)]
        record_with_call: bool,
        /// Arguments of `--command`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// List registered servers.
    List,
    /// Show one server.
    Show {
        /// Id or name.
        name: String,
    },
    /// Remove a server; its endpoint answers 404 from then on.
    Remove {
        /// Id or name.
        name: String,
    },
}

fn tool_meta(tool: &str, text: &str) -> anyhow::Result<McpToolMeta> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let (classification, risk, cost) = match parts.as_slice() {
        [c, r] => (*c, *r, 0),
        [c, r, cost] => match cost.parse::<i64>() {
            Ok(n) => (*c, *r, n),
            Err(_) => bail!("--tool {tool}: the cost '{cost}' is not a whole number"),
        },
        _ => bail!("--tool {tool}: expected CLASSIFICATION,RISK[,COST], got '{text}'"),
    };
    Ok(McpToolMeta {
        classification: classification.into(),
        risk: risk.into(),
        cost_estimate: cost,
    })
}

fn transport_text(t: &McpTransport) -> String {
    match t {
        McpTransport::StreamableHttp { url } => url.clone(),
        McpTransport::Stdio { command, args, .. } => {
            let mut s = command.clone();
            for a in args {
                s.push(' ');
                s.push_str(a);
            }
            s
        }
    }
}

impl Tabular for McpServer {
    const HEADERS: &'static [&'static str] = &["NAME", "TRANSPORT", "TOOLS", "TIMEOUT", "UPDATED"];
    const PLURAL: &'static str = "MCP servers";
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            transport_text(&self.transport),
            self.tools.len().to_string(),
            format!("{} s", self.timeout_secs),
            time(&self.updated_at),
        ]
    }
}

impl Detail for McpServer {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let kind = match &self.transport {
            McpTransport::StreamableHttp { .. } => "streamable_http",
            McpTransport::Stdio { .. } => "stdio",
        };
        let tools: Vec<String> = self
            .tools
            .iter()
            .map(|(n, m)| {
                format!(
                    "{n} ({}, {} risk, cost {})",
                    m.classification, m.risk, m.cost_estimate
                )
            })
            .collect();
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("endpoint", format!("/mcp/{}", self.name)),
            ("description", or_dash(&self.description)),
            (
                "transport",
                format!("{kind}: {}", transport_text(&self.transport)),
            ),
            ("tools", or_dash(&tools.join("; "))),
            ("timeout", format!("{} s", self.timeout_secs)),
            (
                "decision record",
                self.decision_record.as_str().replace('_', " "),
            ),
            ("created", time(&self.created_at)),
            ("updated", time(&self.updated_at)),
        ]
    }
}

/// Run an `mcp-servers` subcommand.
pub async fn run(ctx: &Ctx, command: McpServersCommand) -> anyhow::Result<()> {
    match command {
        McpServersCommand::Add {
            name,
            url,
            command,
            env,
            tools,
            description,
            timeout_secs,
            record_with_call,
            args,
        } => {
            let transport = match (url, command) {
                (Some(url), None) => McpTransport::StreamableHttp { url },
                (None, Some(command)) => McpTransport::Stdio {
                    command,
                    args,
                    env: labels_to_map(env)?,
                },
                _ => bail!("give either --url or --command"),
            };
            let mut metas = BTreeMap::new();
            for (tool, text) in tools {
                let meta = tool_meta(&tool, &text)?;
                if metas.insert(tool.clone(), meta).is_some() {
                    bail!("--tool {tool} is given twice");
                }
            }
            let server = ctx
                .client
                .put_mcp_server(&PutMcpServer {
                    name,
                    description,
                    transport,
                    tools: metas,
                    timeout_secs,
                    decision_record: if record_with_call {
                        McpDecisionRecord::WithCall
                    } else {
                        McpDecisionRecord::BeforeCall
                    },
                })
                .await?;
            output::print_record(ctx.output, &server)
        }
        McpServersCommand::List => {
            let servers = ctx.client.list_mcp_servers().await?;
            output::print_outcome(ctx.output, &servers, |s| output::render_list(s))
        }
        McpServersCommand::Show { name } => {
            let server = ctx.client.get_mcp_server(&name).await?;
            output::print_record(ctx.output, &server)
        }
        McpServersCommand::Remove { name } => {
            ctx.client.delete_mcp_server(&name).await?;
            output::print_outcome(ctx.output, &serde_json::json!({"removed": name}), |_| {
                format!("Removed MCP server {name}.")
            })
        }
    }
}
