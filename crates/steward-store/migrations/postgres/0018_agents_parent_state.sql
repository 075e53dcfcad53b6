-- Counting a parent's live children (on every spawn under it) reads the
-- index entries of its live children only, not every child it ever had.
CREATE INDEX agents_parent_state ON agents (parent_id, state);
DROP INDEX agents_parent;
