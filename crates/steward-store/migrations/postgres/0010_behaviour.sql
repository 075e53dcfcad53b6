-- Behavioural baselines. The audit log is read in order (behaviour_state's
-- cursor, advanced by one node at a time under a lease) into hourly activity
-- per agent and the actions each agent has used on each resource type; an
-- hour out of character raises an alert, once per agent, signal, subject
-- and hour.
CREATE TABLE agent_activity (
    tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, hour BIGINT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0, denials BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0, records BIGINT NOT NULL DEFAULT 0,
    spawns BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, agent_id, hour));

CREATE TABLE agent_footprint (
    tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, action TEXT NOT NULL,
    resource_type TEXT NOT NULL, uses BIGINT NOT NULL, first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, action, resource_type));

CREATE TABLE behaviour_state (
    id BIGINT PRIMARY KEY, cursor BIGINT NOT NULL, lease_owner TEXT,
    lease_until BIGINT NOT NULL);
INSERT INTO behaviour_state (id, cursor, lease_owner, lease_until) VALUES (1, 0, NULL, 0);

CREATE TABLE behaviour_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id), settings TEXT NOT NULL,
    updated_at BIGINT NOT NULL);

CREATE TABLE behaviour_alerts (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL,
    signal TEXT NOT NULL, subject TEXT NOT NULL, hour BIGINT NOT NULL,
    observed BIGINT NOT NULL, usual BIGINT NOT NULL, threshold BIGINT NOT NULL,
    message TEXT NOT NULL, suspended BIGINT NOT NULL, status TEXT NOT NULL,
    created_at BIGINT NOT NULL, resolved_at BIGINT, resolved_by TEXT,
    resolution TEXT, note TEXT,
    UNIQUE (tenant_id, agent_id, signal, subject, hour));
CREATE INDEX behaviour_alerts_status ON behaviour_alerts (tenant_id, status, id);
CREATE VIEW behaviour_alert_rows AS
    SELECT a.*, g.name AS agent_name FROM behaviour_alerts a
    LEFT JOIN agents g ON g.id = a.agent_id;
