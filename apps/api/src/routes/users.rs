//! Accounts of a practice (admin), and API keys (admin).

use crate::auth::{Principal, with_request};
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use audit::{Action, AuditEvent};
use identity::{ApiKeyToken, ApiScope, Permission};
use kernel::{Role, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store_postgres::identity as accounts;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/users", web::get().to(list_users))
        .route("/api/v1/users", web::post().to(create_user))
        .route("/api/v1/users/{id}/disable", web::post().to(disable_user))
        .route("/api/v1/api-keys", web::get().to(list_api_keys))
        .route("/api/v1/api-keys", web::post().to(create_api_key))
        .route("/api/v1/api-keys/{id}", web::delete().to(revoke_api_key));
}

fn field(field: &str, message: &str) -> ApiError {
    ApiError::Validation { errors: vec![FieldError { field: field.into(), message: message.into() }] }
}

/// An account of the practice. (Fields in key order: bodies are byte-for-byte what they were as
/// `json!` objects.)
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    disabled: bool,
    email: String,
    #[schema(value_type = uuid::Uuid)]
    id: UserId,
    /// The linked patient record, for patient accounts.
    #[schema(value_type = Option<uuid::Uuid>)]
    patient_id: Option<kernel::PatientId>,
    #[schema(value_type = crate::openapi::Role)]
    role: Role,
}

