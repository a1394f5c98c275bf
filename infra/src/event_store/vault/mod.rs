//! Crypto-shredding: the keys that seal members' identity values in the event store
//! (docs/decisions/0033).
//!
//! - [`cipher`]: the primitives (AES-256-GCM key wrapping, XChaCha20-Poly1305 sealing,
//!   HMAC-SHA-256 keyed hashes);
//! - [`payload`]: sealing and opening the identity values of one event payload;
//! - [`keys`]: the `member_keys` table (each member's data key, wrapped) and its rotation;
//! - [`rewrite`]: the one-time rewrite of a store written before encryption.
//!
//! The [`Vault`] holds the master keys and the identity hash key, and caches unwrapped data keys
//! for a few minutes, so a command or the relay does not read `member_keys` for every event.

pub mod cipher;
pub mod keys;
pub mod payload;
pub mod rewrite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use member_domain::IdentityKey;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use crate::config::EncryptionSettings;
use cipher::{Key, OpenError};

/// How long an unwrapped data key stays in memory after its last use. An erased member's key is
/// destroyed in the database by the purge (and dropped from this process's cache at once); in
/// other processes it lives at most this long, and no command of an erased member is accepted.
const KEY_CACHE_IDLE: Duration = Duration::from_secs(300);
const KEY_CACHE_ENTRIES: u64 = 200_000;

/// The metadata field that carries a new member's wrapped data key to the append's trigger,
/// which stores it in `member_keys` and removes it from the event (migration 0010).
pub const MEMBER_KEY_FIELD: &str = "member_key";
/// The metadata field with the keyed hash of a bind's or an unbind's identity: what
/// `identity_owners` is keyed on, so the trigger never sees a value.
pub const IDENTITY_REF_FIELD: &str = "identity_ref";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
    /// A data key was wrapped by a master key the configuration does not hold: add it to
    /// `encryption.master_keys` (an old key must stay until `member keys rotate` ran).
    #[error("member {member_id}: its data key was wrapped by master key {key_id:?}, which encryption.master_keys does not hold")]
    UnknownMasterKey { member_id: String, key_id: String },
    /// A wrapped key or a sealed value did not open: altered bytes, or the wrong key.
    #[error("member {member_id}: {source}")]
    Open {
        member_id: String,
        #[source]
        source: OpenError,
    },
}

/// The master keys, the identity hash key and a cache of data keys. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    masters: HashMap<String, Key>,
    current: String,
    identity_hash: Key,
    data_keys: moka::sync::Cache<String, Arc<Key>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("master_key_id", &self.inner.current)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// The vault of validated settings (`Settings::load` checked every key).
    pub fn new(settings: &EncryptionSettings) -> Self {
        let decode = |text: &secrecy::SecretString| {
            cipher::key_from_base64(text.expose_secret())
                .expect("encryption keys are validated when the settings load")
        };
        Self {
            inner: Arc::new(Inner {
                masters: settings
                    .master_keys
                    .iter()
                    .map(|(id, key)| (id.clone(), decode(key)))
                    .collect(),
                current: settings.master_key_id.clone(),
                identity_hash: decode(&settings.identity_hmac_key),
                data_keys: moka::sync::Cache::builder()
                    .max_capacity(KEY_CACHE_ENTRIES)
                    .time_to_idle(KEY_CACHE_IDLE)
                    .build(),
            }),
        }
    }

    /// The keyed hash of an identity: the key of `identity_owners` and of the trigger's
    /// opaque references (the first 16 digits), never reversible without the key.
    pub fn identity_ref(&self, key: &IdentityKey) -> String {
        self.identity_ref_of_text(&key.to_string())
    }

    /// [`identity_ref`](Self::identity_ref) of an identity key's canonical text.
    pub fn identity_ref_of_text(&self, key: &str) -> String {
        cipher::keyed_hash(&self.inner.identity_hash, &[b"identity", key.as_bytes()])
    }

    /// The keyed hash of an unkeyed request digest (see [`keyed_request_hash`]), unprefixed:
    /// a request body holds identity values, and an unkeyed hash of a mobile is guessable.
    ///
    /// [`keyed_request_hash`]: Self::keyed_request_hash
    fn request_hash(&self, digest: &str) -> String {
        cipher::keyed_hash(&self.inner.identity_hash, &[b"request", digest.as_bytes()])
    }

    /// A fresh data key for `member_id`, and its wrapped form as the trigger stores it
    /// (`<master key id>:<base64 of the wrapped key>`).
    pub fn new_data_key(&self, member_id: &str) -> (Arc<Key>, String) {
        let key = cipher::random_key();
        let master = &self.inner.masters[&self.inner.current];
        let wrapped = cipher::wrap(master, member_id, &key);
        let text = format!(
            "{}:{}",
            self.inner.current,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, wrapped)
        );
        (Arc::new(key), text)
    }

    /// Unwraps a stored data key with the master key that wrapped it.
    pub fn unwrap(&self, member_id: &str, key_id: &str, wrapped: &[u8]) -> Result<Key, VaultError> {
        let master =
            self.inner
                .masters
                .get(key_id)
                .ok_or_else(|| VaultError::UnknownMasterKey {
                    member_id: member_id.to_owned(),
                    key_id: key_id.to_owned(),
                })?;
        cipher::unwrap(master, member_id, wrapped).map_err(|source| VaultError::Open {
            member_id: member_id.to_owned(),
            source,
        })
    }

    /// The id of the master key that wraps new keys.
    pub fn current_master_key_id(&self) -> &str {
        &self.inner.current
    }

    /// The master key `key_id` (for re-wrapping).
    fn master(&self, key_id: &str) -> Option<&Key> {
        self.inner.masters.get(key_id)
    }

    fn cached(&self, member_id: &str) -> Option<Arc<Key>> {
        self.inner.data_keys.get(member_id)
    }

    fn remember(&self, member_id: &str, key: Arc<Key>) {
        self.inner.data_keys.insert(member_id.to_owned(), key);
    }

    /// Drops a member's key from this process's cache (its row was deleted, or a write that
    /// would have stored it failed).
    pub fn forget(&self, member_id: &str) {
        self.inner.data_keys.invalidate(member_id);
    }

    /// Seals a new event of `member_id` for the append: its identity values sealed with `key`,
    /// and the identity's keyed hash added to `metadata` for the trigger.
    pub fn seal_event(
        &self,
        member_id: &str,
        payload: &mut Value,
        metadata: &mut Map<String, Value>,
        key: &Key,
    ) {
        if let Some(identity) = payload::identity(payload) {
            if let Ok(identity) =
                serde_json::from_value::<member_domain::Identity>(Value::Object(identity.clone()))
            {
                metadata.insert(
                    IDENTITY_REF_FIELD.to_owned(),
                    Value::String(self.identity_ref(&identity.key())),
                );
            }
        }
        payload::seal(member_id, payload, key);
    }

    /// Opens a stored event of `member_id` (see [`payload::open`]).
    pub fn open_event(
        &self,
        member_id: &str,
        payload: &mut Value,
        key: Option<&Key>,
    ) -> Result<(), VaultError> {
        payload::open(member_id, payload, key).map_err(|source| VaultError::Open {
            member_id: member_id.to_owned(),
            source,
        })
    }
}
