use crate::StoreError;
use kernel::{Role, TenantId, UserId};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// Who the database work is done for. Becomes the transaction-local settings `app.tenant_id`,
/// `app.user_id`, `app.role`, and, during authentication only, `app.token_hash` or
/// `app.login_email`, which let a lookup see exactly the one row it names and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbContext {
    pub tenant: Option<TenantId>,
    pub user: Option<UserId>,
    pub role: Option<Role>,
    /// SHA-256 of a presented session token or API key.
    pub token_hash: Option<[u8; 32]>,
    /// Lower-cased email of an account being logged in.
    pub login_email: Option<String>,
    /// A service acting for the practice (an API key, a verified webhook): `app.role` becomes
    /// `service`, which the patient-data policies admit practice-wide (the API checks the key's
    /// scopes first). Ignored when `role` is set.
    pub service: bool,
    /// The background workers' scan for practices with due work (see [`DbContext::practice_scan`]).
    /// Ignored when `role` or `service` is set.
    pub practice_scan: bool,
}

impl DbContext {
    /// A signed-in user of a practice.
    pub fn user(tenant: TenantId, user: UserId, role: Role) -> Self {
        Self { tenant: Some(tenant), user: Some(user), role: Some(role), ..Self::default() }
    }

    /// Work for a practice that no user drives (a verified webhook, a scheduled job). Sees only
    /// rows whose policies admit a tenant-only context.
    pub fn tenant(tenant: TenantId) -> Self {
        Self { tenant: Some(tenant), ..Self::default() }
    }

    /// An API key or verified webhook working for a practice (see [`DbContext::service`]).
    pub fn service(tenant: TenantId) -> Self {
        Self { tenant: Some(tenant), service: true, ..Self::default() }
    }

    /// An operator command acting with admin rights inside one practice (`praxis users ...`).
    pub fn operator(tenant: TenantId) -> Self {
        Self { tenant: Some(tenant), role: Some(Role::Admin), ..Self::default() }
    }

    /// Authentication by token: sees only the session or API key whose hash this is.
    pub fn token_lookup(tenant: TenantId, token_hash: [u8; 32]) -> Self {
        Self { tenant: Some(tenant), token_hash: Some(token_hash), ..Self::default() }
    }

    /// Login: sees only the account with this email.
    pub fn login_lookup(tenant: TenantId, email: &str) -> Self {
        Self { tenant: Some(tenant), login_email: Some(email.to_owned()), ..Self::default() }
    }

    /// No identity at all: RLS shows nothing tenant-scoped.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// The background workers asking which practices have due work (`reminders_due_practices()`,
    /// `audit_practices_to_seal()`): no practice, and `app.role` = `practice_scan`, which no row
    /// policy admits. Those two functions refuse every other context, so no request (always in
    /// the context of one practice) can learn other practices' ids through them.
    pub fn practice_scan() -> Self {
        Self { practice_scan: true, ..Self::default() }
    }
}

/// Opens a transaction and sets the RLS context in it before anything else runs.
///
/// The settings are transaction-local (`set_config(name, value, true)`): they vanish at COMMIT
/// or ROLLBACK, so a connection returned to the pool carries no identity. Unset values are set
/// to the empty string, which the policies read as NULL and therefore as "no access".
///
/// One round trip when every value is an id, a role or a digest (every context but a login):
/// `BEGIN` and the settings go as one simple query, the values written as literals, which
/// [`plain_literal`] admits only when they consist of ASCII letters, digits, `-` and `_` (no
/// quote, no backslash: nothing in them can end the literal). A login's email is user input and
/// is always sent as a bound parameter, in a second round trip.
pub async fn begin(pool: &PgPool, context: &DbContext) -> Result<Transaction<'static, Postgres>, StoreError> {
    let started = std::time::Instant::now();
    let opened = begin_with_context(pool, context, "BEGIN").await;
    telemetry::metrics::record_db_begin(if opened.is_ok() { "ok" } else { "error" }, started.elapsed());
    opened
}

/// A transaction that Postgres itself keeps from writing (`BEGIN READ ONLY`: any INSERT, UPDATE,
/// DELETE or row lock in it fails with SQLSTATE 25006), opened by [`begin_read_only`], for a use
/// case that only reads.
///
/// Because it cannot have written anything, it has nothing to commit: [`ReadOnlyTransaction::finish`]
/// ends it without waiting for the server. sqlx queues the transaction's `ROLLBACK` and sends it
/// with the handshake it makes anyway when the connection returns to the pool (sqlx 0.9 checks
/// every returned connection with a `Sync`; the connection is handed out again only after the
/// server answered both), so the caller does not wait for the round trip a `COMMIT` costs and
/// the server wakes once instead of twice (docs/architecture.md, "Where a read's time goes"). The RLS context is set exactly as [`begin`] sets it and ends with
/// the transaction.
#[derive(Debug)]
pub struct ReadOnlyTransaction(Transaction<'static, Postgres>);

impl ReadOnlyTransaction {
    /// The transaction's connection, for the queries of the read.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.0
    }

    /// Ends the transaction without a round trip (see the type's docs). What was read stays
    /// valid: it was read under the transaction's snapshot and RLS context.
    pub fn finish(self) {
        // Dropping an open sqlx transaction queues its ROLLBACK on the connection, sent before
        // the connection serves anything else.
        drop(self.0);
    }
}

