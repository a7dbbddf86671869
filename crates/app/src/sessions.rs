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

use crate::principal::{ApiKeyIdentity, SessionIdentity, VerifiedPrincipal};
use crate::principal_cache::PrincipalCache;
use crate::{Caller, Error, Result, Services};
use audit::{Action, AuditEvent, FailedLoginPolicy, Outcome, SuspicionSubject};
use cache_redis::{Limit, PrincipalCheck, ResilientLimiter, RevocationMarkers, Revoked};
use identity::{ApiKeyToken, ApiScope, CsrfToken, SessionToken, TokenHash};
use kernel::{Actor, RequestId, Role, Secret, TenantId, UserId};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
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
    /// recorded as `auth.logout`; then tells every instance to stop trusting it
    /// ([`Services::announce_revocation`]).
    pub async fn logout(&self, caller: &Caller, session: uuid::Uuid) -> Result<()> {
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        accounts::revoke_session(&mut tx, session, self.clock.now()).await?;
        let event =
            caller.audit_event(Action::AuthLogout, "session", self.clock()).with_resource_id(session.to_string());
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        self.announce_revocation(&[Revoked::Session(session)]).await;
        Ok(())
    }

    /// Who a request comes from, and whether it is within its per-principal rate limit.
    ///
    /// A credential this instance verified a moment ago is answered from the principal cache,
    /// after the revocation markers of its session, account or key were read in the same Redis
    /// round trip as the rate limit; a marker, or markers that cannot be read (Redis down), send
    /// the request to the database as a cache miss does. So a request does at most one Redis
    /// round trip here, a cached one no database round trip, and a revocation is seen by the next
    /// request on every instance (docs/architecture.md, "Authentication cache and revocation").
    ///
    /// Refuses an unknown, revoked or expired credential with [`Error::Unauthenticated`] (its
    /// request counts against no principal's limit) and a principal over its limit with
    /// [`Error::RateLimited`].
    pub async fn authenticate_request(&self, credential: Credential<'_>) -> Result<VerifiedPrincipal> {
        let authentication = self.request_authentication.as_deref().ok_or_else(|| {
            Error::internal(anyhow::anyhow!("request authentication is not configured in this process"))
        })?;
        let credential = PresentedCredential::parse(credential)?;
        let hash = credential.hash();
        // Taken before any lookup: an entry's lifetime counts from before the database answered,
        // so it cannot outlive a revocation marker written after that answer (MARKER_TTL).
        let now = self.clock.now();
        if let Some(cached) = authentication.cache.get(&hash, now).filter(|cached| credential.is_kind_of(cached)) {
            let check = authentication.check(&cached).await;
            refuse_over_limit(&check)?;
            if check.revoked == Some(false) {
                return Ok(VerifiedPrincipal::clone(&cached));
            }
            // Revoked on some instance, or the markers are unreadable: the database answers.
            authentication.cache.remove(&hash);
            return self.verify_in_database(&credential, now).await.map(|(principal, _)| principal);
        }
        let (principal, not_after) = self.verify_in_database(&credential, now).await?;
        let check = authentication.check(&principal).await;
        refuse_over_limit(&check)?;
        // Cached only when the markers were read and none is set: a principal with a fresh
        // revocation marker (a new session after a password change) goes to the database until
        // the marker expires, which also covers a lookup that raced the revocation.
        if check.revoked == Some(false) {
            authentication.cache.insert(hash, principal.clone(), now, not_after);
        }
        Ok(principal)
    }

    /// The database's answer for a credential, and the latest moment a cache may keep it.
    async fn verify_in_database(
        &self,
        credential: &PresentedCredential,
        now: OffsetDateTime,
    ) -> Result<(VerifiedPrincipal, Option<OffsetDateTime>)> {
        match credential {
            PresentedCredential::Session(token) => {
                let (session, not_after) = self.live_session(token, now).await?;
                Ok((VerifiedPrincipal::Session(session), Some(not_after)))
            }
            PresentedCredential::ApiKey(token) => {
                let (key, not_after) = self.live_api_key(token, now).await?;
                Ok((VerifiedPrincipal::ApiKey(key), not_after))
            }
        }
    }

    /// The live session a session token names: not revoked, neither idle nor past its absolute
    /// timeout, and when a cache must let go of it: at its idle or absolute deadline, or when
    /// its next `last_seen_at` write is due, whichever is first (so a cached session is still
    /// touched once per touch interval while in use). Records the use at most once per touch
    /// interval. Any other token is [`Error::Unauthenticated`]. The lookup sees only the row
    /// with the token's hash.
    async fn live_session(
        &self,
        token: &SessionToken,
        now: OffsetDateTime,
    ) -> Result<(SessionIdentity, OffsetDateTime)> {
        let session = accounts::find_session(&self.db, token.tenant(), *token.hash().as_bytes())
            .await?
            .ok_or(Error::Unauthenticated)?;
        if session.revoked_at.is_some()
            || !self.session_policy.session_state(session.created_at, session.last_seen_at, now).is_active()
        {
            return Err(Error::Unauthenticated);
        }
        let mut last_seen_at = session.last_seen_at;
        if self.session_policy.should_touch(session.last_seen_at, now) {
            let context = DbContext::user(session.tenant, session.user, session.role);
            let mut tx = store_postgres::begin(&self.db, &context).await?;
            accounts::touch_session(&mut tx, session.id, now).await?;
            tx.commit().await?;
            last_seen_at = now;
        }
        let not_after = self
            .session_policy
            .expires_at(session.created_at, last_seen_at)
            .min(last_seen_at + self.session_policy.touch_interval);
        let identity =
            SessionIdentity { session: session.id, tenant: session.tenant, user: session.user, role: session.role };
        Ok((identity, not_after))
    }

    /// The live API key a token is: neither revoked nor expired, and its expiry, if any. Records
    /// its use (`last_used_at`; with the principal cache, as of the last lookup, so to within the
    /// cache TTL). Any other key is [`Error::Unauthenticated`]. The lookup sees only the row with
    /// the key's hash.
    async fn live_api_key(
        &self,
        token: &ApiKeyToken,
        now: OffsetDateTime,
    ) -> Result<(ApiKeyIdentity, Option<OffsetDateTime>)> {
        let key = accounts::find_and_touch_api_key(&self.db, token.tenant(), *token.hash().as_bytes(), now)
            .await?
            .ok_or(Error::Unauthenticated)?;
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= now) {
            return Err(Error::Unauthenticated);
        }
        let scopes = key.scopes.iter().filter_map(|s| s.parse::<ApiScope>().ok()).collect();
        Ok((ApiKeyIdentity { tenant: key.tenant, key_id: key.key_id, scopes }, key.expires_at))
    }

    /// Tells every instance that `revoked` ended, after the revoking transaction committed: this
    /// instance forgets its cached principals at once, and the markers in Redis make every
    /// other instance ask the database on its next request.
    ///
    /// The revocation has happened (the database says so) whatever this returns. When the
    /// markers cannot be written, the error is logged, and an instance that cached the principal
    /// and still reads Redis may accept it until its entry expires: at most the principal cache
    /// TTL (`auth.principal_cache_ttl_ms`, at most 60 s). An instance that cannot read Redis does
    /// not trust its cache at all.
    /// Returns whether the markers were written.
    pub(crate) async fn announce_revocation(&self, revoked: &[Revoked]) -> bool {
        if let Some(authentication) = &self.request_authentication {
            authentication.cache.forget(revoked);
        }
        let Some(markers) = &self.revocation_markers else {
            return false;
        };
        match markers.mark(revoked).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(
                    %error,
                    "revocation committed, but its markers could not be written: other instances may \
                     accept the credential until their cached entry expires (auth.principal_cache_ttl_ms)"
                );
                false
            }
        }
    }
}

