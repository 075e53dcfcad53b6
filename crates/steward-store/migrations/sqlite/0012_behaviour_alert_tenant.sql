-- An alert's agent is looked up within the alert's tenant, as every query is.
DROP VIEW behaviour_alert_rows;
CREATE VIEW behaviour_alert_rows AS
    SELECT a.*, g.name AS agent_name FROM behaviour_alerts a
    LEFT JOIN agents g ON g.id = a.agent_id AND g.tenant_id = a.tenant_id;
