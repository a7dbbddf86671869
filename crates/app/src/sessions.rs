//! Signing in and out, and who a request comes from: login with a practice id, an email and a
//! password; logout; and, on every request, the authentication of a session token or an API key.
//!
//! Login gives one answer for every way it can fail ([`Error::Unauthenticated`]): an unknown
//! practice, an unknown email, a wrong password and a disabled account look the same and cost the
//! same (an unknown or disabled account is verified against a dummy hash), so the answer does not
//! tell which accounts exist. Failures are counted in Redis: per account and IP for the login
//! limit (once reached, an attempt is refused before argon2 runs), and per account and per IP for
//! the `security.suspicious_activity` rule (`audit::FailedLoginPolicy`). Without the counters
//! login fails closed.

use crate::{Caller, Error, Result, Services};
use audit::{Action, AuditEvent, FailedLoginPolicy, Outcome, SuspicionSubject};
use identity::{ApiKeyToken, ApiScope, CsrfToken, SessionToken};
use kernel::{Actor, RequestId, Role, Secret, TenantId, UserId};
use serde_json::json;
use std::net::IpAddr;
use store_postgres::identity as accounts;
use store_postgres::{AuditStoreError, DbContext};
use time::OffsetDateTime;

/// Longest accepted login email, in bytes.
pub const LOGIN_EMAIL_MAX_BYTES: usize = 254;
/// Longest accepted password, in bytes: bounds the argon2 work an attacker can demand.
pub const PASSWORD_MAX_BYTES: usize = 1024;

/// A login attempt as a door receives it.
#[derive(Debug)]
pub struct LoginAttempt {
    pub practice: TenantId,
    pub email: String,
    pub password: Secret<String>,
    /// Where the attempt came from: counted by the login limit and the suspicious-activity rule.
    pub client_ip: IpAddr,
    /// Stamped on the audit entries the attempt writes (there is no caller yet to carry it).
    pub request_id: Option<RequestId>,
}

/// A new session. Its token is here only: the store keeps its SHA-256.
#[derive(Debug)]
pub struct SignedIn {
    pub session: uuid::Uuid,
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
    /// The session token, presented as a cookie or `Authorization: Bearer`.
    pub token: Secret<String>,
    /// The CSRF token that cookie-authenticated writes echo.
    pub csrf_token: Secret<String>,
    /// The absolute timeout's deadline.
    pub expires_at: OffsetDateTime,
    /// The most a session lives (the absolute timeout), for the cookies' lifetime.
    pub lifetime: time::Duration,
}

/// A live session, found by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    pub session: uuid::Uuid,
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
}

/// A live API key, found by its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyIdentity {
    pub tenant: TenantId,
    /// The key's public id, recorded as the actor of what it does.
    pub key_id: String,
    /// Its scopes that this version knows; an unknown stored scope grants nothing.
    pub scopes: Vec<ApiScope>,
}

/// Why a login attempt failed, as its `auth.login_failed` entry records it.
#[derive(Debug, Clone, Copy)]
enum LoginFailure {
    /// Refused by the login limit before the password was checked.
    RateLimited,
    InvalidCredentials,
}

impl LoginFailure {
    fn as_str(self) -> &'static str {
        match self {
            LoginFailure::RateLimited => "rate_limited",
            LoginFailure::InvalidCredentials => "invalid_credentials",
        }
    }
}

/// A validated login attempt, what its failures are recorded with.
struct Attempt {
    tenant: TenantId,
    email: String,
    client_ip: IpAddr,
    request_id: Option<RequestId>,
}

