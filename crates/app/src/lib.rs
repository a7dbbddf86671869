//! The use cases of Praxis: one function per thing a user, an operator or a worker does.
//!
//! Every door calls these: the HTTP routes (`apps/api/src/routes`), the `praxis` CLI, the
//! webhook ingest and the workers. A use case takes the [`Caller`] and plain inputs, checks the
//! caller's permission (writing `access.denied` when refused), opens the transaction with the
//! caller's row-level security context, does the work through the domain crates and the store,
//! writes its audit entry in that same transaction, and returns a domain result or an
//! [`Error`]. So the practice created by `praxis tenants create` and the account created by
//! `POST /api/v1/users` are validated, hashed and audited by the same code.
//!
//! Architecture invariant: no transport here. Nothing in this crate knows HTTP, actix, clap,
//! utoipa or figment; answers are domain values and [`Error`], which each door maps once
//! (`cargo xtask tidy` checks the dependency graph). Domain rules stay in the domain crates:
//! this layer orders the steps, it does not decide them.

mod access_log;
pub mod accounts;
pub mod appointments;
pub mod audit_sealing;
pub mod audit_trail;
pub mod calendar;
mod caller;
pub mod checkpoint_signer;
pub mod consents;
mod error;
pub mod group_commit;
pub mod keys;
pub mod kms_failure;
pub mod metrics;
pub mod patient_export;
pub mod patients;
pub mod practice_key;
pub mod principal;
pub mod principal_cache;
pub mod protection;
pub mod reminders;
pub mod sessions;
#[cfg(test)]
mod test_services;
pub mod webhook_ingest;

pub use caller::{Access, Caller};
pub use error::{Error, FieldProblem, Result};

use cache_redis::FailureCounter;
use crypto::{DekCache, Keyring};
use identity::{PasswordHasher, Permission, Scope, SessionPolicy};
use kernel::{Clock, SharedClock};
use protection::PracticeKeys;
use scheduling::{BookingPolicy, ReminderPolicy};
use sqlx::PgPool;
use std::sync::Arc;
use store_postgres::PgAuditLog;
use webhook_ingest::{IngestBatcher, WebhookIngest};

/// What the use cases work with. Cheap to clone; built once by the wiring (`apps/api`), or by a
/// CLI command for its own run.
#[derive(Clone)]
pub struct Services {
    db: PgPool,
    clock: Arc<dyn Clock>,
    hasher: Arc<PasswordHasher>,
    audit_log: PgAuditLog,
    login_failures: Option<FailureCounter>,
    login_limit: identity::Limit,
    session_policy: SessionPolicy,
    keyring: Arc<Keyring>,
    dek_cache: Arc<DekCache<SharedClock>>,
    practice_keys: Arc<PracticeKeys>,
    booking_policy: BookingPolicy,
    reminder_policy: ReminderPolicy,
    webhook_ingest: Option<WebhookIngest>,
    /// Verified webhook deliveries waiting for a shared transaction (group commit).
    webhook_batcher: Arc<IngestBatcher>,
    /// The audit entries of reads waiting for a shared commit (`access_log`).
    read_recorder: Arc<access_log::ReadRecorder>,
    /// Where revoking use cases announce what they ended (Redis); `None` in a process without
    /// Redis, whose revocations other instances then see within their cache TTL.
    revocation_markers: Option<cache_redis::RevocationMarkers>,
    /// The principal cache, limiter and markers of request authentication; a serving process's.
    request_authentication: Option<Arc<sessions::RequestAuthentication>>,
}

