-- Proven delegation: identity providers whose tokens prove whom an agent
-- acts for, the delegated tokens issued against them, and each tenant's
-- rules for acting on behalf of a person.
CREATE TABLE delegation_issuers (
    tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    issuer TEXT NOT NULL, audience TEXT NOT NULL, jwks TEXT NOT NULL,
    match_claim TEXT NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name));

CREATE TABLE delegations (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id),
    token_hash TEXT NOT NULL UNIQUE, agent_id TEXT NOT NULL, human_id TEXT NOT NULL,
    key_id TEXT NOT NULL, key_hash TEXT NOT NULL, issuer TEXT NOT NULL, subject TEXT NOT NULL,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, revoked_at INTEGER);
CREATE INDEX delegations_human ON delegations (tenant_id, human_id);
CREATE INDEX delegations_agent ON delegations (tenant_id, agent_id);

CREATE TABLE delegation_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id), require_proof INTEGER NOT NULL,
    max_lifetime_secs INTEGER NOT NULL);
