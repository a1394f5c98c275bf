//! Commands become visible in all six read stores, by id and by every identity, and unbinding
//! removes the identity from every index: the full path command API -> event store -> relay ->
//! Kafka -> six projectors -> MySQL, Redis A/B and three search indexes.

use std::time::Duration;

use member_api::app::Role;
use member_domain::IdentityKey;
use member_projections::Target;
use member_tests::app::{spawn_app, wait_converged};
use member_tests::sink_contract::Ids;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_becomes_visible_in_all_six_stores_and_an_unbind_leaves_every_index() {
    let mut roles = vec![Role::CommandApi, Role::Relay];
    roles.extend(Target::ALL.map(Role::Projector));
    let app = spawn_app(&roles).await;
    let client = member_tests::writer_client();
    let ids = Ids::fresh();

    let r = client
        .post(app.command_url("/v1/members"))
        .json(&json!({"identities": [
            {"kind": "mobile", "value": ids.mobile.value()},
            {"kind": "wechat_openid", "value": ids.openid.value(), "app": "elong_mp", "unionid": ids.unionid.value()},
            {"kind": "elong_card", "value": ids.card.value()},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let member: Value = r.json().await.unwrap();

    let truth = app.truth().await;
    assert_eq!(truth.len(), 1);
    for target in Target::ALL {
        let reader = app.reader(target).await;
        wait_converged(reader.as_ref(), &truth, Duration::from_secs(30)).await;
    }

    // Unbind the openid: gone from every index, the rest still found.
    let openid_path = format!(
        "/v1/members/{}/identities/wechat_openid/elong_mp:{}",
        member["member_id"].as_str().unwrap(),
        ids.openid.value()
    );
    let r = client
        .delete(app.command_url(&openid_path))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let truth = app.truth().await;
    let openid: IdentityKey = ids.openid.key();
    for target in Target::ALL {
        let reader = app.reader(target).await;
        wait_converged(reader.as_ref(), &truth, Duration::from_secs(30)).await;
        assert_eq!(
            reader.by_identity(&openid).await.unwrap(),
            None,
            "{target} still finds the openid"
        );
        assert!(
            reader
                .by_identity(&ids.unionid.key())
                .await
                .unwrap()
                .is_some(),
            "{target} lost the unionid"
        );
    }
    app.stop().await.unwrap();
}
