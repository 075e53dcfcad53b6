-- An issuer matching people by e-mail names someone only with an address
-- its tokens say is verified (email_verified true), unless it is marked to
-- accept unverified ones. Issuers trusted before this change keep the
-- behaviour they had (they accepted a token without the claim); new ones
-- require it unless told otherwise.
ALTER TABLE delegation_issuers ADD COLUMN accept_unverified_email BIGINT NOT NULL DEFAULT 0;
UPDATE delegation_issuers SET accept_unverified_email = 1;
