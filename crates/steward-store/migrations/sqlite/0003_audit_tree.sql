-- The tamper-evident log: each entry keeps the leaf hash of its canonical
-- encoding; sequence numbers are assigned under the head row's lock so they
-- have no gaps; signed checkpoints; legal holds that stop pruning.
ALTER TABLE audit_log ADD COLUMN leaf_hash TEXT;
ALTER TABLE audit_log ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
CREATE TABLE audit_head (id INTEGER PRIMARY KEY, size INTEGER NOT NULL);
INSERT INTO audit_head (id, size) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_log;
CREATE TABLE audit_checkpoints (
    size INTEGER PRIMARY KEY, origin TEXT NOT NULL, root TEXT NOT NULL, time_ms INTEGER NOT NULL,
    signature TEXT NOT NULL, key_id TEXT NOT NULL);
CREATE TABLE legal_holds (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, reason TEXT NOT NULL, created_at INTEGER NOT NULL,
    released_at INTEGER);
CREATE INDEX audit_log_time ON audit_log (tenant_id, time);
