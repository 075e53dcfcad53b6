//! Roles and personas: the catalogue agents are registered from.

use steward_core::{ChangeContext, Error, InventoryRules, validate};
use steward_types::{CreatePersona, CreateRole, ErrorCode, Page, PageQuery, Persona, Role};

use crate::audit::{append, event};
use crate::humans::check_roles;
use crate::rows::{self, Cursor, Select};
use crate::tenants::find_row;
use crate::{Store, Tx, db_error, is_unique_violation};

impl Store {
    /// Create a role.
    pub async fn create_role(&self, ctx: &ChangeContext, req: CreateRole) -> Result<Role, Error> {
        let mut tx = self.begin().await?;
        let out = self.create_role_in(&mut tx, ctx, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::create_role`] inside a caller's transaction.
    pub async fn create_role_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        req: CreateRole,
    ) -> Result<Role, Error> {
        validate::name("name", &req.name)?;
        if req.name.contains(' ') {
            return Err(Error::invalid(
                "name",
                "role names have no spaces (they are used in policies)",
            ));
        }
        validate::text("description", &req.description)?;
        let role = Role {
            id: rows::new_id("role"),
            name: req.name,
            description: req.description,
            writes: req.writes,
            created_at: ctx.now,
        };
        // The policy engine lists roles for its denial hints: every node
        // rebuilds it when the epoch moves. Moved first: the epoch's lock
        // is taken before the audit log's (see `lock_policy_epoch_in`).
        self.move_policy_epoch_in(tx, &ctx.tenant_id).await?;
        sqlx::query("INSERT INTO roles (id, tenant_id, name, description, writes, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&role.id)
            .bind(&ctx.tenant_id)
            .bind(&role.name)
            .bind(&role.description)
            .bind(i64::from(role.writes))
            .bind(rows::ms(ctx.now))
            .execute(&mut **tx)
            .await
            .map_err(|e| if is_unique_violation(&e) { Error::already_exists("role", &role.name) } else { db_error(e) })?;
        append(
            tx,
            ctx,
            event("role.create", "role", &role.id, None, Some(&role), None),
        )
        .await?;
        Ok(role)
    }

    /// A role by id or name.
    pub async fn get_role(&self, tenant_id: &str, key: &str) -> Result<Role, Error> {
        match find_row(&self.read, "roles", "name", tenant_id, key, "").await? {
            Some(row) => rows::role(&row),
            None => Err(Error::not_found("role", key)),
        }
    }

    /// The tenant's roles.
    pub async fn list_roles(&self, tenant_id: &str, page: PageQuery) -> Result<Page<Role>, Error> {
        let cursor = Cursor::text(page.cursor, page.limit)?;
        Select::tenant_rows("roles", tenant_id)
            .page(&self.read, "id", &cursor, rows::role, |r| r.id.clone())
            .await
    }

    /// Create a persona.
    pub async fn create_persona(
        &self,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        req: CreatePersona,
    ) -> Result<Persona, Error> {
        let mut tx = self.begin().await?;
        let out = self.create_persona_in(&mut tx, ctx, rules, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::create_persona`] inside a caller's transaction.
    pub async fn create_persona_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        rules: &InventoryRules,
        req: CreatePersona,
    ) -> Result<Persona, Error> {
        validate::name("name", &req.name)?;
        validate::text("description", &req.description)?;
        validate::name_list("roles", &req.roles)?;
        validate::name_list("classifications", &req.classifications)?;
        rules
            .classifications
            .validate("classifications", &req.classifications)?;
        for (i, q) in req.quotas.iter().enumerate() {
            if q.limit == 0 {
                return Err(Error::invalid("quotas.limit", "must be at least 1"));
            }
            steward_core::quota::template_rule(&req.name, q, ctx.now)
                .map_err(|e| Error::invalid("quotas", e.message))?;
            // One rule per metric and window (its id says both): a second
            // would be dropped where rules are gathered, stricter or not.
            if req.quotas[..i]
                .iter()
                .any(|o| o.metric == q.metric && o.window == q.window)
            {
                return Err(Error::invalid(
                    "quotas",
                    format!(
                        "two default quotas of {} per {}: give one limit per metric and window",
                        q.metric, q.window
                    ),
                ));
            }
        }
        validate::name_list("approval_required_for", &req.approval_required_for)?;
        let max_depth = req.max_depth.unwrap_or(rules.default_limits.max_depth);
        if max_depth > 32 {
            return Err(Error::new(
                ErrorCode::InvalidRequest,
                "max_depth: at most 32",
            ));
        }
        let persona = Persona {
            id: rows::new_id("per"),
            name: req.name,
            description: req.description,
            roles: req.roles,
            classifications: req.classifications,
            quotas: req.quotas,
            max_children: req
                .max_children
                .unwrap_or(rules.default_limits.max_children),
            max_depth,
            approval_tier: req.approval_tier,
            approval_required_for: req.approval_required_for,
            created_at: ctx.now,
        };
        // Personas too are listed in denial hints; the epoch moves first,
        // as for a role.
        self.move_policy_epoch_in(tx, &ctx.tenant_id).await?;
        check_roles(tx, &ctx.tenant_id, "roles", &persona.roles).await?;
        sqlx::query(
            "INSERT INTO personas (id, tenant_id, name, description, roles, classifications, quotas, \
             max_children, max_depth, approval_tier, approval_required_for, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&persona.id)
        .bind(&ctx.tenant_id)
        .bind(&persona.name)
        .bind(&persona.description)
        .bind(rows::to_json(&persona.roles))
        .bind(rows::to_json(&persona.classifications))
        .bind(rows::to_json(&persona.quotas))
        .bind(i64::from(persona.max_children))
        .bind(i64::from(persona.max_depth))
        .bind(persona.approval_tier.map(|t| t.as_str()))
        .bind(rows::to_json(&persona.approval_required_for))
        .bind(rows::ms(ctx.now))
        .execute(&mut **tx)
        .await
        .map_err(|e| if is_unique_violation(&e) { Error::already_exists("persona", &persona.name) } else { db_error(e) })?;
        append(
            tx,
            ctx,
            event(
                "persona.create",
                "persona",
                &persona.id,
                None,
                Some(&persona),
                None,
            ),
        )
        .await?;
        Ok(persona)
    }

    /// A persona by id or name.
    pub async fn get_persona(&self, tenant_id: &str, key: &str) -> Result<Persona, Error> {
        match find_row(&self.read, "personas", "name", tenant_id, key, "").await? {
            Some(row) => rows::persona(&row),
            None => Err(Error::not_found("persona", key)),
        }
    }

    /// The tenant's personas.
    pub async fn list_personas(
        &self,
        tenant_id: &str,
        page: PageQuery,
    ) -> Result<Page<Persona>, Error> {
        let cursor = Cursor::text(page.cursor, page.limit)?;
        Select::tenant_rows("personas", tenant_id)
            .page(&self.read, "id", &cursor, rows::persona, |p| p.id.clone())
            .await
    }
}
