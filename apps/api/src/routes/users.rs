//! Accounts of a practice (admin), and API keys (admin).

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json_body::JsonBody;
use crate::state::AppState;
use actix_web::{HttpResponse, web};
use app::accounts::{AccountRef, ApiKeyRecord, NewAccount, NewApiKey, UserRecord};
use kernel::{Role, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/users", web::get().to(list_users))
        .route("/api/v1/users", web::post().to(create_user))
        .route("/api/v1/users/{id}/disable", web::post().to(disable_user))
        .route("/api/v1/api-keys", web::get().to(list_api_keys))
        .route("/api/v1/api-keys", web::post().to(create_api_key))
        .route("/api/v1/api-keys/{id}", web::delete().to(revoke_api_key));
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

fn user_view(user: &UserRecord) -> UserView {
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

/// List accounts
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
    let users = state.app.list_users(&principal.caller()).await?;
    Ok(HttpResponse::Ok().json(UserList { users: users.iter().map(user_view).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    #[schema(example = "therapist@example.org", max_length = 254)]
    email: String,
    /// Not `patient`: patient accounts are created from the patient record.
    #[schema(value_type = crate::openapi::StaffRole)]
    role: Role,
    /// At least 12 characters and at most 1,024 bytes (UTF-8), checked against the password
    /// policy (common passwords, the account's email).
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 1024)]
    password: kernel::Secret<String>,
}

/// Create an account
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
    body: JsonBody<NewUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let NewUserRequest { email, role, password } = body.into_inner();
    let user = state.app.create_user(&principal.caller(), NewAccount { email, role, password }).await?;
    Ok(HttpResponse::Created().json(CreatedUser { email: user.email, id: user.id, role: user.role }))
}

/// Disable an account
///
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
    let target = UserId::from_uuid(path.into_inner());
    state.app.disable_user(&principal.caller(), AccountRef::Id(target)).await?;
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

fn api_key_view(key: &ApiKeyRecord) -> ApiKeyView {
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

/// List API keys
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
    let keys = state.app.list_api_keys(&principal.caller()).await?;
    Ok(HttpResponse::Ok().json(ApiKeyList { api_keys: keys.iter().map(api_key_view).collect() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKeyRequest {
    /// 1 to 100 characters.
    #[schema(example = "booking widget", min_length = 1, max_length = 100)]
    name: String,
    /// 1 to 16 scopes.
    #[schema(value_type = Vec<crate::openapi::ApiScope>, min_items = 1, max_items = 16)]
    scopes: Vec<String>,
    /// Lifetime in days; none means no expiry.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
}

/// Create an API key
///
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
    body: JsonBody<NewApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let NewApiKeyRequest { name, scopes, expires_in_days } = body.into_inner();
    let created = state.app.create_api_key(&principal.caller(), NewApiKey { name, scopes, expires_in_days }).await?;
    Ok(HttpResponse::Created().json(CreatedApiKey {
        api_key: created.key.expose_secret().clone(),
        id: created.id,
        key_id: created.key_id,
        note: "store this key now: it is not shown again".to_owned(),
        scopes: created.scopes,
    }))
}

/// Revoke an API key
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
    state.app.revoke_api_key(&principal.caller(), path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