impl Services {
    /// Signs in: checks the login limit, verifies the password (an unknown or disabled account
    /// against a dummy hash, so it costs the same), then creates the session with its CSRF
    /// token and records `auth.login` in the same transaction. Every failure is recorded as
    /// `auth.login_failed` (and, past the threshold, `security.suspicious_activity`) and answered
    /// [`Error::Unauthenticated`]; a refusal by the limit is [`Error::RateLimited`].
    pub async fn login(&self, attempt: LoginAttempt) -> Result<SignedIn> {
        let LoginAttempt { practice: tenant, email, password, client_ip, request_id } = attempt;
        let email = email.trim().to_lowercase();
        if email.is_empty() || email.len() > LOGIN_EMAIL_MAX_BYTES || !email.contains('@') {
            return Err(Error::invalid("email", "must be an email address of at most 254 characters"));
        }
        if password.expose_secret().is_empty() || password.expose_secret().len() > PASSWORD_MAX_BYTES {
            return Err(Error::invalid("password", "must be 1 to 1024 bytes"));
        }
        let attempt = Attempt { tenant, email, client_ip, request_id };
        let account_key = identity::login_limit_key(&format!("{tenant}:{}", attempt.email), client_ip);

        // Refuse before verifying: the attempt after the limit never reaches argon2.
        let status = self.login_failures()?.status(&account_key).await.map_err(counters_unavailable)?;
        let candidate = accounts::find_login_candidate(&self.db, tenant, &attempt.email).await?;
        let known_user = candidate.as_ref().map(|c| c.user);
        if status.count >= u64::from(self.login_limit.max) {
            telemetry::metrics::record_rate_limit_refusal("login");
            self.record_failed_login(&attempt, known_user, LoginFailure::RateLimited).await?;
            let retry_after_secs =
                status.reset_after.map(|d| d.as_secs().max(1)).unwrap_or(self.login_limit.window.as_secs());
            return Err(Error::RateLimited { retry_after_secs });
        }

        let hasher = self.hasher.clone();
        let stored_hash = candidate.as_ref().filter(|c| !c.disabled).map(|c| c.password_hash.clone());
        // argon2 is CPU-bound: off the async threads.
        let verified = tokio::task::spawn_blocking(move || match stored_hash {
            Some(hash) => hasher.verify(password.expose_secret(), &hash).unwrap_or(false),
            None => {
                hasher.dummy_verify(password.expose_secret());
                false
            }
        })
        .await
        .map_err(Error::internal)?;

        let Some(user) = candidate.filter(|_| verified) else {
            let failures = self
                .login_failures()?
                .record_failure(&account_key, self.login_limit.window)
                .await
                .map_err(counters_unavailable)?;
            if failures == u64::from(self.login_limit.max) {
                telemetry::metrics::record_login_lockout();
            }
            self.record_failed_login(&attempt, known_user, LoginFailure::InvalidCredentials).await?;
            return Err(Error::Unauthenticated);
        };
        self.start_session(tenant, user.user, user.role, attempt.request_id).await
    }

    /// Creates a session of an account whose password was just verified, with its CSRF token,
    /// recorded as `auth.login` (the account's own doing).
    async fn start_session(
        &self,
        tenant: TenantId,
        user: UserId,
        role: Role,
        request_id: Option<RequestId>,
    ) -> Result<SignedIn> {
        let caller = Caller::account(tenant, user, role).with_request_id(request_id);
        let now = self.clock.now();
        let rng = ring::rand::SystemRandom::new();
        let token = SessionToken::generate(caller.tenant, &rng).map_err(Error::internal)?;
        let csrf = CsrfToken::generate(&rng).map_err(Error::internal)?;
        let lifetime = self.session_policy.absolute_timeout;
        let session = accounts::NewSession {
            id: uuid::Uuid::now_v7(),
            tenant: caller.tenant,
            user,
            role,
            token_hash: *token.hash().as_bytes(),
            created_at: now,
            expires_at: now + lifetime,
        };
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        accounts::insert_session(&mut tx, &session).await?;
        accounts::record_login(&mut tx, user, now).await?;
        let event =
            caller.audit_event(Action::AuthLogin, "session", self.clock()).with_resource_id(session.id.to_string());
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(SignedIn {
            session: session.id,
            tenant: caller.tenant,
            user,
            role,
            token: Secret::new(token.expose().to_owned()),
            csrf_token: Secret::new(csrf.expose().to_owned()),
            expires_at: session.expires_at,
            lifetime,
        })
    }

