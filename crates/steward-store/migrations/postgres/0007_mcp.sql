-- Upstream MCP servers the gateway serves at /mcp/{name}.
CREATE TABLE mcp_servers (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    description TEXT NOT NULL, transport TEXT NOT NULL, tools TEXT NOT NULL,
    timeout_secs BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name));
