//! A cache of unwrapped DEKs, so that reading a patient's record does not cost one KMS call per
//! field (each call is a network round trip and, with AWS, a billed and rate-limited request).

use crate::keys::{DataKey, DekRef};
use kernel::{Clock, PatientId, TenantId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use time::{Duration, OffsetDateTime};

/// Limits of the DEK cache. Each bounds how long, and for how much work, a plaintext DEK stays in
/// memory after a single KMS unwrap: a smaller window shrinks what a memory disclosure reveals and
/// how long a revoked KMS grant keeps working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DekCacheConfig {
    /// Most keys held; beyond it the least recently used is evicted. 0 disables caching.
    pub capacity: usize,
    /// Age after which an entry is dropped and the KMS is asked again.
    pub max_age: Duration,
    /// Lookups one entry may serve before it is dropped and the KMS is asked again.
    pub max_uses: u64,
}

impl Default for DekCacheConfig {
    /// 1024 keys, 5 minutes, 10 000 uses.
    fn default() -> Self {
        Self { capacity: 1024, max_age: Duration::minutes(5), max_uses: 10_000 }
    }
}

/// What a cached key is found by: the tenant and the DEK reference from the ciphertext header.
/// The tenant is part of the key so that one practice can never be served another's DEK, even if
/// patient ids collided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DekCacheKey {
    pub tenant: TenantId,
    pub dek: DekRef,
}

impl DekCacheKey {
    pub const fn new(tenant: TenantId, dek: DekRef) -> Self {
        Self { tenant, dek }
    }
}

/// Counters, e.g. for a benchmark to count KMS calls (every miss is one unwrap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DekCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped for age, uses or capacity (not explicit removals).
    pub evictions: u64,
}

struct Entry {
    key: Arc<DataKey>,
    inserted_at: OffsetDateTime,
    uses: u64,
    /// Logical time of the last access, for LRU eviction.
    last_used: u64,
}

struct Inner {
    entries: HashMap<DekCacheKey, Entry>,
    tick: u64,
}

