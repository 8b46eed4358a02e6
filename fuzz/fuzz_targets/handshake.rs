//! What a client sends before it is anyone. An input starting with an even byte: the SASL
//! messages (a PLAIN message, and a SCRAM client-first then client-final message, split at
//! the first NUL), for both mechanisms, against a known user; nothing but the right proof
//! passes. An odd byte: the rest is TLS records fed to a new server session the way the
//! connection feeds it (net::transport::feed). Nothing may panic.
#![no_main]
use flumen::security::scram::{Credential, Exchange, Mechanism};
use flumen::security::tls::{ClientAuth, TlsFiles};
use flumen::security::{check_plain, ScramUsers};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
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

/// The server's TLS config, from the fixture certificate (made once).
fn tls() -> Arc<rustls::ServerConfig> {
    static CFG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let files = TlsFiles {
            certificate: dir.join("fuzz-cert.pem"),
            key: dir.join("fuzz-key.pem"),
            client_auth: ClientAuth::None,
            truststore: None,
        };
        Arc::new(flumen::security::tls::load(&files).expect("the fixture certificate loads"))
    })
    .clone()
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, data)) = input.split_first() else {
        return;
    };
    if which % 2 == 1 {
        let mut conn = rustls::ServerConnection::new(tls()).expect("a session");
        let mut pending = bytes::BytesMut::new();
        // A handshake from random bytes never completes, so no plaintext comes out.
        if flumen::net::transport::feed(&mut conn, data, &mut pending).is_ok() {
            assert!(pending.is_empty() || !conn.is_handshaking());
        }
        return;
    }
    let (file, scram) = users();
    if let Ok(user) = check_plain(data, file, scram) {
        assert!(
            data.ends_with(b"alice-secret") || data.ends_with(b"bob-secret"),
            "{user}"
        );
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
