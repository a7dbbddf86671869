//! What only a Redis Cluster shows: keys spread over several primaries, and a failover. The rest
//! of this suite runs against a cluster too, in `cargo xtask test`'s scaled-out run.

use cache_redis::{Backend, FallbackLimiter, IpBlockList, Limit, RateLimiter, RedisStore, ResilientLimiter};
use kernel::SystemClock;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `(host:port of the primary, host:port of its replicas)` for each slot range, from any node.
async fn slot_owners(seed: &str) -> Vec<(u16, u16, String, Vec<String>)> {
    let client = redis::Client::open(seed).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.unwrap();
    ranges
        .into_iter()
        .map(|range| {
            let fields: Vec<redis::Value> = redis::from_redis_value(range).unwrap();
            let node = |value: &redis::Value| {
                let parts: Vec<redis::Value> = redis::from_redis_value(value.clone()).unwrap();
                let host: String = redis::from_redis_value(parts[0].clone()).unwrap();
                let port: u16 = redis::from_redis_value(parts[1].clone()).unwrap();
                format!("{host}:{port}")
            };
            let start: u16 = redis::from_redis_value(fields[0].clone()).unwrap();
            let end: u16 = redis::from_redis_value(fields[1].clone()).unwrap();
            (start, end, node(&fields[2]), fields[3..].iter().map(node).collect())
        })
        .collect()
}

/// The seed nodes of a `redis+cluster://` URL as `redis://` URLs.
fn seeds(cluster_url: &str) -> Vec<String> {
    let nodes = cluster_url.strip_prefix("redis+cluster://").unwrap();
    nodes.split(',').map(|node| format!("redis://{node}")).collect()
}

async fn keys_on(node: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(format!("redis://{node}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn the_block_list_is_listed_from_every_primary() {
    let url = testkit::redis_cluster_url();
    let redis = testkit::TestRedis::on(&url);
    let list = IpBlockList::new(RedisStore::new(&url, &redis.prefix, Duration::from_secs(5)).unwrap());
    assert!(list.is_blocked("192.0.2.1".parse().unwrap()).await.is_ok());
    let addresses: Vec<IpAddr> = (1..=30).map(|i| format!("198.51.100.{i}").parse().unwrap()).collect();
    for ip in &addresses {
        list.block(*ip, Duration::from_secs(60), "test").await.unwrap();
    }
    // The keys really are spread: more than one primary holds some.
    let owners = slot_owners(&seeds(&url)[0]).await;
    let mut primaries: Vec<String> = owners.iter().map(|(_, _, primary, _)| primary.clone()).collect();
    primaries.sort();
    primaries.dedup();
    assert_eq!(primaries.len(), 3, "{owners:?}");
    let mut holding = 0;
    for primary in &primaries {
        if !keys_on(primary, &format!("{}ipblock:*", redis.prefix)).await.is_empty() {
            holding += 1;
        }
    }
    assert!(holding >= 2, "30 keys on {holding} primary");
    let listed: Vec<IpAddr> = list.list().await.unwrap().into_iter().map(|entry| entry.ip).collect();
    assert_eq!(listed, addresses);
}

/// Stops the primary that holds a rate-limit key (it has a replica): the limiter keeps
/// answering (from its in-process fallback while the slot has no primary), and goes back to
/// Redis, the promoted replica, without a new store; the bucket replicated before the stop is
/// still there.
#[tokio::test]
async fn a_stopped_primary_is_replaced_by_its_replica_without_a_restart() {
    let url = testkit::redis_failover_cluster_url();
    let redis = testkit::TestRedis::on(&url);
    let store = RedisStore::new(&url, &redis.prefix, Duration::from_millis(1_000)).unwrap();
    assert!(store.is_cluster());
    let limiter = ResilientLimiter::new(RateLimiter::new(store), FallbackLimiter::new(Arc::new(SystemClock), 1_000))
        .with_retry_interval(Duration::from_millis(200));
    let limit = Limit::new(100, Duration::from_secs(600));
    for remaining in (95..100).rev() {
        let (decision, backend) = limiter.check("failover", "client", limit).await;
        assert_eq!((decision.remaining, backend), (remaining, Backend::Redis));
    }
    let key = limiter.redis().key_for("failover", "client");
    let seed = &seeds(&url)[0];
    let client = redis::Client::open(seed.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key).query_async(&mut conn).await.unwrap();
    // Every node learns of the replicas by gossip, a moment after they synced.
    let waited = Instant::now();
    let (primary, replicas) = loop {
        let owners = slot_owners(seed).await;
        let (_, _, primary, replicas) =
            owners.into_iter().find(|(start, end, _, _)| (*start..=*end).contains(&slot)).unwrap();
        if !replicas.is_empty() {
            break (primary, replicas);
        }
        assert!(waited.elapsed() < Duration::from_secs(10), "the failover cluster gives every primary a replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The replica must hold the bucket before its primary goes.
    let mut primary_conn =
        redis::Client::open(format!("redis://{primary}")).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("WAIT").arg(1).arg(2_000).query_async(&mut primary_conn).await.unwrap();
    // SHUTDOWN closes the connection instead of answering.
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query_async::<()>(&mut primary_conn).await;
    // The reply comes before the process is gone: wait until its port refuses connections, so
    // no check below is still answered by the stopping primary.
    let stopping = Instant::now();
    while std::net::TcpStream::connect(primary.as_str()).is_ok() {
        assert!(stopping.elapsed() < Duration::from_secs(10), "{primary} did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let mut backends = Vec::new();
    let last = loop {
        let asked = Instant::now();
        let (decision, backend) = limiter.check("failover", "client", limit).await;
        assert!(asked.elapsed() < Duration::from_secs(3), "a check took {:?}", asked.elapsed());
        backends.push(backend);
        if backend == Backend::Redis {
            break decision;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no primary for the slot after 30 s: {backends:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Five requests before the stop, and this one: the promoted replica had the bucket.
    assert!(last.remaining <= 94, "{last:?} after {backends:?}");
    let survivor = seeds(&url).into_iter().find(|seed| !seed.ends_with(primary.as_str())).unwrap();
    // The survivor's view of the slot follows the failover by gossip, a moment later.
    let gossip = Instant::now();
    let now_primary = loop {
        let promoted = slot_owners(&survivor).await;
        let (_, _, owner, _) = promoted.into_iter().find(|(start, end, _, _)| (*start..=*end).contains(&slot)).unwrap();
        if owner != primary || gossip.elapsed() > Duration::from_secs(10) {
            break owner;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let now_primary = &now_primary;
    assert_ne!(now_primary, &primary);
    assert!(replicas.contains(now_primary), "{now_primary} was not {primary}'s replica {replicas:?}");
}
