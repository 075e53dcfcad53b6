-- Inventory, credentials and the audit log (SQLite). Times are Unix milliseconds,
-- lists and maps are JSON text, booleans are 0/1.
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL);

CREATE TABLE teams (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    description TEXT NOT NULL, created_at INTEGER NOT NULL, UNIQUE (tenant_id, name));

CREATE TABLE humans (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), email TEXT NOT NULL,
    display_name TEXT NOT NULL, status TEXT NOT NULL, roles TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, UNIQUE (tenant_id, email));

CREATE TABLE team_members (
    tenant_id TEXT NOT NULL, team_id TEXT NOT NULL REFERENCES teams(id),
    human_id TEXT NOT NULL REFERENCES humans(id), PRIMARY KEY (team_id, human_id));
CREATE INDEX team_members_human ON team_members (human_id);

CREATE TABLE roles (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    description TEXT NOT NULL, writes INTEGER NOT NULL, created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name));

CREATE TABLE personas (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    description TEXT NOT NULL, roles TEXT NOT NULL, classifications TEXT NOT NULL,
    quotas TEXT NOT NULL, max_children INTEGER NOT NULL, max_depth INTEGER NOT NULL,
    approval_tier TEXT, approval_required_for TEXT NOT NULL, created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name));

CREATE TABLE agents (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES humans(id), team_id TEXT REFERENCES teams(id),
    purpose TEXT NOT NULL, platform TEXT NOT NULL, model TEXT NOT NULL,
    persona_id TEXT REFERENCES personas(id), roles TEXT NOT NULL, classifications TEXT NOT NULL,
    labels TEXT NOT NULL, parent_id TEXT REFERENCES agents(id), depth INTEGER NOT NULL,
    expires_at INTEGER, state TEXT NOT NULL, state_reason TEXT, risk_tier TEXT NOT NULL,
    orphaned INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    last_seen_at INTEGER, UNIQUE (tenant_id, name));
CREATE INDEX agents_owner ON agents (tenant_id, owner_id);
CREATE INDEX agents_parent ON agents (parent_id);
CREATE INDEX agents_expiry ON agents (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE agent_keys (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL REFERENCES agents(id),
    name TEXT NOT NULL, prefix TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL, expires_at INTEGER, last_used_at INTEGER, revoked_at INTEGER);
CREATE INDEX agent_keys_agent ON agent_keys (agent_id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    role TEXT NOT NULL, human_id TEXT REFERENCES humans(id), prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE, platform_admin INTEGER NOT NULL, created_at INTEGER NOT NULL,
    expires_at INTEGER, last_used_at INTEGER, revoked_at INTEGER);

CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, time INTEGER NOT NULL,
    actor_kind TEXT NOT NULL, actor_id TEXT NOT NULL, actor_human_id TEXT,
    action TEXT NOT NULL, resource_type TEXT NOT NULL, resource_id TEXT NOT NULL,
    before TEXT, after TEXT, reason TEXT, request_id TEXT);
CREATE INDEX audit_log_resource ON audit_log (tenant_id, resource_id);
