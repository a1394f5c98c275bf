//! Given events / when command / then events, for every rule of the aggregate.

use cqrs_es::test::TestFramework;

use super::*;
use crate::identity::{Identity, IdentityKey, IdentityKind, WechatApp};

type MemberTest = TestFramework<Member>;

const UNIONID: &str = "oUnion_AAAAAAAAAAAAAAAAAAAAAAAAAAA";
const OTHER_UNIONID: &str = "oUnion_BBBBBBBBBBBBBBBBBBBBBBBBBBB";

fn mobile() -> Identity {
    Identity::parse("mobile", "13800138000", None, None).unwrap()
}
fn unionid(value: &str) -> Identity {
    Identity::parse("wechat_unionid", value, None, None).unwrap()
}
fn openid(app: &str, value: &str, unionid: &str) -> Identity {
    Identity::parse("wechat_openid", value, Some(app), Some(unionid)).unwrap()
}
fn card() -> Identity {
    Identity::parse("elong_card", "88881234", None, None).unwrap()
}
fn registered() -> MemberEvent {
    MemberEvent::MemberRegistered {}
}
fn bound(identity: Identity) -> MemberEvent {
    MemberEvent::IdentityBound { identity }
}
fn unbound(identity: Identity, reason: UnbindReason) -> MemberEvent {
    MemberEvent::IdentityUnbound { identity, reason }
}
fn bind(identity: Identity) -> MemberCommand {
    MemberCommand::BindIdentity { identity }
}

#[test]
fn registering_binds_each_identity() {
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::Register {
            identities: vec![mobile(), card()],
        })
        .then_expect_events(vec![registered(), bound(mobile()), bound(card())]);
}

#[test]
fn registering_needs_an_identity() {
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::Register { identities: vec![] })
        .then_expect_error(MemberError::NoIdentities);
}

#[test]
fn registering_twice_is_refused() {
    MemberTest::with(())
        .given(vec![registered()])
        .when(MemberCommand::Register {
            identities: vec![mobile()],
        })
        .then_expect_error(MemberError::MemberAlreadyRegistered);
}

#[test]
fn registering_two_identities_of_one_kind_is_refused() {
    let other = Identity::parse("mobile", "+8613900139000", None, None).unwrap();
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::Register {
            identities: vec![mobile(), other],
        })
        .then_expect_error(MemberError::IdentityKindAlreadyBound(IdentityKind::Mobile));
}

#[test]
fn registering_with_an_openid_binds_its_unionid_first() {
    let o = openid("tongcheng_mp", "oOpenid_tc_0000000001", UNIONID);
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::Register {
            identities: vec![o.clone()],
        })
        .then_expect_events(vec![registered(), bound(unionid(UNIONID)), bound(o)]);
}

#[test]
fn registering_an_openid_with_another_unionid_than_the_one_listed_is_cross_account() {
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::Register {
            identities: vec![
                unionid(UNIONID),
                openid("elong_mp", "oOpenid_el_0000000001", OTHER_UNIONID),
            ],
        })
        .then_expect_error(MemberError::CrossAccountWechatBinding);
}

#[test]
fn binding_a_new_kind_appends_one_event() {
    MemberTest::with(())
        .given(vec![registered(), bound(mobile())])
        .when(bind(card()))
        .then_expect_events(vec![bound(card())]);
}

#[test]
fn binding_what_is_already_bound_changes_nothing() {
    MemberTest::with(())
        .given(vec![registered(), bound(mobile())])
        .when(bind(mobile()))
        .then_expect_events(vec![]);
}

#[test]
fn binding_a_second_value_of_a_kind_is_refused() {
    let other = Identity::parse("mobile", "13900139000", None, None).unwrap();
    MemberTest::with(())
        .given(vec![registered(), bound(mobile())])
        .when(bind(other))
        .then_expect_error(MemberError::IdentityKindAlreadyBound(IdentityKind::Mobile));
}

#[test]
fn one_openid_per_mini_program() {
    let tc = openid("tongcheng_mp", "oOpenid_tc_0000000001", UNIONID);
    let tc2 = openid("tongcheng_mp", "oOpenid_tc_0000000002", UNIONID);
    let el = openid("elong_mp", "oOpenid_el_0000000001", UNIONID);
    MemberTest::with(())
        .given(vec![
            registered(),
            bound(unionid(UNIONID)),
            bound(tc.clone()),
        ])
        .when(bind(tc2))
        .then_expect_error(MemberError::IdentityKindAlreadyBound(
            IdentityKind::WechatOpenid,
        ));
    MemberTest::with(())
        .given(vec![registered(), bound(unionid(UNIONID)), bound(tc)])
        .when(bind(el.clone()))
        .then_expect_events(vec![bound(el)]);
}

