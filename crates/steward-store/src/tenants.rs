//! Tenants and teams.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use steward_core::{ChangeContext, Error, validate};
use steward_types::{CreateTeam, CreateTenant, ErrorCode, Page, PageQuery, Team, Tenant};

use crate::audit::{append, commit, event};
use crate::rows::{self, Cursor, Select};
use crate::{Store, Tx, db_error, is_unique_violation};

/// The tenant every single-organisation install uses.
pub const DEFAULT_TENANT: &str = "default";

/// Fetch the row of `table` in the tenant whose id, or `name_col`, is `key`;
/// a row whose id is `key` wins over one whose name is.
pub(crate) async fn find_row<'e, E>(
    executor: E,
    table: &str,
    name_col: &str,
    tenant_id: &str,
    key: &str,
    lock: &str,
) -> Result<Option<AnyRow>, Error>
where
    E: Executor<'e, Database = Any>,
{
    if key.contains('\0') {
        // No id or name holds one (PostgreSQL could not even compare it).
        return Ok(None);
    }
    let sql = format!(
        "SELECT * FROM {table} WHERE tenant_id = $1 AND (id = $2 OR {name_col} = $2) \
         ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1{lock}"
    );
    sqlx::query(&sql)
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(executor)
        .await
        .map_err(db_error)
}

impl Store {
    /// Begin a write transaction.
    ///
    /// On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`). A
    /// transaction that has read and then writes cannot wait for a lock
    /// held elsewhere (SQLite refuses it at once, "database is locked",
    /// whatever the busy timeout), and the log's checkpointer holds that
    /// lock while it restarts the log; taken first, the lock is waited for.
    pub async fn begin(&self) -> Result<crate::Tx, Error> {
        let inner = match self.backend {
            crate::Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            crate::Backend::Postgres => self.write.begin().await,
        };
        Ok(crate::Tx {
            inner: inner.map_err(db_error)?,
            changes: self.identities.changes().clone(),
        })
    }

    /// Begin a transaction on the read pool (a consistent snapshot for
    /// reads; dropping it ends it).
    pub(crate) async fn begin_read(&self) -> Result<crate::Tx, Error> {
        Ok(crate::Tx {
            inner: self.read.begin().await.map_err(db_error)?,
            changes: self.identities.changes().clone(),
        })
    }

    /// Create the tenant if it does not exist; true when it was created.
    pub async fn ensure_tenant(
        &self,
        ctx: &ChangeContext,
        id: &str,
        name: &str,
    ) -> Result<bool, Error> {
        let exists = sqlx::query("SELECT id FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.write)
            .await
            .map_err(db_error)?;
        if exists.is_some() {
            return Ok(false);
        }
        match self
            .create_tenant(
                ctx,
                CreateTenant {
                    id: id.into(),
                    name: name.into(),
                },
            )
            .await
        {
            Ok(_) => Ok(true),
            // Another node created it first.
            Err(e) if e.code == ErrorCode::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Create a tenant.
    pub async fn create_tenant(
        &self,
        ctx: &ChangeContext,
        req: CreateTenant,
    ) -> Result<Tenant, Error> {
        let ok = !req.id.is_empty()
            && req.id.len() <= 64
            && req
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !req.id.starts_with('-');
        if !ok {
            return Err(Error::invalid(
                "id",
                format!(
                    "'{}' is not a tenant id (lower-case letters, digits, '-')",
                    req.id
                ),
            ));
        }
        validate::name("name", &req.name)?;
        let tenant = Tenant {
            id: req.id,
            name: req.name,
            created_at: ctx.now,
        };
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .bind(rows::ms(tenant.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::already_exists("tenant", &tenant.id)
                } else {
                    db_error(e)
                }
            })?;
        let mut audit_ctx = ctx.clone();
        audit_ctx.tenant_id = tenant.id.clone();
        commit(
            tx,
            &audit_ctx,
            event(
                "tenant.create",
                "tenant",
                &tenant.id,
                None,
                Some(&tenant),
                None,
            ),
        )
        .await?;
        Ok(tenant)
    }

    /// Whether a tenant exists.
    pub async fn tenant_exists(&self, id: &str) -> Result<bool, Error> {
        Ok(sqlx::query("SELECT id FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?
            .is_some())
    }

    /// Every tenant.
    pub async fn list_tenants(&self, page: PageQuery) -> Result<Page<Tenant>, Error> {
        let cursor = Cursor::text(page.cursor, page.limit)?;
        Select::all("tenants")
            .page(&self.read, "id", &cursor, rows::tenant, |t| t.id.clone())
            .await
    }

    /// Create a team.
    pub async fn create_team(&self, ctx: &ChangeContext, req: CreateTeam) -> Result<Team, Error> {
        let mut tx = self.begin().await?;
        let out = self.create_team_in(&mut tx, ctx, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::create_team`] inside a caller's transaction.
    pub async fn create_team_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        req: CreateTeam,
    ) -> Result<Team, Error> {
        validate::name("name", &req.name)?;
        validate::text("description", &req.description)?;
        let team = Team {
            id: rows::new_id("team"),
            name: req.name,
            description: req.description,
            created_at: ctx.now,
        };
        sqlx::query("INSERT INTO teams (id, tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&team.id)
            .bind(&ctx.tenant_id)
            .bind(&team.name)
            .bind(&team.description)
            .bind(rows::ms(team.created_at))
            .execute(&mut **tx)
            .await
            .map_err(|e| if is_unique_violation(&e) { Error::already_exists("team", &team.name) } else { db_error(e) })?;
        append(
            tx,
            ctx,
            event("team.create", "team", &team.id, None, Some(&team), None),
        )
        .await?;
        Ok(team)
    }

    /// A team by id or name.
    pub async fn get_team(&self, tenant_id: &str, key: &str) -> Result<Team, Error> {
        match find_row(&self.read, "teams", "name", tenant_id, key, "").await? {
            Some(row) => rows::team(&row),
            None => Err(Error::not_found("team", key)),
        }
    }

    /// The tenant's teams.
    pub async fn list_teams(&self, tenant_id: &str, page: PageQuery) -> Result<Page<Team>, Error> {
        let cursor = Cursor::text(page.cursor, page.limit)?;
        Select::tenant_rows("teams", tenant_id)
            .page(&self.read, "id", &cursor, rows::team, |t| t.id.clone())
            .await
    }
}
