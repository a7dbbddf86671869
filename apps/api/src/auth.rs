//! Who is calling: sessions (cookie or Bearer), API keys, and the checks that go with them
//! (CSRF for cookies, per-principal rate limit, the permission matrix).

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use audit::{Action, AuditEvent, Outcome};
use futures_util::future::LocalBoxFuture;
use identity::{ApiKeyToken, ApiScope, Permission, Scope, SessionState, SessionToken};
use kernel::{Actor, Role, TenantId, UserId};
use std::net::IpAddr;
use store_postgres::DbContext;

/// Cookie holding the session token: `__Host-` pins it to this host, path `/`, Secure.
pub const SESSION_COOKIE: &str = "__Host-praxis_session";
pub const API_KEY_HEADER: &str = "x-api-key";

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Session token in the `__Host-praxis_session` cookie: CSRF-checked.
    Cookie,
    /// Session token as `Authorization: Bearer`: browsers never attach it on their own.
    Bearer,
    /// `X-Api-Key`: service-to-service.
    ApiKey,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    /// The user, for sessions; `None` for API keys.
    pub user: Option<UserId>,
    pub role: Option<Role>,
    pub scopes: Vec<ApiScope>,
    pub actor: Actor,
    pub method: AuthMethod,
    pub session_id: Option<uuid::Uuid>,
}

impl Principal {
    /// The RLS context for this caller's database work.
    pub fn db_context(&self) -> DbContext {
        DbContext {
            tenant: Some(self.tenant),
            user: self.user,
            role: self.role,
            service: self.role.is_none(),
            ..DbContext::default()
        }
    }

    /// This principal as the caller of a use case, with the current request's id.
    pub fn caller(&self) -> app::Caller {
        let access = match (self.user, self.role) {
            (Some(user), Some(role)) => app::Access::Account { user, role },
            _ => app::Access::ApiKey { scopes: self.scopes.clone() },
        };
        app::Caller {
            tenant: self.tenant,
            actor: self.actor.clone(),
            access,
            request_id: crate::error::current_request_id(),
        }
    }

    /// How far `permission` reaches for this caller.
    pub fn scope(&self, permission: Permission) -> Scope {
        match self.role {
            Some(role) => identity::allowed(role, permission),
            None => identity::api_key_allowed(&self.scopes, permission),
        }
    }

    /// Refuses (403) when the caller has no scope at all for `permission`.
    pub fn require(&self, permission: Permission) -> Result<Scope, ApiError> {
        match self.scope(permission) {
            Scope::Denied => Err(ApiError::Forbidden),
            scope => Ok(scope),
        }
    }

    /// [`Principal::require`], writing an `access.denied` audit entry when refused.
    pub async fn require_audited(
        &self,
        state: &AppState,
        permission: Permission,
        resource_type: &str,
    ) -> Result<Scope, ApiError> {
        let decision = self.require(permission);
        if decision.is_err() {
            let event =
                AuditEvent::new(self.tenant, self.actor.clone(), Action::AccessDenied, resource_type, &*state.clock)
                    .with_outcome(Outcome::Denied)
                    .with_detail(serde_json::json!({ "permission": permission.as_str() }));
            append_audit(state, &self.db_context(), with_request(event)).await?;
        }
        decision
    }
}

/// Stamps the current request id on an audit event.
pub fn with_request(event: AuditEvent) -> AuditEvent {
    match crate::error::current_request_id() {
        Some(id) => event.with_request_id(id),
        None => event,
    }
}

/// Appends one audit entry in its own transaction (for events that change nothing else).
pub async fn append_audit(state: &AppState, context: &DbContext, event: AuditEvent) -> Result<(), ApiError> {
    let mut tx = store_postgres::begin(&state.db, context).await?;
    store_postgres::audit::append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// The client address: the peer, or the first untrusted hop of `X-Forwarded-For` when the peer is
/// a configured trusted proxy.
pub fn client_ip(req: &HttpRequest, state: &AppState) -> IpAddr {
    let peer = req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let forwarded: Vec<&str> = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok()).collect();
    let joined = forwarded.join(",");
    identity::client_ip(peer, (!joined.is_empty()).then_some(joined.as_str()), &state.trusted_proxies)
}

