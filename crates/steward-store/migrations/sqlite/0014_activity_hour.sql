-- Hourly activity older than the longest baseline and learning period is
-- deleted by the behavioural pass; this index finds it without a scan.
CREATE INDEX agent_activity_hour ON agent_activity (hour);
