//! Humans and their team memberships. Deactivating a human flags the agents
//! they own as orphaned; reactivating clears the flag.

use steward_core::{ChangeContext, Error, validate};
use steward_types::{
    CreateHuman, ErrorCode, Human, HumanDeactivated, HumanStatus, Page, PageQuery, UpdateHuman,
};

use crate::audit::{append, append_all, change, commit, event};
use crate::rows::{self, Cursor, Param, Select};
use crate::tenants::find_row;
use crate::{Store, Tx, db_error, is_unique_violation};

/// The human whose id, e-mail or external id is `key`, in that order of
/// precedence: the id, the e-mail as written, the external id as written,
/// then the e-mail in any case. So a key that is one person's external id
/// exactly is theirs, even where it is another's e-mail in other case
/// (`Zed@Example.com` and `zed@example.com`). E-mail addresses are stored
/// lower-cased by Rust, which folds all of Unicode (SQLite's `lower()`
/// folds only ASCII), so the key is folded the same way.
async fn find_human_row<'e, E>(
    executor: E,
    tenant_id: &str,
    key: &str,
    lock: &str,
) -> Result<Option<sqlx::any::AnyRow>, Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if key.contains('\0') {
        return Ok(None);
    }
    sqlx::query(&format!(
        "SELECT * FROM humans WHERE tenant_id = $1 AND (id = $2 OR email = $3 OR external_id = $2) \
         ORDER BY CASE WHEN id = $2 THEN 0 WHEN email = $2 THEN 1 WHEN external_id = $2 THEN 2 \
         ELSE 3 END LIMIT 1{lock}"
    ))
    .bind(tenant_id)
    .bind(key)
    .bind(key.trim().to_lowercase())
    .fetch_optional(executor)
    .await
    .map_err(db_error)
}

/// A human is named by id, e-mail (in any case) or external id, so a new
/// human's e-mail may not be another's external id in any case, nor its
/// external id another's id or e-mail: a request naming the one (a
/// decision, an AuthZEN subject, a token's claim) could be decided for the
/// other. (`lower()` folds only ASCII on SQLite; [`find_human_row`] still
/// gives an external id written exactly to its holder.)
async fn refuse_ambiguous_names(
    tx: &mut Tx,
    tenant_id: &str,
    email: &str,
    external_id: Option<&str>,
) -> Result<(), Error> {
    let clash: Option<(String, String)> = sqlx::query_as(
        "SELECT email, CASE WHEN lower(external_id) = $2 THEN 'email' ELSE 'external_id' END \
         FROM humans WHERE tenant_id = $1 AND (lower(external_id) = $2 OR id = $3 OR email = $4) \
         LIMIT 1",
    )
    .bind(tenant_id)
    .bind(email)
    .bind(external_id.unwrap_or(""))
    .bind(external_id.map(|x| x.to_lowercase()).unwrap_or_default())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    match clash {
        None => Ok(()),
        Some((other, field)) => {
            let (what, named) = if field == "email" {
                ("e-mail", email)
            } else {
                ("external_id", external_id.unwrap_or_default())
            };
            Err(Error::new(
                ErrorCode::AlreadyExists,
                format!(
                    "{what} '{named}' already names the human {other} (by id, e-mail or external id): \
                     a request naming it could not tell the two apart"
                ),
            )
            .with_details(serde_json::json!({ "field": field, "human": other })))
        }
    }
}

