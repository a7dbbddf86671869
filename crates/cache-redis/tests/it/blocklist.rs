use crate::store;
use cache_redis::{IpBlockList, RedisStore};
use std::net::IpAddr;
use std::time::Duration;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn block_list_and_expire() {
    let redis = testkit::TestRedis::new();
    let list = IpBlockList::new(store(&redis));
    assert!(!list.is_blocked(ip("192.0.2.1")).await.unwrap());
    list.block(ip("192.0.2.1"), Duration::from_secs(1), "credential stuffing").await.unwrap();
    list.block(ip("2001:db8::1"), Duration::from_secs(60), "manual").await.unwrap();
    assert!(list.is_blocked(ip("192.0.2.1")).await.unwrap());
    assert!(list.is_blocked(ip("2001:db8::1")).await.unwrap());
    assert!(!list.is_blocked(ip("192.0.2.2")).await.unwrap());

    let entries = list.list().await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].ip, ip("192.0.2.1"));
    assert_eq!(entries[0].reason, "credential stuffing");
    assert!(entries[0].ttl_remaining > Duration::ZERO && entries[0].ttl_remaining <= Duration::from_secs(1));
    assert_eq!(entries[1].ip, ip("2001:db8::1"));
    assert_eq!(entries[1].reason, "manual");
    assert!(entries[1].ttl_remaining > Duration::from_secs(58));

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(!list.is_blocked(ip("192.0.2.1")).await.unwrap());
    let entries = list.list().await.unwrap();
    assert_eq!(entries.iter().map(|e| e.ip).collect::<Vec<_>>(), [ip("2001:db8::1")]);

    assert!(list.unblock(ip("2001:db8::1")).await.unwrap());
    assert!(!list.unblock(ip("2001:db8::1")).await.unwrap());
    assert!(!list.is_blocked(ip("2001:db8::1")).await.unwrap());
    assert!(list.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn ipv4_mapped_addresses_are_the_same_entry() {
    let redis = testkit::TestRedis::new();
    let list = IpBlockList::new(store(&redis));
    list.block(ip("::ffff:198.51.100.4"), Duration::from_secs(60), "r").await.unwrap();
    assert!(list.is_blocked(ip("198.51.100.4")).await.unwrap());
    assert_eq!(list.list().await.unwrap()[0].ip, ip("198.51.100.4"));
    assert!(list.unblock(ip("198.51.100.4")).await.unwrap());
    assert!(!list.is_blocked(ip("::ffff:198.51.100.4")).await.unwrap());
}

#[tokio::test]
async fn list_sees_only_its_own_prefix_even_with_glob_characters() {
    let redis = testkit::TestRedis::new();
    let timeout = Duration::from_secs(5);
    // "a*" must not match "ab" when used as a SCAN pattern.
    let globby = IpBlockList::new(RedisStore::new(&redis.url, &format!("{}a*:", redis.prefix), timeout).unwrap());
    let other = IpBlockList::new(RedisStore::new(&redis.url, &format!("{}ab:", redis.prefix), timeout).unwrap());
    globby.block(ip("192.0.2.10"), Duration::from_secs(60), "mine").await.unwrap();
    other.block(ip("192.0.2.11"), Duration::from_secs(60), "theirs").await.unwrap();
    let mine = globby.list().await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].reason, "mine");
    assert_eq!(other.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn long_reasons_are_truncated() {
    let redis = testkit::TestRedis::new();
    let list = IpBlockList::new(store(&redis));
    list.block(ip("192.0.2.1"), Duration::from_secs(60), &"x".repeat(10_000)).await.unwrap();
    assert_eq!(list.list().await.unwrap()[0].reason.len(), 512);
}
