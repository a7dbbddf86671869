//! KMS calls per 1,000 reads of 100 hot patients, DEK cache on and off, side by side.
//!
//! Each read is what the patient read path does with a field ciphertext: parse its header for the
//! DEK reference, `DekCache::get_or_try_insert_with` (on a miss: take the wrapped DEK, standing
//! in for the `patient_keys` row, and `KeyManagement::unwrap` it under the patient's context),
//! then `decrypt_field`. The KMS is the real local adapter (a key file, AES-256-GCM in process)
//! behind a wrapper that counts calls; "cache off" is the same code with a cache of capacity 0.
//! The 1,000 reads are drawn uniformly over the 100 patients from a fixed-seed generator, so
//! every run reads the same sequence.
//!
//! A second pair of runs adds a simulated round trip to every KMS call (an in-region AWS KMS
//! `Decrypt` typically takes a few milliseconds): with the local KMS the unwrap costs
//! microseconds, which hides what a miss costs against a real one.
//!
//! Run with `cargo bench -p api --bench dek_cache` (no services needed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark program

use async_trait::async_trait;
use crypto::{
    Aad, DataKey, DekCache, DekCacheConfig, DekCacheKey, DekRef, FieldHeader, KekInfo, KeyContext, KeyManagement,
    KmsError, WrappedDataKey, decrypt_field, encrypt_field,
};
use kernel::{PatientId, SystemClock, TenantId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PATIENTS: usize = 100;
const READS: usize = 1_000;
const SIMULATED_ROUND_TRIP: Duration = Duration::from_millis(2);

/// A `KeyManagement` that counts the calls reaching the adapter inside it, and optionally waits
/// a simulated network round trip before each.
struct CountingKms {
    inner: Arc<dyn KeyManagement>,
    calls: AtomicU64,
    round_trip: Option<Duration>,
}

impl CountingKms {
    async fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(round_trip) = self.round_trip {
            tokio::time::sleep(round_trip).await;
        }
    }
}

#[async_trait]
impl KeyManagement for CountingKms {
    async fn wrap(&self, key: &DataKey, ctx: &KeyContext) -> Result<WrappedDataKey, KmsError> {
        self.call().await;
        self.inner.wrap(key, ctx).await
    }

    async fn unwrap(&self, wrapped: &WrappedDataKey, ctx: &KeyContext) -> Result<DataKey, KmsError> {
        self.call().await;
        self.inner.unwrap(wrapped, ctx).await
    }

    fn key_info(&self) -> KekInfo {
        self.inner.key_info()
    }

    async fn health_check(&self) -> Result<(), KmsError> {
        self.inner.health_check().await
    }
}

/// One patient's stored state: the wrapped DEK (the `patient_keys` row) and one encrypted field
/// (the `patients.notes` column of the patient's row).
struct Patient {
    id: PatientId,
    wrapped: WrappedDataKey,
    notes: Vec<u8>,
}

/// xorshift64*: a fixed, dependency-free sequence of patient indexes.
struct Draws(u64);

impl Iterator for Draws {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        Some((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % PATIENTS)
    }
}

struct Outcome {
    kms_calls: u64,
    per_read: Duration,
    p99: Duration,
}

async fn read_all(tenant: TenantId, patients: &[Patient], kms: &CountingKms, cache: &DekCache<SystemClock>) -> Outcome {
    let before = kms.calls.load(Ordering::Relaxed);
    let mut latencies = Vec::with_capacity(READS);
    let started = Instant::now();
    for index in Draws(0x9E37_79B9_7F4A_7C15).take(READS) {
        let read_started = Instant::now();
        let patient = &patients[index];
        // As the read path: the header names the DEK, the cache or the KMS supplies it.
        let dek_ref = FieldHeader::parse(&patient.notes).unwrap().dek();
        let dek = cache
            .get_or_try_insert_with(DekCacheKey::new(tenant, dek_ref), || async {
                kms.unwrap(&patient.wrapped, &KeyContext::patient_data(tenant, dek_ref.patient)).await
            })
            .await
            .unwrap();
        let aad = Aad::new(tenant, "patients", "notes", *patient.id.as_uuid());
        let plaintext = decrypt_field(&dek, &aad, &patient.notes).unwrap();
        assert_eq!(plaintext.len(), 256);
        latencies.push(read_started.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Outcome {
        kms_calls: kms.calls.load(Ordering::Relaxed) - before,
        per_read: elapsed / READS as u32,
        p99: latencies[READS * 99 / 100],
    }
}

fn cache(enabled: bool) -> DekCache<SystemClock> {
    let config =
        if enabled { DekCacheConfig::default() } else { DekCacheConfig { capacity: 0, ..DekCacheConfig::default() } };
    DekCache::new(SystemClock, config)
}

fn show(label: &str, outcome: &Outcome) {
    println!(
        "  {label:<26} {:>9} {:>14.1} µs {:>12.1} µs",
        outcome.kms_calls,
        outcome.per_read.as_secs_f64() * 1e6,
        outcome.p99.as_secs_f64() * 1e6
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let local =
        kms_local::LocalKms::open_or_create(&kms_local::LocalKmsConfig::new(dir.path().join("bench.key"))).unwrap();
    let tenant = TenantId::new();

    // 100 patients, each with a DEK wrapped by the local KMS and one 256-byte field under it.
    let setup = CountingKms { inner: Arc::new(local), calls: AtomicU64::new(0), round_trip: None };
    let mut patients = Vec::with_capacity(PATIENTS);
    for _ in 0..PATIENTS {
        let id = PatientId::new();
        let (dek, wrapped) = setup.generate_data_key(&KeyContext::patient_data(tenant, id)).await.unwrap();
        let header = FieldHeader::for_wrapped(DekRef::new(id, 1), &wrapped).unwrap();
        let notes =
            encrypt_field(&dek, &header, &Aad::new(tenant, "patients", "notes", *id.as_uuid()), &[7u8; 256]).unwrap();
        patients.push(Patient { id, wrapped, notes });
    }

    println!("DEK cache: {READS} reads drawn uniformly over {PATIENTS} patients (one field each, 256 bytes)");
    println!("  {:<26} {:>9} {:>17} {:>15}", "", "KMS calls", "time per read", "p99 per read");
    for (title, round_trip) in [
        ("local KMS (key file, in process)", None),
        ("local KMS + simulated 2 ms round trip per KMS call", Some(SIMULATED_ROUND_TRIP)),
    ] {
        println!("{title}:");
        let kms = CountingKms { inner: setup.inner.clone(), calls: AtomicU64::new(0), round_trip };
        let off = read_all(tenant, &patients, &kms, &cache(false)).await;
        show("cache off (capacity 0)", &off);
        let on_cache = cache(true);
        let on = read_all(tenant, &patients, &kms, &on_cache).await;
        show("cache on (crypto defaults)", &on);
        let stats = on_cache.stats();
        // Every miss is exactly one unwrap: the counter and the cache agree.
        assert_eq!(stats.misses, on.kms_calls);
        assert_eq!(off.kms_calls, READS as u64);
    }
}
