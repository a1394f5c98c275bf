//! `member governance scan`: the abnormal bindings an operator has to decide on.
//!
//! Two sources:
//! - open quarantine entries of legacy imports, re-checked against the identity owners as they
//!   are now (an owner may have unbound the identity since, making the record importable);
//! - members of the event store whose WeChat bindings break the rule "an openid only with the
//!   member's own unionid": an openid whose recorded unionid is not the member's bound unionid,
//!   or an openid on a member without a unionid. The aggregate never produces these; they can
//!   only come from data written around it (old imports, tools, hand-written events), which is
//!   why they are checked here and not assumed.

use member_infra::event_store::vault::Vault;
use member_infra::event_store::{members, replay};

use futures::TryStreamExt;
use member_domain::{Identity, IdentityKey, Member, MemberEvent, MemberStatus};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::tools::import::quarantine::{self, Entry};

/// What can be done about a finding now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing stands in the way any more: `release` imports it.
    Importable,
    /// Identities are held by other members: `release` unbinds them (audited), then imports.
    Conflicting,
    /// The record itself is wrong (or its legacy id is another member's): only `dismiss`.
    Unresolvable,
    /// The record is a member with exactly these identities already: `release` just closes it.
    Imported,
    /// A binding in the event store breaks the WeChat rule: `unbind` removes it.
    Abnormal,
}

/// An identity of the record held by another member. Only the kind is shown, never the value.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<&'static str>,
    pub member_id: Uuid,
    #[serde(skip)]
    pub key: IdentityKey,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `q-<n>` (quarantine entry) or `m-<member id>-<app>` (event-store binding).
    pub id: String,
    pub source: &'static str,
    pub state: State,
    pub reason: String,
    pub detail: Option<String>,
    pub legacy_id: Option<String>,
    pub line: Option<i64>,
    pub member_id: Option<Uuid>,
    pub holders: Vec<Holder>,
}

/// A quarantine entry re-checked against the store.
pub struct Recheck {
    pub state: State,
    pub holders: Vec<Holder>,
    /// The registration the record asks for (empty when unresolvable).
    pub identities: Vec<Identity>,
    pub member_id: Option<Uuid>,
}

/// Re-checks one quarantine entry against the current identity owners.
pub async fn recheck(pool: &PgPool, vault: &Vault, entry: &Entry) -> anyhow::Result<Recheck> {
    let unresolvable = Recheck {
        state: State::Unresolvable,
        holders: Vec::new(),
        identities: Vec::new(),
        member_id: entry.member_id,
    };
    let Some(record) = quarantine::legacy_record(entry) else {
        return Ok(unresolvable);
    };
    let Ok(identities) = record.registration() else {
        return Ok(unresolvable);
    };
    let member_id = record.member_id();
    let mut keys: Vec<IdentityKey> = identities.iter().map(Identity::key).collect();
    for identity in &identities {
        if let Identity::WechatOpenid { unionid, .. } = identity {
            let implied = IdentityKey::parse("wechat_unionid", unionid)?;
            if !keys.contains(&implied) {
                keys.push(implied);
            }
        }
    }
    let owners = replay::holders_of(pool, vault, &keys).await?;
    let mut holders = Vec::new();
    let mut held_by_self = 0;
    for key in &keys {
        match owners.get(key) {
            Some(owner) if *owner == member_id => held_by_self += 1,
            Some(owner) => holders.push(Holder {
                kind: key.kind().as_str(),
                app: key.app().map(|a| a.as_str()),
                member_id: *owner,
                key: key.clone(),
            }),
            None => {}
        }
    }
    let registered = members::is_registered(pool, member_id).await?;
    let state = match (registered, holders.is_empty()) {
        (false, true) => State::Importable,
        (false, false) => State::Conflicting,
        (true, true) if held_by_self == keys.len() => State::Imported,
        (true, _) => State::Unresolvable,
    };
    Ok(Recheck {
        state,
        holders,
        identities,
        member_id: Some(member_id),
    })
}

/// Every open quarantine entry, re-checked.
pub async fn quarantine_findings(pool: &PgPool, vault: &Vault) -> anyhow::Result<Vec<Finding>> {
    let mut out = Vec::new();
    for entry in quarantine::open_entries(pool).await? {
        let check = recheck(pool, vault, &entry).await?;
        out.push(Finding {
            id: entry.name(),
            source: "quarantine",
            state: check.state,
            reason: entry.reason.clone(),
            detail: entry.detail.clone(),
            legacy_id: entry.legacy_id.clone(),
            line: Some(entry.line_number),
            member_id: check.member_id,
            holders: check.holders,
        });
    }
    Ok(out)
}

