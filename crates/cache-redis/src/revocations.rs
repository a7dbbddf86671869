//! Revocation markers: how one instance tells every other that a credential it may have cached
//! is no longer good.
//!
//! Each instance keeps the principals it verified in a short-lived in-process cache
//! (`app::principal_cache`). The database stays the source of truth; a marker only says "do
//! not trust what you cached for this, ask the database". The revoking use case writes it after
//! its transaction committed, one key per thing revoked, with a TTL ([`MARKER_TTL`]) longer than
//! any cache entry can live, so every entry cached before the revocation meets the marker before
//! it expires:
//!
//! - `prefix + "revoked:session:" + digest(session id)`: one session ended (logout);
//! - `prefix + "revoked:user:" + digest(tenant:user)`: every session of an account ended
//!   (password change, disable, `praxis sessions revoke`);
//! - `prefix + "revoked:apikey:" + digest(tenant:key id)`: one API key revoked.
//!
//! A request checks the markers of its cached principal with one `EXISTS` per key in the same
//! pipeline as its rate-limit script ([`ResilientLimiter::check_principal`]), so the check costs
//! no round trip of its own. One single-key command per marker (not one `EXISTS a b`) keeps every
//! command in one Redis Cluster slot without hash tags.

use crate::{Backend, CacheError, Decision, Limit, RedisStore, ResilientLimiter, keys, millis_ceil};
use kernel::{TenantId, UserId};
use std::time::Duration;

/// How long a marker lives: longer than the longest principal cache TTL the configuration
/// accepts (60 s), with room for a slow database lookup that began before the revocation
/// committed (its entry's lifetime counts from before the lookup).
pub const MARKER_TTL: Duration = Duration::from_secs(120);

/// Something a revocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// One session, by its id.
    Session(uuid::Uuid),
    /// Every session of an account.
    User { tenant: TenantId, user: UserId },
    /// One API key, by its public key id.
    ApiKey { tenant: TenantId, key_id: String },
}

/// Writes and checks revocation markers (see the module docs).
#[derive(Debug, Clone)]
pub struct RevocationMarkers {
    store: RedisStore,
}

impl RevocationMarkers {
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }

    /// The key of `revoked`'s marker.
    pub fn key_for(&self, revoked: &Revoked) -> String {
        let segment = match revoked {
            Revoked::Session(id) => format!("session:{}", keys::digest(&id.to_string())),
            Revoked::User { tenant, user } => format!("user:{}", keys::digest(&format!("{tenant}:{user}"))),
            Revoked::ApiKey { tenant, key_id } => format!("apikey:{}", keys::digest(&format!("{tenant}:{key_id}"))),
        };
        self.store.key(&format!("revoked:{segment}"))
    }

    /// Writes the markers of `revoked`, each for [`MARKER_TTL`], in one round trip. Call it
    /// after the revocation committed: a marker of a revocation that rolled back would only
    /// send requests to the database for a while, but a marker written before the commit could
    /// expire before a slow commit lands.
    pub async fn mark(&self, revoked: &[Revoked]) -> Result<(), CacheError> {
        if revoked.is_empty() {
            return Ok(());
        }
        let ttl_ms = millis_ceil(MARKER_TTL);
        let mut pipe = redis::pipe();
        for item in revoked {
            pipe.cmd("SET").arg(self.key_for(item)).arg(1).arg("PX").arg(ttl_ms).ignore();
        }
        self.store
            .with_connection(|mut conn| async move {
                let () = pipe.query_async(&mut conn).await?;
                Ok(())
            })
            .await
    }

    /// Whether any of `revoked` has a marker now, in a round trip of its own (tests and tools;
    /// the request path asks with [`ResilientLimiter::check_principal`]).
    pub async fn any_marked(&self, revoked: &[Revoked]) -> Result<bool, CacheError> {
        let commands = self.exists_commands(revoked);
        self.store
            .with_connection(|mut conn| async move {
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                let replies: Vec<i64> = pipe.query_async(&mut conn).await?;
                Ok(replies.iter().any(|exists| *exists > 0))
            })
            .await
    }

    fn exists_commands(&self, revoked: &[Revoked]) -> Vec<redis::Cmd> {
        revoked
            .iter()
            .map(|item| {
                let mut command = redis::cmd("EXISTS");
                command.arg(self.key_for(item));
                command
            })
            .collect()
    }
}

/// The answer of [`ResilientLimiter::check_principal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrincipalCheck {
    pub decision: Decision,
    pub backend: Backend,
    /// Whether any of the markers asked for is set: `None` when they could not be read (Redis
    /// unavailable, the fallback limiter decided, or a reply Redis refused). A caller must then
    /// treat its cached principal as unverified.
    pub revoked: Option<bool>,
}

