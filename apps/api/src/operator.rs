//! What the operator commands of `praxis` share: the practices a command works on, the pool it
//! works through, the use cases on that pool, and how a use case's refusal reads to the operator.

use crate::config::Config;
use anyhow::Context;
use kernel::{SystemClock, TenantId};
use std::sync::Arc;

/// The pool and the practices an operator command works on: one practice through the runtime
/// role, or every practice through the owner role (the only role that may list practices).
pub async fn operator_scope(
    config: &Config,
    tenant: Option<TenantId>,
) -> anyhow::Result<(sqlx::PgPool, Vec<TenantId>)> {
    // The configured statement form: behind a pooler the command needs it as the server does.
    let options = config.database.pool_options();
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

/// The use cases on `pool`, with the configured password hashing cost, `keyring` and, when
/// given, the audit trail's checkpoint signer.
pub fn services_on(
    config: &Config,
    pool: sqlx::PgPool,
    keyring: Arc<crypto::Keyring>,
    signer: Option<Arc<app::checkpoint_signer::KmsCheckpointSigner>>,
) -> anyhow::Result<app::Services> {
    let hasher = identity::PasswordHasher::new(config.auth.argon2())
        .map_err(|e| anyhow::anyhow!("auth.argon2_memory_kib: {e}"))?;
    let audit_log = match signer {
        Some(signer) => store_postgres::PgAuditLog::new(pool.clone()).with_signer(signer),
        None => store_postgres::PgAuditLog::new(pool.clone()),
    };
    let clock: Arc<dyn kernel::Clock> = Arc::new(SystemClock);
    Ok(app::Services::new(app::Dependencies {
        db: pool,
        clock: clock.clone(),
        hasher: Arc::new(hasher),
        audit_log,
        // Operator commands log nobody in: they need no Redis.
        login_failures: None,
        login_limit: config.rate_limits.login_limit(),
        session_policy: config.auth.session_policy(),
        keyring,
        dek_cache: Arc::new(crypto::DekCache::new(kernel::SharedClock(clock), crypto::DekCacheConfig::default())),
        practice_keys: Arc::default(),
        booking_policy: config.appointments.booking_policy().map_err(|e| anyhow::anyhow!("appointments: {e}"))?,
        reminder_policy: config.reminders.policy().map_err(|e| anyhow::anyhow!("reminders: {e}"))?,
        // Operator commands receive no webhooks.
        webhook_ingest: None,
    }))
}

/// A use case's refusal as the operator reads it: the flag the input came from, and what is
/// wrong. `flags` names each use-case field's command-line flag.
pub fn operator_error(error: app::Error, flags: &[(&str, &str)]) -> anyhow::Error {
    match error {
        app::Error::Invalid(problems) => {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| {
                    let flag = flags.iter().find(|(field, _)| *field == p.field).map_or(p.field.as_str(), |(_, f)| f);
                    format!("{flag}: {}", p.message)
                })
                .collect();
            anyhow::anyhow!("{}", lines.join("\n"))
        }
        other => anyhow::Error::new(other),
    }
}
