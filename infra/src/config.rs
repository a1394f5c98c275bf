//! Configuration: `config/default.toml` (compiled in), then the file named by `MEMBER_CONFIG`,
//! then environment variables `MEMBER__SECTION__KEY`. Unknown keys and bad values are refused
//! at start with an error that names the key.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use member_read_policy::{BreakerSettings, ReadClass};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The defaults, as shipped in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub postgres: PostgresSettings,
    pub mysql: MysqlSettings,
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    pub search: SearchSettings,
    pub command_api: CommandApiSettings,
    pub query_api: QueryApiSettings,
    pub relay: RelaySettings,
    pub projector: ProjectorSettings,
    pub telemetry: TelemetrySettings,
    /// `[[callers]]`: who may call the command and query APIs (docs/access.md).
    pub callers: Vec<CallerSettings>,
    pub encryption: EncryptionSettings,
    /// `[center]`: the center this process runs in (docs/decisions/0039-center-topology.md).
    pub center: CenterSettings,
}

/// `[center]`: where this process runs in the two-center topology (docs/decisions/0039). The
/// query API reads its own center's Redis and search cluster first; `member run` runs only the
/// projectors of `projectors`. The defaults are the one-machine layout: center A, every projector,
/// every backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterSettings {
    /// "a" or "b"; unset: `redis.local_center` (its older name), else "a".
    pub name: Option<RedisCenter>,
    /// Targets whose projectors `member run` starts here (empty: all six).
    pub projectors: Vec<String>,
    /// Targets the query API may read (empty: all six). A center whose search engine is embedded
    /// (tantivy) lists only its own clusters: another center's embedded index is not here.
    pub reads: Vec<String>,
}

impl CenterSettings {
    fn targets(list: &[String]) -> Vec<member_projections::Target> {
        if list.is_empty() {
            return member_projections::Target::ALL.to_vec();
        }
        list.iter().filter_map(|t| t.parse().ok()).collect()
    }

    /// The targets `member run` projects in this center.
    pub fn projector_targets(&self) -> Vec<member_projections::Target> {
        Self::targets(&self.projectors)
    }