#[test]
fn an_openid_of_another_wechat_user_is_cross_account() {
    // The defect of the original system: an app account bound to another user's WeChat.
    MemberTest::with(())
        .given(vec![registered(), bound(mobile()), bound(unionid(UNIONID))])
        .when(bind(openid(
            "tongcheng_mp",
            "oOpenid_tc_0000000009",
            OTHER_UNIONID,
        )))
        .then_expect_error(MemberError::CrossAccountWechatBinding);
}

#[test]
fn an_openid_already_bound_under_another_unionid_is_cross_account() {
    let o = openid("tongcheng_mp", "oOpenid_tc_0000000001", UNIONID);
    MemberTest::with(())
        .given(vec![registered(), bound(unionid(UNIONID)), bound(o)])
        .when(bind(openid(
            "tongcheng_mp",
            "oOpenid_tc_0000000001",
            OTHER_UNIONID,
        )))
        .then_expect_error(MemberError::CrossAccountWechatBinding);
}

#[test]
fn an_openid_without_unionid_binds_the_unionid_too() {
    let o = openid("elong_mp", "oOpenid_el_0000000001", UNIONID);
    MemberTest::with(())
        .given(vec![registered(), bound(mobile())])
        .when(bind(o.clone()))
        .then_expect_events(vec![bound(unionid(UNIONID)), bound(o)]);
}

#[test]
fn a_unionid_other_than_the_one_the_openids_name_is_cross_account() {
    // Legacy data may hold an openid without its unionid; the rule still holds.
    let o = openid("elong_mp", "oOpenid_el_0000000001", UNIONID);
    MemberTest::with(())
        .given(vec![registered(), bound(o)])
        .when(bind(unionid(OTHER_UNIONID)))
        .then_expect_error(MemberError::CrossAccountWechatBinding);
}

#[test]
fn unbinding_frees_the_slot() {
    MemberTest::with(())
        .given(vec![registered(), bound(mobile())])
        .when(MemberCommand::UnbindIdentity {
            key: mobile().key(),
            reason: UnbindReason::MemberRequest,
        })
        .then_expect_events(vec![unbound(mobile(), UnbindReason::MemberRequest)]);
}

#[test]
fn unbinding_the_unionid_unbinds_its_openids() {
    let tc = openid("tongcheng_mp", "oOpenid_tc_0000000001", UNIONID);
    let el = openid("elong_mp", "oOpenid_el_0000000001", UNIONID);
    let reason = UnbindReason::Governance {
        actor: "ops".into(),
        note: "ticket 7".into(),
    };
    MemberTest::with(())
        .given(vec![
            registered(),
            bound(unionid(UNIONID)),
            bound(tc.clone()),
            bound(el.clone()),
        ])
        .when(MemberCommand::UnbindIdentity {
            key: unionid(UNIONID).key(),
            reason: reason.clone(),
        })
        .then_expect_events(vec![
            unbound(tc, reason.clone()),
            unbound(el, reason.clone()),
            unbound(unionid(UNIONID), reason),
        ]);
}

#[test]
fn unbinding_what_is_not_bound_is_refused() {
    MemberTest::with(())
        .given(vec![registered(), bound(mobile())])
        .when(MemberCommand::UnbindIdentity {
            key: card().key(),
            reason: UnbindReason::MemberRequest,
        })
        .then_expect_error(MemberError::IdentityNotBound);
}

#[test]
fn commands_on_an_unknown_member_are_refused() {
    MemberTest::with(())
        .given_no_previous_events()
        .when(bind(mobile()))
        .then_expect_error(MemberError::MemberNotFound);
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::UnbindIdentity {
            key: IdentityKey::parse("mobile", "13800138000").unwrap(),
            reason: UnbindReason::MemberRequest,
        })
        .then_expect_error(MemberError::MemberNotFound);
}

#[test]
fn deactivating_releases_every_identity() {
    MemberTest::with(())
        .given(vec![registered(), bound(mobile()), bound(card())])
        .when(MemberCommand::Deactivate {
            actor: "ops".into(),
            reason: "fraud".into(),
        })
        .then_expect_events(vec![
            unbound(mobile(), UnbindReason::MemberDeactivated),
            unbound(card(), UnbindReason::MemberDeactivated),
            MemberEvent::MemberDeactivated {
                actor: "ops".into(),
                reason: "fraud".into(),
            },
        ]);
}

