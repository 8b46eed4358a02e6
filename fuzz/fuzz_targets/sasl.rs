//! The SASL messages a client sends before it is anyone: a PLAIN message, and a SCRAM
//! client-first then client-final message (split at the first NUL of the input), for both
//! mechanisms, against a known user. Nothing may panic; nothing but the right proof passes.
#![no_main]
use flumen::security::scram::{Credential, Exchange, Mechanism};
use flumen::security::{check_plain, ScramUsers};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The users, made once (PBKDF2 is slow on purpose).
fn users() -> &'static (BTreeMap<String, String>, ScramUsers) {
    static USERS: OnceLock<(BTreeMap<String, String>, ScramUsers)> = OnceLock::new();
    USERS.get_or_init(|| {
        let file = BTreeMap::from([("alice".to_string(), "alice-secret".to_string())]);
        let mut scram = ScramUsers::new();
        for m in Mechanism::ALL {
            let cred = Credential::from_password(m, "bob-secret", vec![7; 16], 4096);
            scram
                .entry("bob".into())
                .or_default()
                .insert(m.name().into(), cred);
        }
        (file, scram)
    })
}

fuzz_target!(|data: &[u8]| {
    let (file, scram) = users();
    if let Ok(user) = check_plain(data, file, scram) {
        assert!(data.ends_with(b"alice-secret") || data.ends_with(b"bob-secret"), "{user}");
    }
    let (first, last) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    for m in Mechanism::ALL {
        let lookup = |u: &str| scram.get(u).and_then(|c| c.get(m.name())).cloned();
        if let Ok((exchange, _)) = Exchange::start(m, first, lookup) {
            // A random proof against a random server nonce: never accepted.
            assert!(exchange.finish(last).is_err());
        }
    }
});