    /// The targets the query API may read.
    pub fn read_targets(&self) -> Vec<member_projections::Target> {
        Self::targets(&self.reads)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, list) in [
            ("center.projectors", &self.projectors),
            ("center.reads", &self.reads),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|t| t.parse::<member_projections::Target>().is_err())
            {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "unknown target {bad:?} (mysql, redis-a, redis-b, search-primary, \
                         search-backup, search-marketing)"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `[encryption]`: the keys of crypto-shredding (docs/decisions/0033). Secrets: never in
/// `Debug`, logs or errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSettings {
    /// The master key that wraps new data keys.
    pub master_key_id: String,
    /// Every master key that may have wrapped a stored data key: id -> 32 bytes, base64.
    pub master_keys: std::collections::BTreeMap<String, SecretString>,
    /// The key of the keyed hash of identities: 32 bytes, base64.
    pub identity_hmac_key: SecretString,
}

/// The encryption keys shipped in `config/default.toml`, for local use only.
pub const DEFAULT_ENCRYPTION_KEYS: [&str; 2] = [
    "2/Z6zc+yoYJtntnCGS2+vOYVrnJc0Ecbyc/IMgLDoQU=",
    "LB1bCdEQlUtm4tktt6ZbUwMIag5OrcR2MzHVoGPIRAg=",
];

impl EncryptionSettings {
    /// Whether a published key of `config/default.toml` is in use.
    pub fn uses_default_keys(&self) -> bool {
        std::iter::once(&self.identity_hmac_key)
            .chain(self.master_keys.values())
            .any(|k| DEFAULT_ENCRYPTION_KEYS.contains(&k.expose_secret().trim()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        let is_key = |text: &SecretString| {
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                text.expose_secret().trim(),
            )
            .is_ok_and(|bytes| bytes.len() == 32)
        };
        // The id travels as `<id>:<wrapped key>` to the append's trigger (migration 0010).
        if self
            .master_keys
            .keys()
            .any(|id| id.is_empty() || id.len() > 64 || id.contains(':'))
        {
            return Err(invalid(
                "encryption.master_keys",
                "key ids must be 1-64 characters without ':'",
            ));
        }
        if !self.master_keys.contains_key(&self.master_key_id) {
            return Err(invalid(
                "encryption.master_key_id",
                "names no key of encryption.master_keys",
            ));
        }
        if !self.master_keys.values().all(is_key) {
            return Err(invalid(
                "encryption.master_keys",
                "every key must be 32 bytes in base64",
            ));
        }
        if !is_key(&self.identity_hmac_key) {
            return Err(invalid(
                "encryption.identity_hmac_key",
                "must be 32 bytes in base64",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: SecretUrl,
    pub max_connections: NonZeroU32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSettings {
    pub url: SecretUrl,
    pub logical_shards: u32,
    pub databases: Vec<String>,
    pub max_connections: NonZeroU32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub a: RedisCenterSettings,
    pub b: RedisCenterSettings,
    /// The older name of `center.name` (which wins when both are set).
    pub local_center: Option<RedisCenter>,
    pub ttl_seconds: u64,
    pub fence_ttl_ms: u64,
    /// Keys of each center kept in the query API's memory, exact through `CLIENT TRACKING`
    /// (ADR 0038); 0 turns the client-side cache off.
    #[serde(default)]
    pub client_cache_capacity: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisCenter {
    A,
    B,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCenterSettings {
    pub url: SecretUrl,
}

/// A connection URL, which may carry a password (`scheme://user:password@host/...`). Held as a
/// [`SecretString`]: zeroized on drop, no `Display`, and `Debug` shows it with the password as
/// `***` but the host visible (operators need to see where a process connects). Every use spells
/// [`SecretUrl::expose_secret`], so a URL cannot reach a log or an error by accident.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    /// The URL, password included: for connecting, never for logs or errors.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(SecretString::from(url))
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self(SecretString::from(url))
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&redact_url(self.expose_secret()), f)
    }
}

/// `scheme://user:password@host/...` as `scheme://user:***@host/...`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// `[kafka]`: the brokers, the topic and the settings it is created with, the consumers'
/// group membership and the relay's producer (see config/default.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    /// Partitions of a topic this process creates: the most processes of one projector that
    /// share its store's projection (docs/decisions/0017-projector-consumer-groups.md).
    pub partitions: u32,
    /// `replication.factor` of a topic this process creates (1 locally, 3 in production).
    pub replication_factor: u16,
    /// `min.insync.replicas` of a topic this process creates (1 locally, 2 in production).
    pub min_insync_replicas: u16,
    /// `retention.ms` of a topic this process creates.
    pub retention_ms: i64,
    /// `fetch.wait.max.ms` of the projectors' consumers.
    pub fetch_wait_ms: u64,
    /// `session.timeout.ms` of the projectors' consumers: how long a killed projector's
    /// partitions wait before they move to the survivors.
    pub session_timeout_ms: u64,
    /// Whether the relay's producer is idempotent
    /// (docs/decisions/0018-idempotent-relay-producer.md).
    pub idempotent_producer: bool,
}

impl KafkaSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                reason: reason.into(),
            }
        }
        if self.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "name at least one host:port"));
        }
        if self.topic.is_empty()
            || self.topic.len() > 249
            || !self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "kafka.topic",
                "must be a non-empty [A-Za-z0-9._-] name of at most 249 characters",
            ));
        }
        if self.partitions == 0 || self.partitions > 10_000 {
            return Err(invalid("kafka.partitions", "must be between 1 and 10000"));
        }
        if self.replication_factor == 0 || self.replication_factor > 32 {
            return Err(invalid(
                "kafka.replication_factor",
                "must be between 1 and 32",
            ));
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > self.replication_factor {
            return Err(invalid(
                "kafka.min_insync_replicas",
                "must be between 1 and kafka.replication_factor",
            ));
        }
        // At least a minute, at most a year: the topic is a transport, bounded on purpose.
        if !(60_000..=31_536_000_000).contains(&self.retention_ms) {
            return Err(invalid(
                "kafka.retention_ms",
                "must be between 60000 (one minute) and 31536000000 (one year)",
            ));
        }
        if self.fetch_wait_ms == 0 || self.fetch_wait_ms > 10_000 {
            return Err(invalid(
                "kafka.fetch_wait_ms",
                "must be between 1 and 10000",
            ));
        }
        // The broker's own bounds (group.min/max.session.timeout.ms) default to 6 s and 30 min.
        if !(6_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(invalid(
                "kafka.session_timeout_ms",
                "must be between 6000 and 300000",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    pub engine: SearchEngine,
    pub refresh_ms: u64,
    pub elasticsearch: ElasticsearchSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchEngine {
    Tantivy,
    Elasticsearch,
}

impl SearchEngine {
    /// The name `search.engine` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchEngine::Tantivy => "tantivy",
            SearchEngine::Elasticsearch => "elasticsearch",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSettings {
    pub primary_url: SecretUrl,
    pub backup_url: SecretUrl,
    pub marketing_url: SecretUrl,
    pub shards: NonZeroU32,
    /// Replicas of each shard; 0 on the local stack's one-node clusters (a replica could never
    /// be allocated there and every index would stay yellow).
    pub replicas: u32,
    pub index_prefix: String,
}

/// `[command_api]`: the write side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandApiSettings {
    pub listen: SocketAddr,
    /// How many members the command path keeps as it last wrote them, to decide the next
    /// command on one of them without reading its events back (0: off). A guess that the append
    /// confirms; see infra/src/event_store/member_cache.rs.
    pub member_cache_capacity: u64,
    /// How long an unused member stays in that cache, in seconds.
    pub member_cache_idle_seconds: u64,
    /// How many group-commit statements the command path has in flight at once; appends that
    /// arrive meanwhile share the next one (infra/src/event_store/group_commit.rs).
    pub append_writers: NonZeroUsize,
    /// The global write budget (all callers), which protects the event store: writes per second,
    /// and how many may come at once above that. Each caller also has its own write quota.
    pub write_rate_per_second: NonZeroU32,
    pub write_burst: NonZeroU32,
    /// A client that has not sent a whole request head after this long is disconnected (slow
    /// clients hold connections open otherwise).
    pub header_read_timeout_ms: u64,
}

/// `[query_api]`: the read side (see docs/decisions/0007-query-path.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryApiSettings {
    pub listen: SocketAddr,
    /// As `command_api.header_read_timeout_ms`.
    pub header_read_timeout_ms: u64,
    pub backends: QueryBackendSettings,
    pub breaker: BreakerSettings,
    pub flow: FlowSettings,
    pub cache: QueryCacheSettings,
}

/// The API keys shipped in `config/default.toml`, for local use only.
pub const DEFAULT_KEYS: [&str; 4] = [
    "local-writer-key",
    "local-order-key",
    "local-marketing-key",
    "local-admin-key",
];

impl Settings {
    /// The names of the callers that still hold a default (published) key.
    pub fn default_keys_in_use(&self) -> Vec<&str> {
        self.callers
            .iter()
            .filter(|c| DEFAULT_KEYS.contains(&c.key.expose_secret()))
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The query API's reads (with the caller's read class).
    Read,
    /// The command API's writes.
    Write,
    /// `/admin/*`, the console and a member's history.
    Admin,
    /// A member's erasure.
    Erase,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Erase => "erase",
        }
    }
}

/// One caller of the APIs: its bearer key (a secret: never in `Debug`, logs or errors), what it
/// may do, and its quotas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSettings {
    pub name: String,
    pub key: SecretString,
    pub scopes: Vec<Scope>,
    /// The read class of a caller with scope `read`.
    #[serde(default)]
    pub class: Option<ReadClass>,
    /// Sustained reads per second allowed to this caller.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Reads allowed at once above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Sustained writes per second allowed to this caller.
    #[serde(default = "default_rate")]
    pub write_rate_per_second: u32,
    /// Writes allowed at once above the sustained rate.
    #[serde(default = "default_burst")]
    pub write_burst: u32,
}

