//! `check` latency and throughput: the shared Redis limiter next to the in-process fallback.
//!
//! Needs `PRAXIS_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6379`); without it only the in-process
//! limiter runs. Keys use a fresh prefix and expire on their own within seconds.

// A bench whose set-up fails should stop loudly; the note about a missing Redis goes to stderr.
#![allow(clippy::expect_used, clippy::print_stderr)]

use cache_redis::{FallbackLimiter, Limit, RateLimiter, RedisStore};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kernel::SystemClock;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const SUBJECTS: usize = 1_000;
/// Generous enough that every check takes the "allowed" path (which writes).
const LIMIT: Limit = Limit::new(1_000_000, Duration::from_secs(3_600));

fn subjects() -> Vec<String> {
    (0..SUBJECTS).map(|i| format!("10.0.{}.{}", i / 256, i % 256)).collect()
}

fn bench_check(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let subjects = subjects();
    let next = AtomicUsize::new(0);
    let pick = || &subjects[next.fetch_add(1, Ordering::Relaxed) % SUBJECTS];

    let fallback = FallbackLimiter::new(Arc::new(SystemClock), FallbackLimiter::DEFAULT_MAX_SUBJECTS);
    let redis = std::env::var("PRAXIS_TEST_REDIS_URL").ok().map(|url| {
        let prefix = format!("praxis-bench:{}:", uuid::Uuid::new_v4().simple());
        let store = RedisStore::new(&url, &prefix, Duration::from_secs(2)).expect("redis store");
        runtime.block_on(store.ping()).expect("redis reachable");
        Arc::new(RateLimiter::new(store))
    });
    if redis.is_none() {
        eprintln!("PRAXIS_TEST_REDIS_URL is not set: benchmarking the in-process limiter only");
    }

    // One check at a time: latency.
    let mut group = c.benchmark_group("check");
    group.throughput(Throughput::Elements(1));
    group.bench_function("in_process", |b| b.iter(|| black_box(fallback.check("global", pick(), LIMIT))));
    if let Some(redis) = &redis {
        group.bench_function("redis", |b| {
            b.iter(|| runtime.block_on(async { black_box(redis.check("global", pick(), LIMIT).await.expect("check")) }))
        });
    }
    group.finish();

    // Many checks in flight: throughput when requests overlap (the pool allows 32 connections).
    const IN_FLIGHT: usize = 32;
    let mut group = c.benchmark_group("check_concurrent");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    let fallback = Arc::new(fallback);
    group.bench_function(BenchmarkId::new("in_process", IN_FLIGHT), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..IN_FLIGHT)
                    .map(|i| {
                        let fallback = Arc::clone(&fallback);
                        let subject = subjects[i].clone();
                        tokio::spawn(async move { fallback.check("global", &subject, LIMIT) })
                    })
                    .collect();
                for task in tasks {
                    black_box(task.await.expect("task"));
                }
            })
        })
    });
    if let Some(redis) = &redis {
        group.bench_function(BenchmarkId::new("redis", IN_FLIGHT), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..IN_FLIGHT)
                        .map(|i| {
                            let redis = Arc::clone(redis);
                            let subject = subjects[i].clone();
                            tokio::spawn(async move { redis.check("global", &subject, LIMIT).await })
                        })
                        .collect();
                    for task in tasks {
                        black_box(task.await.expect("task").expect("check"));
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = bench_check
}
criterion_main!(benches);
