-- Quotas: rules, exact counters, threshold alerts and reservations.
-- A rule's fields are JSON in `body`; scope, subject and metric are columns
-- for lookups. Counters are keyed by window start (Unix ms); the row with
-- window_start = -1 is the lock every reservation takes first (and holds
-- the theoretical arrival time, in microseconds, of a per-second rate).
CREATE TABLE quotas (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    scope TEXT NOT NULL, subject TEXT, metric TEXT NOT NULL, body TEXT NOT NULL,
    updated_at BIGINT NOT NULL, UNIQUE (tenant_id, name));
CREATE INDEX quotas_subject ON quotas (tenant_id, metric, scope, subject);

CREATE TABLE quota_usage (
    tenant_id TEXT NOT NULL, quota_id TEXT NOT NULL, subject TEXT NOT NULL,
    window_start BIGINT NOT NULL, used BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, quota_id, subject, window_start));

CREATE TABLE quota_alerts (
    tenant_id TEXT NOT NULL, quota_id TEXT NOT NULL, subject TEXT NOT NULL,
    window_start BIGINT NOT NULL, threshold BIGINT NOT NULL, created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, quota_id, subject, window_start, threshold));

CREATE TABLE quota_reservations (
    decision_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, principal TEXT, entries TEXT NOT NULL,
    created_at BIGINT NOT NULL, settle_by BIGINT NOT NULL, settled_at BIGINT, outcome TEXT);
CREATE INDEX quota_reservations_open ON quota_reservations (settle_by) WHERE settled_at IS NULL;
