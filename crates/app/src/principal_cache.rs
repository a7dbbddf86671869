//! The principals this instance verified against the database, kept for a few seconds so that a
//! request presenting the same session token or API key again is answered without a database
//! round trip.
//!
//! # What it may and may not do
//!
//! - An entry is keyed by the SHA-256 of the credential ([`identity::TokenHash`], compared in
//!   constant time), never the credential itself.
//! - It lives at most the configured TTL (at most 60 s, see the API's `auth` config), counted
//!   from *before* the database lookup that verified it, and never past the credential's own end
//!   (the session's idle and absolute deadlines, its next `last_seen_at` write, the key's
//!   expiry).
//! - It is trusted only together with the revocation markers (`cache_redis::RevocationMarkers`)
//!   that the same request reads in its rate-limit round trip; when they cannot be read, the
//!   database answers instead (`crate::sessions`).
//!
//! # Why a small map of our own
//!
//! Inserts happen only on a miss, which costs a database transaction anyway, and the request
//! path only reads. So a few mutex-guarded hash maps, picked by the first byte of the (uniformly
//! random) hash, are enough: a hit is one short lock and one lookup, and eviction (expired
//! entries first, then the entry closest to its end) may scan one shard on the rare insert into a
//! full one. A general cache crate (moka) would bring a dozen dependencies for admission and
//! frequency policies that a TTL of seconds does not need.

use crate::principal::VerifiedPrincipal;
use cache_redis::Revoked;
use identity::TokenHash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use time::OffsetDateTime;

/// Shards of the map: enough that two HTTP workers seldom wait on each other's lock.
const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    principal: Arc<VerifiedPrincipal>,
    verified_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

impl Entry {
    /// Live at `now`; a clock that went back before the verification counts as expired.
    fn is_live(&self, now: OffsetDateTime) -> bool {
        self.verified_at <= now && now < self.expires_at
    }
}

/// The bounded, short-lived map of verified principals (see the module docs).
#[derive(Debug)]
pub struct PrincipalCache {
    ttl: time::Duration,
    per_shard: usize,
    shards: Box<[Mutex<HashMap<TokenHash, Entry>>]>,
}

