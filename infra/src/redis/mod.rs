//! The Redis centers (A and B): a cache of member documents and of the identity index in front
//! of the search clusters, one per data center, each fed by its own projector. Center A and
//! center B are the same adapter with another target name (`redis-a`, `redis-b`) and URL.
//!
//! Keys are hash-tagged so that every script touches one hash slot, which is what Redis Cluster
//! requires:
//! - `m:{<member id>}`: the document, a hash with `v` (version) and `d` (the document JSON);
//! - `m:{<member id>}:fence`: the version fence, the highest version the projector has seen for
//!   this member, for `fence_ttl_ms`. A cache fill from a search cluster that has not caught up
//!   (a fill older than the fence) is refused, so stale data is never written back;
//! - `i:{<canonical identity key>}`: an identity-index entry, a hash with `g` (generation) and
//!   `m` (member id, or `""` for a tombstone).
//!
//! Every write is a Lua script ([`scripts`]) that refuses what is not newer, so duplicates,
//! replays and out-of-order delivery are harmless and the projector and the query path's cache
//! fills can write concurrently. Documents and entries expire after `ttl_seconds`: Redis is a
//! cache, the projections refill it and a miss falls through to search.
//!
//! The connection is a `ConnectionManager`: one multiplexed connection that reconnects by itself
//! after the server restarts. It is created lazily, so a projector or a query API can start while
//! Redis is down (calls fail with `Unavailable` until it is back; [`RedisCenter::ping`] tells
//! readiness).

pub mod client_cache;
pub mod maintenance;
pub mod reader;
pub mod scripts;
pub mod sink;
pub mod tracked;

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::aio::ConnectionManagerConfig;
use ::redis::{ErrorKind, RedisError};
use member_domain::IdentityKey;
use member_projections::SinkError;
use uuid::Uuid;

use crate::config::RedisSettings;

/// How long one request (a whole pipeline) may take before the center counts as unavailable. A
/// 10,000-record batch takes well under a second on a local server.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection attempts per failure, kept short so that callers of a dead center fail fast
/// (the query path's circuit breakers move on) instead of queueing behind a long backoff.
const RECONNECT_RETRIES: usize = 2;

/// The expiry of cached keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Documents and identity entries.
    pub ttl: Duration,
    /// Version fences.
    pub fence_ttl: Duration,
}

impl Expiry {
    pub fn from_settings(settings: &RedisSettings) -> Self {
        Self {
            ttl: Duration::from_secs(settings.ttl_seconds),
            fence_ttl: Duration::from_millis(settings.fence_ttl_ms),
        }
    }

    fn ttl_ms(&self) -> u64 {
        // At least 1 ms: PEXPIRE 0 would delete the key at once.
        (self.ttl.as_millis() as u64).max(1)
    }

    fn fence_ttl_ms(&self) -> u64 {
        (self.fence_ttl.as_millis() as u64).max(1)
    }
}

/// A center could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisCenterError {
    #[error("unknown redis target {0:?} (expected redis-a or redis-b)")]
    UnknownTarget(String),
    #[error("invalid redis url for {target}")]
    InvalidUrl {
        target: String,
        #[source]
        source: RedisError,
    },
}

/// One Redis center. Cheap to clone. Implements [`member_projections::Sink`] and
/// [`member_projections::MemberReader`], plus [`RedisCenter::fill`] for the query path.
#[derive(Clone)]
pub struct RedisCenter {
    target: String,
    /// Kept for the tracking connection of [`tracked::TrackedCenter`].
    client: ::redis::Client,
    conn: ConnectionManager,
    expiry: Expiry,
}

impl RedisCenter {
    /// The center of a projection target (`redis-a` or `redis-b`), as configured.
    pub fn for_target(target: &str, settings: &RedisSettings) -> Result<Self, RedisCenterError> {
        let url = match target {
            "redis-a" => settings.a.url.expose_secret(),
            "redis-b" => settings.b.url.expose_secret(),
            other => return Err(RedisCenterError::UnknownTarget(other.to_owned())),
        };
        Self::new(target, url, Expiry::from_settings(settings))
    }

    /// A center at `url`, reported as `target`. Connects lazily, on the first call.
    pub fn new(target: &str, url: &str, expiry: Expiry) -> Result<Self, RedisCenterError> {
        let invalid = |source| RedisCenterError::InvalidUrl {
            target: target.to_owned(),
            source,
        };
        let client = ::redis::Client::open(url).map_err(invalid)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(invalid)?;
        Ok(Self {
            target: target.to_owned(),
            client,
            conn,
            expiry,
        })
    }

    pub fn expiry(&self) -> Expiry {
        self.expiry
    }

    /// Readiness: the server answers.
    pub async fn ping(&self) -> Result<(), SinkError> {
        let mut conn = self.conn.clone();
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Maps a client error to the port's error: a reply this code cannot read, or a key of the
    /// wrong type, is `Corrupt`; everything else (refused, dropped, timed out, loading, out of
    /// memory, ...) is `Unavailable` and retried.
    pub(crate) fn error(&self, e: RedisError) -> SinkError {
        match e.kind() {
            ErrorKind::UnexpectedReturnType | ErrorKind::Parse => {
                SinkError::corrupt(&self.target, format!("unreadable reply ({})", e.category()))
            }
            _ if e.code() == Some("WRONGTYPE") => {
                SinkError::corrupt(&self.target, "a member key holds the wrong type")
            }
            _ => SinkError::unavailable(&self.target, e),
        }
    }
}

/// The key of a member's document hash: `m:{<member id>}`.
pub fn document_key(member_id: Uuid) -> String {
    format!("m:{{{member_id}}}")
}

/// The key of a member's version fence: `m:{<member id>}:fence` (same hash slot as the document).
pub fn fence_key(member_id: Uuid) -> String {
    format!("m:{{{member_id}}}:fence")
}

/// The key of an identity-index entry: `i:{<canonical identity key>}`.
pub fn identity_key(key: &IdentityKey) -> String {
    format!("i:{{{key}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hash_tagged_per_member_and_per_identity() {
        let id = Uuid::parse_str("0190f3a8-7c1e-7d2a-9b3c-1234567890ab").unwrap();
        assert_eq!(document_key(id), "m:{0190f3a8-7c1e-7d2a-9b3c-1234567890ab}");
        assert_eq!(
            fence_key(id),
            "m:{0190f3a8-7c1e-7d2a-9b3c-1234567890ab}:fence"
        );
        let key = IdentityKey::parse("wechat_openid", "elong_mp:oOpenid_0000000001").unwrap();
        assert_eq!(
            identity_key(&key),
            "i:{wechat_openid:elong_mp:oOpenid_0000000001}"
        );
    }

    #[test]
    fn unknown_targets_are_refused() {
        let settings = crate::config::Settings::load_from(None, Vec::new()).unwrap();
        assert!(matches!(
            RedisCenter::for_target("redis-c", &settings.redis),
            Err(RedisCenterError::UnknownTarget(_))
        ));
    }

    #[test]
    fn expiry_never_rounds_to_zero() {
        let e = Expiry {
            ttl: Duration::from_micros(10),
            fence_ttl: Duration::ZERO,
        };
        assert_eq!((e.ttl_ms(), e.fence_ttl_ms()), (1, 1));
    }
}
