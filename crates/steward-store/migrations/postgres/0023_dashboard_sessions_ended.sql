-- Dashboard sessions signed out before their time ran out: the cookie is
-- sealed, not stored, so a copy of it is refused only because its id is
-- here, which every node reads. A row is kept until the session would have
-- expired anyway, then pruned.
CREATE TABLE dashboard_sessions_ended (
    id TEXT PRIMARY KEY, expires_at BIGINT NOT NULL);
CREATE INDEX dashboard_sessions_ended_expiry ON dashboard_sessions_ended (expires_at);
