//! The projection targets: the read stores materialized from the event stream.

use std::fmt;
use std::str::FromStr;

/// A read store fed by its own projector (its own Kafka consumer group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Mysql,
    RedisA,
    RedisB,
    SearchPrimary,
    SearchBackup,
    SearchMarketing,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Mysql,
        Target::RedisA,
        Target::RedisB,
        Target::SearchPrimary,
        Target::SearchBackup,
        Target::SearchMarketing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Mysql => "mysql",
            Target::RedisA => "redis-a",
            Target::RedisB => "redis-b",
            Target::SearchPrimary => "search-primary",
            Target::SearchBackup => "search-backup",
            Target::SearchMarketing => "search-marketing",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown target name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown target {0:?} (expected one of mysql, redis-a, redis-b, search-primary, search-backup, search-marketing)")]
pub struct UnknownTarget(pub String);

impl FromStr for Target {
    type Err = UnknownTarget;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTarget(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for t in Target::ALL {
            assert_eq!(t.as_str().parse::<Target>(), Ok(t));
        }
        assert!("redis".parse::<Target>().is_err());
        assert!("MYSQL".parse::<Target>().is_err());
    }
}
