//! Where a row lives in the MySQL shards: a pure function of the key and the configuration.
//!
//! Two levels, so that re-sharding never rehashes anything:
//! - a **logical shard** is `hash(key) % logical_shards`. `logical_shards` is fixed for the life
//!   of a deployment (64 locally, 1,024 in production): changing it moves almost every row;
//! - a logical shard lives in the **database** `databases[shard % databases.len()]`. Adding or
//!   removing a database only moves whole logical shards between databases (copy the tables,
//!   switch the configuration); the logical shard of a key never changes.
//!
//! A member row lives in the shard of its member id (the id's 16 bytes), an identity-index row
//! in the shard of the identity (its canonical text form, `IdentityKey::to_string()`), so a
//! lookup by identity touches one shard, then the member's shard.
//!
//! The hash is XXH64 with seed 0 (`xxhash-rust`): a published algorithm with fixed output, so
//! every build, every release and every other language agrees on it. Never `std`'s
//! `DefaultHasher`: its algorithm may change between Rust releases, which would silently move
//! rows to shards nobody reads. The tests pin known values; a change there is a re-shard.

use member_domain::IdentityKey;
use uuid::Uuid;

/// The stable 64-bit hash used for shard routing: XXH64 with seed 0.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, 0)
}

/// The routing of member and identity keys to logical shards and of logical shards to databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    logical_shards: u32,
    databases: Vec<String>,
}

/// A shard map that cannot route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardMapError {
    #[error("at least one logical shard is needed")]
    NoShards,
    #[error("at least one database is needed")]
    NoDatabases,
    #[error("{shards} logical shards cannot fill {databases} databases")]
    FewerShardsThanDatabases { shards: u32, databases: usize },
}

impl ShardMap {
    /// `logical_shards` at least 1 and at least the number of databases (so that no database is
    /// left empty).
    pub fn new(logical_shards: u32, databases: Vec<String>) -> Result<Self, ShardMapError> {
        if logical_shards == 0 {
            return Err(ShardMapError::NoShards);
        }
        if databases.is_empty() {
            return Err(ShardMapError::NoDatabases);
        }
        if (logical_shards as usize) < databases.len() {
            return Err(ShardMapError::FewerShardsThanDatabases {
                shards: logical_shards,
                databases: databases.len(),
            });
        }
        Ok(Self {
            logical_shards,
            databases,
        })
    }

    pub fn logical_shards(&self) -> u32 {
        self.logical_shards
    }

    pub fn databases(&self) -> &[String] {
        &self.databases
    }

    fn shard_of_bytes(&self, bytes: &[u8]) -> u32 {
        // The remainder is below `logical_shards`, a u32.
        (stable_hash(bytes) % u64::from(self.logical_shards)) as u32
    }

    /// The logical shard of a member row.
    pub fn shard_of_member(&self, member_id: Uuid) -> u32 {
        self.shard_of_bytes(member_id.as_bytes())
    }

    /// The logical shard of an identity-index row.
    pub fn shard_of_identity(&self, key: &IdentityKey) -> u32 {
        self.shard_of_bytes(key.to_string().as_bytes())
    }

    /// The position in `databases` of the database that holds a logical shard.
    pub fn database_index_of(&self, shard: u32) -> usize {
        shard as usize % self.databases.len()
    }

    /// The database that holds a logical shard: `databases[shard % databases.len()]`.
    pub fn database_of(&self, shard: u32) -> &str {
        &self.databases[self.database_index_of(shard)]
    }

