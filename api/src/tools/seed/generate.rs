//! Synthetic members, derived from `(seed, index)` alone. Pure.
//!
//! Values are unique by construction, not by luck: each seed owns a block of the mobile number
//! space (second and third/fourth digits) and of the account and card numbers, and within a
//! block the index goes through a bijection (an affine map modulo the block size), so 1,000,000
//! members never collide with each other, and two different seeds never collide at all. WeChat
//! ids carry `(seed, index)` in base 62 after pseudo-random characters.

use member_domain::{Identity, WechatApp};
use uuid::Uuid;

/// Seeds are `0..=MAX_SEED`: each owns one of 700 blocks of mobile numbers (`1[3-9]XX`).
pub const MAX_SEED: u32 = 699;
/// The members one seed can hold: the size of its blocks.
pub const MAX_MEMBERS: u64 = 10_000_000;

/// One synthetic member: its deterministic id and the identities it is registered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticMember {
    pub member_id: Uuid,
    pub identities: Vec<Identity>,
}

/// The member number `index` of `seed`. Panics when either is out of range (the CLI checks).
pub fn member(seed: u32, index: u64) -> SyntheticMember {
    assert!(
        seed <= MAX_SEED && index < MAX_MEMBERS,
        "seed or index out of range"
    );
    let member_id = crate::tools::ids::name_based("member-seed", &format!("{seed}/{index}"));
    let dice = Dice::new(seed, index);
    let has_mobile = dice.chance(0, 85);
    let has_unionid = dice.chance(1, 65);
    let has_tc_openid = has_unionid && dice.chance(2, 80);
    let has_el_openid = has_unionid && dice.chance(3, 45);
    let has_tc_account = dice.chance(4, 55);
    let has_el_account = dice.chance(5, 40);
    let has_card = dice.chance(6, if has_el_account { 70 } else { 5 });

    let mut identities = Vec::new();
    if has_mobile || !(has_unionid || has_tc_account || has_el_account || has_card) {
        identities.push(Identity::Mobile {
            value: mobile(seed, index),
        });
    }
    let unionid = wechat_id(&dice, 10, seed, index);
    if has_unionid {
        identities.push(Identity::WechatUnionid {
            value: unionid.clone(),
        });
    }
    for (has, app, salt) in [
        (has_tc_openid, WechatApp::TongchengMp, 11),
        (has_el_openid, WechatApp::ElongMp, 12),
    ] {
        if has {
            identities.push(Identity::WechatOpenid {
                app,
                value: wechat_id(&dice, salt, seed, index),
                unionid: unionid.clone(),
            });
        }
    }
    if has_tc_account {
        identities.push(Identity::TongchengAccount {
            value: format!("{seed:03}{:07}", permute(index, 3_141_593, seed)),
        });
    }
    if has_el_account {
        identities.push(Identity::ElongAccount {
            value: format!("E{seed:03}{:07}", permute(index, 2_718_281, seed)),
        });
    }
    if has_card {
        identities.push(Identity::ElongCard {
            value: format!("9{seed:03}{:07}", permute(index, 1_618_033, seed)),
        });
    }
    SyntheticMember {
        member_id,
        identities,
    }
}

/// `+861[3-9]` then two digits naming the seed's block, then the permuted index (7 digits).
fn mobile(seed: u32, index: u64) -> String {
    let second = 3 + seed / 100;
    let block = seed % 100;
    format!(
        "+861{second}{block:02}{:07}",
        permute(index, 7_654_321, seed)
    )
}

/// A bijection of `0..MAX_MEMBERS`: the multipliers are odd and not multiples of 5, so coprime
/// with 10^7.
fn permute(index: u64, multiplier: u64, seed: u32) -> u64 {
    (index * multiplier + u64::from(seed) * 7_919) % MAX_MEMBERS
}

