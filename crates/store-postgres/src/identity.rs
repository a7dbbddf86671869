//! Accounts, sessions and API keys.
//!
//! Functions that take a `&mut PgConnection` run inside the caller's transaction (opened with
//! [`crate::begin`]), so the change and its audit entry commit or roll back together. The three
//! lookups that authentication needs open their own narrow context: they can see only the row
//! named by the email or token hash they were given.

use crate::{DbContext, StoreError, begin};
use kernel::{PatientId, Role, TenantId, UserId};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

/// What login needs to decide: never leaves the server.
#[derive(Debug, Clone)]
pub struct LoginCandidate {
    pub user: UserId,
    pub role: Role,
    pub password_hash: String,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub tenant: TenantId,
    pub email: String,
    pub role: Role,
    pub patient: Option<PatientId>,
    pub disabled_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    pub tenant: TenantId,
    pub email: String,
    pub role: Role,
    pub patient: Option<PatientId>,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
    pub token_hash: [u8; 32],
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant: TenantId,
    pub key_id: String,
    pub name: String,
    pub token_hash: [u8; 32],
    pub scopes: Vec<String>,
    pub created_by: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub tenant: TenantId,
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_by: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

fn role_of(text: &str) -> Result<Role, StoreError> {
    text.parse().map_err(|e: kernel::UnknownRole| StoreError::Corrupt(e.to_string()))
}

fn user_from_row(row: &PgRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: UserId::from_uuid(row.try_get("id")?),
        tenant: TenantId::from_uuid(row.try_get("tenant_id")?),
        email: row.try_get("email")?,
        role: role_of(row.try_get::<&str, _>("role")?)?,
        patient: row.try_get::<Option<Uuid>, _>("patient_id")?.map(PatientId::from_uuid),
        disabled_at: row.try_get("disabled_at")?,
        created_at: row.try_get("created_at")?,
    })
}

const USER_COLUMNS: &str = "id, tenant_id, email, role, patient_id, disabled_at, created_at";

/// Login lookup: runs in a context that can see only the account with this email.
pub async fn find_login_candidate(
    pool: &PgPool,
    tenant: TenantId,
    email: &str,
) -> Result<Option<LoginCandidate>, StoreError> {
    let mut tx = begin(pool, &DbContext::login_lookup(tenant, email)).await?;
    let row = crate::sql::query(
        "SELECT id, role, password_hash, disabled_at IS NOT NULL AS disabled FROM users WHERE email = $1",
    )
    .bind(email)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(|row| {
        Ok(LoginCandidate {
            user: UserId::from_uuid(row.try_get("id")?),
            role: role_of(row.try_get::<&str, _>("role")?)?,
            password_hash: row.try_get("password_hash")?,
            disabled: row.try_get("disabled")?,
        })
    })
    .transpose()
}

