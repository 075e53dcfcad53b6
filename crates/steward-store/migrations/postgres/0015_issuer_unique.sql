-- One issuer URL names one trusted identity provider in a tenant, so a
-- token's `iss` leads to exactly one key set even under concurrent changes.
CREATE UNIQUE INDEX delegation_issuers_iss ON delegation_issuers (tenant_id, issuer);