impl Store {
    /// Create a human.
    pub async fn create_human(
        &self,
        ctx: &ChangeContext,
        req: CreateHuman,
    ) -> Result<Human, Error> {
        let mut tx = self.begin().await?;
        let out = self.create_human_in(&mut tx, ctx, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::create_human`] inside a caller's transaction.
    pub async fn create_human_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        req: CreateHuman,
    ) -> Result<Human, Error> {
        let email = req.email.trim().to_lowercase();
        validate::email("email", &email)?;
        validate::display_name("display_name", &req.display_name)?;
        validate::name_list("roles", &req.roles)?;
        if let Some(x) = req.external_id.as_deref().filter(|x| !x.is_empty()) {
            validate::key("external_id", x)?;
            if x.trim() != x {
                return Err(Error::invalid(
                    "external_id",
                    "must not begin or end with a space",
                ));
            }
        }
        let external_id = req.external_id.filter(|x| !x.is_empty());
        refuse_ambiguous_names(tx, &ctx.tenant_id, &email, external_id.as_deref()).await?;
        let teams = resolve_teams(tx, &ctx.tenant_id, &req.teams).await?;
        check_roles(tx, &ctx.tenant_id, "roles", &req.roles).await?;
        let human = Human {
            id: rows::new_id("hum"),
            email,
            display_name: req.display_name,
            external_id,
            status: HumanStatus::Active,
            teams,
            roles: req.roles,
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        sqlx::query(
            "INSERT INTO humans (id, tenant_id, email, display_name, status, roles, created_at, updated_at, external_id) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $6, $7)",
        )
        .bind(&human.id)
        .bind(&ctx.tenant_id)
        .bind(&human.email)
        .bind(&human.display_name)
        .bind(rows::to_json(&human.roles))
        .bind(rows::ms(ctx.now))
        .bind(&human.external_id)
        .execute(&mut **tx)
        .await
        .map_err(|e| if is_unique_violation(&e) { Error::already_exists("human with that e-mail or external id", &human.email) } else { db_error(e) })?;
        set_memberships(tx, &ctx.tenant_id, &human.id, &human.teams).await?;
        append(
            tx,
            ctx,
            event("human.create", "human", &human.id, None, Some(&human), None),
        )
        .await?;
        Ok(human)
    }

    /// A human by id or e-mail.
    pub async fn get_human(&self, tenant_id: &str, key: &str) -> Result<Human, Error> {
        let mut conn = self.read.acquire().await.map_err(db_error)?;
        let row = find_human_row(&mut *conn, tenant_id, key, "")
            .await?
            .ok_or_else(|| Error::not_found("human", key))?;
        let mut human = rows::human(&row)?;
        human.teams = memberships(&mut conn, &human.id).await?;
        Ok(human)
    }

    /// The tenant's humans, optionally by status or team.
    pub async fn list_humans(
        &self,
        tenant_id: &str,
        page: PageQuery,
    ) -> Result<Page<Human>, Error> {
        let cursor = Cursor::text(page.cursor, page.limit)?;
        let mut q = Select::tenant_rows("humans", tenant_id);
        if let Some(status) = page.status {
            if status != "active" && status != "deactivated" {
                return Err(Error::new(
                    ErrorCode::InvalidQuery,
                    format!("status: '{status}' is not active or deactivated"),
                ));
            }
            q = q.and("status = ?", Param::Text(status));
        }
        if let Some(team) = page.team {
            let team = self.get_team(tenant_id, &team).await.map_err(|_| {
                Error::new(
                    ErrorCode::InvalidQuery,
                    format!("team: no team '{team}' in this tenant"),
                )
            })?;
            q = q.and(
                "id IN (SELECT human_id FROM team_members WHERE team_id = ?)",
                Param::Text(team.id),
            );
        }
        let mut page = q
            .page(&self.read, "id", &cursor, rows::human, |h| h.id.clone())
            .await?;
        let mut conn = self.read.acquire().await.map_err(db_error)?;
        for h in &mut page.items {
            h.teams = memberships(&mut conn, &h.id).await?;
        }
        Ok(page)
    }

    /// Change a human's name, teams or roles.
    pub async fn update_human(
        &self,
        ctx: &ChangeContext,
        key: &str,
        req: UpdateHuman,
    ) -> Result<Human, Error> {
        let mut tx = self.begin().await?;
        let out = self.update_human_in(&mut tx, ctx, key, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::update_human`] inside a caller's transaction.
    pub async fn update_human_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        key: &str,
        req: UpdateHuman,
    ) -> Result<Human, Error> {
        if let Some(n) = &req.display_name {
            validate::display_name("display_name", n)?;
        }
        if let Some(r) = &req.roles {
            validate::name_list("roles", r)?;
        }
        let before = lock_human(tx, self.backend.for_update(), &ctx.tenant_id, key).await?;
        let mut after = before.clone();
        if let Some(teams) = &req.teams {
            after.teams = resolve_teams(tx, &ctx.tenant_id, teams).await?;
            sqlx::query("DELETE FROM team_members WHERE human_id = $1")
                .bind(&after.id)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            set_memberships(tx, &ctx.tenant_id, &after.id, &after.teams).await?;
        }
        if let Some(roles) = req.roles {
            check_roles(tx, &ctx.tenant_id, "roles", &roles).await?;
            after.roles = roles;
        }
        if let Some(n) = req.display_name {
            after.display_name = n;
        }
        after.updated_at = ctx.now;
        sqlx::query(
            "UPDATE humans SET display_name = $1, roles = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(&after.display_name)
        .bind(rows::to_json(&after.roles))
        .bind(rows::ms(ctx.now))
        .bind(&after.id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        append(
            tx,
            ctx,
            change("human.update", "human", &after.id, &before, &after),
        )
        .await?;
        Ok(after)
    }

    /// Deactivate a human (the leaver case): their agents become orphaned.
    pub async fn deactivate_human(
        &self,
        ctx: &ChangeContext,
        key: &str,
        reason: Option<String>,
    ) -> Result<HumanDeactivated, Error> {
        self.set_human_status(ctx, key, HumanStatus::Deactivated, reason)
            .await
    }

    /// Reactivate a human: their agents are no longer orphaned.
    pub async fn reactivate_human(
        &self,
        ctx: &ChangeContext,
        key: &str,
        reason: Option<String>,
    ) -> Result<HumanDeactivated, Error> {
        self.set_human_status(ctx, key, HumanStatus::Active, reason)
            .await
    }

    async fn set_human_status(
        &self,
        ctx: &ChangeContext,
        key: &str,
        status: HumanStatus,
        reason: Option<String>,
    ) -> Result<HumanDeactivated, Error> {
        let (status_str, orphaned, action) = match status {
            HumanStatus::Active => ("active", 0, "human.reactivate"),
            HumanStatus::Deactivated => ("deactivated", 1, "human.deactivate"),
        };
        let mut tx = self.begin().await?;
        let lock = self.backend.for_update();
        if !lock.is_empty() {
            // The person's agents before the person: every change that
            // touches an agent and its owner (a reassignment, an approval
            // applying one) locks the agent first, so locking the person
            // first here could deadlock against it. Above before below, as
            // every lock on several agents (a narrowing locks whole trees).
            let id = lock_human(&mut tx, "", &ctx.tenant_id, key).await?.id;
            sqlx::query(&format!(
                "SELECT id FROM agents WHERE tenant_id = $1 AND owner_id = $2 \
                 AND state NOT IN ('decommissioned', 'rejected', 'expired') ORDER BY depth, id{lock}"
            ))
            .bind(&ctx.tenant_id)
            .bind(&id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let before = lock_human(&mut tx, lock, &ctx.tenant_id, key).await?;
        if status == HumanStatus::Deactivated {
            // What the deactivation revokes, locked before it appends
            // anything: a single revocation locks its row, then the audit
            // head.
            sqlx::query(&format!(
                "SELECT id FROM api_tokens WHERE tenant_id = $1 AND human_id = $2 \
                 AND revoked_at IS NULL ORDER BY id{lock}"
            ))
            .bind(&ctx.tenant_id)
            .bind(&before.id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            crate::delegation::lock_for_human(&mut tx, lock, ctx, &before.id).await?;
        }
        if before.status == status {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!("human '{}' is already {status_str}", before.email),
            ));
        }
        let mut after = before.clone();
        after.status = status;
        after.updated_at = ctx.now;
        sqlx::query("UPDATE humans SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status_str)
            .bind(rows::ms(ctx.now))
            .bind(&after.id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        // Every live agent of this person's whose flag changes, in one
        // statement; an agent reassigned meanwhile (its row locked by that
        // change until it committed) is no longer this person's and is left
        // alone. One record per agent, appended together.
        let mut flagged: Vec<String> = sqlx::query_scalar(
            "UPDATE agents SET orphaned = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND owner_id = $4 \
             AND state NOT IN ('decommissioned', 'rejected', 'expired') AND orphaned <> $1 \
             RETURNING id",
        )
        .bind(orphaned)
        .bind(rows::ms(ctx.now))
        .bind(&ctx.tenant_id)
        .bind(&after.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        flagged.sort();
        let flag = serde_json::json!({ "orphaned": orphaned == 1 });
        let before_flag = serde_json::json!({ "orphaned": orphaned == 0 });
        let flag_action = if orphaned == 1 {
            "agent.orphan"
        } else {
            "agent.unorphan"
        };
        let records = flagged
            .iter()
            .map(|id| {
                event(
                    flag_action,
                    "agent",
                    id,
                    Some(&before_flag),
                    Some(&flag),
                    reason.as_deref(),
                )
            })
            .collect();
        append_all(&mut tx, ctx, records).await?;
        // A leaver's API tokens are revoked with the deactivation, each
        // with its record.
        let mut revoked_tokens = Vec::new();
        if status == HumanStatus::Deactivated {
            let tokens = sqlx::query(
                "SELECT * FROM api_tokens WHERE tenant_id = $1 AND human_id = $2 \
                 AND revoked_at IS NULL ORDER BY id",
            )
            .bind(&ctx.tenant_id)
            .bind(&after.id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            let tokens = tokens
                .iter()
                .map(rows::api_token)
                .collect::<Result<Vec<_>, _>>()?;
            revoked_tokens = crate::credentials::revoke_all_in(
                &mut tx,
                ctx,
                "api_tokens",
                "token",
                tokens,
                |t| &mut t.revoked_at,
            )
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        }
        // So are the delegations that let agents act for them.
        let revoked_delegations = if status == HumanStatus::Deactivated {
            crate::delegation::revoke_for_human(&mut tx, ctx, &after.id).await?
        } else {
            Vec::new()
        };
        commit(
            tx,
            ctx,
            event(
                action,
                "human",
                &after.id,
                Some(&before),
                Some(&after),
                reason.as_deref(),
            ),
        )
        .await?;
        Ok(HumanDeactivated {
            human: after,
            orphaned_agents: flagged,
            revoked_tokens,
            revoked_delegations,
        })
    }
}

/// Lock and read a human inside a write transaction.
pub(crate) async fn lock_human(
    tx: &mut crate::Tx,
    lock: &str,
    tenant_id: &str,
    key: &str,
) -> Result<Human, Error> {
    let row = find_human_row(&mut **tx, tenant_id, key, lock)
        .await?
        .ok_or_else(|| Error::not_found("human", key))?;
    let mut human = rows::human(&row)?;
    human.teams = memberships(tx, &human.id).await?;
    Ok(human)
}

async fn memberships(conn: &mut sqlx::AnyConnection, human_id: &str) -> Result<Vec<String>, Error> {
    sqlx::query_scalar("SELECT team_id FROM team_members WHERE human_id = $1 ORDER BY team_id")
        .bind(human_id)
        .fetch_all(conn)
        .await
        .map_err(db_error)
}

async fn set_memberships(
    tx: &mut crate::Tx,
    tenant_id: &str,
    human_id: &str,
    teams: &[String],
) -> Result<(), Error> {
    for team in teams {
        sqlx::query("INSERT INTO team_members (tenant_id, team_id, human_id) VALUES ($1, $2, $3)")
            .bind(tenant_id)
            .bind(team)
            .bind(human_id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// Team ids for a list of ids or names, each of which must exist.
async fn resolve_teams(
    tx: &mut crate::Tx,
    tenant_id: &str,
    keys: &[String],
) -> Result<Vec<String>, Error> {
    let mut ids = Vec::new();
    for key in keys {
        let row = find_row(&mut **tx, "teams", "name", tenant_id, key, "")
            .await?
            .ok_or_else(|| Error::unknown_reference("teams", "team", key))?;
        let id = rows::team(&row)?.id;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids)
}

/// Check every role name exists in the tenant.
pub(crate) async fn check_roles(
    tx: &mut crate::Tx,
    tenant_id: &str,
    field: &str,
    roles: &[String],
) -> Result<(), Error> {
    for role in roles {
        let found = sqlx::query("SELECT id FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(role)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
        if found.is_none() {
            return Err(Error::unknown_reference(field, "role", role));
        }
    }
    Ok(())
}
