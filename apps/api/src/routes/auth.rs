//! Login, logout, the caller's own account, password change.

use crate::auth::{Principal, SESSION_COOKIE, client_ip, with_request};
use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use audit::{Action, AuditEvent, Outcome};
use identity::{CsrfToken, SessionToken};
use kernel::{Actor, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;
use store_postgres::{DbContext, identity as accounts};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/auth/login", web::post().to(login))
        .route("/api/v1/auth/logout", web::post().to(logout))
        .route("/api/v1/me", web::get().to(me))
        .route("/api/v1/me/password", web::post().to(change_password));
}

/// Longest accepted email and password: bounds the work (argon2 cost) an attacker can demand.
const MAX_EMAIL: usize = 254;
const MAX_PASSWORD_BYTES: usize = 1024;

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

fn field(field: &str, message: &str) -> ApiError {
    ApiError::Validation { errors: vec![FieldError { field: field.into(), message: message.into() }] }
}

/// One answer for every way a login can fail (unknown practice, unknown email, wrong password,
/// disabled account), so the response does not tell which accounts exist.
fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized
}

fn redis_down(error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %error, "login refused: failure counters unavailable (fail closed)");
    ApiError::ServiceUnavailable { detail: "Login is temporarily unavailable; try again shortly.".into() }
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; sets the session and CSRF cookies", body = LoginResponse),
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
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { practice_id, email, password } = body.into_inner();
    let email = email.trim().to_lowercase();
    if email.is_empty() || email.len() > MAX_EMAIL || !email.contains('@') {
        return Err(field("email", "must be an email address of at most 254 characters"));
    }
    if password.expose_secret().is_empty() || password.expose_secret().len() > MAX_PASSWORD_BYTES {
        return Err(field("password", "must be 1 to 1024 bytes"));
    }
    let tenant = TenantId::from_uuid(practice_id);
    let ip = client_ip(&req, &state);
    let login_window = Duration::from_secs(state.config.rate_limits.login_window_secs);
    let account_key = identity::login_limit_key(&format!("{tenant}:{email}"), ip);

    // Refuse before verifying: the sixth attempt in the window never reaches argon2. Without the
    // counters (Redis down) login fails closed.
    let status = state.login_failures.status(&account_key).await.map_err(redis_down)?;
    let candidate = accounts::find_login_candidate(&state.db, tenant, &email).await?;
    let known_user = candidate.as_ref().map(|c| c.user);
    if status.count >= u64::from(state.config.rate_limits.login_failures) {
        note_failed_attempt(&state, tenant, &email, known_user, ip, "rate_limited").await?;
        let retry_after = status.reset_after.map(|d| d.as_secs().max(1)).unwrap_or(login_window.as_secs());
        return Err(ApiError::TooManyRequests { retry_after_secs: retry_after });
    }

    let hasher = state.hasher.clone();
    let stored_hash = candidate.as_ref().filter(|c| !c.disabled).map(|c| c.password_hash.clone());
    // argon2 is CPU-bound: off the async workers. An unknown or disabled account costs the same.
    let verified = web::block(move || match stored_hash {
        Some(hash) => hasher.verify(password.expose_secret(), &hash).unwrap_or(false),
        None => {
            hasher.dummy_verify(password.expose_secret());
            false
        }
    })
    .await
    .map_err(ApiError::internal)?;

    let Some(user) = candidate.filter(|_| verified) else {
        state.login_failures.record_failure(&account_key, login_window).await.map_err(redis_down)?;
        note_failed_attempt(&state, tenant, &email, known_user, ip, "invalid_credentials").await?;
        return Err(invalid_credentials());
    };

    let now = state.clock.now();
    let rng = ring::rand::SystemRandom::new();
    let token = SessionToken::generate(tenant, &rng).map_err(ApiError::internal)?;
    let csrf = CsrfToken::generate(&rng).map_err(ApiError::internal)?;
    let expires_at = now + state.session_policy.absolute_timeout;
    let context = DbContext::user(tenant, user.user, user.role);
    let mut tx = store_postgres::begin(&state.db, &context).await?;
    let session_id = uuid::Uuid::now_v7();
    accounts::insert_session(
        &mut tx,
        &accounts::NewSession {
            id: session_id,
            tenant,
            user: user.user,
            role: user.role,
            token_hash: *token.hash().as_bytes(),
            created_at: now,
            expires_at,
        },
    )
    .await?;
    accounts::record_login(&mut tx, user.user, now).await?;
    let actor = Actor::User { tenant, user: user.user, role: user.role };
    let event = AuditEvent::new(tenant, actor, Action::AuthLogin, "session", &*state.clock)
        .with_resource_id(session_id.to_string());
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;

    let max_age = actix_web::cookie::time::Duration::seconds(state.session_policy.absolute_timeout.whole_seconds());
    let session_cookie = Cookie::build(SESSION_COOKIE, token.expose().to_owned())
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(max_age)
        .finish();
    // Readable by the page's script (not HttpOnly): it echoes it in X-CSRF-Token.
    let csrf_cookie = Cookie::build(identity::CSRF_COOKIE_NAME, csrf.expose().to_owned())
        .path("/")
        .secure(true)
        .http_only(false)
        .same_site(SameSite::Strict)
        .max_age(max_age)
        .finish();
    Ok(HttpResponse::Ok().cookie(session_cookie).cookie(csrf_cookie).json(LoginResponse {
        csrf_token: csrf.expose().to_owned(),
        expires_at: expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        token: token.expose().to_owned(),
        token_type: "Bearer".to_owned(),
        user: LoginUser { id: user.user, practice_id: tenant, role: user.role },
    }))
}

