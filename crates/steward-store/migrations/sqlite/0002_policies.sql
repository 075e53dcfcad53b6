-- Policies, the declarations they are validated against, known resources,
-- and a per-tenant epoch that tells every node to reload its engine.
ALTER TABLE humans ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX humans_external_id ON humans (tenant_id, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE resource_types (
    tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL, description TEXT NOT NULL,
    attributes TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (tenant_id, name));

CREATE TABLE actions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL, description TEXT NOT NULL,
    resource_types TEXT NOT NULL, context TEXT NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name));

CREATE TABLE policies (
    tenant_id TEXT NOT NULL REFERENCES tenants(id), id TEXT NOT NULL, description TEXT NOT NULL,
    owner TEXT NOT NULL, text TEXT NOT NULL, effect TEXT NOT NULL, version INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, PRIMARY KEY (tenant_id, id));

CREATE TABLE policy_versions (
    tenant_id TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, description TEXT NOT NULL,
    owner TEXT NOT NULL, text TEXT, effect TEXT NOT NULL, changed_at INTEGER NOT NULL,
    changed_by TEXT NOT NULL, PRIMARY KEY (tenant_id, id, version));

CREATE TABLE resource_entities (
    tenant_id TEXT NOT NULL REFERENCES tenants(id), type TEXT NOT NULL, id TEXT NOT NULL,
    attributes TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (tenant_id, type, id));

CREATE TABLE policy_epochs (tenant_id TEXT PRIMARY KEY REFERENCES tenants(id), epoch INTEGER NOT NULL);