/// The parts [`Services`] is built from.
pub struct Dependencies {
    /// The runtime role's pool: row-level security applies to every query through it. (An
    /// operator command over every practice passes the owner role's pool instead.)
    pub db: PgPool,
    pub clock: Arc<dyn Clock>,
    /// argon2id with the configured cost.
    pub hasher: Arc<PasswordHasher>,
    /// The audit trail's reader, with the checkpoint signer (`checkpoint_signer`), on the same
    /// pool as `db`.
    pub audit_log: PgAuditLog,
    /// Failed-login counters (Redis). `None` in a process that serves no login (an operator
    /// command, which then needs no Redis); a login there is refused as with Redis down.
    pub login_failures: Option<FailureCounter>,
    /// Failed logins allowed per account and IP in a window before login is refused until the
    /// window ends.
    pub login_limit: identity::Limit,
    /// Idle and absolute session timeouts.
    pub session_policy: SessionPolicy,
    /// Wraps new data keys with the primary KEK, unwraps with any configured one.
    pub keyring: Arc<Keyring>,
    /// Unwrapped patient DEKs, bounded in count, age and uses; shared with the code of the doors
    /// that still unwraps on its own.
    pub dek_cache: Arc<DekCache<SharedClock>>,
    /// Unwrapped practice-wide keys (blind index).
    pub practice_keys: Arc<PracticeKeys>,
    /// The bounds on bookings (shortest, longest, how far ahead).
    pub booking_policy: BookingPolicy,
    /// Which reminders a booking plans.
    pub reminder_policy: ReminderPolicy,
    /// The webhook endpoints, their budgets and the Redis pieces of the ingest. `None` in a
    /// process that receives no webhooks (an operator command, which then needs no Redis): it
    /// has no webhook endpoint.
    pub webhook_ingest: Option<WebhookIngest>,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    pub fn new(dependencies: Dependencies) -> Self {
        let Dependencies {
            db,
            clock,
            hasher,
            audit_log,
            login_failures,
            login_limit,
            session_policy,
            keyring,
            dek_cache,
            practice_keys,
            booking_policy,
            reminder_policy,
            webhook_ingest,
        } = dependencies;
        let group_commit = webhook_ingest.as_ref().map(|ingest| ingest.group_commit).unwrap_or_default();
        Self {
            db,
            clock,
            hasher,
            audit_log,
            login_failures,
            login_limit,
            session_policy,
            keyring,
            dek_cache,
            practice_keys,
            booking_policy,
            reminder_policy,
            webhook_ingest,
            webhook_batcher: Arc::new(IngestBatcher::new(group_commit)),
            read_recorder: Arc::new(access_log::ReadRecorder::new(group_commit::GroupCommit::READS)),
            revocation_markers: None,
            request_authentication: None,
        }
    }

    /// The same services recording reads with these group-commit settings
    /// (`audit.read_group_commit`; the default otherwise).
    pub fn with_read_group_commit(mut self, settings: group_commit::GroupCommit) -> Self {
        self.read_recorder = Arc::new(access_log::ReadRecorder::new(settings));
        self
    }

    /// The same services announcing revocations with `markers` (the server and the operator
    /// commands that end access).
    pub fn with_revocation_markers(mut self, markers: cache_redis::RevocationMarkers) -> Self {
        self.revocation_markers = Some(markers);
        self
    }

    /// The same services authenticating requests with `authentication` (a serving process):
    /// its markers also become the ones revocations are announced with.
    pub fn with_request_authentication(mut self, authentication: sessions::RequestAuthentication) -> Self {
        self.revocation_markers = Some(authentication.markers.clone());
        self.request_authentication = Some(Arc::new(authentication));
        self
    }

    /// The same services with another DEK cache (a benchmark compares reads with and without
    /// one).
    pub fn with_dek_cache(mut self, dek_cache: Arc<DekCache<SharedClock>>) -> Self {
        self.dek_cache = dek_cache;
        self
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The caller's reach for `permission`; when it has none, records an `access.denied` entry
    /// (in its own transaction: nothing else happens) and refuses with [`Error::Forbidden`].
    pub async fn authorize(&self, caller: &Caller, permission: Permission, resource_type: &str) -> Result<Scope> {
        let scope = caller.scope(permission);
        if scope != Scope::Denied {
            return Ok(scope);
        }
        self.record_access_denied(caller, resource_type, serde_json::json!({ "permission": permission.as_str() }))
            .await?;
        Err(Error::Forbidden)
    }

    /// Refuses a caller whose "own" scope does not reach the record at hand (a therapist
    /// managing another therapist's calendar): records `access.denied` naming the scope (in its
    /// own transaction, like [`Services::authorize`]) and answers [`Error::Forbidden`], or the
    /// error that kept the entry from being written.
    pub(crate) async fn refuse_outside_own(
        &self,
        caller: &Caller,
        permission: Permission,
        resource_type: &str,
    ) -> Error {
        let detail = serde_json::json!({ "permission": permission.as_str(), "scope": "own" });
        match self.record_access_denied(caller, resource_type, detail).await {
            Ok(()) => Error::Forbidden,
            Err(error) => error,
        }
    }

    /// Writes one `access.denied` entry in a transaction of its own: a refusal changes nothing
    /// else, so there is no other transaction to share.
    async fn record_access_denied(
        &self,
        caller: &Caller,
        resource_type: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let event = caller
            .audit_event(audit::Action::AccessDenied, resource_type, self.clock())
            .with_outcome(audit::Outcome::Denied)
            .with_detail(detail);
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Hashes a password with the configured argon2id cost, off the async threads.
    async fn hash_password(&self, password: kernel::Secret<String>) -> Result<String> {
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || hasher.hash(password.expose_secret()))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)
    }
}