/// A bounded cache of plaintext DEKs with maximum age, maximum uses and LRU eviction.
///
/// Keys are held as `Arc<DataKey>`: `DataKey` is not `Clone`, so the cache and its callers share
/// one copy of the bytes, which `DataKey`'s `Drop` zeroizes when the last `Arc` goes. Evicting an
/// entry therefore zeroizes the key as soon as no in-flight request still holds it; callers should
/// hold the `Arc` only for the duration of one request.
///
/// Erasure (crypto-shredding) must call `remove_patient`, or a destroyed DEK could still serve
/// decryptions from this cache until it ages out. Each process has its own cache; in a cluster,
/// `max_age` bounds how long other processes may still hold it.
///
/// Concurrent misses for the same key each unwrap (no single-flight); the last insert wins.
/// Eviction scans all entries (O(capacity)), which is fine for the intended few thousand keys.
pub struct DekCache<C: Clock> {
    clock: C,
    config: DekCacheConfig,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl<C: Clock> DekCache<C> {
    pub fn new(clock: C, config: DekCacheConfig) -> Self {
        Self {
            clock,
            config,
            inner: Mutex::new(Inner { entries: HashMap::new(), tick: 0 }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached key, if present, younger than `max_age` and used fewer than `max_uses` times.
    /// An entry past either limit is dropped and counts as a miss.
    pub fn get(&self, key: &DekCacheKey) -> Option<Arc<DataKey>> {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let stale = inner.entries.get(key).map(|entry| self.is_stale(entry, now));
        let found = match stale {
            None => None,
            Some(true) => {
                inner.entries.remove(key);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(false) => inner.entries.get_mut(key).map(|entry| {
                entry.uses += 1;
                entry.last_used = tick;
                Arc::clone(&entry.key)
            }),
        };
        drop(inner);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether an entry may no longer be served. A clock that moved backwards also counts as
    /// stale: when in doubt, ask the KMS again.
    fn is_stale(&self, entry: &Entry, now: OffsetDateTime) -> bool {
        let age = now - entry.inserted_at;
        age >= self.config.max_age || age < Duration::ZERO || entry.uses >= self.config.max_uses
    }

    /// Stores a freshly unwrapped key and returns the shared handle. Evicts the least recently
    /// used entry when full. With capacity 0 nothing is stored.
    pub fn insert(&self, key: DekCacheKey, dek: DataKey) -> Arc<DataKey> {
        let dek = Arc::new(dek);
        if self.config.capacity == 0 {
            return dek;
        }
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.entries.contains_key(&key) && inner.entries.len() >= self.config.capacity {
            let oldest = inner.entries.iter().min_by_key(|(_, entry)| entry.last_used).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                inner.entries.remove(&oldest);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let entry = Entry { key: Arc::clone(&dek), inserted_at: now, uses: 0, last_used: tick };
        inner.entries.insert(key, entry);
        dek
    }

    /// The cached key, or the result of `load` (typically: read the wrapped DEK row, then
    /// `KeyManagement::unwrap`) inserted and returned. Errors from `load` are returned as they are
    /// and nothing is cached.
    pub async fn get_or_try_insert_with<F, Fut, E>(&self, key: DekCacheKey, load: F) -> Result<Arc<DataKey>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<DataKey, E>>,
    {
        if let Some(found) = self.get(&key) {
            return Ok(found);
        }
        let dek = load().await?;
        Ok(self.insert(key, dek))
    }

    /// Drops one key. Returns whether it was cached.
    pub fn remove(&self, key: &DekCacheKey) -> bool {
        self.lock().entries.remove(key).is_some()
    }

    /// Drops every generation of a patient's DEK: call on erasure and on DEK rotation.
    pub fn remove_patient(&self, tenant: TenantId, patient: PatientId) {
        self.lock().entries.retain(|k, _| !(k.tenant == tenant && k.dek.patient == patient));
    }

    /// Drops everything (e.g. on KMS grant revocation or shutdown).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> DekCacheStats {
        DekCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    pub fn config(&self) -> DekCacheConfig {
        self.config
    }
}

impl<C: Clock> fmt::Debug for DekCache<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DekCache")
            .field("config", &self.config)
            .field("len", &self.len())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KmsError;
    use crate::keys::KeyContext;
    use crate::kms::KeyManagement;
    use crate::test_kms::InMemoryKms;
    use crate::test_support::block_on;
    use kernel::FixedClock;
    use time::macros::datetime;

    fn cache(config: DekCacheConfig) -> (FixedClock, DekCache<FixedClock>) {
        let clock = FixedClock::at(datetime!(2026-01-01 00:00 UTC));
        (clock.clone(), DekCache::new(clock, config))
    }

    fn key() -> DekCacheKey {
        DekCacheKey::new(TenantId::new(), DekRef::new(PatientId::new(), 1))
    }

    fn config(capacity: usize, max_age_secs: i64, max_uses: u64) -> DekCacheConfig {
        DekCacheConfig { capacity, max_age: Duration::seconds(max_age_secs), max_uses }
    }

    #[test]
    fn hit_returns_the_same_key_and_counts() {
        let (_, cache) = cache(DekCacheConfig::default());
        let k = key();
        assert!(cache.get(&k).is_none());
        let inserted = cache.insert(k, DataKey::generate().unwrap());
        let hit = cache.get(&k).unwrap();
        assert!(Arc::ptr_eq(&inserted, &hit));
        assert_eq!(cache.stats(), DekCacheStats { hits: 1, misses: 1, evictions: 0 });
    }

    #[test]
    fn entries_expire_at_max_age() {
        let (clock, cache) = cache(config(10, 60, 1000));
        let k = key();
        cache.insert(k, DataKey::generate().unwrap());
        clock.advance(Duration::seconds(59));
        assert!(cache.get(&k).is_some());
        clock.advance(Duration::seconds(1));
        assert!(cache.get(&k).is_none());
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.stats().evictions, 1);
    }

    #[test]
    fn a_clock_moving_backwards_expires_entries() {
        let (clock, cache) = cache(config(10, 60, 1000));
        let k = key();
        cache.insert(k, DataKey::generate().unwrap());
        clock.advance(Duration::seconds(-1));
        assert!(cache.get(&k).is_none());
    }

    #[test]
    fn entries_serve_at_most_max_uses_lookups() {
        let (_, cache) = cache(config(10, 60, 3));
        let k = key();
        cache.insert(k, DataKey::generate().unwrap());
        for _ in 0..3 {
            assert!(cache.get(&k).is_some());
        }
        assert!(cache.get(&k).is_none());
        assert_eq!(cache.stats(), DekCacheStats { hits: 3, misses: 1, evictions: 1 });
    }

    #[test]
    fn capacity_evicts_the_least_recently_used() {
        let (_, cache) = cache(config(2, 60, 1000));
        let (a, b, c) = (key(), key(), key());
        cache.insert(a, DataKey::generate().unwrap());
        cache.insert(b, DataKey::generate().unwrap());
        assert!(cache.get(&a).is_some()); // b is now least recently used
        cache.insert(c, DataKey::generate().unwrap());
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&b).is_none());
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&c).is_some());
        // Re-inserting an existing key does not evict anyone.
        cache.insert(a, DataKey::generate().unwrap());
        assert!(cache.get(&c).is_some());
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let (_, cache) = cache(config(0, 60, 1000));
        let k = key();
        cache.insert(k, DataKey::generate().unwrap());
        assert!(cache.is_empty());
        assert!(cache.get(&k).is_none());
    }

    #[test]
    fn evicted_keys_are_released_once_callers_drop_them() {
        let (_, cache) = cache(config(1, 60, 1000));
        let k = key();
        let held = cache.insert(k, DataKey::generate().unwrap());
        assert_eq!(Arc::strong_count(&held), 2);
        cache.insert(key(), DataKey::generate().unwrap());
        // The cache let go; the only copy left is the caller's, zeroized when it drops.
        assert_eq!(Arc::strong_count(&held), 1);
    }

    #[test]
    fn erasure_removes_every_generation_of_a_patient_only() {
        let (_, cache) = cache(DekCacheConfig::default());
        let tenant = TenantId::new();
        let patient = PatientId::new();
        let g1 = DekCacheKey::new(tenant, DekRef::new(patient, 1));
        let g2 = DekCacheKey::new(tenant, DekRef::new(patient, 2));
        let other = DekCacheKey::new(tenant, DekRef::new(PatientId::new(), 1));
        for k in [g1, g2, other] {
            cache.insert(k, DataKey::generate().unwrap());
        }
        cache.remove_patient(tenant, patient);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&other).is_some());
        assert!(cache.remove(&other));
        assert!(!cache.remove(&other));
    }

    #[test]
    fn tenants_do_not_share_entries() {
        let (_, cache) = cache(DekCacheConfig::default());
        let dek = DekRef::new(PatientId::new(), 1);
        cache.insert(DekCacheKey::new(TenantId::new(), dek), DataKey::generate().unwrap());
        assert!(cache.get(&DekCacheKey::new(TenantId::new(), dek)).is_none());
    }

    #[test]
    fn get_or_try_insert_with_calls_the_kms_once_per_miss() {
        block_on(async {
            let kms = InMemoryKms::new("k").unwrap();
            let (_, cache) = cache(config(10, 60, 1000));
            let tenant = TenantId::new();
            let patient = PatientId::new();
            let ctx = KeyContext::patient_data(tenant, patient);
            let (_, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
            let k = DekCacheKey::new(tenant, DekRef::new(patient, 1));
            for _ in 0..5 {
                cache.get_or_try_insert_with(k, || kms.unwrap(&wrapped, &ctx)).await.unwrap();
            }
            assert_eq!(kms.unwrap_calls(), 1);
            assert_eq!(cache.stats(), DekCacheStats { hits: 4, misses: 1, evictions: 0 });

            // A failed load caches nothing and passes the error through.
            kms.set_unavailable(true);
            let other = DekCacheKey::new(tenant, DekRef::new(patient, 2));
            let err: KmsError = cache.get_or_try_insert_with(other, || kms.unwrap(&wrapped, &ctx)).await.unwrap_err();
            assert!(err.is_retryable());
            assert_eq!(cache.len(), 1);
        });
    }
}