impl ResilientLimiter {
    /// A per-principal rate-limit check and the revocation markers of `revoked`, in one Redis
    /// round trip. `markers` must use the same Redis as this limiter.
    pub async fn check_principal(
        &self,
        class_key: &str,
        subject: &str,
        limit: Limit,
        markers: &RevocationMarkers,
        revoked: &[Revoked],
    ) -> PrincipalCheck {
        let commands = markers.exists_commands(revoked);
        let (decision, backend, replies) = self.check_with(class_key, subject, limit, commands).await;
        let revoked = replies.and_then(|replies| {
            // Every reply must be readable: one refused `EXISTS` leaves the answer unknown.
            let flags: Option<Vec<bool>> =
                replies.into_iter().map(|reply| redis::from_redis_value::<i64>(reply).ok().map(|n| n > 0)).collect();
            flags.map(|flags| flags.into_iter().any(|set| set))
        });
        PrincipalCheck { decision, backend, revoked }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FallbackLimiter, RateLimiter};
    use std::sync::Arc;

    fn markers(redis: &testkit::TestRedis) -> (RevocationMarkers, ResilientLimiter) {
        let store = RedisStore::new(&redis.url, &redis.prefix, Duration::from_secs(2)).unwrap();
        let limiter = ResilientLimiter::new(
            RateLimiter::new(store.clone()),
            FallbackLimiter::new(Arc::new(kernel::SystemClock), 100),
        );
        (RevocationMarkers::new(store), limiter)
    }

    #[test]
    fn keys_are_distinct_per_kind_and_hide_the_ids() {
        let store = RedisStore::new("redis://127.0.0.1:1", "p:", Duration::from_secs(1)).unwrap();
        let markers = RevocationMarkers::new(store);
        let tenant = TenantId::new();
        let user = UserId::new();
        let session = uuid::Uuid::new_v4();
        let keys = [
            markers.key_for(&Revoked::Session(session)),
            markers.key_for(&Revoked::User { tenant, user }),
            markers.key_for(&Revoked::ApiKey { tenant, key_id: "abc".into() }),
        ];
        assert!(keys[0].starts_with("p:revoked:session:"));
        assert!(keys[1].starts_with("p:revoked:user:"));
        assert!(keys[2].starts_with("p:revoked:apikey:"));
        assert!(!keys[0].contains(&session.to_string()) && !keys[1].contains(&user.to_string()));
    }

    #[tokio::test]
    async fn a_marker_is_seen_in_the_rate_limit_round_trip_and_expires() {
        let redis = testkit::TestRedis::new();
        let (markers, limiter) = markers(&redis);
        let tenant = TenantId::new();
        let user = UserId::new();
        let session = uuid::Uuid::new_v4();
        let principal = [Revoked::Session(session), Revoked::User { tenant, user }];
        let limit = Limit::new(100, Duration::from_secs(60));

        let check = limiter.check_principal("user", "u", limit, &markers, &principal).await;
        assert_eq!(check.revoked, Some(false));
        assert_eq!(check.backend, Backend::Redis);
        assert_eq!(check.decision.remaining, 99);

        // Another session of the same account was ended: this one is not.
        markers.mark(&[Revoked::Session(uuid::Uuid::new_v4())]).await.unwrap();
        assert_eq!(limiter.check_principal("user", "u", limit, &markers, &principal).await.revoked, Some(false));

        markers.mark(&[Revoked::User { tenant, user }]).await.unwrap();
        let check = limiter.check_principal("user", "u", limit, &markers, &principal).await;
        assert_eq!(check.revoked, Some(true));
        assert_eq!(check.decision.remaining, 97, "the rate limit counted in the same round trip");
        assert!(markers.any_marked(&principal).await.unwrap());

        // The marker lives longer than any cache entry may, and not forever.
        let store = RedisStore::new(&redis.url, &redis.prefix, Duration::from_secs(2)).unwrap();
        let key = markers.key_for(&Revoked::User { tenant, user });
        let ttl_ms: i64 = store
            .with_connection(|mut conn| async move { Ok(redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?) })
            .await
            .unwrap();
        assert!(ttl_ms > 60_000 && ttl_ms <= 120_000, "{ttl_ms}");
    }

    #[tokio::test]
    async fn unreadable_markers_are_unknown_not_absent() {
        let store = RedisStore::new("redis://127.0.0.1:1", "p:", Duration::from_millis(300)).unwrap();
        let limiter = ResilientLimiter::new(
            RateLimiter::new(store.clone()),
            FallbackLimiter::new(Arc::new(kernel::SystemClock), 10),
        );
        let markers = RevocationMarkers::new(store);
        let check = limiter
            .check_principal(
                "user",
                "u",
                Limit::new(10, Duration::from_secs(60)),
                &markers,
                &[Revoked::Session(uuid::Uuid::new_v4())],
            )
            .await;
        assert_eq!(check.backend, Backend::Fallback);
        assert_eq!(check.revoked, None);
        assert!(check.decision.allowed);
        assert!(markers.mark(&[Revoked::Session(uuid::Uuid::new_v4())]).await.is_err());
    }
}