#[test]
fn a_deactivated_member_accepts_no_commands() {
    let deactivated = MemberEvent::MemberDeactivated {
        actor: "ops".into(),
        reason: "fraud".into(),
    };
    MemberTest::with(())
        .given(vec![registered(), deactivated.clone()])
        .when(bind(mobile()))
        .then_expect_error(MemberError::MemberInactive);
    MemberTest::with(())
        .given(vec![registered(), deactivated])
        .when(MemberCommand::Deactivate {
            actor: "ops".into(),
            reason: "again".into(),
        })
        .then_expect_error(MemberError::MemberInactive);
}

#[test]
fn the_version_counts_events() {
    let mut member = Member::default();
    for event in [registered(), bound(mobile()), bound(card())] {
        member.apply_event(event);
    }
    assert_eq!(member.version(), 3);
    assert_eq!(member.status(), MemberStatus::Active);
    assert_eq!(member.identities().len(), 2);
    assert_eq!(
        member.identities()[0].app(),
        None,
        "a mobile has no app: {:?}",
        WechatApp::ALL
    );
}

#[test]
fn events_have_stable_wire_names() {
    let json =
        serde_json::to_value(bound(openid("elong_mp", "oOpenid_el_0000000001", UNIONID))).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"IdentityBound": {"identity": {
            "kind": "wechat_openid", "app": "elong_mp",
            "value": "oOpenid_el_0000000001", "unionid": UNIONID}}})
    );
    let json = serde_json::to_value(unbound(mobile(), UnbindReason::MemberRequest)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"IdentityUnbound": {
            "identity": {"kind": "mobile", "value": "+8613800138000"},
            "reason": {"by": "member_request"}}})
    );
}

fn erased() -> MemberEvent {
    MemberEvent::MemberErased {}
}

#[test]
fn erasing_releases_every_identity_then_erases() {
    let o = openid("tongcheng_mp", "oOpenid_tc_0000000001", UNIONID);
    MemberTest::with(())
        .given(vec![
            registered(),
            bound(mobile()),
            bound(unionid(UNIONID)),
            bound(o.clone()),
        ])
        .when(MemberCommand::Erase)
        .then_expect_events(vec![
            unbound(mobile(), UnbindReason::MemberErased),
            unbound(unionid(UNIONID), UnbindReason::MemberErased),
            unbound(o, UnbindReason::MemberErased),
            erased(),
        ]);
}

#[test]
fn a_deactivated_member_can_still_be_erased() {
    let deactivated = MemberEvent::MemberDeactivated {
        actor: "ops".into(),
        reason: "fraud".into(),
    };
    MemberTest::with(())
        .given(vec![
            registered(),
            bound(card()),
            unbound(card(), UnbindReason::MemberDeactivated),
            deactivated,
        ])
        .when(MemberCommand::Erase)
        .then_expect_events(vec![erased()]);
}

#[test]
fn erasing_twice_is_refused_as_already_erased() {
    MemberTest::with(())
        .given(vec![
            registered(),
            bound(mobile()),
            unbound(mobile(), UnbindReason::MemberErased),
            erased(),
        ])
        .when(MemberCommand::Erase)
        .then_expect_error(MemberError::MemberErased);
}

#[test]
fn erasing_an_unknown_member_is_not_found() {
    MemberTest::with(())
        .given_no_previous_events()
        .when(MemberCommand::Erase)
        .then_expect_error(MemberError::MemberNotFound);
}

#[test]
fn an_erased_member_accepts_no_commands() {
    let history = vec![
        registered(),
        bound(mobile()),
        unbound(mobile(), UnbindReason::MemberErased),
        erased(),
    ];
    for command in [
        bind(mobile()),
        MemberCommand::UnbindIdentity {
            key: mobile().key(),
            reason: UnbindReason::MemberRequest,
        },
        MemberCommand::Deactivate {
            actor: "ops".into(),
            reason: "late".into(),
        },
        MemberCommand::Register {
            identities: vec![card()],
        },
    ] {
        let expected = if matches!(command, MemberCommand::Register { .. }) {
            MemberError::MemberAlreadyRegistered
        } else {
            MemberError::MemberErased
        };
        MemberTest::with(())
            .given(history.clone())
            .when(command)
            .then_expect_error(expected);
    }
}

#[test]
fn an_erased_member_holds_nothing() {
    let mut member = Member::default();
    for event in [
        registered(),
        bound(mobile()),
        unbound(mobile(), UnbindReason::MemberErased),
        erased(),
    ] {
        member.apply_event(event);
    }
    assert_eq!(member.status(), MemberStatus::Erased);
    assert!(member.identities().is_empty());
    assert_eq!(MemberError::MemberErased.code(), "member_erased");
    assert_eq!(
        serde_json::to_value(erased()).unwrap(),
        serde_json::json!({"MemberErased": {}})
    );
    assert_eq!(
        serde_json::to_value(UnbindReason::MemberErased).unwrap(),
        serde_json::json!({"by": "member_erased"})
    );
}
