use crate::config::Config;
use app::checkpoint_signer::KmsCheckpointSigner;
use cache_redis::{
    FailureCounter, FallbackLimiter, IpBlockList, RateLimiter, RedisStore, ResilientLimiter, RevocationMarkers,
};
use crypto::{DekCache, DekCacheConfig, Keyring};
use identity::{Cidr, PasswordHasher};
use kernel::{Clock, SharedClock};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use store_postgres::PgAuditLog;

/// Everything a handler may use. Cheap to clone; shared by every worker.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The use cases (`crates/app`): handlers parse, call one of these, and map the result.
    pub app: app::Services,
    /// Pool of the runtime role: row-level security applies to every query through it.
    pub db: PgPool,
    pub redis: RedisStore,
    pub clock: Arc<dyn Clock>,
    pub audit: PgAuditLog,
    /// argon2id with the configured cost; hashing runs on blocking threads.
    pub hasher: Arc<PasswordHasher>,
    pub trusted_proxies: Arc<Vec<Cidr>>,
    /// Redis GCRA limiter with an in-process fallback for when Redis is unreachable.
    pub limiter: Arc<ResilientLimiter>,
    pub blocklist: IpBlockList,
    /// Wraps new data keys with the primary KEK, unwraps with any configured one
    /// (`kms.backend` + `kms.previous`); every call is traced (`crate::kms::AuditedKms`).
    pub kms: Arc<Keyring>,
    /// Unwrapped DEKs, bounded in count, age and uses (crypto's defaults).
    pub dek_cache: Arc<DekCache<SharedClock>>,
    /// Unwrapped practice-wide keys (blind index), see `app::protection`.
    pub practice_keys: Arc<app::protection::PracticeKeys>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("redis", &self.redis).finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds pools without connecting, and the keyring (`praxis serve` and the tests). The AWS
    /// KMS client can only be built asynchronously, hence this async builder.
    pub async fn build(config: Arc<Config>, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let kms = crate::kms::build(&config.kms).await?;
        Self::with_keyring(config, clock, kms.keyring)
    }

    /// Like [`AppState::build`], without an async runtime: only a local `kms.backend` (and
    /// local `kms.previous` entries) can be built this way.
    pub fn from_config(config: Arc<Config>, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let kms = crate::kms::build_sync(&config.kms)?;
        Self::with_keyring(config, clock, kms.keyring)
    }

    /// This state with a DEK cache configured as `config`, shared by the handlers and the use
    /// cases (the benchmark that compares reads with and without the cache).
    pub fn with_dek_cache(mut self, config: DekCacheConfig) -> Self {
        self.dek_cache = Arc::new(DekCache::new(SharedClock(self.clock.clone()), config));
        self.app = self.app.with_dek_cache(self.dek_cache.clone());
        self
    }

    /// Builds pools without connecting: readiness tells whether the dependencies answer.
    pub fn with_keyring(config: Arc<Config>, clock: Arc<dyn Clock>, kms: Arc<Keyring>) -> anyhow::Result<Self> {
        let database_url =
            config.database.url.as_ref().ok_or_else(|| anyhow::anyhow!("database.url: required secret is missing"))?;
        let pool_options = config.database.pool_options();
        let db = store_postgres::connect_lazy(database_url.expose_secret(), &pool_options)?;
        let redis = config.redis.store(Duration::from_millis(config.redis.timeout_ms))?;
        let hasher =
            PasswordHasher::new(config.auth.argon2()).map_err(|e| anyhow::anyhow!("auth.argon2_memory_kib: {e}"))?;
        let limiter = ResilientLimiter::new(
            RateLimiter::new(redis.clone()),
            FallbackLimiter::new(clock.clone(), FallbackLimiter::DEFAULT_MAX_SUBJECTS),
        );
        let hasher = Arc::new(hasher);
        // Checkpoints are signed, and verified, with each practice's KMS-wrapped key.
        let audit = PgAuditLog::new(db.clone()).with_signer(Arc::new(KmsCheckpointSigner::new(
            db.clone(),
            kms.clone(),
            clock.clone(),
        )));
        let dek_cache = Arc::new(DekCache::new(SharedClock(clock.clone()), DekCacheConfig::default()));
        let practice_keys = Arc::new(app::protection::PracticeKeys::default());
        let limiter = Arc::new(limiter);
        let blocklist = IpBlockList::new(redis.clone());
        // The webhook ingest shares the limiter and block list with the request guard.
        let webhook_ingest = app::webhook_ingest::WebhookIngest {
            endpoints: Arc::new(config.webhooks.endpoints()),
            budgets: config.webhooks.budgets(),
            rejection_audits_per_ip: config.webhooks.rejection_audits_per_ip(),
            payment_events: crate::config::webhooks::payment_events(config.environment),
            limiter: limiter.clone(),
            blocklist: blocklist.clone(),
            claims: cache_redis::IdempotencyClaims::new(redis.clone()),
            group_commit: config.webhooks.group_commit(),
        };
        Ok(Self {
            app: app::Services::new(app::Dependencies {
                db: db.clone(),
                clock: clock.clone(),
                hasher: hasher.clone(),
                audit_log: audit.clone(),
                login_failures: Some(FailureCounter::new(redis.clone())),
                login_limit: config.rate_limits.login_limit(),
                session_policy: config.auth.session_policy(),
                keyring: kms.clone(),
                dek_cache: dek_cache.clone(),
                practice_keys: practice_keys.clone(),
                booking_policy: config
                    .appointments
                    .booking_policy()
                    .map_err(|e| anyhow::anyhow!("appointments: {e}"))?,
                reminder_policy: config.reminders.policy().map_err(|e| anyhow::anyhow!("reminders: {e}"))?,
                webhook_ingest: Some(webhook_ingest),
            })
            .with_read_group_commit(config.audit.read_group_commit())
            .with_request_authentication(app::sessions::RequestAuthentication {
                limiter: limiter.clone(),
                markers: RevocationMarkers::new(redis.clone()),
                cache: config.auth.principal_cache(),
                per_principal_limit: cache_redis::Limit::new(
                    config.rate_limits.user_per_minute,
                    Duration::from_secs(60),
                ),
            }),
            audit,
            hasher,
            trusted_proxies: Arc::new(config.auth.trusted_proxy_cidrs()),
            limiter,
            blocklist,
            dek_cache,
            practice_keys,
            kms,
            config,
            db,
            redis,
            clock,
        })
    }
}
