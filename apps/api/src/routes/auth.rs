//! Login, logout, the caller's own account, password change.

use crate::auth::{Principal, SESSION_COOKIE, client_ip};
use crate::error::{ApiError, current_request_id};
use crate::json_body::JsonBody;
use crate::state::AppState;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use app::sessions::LoginAttempt;
use kernel::{Actor, TenantId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/auth/login", web::post().to(login))
        .route("/api/v1/auth/logout", web::post().to(logout))
        .route("/api/v1/me", web::get().to(me))
        .route("/api/v1/me/password", web::post().to(change_password));
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    practice_id: uuid::Uuid,
    #[schema(example = "admin@example.org", max_length = 254)]
    email: String,
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 1024)]
    password: kernel::Secret<String>,
}

/// A new session. The token is also set as the `__Host-praxis_session` cookie and the CSRF token
/// as the `__Host-praxis_csrf` cookie. (Fields in key order: the body is byte-for-byte what it was
/// as a `json!` object.)
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Echo it in `X-CSRF-Token` on cookie-authenticated writes.
    csrf_token: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    expires_at: String,
    /// Send as `Authorization: Bearer <token>` (or rely on the cookie).
    token: String,
    #[schema(example = "Bearer")]
    token_type: String,
    user: LoginUser,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginUser {
    #[schema(value_type = uuid::Uuid)]
    id: kernel::UserId,
    #[schema(value_type = uuid::Uuid)]
    practice_id: TenantId,
    #[schema(value_type = crate::openapi::Role)]
    role: kernel::Role,
}

/// The caller: a signed-in user or an API key, told apart by `kind`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Me {
    User(MeUser),
    ApiKey(MeApiKey),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeUser {
    email: String,
    #[schema(value_type = uuid::Uuid)]
    id: kernel::UserId,
    kind: UserKind,
    #[schema(value_type = Option<uuid::Uuid>)]
    patient_id: Option<kernel::PatientId>,
    #[schema(value_type = uuid::Uuid)]
    practice_id: TenantId,
    #[schema(value_type = crate::openapi::Role)]
    role: kernel::Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeApiKey {
    #[schema(value_type = crate::openapi::Actor)]
    actor: Actor,
    kind: ApiKeyKind,
    #[schema(value_type = uuid::Uuid)]
    practice_id: TenantId,
    #[schema(value_type = Vec<crate::openapi::ApiScope>)]
    scopes: Vec<identity::ApiScope>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    User,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyKind {
    ApiKey,
}

/// Log in
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; sets the session and CSRF cookies", body = LoginResponse,
            headers(("Set-Cookie" = String, description = "Two of them: `__Host-praxis_session=<token>` (Secure, HttpOnly, SameSite=Strict, Path=/, Max-Age the session's lifetime) and `__Host-praxis_csrf=<csrf token>` (Secure, SameSite=Strict, Path=/, readable by the page's script)"))),
        (status = 400, description = "Malformed body or invalid field (`bad-request`, `validation-failed`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong practice, email or password, or a disabled account (one answer for all)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over `server.body_limit_bytes`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins for this account and IP, or the IP's global limit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or failure counters unavailable (login fails closed)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { practice_id, email, password } = body.into_inner();
    let signed_in = state
        .app
        .login(LoginAttempt {
            practice: TenantId::from_uuid(practice_id),
            email,
            password,
            client_ip: client_ip(&req, &state),
            request_id: current_request_id(),
        })
        .await?;

    let max_age = actix_web::cookie::time::Duration::seconds(signed_in.lifetime.whole_seconds());
    let session_cookie = Cookie::build(SESSION_COOKIE, signed_in.token.expose_secret().clone())
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(max_age)
        .finish();
    // Readable by the page's script (not HttpOnly): it echoes it in X-CSRF-Token.
    let csrf_cookie = Cookie::build(identity::CSRF_COOKIE_NAME, signed_in.csrf_token.expose_secret().clone())
        .path("/")
        .secure(true)
        .http_only(false)
        .same_site(SameSite::Strict)
        .max_age(max_age)
        .finish();
    Ok(HttpResponse::Ok().cookie(session_cookie).cookie(csrf_cookie).json(LoginResponse {
        csrf_token: signed_in.csrf_token.expose_secret().clone(),
        expires_at: signed_in.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        token: signed_in.token.expose_secret().clone(),
        token_type: "Bearer".to_owned(),
        user: LoginUser { id: signed_in.user, practice_id: signed_in.tenant, role: signed_in.role },
    }))
}

/// Log out
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "Session ended; the cookies are removed",
            headers(("Set-Cookie" = String, description = "Two of them, removing `__Host-praxis_session` and `__Host-praxis_csrf` (empty values, expired)"))),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed (cookie-authenticated write) or not allowed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn logout(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    if let Some(session) = principal.session_id {
        state.app.logout(&principal.caller(), session).await?;
    }
    let mut expired_session = Cookie::build(SESSION_COOKIE, "").path("/").secure(true).http_only(true).finish();
    expired_session.make_removal();
    let mut expired_csrf = Cookie::build(identity::CSRF_COOKIE_NAME, "").path("/").secure(true).finish();
    expired_csrf.make_removal();
    Ok(HttpResponse::NoContent().cookie(expired_session).cookie(expired_csrf).finish())
}

/// The caller's own account
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    security(("session_cookie" = []), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed (cookie-authenticated write) or not allowed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn me(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    if principal.user.is_none() {
        // Through `Value` (keys in order, also the actor's), so the body stays byte-for-byte what it was.
        let body = serde_json::to_value(Me::ApiKey(MeApiKey {
            actor: principal.actor,
            kind: ApiKeyKind::ApiKey,
            practice_id: principal.tenant,
            scopes: principal.scopes,
        }))
        .map_err(ApiError::internal)?;
        return Ok(HttpResponse::Ok().json(body));
    }
    let user = state.app.own_account(&principal.caller()).await?;
    Ok(HttpResponse::Ok().json(Me::User(MeUser {
        email: user.email,
        id: user.id,
        kind: UserKind::User,
        patient_id: user.patient,
        practice_id: user.tenant,
        role: user.role,
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schema(value_type = String, format = Password, max_length = 1024)]
    current_password: kernel::Secret<String>,
    /// Checked against the password policy (length, common passwords, the account's email).
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 1024)]
    new_password: kernel::Secret<String>,
}

/// Change the caller's password
///
/// Changes the caller's password and ends every session of theirs (including this one).
#[utoipa::path(post, path = "/api/v1/me/password", tag = "auth",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Password changed; every session of the account (this one too) ended"),
        (status = 400, description = "Malformed body, wrong current password or a new password the policy refuses (`validation-failed`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed (cookie-authenticated write) or not allowed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over `server.body_limit_bytes`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn change_password(
    state: web::Data<AppState>,
    principal: Principal,
    body: JsonBody<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let PasswordChange { current_password, new_password } = body.into_inner();
    state
        .app
        .change_own_password(&principal.caller(), app::accounts::PasswordChange { current_password, new_password })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