/// Inserts a practice (tenant). Row-level security admits it only in a transaction whose
/// context names this practice, as the practice's first admin: the practice and its admin are
/// created together (`app::accounts`).
pub async fn insert_practice(
    conn: &mut PgConnection,
    tenant: TenantId,
    name: &str,
    created_at: OffsetDateTime,
) -> Result<(), StoreError> {
    crate::sql::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(tenant.as_uuid())
        .bind(name)
        .bind(created_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_user(conn: &mut PgConnection, user: &NewUser) -> Result<(), StoreError> {
    crate::sql::query(
        "INSERT INTO users (id, tenant_id, email, role, patient_id, password_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user.id.as_uuid())
    .bind(user.tenant.as_uuid())
    .bind(&user.email)
    .bind(user.role.as_str())
    .bind(user.patient.map(|p| *p.as_uuid()))
    .bind(&user.password_hash)
    .bind(user.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_user(conn: &mut PgConnection, id: UserId) -> Result<Option<UserRecord>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row = crate::sql::query(sqlx::AssertSqlSafe(sql)).bind(id.as_uuid()).fetch_optional(conn).await?;
    row.as_ref().map(user_from_row).transpose()
}

pub async fn find_user_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<UserRecord>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
    let row = crate::sql::query(sqlx::AssertSqlSafe(sql)).bind(email).fetch_optional(conn).await?;
    row.as_ref().map(user_from_row).transpose()
}

pub async fn list_users(conn: &mut PgConnection) -> Result<Vec<UserRecord>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id LIMIT 1000");
    let rows = crate::sql::query(sqlx::AssertSqlSafe(sql)).fetch_all(conn).await?;
    rows.iter().map(user_from_row).collect()
}

/// Marks the account disabled; returns whether a visible, enabled account was changed.
pub async fn disable_user(conn: &mut PgConnection, id: UserId, at: OffsetDateTime) -> Result<bool, StoreError> {
    let done = crate::sql::query("UPDATE users SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL")
        .bind(id.as_uuid())
        .bind(at)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_password(
    conn: &mut PgConnection,
    id: UserId,
    password_hash: &str,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let done = crate::sql::query("UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE id = $1")
        .bind(id.as_uuid())
        .bind(password_hash)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn record_login(conn: &mut PgConnection, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
    crate::sql::query("UPDATE users SET last_login_at = $2 WHERE id = $1")
        .bind(id.as_uuid())
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn password_hash_of(conn: &mut PgConnection, id: UserId) -> Result<Option<String>, StoreError> {
    Ok(crate::sql::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(conn)
        .await?)
}

pub async fn insert_session(conn: &mut PgConnection, session: &NewSession) -> Result<(), StoreError> {
    crate::sql::query(
        "INSERT INTO sessions (id, tenant_id, user_id, role, token_hash, created_at, last_seen_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
    )
    .bind(session.id)
    .bind(session.tenant.as_uuid())
    .bind(session.user.as_uuid())
    .bind(session.role.as_str())
    .bind(session.token_hash.as_slice())
    .bind(session.created_at)
    .bind(session.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Authentication by session token: sees only the session with this token hash.
pub async fn find_session(
    pool: &PgPool,
    tenant: TenantId,
    token_hash: [u8; 32],
) -> Result<Option<SessionRecord>, StoreError> {
    let mut tx = begin(pool, &DbContext::token_lookup(tenant, token_hash)).await?;
    let row = crate::sql::query(
        "SELECT id, tenant_id, user_id, role, created_at, last_seen_at, expires_at, revoked_at \
           FROM sessions WHERE token_hash = $1",
    )
    .bind(token_hash.as_slice())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(|row| {
        Ok(SessionRecord {
            id: row.try_get("id")?,
            tenant: TenantId::from_uuid(row.try_get("tenant_id")?),
            user: UserId::from_uuid(row.try_get("user_id")?),
            role: role_of(row.try_get::<&str, _>("role")?)?,
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    })
    .transpose()
}

pub async fn touch_session(conn: &mut PgConnection, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
    crate::sql::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn revoke_session(conn: &mut PgConnection, id: Uuid, at: OffsetDateTime) -> Result<bool, StoreError> {
    let done = crate::sql::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every live session of a user; returns how many were ended.
pub async fn revoke_user_sessions(
    conn: &mut PgConnection,
    user: UserId,
    at: OffsetDateTime,
) -> Result<u64, StoreError> {
    let done = crate::sql::query("UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user.as_uuid())
        .bind(at)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

fn api_key_from_row(row: &PgRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        tenant: TenantId::from_uuid(row.try_get("tenant_id")?),
        key_id: row.try_get("key_id")?,
        name: row.try_get("name")?,
        scopes: row.try_get("scopes")?,
        created_by: UserId::from_uuid(row.try_get("created_by")?),
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

const API_KEY_COLUMNS: &str =
    "id, tenant_id, key_id, name, scopes, created_by, created_at, expires_at, revoked_at, last_used_at";

pub async fn insert_api_key(conn: &mut PgConnection, key: &NewApiKey) -> Result<(), StoreError> {
    crate::sql::query(
        "INSERT INTO api_keys (id, tenant_id, key_id, name, token_hash, scopes, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(key.id)
    .bind(key.tenant.as_uuid())
    .bind(&key.key_id)
    .bind(&key.name)
    .bind(key.token_hash.as_slice())
    .bind(&key.scopes)
    .bind(key.created_by.as_uuid())
    .bind(key.created_at)
    .bind(key.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list_api_keys(conn: &mut PgConnection) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id LIMIT 1000");
    let rows = crate::sql::query(sqlx::AssertSqlSafe(sql)).fetch_all(conn).await?;
    rows.iter().map(api_key_from_row).collect()
}

/// Revokes a live key; returns its public key id, or `None` when no visible live key has `id`.
pub async fn revoke_api_key(
    conn: &mut PgConnection,
    id: Uuid,
    at: OffsetDateTime,
) -> Result<Option<String>, StoreError> {
    let key_id = crate::sql::query_scalar(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING key_id",
    )
    .bind(id)
    .bind(at)
    .fetch_optional(conn)
    .await?;
    Ok(key_id)
}

/// Authentication by API key: sees only the key with this hash. Records the use in the same
/// narrow context (the only column it may touch there is `last_used_at`).
pub async fn find_and_touch_api_key(
    pool: &PgPool,
    tenant: TenantId,
    token_hash: [u8; 32],
    at: OffsetDateTime,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let mut tx = begin(pool, &DbContext::token_lookup(tenant, token_hash)).await?;
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE token_hash = $1");
    let row = crate::sql::query(sqlx::AssertSqlSafe(sql)).bind(token_hash.as_slice()).fetch_optional(&mut *tx).await?;
    let record = row.as_ref().map(api_key_from_row).transpose()?;
    if let Some(key) = &record
        && key.revoked_at.is_none()
    {
        crate::sql::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(key.id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(record)
}
