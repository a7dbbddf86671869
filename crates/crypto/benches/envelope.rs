//! Envelope encryption versus raw ring AES-256-GCM, on the same data, in one run.
//!
//! `praxis/*` goes through the public API (`encrypt_field` / `decrypt_field`): key schedule per
//! call, random nonce, header and AAD encoding, output allocation, usage counter, zeroized
//! plaintext buffer. `ring/*` is the floor: a prebuilt `LessSafeKey`, a random nonce, and
//! `seal_in_place_append_tag` / `open_in_place` on a fresh copy of the input. The ratio of the
//! two is the overhead of the envelope layer (KMS calls excluded: see `DekCache`).

// Benchmark code: a failure should abort the run loudly.
#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crypto::{Aad, DataKey, DekRef, FieldHeader, decrypt_field, encrypt_field};
use kernel::{PatientId, TenantId};
use ring::aead::{AES_256_GCM, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::hint::black_box;
use uuid::Uuid;

const SIZES: [(usize, &str); 3] = [(32, "32B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

struct Fixture {
    dek: DataKey,
    header: FieldHeader,
    tenant: TenantId,
    row: Uuid,
    raw_key: LessSafeKey,
    raw_aad: Vec<u8>,
    rng: SystemRandom,
}

fn fixture() -> Fixture {
    let dek = DataKey::generate().unwrap();
    let raw_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, dek.expose_secret()).unwrap());
    let header = FieldHeader::new(
        "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "",
        DekRef::new(PatientId::new(), 1),
    )
    .unwrap();
    // The raw baseline authenticates an AAD of about the same size as ours.
    let raw_aad = vec![0x5A; 16 + 8 + 8 + 16 + 8 + 16];
    Fixture { dek, header, tenant: TenantId::new(), row: Uuid::now_v7(), raw_key, raw_aad, rng: SystemRandom::new() }
}

fn raw_seal(f: &Fixture, plaintext: &[u8]) -> ([u8; 12], Vec<u8>) {
    let mut nonce = [0u8; 12];
    f.rng.fill(&mut nonce).unwrap();
    let mut buf = Vec::with_capacity(plaintext.len() + 16);
    buf.extend_from_slice(plaintext);
    f.raw_key
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), ring::aead::Aad::from(&f.raw_aad), &mut buf)
        .unwrap();
    (nonce, buf)
}

fn encrypt(c: &mut Criterion) {
    let f = fixture();
    let aad = Aad::new(f.tenant, "patients", "notes", f.row);
    let mut group = c.benchmark_group("encrypt");
    for (size, label) in SIZES {
        let plaintext = vec![0xA5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("praxis", label), &plaintext, |b, p| {
            b.iter(|| encrypt_field(&f.dek, &f.header, &aad, black_box(p)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("ring", label), &plaintext, |b, p| {
            b.iter(|| raw_seal(&f, black_box(p)))
        });
    }
    group.finish();
}

fn decrypt(c: &mut Criterion) {
    let f = fixture();
    let aad = Aad::new(f.tenant, "patients", "notes", f.row);
    let mut group = c.benchmark_group("decrypt");
    for (size, label) in SIZES {
        let plaintext = vec![0xA5u8; size];
        let ours = encrypt_field(&f.dek, &f.header, &aad, &plaintext).unwrap();
        let (nonce, raw) = raw_seal(&f, &plaintext);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("praxis", label), &ours, |b, ct| {
            b.iter(|| decrypt_field(&f.dek, &aad, black_box(ct)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("ring", label), &raw, |b, ct| {
            b.iter(|| {
                let mut buf = black_box(ct).clone();
                let len = f
                    .raw_key
                    .open_in_place(Nonce::assume_unique_for_key(nonce), ring::aead::Aad::from(&f.raw_aad), &mut buf)
                    .unwrap()
                    .len();
                buf.truncate(len);
                buf
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encrypt, decrypt);
criterion_main!(benches);
