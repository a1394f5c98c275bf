//! Property tests of identity normalization: valid values round-trip, everything else is refused.

use member_domain::{Identity, IdentityKey, IdentityKind};
use proptest::prelude::*;

fn valid_mobile() -> impl Strategy<Value = String> {
    "1[3-9][0-9]{9}"
}

proptest! {
    #[test]
    fn mobiles_normalize_to_plus86_and_round_trip(m in valid_mobile(), prefixed in any::<bool>()) {
        let raw = if prefixed { format!("+86{m}") } else { m.clone() };
        let id = Identity::parse("mobile", &raw, None, None).unwrap();
        let expected = format!("+86{m}");
        prop_assert_eq!(id.value(), expected);
        // Normalizing a normalized value is the identity.
        let again = Identity::parse("mobile", id.value(), None, None).unwrap();
        prop_assert_eq!(&again, &id);
        // The canonical key parses back to the same key.
        let key = id.key();
        prop_assert_eq!(IdentityKey::parse_canonical(&key.to_string()).unwrap(), key);
    }

    #[test]
    fn mobiles_with_any_foreign_character_are_refused(
        m in valid_mobile(), at in 0usize..11, c in any::<char>().prop_filter("not a digit", |c| !c.is_ascii_digit())
    ) {
        let mut s: Vec<char> = m.chars().collect();
        s[at] = c;
        let raw: String = s.into_iter().collect();
        prop_assert!(Identity::parse("mobile", &raw, None, None).is_err());
    }

    #[test]
    fn mobiles_of_the_wrong_length_are_refused(s in "[0-9]{0,30}") {
        prop_assume!(s.len() != 11);
        prop_assert!(Identity::parse("mobile", &s, None, None).is_err());
        let prefixed = format!("+86{s}");
        prop_assert!(Identity::parse("mobile", &prefixed, None, None).is_err());
    }

    #[test]
    fn unionids_round_trip(u in "[A-Za-z0-9_-]{28,64}") {
        let id = Identity::parse("wechat_unionid", &u, None, None).unwrap();
        prop_assert_eq!(id.value(), u.as_str());
        prop_assert_eq!(IdentityKey::parse_canonical(&id.key().to_string()).unwrap(), id.key());
    }

    #[test]
    fn unionids_outside_the_alphabet_or_length_are_refused(u in "\\PC{0,80}") {
        let valid = (28..=64).contains(&u.len())
            && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        prop_assert_eq!(Identity::parse("wechat_unionid", &u, None, None).is_ok(), valid);
    }

    #[test]
    fn openid_keys_round_trip(o in "[A-Za-z0-9_-]{16,64}", u in "[A-Za-z0-9_-]{28,64}", elong in any::<bool>()) {
        let app = if elong { "elong_mp" } else { "tongcheng_mp" };
        let id = Identity::parse("wechat_openid", &o, Some(app), Some(&u)).unwrap();
        let key = id.key();
        let canonical = format!("wechat_openid:{app}:{o}");
        let in_path = format!("{app}:{o}");
        prop_assert_eq!(key.to_string(), canonical);
        prop_assert_eq!(IdentityKey::parse("wechat_openid", &in_path).unwrap(), key.clone());
        prop_assert_eq!(IdentityKey::parse_canonical(&key.to_string()).unwrap(), key);
    }

    #[test]
    fn cards_are_digits_only(s in "\\PC{0,30}") {
        let valid = (6..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(Identity::parse("elong_card", &s, None, None).is_ok(), valid);
    }

    #[test]
    fn unknown_kinds_are_refused(k in "\\PC{0,20}") {
        prop_assume!(IdentityKind::ALL.iter().all(|known| known.as_str() != k));
        prop_assert!(Identity::parse(&k, "13800138000", None, None).is_err());
        prop_assert!(IdentityKey::parse(&k, "13800138000").is_err());
    }
}

#[test]
fn hostile_values_are_refused() {
    for raw in [
        "",
        " 13800138000",
        "13800138000 ",
        "１３８００１３８０００", // full-width digits
        "138\u{200b}00138000",    // zero-width space
        "1380013800a",
        "' OR 1=1 --",
        "<script>alert(1)</script>",
        "+8612800138000", // second digit 2
        "+86+8613800138000",
        "8613800138000",
    ] {
        assert!(
            Identity::parse("mobile", raw, None, None).is_err(),
            "mobile {raw:?} was accepted"
        );
    }
    assert!(Identity::parse("tongcheng_account", "a:b", None, None).is_err());
    assert!(Identity::parse("elong_account", "' OR 1=1 --", None, None).is_err());
}

#[test]
fn openids_need_app_and_unionid_and_others_refuse_them() {
    let u = "oUnion_AAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let o = "oOpenid_tc_0000000001";
    assert!(Identity::parse("wechat_openid", o, None, Some(u)).is_err());
    assert!(Identity::parse("wechat_openid", o, Some("tongcheng_mp"), None).is_err());
    assert!(Identity::parse("wechat_openid", o, Some("alipay"), Some(u)).is_err());
    assert!(Identity::parse("mobile", "13800138000", Some("elong_mp"), None).is_err());
    assert!(Identity::parse("wechat_unionid", u, None, Some(u)).is_err());
    assert!(IdentityKey::parse("wechat_openid", o).is_err());
}