impl PrincipalCache {
    /// A cache keeping each entry at most `ttl`, about `capacity` entries in all. A zero `ttl`
    /// or `capacity` keeps nothing: every request asks the database.
    pub fn new(ttl: std::time::Duration, capacity: usize) -> Self {
        let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::ZERO);
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self { ttl, per_shard, shards }
    }

    /// Keeps nothing.
    pub fn disabled() -> Self {
        Self::new(std::time::Duration::ZERO, 0)
    }

    fn is_disabled(&self) -> bool {
        self.ttl <= time::Duration::ZERO || self.per_shard == 0
    }

    fn shard(&self, hash: &TokenHash) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Entry>> {
        let index = usize::from(hash.as_bytes()[0]) % SHARDS;
        // A panic while holding the lock leaves a map that is still consistent (every operation
        // is a single insert or remove).
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The principal verified for `hash`, if its entry is live at `now`.
    pub fn get(&self, hash: &TokenHash, now: OffsetDateTime) -> Option<Arc<VerifiedPrincipal>> {
        if self.is_disabled() {
            return None;
        }
        let mut shard = self.shard(hash);
        match shard.get(hash) {
            Some(entry) if entry.is_live(now) => Some(entry.principal.clone()),
            Some(_) => {
                shard.remove(hash);
                None
            }
            None => None,
        }
    }

    /// Remembers `principal`, verified by a lookup that began at `verified_at`, until the TTL
    /// has passed or `not_after`, whichever is first.
    pub fn insert(
        &self,
        hash: TokenHash,
        principal: VerifiedPrincipal,
        verified_at: OffsetDateTime,
        not_after: Option<OffsetDateTime>,
    ) {
        if self.is_disabled() {
            return;
        }
        let by_ttl = verified_at + self.ttl;
        let expires_at = not_after.map_or(by_ttl, |end| end.min(by_ttl));
        if expires_at <= verified_at {
            return;
        }
        let mut shard = self.shard(&hash);
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            shard.retain(|_, entry| entry.is_live(verified_at));
            if shard.len() >= self.per_shard
                && let Some(soonest) = shard.iter().min_by_key(|(_, entry)| entry.expires_at).map(|(key, _)| *key)
            {
                shard.remove(&soonest);
            }
        }
        shard.insert(hash, Entry { principal: Arc::new(principal), verified_at, expires_at });
    }

    /// Forgets the entry of `hash`.
    pub fn remove(&self, hash: &TokenHash) {
        self.shard(hash).remove(hash);
    }

    /// Forgets every entry that one of `revoked` ends: the revoking instance does not wait for
    /// its own marker.
    pub fn forget(&self, revoked: &[Revoked]) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|_, entry| !entry.principal.revoked_by().iter().any(|item| revoked.contains(item)));
        }
    }

    /// Entries held, live or not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{ApiKeyIdentity, SessionIdentity};
    use kernel::{Role, TenantId, UserId};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-03-01 08:00 UTC);

    fn session() -> VerifiedPrincipal {
        VerifiedPrincipal::Session(SessionIdentity {
            session: uuid::Uuid::new_v4(),
            tenant: TenantId::new(),
            user: UserId::new(),
            role: Role::Therapist,
        })
    }

    fn secs(n: u64) -> std::time::Duration {
        std::time::Duration::from_secs(n)
    }

    #[test]
    fn an_entry_lives_its_ttl_and_not_past_the_credentials_end() {
        let cache = PrincipalCache::new(secs(10), 100);
        let hash = TokenHash::of("prx_s_one");
        let principal = session();
        cache.insert(hash, principal.clone(), T0, None);
        assert_eq!(cache.get(&hash, T0).as_deref(), Some(&principal));
        assert!(cache.get(&hash, T0 + time::Duration::seconds(9)).is_some());
        assert!(cache.get(&hash, T0 + time::Duration::seconds(10)).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped when met");

        // The session ends in 3 s: so does its entry.
        cache.insert(hash, principal.clone(), T0, Some(T0 + time::Duration::seconds(3)));
        assert!(cache.get(&hash, T0 + time::Duration::seconds(2)).is_some());
        assert!(cache.get(&hash, T0 + time::Duration::seconds(3)).is_none());
        // Already over: not kept at all.
        cache.insert(hash, principal, T0, Some(T0));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_clock_that_steps_back_does_not_stretch_an_entry() {
        let cache = PrincipalCache::new(secs(10), 100);
        let hash = TokenHash::of("prx_s_one");
        cache.insert(hash, session(), T0, None);
        assert!(cache.get(&hash, T0 - time::Duration::seconds(1)).is_none());
    }

    #[test]
    fn only_the_exact_hash_finds_an_entry() {
        let cache = PrincipalCache::new(secs(10), 100);
        cache.insert(TokenHash::of("prx_s_one"), session(), T0, None);
        assert!(cache.get(&TokenHash::of("prx_s_one "), T0).is_none());
        assert!(cache.get(&TokenHash::of("prx_s_two"), T0).is_none());
    }

    #[test]
    fn size_is_bounded_and_the_soonest_to_end_goes_first() {
        let cache = PrincipalCache::new(secs(30), SHARDS);
        // Two hashes in the same shard (one entry per shard at this capacity).
        let mut same_shard = (0..).map(|i| TokenHash::of(&format!("prx_s_{i}")));
        let first = same_shard.next().unwrap();
        let second = same_shard.find(|hash| hash.as_bytes()[0] % 16 == first.as_bytes()[0] % 16).unwrap();
        cache.insert(first, session(), T0, Some(T0 + time::Duration::seconds(5)));
        cache.insert(second, session(), T0, None);
        assert!(cache.get(&first, T0).is_none(), "the entry closest to its end was evicted");
        assert!(cache.get(&second, T0).is_some());
        for i in 0..1_000 {
            cache.insert(TokenHash::of(&format!("prx_s_many_{i}")), session(), T0, None);
        }
        assert!(cache.len() <= SHARDS);
    }

    #[test]
    fn forget_drops_what_a_revocation_ends() {
        let cache = PrincipalCache::new(secs(30), 100);
        let VerifiedPrincipal::Session(alice) = session() else { unreachable!() };
        let other_session_of_alice = SessionIdentity { session: uuid::Uuid::new_v4(), ..alice.clone() };
        let bob = session();
        cache.insert(TokenHash::of("a1"), VerifiedPrincipal::Session(alice.clone()), T0, None);
        cache.insert(TokenHash::of("a2"), VerifiedPrincipal::Session(other_session_of_alice), T0, None);
        cache.insert(TokenHash::of("b"), bob, T0, None);
        let key = VerifiedPrincipal::ApiKey(ApiKeyIdentity {
            tenant: alice.tenant,
            key_id: "0123456789ab".into(),
            scopes: Vec::new(),
        });
        cache.insert(TokenHash::of("k"), key, T0, None);

        cache.forget(&[Revoked::Session(alice.session)]);
        assert!(cache.get(&TokenHash::of("a1"), T0).is_none());
        assert!(cache.get(&TokenHash::of("a2"), T0).is_some());
        cache.forget(&[Revoked::User { tenant: alice.tenant, user: alice.user }]);
        assert!(cache.get(&TokenHash::of("a2"), T0).is_none());
        assert!(cache.get(&TokenHash::of("b"), T0).is_some());
        cache.forget(&[Revoked::ApiKey { tenant: alice.tenant, key_id: "0123456789ab".into() }]);
        assert!(cache.get(&TokenHash::of("k"), T0).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let cache = PrincipalCache::disabled();
        cache.insert(TokenHash::of("prx_s_one"), session(), T0, None);
        assert!(cache.get(&TokenHash::of("prx_s_one"), T0).is_none());
    }
}
