//! Read routing policy: which backends a read tries, in which order, for each caller class.
//! Pure: the query API asks for a chain and walks it.
//!
//! - `order` (the ordering path): local Redis center -> other Redis center -> the local center's
//!   search cluster -> the other center's -> MySQL shard (the center's own MySQL projection). In
//!   center A: search primary, then backup; in center B: backup, then primary
//!   (docs/decisions/0039-center-topology.md).
//! - `marketing` (campaign traffic, isolated): local Redis center -> search marketing. It never
//!   includes the order path's clusters (search primary and backup) nor MySQL, whatever is
//!   pinned; only its own cluster and the caches.
//!
//! An operator can pin a backend for a class (drills, maintenance): the pinned backend is tried
//! first and the rest of the class's chain stays behind it as fall-back. A pin outside the
//! class's allowed backends is refused.

use serde::{Deserialize, Serialize};

use member_projections::Target;

/// Who is reading: decides the chain, the masking and who is shed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadClass {
    Order,
    Marketing,
}

impl ReadClass {
    pub const ALL: [ReadClass; 2] = [ReadClass::Order, ReadClass::Marketing];

    pub fn as_str(self) -> &'static str {
        match self {
            ReadClass::Order => "order",
            ReadClass::Marketing => "marketing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The center local to this process: its Redis center and its search cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Center {
    A,
    B,
}

impl Center {
    pub fn target(self) -> Target {
        match self {
            Center::A => Target::RedisA,
            Center::B => Target::RedisB,
        }
    }

    /// The center's own order-path search cluster (A: primary, B: backup).
    pub fn search(self) -> Target {
        match self {
            Center::A => Target::SearchPrimary,
            Center::B => Target::SearchBackup,
        }
    }

    pub fn other(self) -> Center {
        match self {
            Center::A => Center::B,
            Center::B => Center::A,
        }
    }
}

/// Whether the target is a cache (a miss there is not an answer).
pub fn is_cache(target: Target) -> bool {
    matches!(target, Target::RedisA | Target::RedisB)
}

/// The backends a class may ever read from (and so may be pinned to).
pub fn may_serve(class: ReadClass, target: Target) -> bool {
    match class {
        ReadClass::Order => target != Target::SearchMarketing,
        ReadClass::Marketing => matches!(
            target,
            Target::RedisA | Target::RedisB | Target::SearchMarketing
        ),
    }
}

/// A pin that the class may not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class} reads may not be pinned to {target}")]
pub struct PinRefused {
    pub class: &'static str,
    pub target: Target,
}

pub fn validate_pin(class: ReadClass, target: Target) -> Result<(), PinRefused> {
    if may_serve(class, target) {
        Ok(())
    } else {
        Err(PinRefused {
            class: class.as_str(),
            target,
        })
    }
}

/// The chain without pins.
pub fn base_chain(class: ReadClass, local: Center) -> Vec<Target> {
    match class {
        ReadClass::Order => vec![
            local.target(),
            local.other().target(),
            local.search(),
            local.other().search(),
            Target::Mysql,
        ],
        ReadClass::Marketing => vec![local.target(), Target::SearchMarketing],
    }
}

/// The backends a read of `class` tries, in order. A valid pin goes first; an invalid one is
/// ignored (pins are validated when set; this is a second line of defence).
pub fn chain(class: ReadClass, local: Center, pin: Option<Target>) -> Vec<Target> {
    let mut chain = base_chain(class, local);
    if let Some(pin) = pin.filter(|p| may_serve(class, *p)) {
        chain.retain(|t| *t != pin);
        chain.insert(0, pin);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_target() -> impl Strategy<Value = Target> {
        proptest::sample::select(Target::ALL.to_vec())
    }

    fn any_center() -> impl Strategy<Value = Center> {
        prop_oneof![Just(Center::A), Just(Center::B)]
    }

    #[test]
    fn order_chain_is_local_redis_other_redis_local_search_other_search_mysql() {
        assert_eq!(
            chain(ReadClass::Order, Center::A, None),
            vec![
                Target::RedisA,
                Target::RedisB,
                Target::SearchPrimary,
                Target::SearchBackup,
                Target::Mysql
            ]
        );
        assert_eq!(
            chain(ReadClass::Order, Center::B, None),
            vec![
                Target::RedisB,
                Target::RedisA,
                Target::SearchBackup,
                Target::SearchPrimary,
                Target::Mysql
            ]
        );
        assert_eq!(
            chain(ReadClass::Marketing, Center::A, None),
            vec![Target::RedisA, Target::SearchMarketing]
        );
    }

    #[test]
    fn a_pin_goes_first_and_keeps_the_rest_as_fall_back() {
        assert_eq!(
            chain(ReadClass::Order, Center::A, Some(Target::Mysql)),
            vec![
                Target::Mysql,
                Target::RedisA,
                Target::RedisB,
                Target::SearchPrimary,
                Target::SearchBackup
            ]
        );
        assert_eq!(
            chain(ReadClass::Marketing, Center::A, Some(Target::RedisB)),
            vec![Target::RedisB, Target::RedisA, Target::SearchMarketing]
        );
        assert!(validate_pin(ReadClass::Marketing, Target::SearchPrimary).is_err());
        assert!(validate_pin(ReadClass::Order, Target::SearchMarketing).is_err());
        assert!(validate_pin(ReadClass::Order, Target::Mysql).is_ok());
    }

    proptest! {
        #[test]
        fn marketing_never_reaches_the_order_path_clusters(local in any_center(), pin in proptest::option::of(any_target())) {
            let c = chain(ReadClass::Marketing, local, pin);
            prop_assert!(!c.contains(&Target::SearchPrimary), "{:?}", c);
            prop_assert!(!c.contains(&Target::SearchBackup), "{:?}", c);
            prop_assert!(!c.contains(&Target::Mysql), "{:?}", c);
            prop_assert!(c.iter().all(|t| may_serve(ReadClass::Marketing, *t)));
        }

        #[test]
        fn order_never_reads_the_marketing_cluster(local in any_center(), pin in proptest::option::of(any_target())) {
            let c = chain(ReadClass::Order, local, pin);
            prop_assert!(!c.contains(&Target::SearchMarketing), "{:?}", c);
        }

        #[test]
        fn a_chain_is_the_base_chain_reordered_with_a_valid_pin_first(
            class in prop_oneof![Just(ReadClass::Order), Just(ReadClass::Marketing)],
            local in any_center(),
            pin in proptest::option::of(any_target()),
        ) {
            let c = chain(class, local, pin);
            let mut seen = c.clone();
            seen.sort();
            seen.dedup();
            prop_assert_eq!(seen.len(), c.len(), "no backend twice: {:?}", c);
            let base = base_chain(class, local);
            for t in &base {
                prop_assert!(c.contains(t), "{:?} lost from {:?}", t, c);
            }
            match pin {
                Some(p) if may_serve(class, p) => prop_assert_eq!(c[0], p),
                _ => prop_assert_eq!(&c, &base),
            }
            // The rest keeps the base order.
            let rest: Vec<_> = c.iter().filter(|t| Some(**t) != pin).copied().collect();
            let base_rest: Vec<_> = base.iter().filter(|t| Some(**t) != pin).copied().collect();
            prop_assert_eq!(rest, base_rest);
        }
    }
}