/// Records a failed attempt, whether the password was wrong or the attempt was refused by the
/// login limit: an `auth.login_failed` entry, and on the eleventh failure within five minutes for
/// one account or one IP, one `security.suspicious_activity` entry (the account when known and
/// over the threshold, else the IP), not one per attempt.
async fn note_failed_attempt(
    state: &AppState,
    tenant: TenantId,
    email: &str,
    user: Option<kernel::UserId>,
    ip: std::net::IpAddr,
    reason: &'static str,
) -> Result<(), ApiError> {
    let policy = audit::FailedLoginPolicy::default();
    let window = Duration::try_from(policy.window).unwrap_or(Duration::from_secs(300));
    let by_account = state
        .login_failures
        .record_failure(&format!("suspicious:account:{tenant}:{email}"), window)
        .await
        .map_err(redis_down)?;
    let by_ip = state
        .login_failures
        .record_failure(&format!("suspicious:ip:{tenant}:{ip}"), window)
        .await
        .map_err(redis_down)?;

    let system = Actor::System { component: "login".into() };
    let mut failed = AuditEvent::new(tenant, system, Action::AuthLoginFailed, "session", &*state.clock)
        .with_outcome(Outcome::Failure)
        .with_detail(json!({ "reason": reason }));
    if let Some(user) = user {
        failed = failed.with_resource_id(user.to_string());
    }
    let mut events = vec![failed];
    let subject = match (policy.on_failed_login(by_account), user, policy.on_failed_login(by_ip)) {
        (true, Some(user), _) => Some((audit::SuspicionSubject::Account(user), by_account)),
        (true, None, _) => Some((audit::SuspicionSubject::SourceIp(ip), by_account)),
        (false, _, true) => Some((audit::SuspicionSubject::SourceIp(ip), by_ip)),
        (false, _, false) => None,
    };
    if let Some((subject, count)) = subject {
        events.push(AuditEvent::suspicious_activity(tenant, subject, &policy, count, &*state.clock));
    }
    let mut tx = store_postgres::begin(&state.db, &DbContext::tenant(tenant)).await?;
    for event in events {
        match store_postgres::audit::append(&mut tx, with_request(event)).await {
            Ok(_) => {}
            // A practice that does not exist has no chain: there is nowhere to record it. Any
            // other audit failure fails the request, as every audit failure does.
            Err(store_postgres::AuditStoreError::UnknownTenant(_)) => return Ok(()),
            Err(other) => return Err(other.into()),
        }
    }
    tx.commit().await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("session_cookie" = [], "csrf_token" = []), ("bearer" = [])),
    responses(
        (status = 204, description = "Session ended; the cookies are removed"),
        (status = 401, description = "No or invalid credentials", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed (cookie-authenticated write) or not allowed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit hit; see `Retry-After`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A backing service is unavailable", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ))]
async fn logout(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    if let Some(session_id) = principal.session_id {
        let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
        accounts::revoke_session(&mut tx, session_id, state.clock.now()).await?;
        let event =
            AuditEvent::new(principal.tenant, principal.actor.clone(), Action::AuthLogout, "session", &*state.clock)
                .with_resource_id(session_id.to_string());
        store_postgres::audit::append(&mut tx, with_request(event)).await?;
        tx.commit().await?;
    }
    let mut expired_session = Cookie::build(SESSION_COOKIE, "").path("/").secure(true).http_only(true).finish();
    expired_session.make_removal();
    let mut expired_csrf = Cookie::build(identity::CSRF_COOKIE_NAME, "").path("/").secure(true).finish();
    expired_csrf.make_removal();
    Ok(HttpResponse::NoContent().cookie(expired_session).cookie(expired_csrf).finish())
}

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
    let Some(user_id) = principal.user else {
        // Through `Value` (keys in order, also the actor's), so the body stays byte-for-byte what it was.
        let body = serde_json::to_value(Me::ApiKey(MeApiKey {
            actor: principal.actor,
            kind: ApiKeyKind::ApiKey,
            practice_id: principal.tenant,
            scopes: principal.scopes,
        }))
        .map_err(ApiError::internal)?;
        return Ok(HttpResponse::Ok().json(body));
    };
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let user = accounts::get_user(&mut tx, user_id).await?.ok_or(ApiError::Unauthorized)?;
    tx.commit().await?;
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
    #[schema(value_type = String, format = Password)]
    new_password: kernel::Secret<String>,
}

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
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let user_id = principal.user.ok_or(ApiError::Forbidden)?;
    let PasswordChange { current_password, new_password } = body.into_inner();
    if current_password.expose_secret().len() > MAX_PASSWORD_BYTES {
        return Err(field("current_password", "must be at most 1024 bytes"));
    }
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    let user = accounts::get_user(&mut tx, user_id).await?.ok_or(ApiError::Unauthorized)?;
    let stored = accounts::password_hash_of(&mut tx, user_id).await?.ok_or(ApiError::Unauthorized)?;
    tx.commit().await?;

    identity::PasswordPolicy::default()
        .check(new_password.expose_secret(), &[&user.email])
        .map_err(|problem| field("new_password", &problem.to_string()))?;
    let hasher = state.hasher.clone();
    let new_hash = web::block(move || -> Result<Option<String>, identity::IdentityError> {
        if !hasher.verify(current_password.expose_secret(), &stored)? {
            return Ok(None);
        }
        hasher.hash(new_password.expose_secret()).map(Some)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?
    .ok_or_else(|| field("current_password", "does not match"))?;

    let now = state.clock.now();
    let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
    accounts::set_password(&mut tx, user_id, &new_hash, now).await?;
    let ended = accounts::revoke_user_sessions(&mut tx, user_id, now).await?;
    let event =
        AuditEvent::new(principal.tenant, principal.actor.clone(), Action::AuthSessionRevoked, "user", &*state.clock)
            .with_resource_id(user_id.to_string())
            .with_detail(json!({ "reason": "password_changed", "sessions_ended": ended }));
    store_postgres::audit::append(&mut tx, with_request(event)).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
