use crate::StoreError;
use kernel::{Role, TenantId, UserId};
use sqlx::{PgPool, Postgres, Transaction};

/// Who the database work is done for. Becomes `app.tenant_id`, `app.user_id`, `app.role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbContext {
    pub tenant: Option<TenantId>,
    pub user: Option<UserId>,
    pub role: Option<Role>,
}

impl DbContext {
    /// A signed-in user of a practice.
    pub fn user(tenant: TenantId, user: UserId, role: Role) -> Self {
        Self { tenant: Some(tenant), user: Some(user), role: Some(role) }
    }

    /// Work for a practice that no user drives (a verified webhook, a scheduled job).
    pub fn tenant(tenant: TenantId) -> Self {
        Self { tenant: Some(tenant), user: None, role: None }
    }

    /// No identity at all: RLS shows nothing tenant-scoped.
    pub fn anonymous() -> Self {
        Self { tenant: None, user: None, role: None }
    }
}

/// Opens a transaction and sets the RLS context in it before anything else runs.
///
/// The settings are transaction-local (`set_config(name, value, true)`): they vanish at COMMIT
/// or ROLLBACK, so a connection returned to the pool carries no identity. Unset values are set
/// to the empty string, which the policies read as NULL and therefore as "no access".
pub async fn begin(pool: &PgPool, context: &DbContext) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::classify)?;
    sqlx::query(
        "SELECT set_config('app.tenant_id', $1, true), \
                set_config('app.user_id', $2, true), \
                set_config('app.role', $3, true)",
    )
    .bind(context.tenant.map(|t| t.to_string()).unwrap_or_default())
    .bind(context.user.map(|u| u.to_string()).unwrap_or_default())
    .bind(context.role.map(|r| r.as_str()).unwrap_or_default())
    .execute(&mut *tx)
    .await
    .map_err(StoreError::classify)?;
    Ok(tx)
}