fn default_rate() -> u32 {
    1000
}

fn default_burst() -> u32 {
    2000
}

impl CallerSettings {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Per-backend timeouts, and the latency at which a call counts as slow for its breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBackendSettings {
    pub redis_timeout_ms: NonZeroU64,
    pub redis_slow_ms: NonZeroU64,
    pub search_timeout_ms: NonZeroU64,
    pub search_slow_ms: NonZeroU64,
    pub mysql_timeout_ms: NonZeroU64,
    pub mysql_slow_ms: NonZeroU64,
    /// After its breaker opened, a backend gets reads again only once its projection is at most
    /// this many records behind (when the process knows the lag; otherwise the breaker decides).
    pub return_max_lag_records: u64,
}

/// Flow control: the global budget (marketing may use only `marketing_share` of it), the
/// per-identity hotspot limit and the rate at which a key counts as hot (served from the near
/// cache).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSettings {
    pub global_rate_per_second: NonZeroU32,
    pub global_burst: NonZeroU32,
    /// Above 0 and at most 1 (checked by `validate`).
    pub marketing_share: f64,
    pub hotspot_rate_per_second: NonZeroU32,
    pub hotspot_burst: NonZeroU32,
    /// A key read more often than this per second is hot: its documents are kept in the near
    /// cache for `cache.near_cache_ttl_ms`. 0 disables the near cache.
    pub hot_key_rate_per_second: u32,
    /// Requests being served at once; one more is refused at once (429 reason "overloaded")
    /// instead of queueing until its caller times out. Marketing may hold only
    /// `marketing_share` of them, so under overload it is refused first.
    pub max_in_flight: NonZeroU32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryCacheSettings {
    pub near_cache_capacity: NonZeroU64,
    pub near_cache_ttl_ms: NonZeroU64,
    /// Members whose last served document is remembered (monotonic reads).
    pub served_capacity: NonZeroU64,
    /// Cache fills in flight at once; more are dropped (the projector fills the cache anyway).
    pub fill_concurrency: NonZeroU32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    pub batch_size: u32,
    pub idle_poll_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorSettings {
    /// Records applied to a store per batch.
    pub batch_size: u32,
    /// How long a projector waits for the first record of a batch.
    pub max_wait_ms: u64,
}

/// `[telemetry]`: where `member serve relay` and `member serve projector` answer `/healthz`,
/// `/readyz` and `/metrics` (the APIs answer them on their own listeners; `member run` binds
/// neither of these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub relay_listen: SocketAddr,
    /// One projector process per target: several on one host need a port each (or port 0).
    pub projector_listen: SocketAddr,
}

/// The configuration could not be loaded; the message names the offending key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Settings {
    /// Loads defaults, `MEMBER_CONFIG` and `MEMBER__*` variables from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("MEMBER_CONFIG").ok();
        Self::load_from(file.as_deref(), std::env::vars())
    }

    /// Loads defaults, an optional override file and the given environment (for tests).
    pub fn load_from(
        file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::new(path, config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("MEMBER__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("MEMBER")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("mysql.databases")
                .try_parsing(true)
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The center this process runs in: `center.name`, else `redis.local_center`, else A.
    pub fn local_center(&self) -> RedisCenter {
        self.center
            .name
            .or(self.redis.local_center)
            .unwrap_or(RedisCenter::A)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                reason: reason.into(),
            }
        }
        let url_scheme = |key: &'static str, url: &str, schemes: &[&str]| {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            if schemes.contains(&scheme) {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!("expected a {} url", schemes.join(" or ")),
                ))
            }
        };
        self.center.validate()?;
        url_scheme(
            "postgres.url",
            self.postgres.url.expose_secret(),
            &["postgres", "postgresql"],
        )?;
        url_scheme(
            "mysql.url",
            self.mysql.url.expose_secret(),
            &["mysql", "mariadb"],
        )?;
        url_scheme(
            "redis.a.url",
            self.redis.a.url.expose_secret(),
            &["redis", "rediss"],
        )?;
        url_scheme(
            "redis.b.url",
            self.redis.b.url.expose_secret(),
            &["redis", "rediss"],
        )?;
        // Counts that must only be positive are `NonZero*`: serde refused 0 with the key named.
        if self.command_api.append_writers.get() as u64
            > u64::from(self.postgres.max_connections.get())
        {
            return Err(invalid(
                "command_api.append_writers",
                "must not exceed postgres.max_connections (each statement holds a connection)",
            ));
        }
        if self.mysql.databases.is_empty() {
            return Err(invalid("mysql.databases", "name at least one database"));
        }
        if let Some(bad) = self.mysql.databases.iter().find(|d| !is_identifier(d)) {
            return Err(invalid(
                "mysql.databases",
                format!("{bad:?} is not a plain identifier ([A-Za-z0-9_], at most 64)"),
            ));
        }
        if (self.mysql.logical_shards as usize) < self.mysql.databases.len() {
            return Err(invalid(
                "mysql.logical_shards",
                "must be at least the number of databases",
            ));
        }
        self.kafka.validate()?;
        if self.relay.batch_size == 0 || self.relay.batch_size > 100_000 {
            return Err(invalid("relay.batch_size", "must be between 1 and 100000"));
        }
        if self.projector.batch_size == 0 || self.projector.batch_size > 100_000 {
            return Err(invalid(
                "projector.batch_size",
                "must be between 1 and 100000",
            ));
        }
        for (key, ms) in [
            (
                "command_api.header_read_timeout_ms",
                self.command_api.header_read_timeout_ms,
            ),
            (
                "query_api.header_read_timeout_ms",
                self.query_api.header_read_timeout_ms,
            ),
        ] {
            if ms == 0 || ms > 600_000 {
                return Err(invalid(key, "must be between 1 and 600000"));
            }
        }
        validate_callers(&self.callers)?;
        self.encryption.validate()?;
        self.query_api.validate()
    }
}

