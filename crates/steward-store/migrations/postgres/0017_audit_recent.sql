-- The newest entries of a tenant, and of one action (the dashboard's recent
-- denials, `--last N`), read from the end of an index instead of sorting
-- the tenant's whole log.
CREATE INDEX audit_log_seq ON audit_log (tenant_id, seq);
CREATE INDEX audit_log_action ON audit_log (tenant_id, action, seq);