fn user_view(user: &accounts::UserRecord) -> UserView {
    UserView {
        disabled: user.disabled_at.is_some(),
        email: user.email.clone(),
        id: user.id,
        patient_id: user.patient,
        role: user.role,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    users: Vec<UserView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    email: String,
    #[schema(value_type = uuid::Uuid)]
    id: UserId,
    #[schema(value_type = crate::openapi::Role)]
    role: Role,
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Every account of the practice (staff may list)", body = UserList),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not list accounts (audited as `access.denied`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]

async fn list_users(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::UserRead, "user").await?;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let users = accounts::list_users(&mut tx).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(UserList { users: users.iter().map(user_view).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    #[schema(example = "therapist@example.org", max_length = 254)]
    email: String,
    /// Not `patient`: patient accounts are created from the patient record.
    #[schema(value_type = crate::openapi::Role)]
    role: Role,
    /// Checked against the password policy.
    #[schema(value_type = String, format = Password)]
    password: kernel::Secret<String>,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    request_body = NewUserRequest,
    responses(
        (status = 201, description = "Account created", body = CreatedUser),
        (status = 400, description = "Malformed body or invalid field (`bad-request`, `validation-failed` with `errors[]`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over `server.body_limit_bytes`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin (audited as `access.denied`), or a failed CSRF check", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "An account with this email exists in this practice", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]

async fn create_user(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<NewUserRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::UserManage, "user").await?;
    let NewUserRequest { email, role, password } = body.into_inner();
    let email = email.trim().to_lowercase();
    if email.len() < 3 || email.len() > 254 || !email.contains('@') || email.chars().any(char::is_whitespace) {
        return Err(field("email", "must be an email address of at most 254 characters"));
    }
    if role == Role::Patient {
        // A patient login is linked to a patient record; it is created with the record.
        return Err(field("role", "patient accounts are created from the patient record"));
    }
    identity::PasswordPolicy::default()
        .check(password.expose_secret(), &[&email])
        .map_err(|problem| field("password", &problem.to_string()))?;
    let hasher = state.hasher.clone();
    let hash = web::block(move || hasher.hash(password.expose_secret()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = accounts::NewUser {
        id: UserId::new(),
        tenant: principal.tenant,
        email,
        role,
        patient: None,
        password_hash: hash,
        created_at: state.clock.now(),
    };
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    if accounts::find_user_by_email(&mut tx, &user.email).await?.is_some() {
        return Err(ApiError::Conflict { detail: "An account with this email exists in this practice.".into() });
    }
    accounts::insert_user(&mut tx, &user).await?;
    let event = AuditEvent::new(principal.tenant, principal.actor.clone(), Action::UserCreate, "user", &*state.clock)
        .with_resource_id(user.id.to_string())
        .with_detail(json!({ "role": user.role.as_str() }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(CreatedUser { email: user.email, id: user.id, role: user.role }))
}

/// Disables an account and ends all of its sessions in the same transaction.
#[utoipa::path(post, path = "/api/v1/users/{id}/disable", tag = "users",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The account's id")),
    responses(
        (status = 204, description = "Disabled; its sessions ended"),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin (audited as `access.denied`), or a failed CSRF check", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account in this practice (or `id` is not a UUID)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "You cannot disable your own account", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn disable_user(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::UserManage, "user").await?;
    let target = UserId::from_uuid(path.into_inner());
    if Some(target) == principal.user {
        return Err(ApiError::Conflict { detail: "You cannot disable your own account.".into() });
    }
    let now = state.clock.now();
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    if accounts::get_user(&mut tx, target).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    accounts::disable_user(&mut tx, target, now).await?;
    let ended = accounts::revoke_user_sessions(&mut tx, target, now).await?;
    let event = AuditEvent::new(principal.tenant, principal.actor.clone(), Action::UserDisable, "user", &*state.clock)
        .with_resource_id(target.to_string())
        .with_detail(json!({ "sessions_ended": ended }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An API key, without the key. Times are Unix epoch seconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    created_at: i64,
    expires_at: Option<i64>,
    id: uuid::Uuid,
    /// The key's public id (the prefix of the key, safe to log).
    key_id: String,
    last_used_at: Option<i64>,
    name: String,
    revoked: bool,
    #[schema(value_type = Vec<crate::openapi::ApiScope>)]
    scopes: Vec<String>,
}

fn api_key_view(key: &accounts::ApiKeyRecord) -> ApiKeyView {
    ApiKeyView {
        created_at: key.created_at.unix_timestamp(),
        expires_at: key.expires_at.map(|t| t.unix_timestamp()),
        id: key.id,
        key_id: key.key_id.clone(),
        last_used_at: key.last_used_at.map(|t| t.unix_timestamp()),
        name: key.name.clone(),
        revoked: key.revoked_at.is_some(),
        scopes: key.scopes.clone(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    api_keys: Vec<ApiKeyView>,
}

/// A new API key: `api_key` is in this response only, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key itself: send it as `X-Api-Key`.
    api_key: String,
    id: uuid::Uuid,
    key_id: String,
    #[schema(example = "store this key now: it is not shown again")]
    note: String,
    #[schema(value_type = Vec<crate::openapi::ApiScope>)]
    scopes: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys",
    security(("session_cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Every API key of the practice, revoked ones included", body = ApiKeyList),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin (audited as `access.denied`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]

async fn list_api_keys(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::ApiKeyManage, "api_key").await?;
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let keys = accounts::list_api_keys(&mut tx).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(ApiKeyList { api_keys: keys.iter().map(api_key_view).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKeyRequest {
    /// 1 to 100 characters.
    #[schema(example = "booking widget")]
    name: String,
    /// 1 to 16 scopes.
    #[schema(value_type = Vec<crate::openapi::ApiScope>)]
    scopes: Vec<String>,
    /// Lifetime in days; none means no expiry.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
}

/// Creates an API key; the key itself is in this response only, never again.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    request_body = NewApiKeyRequest,
    responses(
        (status = 201, description = "Created; the key is shown once", body = CreatedApiKey),
        (status = 400, description = "Malformed body or invalid field (`bad-request`, `validation-failed` with `errors[]`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over `server.body_limit_bytes`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin (audited as `access.denied`), or a failed CSRF check", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn create_api_key(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<NewApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::ApiKeyManage, "api_key").await?;
    let created_by = principal.user.ok_or(ApiError::Forbidden)?;
    let NewApiKeyRequest { name, scopes, expires_in_days } = body.into_inner();
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(field("name", "must be 1 to 100 characters"));
    }
    if scopes.is_empty() || scopes.len() > 16 {
        return Err(field("scopes", "must list 1 to 16 scopes"));
    }
    let parsed: Vec<ApiScope> =
        scopes.iter().map(|s| s.parse()).collect::<Result<_, _>>().map_err(|_| field("scopes", "unknown scope"))?;
    if expires_in_days.is_some_and(|d| d == 0 || d > 3650) {
        return Err(field("expires_in_days", "must be between 1 and 3650"));
    }
    let now = state.clock.now();
    let token =
        ApiKeyToken::generate(principal.tenant, &ring::rand::SystemRandom::new()).map_err(ApiError::internal)?;
    let key = accounts::NewApiKey {
        id: uuid::Uuid::now_v7(),
        tenant: principal.tenant,
        key_id: token.key_id().to_string(),
        name,
        token_hash: *token.hash().as_bytes(),
        scopes: parsed.iter().map(|s| s.as_str().to_owned()).collect(),
        created_by,
        created_at: now,
        expires_at: expires_in_days.map(|d| now + time::Duration::days(i64::from(d))),
    };
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    accounts::insert_api_key(&mut tx, &key).await?;
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::ApiKeyCreate, "api_key", &*state.clock)
            .with_resource_id(key.key_id.clone());
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    let secret = token.display_once();
    Ok(HttpResponse::Created().json(CreatedApiKey {
        api_key: secret.as_str().to_owned(),
        id: key.id,
        key_id: key.key_id,
        note: "store this key now: it is not shown again".to_owned(),
        scopes: key.scopes,
    }))
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The API key's id (`id`, not `key_id`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin (audited as `access.denied`), or a failed CSRF check", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such API key in this practice (or `id` is not a UUID)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_api_key(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<uuid::Uuid>,
) -> Result<HttpResponse, ApiError> {
    principal.require_audited(&state, Permission::ApiKeyManage, "api_key").await?;
    let id = path.into_inner();
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    if !accounts::revoke_api_key(&mut tx, id, state.clock.now()).await? {
        return Err(ApiError::NotFound);
    }
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::ApiKeyRevoke, "api_key", &*state.clock)
            .with_resource_id(id.to_string());
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
