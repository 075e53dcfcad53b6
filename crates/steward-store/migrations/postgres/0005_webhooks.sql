-- Webhook subscriptions and their delivery outbox. A delivery is written in
-- the transaction of the event it reports, so no acknowledged event is lost;
-- any node may deliver it (claimed with a lease), retried with backoff.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    url TEXT NOT NULL, secret TEXT NOT NULL, events TEXT NOT NULL, created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name));

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, webhook_id TEXT NOT NULL REFERENCES webhooks(id),
    event TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL, attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL, last_error TEXT, response_status BIGINT,
    created_at BIGINT NOT NULL, delivered_at BIGINT);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at);
