//! Deterministic member ids for the tools that create members from outside data (seed, import):
//! the same input always names the same member, so re-running a tool finds its earlier work
//! instead of creating a second member.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A name-based UUID: the first 16 bytes of SHA-256(`namespace` NUL `name`), stamped as UUID
/// version 8 (custom). Like version 5, but without pulling SHA-1 into the build (ADR 0010).
pub fn name_based(namespace: &str, name: &str) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update([0]);
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_gives_the_same_id_and_namespaces_separate() {
        assert_eq!(name_based("seed", "1/2"), name_based("seed", "1/2"));
        assert_ne!(name_based("seed", "1/2"), name_based("seed", "1/3"));
        assert_ne!(name_based("seed", "x"), name_based("legacy", "x"));
        assert_eq!(name_based("seed", "x").get_version_num(), 8);
    }
}
