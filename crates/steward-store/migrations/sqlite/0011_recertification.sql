-- Recertification campaigns: each agent in scope becomes an item its owner
-- attests (keep, suspend, decommission) before the due date; items left
-- pending are overdue when the campaign closes.
CREATE TABLE recert_campaigns (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    status TEXT NOT NULL, min_risk_tier TEXT, team_id TEXT, on_overdue TEXT NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL, due_at INTEGER NOT NULL,
    closed_at INTEGER,
    UNIQUE (tenant_id, name));
CREATE INDEX recert_campaigns_due ON recert_campaigns (status, due_at);

CREATE TABLE recert_items (
    campaign_id TEXT NOT NULL REFERENCES recert_campaigns(id), tenant_id TEXT NOT NULL,
    agent_id TEXT NOT NULL, agent_name TEXT NOT NULL, risk_tier TEXT NOT NULL,
    owner_id TEXT NOT NULL, status TEXT NOT NULL, decided_by TEXT, decided_at INTEGER,
    note TEXT,
    PRIMARY KEY (campaign_id, agent_id));