    /// The logical shards held by the database at `index` in `databases`, ascending.
    pub fn shards_of_database(&self, index: usize) -> impl Iterator<Item = u32> + '_ {
        (0..self.logical_shards).filter(move |&s| self.database_index_of(s) == index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(shards: u32, databases: usize) -> ShardMap {
        ShardMap::new(
            shards,
            (0..databases).map(|i| format!("member_db_{i}")).collect(),
        )
        .unwrap()
    }

    fn mobile(n: u64) -> IdentityKey {
        IdentityKey::parse("mobile", &format!("139{n:08}")).unwrap()
    }

    /// Published XXH64 values: the hash is the algorithm everyone else can compute too.
    #[test]
    fn the_hash_is_xxh64_seed_0() {
        assert_eq!(stable_hash(b""), 0xef46_db37_51d8_e999);
        assert_eq!(stable_hash(b"abc"), 0x44bc_2cf5_ad77_0999);
    }

    /// Pinned routes. If this test fails, the routing changed and every existing row is in the
    /// wrong shard: that is a re-shard (a rebuild), never a refactoring.
    #[test]
    fn routes_are_pinned() {
        let m = map(1024, 4);
        let member = Uuid::parse_str("0190f3a8-7c1e-7d2a-9b3c-1234567890ab").unwrap();
        let key = IdentityKey::parse("mobile", "13800138000").unwrap();
        assert_eq!(key.to_string(), "mobile:+8613800138000");
        assert_eq!(
            (m.shard_of_member(member), m.shard_of_identity(&key)),
            PINNED
        );
        assert_eq!(
            m.database_of(PINNED.0),
            m.databases()[PINNED.0 as usize % 4]
        );
    }
    const PINNED: (u32, u32) = (752, 920);

    #[test]
    fn invalid_maps_are_refused() {
        assert_eq!(
            ShardMap::new(0, vec!["a".into()]),
            Err(ShardMapError::NoShards)
        );
        assert_eq!(ShardMap::new(4, vec![]), Err(ShardMapError::NoDatabases));
        assert!(matches!(
            ShardMap::new(2, vec!["a".into(), "b".into(), "c".into()]),
            Err(ShardMapError::FewerShardsThanDatabases { .. })
        ));
    }

    #[test]
    fn every_shard_has_exactly_one_database() {
        let m = map(64, 3);
        let mut seen = vec![0; 64];
        for db in 0..3 {
            for s in m.shards_of_database(db) {
                assert_eq!(m.database_of(s), m.databases()[db]);
                seen[s as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    /// Counts per shard stay within 20% of the mean (about 6 standard deviations at 1,000 keys
    /// per shard), for random ids and for the structured keys real data has: time-ordered v7 ids
    /// created in a burst, and consecutive mobile numbers.
    fn assert_roughly_uniform(what: &str, shards: impl Iterator<Item = u32>, n: u32) {
        let mut counts = vec![0u32; n as usize];
        let mut total = 0u32;
        for s in shards {
            counts[s as usize] += 1;
            total += 1;
        }
        let mean = f64::from(total) / f64::from(n);
        for (shard, &c) in counts.iter().enumerate() {
            let dev = (f64::from(c) - mean).abs() / mean;
            assert!(
                dev < 0.2,
                "{what}: shard {shard} holds {c} keys, mean {mean}"
            );
        }
    }

    #[test]
    fn keys_spread_roughly_uniformly() {
        let m = map(64, 4);
        let keys: u32 = 64_000;
        assert_roughly_uniform(
            "v4 member ids",
            (0..keys).map(|_| m.shard_of_member(Uuid::new_v4())),
            64,
        );
        assert_roughly_uniform(
            "v7 member ids",
            (0..keys).map(|_| m.shard_of_member(Uuid::now_v7())),
            64,
        );
        assert_roughly_uniform(
            "consecutive mobiles",
            (0..u64::from(keys)).map(|i| m.shard_of_identity(&mobile(i))),
            64,
        );
        assert_roughly_uniform(
            "consecutive cards",
            (0..u64::from(keys)).map(|i| {
                let key = IdentityKey::parse("elong_card", &format!("{i:012}")).unwrap();
                m.shard_of_identity(&key)
            }),
            64,
        );
    }

    proptest! {
        #[test]
        fn member_routing_is_deterministic_and_in_range(
            bytes in any::<[u8; 16]>(),
            shards in 1u32..=4096,
        ) {
            let m = map(shards, 1);
            let id = Uuid::from_bytes(bytes);
            let s = m.shard_of_member(id);
            prop_assert!(s < shards);
            prop_assert_eq!(s, m.shard_of_member(id));
            prop_assert_eq!(s, map(shards, 1).shard_of_member(Uuid::from_bytes(bytes)));
        }

        #[test]
        fn identity_routing_is_deterministic_and_in_range(
            n in 0u64..100_000_000,
            shards in 1u32..=4096,
        ) {
            let m = map(shards, 1);
            let key = mobile(n);
            let s = m.shard_of_identity(&key);
            prop_assert!(s < shards);
            prop_assert_eq!(s, m.shard_of_identity(&key.clone()));
            let reparsed = IdentityKey::parse_canonical(&key.to_string()).unwrap();
            prop_assert_eq!(s, m.shard_of_identity(&reparsed));
        }

        /// Re-sharding moves logical shards between databases; it never moves a key to another
        /// logical shard.
        #[test]
        fn changing_the_databases_never_changes_a_logical_shard(
            bytes in any::<[u8; 16]>(),
            n in 0u64..100_000_000,
            shards in 16u32..=2048,
            before in 1usize..=16,
            after in 1usize..=16,
        ) {
            let (a, b) = (map(shards, before), map(shards, after));
            let id = Uuid::from_bytes(bytes);
            let key = mobile(n);
            prop_assert_eq!(a.shard_of_member(id), b.shard_of_member(id));
            prop_assert_eq!(a.shard_of_identity(&key), b.shard_of_identity(&key));
            let s = b.shard_of_member(id);
            prop_assert!(b.databases().iter().any(|d| d == b.database_of(s)));
            prop_assert_eq!(b.database_of(s), format!("member_db_{}", s as usize % after));
        }
    }
}
