//! Where the raw baseline sends a key: its one server, or, on a cluster (the C scenarios), the
//! primary of the key's slot, computed with the cluster's CRC16 from a slot map read once at
//! connect (`CLUSTER SLOTS`). The benchmark never reshapes its cluster, so there is no `MOVED`
//! to follow: one would come back as an error, which fails the run.

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::BoxError;

/// The raw client's connections: one multiplexed connection per primary.
#[derive(Debug)]
pub enum Route {
    /// A single server.
    One(MultiplexedConnection),
    /// A cluster: inclusive slot ranges with the index of their primary's connection.
    Slots { ranges: Vec<(u16, u16, usize)>, nodes: Vec<MultiplexedConnection> },
}

impl Route {
    /// Connects to `redis://...`, or to every primary of a `redis+cluster://seed,...` cluster.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let Some(seeds) = url.strip_prefix("redis+cluster://") else {
            return Ok(Route::One(redis::Client::open(url)?.get_multiplexed_async_connection().await?));
        };
        let seed = seeds.split(',').next().filter(|s| !s.is_empty()).ok_or("a cluster URL without a seed")?;
        let mut conn = redis::Client::open(format!("redis://{seed}/"))?.get_multiplexed_async_connection().await?;
        let map: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
        let mut addrs: Vec<String> = Vec::new();
        let mut ranges = Vec::new();
        for (first, last, addr) in parse_slots(map)? {
            let i = addrs.iter().position(|a| *a == addr).unwrap_or_else(|| {
                addrs.push(addr);
                addrs.len() - 1
            });
            ranges.push((first, last, i));
        }
        let mut nodes = Vec::with_capacity(addrs.len());
        for addr in &addrs {
            nodes.push(redis::Client::open(format!("redis://{addr}/"))?.get_multiplexed_async_connection().await?);
        }
        Ok(Route::Slots { ranges, nodes })
    }

    /// Every primary's connection.
    pub fn nodes(&self) -> &[MultiplexedConnection] {
        match self {
            Route::One(c) => std::slice::from_ref(c),
            Route::Slots { nodes, .. } => nodes,
        }
    }

    /// The connection for `key`.
    pub fn conn(&self, key: &str) -> Result<MultiplexedConnection, BoxError> {
        match self {
            Route::One(conn) => Ok(conn.clone()),
            Route::Slots { ranges, nodes } => {
                let slot = rdlock_testkit::key_slot(key);
                let (_, _, i) = ranges
                    .iter()
                    .find(|(first, last, _)| (*first..=*last).contains(&slot))
                    .ok_or_else(|| format!("no primary serves slot {slot}"))?;
                Ok(nodes[*i].clone())
            }
        }
    }
}

/// `CLUSTER SLOTS`: `[[first, last, [ip, port, ...], replicas...], ...]` as (first, last,
/// "ip:port" of the primary).
pub(crate) fn parse_slots(map: Value) -> Result<Vec<(u16, u16, String)>, BoxError> {
    let bad = || -> BoxError { "unexpected CLUSTER SLOTS reply".into() };
    let Value::Array(entries) = map else { return Err(bad()) };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(fields) = entry else { return Err(bad()) };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad());
            };
            let (Some(Value::BulkString(ip)), Some(Value::Int(port))) = (primary.first(), primary.get(1)) else {
                return Err(bad());
            };
            let slot = |n: i64| u16::try_from(n).map_err(|_| bad());
            Ok((slot(*first)?, slot(*last)?, format!("{}:{port}", String::from_utf8_lossy(ip))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_map_is_parsed_and_bad_replies_are_errors() {
        let node = |ip: &str, port| Value::Array(vec![Value::BulkString(ip.into()), Value::Int(port)]);
        let map = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("127.0.0.1", 7001)]),
        ]);
        let parsed = parse_slots(map).expect("parses");
        assert_eq!(parsed, [(0, 5460, "127.0.0.1:7000".to_owned()), (5461, 16383, "127.0.0.1:7001".to_owned())]);
        assert!(parse_slots(Value::Int(1)).is_err());
        assert!(parse_slots(Value::Array(vec![Value::Array(vec![Value::Int(-1), Value::Int(2)])])).is_err());
    }
}
