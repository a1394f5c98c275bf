//! Sealing and opening the identity values of one stored event payload. No I/O.
//!
//! A bind or unbind stores its identity as `{"kind", "app"?, "sealed"}`: the kind and the app
//! stay readable (operators filter on them, and they are not personal data), the value and an
//! openid's unionid are sealed together, bound to the member and the identity's kind and app.
//! Payloads written before encryption (`"value"` in the clear) are read as they are, until
//! `member keys migrate` rewrites them.

use serde_json::{Map, Value};

use super::cipher::{self, Key, OpenError};

/// What an identity value reads as once its member's key is destroyed (the same text the
/// redaction of migration 0008 wrote), so the fold of an erased member stays its tombstone.
pub const ERASED: &str = "[erased]";

/// The fields of an identity that are personal data.
const PERSONAL: [&str; 2] = ["value", "unionid"];

/// The identity object inside a bind's or an unbind's payload, if the payload is one.
fn identity_mut(payload: &mut Value) -> Option<&mut Map<String, Value>> {
    let (_, body) = payload.as_object_mut()?.iter_mut().next()?;
    body.get_mut("identity")?.as_object_mut()
}

/// The identity object of a payload (read-only).
pub fn identity(payload: &Value) -> Option<&Map<String, Value>> {
    payload
        .as_object()?
        .values()
        .next()?
        .get("identity")?
        .as_object()
}

fn associated_data(member_id: &str, identity: &Map<String, Value>) -> Vec<u8> {
    let field = |name: &str| identity.get(name).and_then(Value::as_str).unwrap_or("");
    format!("member:{member_id}|{}|{}", field("kind"), field("app")).into_bytes()
}

/// Whether the payload holds an identity value in the clear.
pub fn has_plaintext(payload: &Value) -> bool {
    identity(payload).is_some_and(|i| i.contains_key("value"))
}

/// Seals the identity values of `payload` (a bind or an unbind) with `key`; other events and
/// payloads already sealed are left as they are.
pub fn seal(member_id: &str, payload: &mut Value, key: &Key) {
    let Some(identity) = identity_mut(payload) else {
        return;
    };
    if !identity.contains_key("value") {
        return;
    }
    let mut personal = Map::new();
    for field in PERSONAL {
        if let Some(v) = identity.remove(field) {
            personal.insert(field.to_owned(), v);
        }
    }
    let plain = serde_json::to_vec(&personal).expect("a JSON map serializes");
    let sealed = cipher::seal(key, &associated_data(member_id, identity), &plain);
    identity.insert("sealed".to_owned(), Value::String(sealed));
}

/// Opens the identity values of `payload` with the member's key. Without a key (the member was
/// erased and its key destroyed) every value reads as [`ERASED`].
pub fn open(member_id: &str, payload: &mut Value, key: Option<&Key>) -> Result<(), OpenError> {
    let Some(identity) = identity_mut(payload) else {
        return Ok(());
    };
    let Some(Value::String(sealed)) = identity.remove("sealed") else {
        return Ok(());
    };
    let Some(key) = key else {
        identity.insert("value".to_owned(), Value::String(ERASED.to_owned()));
        if identity.get("kind").and_then(Value::as_str) == Some("wechat_openid") {
            identity.insert("unionid".to_owned(), Value::String(ERASED.to_owned()));
        }
        return Ok(());
    };
    let plain = cipher::open(key, &associated_data(member_id, identity), &sealed)?;
    let Ok(Value::Object(personal)) = serde_json::from_slice(&plain) else {
        return Err(OpenError);
    };
    identity.extend(personal);
    Ok(())
}

#[cfg(test)]
mod tests {
    use member_domain::{Identity, MemberEvent, UnbindReason};
    use proptest::prelude::*;

    use super::*;
    use crate::event_store::vault::cipher::random_key;

