//! What the operator commands of `praxis` (`audit`, `keys`) share: the practices a command works
//! on and the pool it works through.

use crate::config::Config;
use anyhow::Context;
use kernel::TenantId;

/// The pool and the practices an operator command works on: one practice through the runtime
/// role, or every practice through the owner role (the only role that may list practices).
pub async fn operator_scope(
    config: &Config,
    tenant: Option<TenantId>,
) -> anyhow::Result<(sqlx::PgPool, Vec<TenantId>)> {
    let options = store_postgres::PoolOptions::default();
    match tenant {
        Some(tenant) => {
            let url = config.database.url.as_ref().context("database.url: required secret is missing")?;
            Ok((store_postgres::connect(url.expose_secret(), &options).await?, vec![tenant]))
        }
        None => {
            let url = config
                .database
                .owner_url
                .as_ref()
                .context("database.owner_url: required to work on every practice (or pass --tenant)")?;
            let pool = store_postgres::connect(url.expose_secret(), &options).await?;
            let ids: Vec<uuid::Uuid> =
                sqlx::query_scalar("SELECT id FROM tenants ORDER BY id").fetch_all(&pool).await?;
            Ok((pool, ids.into_iter().map(TenantId::from_uuid).collect()))
        }
    }
}
