//! Webhook idempotency claims.
//!
//! Providers deliver at least once, so the same event may arrive twice, even concurrently on two
//! instances. Before handling an event the app claims `(provider, event id)`:
//!
//! - The claim is one `SET key token NX PX ttl`. Redis decides which of several concurrent
//!   callers creates the key; exactly one gets [`Claim::Claimed`]. A `GET` followed by a `SET`
//!   would let two callers both see "absent" and both process the event.
//! - When the handler fails, the app calls [`IdempotencyClaims::release`] so the provider's retry is
//!   processed instead of being dropped as a duplicate.
//! - Release is compare-and-delete: the claim's value is a random token only the claimant knows,
//!   and a script deletes the key only if it still holds that token. A plain `DEL` could delete
//!   someone else's claim: if a handler outlives the TTL, the claim expires, a retry claims the
//!   event anew, and the slow handler's `DEL` would remove the *new* claim, letting a third
//!   delivery run concurrently with the second. The token is per claim, not per process, so that
//!   holds even when both claims are made by the same instance.
//!
//! A claim lives only in Redis: a flush, failover without persistence or eviction under
//! `maxmemory` forgets it. Effects that must never happen twice also need a durable guard (a
//! unique constraint on the provider's event id in Postgres); the claim keeps duplicate work
//! cheap and concurrent deliveries apart.

use crate::{CacheError, RedisStore, keys, millis_ceil};
use std::time::Duration;

/// KEYS[1]: the claim. ARGV[1]: the token. Deletes the claim only if it holds the token.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Proof of a claim: the random value stored in it, needed to release it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimToken(String);

impl ClaimToken {
    fn random() -> Self {
        // 122 random bits from the OS generator: unguessable and unique per claim.
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the event: process it, and release it if processing fails.
    Claimed(ClaimToken),
    /// Someone else claimed it within the TTL: acknowledge the delivery without processing it.
    Duplicate,
}

impl Claim {
    pub fn is_claimed(&self) -> bool {
        matches!(self, Self::Claimed(_))
    }
}

/// Idempotency claims for inbound webhook events.
#[derive(Clone)]
pub struct IdempotencyClaims {
    store: RedisStore,
    release_script: redis::Script,
}

impl std::fmt::Debug for IdempotencyClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyClaims").field("store", &self.store).finish_non_exhaustive()
    }
}

impl IdempotencyClaims {
    pub fn new(store: RedisStore) -> Self {
        Self { store, release_script: redis::Script::new(RELEASE_SCRIPT) }
    }

    /// `prefix + "idem:" + escape(provider) + ":" + digest(event_id)`: event ids come from the
    /// request body, so they are hashed.
    pub fn key_for(&self, provider: &str, event_id: &str) -> String {
        self.store.key(&format!("idem:{}:{}", keys::escape(provider), keys::digest(event_id)))
    }

    /// Claims `(provider, event_id)` for `ttl` (rounded up to whole milliseconds).
    /// Choose `ttl` longer than the provider's retry horizon, or longer than the handler may run
    /// at the least.
    pub async fn claim(&self, provider: &str, event_id: &str, ttl: Duration) -> Result<Claim, CacheError> {
        let (command, token) = self.claim_command(provider, event_id, ttl);
        let reply: Option<String> =
            self.store.with_connection(|mut conn| async move { Ok(command.query_async(&mut conn).await?) }).await?;
        Ok(Self::claim_from_reply(reply, token))
    }

    /// The `SET key token NX PX ttl` of a claim and its token, for sending in a pipeline
    /// (`ResilientLimiter::check_and_claim`).
    pub(crate) fn claim_command(&self, provider: &str, event_id: &str, ttl: Duration) -> (redis::Cmd, ClaimToken) {
        let token = ClaimToken::random();
        let mut command = redis::cmd("SET");
        command.arg(self.key_for(provider, event_id)).arg(token.as_str()).arg("NX").arg("PX").arg(millis_ceil(ttl));
        (command, token)
    }

    /// `SET ... NX` answers OK when it set the key, nil when the key existed.
    pub(crate) fn claim_from_reply(reply: Option<String>, token: ClaimToken) -> Claim {
        if reply.is_some() { Claim::Claimed(token) } else { Claim::Duplicate }
    }

    /// Releases a claim so the event can be claimed again, if and only if it is still held by
    /// `token`. Returns whether it was released (false: it had expired, or someone else holds it).
    pub async fn release(&self, provider: &str, event_id: &str, token: &ClaimToken) -> Result<bool, CacheError> {
        let key = self.key_for(provider, event_id);
        let script = &self.release_script;
        let deleted: i64 = self
            .store
            .with_connection(|mut conn| async move {
                Ok(script.key(&key).arg(token.as_str()).invoke_async(&mut conn).await?)
            })
            .await?;
        Ok(deleted == 1)
    }
}
