-- An issuer may require its tokens to name, in RFC 8693's may_act claim,
-- the agent allowed to act for the person.
ALTER TABLE delegation_issuers ADD COLUMN require_may_act BIGINT NOT NULL DEFAULT 0;
