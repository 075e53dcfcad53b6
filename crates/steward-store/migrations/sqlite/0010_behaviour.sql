-- Behavioural baselines. The audit log is read in order (behaviour_state's
-- cursor, advanced by one node at a time under a lease) into hourly activity
-- per agent and the actions each agent has used on each resource type; an
-- hour out of character raises an alert, once per agent, signal, subject
-- and hour.
CREATE TABLE agent_activity (
    tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, hour INTEGER NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0, denials INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, records INTEGER NOT NULL DEFAULT 0,
    spawns INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, agent_id, hour));

CREATE TABLE agent_footprint (
    tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, action TEXT NOT NULL,
    resource_type TEXT NOT NULL, uses INTEGER NOT NULL, first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, action, resource_type));

CREATE TABLE behaviour_state (
    id INTEGER PRIMARY KEY, cursor INTEGER NOT NULL, lease_owner TEXT,
    lease_until INTEGER NOT NULL);
INSERT INTO behaviour_state (id, cursor, lease_owner, lease_until) VALUES (1, 0, NULL, 0);

CREATE TABLE behaviour_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id), settings TEXT NOT NULL,
    updated_at INTEGER NOT NULL);

CREATE TABLE behaviour_alerts (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL,
    signal TEXT NOT NULL, subject TEXT NOT NULL, hour INTEGER NOT NULL,
    observed INTEGER NOT NULL, usual INTEGER NOT NULL, threshold INTEGER NOT NULL,
    message TEXT NOT NULL, suspended INTEGER NOT NULL, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, resolved_at INTEGER, resolved_by TEXT,
    resolution TEXT, note TEXT,
    UNIQUE (tenant_id, agent_id, signal, subject, hour));
CREATE INDEX behaviour_alerts_status ON behaviour_alerts (tenant_id, status, id);
CREATE VIEW behaviour_alert_rows AS
    SELECT a.*, g.name AS agent_name FROM behaviour_alerts a
    LEFT JOIN agents g ON g.id = a.agent_id;
