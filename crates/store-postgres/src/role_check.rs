use crate::StoreError;
use sqlx::PgPool;

/// Why the server's database role is unsafe to run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleProblem {
    #[error("database role {0:?} is a superuser; superusers bypass row-level security")]
    Superuser(String),
    #[error("database role {0:?} has BYPASSRLS; row-level security would not apply to it")]
    BypassRls(String),
    #[error("database role {0:?} owns {1} table(s) in schema public; owners can disable row-level security")]
    OwnsTables(String, i64),
}

/// Checks that the role this pool connects as cannot step around row-level security.
/// Returns every problem found (empty when safe).
pub async fn verify_runtime_role(pool: &PgPool) -> Result<Vec<RoleProblem>, StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::classify)?;
    let (name, superuser, bypass_rls, owned): (String, bool, bool, i64) = crate::sql::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, \
                (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') \
                    AND pg_has_role(current_user, c.relowner, 'USAGE')) \
           FROM pg_roles r WHERE r.rolname = current_user",
    )
    // In a transaction, like every query of this crate (see `sql`).
    .fetch_one(&mut *tx)
    .await
    .map_err(StoreError::classify)?;
    tx.rollback().await.map_err(StoreError::classify)?;
    let mut problems = Vec::new();
    if superuser {
        problems.push(RoleProblem::Superuser(name.clone()));
    }
    if bypass_rls {
        problems.push(RoleProblem::BypassRls(name.clone()));
    }
    if owned > 0 {
        problems.push(RoleProblem::OwnsTables(name, owned));
    }
    Ok(problems)
}
