//! Who is calling, the HTTP half: reading the credential (`X-Api-Key`, `Authorization: Bearer`,
//! or the session cookie with its CSRF check), the per-principal rate limit, and the permission
//! checks of the routes not yet moved to `crates/app`. Which session or key a credential names,
//! and whether it is still live, is the use-case layer's (`app::sessions`).

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use identity::ApiScope;
use kernel::{Actor, Role, TenantId, UserId};
use std::net::IpAddr;

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

    /// The principal of a live session, authenticated by `method`.
    fn of_session(identity: app::sessions::SessionIdentity, method: AuthMethod) -> Self {
        let app::sessions::SessionIdentity { session, tenant, user, role } = identity;
        Principal {
            tenant,
            user: Some(user),
            role: Some(role),
            scopes: Vec::new(),
            actor: Actor::User { tenant, user, role },
            method,
            session_id: Some(session),
        }
    }

    /// The principal of a live API key.
    fn of_api_key(identity: app::sessions::ApiKeyIdentity) -> Self {
        let app::sessions::ApiKeyIdentity { tenant, key_id, scopes } = identity;
        Principal {
            tenant,
            user: None,
            role: None,
            scopes,
            actor: Actor::ApiKey { tenant, key_id },
            method: AuthMethod::ApiKey,
            session_id: None,
        }
    }
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
    // One credential per request. With several (a Bearer token and a stale cookie, a key and a
    // token) there is no answer to "who is calling" that a client could rely on, and trying one
    // after the other would let a junk credential ride on a valid one; so any mix is refused,
    // whichever of them is valid (docs/security.md).
    let presented = [
        req.headers().contains_key(API_KEY_HEADER),
        req.headers().contains_key(header::AUTHORIZATION),
        req.cookie(SESSION_COOKIE).is_some(),
    ];
    if presented.iter().filter(|present| **present).count() > 1 {
        return Err(unauthorized());
    }
    if let Some(key) = req.headers().get(API_KEY_HEADER) {
        let key = key.to_str().map_err(|_| unauthorized())?;
        return Ok(Principal::of_api_key(state.app.authenticate_api_key(key).await?));
    }
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| unauthorized())?;
        let token = value.strip_prefix("Bearer ").ok_or_else(unauthorized)?;
        let session = state.app.authenticate_session(token.trim()).await?;
        return Ok(Principal::of_session(session, AuthMethod::Bearer));
    }
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        let session = state.app.authenticate_session(cookie.value()).await?;
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
        return Ok(Principal::of_session(session, AuthMethod::Cookie));
    }
    Err(unauthorized())
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
        telemetry::metrics::record_rate_limit_refusal("user");
        Err(ApiError::TooManyRequests { retry_after_secs: decision.retry_after_secs().unwrap_or(1) })
    }
}
