//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them (KIP-84): the
//! stored credentials (salt, StoredKey, ServerKey, iterations; never the password) and the
//! server side of the two-message exchange.
//!
//! An unknown user fails at the client's first message, as in Kafka (whose ScramSaslServer
//! answers "Invalid user credentials" there): like Kafka's, the exchange tells whether a
//! user exists.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// Fewest iterations Kafka accepts for a SCRAM credential.
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations Kafka accepts (bounds the work one AlterUserScramCredentials costs).
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's ScramMechanism codes (AlterUserScramCredentials, DescribeUserScramCredentials).
    pub fn code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2_alg(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest_alg().output_len()
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac_alg(), key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_alg(), data).as_ref().to_vec()
    }
}

/// A user's SCRAM credential for one mechanism, as the metadata keeps it (base64 in JSON and
/// TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

mod b64 {
    use super::{Engine, B64};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

impl Credential {
    /// From the salted password (what AlterUserScramCredentials carries: the client salts
    /// and hashes, the password never travels).
    pub fn from_salted(m: Mechanism, salt: Vec<u8>, salted: &[u8], iterations: u32) -> Credential {
        let client_key = m.hmac(salted, b"Client Key");
        Credential {
            salt,
            stored_key: m.hash(&client_key),
            server_key: m.hmac(salted, b"Server Key"),
            iterations,
        }
    }

    pub fn from_password(
        m: Mechanism,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Credential {
        let salted = salted_password(m, password, &salt, iterations);
        Credential::from_salted(m, salt, &salted, iterations)
    }

    /// Whether `password` is this credential's (PLAIN against a SCRAM user).
    pub fn matches_password(&self, m: Mechanism, password: &str) -> bool {
        let c = Credential::from_password(m, password, self.salt.clone(), self.iterations);
        same(&c.stored_key, &self.stored_key)
    }
}

/// Hi(password, salt, i) of RFC 5802: PBKDF2 with the mechanism's HMAC.
pub fn salted_password(m: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; m.len()];
    let i = NonZeroU32::new(iterations.max(1)).expect("at least 1");
    pbkdf2::derive(m.pbkdf2_alg(), i, salt, password.as_bytes(), &mut out);
    out
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system's random source");
    out
}

/// Why an exchange failed: the message for the client (Kafka's SASL_AUTHENTICATION_FAILED).
pub type AuthError = String;

/// The server's side of one SCRAM exchange, between the client's first and final messages.
pub struct Exchange {
    mechanism: Mechanism,
    user: String,
    credential: Credential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// The client's first message; answers the server-first message. `lookup` gives the
    /// user's credential for this mechanism.
    pub fn start(
        mechanism: Mechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> Result<(Exchange, Vec<u8>), AuthError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| "SCRAM client-first message is not UTF-8".to_string())?;
        // gs2-header: "n,," or "y,," (no channel binding), optionally with "a=authzid".
        let mut parts = text.splitn(3, ',');
        let cb = parts.next().unwrap_or_default();
        let authzid = parts.next().unwrap_or_default();
        let bare = parts
            .next()
            .ok_or_else(|| "SCRAM client-first message without a gs2 header".to_string())?;
        if cb != "n" && cb != "y" {
            return Err(format!("SCRAM channel binding {cb:?} is not supported"));
        }
        let mut user = None;
        let mut nonce = None;
        for attr in bare.split(',') {
            match attr.split_once('=') {
                Some(("n", v)) => user = Some(decode_name(v)?),
                Some(("r", v)) => nonce = Some(v.to_string()),
                Some(("m", _)) => return Err("SCRAM mandatory extensions are not supported".into()),
                _ => {} // Kafka's extensions (tokenauth=...) and others: not ours to act on
            }
        }
        let user = user.ok_or_else(|| "SCRAM client-first message without n=".to_string())?;
        let client_nonce =
            nonce.ok_or_else(|| "SCRAM client-first message without r=".to_string())?;
        if client_nonce.is_empty()
            || !client_nonce
                .chars()
                .all(|c| c.is_ascii_graphic() && c != ',')
        {
            return Err("SCRAM client nonce is empty or not printable".into());
        }
        if let Some(a) = authzid.strip_prefix("a=") {
            if decode_name(a)? != user {
                return Err("SCRAM authorization id differs from the user name".into());
            }
        }
        let Some(credential) = lookup(&user) else {
            return Err(format!(
                "Authentication failed: Invalid user credentials (SASL mechanism {})",
                mechanism.name()
            ));
        };
        let (salt, iterations) = (credential.salt.clone(), credential.iterations);
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(18)));
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let out = server_first.clone().into_bytes();
        Ok((
            Exchange {
                mechanism,
                user,
                credential,
                client_first_bare: bare.to_string(),
                server_first,
                nonce,
            },
            out,
        ))
    }

    /// The client's final message; answers the server-final message and the user name.
    pub fn finish(self, client_final: &[u8]) -> Result<(Vec<u8>, String), AuthError> {
        let failed = || {
            format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                self.mechanism.name()
            )
        };
        let text = std::str::from_utf8(client_final)
            .map_err(|_| "SCRAM client-final message is not UTF-8".to_string())?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| "SCRAM client-final message without a proof".to_string())?;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(("r", v)) = attr.split_once('=') {
                nonce = Some(v);
            }
        }
        // Kafka accepts a nonce that ends with the server's (endsWith, not equals): librdkafka
        // before 2.4 sends its own nonce again in front of the whole server nonce.
        if !nonce.is_some_and(|n| n.ends_with(self.nonce.as_str())) {
            return Err("SCRAM nonce does not match".into());
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| "SCRAM proof is not base64".to_string())?;
        let cred = &self.credential;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let m = self.mechanism;
        let signature = m.hmac(&cred.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(failed());
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !same(&m.hash(&client_key), &cred.stored_key) {
            return Err(failed());
        }
        let server_signature = m.hmac(&cred.server_key, auth_message.as_bytes());
        let out = format!("v={}", B64.encode(server_signature)).into_bytes();
        Ok((out, self.user))
    }
}