/// Folds every member of the event store with the aggregate and reports its abnormal WeChat
/// bindings. Memory stays bounded by one member. `progress` is called once per member.
pub async fn store_findings(
    pool: &PgPool,
    vault: &Vault,
    mut progress: impl FnMut(),
) -> anyhow::Result<Vec<Finding>> {
    let mut rows = members::events_by_member(pool, vault);
    let mut out = Vec::new();
    let mut current: Option<(String, Member)> = None;
    while let Some((id, payload)) = rows.try_next().await? {
        if current.as_ref().is_none_or(|(cur, _)| cur != &id) {
            if let Some((done, member)) = current.take() {
                out.extend(wechat_findings(Uuid::parse_str(&done)?, &member));
                progress();
            }
            current = Some((id.clone(), Member::default()));
        }
        let event: MemberEvent = serde_json::from_value(payload)?;
        if let Some((_, member)) = current.as_mut() {
            member.apply_event(event);
        }
    }
    if let Some((done, member)) = current {
        out.extend(wechat_findings(Uuid::parse_str(&done)?, &member));
        progress();
    }
    Ok(out)
}

/// The openids of an active member that do not belong to its own unionid. Pure.
pub fn wechat_findings(member_id: Uuid, member: &Member) -> Vec<Finding> {
    if member.status() != MemberStatus::Active {
        return Vec::new();
    }
    let own = member.identities().iter().find_map(|i| match i {
        Identity::WechatUnionid { value } => Some(value.as_str()),
        _ => None,
    });
    member
        .identities()
        .iter()
        .filter_map(|i| match i {
            Identity::WechatOpenid { app, unionid, .. } if own != Some(unionid.as_str()) => {
                Some(Finding {
                    id: format!("m-{member_id}-{app}"),
                    source: "event_store",
                    state: State::Abnormal,
                    reason: if own.is_some() {
                        "openid_unionid_mismatch"
                    } else {
                        "openid_without_unionid"
                    }
                    .to_owned(),
                    detail: Some(format!("wechat_openid {app}")),
                    legacy_id: None,
                    line: None,
                    member_id: Some(member_id),
                    holders: Vec::new(),
                })
            }
            _ => None,
        })
        .collect()
}

/// The table `member governance scan` prints.
pub fn render_table(findings: &[Finding]) -> String {
    let mut out = format!(
        "{:<44} {:<12} {:<13} {:<34} {}\n",
        "ID", "SOURCE", "STATE", "REASON", "DETAIL"
    );
    for f in findings {
        let mut detail: Vec<String> = Vec::new();
        if let Some(d) = &f.detail {
            detail.push(d.clone());
        }
        if let (Some(line), Some(legacy)) = (f.line, &f.legacy_id) {
            detail.push(format!("line {line} legacy_id {legacy}"));
        }
        for h in &f.holders {
            detail.push(format!("{} held by {}", h.kind, h.member_id));
        }
        out.push_str(&format!(
            "{:<44} {:<12} {:<13} {:<34} {}\n",
            f.id,
            f.source,
            serde_json::to_value(f.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            f.reason,
            detail.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use member_domain::{UnbindReason, WechatApp};

    use super::*;

    const UNION_A: &str = "oUnionAAAAAAAAAAAAAAAAAAAAAAAA";
    const UNION_B: &str = "oUnionBBBBBBBBBBBBBBBBBBBBBBBB";

    fn member(events: Vec<MemberEvent>) -> Member {
        let mut m = Member::default();
        m.apply_event(MemberEvent::MemberRegistered {});
        for e in events {
            m.apply_event(e);
        }
        m
    }

    fn bound(identity: Identity) -> MemberEvent {
        MemberEvent::IdentityBound { identity }
    }

    fn openid(unionid: &str) -> Identity {
        Identity::WechatOpenid {
            app: WechatApp::ElongMp,
            value: "oOpenidEL000000001".into(),
            unionid: unionid.into(),
        }
    }

    #[test]
    fn an_openid_of_another_unionid_or_without_one_is_abnormal() {
        let id = Uuid::new_v4();
        let union_a = Identity::WechatUnionid {
            value: UNION_A.into(),
        };
        let healthy = member(vec![bound(union_a.clone()), bound(openid(UNION_A))]);
        assert!(wechat_findings(id, &healthy).is_empty());

        let mismatch = member(vec![bound(union_a.clone()), bound(openid(UNION_B))]);
        let found = wechat_findings(id, &mismatch);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reason, "openid_unionid_mismatch");
        assert_eq!(found[0].id, format!("m-{id}-elong_mp"));
        assert!(!render_table(&found).contains(UNION_B));

        let orphan = member(vec![
            bound(union_a.clone()),
            bound(openid(UNION_A)),
            MemberEvent::IdentityUnbound {
                identity: union_a,
                reason: UnbindReason::MemberRequest,
            },
        ]);
        assert_eq!(
            wechat_findings(id, &orphan)[0].reason,
            "openid_without_unionid"
        );
    }
}
