//! Upstream MCP servers behind the gateway.

use steward_types::{McpServer, PutMcpServer};

use crate::{Client, Result};

impl Client {
    /// `GET /v1/mcp-servers`.
    pub async fn list_mcp_servers(&self) -> Result<Vec<McpServer>> {
        self.get(&["v1", "mcp-servers"]).await
    }

    /// `POST /v1/mcp-servers`: register an upstream, or replace the one with this name.
    pub async fn put_mcp_server(&self, request: &PutMcpServer) -> Result<McpServer> {
        self.post(&["v1", "mcp-servers"], request).await
    }

    /// `GET /v1/mcp-servers/{name}`.
    pub async fn get_mcp_server(&self, name: &str) -> Result<McpServer> {
        self.get(&["v1", "mcp-servers", name]).await
    }

    /// `DELETE /v1/mcp-servers/{name}`.
    pub async fn delete_mcp_server(&self, name: &str) -> Result<()> {
        self.delete(&["v1", "mcp-servers", name]).await
    }
}
