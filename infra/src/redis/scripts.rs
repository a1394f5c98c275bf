//! The Lua scripts that write to a center. Each is atomic on the server and touches the keys of
//! one hash slot only (a member's document and fence share the tag `{<member id>}`).
//!
//! Versions and generations are compared as Lua numbers (doubles): exact up to 2^53, far above
//! any aggregate version or identity generation. A stored value that is not a number is treated
//! as absent and overwritten: for a cache, rewriting a damaged entry is the repair.
//!
//! Scripts are sent as `EVALSHA`; a server that does not know them yet (after a restart, or a
//! `SCRIPT FLUSH`) answers `NOSCRIPT`, and the caller loads them and retries (see
//! [`run_pipeline`]; single invocations use the crate's own fallback).

use std::sync::LazyLock;

use ::redis::aio::ConnectionManager;
use ::redis::{ErrorKind, FromRedisValue, Pipeline, RedisError, Script, ServerErrorKind};

/// The projector's document write.
///
/// KEYS: document hash, fence. ARGV: version, document JSON, TTL (ms), fence TTL (ms).
/// Raises the fence to the version (with its TTL) whenever the version is higher, even when the
/// document itself is not written; writes the document (with its TTL) only if no stored
/// version is at least as new. Returns 1 if the document was written, 0 if not.
pub static DOCUMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local version = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[2]))
if fence == nil or fence < version then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
end
{GUARDED_DOCUMENT_WRITE}"
    ))
});

/// What the projector's write and the cache fill share: write the document (KEYS[1]) at
/// `version` with ARGV[2] as its JSON and ARGV[3] as its TTL, unless a stored version is at least
/// as new. Returns 1 if written, 0 if not.
const GUARDED_DOCUMENT_WRITE: &str = r"
local stored = tonumber(redis.call('HGET', KEYS[1], 'v'))
if stored ~= nil and stored >= version then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// An identity-index write (projector and cache fill alike).
///
/// KEYS: entry. ARGV: generation, member id (`""` for a tombstone), TTL (ms). Writes only if no
/// stored generation is at least as high; tombstones keep their generation. Returns 1 if
/// written, 0 if not.
pub static IDENTITY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local generation = tonumber(ARGV[1])
local stored = tonumber(redis.call('HGET', KEYS[1], 'g'))
if stored ~= nil and stored >= generation then
  return 0
end
redis.call('HSET', KEYS[1], 'g', ARGV[1], 'm', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// The deletion of an identity entry an erased member left behind.
///
/// KEYS: entry. ARGV: generation of the member's release. Deletes the entry unless its stored
/// generation is higher (a later holder's). Returns 1 if deleted, 0 if not.
pub static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local generation = tonumber(ARGV[1])
local stored = tonumber(redis.call('HGET', KEYS[1], 'g'))
if stored ~= nil and stored > generation then
  return 0
end
return redis.call('DEL', KEYS[1])
",
    )
});

/// The query path's cache fill after a miss.
///
/// KEYS: document hash, fence. ARGV: version, document JSON, TTL (ms). Refuses the document when
/// the fence is higher than its version (the projector has seen a newer version: the store it
/// was read from lags) or a stored version is at least as new. Never touches the fence.
/// Returns 1 if written, 0 if refused by the stored version, -1 if refused by the fence.
pub static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local version = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[2]))
if fence ~= nil and fence > version then
  return -1
end
{GUARDED_DOCUMENT_WRITE}"
    ))
});

/// A lookup by identity in one round trip: the entry, then the document of the member it names.
///
/// KEYS: entry. Returns nil when there is no entry, else `{generation, member id ("" for a
/// tombstone), document JSON or nil}`. The document key is read without being declared (it is
/// known only once the entry is read): fine on one server, which is what the adapter connects to
/// (ADR 0005); a Redis Cluster client would need the two reads instead.
pub static BY_IDENTITY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entry = redis.call('HMGET', KEYS[1], 'g', 'm')
if not entry[1] then
  return false
end
local member = entry[2] or ''
if member == '' then
  return {entry[1], '', false}
end
return {entry[1], member, redis.call('HGET', 'm:{' .. member .. '}', 'd')}
",
    )
});

/// Runs a pipeline of `EVALSHA` calls in one round trip. On `NOSCRIPT` it loads every script and
/// runs the pipeline once more: the scripts are guarded, so calls that already ran are no-ops.
pub(crate) async fn run_pipeline<T: FromRedisValue>(
    conn: &mut ConnectionManager,
    pipe: &Pipeline,
) -> Result<T, RedisError> {
    match pipe.query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            for script in [&*DOCUMENT, &*IDENTITY, &*FORGET, &*FILL] {
                script.load_async(conn).await?;
            }
            pipe.query_async(conn).await
        }
        other => other,
    }
}
