//! Upstream MCP servers behind Steward's gateway (`/mcp/{name}`): how to
//! reach them and what Steward knows about their tools.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Resource type of an upstream tool in policies (`Tool::"server/tool"`).
pub const MCP_TOOL_TYPE: &str = "Tool";
/// Action deciding a tool call and whether a tool is listed.
pub const MCP_CALL_TOOL: &str = "call_tool";
/// Resource type of an upstream prompt (`Prompt::"server/prompt"`).
pub const MCP_PROMPT_TYPE: &str = "Prompt";
/// Action deciding a prompt read and whether a prompt is listed.
pub const MCP_GET_PROMPT: &str = "get_prompt";
/// Resource type of an upstream resource (`McpResource::"server/uri"`).
pub const MCP_RESOURCE_TYPE: &str = "McpResource";
/// Action deciding a resource read and whether a resource is listed.
pub const MCP_READ_RESOURCE: &str = "read_resource";
/// Header an agent sends to say which human it acts for (id, e-mail or external id).
pub const ON_BEHALF_OF_HEADER: &str = "x-steward-on-behalf-of";

/// How the gateway reaches an upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpTransport {
    /// Streamable HTTP at a URL (`http://host:port/mcp`).
    StreamableHttp {
        /// The upstream's MCP endpoint.
        url: String,
    },
    /// A child process speaking MCP over standard input and output; one
    /// process per gateway session.
    Stdio {
        /// The program to run.
        command: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Environment variables (of the gateway's own, only `PATH`, `HOME`,
        /// `LANG`, `TMPDIR` and `USER` are passed on).
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
}

/// What Steward knows about one upstream tool; becomes the attributes of
/// `Tool::"server/tool"` in policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpToolMeta {
    /// Data classification it touches (`public`, `internal`, `pii`, ...).
    #[serde(default = "default_classification")]
    pub classification: String,
    /// `low`, `medium` or `high`.
    #[serde(default = "default_risk")]
    pub risk: String,
    /// Estimated cost of one call in millionths of the currency cost quotas
    /// count (USD unless a quota says otherwise): 2500 is 0.0025. Reserved
    /// against cost quotas when the call is allowed.
    #[serde(default)]
    pub cost_estimate: i64,
}

fn default_classification() -> String {
    "internal".into()
}

fn default_risk() -> String {
    "medium".into()
}

impl Default for McpToolMeta {
    fn default() -> Self {
        McpToolMeta {
            classification: default_classification(),
            risk: default_risk(),
            cost_estimate: 0,
        }
    }
}

/// When an allowed tool call's decision record must be durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum McpDecisionRecord {
    /// On disk before the call goes upstream (the default): no tool runs
    /// without its record.
    #[default]
    BeforeCall,
    /// Written while the call runs upstream; the answer still waits for it.
    /// A crash in that window (the time of one commit) can leave a call
    /// without its decision record. Applies only to calls no quota or
    /// approval touches, of tools whose `risk` (as the policies see it:
    /// registered, or from a stored `Tool` entity) is not `high`.
    WithCall,
}

impl McpDecisionRecord {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            McpDecisionRecord::BeforeCall => "before_call",
            McpDecisionRecord::WithCall => "with_call",
        }
    }

    /// Whether this is the default, `before_call`.
    pub fn is_default(&self) -> bool {
        *self == McpDecisionRecord::BeforeCall
    }

    /// Parse the wire name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "before_call" => Some(McpDecisionRecord::BeforeCall),
            "with_call" => Some(McpDecisionRecord::WithCall),
            _ => None,
        }
    }
}

/// A registered upstream MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct McpServer {
    /// Stable id.
    pub id: String,
    /// Unique name in the tenant; the gateway serves it at `/mcp/{name}`.
    pub name: String,
    /// What it offers.
    pub description: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// Tools by name; tools not listed get the defaults (`internal`, `medium`, cost 0).
    pub tools: BTreeMap<String, McpToolMeta>,
    /// Seconds the gateway waits for the upstream before answering an error.
    pub timeout_secs: u32,
    /// When an allowed call's decision record must be durable (absent from
    /// servers before this field: `before_call`).
    #[serde(default)]
    pub decision_record: McpDecisionRecord,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl McpServer {
    /// Whether registering `req` would leave this server as it is.
    pub fn matches(&self, req: &PutMcpServer) -> bool {
        self.name == req.name
            && self.description == req.description
            && self.transport == req.transport
            && self.tools == req.tools
            && self.timeout_secs == req.timeout_secs.unwrap_or(MCP_DEFAULT_TIMEOUT_SECS)
            && self.decision_record == req.decision_record
    }
}

/// Register an upstream MCP server, or replace the one with this name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutMcpServer {
    /// Letters, digits, `-` and `_`, 1 to 64 characters.
    pub name: String,
    /// What it offers.
    #[serde(default)]
    pub description: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// Tools by name.
    #[serde(default)]
    pub tools: BTreeMap<String, McpToolMeta>,
    /// Seconds to wait for the upstream (1 to 600, default 30).
    #[serde(default)]
    pub timeout_secs: Option<u32>,
    /// When an allowed call's decision record must be durable
    /// (`before_call`, the default, or `with_call`). Left out when it is the
    /// default, so servers that predate it take the registration.
    #[serde(default, skip_serializing_if = "McpDecisionRecord::is_default")]
    pub decision_record: McpDecisionRecord,
}

/// Default wait for an upstream.
pub const MCP_DEFAULT_TIMEOUT_SECS: u32 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    /// A server and a client a version apart still understand each other:
    /// the default is left out of a registration, and a server's answer
    /// without the field reads as the default.
    #[test]
    fn decision_record_is_optional_on_the_wire() {
        let put = PutMcpServer {
            name: "x".into(),
            description: String::new(),
            transport: McpTransport::StreamableHttp {
                url: "http://127.0.0.1:1/mcp".into(),
            },
            tools: BTreeMap::new(),
            timeout_secs: None,
            decision_record: McpDecisionRecord::BeforeCall,
        };
        let text = serde_json::to_string(&put).unwrap();
        assert!(!text.contains("decision_record"), "{text}");
        let with_call = PutMcpServer {
            decision_record: McpDecisionRecord::WithCall,
            ..put
        };
        let text = serde_json::to_string(&with_call).unwrap();
        assert!(text.contains(r#""decision_record":"with_call""#), "{text}");
        let old: McpServer = serde_json::from_value(serde_json::json!({
            "id": "mcp_1", "name": "x", "description": "",
            "transport": {"type": "streamable_http", "url": "http://127.0.0.1:1/mcp"},
            "tools": {}, "timeout_secs": 30,
            "created_at": "2026-11-27T00:00:00Z", "updated_at": "2026-11-27T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(old.decision_record, McpDecisionRecord::BeforeCall);
    }
}
