-- Human approvals: runtime actions (bound to a request digest, granted once),
-- registrations and tier-raising changes (chains of approver groups).
CREATE TABLE approvals (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id),
    kind TEXT NOT NULL, status TEXT NOT NULL, risk_tier TEXT NOT NULL, digest TEXT NOT NULL,
    agent_id TEXT REFERENCES agents(id), agent_name TEXT,
    requested_by TEXT NOT NULL, requested_by_human TEXT, excluded TEXT NOT NULL,
    request TEXT NOT NULL, reason TEXT NOT NULL, steps TEXT NOT NULL, current_group TEXT,
    created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, sla_due_at BIGINT NOT NULL,
    decided_at BIGINT, grant_expires_at BIGINT, used_at BIGINT, used_by_decision TEXT);
CREATE INDEX approvals_digest ON approvals (tenant_id, digest, status);
CREATE INDEX approvals_agent ON approvals (agent_id, kind, status);
CREATE INDEX approvals_open ON approvals (status, expires_at);
-- At most one pending runtime request per exact request.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (tenant_id, digest) WHERE status = 'pending';
