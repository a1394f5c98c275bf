//! The cost of crypto-shredding on the command path and the relay, in-process on one core:
//! what a registration with two identities and a bind add (a data key made and wrapped, each
//! identity hashed and sealed), and what a reader pays per member and per event (an unwrap, an
//! open). Baseline in the same run: the SHA-256 request hash every command already computed
//! before encryption. Lookups pay nothing: projections hold plaintext (docs/decisions/0033).

use std::hint::black_box;
use std::time::Instant;

use member_domain::{Identity, MemberEvent};
use member_infra::event_store::vault::Vault;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::report::{Report, Row};

/// Microseconds per call of `f`, over enough calls to take about half a second.
fn per_call_us(mut f: impl FnMut(u64)) -> f64 {
    let mut n = 1_000u64;
    loop {
        let started = Instant::now();
        for i in 0..n {
            f(i);
        }
        let took = started.elapsed().as_secs_f64();
        if took > 0.5 || n >= 10_000_000 {
            return took * 1e6 / n as f64;
        }
        n *= 4;
    }
}

fn bound(identity: Identity) -> Value {
    serde_json::to_value(MemberEvent::IdentityBound { identity }).expect("serializes")
}

pub fn bench(report: &mut Report, settings: &member_infra::config::Settings) {
    let vault = Vault::new(&settings.encryption);
    let member = uuid::Uuid::now_v7().to_string();
    let mobile = bound(Identity::parse("mobile", "13800001234", None, None).unwrap());
    let card = bound(Identity::parse("elong_card", "7700012345", None, None).unwrap());
    let body = br#"{"identities":[{"kind":"mobile","value":"13800001234"},{"kind":"elong_card","value":"7700012345"}]}"#;

    let baseline = per_call_us(|_| {
        let mut h = Sha256::new();
        h.update(b"POST /v1/members\n");
        h.update(black_box(body));
        black_box(format!("{:x}", h.finalize()));
    });
    let (key, _) = vault.new_data_key(&member);
    let seal = per_call_us(|_| {
        let mut payload = mobile.clone();
        let mut metadata = Map::new();
        vault.seal_event(&member, &mut payload, &mut metadata, &key);
        black_box((payload, metadata));
    });
    let new_key = per_call_us(|_| {
        black_box(vault.new_data_key(&member));
    });
    let register = per_call_us(|_| {
        let (key, wrapped) = vault.new_data_key(&member);
        for event in [&mobile, &card] {
            let mut payload = event.clone();
            let mut metadata = Map::new();
            vault.seal_event(&member, &mut payload, &mut metadata, &key);
            black_box((payload, metadata));
        }
        black_box(vault.keyed_request_hash("0123456789abcdef"));
        black_box(wrapped);
    });
    let mut sealed = mobile.clone();
    vault.seal_event(&member, &mut sealed, &mut Map::new(), &key);
    let open = per_call_us(|_| {
        let mut payload = sealed.clone();
        vault
            .open_event(&member, &mut payload, Some(&key))
            .expect("opens");
        black_box(payload);
    });
    let clone_only = per_call_us(|_| {
        black_box(sealed.clone());
    });
    let (_, wrapped_text) = vault.new_data_key(&member);
    let (key_id, b64) = wrapped_text.split_once(':').expect("id:key");
    let wrapped =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).expect("base64");
    let unwrap = per_call_us(|_| {
        black_box(vault.unwrap(&member, key_id, &wrapped).expect("unwraps"));
    });

    let row = |what: &str, us: f64| {
        Row::new(format!("crypto: {what}"), format!("{us:.2} µs")).baseline(
            format!("{baseline:.2} µs (SHA-256 request hash)"),
            us / baseline,
        )
    };
    report.row(row(
        "a registration with two identities (data key made and wrapped, two identities hashed and sealed, the keyed request hash)",
        register,
    ));
    report.row(row("a bind (one identity hashed and sealed)", seal));
    report.row(row(
        "a new member's data key (random, AES-256-GCM wrap)",
        new_key,
    ));
    report.row(row(
        "a reader's open of one sealed bind (relay, fold, history)",
        (open - clone_only).max(0.0),
    ));
    report.row(row(
        "a reader's unwrap of one member's data key (cache miss)",
        unwrap,
    ));
    report.note(
        "crypto rows: one thread, in-process, `member-bench run` with BENCH including crypto; a lookup runs no crypto (projections hold plaintext)",
    );
}
