-- The expiry sweep looks for live agents past their expiry time. The old
-- index also held every agent that ever expired, so each sweep read them
-- all; this one holds live agents only (the list matches LIVE_STATES).
CREATE INDEX agents_expiry_live ON agents (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('proposed', 'pending_approval', 'active', 'suspended');
DROP INDEX agents_expiry;
