-- The agents, humans and teams each audit entry is about (its actor, the
-- human behind the actor, its resource and, for decisions and key events,
-- every identity its record names: principal, chain, the person acted
-- for), so that "what did this agent do" reads an index instead of the
-- whole log. Written with the entry; emptied with its payload by a
-- retention pruning. Ids are unique across tenants, so the tenant is not
-- repeated here: the entry's row says it.
CREATE TABLE audit_subjects (
    entry INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    PRIMARY KEY (entry, subject_id)
) WITHOUT ROWID;
CREATE INDEX audit_subjects_subject ON audit_subjects (subject_id, entry);
-- Entries written before this migration are indexed at the next open
-- (`Store::index_old_audit_entries`), a stretch at a time; this row says
-- how far that has gone and is deleted when it is done.
CREATE TABLE audit_subjects_backfill (id INTEGER PRIMARY KEY, next INTEGER NOT NULL, up_to INTEGER NOT NULL);
INSERT INTO audit_subjects_backfill (id, next, up_to) SELECT 1, 1, size FROM audit_head WHERE id = 1 AND size > 0;
