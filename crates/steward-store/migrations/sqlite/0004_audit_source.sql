-- The address each audited request came from.
ALTER TABLE audit_log ADD COLUMN source TEXT;