impl QueryApiSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                reason: reason.into(),
            }
        }
        let rate = |key: &'static str, value: f64| {
            if value > 0.0 && value <= 1.0 {
                Ok(())
            } else {
                Err(invalid(key, "must be above 0 and at most 1"))
            }
        };
        // Every count and time of `[query_api]` that must be positive is a `NonZero*`, refused
        // (with its key) when the settings are deserialized; only the shares are left to check.
        rate("query_api.breaker.failure_rate", self.breaker.failure_rate)?;
        rate(
            "query_api.breaker.slow_call_rate",
            self.breaker.slow_call_rate,
        )?;
        rate("query_api.flow.marketing_share", self.flow.marketing_share)?;
        Ok(())
    }
}

/// Names non-empty and unique, keys long enough and unique (never named in the error), at least
/// one scope, a read class for readers, quotas of at least 1.
fn validate_callers(callers: &[CallerSettings]) -> Result<(), ConfigError> {
    fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key,
            reason: reason.into(),
        }
    }
    if callers.is_empty() {
        return Err(invalid("callers", "configure at least one caller"));
    }
    let mut names = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for (i, c) in callers.iter().enumerate() {
        let which = format!("caller #{} ({:?})", i + 1, c.name);
        if c.name.is_empty() || !names.insert(c.name.as_str()) {
            return Err(invalid(
                "callers.name",
                format!("{which}: names must be non-empty and unique"),
            ));
        }
        let key = c.key.expose_secret();
        if key.len() < 8 || !keys.insert(key) {
            return Err(invalid(
                "callers.key",
                format!("{which}: keys must be at least 8 characters and unique"),
            ));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "callers.key",
                format!("{which}: keys are visible ascii characters"),
            ));
        }
        if c.scopes.is_empty() {
            return Err(invalid(
                "callers.scopes",
                format!("{which}: name at least one of read, write, admin, erase"),
            ));
        }
        if c.has(Scope::Read) && c.class.is_none() {
            return Err(invalid(
                "callers.class",
                format!("{which}: a caller with scope read needs a class (order or marketing)"),
            ));
        }
        for (key, value) in [
            ("callers.rate_per_second", c.rate_per_second),
            ("callers.burst", c.burst),
            ("callers.write_rate_per_second", c.write_rate_per_second),
            ("callers.write_burst", c.write_burst),
        ] {
            if value == 0 {
                return Err(invalid(key, format!("{which}: must be at least 1")));
            }
        }
    }
    Ok(())
}