/// Opens a [`ReadOnlyTransaction`] with the RLS context of `context`, in one round trip as
/// [`begin`] does.
pub async fn begin_read_only(pool: &PgPool, context: &DbContext) -> Result<ReadOnlyTransaction, StoreError> {
    let started = std::time::Instant::now();
    let opened = begin_with_context(pool, context, "BEGIN READ ONLY").await;
    telemetry::metrics::record_db_begin(if opened.is_ok() { "ok" } else { "error" }, started.elapsed());
    opened.map(ReadOnlyTransaction)
}

/// `begin_statement` is `BEGIN` or `BEGIN READ ONLY`: a constant, never built from input.
async fn begin_with_context(
    pool: &PgPool,
    context: &DbContext,
    begin_statement: &'static str,
) -> Result<Transaction<'static, Postgres>, StoreError> {
    let values = context_values(context);
    if let [Some(tenant), Some(user), Some(role), Some(token_hash), Some(login_email)] =
        values.each_ref().map(|v| plain_literal(v))
    {
        let statement = format!(
            "{begin_statement}; SELECT set_config('statement_timeout', '{timeout}', true), \
             set_config('app.tenant_id', {tenant}, true), set_config('app.user_id', {user}, true), \
             set_config('app.role', {role}, true), set_config('app.token_hash', {token_hash}, true), \
             set_config('app.login_email', {login_email}, true)",
            timeout = crate::pool::statement_timeout_ms(),
        );
        return pool.begin_with(sqlx::AssertSqlSafe(statement)).await.map_err(StoreError::classify);
    }
    let mut tx = pool.begin_with(begin_statement).await.map_err(StoreError::classify)?;
    set_context(&mut tx, values).await?;
    Ok(tx)
}

/// The settings as bound parameters (never literals): one statement.
async fn set_context(conn: &mut PgConnection, values: [String; 5]) -> Result<(), StoreError> {
    let [tenant, user, role, token_hash, login_email] = values;
    crate::sql::query(
        "SELECT set_config('statement_timeout', $6, true), \
                set_config('app.tenant_id', $1, true), \
                set_config('app.user_id', $2, true), \
                set_config('app.role', $3, true), \
                set_config('app.token_hash', $4, true), \
                set_config('app.login_email', $5, true)",
    )
    .bind(tenant)
    .bind(user)
    .bind(role)
    .bind(token_hash)
    .bind(login_email)
    .bind(crate::pool::statement_timeout_ms().to_string())
    .execute(&mut *conn)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}

/// The values of `app.tenant_id`, `app.user_id`, `app.role`, `app.token_hash` and
/// `app.login_email`, in that order (also what `patient_read()` sets, `patients::get_in_one_statement`).
pub(crate) fn context_values(context: &DbContext) -> [String; 5] {
    [
        context.tenant.map(|t| t.to_string()).unwrap_or_default(),
        context.user.map(|u| u.to_string()).unwrap_or_default(),
        match (context.role, context.service, context.practice_scan) {
            (Some(role), _, _) => role.as_str(),
            (None, true, _) => "service",
            (None, false, true) => "practice_scan",
            (None, false, false) => "",
        }
        .to_owned(),
        context.token_hash.map(hex_lower).unwrap_or_default(),
        context.login_email.clone().unwrap_or_default(),
    ]
}

/// `value` as a SQL string literal, if it is made of ASCII letters, digits, `-` and `_` only
/// (ids, roles, hex digests): such a literal needs no escaping and cannot be broken out of,
/// whatever the server's `standard_conforming_strings`. `None` for anything else.
fn plain_literal(value: &str) -> Option<String> {
    value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_').then(|| format!("'{value}'"))
}

fn hex_lower(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::plain_literal;

    #[test]
    fn only_ids_roles_and_digests_become_literals() {
        assert_eq!(
            plain_literal("8f0c2c4e-1d2b-4c1a-9d55-2f7d6f1e0a11").as_deref(),
            Some("'8f0c2c4e-1d2b-4c1a-9d55-2f7d6f1e0a11'")
        );
        assert_eq!(plain_literal("service").as_deref(), Some("'service'"));
        assert_eq!(plain_literal("").as_deref(), Some("''"));
        for value in ["o'brien", r"a\b", "a b", "x;y", "a@b.org", "é", "a\0b", "$$"] {
            assert_eq!(plain_literal(value), None, "{value:?}");
        }
    }
}
