-- Time-to-approval statistics read the latest approved requests of a tier,
-- newest first, without reading the tenant's whole approval history.
CREATE INDEX approvals_decided ON approvals (tenant_id, risk_tier, decided_at);
