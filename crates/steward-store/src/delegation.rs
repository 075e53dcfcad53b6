//! Proven delegation: trusted identity providers, the delegated tokens
//! issued against their tokens, and each tenant's rules. Verifying a
//! person's token is the server's; this file keeps what was proven.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use steward_core::{ChangeContext, Error, validate};
use steward_types::{
    Delegation, DelegationQuery, DelegationSettings, ErrorCode, HumanStatus, Issuer, MatchClaim,
    Page, PutIssuer,
};

use crate::audit::{append, change};
use crate::humans::lock_human;
use crate::rows::{self, Cursor, Param, Select};
use crate::{Store, db_error};

/// Shortest and longest life a tenant may give delegated tokens.
pub const LIFETIME_RANGE: std::ops::RangeInclusive<u32> = 60..=86_400;

/// What a verified token exchange asks the store to record.
#[derive(Debug, Clone)]
pub struct NewDelegation {
    /// Hash of the new `stwd_` secret.
    pub token_hash: String,
    /// The agent that exchanged it.
    pub agent_id: String,
    /// Its key's id and lookup hash: the delegation lives only as long as
    /// the key does.
    pub key_id: String,
    /// The key's lookup hash.
    pub key_hash: String,
    /// The issuer's name in Steward.
    pub issuer: String,
    /// The person's token's `sub`.
    pub subject: String,
    /// The claim that named the person and its value.
    pub match_claim: MatchClaim,
    /// The value of that claim.
    pub claimed: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A delegated token found by its hash.
#[derive(Debug, Clone)]
pub struct FoundDelegation {
    /// Its tenant.
    pub tenant_id: String,
    /// Its record.
    pub delegation: Delegation,
    /// The lookup hash of the agent key it was exchanged with.
    pub key_hash: String,
}

fn delegation(row: &AnyRow) -> Result<Delegation, Error> {
    Ok(Delegation {
        id: rows::get(row, "id")?,
        agent_id: rows::get(row, "agent_id")?,
        human_id: rows::get(row, "human_id")?,
        issuer: rows::get(row, "issuer")?,
        subject: rows::get(row, "subject")?,
        key_id: rows::get(row, "key_id")?,
        created_at: rows::get_time(row, "created_at")?,
        expires_at: rows::get_time(row, "expires_at")?,
        revoked_at: rows::get_opt_time(row, "revoked_at")?,
    })
}

fn issuer(row: &AnyRow) -> Result<Issuer, Error> {
    let claim: String = rows::get(row, "match_claim")?;
    Ok(Issuer {
        name: rows::get(row, "name")?,
        issuer: rows::get(row, "issuer")?,
        audience: rows::get(row, "audience")?,
        jwks: rows::from_json(row, "jwks")?,
        match_claim: match claim.as_str() {
            "sub" => MatchClaim::Sub,
            _ => MatchClaim::Email,
        },
        require_may_act: rows::get::<i64>(row, "require_may_act")? != 0,
        accept_unverified_email: rows::get::<i64>(row, "accept_unverified_email")? != 0,
        updated_at: rows::get_time(row, "updated_at")?,
    })
}

/// Refuse an issuer whose name or fields are malformed (the key set is the
/// server's to check).
pub fn check_issuer(name: &str, req: &PutIssuer) -> Result<(), Error> {
    validate::name("name", name)?;
    for (field, value) in [("issuer", &req.issuer), ("audience", &req.audience)] {
        if value.trim().is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        validate::text(field, value)?;
    }
    Ok(())
}

/// One of the tenant's rows of `table` where `column` is `key`, locked for
/// the rest of the transaction, decoded.
async fn lock_row<T>(
    store: &Store,
    tx: &mut crate::Tx,
    tenant_id: &str,
    table: &str,
    column: &str,
    key: &str,
    decode: fn(&AnyRow) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    sqlx::query(&format!(
        "SELECT * FROM {table} WHERE tenant_id = $1 AND {column} = $2{}",
        store.backend.for_update()
    ))
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .map(|r| decode(&r))
    .transpose()
}

impl crate::credentials::HasId for Delegation {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Store {
    /// Add or replace a trusted identity provider. The caller has checked
    /// that its key set holds usable keys.
    pub async fn put_issuer(
        &self,
        ctx: &ChangeContext,
        name: &str,
        req: &PutIssuer,
    ) -> Result<Issuer, Error> {
        let mut tx = self.begin().await?;
        let out = self.put_issuer_in(&mut tx, ctx, name, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::put_issuer`] inside a caller's transaction.
    pub async fn put_issuer_in(
        &self,
        tx: &mut crate::Tx,
        ctx: &ChangeContext,
        name: &str,
        req: &PutIssuer,
    ) -> Result<Issuer, Error> {
        check_issuer(name, req)?;
        let before = lock_row(
            self,
            tx,
            &ctx.tenant_id,
            "delegation_issuers",
            "name",
            name,
            issuer,
        )
        .await?;
        // One issuer URL names one provider in a tenant: a token's `iss`
        // must lead to exactly one key set.
        let clash: Option<String> = sqlx::query_scalar(
            "SELECT name FROM delegation_issuers WHERE tenant_id = $1 AND issuer = $2 AND name <> $3",
        )
        .bind(&ctx.tenant_id)
        .bind(&req.issuer)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        if let Some(other) = clash {
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                format!("issuer '{}' is already registered as '{other}'", req.issuer),
            ));
        }
        // A `sub` is unique only within its issuer: two issuers matching
        // people by `sub` could name the same external id for two people.
        if req.match_claim == MatchClaim::Sub {
            let other: Option<String> = sqlx::query_scalar(
                "SELECT name FROM delegation_issuers WHERE tenant_id = $1 AND match_claim = 'sub' AND name <> $2",
            )
            .bind(&ctx.tenant_id)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
            if let Some(other) = other {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!(
                        "issuer '{other}' already matches people by sub; only one issuer in a \
                         tenant may (a sub is unique only within its issuer); match this one by email"
                    ),
                ));
            }
        }
        let after = Issuer {
            name: name.to_string(),
            issuer: req.issuer.clone(),
            audience: req.audience.clone(),
            jwks: req.jwks.clone(),
            match_claim: req.match_claim,
            require_may_act: req.require_may_act,
            accept_unverified_email: req.accept_unverified_email,
            updated_at: ctx.now,
        };
        sqlx::query(
            "INSERT INTO delegation_issuers (tenant_id, name, issuer, audience, jwks, match_claim, updated_at, require_may_act, accept_unverified_email) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant_id, name) DO UPDATE SET \
             issuer = excluded.issuer, audience = excluded.audience, jwks = excluded.jwks, \
             match_claim = excluded.match_claim, updated_at = excluded.updated_at, \
             require_may_act = excluded.require_may_act, \
             accept_unverified_email = excluded.accept_unverified_email",
        )
        .bind(&ctx.tenant_id)
        .bind(name)
        .bind(&after.issuer)
        .bind(&after.audience)
        .bind(rows::to_json(&after.jwks))
        .bind(after.match_claim.as_str())
        .bind(rows::ms(ctx.now))
        .bind(i64::from(after.require_may_act))
        .bind(i64::from(after.accept_unverified_email))
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        let event = match &before {
            Some(b) => change(
                "delegation_issuer.put",
                "delegation_issuer",
                name,
                b,
                &after,
            ),
            None => crate::audit::event(
                "delegation_issuer.put",
                "delegation_issuer",
                name,
                None::<&Issuer>,
                Some(&after),
                None,
            ),
        };
        append(tx, ctx, event).await?;
        Ok(after)
    }

    /// The tenant's trusted identity providers, by name.
    pub async fn issuers(&self, tenant_id: &str) -> Result<Vec<Issuer>, Error> {
        let rows =
            sqlx::query("SELECT * FROM delegation_issuers WHERE tenant_id = $1 ORDER BY name")
                .bind(tenant_id)
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
        rows.iter().map(issuer).collect()
    }

    /// The provider whose tokens carry `iss`, if the tenant trusts one.
    pub async fn issuer_for(&self, tenant_id: &str, iss: &str) -> Result<Option<Issuer>, Error> {
        sqlx::query("SELECT * FROM delegation_issuers WHERE tenant_id = $1 AND issuer = $2")
            .bind(tenant_id)
            .bind(iss)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?
            .map(|r| issuer(&r))
            .transpose()
    }

    /// Stop trusting a provider. Delegations already issued against it
    /// keep their (short) lives; revoke them to end them now.
    pub async fn delete_issuer(&self, ctx: &ChangeContext, name: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let before = lock_row(
            self,
            &mut tx,
            &ctx.tenant_id,
            "delegation_issuers",
            "name",
            name,
            issuer,
        )
        .await?
        .ok_or_else(|| Error::not_found("delegation issuer", name))?;
        sqlx::query("DELETE FROM delegation_issuers WHERE tenant_id = $1 AND name = $2")
            .bind(&ctx.tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        append(
            &mut tx,
            ctx,
            crate::audit::event(
                "delegation_issuer.delete",
                "delegation_issuer",
                name,
                Some(&before),
                None::<&Issuer>,
                None,
            ),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    /// The tenant's delegation rules (the defaults until set).
    pub async fn delegation_settings(&self, tenant_id: &str) -> Result<DelegationSettings, Error> {
        if let Some(hit) = self.identities.delegation(tenant_id) {
            return Ok(hit);
        }
        let seen = self.identities.before_read();
        let row = sqlx::query("SELECT * FROM delegation_settings WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?;
        let found = match row {
            Some(row) => settings(&row)?,
            None => DelegationSettings::default(),
        };
        if let Some(seen) = seen {
            self.identities.put_delegation(tenant_id, seen, &found);
        }
        Ok(found)
    }

    /// Change the tenant's delegation rules.
    pub async fn set_delegation_settings(
        &self,
        ctx: &ChangeContext,
        s: &DelegationSettings,
    ) -> Result<DelegationSettings, Error> {
        if !LIFETIME_RANGE.contains(&s.max_lifetime_secs) {
            return Err(Error::invalid(
                "max_lifetime_secs",
                format!(
                    "must be between {} and {} seconds",
                    LIFETIME_RANGE.start(),
                    LIFETIME_RANGE.end()
                ),
            ));
        }
        let mut tx = self.begin().await?;
        let before = lock_row(
            self,
            &mut tx,
            &ctx.tenant_id,
            "delegation_settings",
            "tenant_id",
            &ctx.tenant_id,
            settings,
        )
        .await?
        .unwrap_or_default();
        sqlx::query(
            "INSERT INTO delegation_settings (tenant_id, require_proof, max_lifetime_secs) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET require_proof = excluded.require_proof, \
             max_lifetime_secs = excluded.max_lifetime_secs",
        )
        .bind(&ctx.tenant_id)
        .bind(i64::from(s.require_proof))
        .bind(i64::from(s.max_lifetime_secs))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        append(
            &mut tx,
            ctx,
            change("delegation.settings", "tenant", &ctx.tenant_id, &before, s),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(s.clone())
    }

    /// Record a delegation the server verified. The person is read under
    /// lock and must match the claim and be active, so a deactivation
    /// running now either revokes this delegation or comes first and
    /// refuses it.
    pub async fn issue_delegation(
        &self,
        ctx: &ChangeContext,
        new: NewDelegation,
    ) -> Result<Delegation, Error> {
        let mut tx = self.begin().await?;
        let refused = |why: String| Error::new(ErrorCode::Unauthenticated, why);
        let human = match lock_human(
            &mut tx,
            self.backend.for_update(),
            &ctx.tenant_id,
            &new.claimed,
        )
        .await
        {
            Ok(h) => Some(h),
            Err(e) if e.code == ErrorCode::NotFound => None,
            Err(e) => return Err(e),
        }
        .filter(|h| match new.match_claim {
            MatchClaim::Email => h.email.eq_ignore_ascii_case(&new.claimed),
            MatchClaim::Sub => h.external_id.as_deref() == Some(new.claimed.as_str()),
        })
        .ok_or_else(|| {
            refused(format!(
                "no person in this tenant has {} '{}'",
                match new.match_claim {
                    MatchClaim::Email => "the e-mail",
                    MatchClaim::Sub => "the external id",
                },
                new.claimed
            ))
        })?;
        if human.status != HumanStatus::Active {
            return Err(refused(format!(
                "'{}' is deactivated; no agent may act for them",
                human.email
            )));
        }
        let d = Delegation {
            id: rows::new_id("dlg"),
            agent_id: new.agent_id,
            human_id: human.id,
            issuer: new.issuer,
            subject: new.subject,
            key_id: new.key_id,
            created_at: ctx.now,
            expires_at: new.expires_at,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO delegations (id, tenant_id, token_hash, agent_id, human_id, key_id, key_hash, \
             issuer, subject, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&d.id)
        .bind(&ctx.tenant_id)
        .bind(&new.token_hash)
        .bind(&d.agent_id)
        .bind(&d.human_id)
        .bind(&d.key_id)
        .bind(&new.key_hash)
        .bind(&d.issuer)
        .bind(&d.subject)
        .bind(rows::ms(d.created_at))
        .bind(rows::ms(d.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        append(
            &mut tx,
            ctx,
            crate::audit::event(
                "delegation.issue",
                "delegation",
                &d.id,
                None::<&Delegation>,
                Some(&d),
                None,
            ),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(d)
    }

    /// The delegation a `stwd_` secret's hash names, if any.
    pub async fn find_delegation(
        &self,
        token_hash: &str,
    ) -> Result<Option<FoundDelegation>, Error> {
        let row = sqlx::query("SELECT * FROM delegations WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(FoundDelegation {
                tenant_id: rows::get(&row, "tenant_id")?,
                key_hash: rows::get(&row, "key_hash")?,
                delegation: delegation(&row)?,
            })
        })
        .transpose()
    }

    /// Delegations, oldest first, filtered.
    pub async fn list_delegations(
        &self,
        tenant_id: &str,
        q: DelegationQuery,
        now: DateTime<Utc>,
    ) -> Result<Page<Delegation>, Error> {
        let cursor = Cursor::text(q.cursor, q.limit)?;
        let mut select = Select::tenant_rows("delegations", tenant_id);
        if let Some(key) = &q.agent {
            let agent = self.get_agent(tenant_id, key).await?;
            select = select.and("agent_id = ?", Param::Text(agent.id));
        }
        if let Some(key) = &q.human {
            let human = self.get_human(tenant_id, key).await?;
            select = select.and("human_id = ?", Param::Text(human.id));
        }
        match q.active {
            Some(true) => {
                select = select.and(
                    "revoked_at IS NULL AND expires_at > ?",
                    Param::Int(rows::ms(now)),
                );
            }
            Some(false) => {
                select = select.and(
                    "(revoked_at IS NOT NULL OR expires_at <= ?)",
                    Param::Int(rows::ms(now)),
                );
            }
            None => {}
        }
        select
            .page(&self.read, "id", &cursor, delegation, |d| d.id.clone())
            .await
    }

    /// Revoke a delegation now.
    pub async fn revoke_delegation(
        &self,
        ctx: &ChangeContext,
        id: &str,
    ) -> Result<Delegation, Error> {
        let mut tx = self.begin().await?;
        let before = lock_row(
            self,
            &mut tx,
            &ctx.tenant_id,
            "delegations",
            "id",
            id,
            delegation,
        )
        .await?
        .ok_or_else(|| Error::not_found("delegation", id))?;
        let after =
            crate::credentials::revoke_in(&mut tx, ctx, "delegations", "delegation", before, |d| {
                &mut d.revoked_at
            })
            .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(after)
    }
}

/// End, in the transaction of the change that ends them (a key revoked,
/// an agent decommissioned or expired), the live delegations whose
/// `column` is `value`. The change's own audit record covers them.
pub(crate) async fn end_delegations(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    column: &str,
    value: &str,
) -> Result<u64, Error> {
    Ok(sqlx::query(&format!(
        "UPDATE delegations SET revoked_at = $1 WHERE tenant_id = $2 AND {column} = $3 \
         AND revoked_at IS NULL"
    ))
    .bind(rows::ms(ctx.now))
    .bind(&ctx.tenant_id)
    .bind(value)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?
    .rows_affected())
}

/// Lock, in a deactivation's transaction and before it appends anything,
/// the live delegations acting for `human_id` (delegation rows are locked
/// before the audit head, as a single revocation locks them).
pub(crate) async fn lock_for_human(
    tx: &mut crate::Tx,
    lock: &str,
    ctx: &ChangeContext,
    human_id: &str,
) -> Result<(), Error> {
    sqlx::query(&format!(
        "SELECT id FROM delegations WHERE tenant_id = $1 AND human_id = $2 \
         AND revoked_at IS NULL ORDER BY id{lock}"
    ))
    .bind(&ctx.tenant_id)
    .bind(human_id)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Revoke, in a deactivation's transaction, every live delegation acting
/// for `human_id`; returns their ids.
pub(crate) async fn revoke_for_human(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    human_id: &str,
) -> Result<Vec<String>, Error> {
    let rows = sqlx::query(
        "SELECT * FROM delegations WHERE tenant_id = $1 AND human_id = $2 \
         AND revoked_at IS NULL AND expires_at > $3 ORDER BY id",
    )
    .bind(&ctx.tenant_id)
    .bind(human_id)
    .bind(rows::ms(ctx.now))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let delegations = rows.iter().map(delegation).collect::<Result<Vec<_>, _>>()?;
    let revoked =
        crate::credentials::revoke_all_in(tx, ctx, "delegations", "delegation", delegations, |d| {
            &mut d.revoked_at
        })
        .await?;
    Ok(revoked.into_iter().map(|d| d.id).collect())
}

fn settings(row: &AnyRow) -> Result<DelegationSettings, Error> {
    Ok(DelegationSettings {
        require_proof: rows::get::<i64>(row, "require_proof")? != 0,
        max_lifetime_secs: u32::try_from(rows::get::<i64>(row, "max_lifetime_secs")?)
            .unwrap_or(3600),
    })
}