    fn openid(value: &str, unionid: &str) -> Identity {
        Identity::parse("wechat_openid", value, Some("tongcheng_mp"), Some(unionid))
            .expect("valid openid")
    }

    fn bound(identity: Identity) -> Value {
        serde_json::to_value(MemberEvent::IdentityBound { identity }).expect("serializes")
    }

    #[test]
    fn a_sealed_bind_keeps_kind_and_app_and_hides_the_values() {
        let key = random_key();
        let original = bound(openid(
            "oAbCdEfGhIjKlMnOpQrStUvWx",
            "uAbCdEfGhIjKlMnOpQrStUvWxYz12",
        ));
        let mut payload = original.clone();
        seal("m-1", &mut payload, &key);
        let text = payload.to_string();
        assert!(!text.contains("oAbCdEfGhIjKlMnOpQrStUvWx"), "{text}");
        assert!(!text.contains("uAbCdEfGhIjKlMnOpQrStUvWxYz12"), "{text}");
        assert!(text.contains("wechat_openid") && text.contains("tongcheng_mp"));
        assert!(!has_plaintext(&payload));

        open("m-1", &mut payload, Some(&key)).expect("opens");
        assert_eq!(payload, original);
    }

    #[test]
    fn a_sealed_value_does_not_open_for_another_member() {
        let key = random_key();
        let mut payload = bound(Identity::parse("mobile", "13800000000", None, None).unwrap());
        seal("m-1", &mut payload, &key);
        assert!(open("m-2", &mut payload.clone(), Some(&key)).is_err());
    }

    #[test]
    fn without_the_key_an_unbind_reads_as_erased_and_still_folds() {
        let key = random_key();
        let event = MemberEvent::IdentityUnbound {
            identity: openid("oAbCdEfGhIjKlMnOpQrStUvWx", "uAbCdEfGhIjKlMnOpQrStUvWxYz12"),
            reason: UnbindReason::MemberErased,
        };
        let mut payload = serde_json::to_value(event).unwrap();
        seal("m-1", &mut payload, &key);
        open("m-1", &mut payload, None).expect("reads without a key");
        let event: MemberEvent = serde_json::from_value(payload).expect("still an event");
        let MemberEvent::IdentityUnbound { identity, .. } = event else {
            panic!("not an unbind");
        };
        assert_eq!(
            serde_json::to_value(&identity).unwrap()["value"],
            Value::String(ERASED.into())
        );
    }

    #[test]
    fn payloads_without_identities_and_plaintext_payloads_pass_through() {
        let key = random_key();
        let mut registered = serde_json::to_value(MemberEvent::MemberRegistered {}).unwrap();
        seal("m-1", &mut registered, &key);
        assert_eq!(registered, serde_json::json!({"MemberRegistered": {}}));
        let plain = bound(Identity::parse("mobile", "13800000000", None, None).unwrap());
        let mut read = plain.clone();
        open("m-1", &mut read, Some(&key)).expect("plaintext reads as is");
        assert_eq!(read, plain);
        assert!(has_plaintext(&plain));
    }

    proptest! {
        #[test]
        fn every_identity_round_trips_and_no_value_is_left_in_the_clear(
            digits in "[0-9]{8}", account in "[a-z][a-z0-9_]{5,20}",
        ) {
            let key = random_key();
            let identities = [
                Identity::parse("mobile", &format!("138{digits}"), None, None).unwrap(),
                Identity::parse("elong_account", &account, None, None).unwrap(),
                Identity::parse("elong_card", &format!("9{digits}"), None, None).unwrap(),
            ];
            for identity in identities {
                let original = bound(identity.clone());
                let mut payload = original.clone();
                seal("m-9", &mut payload, &key);
                let key_text = identity.key().to_string();
                let value = key_text.split(':').next_back().unwrap();
                prop_assert!(!payload.to_string().contains(value));
                open("m-9", &mut payload, Some(&key)).unwrap();
                prop_assert_eq!(payload, original);
            }
        }
    }
}
