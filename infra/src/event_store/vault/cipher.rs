//! The primitives, all from RustCrypto: data keys wrapped by a master key (AES-256-GCM), identity
//! values sealed by a member's data key (XChaCha20-Poly1305: 192-bit random nonces, so keys
//! never run out of nonces), and keyed hashes of identities (HMAC-SHA-256). No I/O.

use aes_gcm::Aes256Gcm;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

/// A 256-bit key: zeroized on drop, never printed.
pub type Key = SecretBox<[u8; 32]>;

const GCM_NONCE: usize = 12;
const XNONCE: usize = 24;

/// Sealed data could not be opened: the wrong key, or bytes that were changed.
#[derive(Debug, thiserror::Error)]
#[error("sealed data could not be opened (wrong key or altered bytes)")]
pub struct OpenError;

/// A fresh random key.
pub fn random_key() -> Key {
    let mut key = Box::new([0u8; 32]);
    rand::rng().fill_bytes(key.as_mut());
    SecretBox::new(key)
}

/// A key from its base64 text (configuration); `None` unless it is exactly 32 bytes.
pub fn key_from_base64(text: &str) -> Option<Key> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(SecretBox::new(Box::new(key)))
}

/// `data_key` wrapped by `master`, bound to `member_id` (associated data): nonce ‖ ciphertext.
pub fn wrap(master: &Key, member_id: &str, data_key: &Key) -> Vec<u8> {
    let cipher = Aes256Gcm::new(master.expose_secret().into());
    let mut nonce = [0u8; GCM_NONCE];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: data_key.expose_secret(),
                aad: member_id.as_bytes(),
            },
        )
        .expect("AES-GCM encrypts any 32 bytes");
    [nonce.as_slice(), &sealed].concat()
}

/// The data key `wrapped` holds, if `master` wrapped it for `member_id`.
pub fn unwrap(master: &Key, member_id: &str, wrapped: &[u8]) -> Result<Key, OpenError> {
    if wrapped.len() < GCM_NONCE {
        return Err(OpenError);
    }
    let (nonce, sealed) = wrapped.split_at(GCM_NONCE);
    let cipher = Aes256Gcm::new(master.expose_secret().into());
    let plain = cipher
        .decrypt(
            aes_gcm::Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: member_id.as_bytes(),
            },
        )
        .map_err(|_| OpenError)?;
    let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| OpenError)?;
    Ok(SecretBox::new(Box::new(key)))
}

/// `plain` sealed by `key` with associated data `aad`, as base64 text of nonce ‖ ciphertext.
pub fn seal(key: &Key, aad: &[u8], plain: &[u8]) -> String {
    let cipher = XChaCha20Poly1305::new(key.expose_secret().into());
    let mut nonce = [0u8; XNONCE];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 encrypts any message of this size");
    B64.encode([nonce.as_slice(), &sealed].concat())
}

/// What [`seal`] sealed, if `key` and `aad` are the ones it was sealed with.
pub fn open(key: &Key, aad: &[u8], sealed: &str) -> Result<Vec<u8>, OpenError> {
    let bytes = B64.decode(sealed).map_err(|_| OpenError)?;
    if bytes.len() < XNONCE {
        return Err(OpenError);
    }
    let (nonce, sealed) = bytes.split_at(XNONCE);
    XChaCha20Poly1305::new(key.expose_secret().into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map_err(|_| OpenError)
}

/// HMAC-SHA-256 of `parts` (each length-prefixed, so no two lists hash alike) under `key`, hex.
pub fn keyed_hash(key: &Key, parts: &[&[u8]]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret()).expect("HMAC takes any key");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_only_for_its_member_and_master() {
        let (master, other) = (random_key(), random_key());
        let data = random_key();
        let wrapped = wrap(&master, "m-1", &data);
        let opened = unwrap(&master, "m-1", &wrapped).expect("opens");
        assert_eq!(opened.expose_secret(), data.expose_secret());
        assert!(unwrap(&master, "m-2", &wrapped).is_err());
        assert!(unwrap(&other, "m-1", &wrapped).is_err());
        let mut altered = wrapped.clone();
        altered[20] ^= 1;
        assert!(unwrap(&master, "m-1", &altered).is_err());
    }

    #[test]
    fn sealed_text_opens_only_with_its_key_and_associated_data() {
        let key = random_key();
        let sealed = seal(&key, b"aad", b"13800000000");
        assert!(!sealed.contains("13800000000"));
        assert_eq!(open(&key, b"aad", &sealed).expect("opens"), b"13800000000");
        assert!(open(&key, b"other", &sealed).is_err());
        assert!(open(&random_key(), b"aad", &sealed).is_err());
        assert!(open(&key, b"aad", "not base64!").is_err());
        assert!(open(&key, b"aad", "AAAA").is_err());
        assert_ne!(
            seal(&key, b"aad", b"x"),
            seal(&key, b"aad", b"x"),
            "every seal draws a fresh nonce"
        );
    }

    #[test]
    fn keyed_hashes_depend_on_the_key_and_the_split_of_the_parts() {
        let (a, b) = (random_key(), random_key());
        let h = keyed_hash(&a, &[b"mobile", b"13800000000"]);
        assert_eq!(h.len(), 64);
        assert_eq!(h, keyed_hash(&a, &[b"mobile", b"13800000000"]));
        assert_ne!(h, keyed_hash(&b, &[b"mobile", b"13800000000"]));
        assert_ne!(h, keyed_hash(&a, &[b"mobile1", b"3800000000"]));
    }

    #[test]
    fn configured_keys_must_be_32_bytes_of_base64() {
        let text = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(key_from_base64(&text).is_some());
        assert!(key_from_base64("c2hvcnQ=").is_none());
        assert!(key_from_base64("not base64").is_none());
    }
}
