//! A block list of IP addresses, each entry with an expiry.
//!
//! One key per address, `prefix + "ipblock:" + address`, whose value is the reason and whose
//! Redis TTL is the block's remaining time. Expiry is therefore Redis' job: no sweeper, and a
//! block can never outlive its TTL because a process died. [`IpBlockList::is_blocked`], on the
//! request path, is one `EXISTS`. [`IpBlockList::list`] walks the prefix with `SCAN`, which does not
//! block Redis the way `KEYS` does; it is meant for the admin screen, not the request path.
//!
//! Addresses are stored canonically ([`IpAddr::to_canonical`]): an IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`, what a dual-stack socket reports for an IPv4 peer) and the plain IPv4
//! address are one entry, so a block cannot be dodged by the form of the address.

use crate::{CacheError, RedisStore, keys, micros, millis_ceil};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Longest reason stored, in bytes; longer reasons are cut at a character boundary.
const MAX_REASON_BYTES: usize = 512;
/// Keys requested per `SCAN` step.
const SCAN_COUNT: usize = 500;

/// One blocked address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    pub ip: IpAddr,
    pub ttl_remaining: Duration,
    pub reason: String,
}

/// The block list.
#[derive(Debug, Clone)]
pub struct IpBlockList {
    store: RedisStore,
}

impl IpBlockList {
    pub fn new(store: RedisStore) -> Self {
        Self { store }
    }

    fn key_prefix(&self) -> String {
        self.store.key("ipblock:")
    }

    /// `prefix + "ipblock:" + canonical address`.
    pub fn key_for(&self, ip: IpAddr) -> String {
        format!("{}{}", self.key_prefix(), ip.to_canonical())
    }

    /// Blocks `ip` for `ttl` (rounded up to whole milliseconds). Blocking an address that is
    /// already blocked replaces its reason and expiry.
    pub async fn block(&self, ip: IpAddr, ttl: Duration, reason: &str) -> Result<(), CacheError> {
        let key = self.key_for(ip);
        let reason = truncate(reason, MAX_REASON_BYTES);
        let ttl_ms = millis_ceil(ttl);
        self.store
            .with_connection(|mut conn| async move {
                let () = redis::cmd("SET").arg(&key).arg(reason).arg("PX").arg(ttl_ms).query_async(&mut conn).await?;
                Ok(())
            })
            .await
    }

    /// Lifts a block. Returns whether `ip` was blocked.
    pub async fn unblock(&self, ip: IpAddr) -> Result<bool, CacheError> {
        let key = self.key_for(ip);
        self.store
            .with_connection(|mut conn| async move {
                let deleted: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
                Ok(deleted > 0)
            })
            .await
    }

    /// Whether `ip` is blocked now. On error the caller decides whether to fail open or closed.
    pub async fn is_blocked(&self, ip: IpAddr) -> Result<bool, CacheError> {
        let command = self.is_blocked_command(ip);
        self.store
            .with_connection(|mut conn| async move {
                let exists: i64 = command.query_async(&mut conn).await?;
                Ok(exists > 0)
            })
            .await
    }

    /// The `EXISTS` of [`Self::is_blocked`] (its reply: 1 when blocked), for sending in a
    /// pipeline (`ResilientLimiter::check_ip`).
    pub(crate) fn is_blocked_command(&self, ip: IpAddr) -> redis::Cmd {
        let mut command = redis::cmd("EXISTS");
        command.arg(self.key_for(ip));
        command
    }

    /// Every blocked address with its remaining time and reason, ordered by address.
    ///
    /// Not a snapshot: an entry that expires during the walk is left out, and `SCAN` may return a
    /// key twice (deduplicated here). In a Redis Cluster every primary is walked in turn. The whole walk must finish within the store's timeout.
    pub async fn list(&self) -> Result<Vec<BlockEntry>, CacheError> {
        let key_prefix = self.key_prefix();
        // The deployment prefix may contain glob characters; match it literally.
        let pattern = format!("{}*", keys::glob_literal(&key_prefix));
        let key_prefix = key_prefix.as_str();
        let pattern = pattern.as_str();
        self.store
            .with_connection(|mut conn| async move {
                let mut entries = BTreeMap::new();
                // In a cluster each primary holds a share of the keys: walk every one.
                for node in conn.primaries().await? {
                    let mut cursor: u64 = 0;
                    loop {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_COUNT);
                        let (next, batch): (u64, Vec<String>) = conn.query_on(node.as_ref(), scan).await?;
                        let batch: Vec<(IpAddr, String)> = batch
                            .into_iter()
                            .filter_map(|key| {
                                let ip = key.strip_prefix(key_prefix)?.parse::<IpAddr>().ok()?;
                                Some((ip, key))
                            })
                            .collect();
                        let mut commands = Vec::with_capacity(batch.len() * 2);
                        for (_, key) in &batch {
                            commands.push(redis::Cmd::get(key));
                            commands.push(redis::Cmd::pttl(key));
                        }
                        let replies = conn.send_all(commands).await?;
                        for ((ip, _), pair) in batch.into_iter().zip(replies.chunks_exact(2)) {
                            let reason: Option<String> =
                                redis::from_redis_value(pair[0].clone()).map_err(redis::RedisError::from)?;
                            let pttl: i64 =
                                redis::from_redis_value(pair[1].clone()).map_err(redis::RedisError::from)?;
                            // Gone (-2) or expired between SCAN and GET: not blocked any more.
                            if let Some(reason) = reason
                                && pttl >= 0
                            {
                                let ttl_remaining = micros(pttl.saturating_mul(1_000));
                                entries.insert(ip, BlockEntry { ip, ttl_remaining, reason });
                            }
                        }
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                Ok(entries.into_values().collect())
            })
            .await
    }
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("äöü", 3), "ä");
        assert_eq!(truncate("äöü", 4), "äö");
    }
}