/// The longest principal cache TTL a deployment may configure: revocation markers live twice as
/// long ([`cache_redis::MARKER_TTL`]).
pub const PRINCIPAL_CACHE_TTL_MAX: std::time::Duration = std::time::Duration::from_secs(60);

// A marker must outlive every entry cached before its revocation, with room for the lookup
// that verified the entry: checked when building, not left to a comment.
const _: () = assert!(cache_redis::MARKER_TTL.as_secs() >= 2 * PRINCIPAL_CACHE_TTL_MAX.as_secs());

/// A credential as a door read it from a request.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A session token (`Authorization: Bearer` or the session cookie).
    Session(&'a str),
    /// An API key (`X-Api-Key`).
    ApiKey(&'a str),
}

/// A credential of the right shape, with its hash.
enum PresentedCredential {
    Session(SessionToken),
    ApiKey(ApiKeyToken),
}

impl PresentedCredential {
    fn parse(credential: Credential<'_>) -> Result<Self> {
        match credential {
            Credential::Session(token) => {
                SessionToken::parse(token).map(Self::Session).map_err(|_| Error::Unauthenticated)
            }
            Credential::ApiKey(key) => {
                ApiKeyToken::parse(key.trim()).map(Self::ApiKey).map_err(|_| Error::Unauthenticated)
            }
        }
    }

    fn hash(&self) -> TokenHash {
        match self {
            PresentedCredential::Session(token) => token.hash(),
            PresentedCredential::ApiKey(token) => token.hash(),
        }
    }

    /// Whether `principal` was verified from a credential of this kind (a session token's hash
    /// can never be an API key's, but the cache does not rely on it).
    fn is_kind_of(&self, principal: &VerifiedPrincipal) -> bool {
        matches!(
            (self, principal),
            (PresentedCredential::Session(_), VerifiedPrincipal::Session(_))
                | (PresentedCredential::ApiKey(_), VerifiedPrincipal::ApiKey(_))
        )
    }
}

/// What authenticating a request needs besides the database: the shared rate limiter and the
/// revocation markers (one Redis), this instance's principal cache, and the per-principal
/// limit. Only a serving process has it (`Services::with_request_authentication`).
#[derive(Debug)]
pub struct RequestAuthentication {
    pub limiter: Arc<ResilientLimiter>,
    pub markers: RevocationMarkers,
    pub cache: PrincipalCache,
    /// Requests per principal (a user, an API key), shared by every instance.
    pub per_principal_limit: Limit,
}

impl RequestAuthentication {
    /// The principal's rate limit and revocation markers, in one round trip.
    async fn check(&self, principal: &VerifiedPrincipal) -> PrincipalCheck {
        let subject = match principal {
            VerifiedPrincipal::Session(session) => format!("user:{}", session.user),
            VerifiedPrincipal::ApiKey(key) => format!("key:{}:{}", key.tenant, key.key_id),
        };
        self.limiter
            .check_principal("user", &subject, self.per_principal_limit, &self.markers, &principal.revoked_by())
            .await
    }
}

fn refuse_over_limit(check: &PrincipalCheck) -> Result<()> {
    if check.decision.allowed {
        Ok(())
    } else {
        telemetry::metrics::record_rate_limit_refusal("user");
        Err(Error::RateLimited { retry_after_secs: check.decision.retry_after_secs().unwrap_or(1) })
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