    /// Records a failed attempt, whether the password was wrong or the login limit refused it:
    /// an `auth.login_failed` entry, and on the failure that crosses the threshold of
    /// `audit::FailedLoginPolicy` for one account or one IP, one `security.suspicious_activity`
    /// entry (the account when known and over the threshold, else the IP), not one per attempt.
    async fn record_failed_login(&self, attempt: &Attempt, user: Option<UserId>, failure: LoginFailure) -> Result<()> {
        let Attempt { tenant, email, client_ip, request_id } = attempt;
        telemetry::metrics::record_login_failure(failure.as_str());
        let policy = FailedLoginPolicy::default();
        let window = std::time::Duration::try_from(policy.window).unwrap_or(std::time::Duration::from_secs(300));
        let by_account = self
            .login_failures()?
            .record_failure(&format!("suspicious:account:{tenant}:{email}"), window)
            .await
            .map_err(counters_unavailable)?;
        let by_ip = self
            .login_failures()?
            .record_failure(&format!("suspicious:ip:{tenant}:{client_ip}"), window)
            .await
            .map_err(counters_unavailable)?;

        let system = Actor::System { component: "login".into() };
        let mut failed = AuditEvent::new(*tenant, system, Action::AuthLoginFailed, "session", self.clock())
            .with_outcome(Outcome::Failure)
            .with_detail(json!({ "reason": failure.as_str() }));
        if let Some(user) = user {
            failed = failed.with_resource_id(user.to_string());
        }
        let mut events = vec![failed];
        let subject = match (policy.on_failed_login(by_account), user, policy.on_failed_login(by_ip)) {
            (true, Some(user), _) => Some((SuspicionSubject::Account(user), by_account)),
            (true, None, _) => Some((SuspicionSubject::SourceIp(*client_ip), by_account)),
            (false, _, true) => Some((SuspicionSubject::SourceIp(*client_ip), by_ip)),
            (false, _, false) => None,
        };
        let suspicious = subject.as_ref().map(|(subject, _)| crate::metrics::suspicion_kind(subject));
        if let Some((subject, count)) = subject {
            events.push(AuditEvent::suspicious_activity(*tenant, subject, &policy, count, self.clock()));
        }
        let mut tx = store_postgres::begin(&self.db, &DbContext::tenant(*tenant)).await?;
        for event in events {
            let event = match request_id {
                Some(id) => event.with_request_id(id.clone()),
                None => event,
            };
            match store_postgres::audit::append(&mut tx, event).await {
                Ok(_) => {}
                // A practice that does not exist has no chain: there is nowhere to record it. Any
                // other audit failure fails the attempt, as every audit failure does.
                Err(AuditStoreError::UnknownTenant(_)) => return Ok(()),
                Err(other) => return Err(other.into()),
            }
        }
        tx.commit().await?;
        if let Some(subject) = suspicious {
            telemetry::metrics::record_suspicious_activity(subject);
        }
        Ok(())
    }

    /// Ends the session `session` of the caller (the one its request authenticated with),
    /// recorded as `auth.logout`.
    pub async fn logout(&self, caller: &Caller, session: uuid::Uuid) -> Result<()> {
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        accounts::revoke_session(&mut tx, session, self.clock.now()).await?;
        let event =
            caller.audit_event(Action::AuthLogout, "session", self.clock()).with_resource_id(session.to_string());
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session a session token names: not revoked, neither idle nor past its absolute
    /// timeout. Records the use (`last_seen_at`) at most once per touch interval. Any other
    /// token is [`Error::Unauthenticated`]. The lookup sees only the row with the token's hash.
    pub async fn authenticate_session(&self, token: &str) -> Result<SessionIdentity> {
        let token = SessionToken::parse(token).map_err(|_| Error::Unauthenticated)?;
        let session = accounts::find_session(&self.db, token.tenant(), *token.hash().as_bytes())
            .await?
            .ok_or(Error::Unauthenticated)?;
        let now = self.clock.now();
        if session.revoked_at.is_some()
            || !self.session_policy.session_state(session.created_at, session.last_seen_at, now).is_active()
        {
            return Err(Error::Unauthenticated);
        }
        if self.session_policy.should_touch(session.last_seen_at, now) {
            let context = DbContext::user(session.tenant, session.user, session.role);
            let mut tx = store_postgres::begin(&self.db, &context).await?;
            accounts::touch_session(&mut tx, session.id, now).await?;
            tx.commit().await?;
        }
        Ok(SessionIdentity { session: session.id, tenant: session.tenant, user: session.user, role: session.role })
    }

    /// The live API key `key` is: neither revoked nor expired. Records its use
    /// (`last_used_at`). Any other key is [`Error::Unauthenticated`]. The lookup sees only the
    /// row with the key's hash.
    pub async fn authenticate_api_key(&self, key: &str) -> Result<ApiKeyIdentity> {
        let token = ApiKeyToken::parse(key.trim()).map_err(|_| Error::Unauthenticated)?;
        let now = self.clock.now();
        let key = accounts::find_and_touch_api_key(&self.db, token.tenant(), *token.hash().as_bytes(), now)
            .await?
            .ok_or(Error::Unauthenticated)?;
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= now) {
            return Err(Error::Unauthenticated);
        }
        let scopes = key.scopes.iter().filter_map(|s| s.parse::<ApiScope>().ok()).collect();
        Ok(ApiKeyIdentity { tenant: key.tenant, key_id: key.key_id, scopes })
    }
}

/// Without its failure counters login cannot tell an attacker from a user: it fails closed.
impl Services {
    /// The failed-login counters; a process built without them (an operator command) refuses
    /// logins as it would with Redis down: closed.
    fn login_failures(&self) -> Result<&cache_redis::FailureCounter> {
        self.login_failures
            .as_ref()
            .ok_or_else(|| Error::Unavailable("Login is temporarily unavailable; try again shortly.".into()))
    }
}

fn counters_unavailable(error: cache_redis::CacheError) -> Error {
    tracing::warn!(error = %error, "login refused: failure counters unavailable (fail closed)");
    Error::Unavailable("Login is temporarily unavailable; try again shortly.".into())
}
