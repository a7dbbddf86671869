//! One Redis server or a Redis Cluster, behind one connection type.
//!
//! Everything that differs between the two lives here, so the adapters stay the same:
//!
//! - [`Target::parse`] reads the URL: `redis://` / `rediss://` is one server;
//!   `redis+cluster://` / `rediss+cluster://` with a comma-separated list of seed nodes
//!   (`rediss+cluster://user:password@10.0.0.1:6379,10.0.0.2:6379`) is a cluster, reached through
//!   redis-rs' cluster client, with the same credentials and TLS for every node. Seeds are only
//!   where the client starts: it learns every node from `CLUSTER SLOTS` and follows the topology
//!   as it changes (`MOVED`, a failover), so one reachable seed is enough.
//! - [`Connection`] implements redis-rs' `ConnectionLike`: single commands and scripts are
//!   routed by their key in a cluster, so adapters send them the same way in both cases.
//! - [`Connection::send_all`] is a pipeline that may span slots: in a cluster the commands are
//!   grouped by slot, one pipeline per slot, all sent at once (one round trip of latency, as on a
//!   single server). Each command is atomic on its own; nothing is atomic across them on either
//!   kind of deployment.
//! - [`Connection::primaries`] names every primary, for walks that must cover all keys (`SCAN`
//!   sees one node's keys only).

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::collections::HashMap;
use std::time::Duration;

const CLUSTER_SCHEMES: [(&str, &str); 2] = [("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")];

/// Where to connect, parsed from the configured URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Single(String),
    /// The seed nodes, each a `redis://` or `rediss://` URL carrying the shared credentials.
    Cluster(Vec<String>),
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let Some((cluster_scheme, node_scheme)) = CLUSTER_SCHEMES.iter().find(|(s, _)| url.starts_with(s)) else {
            return Ok(Self::Single(url.to_owned()));
        };
        let rest = &url[cluster_scheme.len()..];
        // Only the credentials, the host list and an optional path/query: `user:pass@h1:p,h2:p/?x`.
        let (authority, tail) = rest.find(['/', '?']).map_or((rest, ""), |at| rest.split_at(at));
        let (credentials, hosts) = authority.rsplit_once('@').map_or(("", authority), |(c, h)| (c, h));
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| {
                let at = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
                format!("{node_scheme}{at}{host}{tail}")
            })
            .collect();
        if nodes.is_empty() {
            return Err(format!("{cluster_scheme} needs at least one host:port"));
        }
        Ok(Self::Cluster(nodes))
    }

    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Self::Single(url) => url.starts_with("rediss://"),
            Self::Cluster(nodes) => nodes.iter().all(|n| n.starts_with("rediss://")),
        }
    }
}

/// A client for one server or for a cluster; cheap to clone.
#[derive(Clone)]
#[expect(clippy::large_enum_variant, reason = "one per store, cloned only when a thread first connects")]
pub(crate) enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Client {
    /// `ca_pem`: the only trust anchor for TLS, when given.
    pub(crate) fn new(target: &Target, ca_pem: Option<Vec<u8>>, timeout: Duration) -> Result<Self, String> {
        let certificates = |ca_pem| redis::TlsCertificates { client_tls: None, root_cert: Some(ca_pem) };
        match target {
            Target::Single(url) => {
                let client = match ca_pem {
                    None => redis::Client::open(url.as_str()),
                    Some(ca_pem) => redis::Client::build_with_tls(url.as_str(), certificates(ca_pem)),
                };
                client.map(Self::Single).map_err(|e| e.to_string())
            }
            Target::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // A command to a node that went away is retried after a topology refresh
                    // (a failover promotes its replica); the store's timeout bounds the whole.
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500);
                if let Some(ca_pem) = ca_pem {
                    builder = builder.certs(certificates(ca_pem));
                }
                builder.build().map(Self::Cluster).map_err(|e| e.to_string())
            }
        }
    }

    /// A connection: lazy for one server (the first command connects), connected now for a
    /// cluster (the client must read the topology first).
    pub(crate) async fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        match self {
            Self::Single(client) => {
                // One attempt only: a Redis that is down fails the command within its timeout
                // instead of retrying behind it, and the next command tries again.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(0);
                Ok(Connection::Single(ConnectionManager::new_lazy_with_config(client.clone(), config)?))
            }
            Self::Cluster(client) => Ok(Connection::Cluster(client.get_async_connection().await?)),
        }
    }
}

/// A connection to one server (reconnecting) or to a cluster (one multiplexed connection per
/// node); cheap to clone, clones share the connection.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Connection::Single",
            Self::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A primary's address, as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Node {
    pub host: String,
    pub port: u16,
}