/// A plain SQL identifier: safe to interpolate into DDL (database and table names).
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn encryption_keys_are_checked_and_never_named_in_errors() {
        let good = "c3VwZXItc2VjcmV0LWtleS1mb3ItdGVzdHMtb25seSE=";
        let cases = [
            (
                "MEMBER__ENCRYPTION__MASTER_KEY_ID",
                "nope",
                "encryption.master_key_id",
            ),
            (
                "MEMBER__ENCRYPTION__MASTER_KEYS__LOCAL-1",
                "c2hvcnQ=",
                "encryption.master_keys",
            ),
            (
                "MEMBER__ENCRYPTION__IDENTITY_HMAC_KEY",
                "not base64!",
                "encryption.identity_hmac_key",
            ),
        ];
        for (var, value, key) in cases {
            let err = Settings::load_from(None, env(&[(var, value)])).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(key), "{var}: {text}");
            assert!(
                !text.contains(value),
                "{var}: the value is in the error: {text}"
            );
        }
        let mut s = Settings::load_from(None, env(&[])).unwrap();
        s.encryption
            .master_keys
            .insert("a:b".into(), good.to_owned().into());
        let err = s.encryption.validate().unwrap_err().to_string();
        assert!(err.contains("without ':'"), "{err}");
        assert!(
            !format!("{:?}", s.encryption).contains(good),
            "Debug shows no key"
        );
    }

    #[test]
    fn the_default_center_is_a_with_every_projector_and_backend() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.local_center(), RedisCenter::A);
        assert_eq!(
            s.center.projector_targets(),
            member_projections::Target::ALL.to_vec()
        );
        assert_eq!(
            s.center.read_targets(),
            member_projections::Target::ALL.to_vec()
        );
    }

    #[test]
    fn the_center_files_load_and_name_their_center() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/centers");
        for (file, center, own) in [
            ("a.toml", RedisCenter::A, "redis-a"),
            ("b.toml", RedisCenter::B, "redis-b"),
        ] {
            let s = Settings::load_from(Some(&format!("{root}/{file}")), env(&[])).unwrap();
            assert_eq!(s.local_center(), center, "{file}");
            let own: member_projections::Target = own.parse().unwrap();
            assert!(s.center.projector_targets().contains(&own), "{file}");
            assert_eq!(s.kafka.replication_factor, 3, "{file}");
            assert_eq!(s.kafka.min_insync_replicas, 2, "{file}");
        }
    }

    #[test]
    fn center_name_wins_over_redis_local_center_and_unknown_targets_are_refused() {
        let s = Settings::load_from(
            None,
            env(&[
                ("MEMBER__REDIS__LOCAL_CENTER", "a"),
                ("MEMBER__CENTER__NAME", "b"),
            ]),
        )
        .unwrap();
        assert_eq!(s.local_center(), RedisCenter::B);
        let s = Settings::load_from(None, env(&[("MEMBER__REDIS__LOCAL_CENTER", "b")])).unwrap();
        assert_eq!(
            s.local_center(),
            RedisCenter::B,
            "the older name still works"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[center]\nprojectors = [\"redis-c\"]\n").unwrap();
        let err = Settings::load_from(Some(file.to_str().unwrap()), env(&[])).unwrap_err();
        assert!(err.to_string().contains("center.projectors"), "{err}");
    }

    #[test]
    fn defaults_load_with_every_local_address() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(
            s.postgres.url.expose_secret(),
            "postgres://member:member@127.0.0.1:5432/member"
        );
        assert!(s.mysql.url.expose_secret().contains("127.0.0.1:3306"));
        assert_eq!(s.redis.a.url.expose_secret(), "redis://127.0.0.1:6379");
        assert_eq!(s.redis.b.url.expose_secret(), "redis://127.0.0.1:6380");
        assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(s.kafka.partitions, 6);
        assert_eq!(s.kafka.replication_factor, 1);
        assert_eq!(s.kafka.min_insync_replicas, 1);
        assert_eq!(s.kafka.retention_ms, 7 * 24 * 3_600_000);
        assert_eq!(s.kafka.session_timeout_ms, 6000);
        assert!(s.kafka.idempotent_producer);
        assert_eq!(s.kafka.fetch_wait_ms, 100);
        assert_eq!(s.mysql.logical_shards, 64);
        assert_eq!(s.mysql.databases.len(), 4);
        assert_eq!(s.command_api.listen.port(), 8080);
        assert_eq!(s.query_api.listen.port(), 8081);
    }

    #[test]
    fn environment_overrides_nested_keys_and_lists() {
        let s = Settings::load_from(
            None,
            env(&[
                ("MEMBER__KAFKA__PARTITIONS", "7"),
                ("MEMBER__REDIS__B__URL", "redis://127.0.0.1:7000"),
                ("MEMBER__MYSQL__DATABASES", "x_0,x_1"),
                ("OTHER__KAFKA__PARTITIONS", "99"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.partitions, 7);
        assert_eq!(s.redis.b.url.expose_secret(), "redis://127.0.0.1:7000");
        assert_eq!(s.mysql.databases, vec!["x_0", "x_1"]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Settings::load_from(None, env(&[("MEMBER__KAFKA__PARTITIONS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("partitions"), "{err}");
        let err = Settings::load_from(None, env(&[("MEMBER__KAFKA__PARTITIONS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.partitions"), "{err}");
        for wait in ["0", "10001", "-5", "soon"] {
            let err = Settings::load_from(None, env(&[("MEMBER__KAFKA__FETCH_WAIT_MS", wait)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("fetch_wait_ms"), "{wait}: {err}");
        }
        for bound in ["0", "-1", "many", "99999999999"] {
            let err = Settings::load_from(
                None,
                env(&[("MEMBER__QUERY_API__FLOW__MAX_IN_FLIGHT", bound)]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("max_in_flight"), "{bound}: {err}");
        }
        // Zero writers would never commit; more than the pool holds would wait on connections.
        for writers in ["0", "-1", "four", "100000"] {
            let err = Settings::load_from(
                None,
                env(&[("MEMBER__COMMAND_API__APPEND_WRITERS", writers)]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("append_writers"), "{writers}: {err}");
        }
        let err = Settings::load_from(None, env(&[("MEMBER__POSTGRES__URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres.url"), "{err}");
        let err = Settings::load_from(
            None,
            env(&[("MEMBER__MYSQL__DATABASES", "ok,bad;drop table x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("mysql.databases"), "{err}");
        let err = Settings::load_from(None, env(&[("MEMBER__COMMAND_API__LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn bad_topic_settings_name_the_key() {
        let refused = |pairs: &[(&str, &str)], key: &str| {
            let err = Settings::load_from(None, env(pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{pairs:?}: {err}");
        };
        for bad in ["0", "-1", "three", "33"] {
            refused(
                &[("MEMBER__KAFKA__REPLICATION_FACTOR", bad)],
                "kafka.replication_factor",
            );
        }
        for bad in ["0", "-1", "two"] {
            refused(
                &[("MEMBER__KAFKA__MIN_INSYNC_REPLICAS", bad)],
                "kafka.min_insync_replicas",
            );
        }
        // More in-sync replicas than replicas: no write could ever succeed with acks=all.
        refused(
            &[
                ("MEMBER__KAFKA__REPLICATION_FACTOR", "3"),
                ("MEMBER__KAFKA__MIN_INSYNC_REPLICAS", "4"),
            ],
            "kafka.min_insync_replicas",
        );
        for bad in ["0", "-1", "59999", "31536000001", "a week"] {
            refused(
                &[("MEMBER__KAFKA__RETENTION_MS", bad)],
                "kafka.retention_ms",
            );
        }
        for bad in ["0", "5999", "300001", "soon"] {
            refused(
                &[("MEMBER__KAFKA__SESSION_TIMEOUT_MS", bad)],
                "kafka.session_timeout_ms",
            );
        }
        refused(
            &[("MEMBER__KAFKA__IDEMPOTENT_PRODUCER", "maybe")],
            "idempotent_producer",
        );
        refused(&[("MEMBER__KAFKA__BROKERS", " ")], "kafka.brokers");
        refused(&[("MEMBER__KAFKA__TOPIC", "a/b")], "kafka.topic");

        let production = Settings::load_from(
            None,
            env(&[
                ("MEMBER__KAFKA__REPLICATION_FACTOR", "3"),
                ("MEMBER__KAFKA__MIN_INSYNC_REPLICAS", "2"),
                ("MEMBER__KAFKA__PARTITIONS", "24"),
            ]),
        )
        .unwrap();
        assert_eq!(production.kafka.replication_factor, 3);
        assert_eq!(production.kafka.min_insync_replicas, 2);
        assert_eq!(production.kafka.partitions, 24);
    }

    #[test]
    fn defaults_ship_the_contract_keys() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let by_key = |k: &str| {
            s.callers
                .iter()
                .find(|c| c.key.expose_secret() == k)
                .unwrap()
        };
        assert_eq!(by_key("local-writer-key").scopes, vec![Scope::Write]);
        let order = by_key("local-order-key");
        assert_eq!(
            (order.scopes.as_slice(), order.class),
            (&[Scope::Read][..], Some(ReadClass::Order))
        );
        let marketing = by_key("local-marketing-key");
        assert_eq!(marketing.class, Some(ReadClass::Marketing));
        assert_eq!(marketing.scopes, vec![Scope::Read]);
        assert_eq!(
            by_key("local-admin-key").scopes,
            vec![Scope::Admin, Scope::Erase]
        );
        assert_eq!(s.default_keys_in_use().len(), 4);
        assert!(s.query_api.flow.marketing_share < 1.0);
    }

    #[test]
    fn debug_never_shows_keys_or_passwords() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let debug = format!("{s:?}");
        for key in DEFAULT_KEYS {
            assert!(!debug.contains(key), "{key} in Debug");
        }
        assert!(!debug.contains("member:member@"), "a password in Debug");
        assert!(debug.contains("member:***@127.0.0.1:5432"), "{debug}");
        assert!(debug.contains("local-writer"), "caller names stay visible");
        let s = Settings::load_from(
            None,
            env(&[(
                "MEMBER__SEARCH__ELASTICSEARCH__BACKUP_URL",
                "https://elastic:es-secret@127.0.0.1:9201",
            )]),
        )
        .unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("es-secret"),
            "an Elasticsearch password in Debug"
        );
        assert!(debug.contains("elastic:***@127.0.0.1:9201"), "{debug}");
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn query_api_values_are_validated_by_key() {
        let err = Settings::load_from(
            None,
            env(&[("MEMBER__QUERY_API__FLOW__MARKETING_SHARE", "1.5")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("query_api.flow.marketing_share"), "{err}");
        let err = Settings::load_from(None, env(&[("MEMBER__QUERY_API__BREAKER__MIN_CALLS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("query_api.breaker.min_calls"), "{err}");
        for bad in ["0", "1.5", "-0.1"] {
            for key in [
                "query_api.breaker.failure_rate",
                "query_api.breaker.slow_call_rate",
            ] {
                let var = format!("MEMBER__{}", key.to_uppercase().replace('.', "__"));
                let err = Settings::load_from(None, vec![(var, bad.to_owned())])
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(key), "{key} = {bad}: {err}");
            }
        }
    }

    /// The counts and times typed `NonZero*`: serde refuses 0 (and negatives, and words), and the
    /// error still names the full key, as the hand-written checks they replace did.
    #[test]
    fn positive_values_are_refused_at_zero_by_key() {
        for key in [
            "postgres.max_connections",
            "mysql.max_connections",
            "search.elasticsearch.shards",
            "command_api.append_writers",
            "command_api.write_rate_per_second",
            "command_api.write_burst",
            "query_api.backends.redis_timeout_ms",
            "query_api.backends.redis_slow_ms",
            "query_api.backends.search_timeout_ms",
            "query_api.backends.search_slow_ms",
            "query_api.backends.mysql_timeout_ms",
            "query_api.backends.mysql_slow_ms",
            "query_api.breaker.window_ms",
            "query_api.breaker.min_calls",
            "query_api.breaker.open_ms",
            "query_api.breaker.half_open_probes",
            "query_api.flow.global_rate_per_second",
            "query_api.flow.global_burst",
            "query_api.flow.hotspot_rate_per_second",
            "query_api.flow.hotspot_burst",
            "query_api.flow.max_in_flight",
            "query_api.cache.near_cache_capacity",
            "query_api.cache.near_cache_ttl_ms",
            "query_api.cache.served_capacity",
            "query_api.cache.fill_concurrency",
        ] {
            let var = format!("MEMBER__{}", key.to_uppercase().replace('.', "__"));
            for bad in ["0", "-1", "some"] {
                let err = Settings::load_from(None, vec![(var.clone(), bad.to_owned())])
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(key), "{key} = {bad}: {err}");
            }
            // One append writer, so that postgres.max_connections = 1 is allowed too.
            let writers = (
                "MEMBER__COMMAND_API__APPEND_WRITERS".to_owned(),
                "1".to_owned(),
            );
            Settings::load_from(None, vec![writers, (var, "1".to_owned())])
                .unwrap_or_else(|e| panic!("{key} = 1: {e}"));
        }
        // In an override file too, where the value is a TOML integer rather than a string.
        let dir = std::env::temp_dir().join(format!("member-nonzero-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("override.toml");
        std::fs::write(&file, "[query_api.breaker]\nhalf_open_probes = 0\n").unwrap();
        let err = Settings::load_from(Some(file.to_str().unwrap()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("query_api.breaker.half_open_probes"), "{err}");
    }

    #[test]
    fn callers_come_from_the_override_file() {
        let dir = std::env::temp_dir().join(format!("member-callers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("callers.toml");
        std::fs::write(
            &file,
            "[[callers]]\nname = \"hotel\"\nkey = \"hotel-secret-key\"\n\
             scopes = [\"read\"]\nclass = \"order\"\nrate_per_second = 10\nburst = 20\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(file.to_str().unwrap()), env(&[])).unwrap();
        assert_eq!(s.callers.len(), 1, "{:?}", s.callers);
        assert_eq!(s.callers[0].name, "hotel");
        assert!(s.default_keys_in_use().is_empty());

        let refused = |toml: &str| {
            std::fs::write(&file, toml).unwrap();
            Settings::load_from(Some(file.to_str().unwrap()), env(&[]))
                .unwrap_err()
                .to_string()
        };
        let err = refused(
            "[[callers]]\nname = \"x\"\nkey = \"x-secret-key\"\nscopes = [\"read\"]\n\
             class = \"vip\"\n",
        );
        assert!(err.contains("vip") || err.contains("class"), "{err}");
        let err =
            refused("[[callers]]\nname = \"x\"\nkey = \"x-secret-key\"\nscopes = [\"read\"]\n");
        assert!(err.contains("callers.class"), "{err}");
        let err =
            refused("[[callers]]\nname = \"x\"\nkey = \"x-secret-key\"\nscopes = [\"root\"]\n");
        assert!(err.contains("root"), "{err}");
        let err = refused("[[callers]]\nname = \"x\"\nkey = \"x-secret-key\"\nscopes = []\n");
        assert!(err.contains("callers.scopes"), "{err}");
        let err = refused(
            "[[callers]]\nname = \"x\"\nkey = \"same-secret-key\"\nscopes = [\"write\"]\n\
             [[callers]]\nname = \"y\"\nkey = \"same-secret-key\"\nscopes = [\"admin\"]\n",
        );
        assert!(err.contains("callers.key"), "{err}");
        assert!(
            !err.contains("same-secret-key"),
            "the error names the key: {err}"
        );
        let err = refused("[[callers]]\nname = \"x\"\nkey = \"short\"\nscopes = [\"write\"]\n");
        assert!(
            err.contains("callers.key") && !err.contains("short\""),
            "{err}"
        );
        let err = refused(
            "[[callers]]\nname = \"x\"\nkey = \"x-secret-key\"\nscopes = [\"write\"]\nwrite_burst = 0\n",
        );
        assert!(err.contains("callers.write_burst"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("member-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("override.toml");
        std::fs::write(&file, "[kafka]\nparitions = 3\n").unwrap();
        let err = Settings::load_from(Some(file.to_str().unwrap()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("paritions"), "{err}");
    }
}