fn unauthorized() -> ApiError {
    ApiError::Unauthorized
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state =
                req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal(anyhow::anyhow!("no state")))?;
            let principal = authenticate(&req, state).await?;
            enforce_user_limit(state, &principal).await?;
            Ok(principal)
        })
    }
}

async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(key) = req.headers().get(API_KEY_HEADER) {
        let key = key.to_str().map_err(|_| unauthorized())?;
        return authenticate_api_key(state, key).await;
    }
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| unauthorized())?;
        let token = value.strip_prefix("Bearer ").ok_or_else(unauthorized)?;
        return authenticate_session(state, token.trim(), AuthMethod::Bearer).await;
    }
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        let principal = authenticate_session(state, cookie.value(), AuthMethod::Cookie).await?;
        let csrf_cookie = req.cookie(identity::CSRF_COOKIE_NAME);
        let header_value = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        identity::check_csrf(
            req.method().as_str(),
            true,
            csrf_cookie.as_ref().map(|c| c.value()),
            header_value(identity::CSRF_HEADER_NAME),
            header_value("origin"),
            header_value("sec-fetch-site"),
            &state.config.cors.allowed_origins,
        )
        .map_err(|problem| {
            tracing::warn!(reason = %problem, "csrf check failed");
            ApiError::Forbidden
        })?;
        return Ok(principal);
    }
    Err(unauthorized())
}

async fn authenticate_session(state: &AppState, raw: &str, method: AuthMethod) -> Result<Principal, ApiError> {
    let token = SessionToken::parse(raw).map_err(|_| unauthorized())?;
    let hash = token.hash();
    let session = store_postgres::identity::find_session(&state.db, token.tenant(), *hash.as_bytes())
        .await?
        .ok_or_else(unauthorized)?;
    let now = state.clock.now();
    if session.revoked_at.is_some() {
        return Err(unauthorized());
    }
    match state.session_policy.session_state(session.created_at, session.last_seen_at, now) {
        SessionState::Active => {}
        SessionState::IdleExpired | SessionState::AbsoluteExpired => return Err(unauthorized()),
    }
    let principal = Principal {
        tenant: session.tenant,
        user: Some(session.user),
        role: Some(session.role),
        scopes: Vec::new(),
        actor: Actor::User { tenant: session.tenant, user: session.user, role: session.role },
        method,
        session_id: Some(session.id),
    };
    if state.session_policy.should_touch(session.last_seen_at, now) {
        let mut tx = store_postgres::begin(&state.db, &principal.db_context()).await?;
        store_postgres::identity::touch_session(&mut tx, session.id, now).await?;
        tx.commit().await?;
    }
    Ok(principal)
}

async fn authenticate_api_key(state: &AppState, raw: &str) -> Result<Principal, ApiError> {
    let token = ApiKeyToken::parse(raw.trim()).map_err(|_| unauthorized())?;
    let now = state.clock.now();
    let key =
        store_postgres::identity::find_and_touch_api_key(&state.db, token.tenant(), *token.hash().as_bytes(), now)
            .await?
            .ok_or_else(unauthorized)?;
    if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= now) {
        return Err(unauthorized());
    }
    let scopes = key.scopes.iter().filter_map(|s| s.parse::<ApiScope>().ok()).collect();
    Ok(Principal {
        tenant: key.tenant,
        user: None,
        role: None,
        scopes,
        actor: Actor::ApiKey { tenant: key.tenant, key_id: key.key_id.clone() },
        method: AuthMethod::ApiKey,
        session_id: None,
    })
}

/// Per user (or API key) budget, after authentication.
async fn enforce_user_limit(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    let subject = match &principal.actor {
        Actor::User { user, .. } => format!("user:{user}"),
        Actor::ApiKey { tenant, key_id } => format!("key:{tenant}:{key_id}"),
        other => format!("{other:?}"),
    };
    let limit = cache_redis::Limit::new(state.config.rate_limits.user_per_minute, std::time::Duration::from_secs(60));
    let (decision, _) = state.limiter.check("user", &subject, limit).await;
    if decision.allowed {
        Ok(())
    } else {
        Err(ApiError::TooManyRequests { retry_after_secs: decision.retry_after_secs().unwrap_or(1) })
    }
}