impl Connection {
    /// Sends `commands` in one round trip and returns one reply each, in order; a command Redis
    /// refused is its error value (`Value::ServerError`), for the caller to judge.
    ///
    /// On one server this is one pipeline. In a cluster, a pipeline must stay within one slot,
    /// so the commands are grouped by the slot of their key (the first key: every command sent
    /// this way names one key, or a script with its keys first), one pipeline per slot, sent
    /// concurrently. Keys that must be read together atomically belong in one command or one
    /// script instead, or share a hash tag.
    pub(crate) async fn send_all(&mut self, commands: Vec<Cmd>) -> RedisResult<Vec<Value>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query_async(conn).await
            }
            Self::Cluster(conn) => {
                let count = commands.len();
                let mut by_slot: HashMap<Option<Slot>, (Vec<usize>, Pipeline)> = HashMap::new();
                for (index, command) in commands.into_iter().enumerate() {
                    let (indices, pipe) = by_slot.entry(first_key(&command).map(Slot::for_key)).or_insert_with(|| {
                        let mut pipe = redis::pipe();
                        pipe.ignore_errors();
                        (Vec::new(), pipe)
                    });
                    indices.push(index);
                    pipe.add_command(command);
                }
                let sends = by_slot.into_values().map(|(indices, pipe)| {
                    let mut conn = conn.clone();
                    async move {
                        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
                        Ok::<_, redis::RedisError>((indices, replies))
                    }
                });
                let mut replies: Vec<Option<Value>> = vec![None; count];
                for (indices, group) in futures_util::future::try_join_all(sends).await? {
                    for (index, reply) in indices.into_iter().zip(group) {
                        replies[index] = Some(reply);
                    }
                }
                replies
                    .into_iter()
                    .map(|reply| {
                        reply.ok_or_else(|| {
                            redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "a pipeline got fewer replies than commands",
                            ))
                        })
                    })
                    .collect()
            }
        }
    }

    /// Every primary: the one server, or each primary of the cluster (from `CLUSTER SLOTS`, so
    /// a replica promoted by a failover is included once the cluster has promoted it).
    pub(crate) async fn primaries(&mut self) -> RedisResult<Vec<Option<Node>>> {
        let Self::Cluster(conn) = self else {
            return Ok(vec![None]);
        };
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        let mut nodes: Vec<Node> = Vec::new();
        let Value::Array(ranges) = slots else {
            return Err(unexpected("CLUSTER SLOTS"));
        };
        for range in ranges {
            // [start, end, [host, port, id, ...], replicas...]
            let Value::Array(fields) = range else { return Err(unexpected("CLUSTER SLOTS")) };
            let Some(Value::Array(primary)) = fields.get(2) else { return Err(unexpected("CLUSTER SLOTS")) };
            let (Some(host), Some(port)) = (primary.first(), primary.get(1)) else {
                return Err(unexpected("CLUSTER SLOTS"));
            };
            let host: String = redis::from_redis_value(host.clone())?;
            let port: u16 = redis::from_redis_value(port.clone())?;
            nodes.push(Node { host, port });
        }
        nodes.sort();
        nodes.dedup();
        Ok(nodes.into_iter().map(Some).collect())
    }

    /// Sends `command` to `node` (`None`: the one server).
    pub(crate) async fn query_on<T: redis::FromRedisValue>(
        &mut self,
        node: Option<&Node>,
        command: Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Self::Cluster(conn), Some(node)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                Ok(redis::from_redis_value(conn.route_command(command, routing).await?)?)
            }
            (conn, _) => command.query_async(conn).await,
        }
    }
}

fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply", what.to_owned()))
}

/// The key a command addresses: `EVALSHA sha numkeys key ...` (and `EVAL`) name it third,
/// every other command Praxis pipelines names it first.
fn first_key(command: &Cmd) -> Option<Vec<u8>> {
    let mut args = command.args_iter().filter_map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
        _ => None,
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") { args.nth(2) } else { args.next() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_urls_stay_as_they_are() {
        assert_eq!(Target::parse("redis://h:1").unwrap(), Target::Single("redis://h:1".into()));
        assert!(Target::parse("rediss://h:1").unwrap().is_tls());
    }

    #[test]
    fn cluster_urls_name_every_seed_with_the_shared_credentials() {
        let target = Target::parse("rediss+cluster://u:p%40w@10.0.0.1:6379, 10.0.0.2:6380/?protocol=2").unwrap();
        assert_eq!(
            target,
            Target::Cluster(vec![
                "rediss://u:p%40w@10.0.0.1:6379/?protocol=2".into(),
                "rediss://u:p%40w@10.0.0.2:6380/?protocol=2".into(),
            ])
        );
        assert!(target.is_tls());
        assert_eq!(
            Target::parse("redis+cluster://a:1,b:2").unwrap(),
            Target::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert!(Target::parse("redis+cluster://").is_err());
    }

    #[test]
    fn pipelined_commands_are_routed_by_their_key() {
        let mut set = redis::cmd("SET");
        set.arg("k1").arg("v");
        assert_eq!(first_key(&set), Some(b"k1".to_vec()));
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg("abc").arg(1).arg("k2").arg(5);
        assert_eq!(first_key(&evalsha), Some(b"k2".to_vec()));
    }
}