/// A SCRAM user name: "=2C" stands for ',' and "=3D" for '='.
fn decode_name(v: &str) -> Result<String, AuthError> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("SCRAM user name with a bad escape".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, as RFC 5802 has it, to drive the server.
    fn client_final(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let nonce = server_first
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .unwrap()
            .to_string();
        client_final_with_nonce(m, password, client_first_bare, server_first, &nonce)
    }

    /// The same, echoing `nonce` (what a client puts in r=).
    fn client_final_with_nonce(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
    ) -> String {
        let mut salt = None;
        let mut iterations = 0;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("s", v)) => salt = Some(B64.decode(v).unwrap()),
                Some(("i", v)) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        let salted = salted_password(m, password, &salt.unwrap(), iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = m.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc7677_test_vector_verifies() {
        // RFC 7677 section 3: user "user", password "pencil".
        let m = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = Credential::from_password(m, "pencil", salt, 4096);
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let auth = format!(
            "{bare},r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        );
        let server_sig = m.hmac(&cred.server_key, auth.as_bytes());
        assert_eq!(
            B64.encode(server_sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn exchange_accepts_the_password_and_refuses_others() {
        for m in Mechanism::ALL {
            let cred = Credential::from_password(m, "s3cret", random_bytes(16), 4096);
            for (password, ok) in [("s3cret", true), ("wrong", false)] {
                let first = "n,,n=al=2Cice,r=abcdef";
                let (ex, sf) = Exchange::start(m, first.as_bytes(), |u| {
                    assert_eq!(u, "al,ice");
                    Some(cred.clone())
                })
                .unwrap();
                let sf = String::from_utf8(sf).unwrap();
                assert!(sf.starts_with("r=abcdef"), "{sf}");
                let cf = client_final(m, password, "n=al=2Cice,r=abcdef", &sf);
                let r = ex.finish(cf.as_bytes());
                assert_eq!(r.is_ok(), ok, "{m:?} {password}: {r:?}");
                if let Ok((v, user)) = r {
                    assert_eq!(user, "al,ice");
                    assert!(v.starts_with(b"v="));
                }
            }
            assert!(cred.matches_password(m, "s3cret") && !cred.matches_password(m, "x"));
        }
    }

    #[test]
    fn unknown_users_and_bad_messages_fail_without_panicking() {
        let m = Mechanism::Sha512;
        let e = Exchange::start(m, b"n,,n=nobody,r=xyz", |_| None)
            .err()
            .unwrap();
        assert!(e.contains("Invalid user credentials"), "{e}");
        for bad in [
            &b""[..],
            b"p=tls,,n=a,r=b",
            b"n,,r=b",
            b"n,,n=a",
            b"n,,n=a=ZZ,r=b",
            b"\xff",
            b"n,,n=a,r=b,m=x",
        ] {
            assert!(Exchange::start(m, bad, |_| None).is_err(), "{bad:?}");
        }
        let cred = Credential::from_password(m, "pw", vec![1; 16], 4096);
        let (ex, _) = Exchange::start(m, b"n,,n=a,r=b", |_| Some(cred)).unwrap();
        assert!(ex.finish(b"c=biws,r=other,p=AAAA").is_err());
    }

    #[test]
    fn a_final_nonce_ending_with_the_servers_passes_as_kafka_allows() {
        // librdkafka 2.3 repeats its nonce in front of the server's: Kafka checks endsWith.
        let m = Mechanism::Sha256;
        let cred = Credential::from_password(m, "pw", random_bytes(16), 4096);
        for prefix in ["cn", "", "x"] {
            let (ex, sf) = Exchange::start(m, b"n,,n=u,r=cn", |_| Some(cred.clone())).unwrap();
            let sf = String::from_utf8(sf).unwrap();
            let full = sf
                .split(',')
                .next()
                .unwrap()
                .trim_start_matches("r=")
                .to_string();
            let nonce = format!("{prefix}{full}");
            let cf = client_final_with_nonce(m, "pw", "n=u,r=cn", &sf, &nonce);
            assert!(ex.finish(cf.as_bytes()).is_ok(), "{prefix:?}");
        }
        // A nonce that does not end with the server's: refused before the proof is looked at.
        let (ex, sf) = Exchange::start(m, b"n,,n=u,r=cn", |_| Some(cred.clone())).unwrap();
        let sf = String::from_utf8(sf).unwrap();
        let cf = client_final_with_nonce(m, "pw", "n=u,r=cn", &sf, "cnXYZ");
        assert!(ex.finish(cf.as_bytes()).unwrap_err().contains("nonce"));
    }
}
