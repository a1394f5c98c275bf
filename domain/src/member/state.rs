use serde::{Deserialize, Serialize};

use crate::identity::{Identity, IdentityKey, IdentityKind, WechatApp};

use super::{MemberCommand, MemberError, MemberEvent};

/// A member's lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// No `MemberRegistered` event yet: the member does not exist.
    #[default]
    Unregistered,
    Active,
    Deactivated,
    /// The member's personal data was erased (`MemberErased`); it holds no identities and
    /// accepts no commands. Read stores keep it as a tombstone; lookups answer "not found".
    Erased,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Unregistered => "unregistered",
            MemberStatus::Active => "active",
            MemberStatus::Deactivated => "deactivated",
            MemberStatus::Erased => "erased",
        }
    }
}

/// The Member aggregate: the state needed to decide commands, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub(super) version: u64,
    pub(super) status: MemberStatus,
    pub(super) identities: Vec<Identity>,
}

impl Member {
    /// The number of events applied: the aggregate version (sequence of the last event).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn status(&self) -> MemberStatus {
        self.status
    }

    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    pub(super) fn find(&self, key: &IdentityKey) -> Option<&Identity> {
        self.identities.iter().find(|i| &i.key() == key)
    }

    /// The identity occupying the same slot: one per kind, for openids one per app.
    pub(super) fn in_slot(&self, kind: IdentityKind, app: Option<WechatApp>) -> Option<&Identity> {
        self.identities
            .iter()
            .find(|i| i.kind() == kind && i.app() == app)
    }

    pub(super) fn unionid(&self) -> Option<&str> {
        self.in_slot(IdentityKind::WechatUnionid, None)
            .map(Identity::value)
    }

    /// The unionids named by the member's openids.
    pub(super) fn openid_unionids(&self) -> impl Iterator<Item = &str> {
        self.identities.iter().filter_map(|i| match i {
            Identity::WechatOpenid { unionid, .. } => Some(unionid.as_str()),
            _ => None,
        })
    }

    pub(super) fn ensure_active(&self) -> Result<(), MemberError> {
        match self.status {
            MemberStatus::Active => Ok(()),
            MemberStatus::Unregistered => Err(MemberError::MemberNotFound),
            MemberStatus::Deactivated => Err(MemberError::MemberInactive),
            MemberStatus::Erased => Err(MemberError::MemberErased),
        }
    }

    /// Decides a command: the events it produces, or why it is refused. Pure.
    pub fn decide(&self, command: MemberCommand) -> Result<Vec<MemberEvent>, MemberError> {
        match command {
            MemberCommand::Register { identities } => self.register(identities),
            MemberCommand::BindIdentity { identity } => self.bind(identity),
            MemberCommand::UnbindIdentity { key, reason } => self.unbind(&key, reason),
            MemberCommand::Deactivate { actor, reason } => self.deactivate(actor, reason),
            MemberCommand::Erase => self.erase(),
        }
    }

    /// Applies one event. Never fails: events are facts.
    pub fn apply_event(&mut self, event: MemberEvent) {
        self.version += 1;
        match event {
            MemberEvent::MemberRegistered {} => self.status = MemberStatus::Active,
            MemberEvent::IdentityBound { identity } => self.identities.push(identity),
            MemberEvent::IdentityUnbound { identity, .. } => {
                let key = identity.key();
                self.identities.retain(|i| i.key() != key);
            }
            MemberEvent::MemberDeactivated { .. } => self.status = MemberStatus::Deactivated,
            MemberEvent::MemberErased {} => {
                self.status = MemberStatus::Erased;
                self.identities.clear();
            }
        }
    }
}

impl cqrs_es::Aggregate for Member {
    const TYPE: &'static str = "Member";
    type Command = MemberCommand;
    type Event = MemberEvent;
    type Error = MemberError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.apply_event(event);
    }
}