/// A 28-character WeChat-style id: `o`, 20 pseudo-random base-62 characters, then the seed (2)
/// and the index (5) in base 62. Unique per `(salt, seed, index)`.
fn wechat_id(dice: &Dice, salt: u64, seed: u32, index: u64) -> String {
    let mut out = String::with_capacity(28);
    out.push('o');
    let mut state = dice.roll(salt);
    for _ in 0..20 {
        state = splitmix(state);
        out.push(base62((state % 62) as usize));
    }
    push_base62(&mut out, u64::from(seed), 2);
    push_base62(&mut out, index, 5);
    out
}

fn push_base62(out: &mut String, mut n: u64, width: usize) {
    let mut digits = vec!['0'; width];
    for d in digits.iter_mut().rev() {
        *d = base62((n % 62) as usize);
        n /= 62;
    }
    out.extend(digits);
}

fn base62(i: usize) -> char {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    ALPHABET[i] as char
}

/// Deterministic pseudo-random draws for one member.
struct Dice(u64);

impl Dice {
    fn new(seed: u32, index: u64) -> Self {
        Self(splitmix(
            splitmix(u64::from(seed) ^ 0x5eed_5eed) ^ index.wrapping_mul(0x9e37_79b9),
        ))
    }

    fn roll(&self, salt: u64) -> u64 {
        splitmix(self.0 ^ salt.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    /// True with probability `percent`%.
    fn chance(&self, salt: u64, percent: u64) -> bool {
        self.roll(salt) % 100 < percent
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use member_domain::{IdentityKind, Member, MemberCommand};

    use super::*;

    #[test]
    fn members_are_deterministic_and_valid_for_the_domain() {
        for index in 0..500 {
            let m = member(7, index);
            assert_eq!(m, member(7, index));
            assert!(!m.identities.is_empty());
            // Every value passes the same validation as the API's.
            for identity in &m.identities {
                let (app, unionid) = match identity {
                    Identity::WechatOpenid { app, unionid, .. } => {
                        (Some(app.to_string()), Some(unionid.as_str()))
                    }
                    _ => (None, None),
                };
                let parsed = Identity::parse(
                    identity.kind().as_str(),
                    identity.value(),
                    app.as_deref(),
                    unionid,
                )
                .expect("a valid identity");
                assert_eq!(&parsed, identity);
            }
            Member::default()
                .decide(MemberCommand::Register {
                    identities: m.identities,
                })
                .expect("the aggregate accepts a synthetic member");
        }
    }

    #[test]
    fn no_identity_or_id_repeats_within_a_seed_or_across_seeds() {
        let mut keys = HashSet::new();
        let mut ids = HashSet::new();
        for seed in [0, 1, 100, 699] {
            for index in (0..20_000).chain(MAX_MEMBERS - 100..MAX_MEMBERS) {
                let m = member(seed, index);
                assert!(ids.insert(m.member_id));
                for identity in m.identities {
                    assert!(keys.insert(identity.key()), "{seed}/{index} repeats");
                }
            }
        }
    }

    #[test]
    fn the_mix_is_realistic_not_every_member_has_everything() {
        let members: Vec<_> = (0..2_000).map(|i| member(3, i)).collect();
        let share = |kind: IdentityKind| {
            members
                .iter()
                .filter(|m| m.identities.iter().any(|i| i.kind() == kind))
                .count() as f64
                / members.len() as f64
        };
        assert!((0.80..0.92).contains(&share(IdentityKind::Mobile)));
        assert!((0.58..0.72).contains(&share(IdentityKind::WechatUnionid)));
        assert!((0.48..0.62).contains(&share(IdentityKind::TongchengAccount)));
        assert!(members.iter().any(|m| m.identities.len() == 1));
        for mobile in members
            .iter()
            .flat_map(|m| &m.identities)
            .filter(|i| i.kind() == IdentityKind::Mobile)
        {
            let v = mobile.value();
            assert!(
                v.starts_with("+861") && v.len() == 14 && (b'3'..=b'9').contains(&v.as_bytes()[4])
            );
        }
    }
}
