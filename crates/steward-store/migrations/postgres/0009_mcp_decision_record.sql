-- When an allowed MCP tool call's decision record must be durable:
-- 'before_call' (before it goes upstream) or 'with_call' (while it runs).
ALTER TABLE mcp_servers ADD COLUMN decision_record TEXT NOT NULL DEFAULT 'before_call';
