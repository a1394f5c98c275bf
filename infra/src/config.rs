//! Configuration: `config/default.toml` (compiled in), then the file named by `MEMBER_CONFIG`,
//! then environment variables `MEMBER__SECTION__KEY`. Unknown keys and bad values are refused
//! at start with an error that names the key.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    pub command_api: ApiSettings,
    pub query_api: ApiSettings,
    pub relay: RelaySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSettings {
    pub url: String,
    pub logical_shards: u32,
    pub databases: Vec<String>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub a: RedisCenterSettings,
    pub b: RedisCenterSettings,
    pub local_center: RedisCenter,
    pub ttl_seconds: u64,
    pub fence_ttl_ms: u64,
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
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub partitions: u32,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSettings {
    pub primary_url: String,
    pub backup_url: String,
    pub marketing_url: String,
    pub shards: u32,
    pub index_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    pub batch_size: u32,
    pub idle_poll_ms: u64,
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
        url_scheme(
            "postgres.url",
            &self.postgres.url,
            &["postgres", "postgresql"],
        )?;
        url_scheme("mysql.url", &self.mysql.url, &["mysql", "mariadb"])?;
        url_scheme("redis.a.url", &self.redis.a.url, &["redis", "rediss"])?;
        url_scheme("redis.b.url", &self.redis.b.url, &["redis", "rediss"])?;
        if self.postgres.max_connections == 0 {
            return Err(invalid("postgres.max_connections", "must be at least 1"));
        }
        if self.mysql.max_connections == 0 {
            return Err(invalid("mysql.max_connections", "must be at least 1"));
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
        if self.kafka.partitions == 0 || self.kafka.partitions > 10_000 {
            return Err(invalid("kafka.partitions", "must be between 1 and 10000"));
        }
        if self.kafka.topic.is_empty()
            || !self
                .kafka
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(invalid(
                "kafka.topic",
                "must be a non-empty [A-Za-z0-9._-] name",
            ));
        }
        if self.relay.batch_size == 0 || self.relay.batch_size > 100_000 {
            return Err(invalid("relay.batch_size", "must be between 1 and 100000"));
        }
        if self.search.elasticsearch.shards == 0 {
            return Err(invalid("search.elasticsearch.shards", "must be at least 1"));
        }
        Ok(())
    }
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
    fn defaults_load_with_every_local_address() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(
            s.postgres.url,
            "postgres://member:member@127.0.0.1:5432/member"
        );
        assert!(s.mysql.url.contains("127.0.0.1:3306"));
        assert_eq!(s.redis.a.url, "redis://127.0.0.1:6379");
        assert_eq!(s.redis.b.url, "redis://127.0.0.1:6380");
        assert_eq!(s.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(s.kafka.partitions, 12);
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
                ("MEMBER__KAFKA__PARTITIONS", "3"),
                ("MEMBER__REDIS__B__URL", "redis://127.0.0.1:7000"),
                ("MEMBER__MYSQL__DATABASES", "x_0,x_1"),
                ("OTHER__KAFKA__PARTITIONS", "99"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.partitions, 3);
        assert_eq!(s.redis.b.url, "redis://127.0.0.1:7000");
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
