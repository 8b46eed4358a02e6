//! TLS for the SSL and SASL_SSL listeners: rustls on ring, the certificate and key from PEM
//! files, optional client certificates (mTLS, whose subject becomes the principal as Kafka's
//! default mapping has it: `User:CN=alice,OU=eng,O=acme,C=US`). The files are looked at again
//! (their modification times) at each new connection, so a renewed certificate is served
//! without a restart; a renewal that does not load keeps the old one and says why.
//!
//! The layer sits in `net::connection` behind the reader and writer halves; kernel TLS could
//! later take its place under the same halves (and give zero-copy back).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Whether a TLS listener asks clients for certificates (Kafka: ssl.client.auth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Asked for; a client without one connects as `User:ANONYMOUS` (or its SASL user).
    Requested,
    /// A client without a certificate the truststore trusts is refused.
    Required,
}

impl ClientAuth {
    pub fn parse(v: &str) -> anyhow::Result<ClientAuth> {
        match v {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => {
                anyhow::bail!("ssl_client_auth must be none, requested or required, got {other:?}")
            }
        }
    }
}

/// Where a TLS listener's certificate, key and client truststore are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub client_auth: ClientAuth,
    /// PEM CA certificates that client certificates must chain to.
    pub truststore: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.certificate.as_path(), self.key.as_path()];
        v.extend(self.truststore.as_deref());
        v
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        self.paths()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// Builds the rustls config of a listener from its files.
pub fn load(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let shown = |p: &Path| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .map_err(|e| anyhow::anyhow!("ssl_certificate_file {}: {e}", shown(&files.certificate)))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("ssl_certificate_file {}: {e}", shown(&files.certificate)))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "ssl_certificate_file {} holds no certificate",
        shown(&files.certificate)
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("ssl_key_file {}: {e}", shown(&files.key)))?;
    // ring, not aws-lc-rs (rustls's default, which has post-quantum key exchange and so
    // deprecates this): aws-lc-rs builds a C library with cmake, and ring is already the
    // broker's crypto for SCRAM. X25519 and the P-curves are what Kafka clients offer.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    let builder = match files.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let path = files.truststore.as_ref().ok_or_else(|| {
                anyhow::anyhow!("ssl_client_auth = {auth:?} needs ssl_truststore_file")
            })?;
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("ssl_truststore_file {}: {e}", shown(path)))?
            {
                let c =
                    c.map_err(|e| anyhow::anyhow!("ssl_truststore_file {}: {e}", shown(path)))?;
                roots
                    .add(c)
                    .map_err(|e| anyhow::anyhow!("ssl_truststore_file {}: {e}", shown(path)))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| anyhow::anyhow!("ssl_truststore_file {}: {e}", shown(path)))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("ssl_certificate_file and ssl_key_file: {e}"))?;
    // Kafka clients do not use ALPN; TLS 1.2 and 1.3 with rustls's safe suites.
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// One shard's view of a TLS listener: its current config, reloaded when the files change.
pub struct Acceptor {
    files: TlsFiles,
    current: RefCell<(Vec<Option<SystemTime>>, Arc<ServerConfig>)>,
}

impl Acceptor {
    pub fn new(files: TlsFiles) -> anyhow::Result<Acceptor> {
        let mtimes = files.mtimes();
        let cfg = Arc::new(load(&files)?);
        Ok(Acceptor {
            files,
            current: RefCell::new((mtimes, cfg)),
        })
    }

    /// The config for a new connection: the files' again if they changed since (a failed
    /// reload keeps the one in use, and is tried again at the next connection).
    pub fn config(&self) -> Arc<ServerConfig> {
        let now = self.files.mtimes();
        let mut cur = self.current.borrow_mut();
        if cur.0 != now {
            match load(&self.files) {
                Ok(cfg) => {
                    tracing::info!(certificate = %self.files.certificate.display(),
                        "TLS certificate reloaded");
                    *cur = (now, Arc::new(cfg));
                }
                Err(e) => {
                    tracing::error!("TLS certificate reload failed, keeping the previous one: {e}")
                }
            }
        }
        cur.1.clone()
    }
}

/// The subject of a DER certificate as RFC 2253 writes it (Java's X500Principal.getName(),
/// which Kafka's default principal mapping uses): the last RDN first, `CN=...,O=...`.
pub fn subject_dn(cert: &[u8]) -> Option<String> {
    let (_, cert_body, _) = tlv(cert)?; // Certificate SEQUENCE
    let (_, mut tbs, _) = tlv(cert_body)?; // TBSCertificate SEQUENCE
                                           // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let mut fields = Vec::new();
    while !tbs.is_empty() && fields.len() < 6 {
        let (tag, body, rest) = tlv(tbs)?;
        fields.push((tag, body));
        tbs = rest;
    }
    let skip = usize::from(fields.first()?.0 == 0xa0);
    let (tag, mut name) = *fields.get(skip + 4)?;
    if tag != 0x30 {
        return None;
    }
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (set_tag, mut set, rest) = tlv(name)?;
        if set_tag != 0x31 {
            return None;
        }
        let mut atvs = Vec::new();
        while !set.is_empty() {
            let (_, atv, r) = tlv(set)?;
            let (oid_tag, oid, value) = tlv(atv)?;
            if oid_tag != 0x06 {
                return None;
            }
            let (vtag, v, _) = tlv(value)?;
            atvs.push(format!(
                "{}={}",
                attribute_name(oid),
                attribute_value(vtag, v)
            ));
            set = r;
        }
        rdns.push(atvs.join("+"));
        name = rest;
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// One DER element: (tag, contents, what follows).
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *data.first()?;
    let first = *data.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *data.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((tag, data.get(head..end)?, data.get(end..)?))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x09] => "STREET".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID".into(),
        other => dotted(other),
    }
}

/// An OID in dotted form.
fn dotted(oid: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut v: u64 = 0;
    for b in oid {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = (v / 40).min(2);
                parts.push(first.to_string());
                parts.push((v - first * 40).to_string());
            } else {
                parts.push(v.to_string());
            }
            v = 0;
        }
    }
    parts.join(".")
}

/// A string attribute value, escaped as RFC 2253 says; other types as `#` and hex.
fn attribute_value(tag: u8, v: &[u8]) -> String {
    let text = match tag {
        0x0c | 0x13 | 0x16 | 0x14 => String::from_utf8(v.to_vec()).ok(),
        0x1e => {
            let units: Vec<u16> = v
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    };
    let Some(text) = text else {
        let mut out = format!("#{tag:02x}{:02x}", v.len());
        for b in v {
            out.push_str(&format!("{b:02x}"));
        }
        return out;
    };
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn subject_dn_reads_as_rfc2253() {
        // openssl req -x509 -subj "/C=US/O=Acme, Inc./OU=eng/CN=alice" (P-256); openssl
        // prints its subject with -nameopt RFC2253 as below.
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                [
        "MIIB1DCCAXugAwIBAgIUFvoCPpkCVMZvkPHVLts0Jk25qzEwCgYIKoZIzj0EAwIwQDELMAkGA1UEBhMCVVMxEzAR",
        "BgNVBAoMCkFjbWUsIEluYy4xDDAKBgNVBAsMA2VuZzEOMAwGA1UEAwwFYWxpY2UwHhcNMjYxMjA1MDkwNDE3WhcN",
        "MzYxMjAyMDkwNDE3WjBAMQswCQYDVQQGEwJVUzETMBEGA1UECgwKQWNtZSwgSW5jLjEMMAoGA1UECwwDZW5nMQ4w",
        "DAYDVQQDDAVhbGljZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABB/+SZ3TxXZa4ZmVJD0HYw4Vw3hjjHdIAm89",
        "jaF6ew3V5OzU0QqwJjQTAUw0zTmQgslVi5uY6Bh/fajbomlEcimjUzBRMB0GA1UdDgQWBBQwrlZdYb0n15hB9yqi",
        "BThYFPmg8TAfBgNVHSMEGDAWgBQwrlZdYb0n15hB9yqiBThYFPmg8TAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49",
        "BAMCA0cAMEQCIBD4jnwkXEQ1Rty7iWsGLxDwrr0uUFruSSYBpmxuNtZbAiAe8AoogHlV5f0owCaQ8NX3g8o6/ryh",
        "F0YthLIAvTtEBw==",
                ]
                .concat(),
            )
            .unwrap();
        assert_eq!(
            subject_dn(&der).as_deref(),
            Some("CN=alice,OU=eng,O=Acme\\, Inc.,C=US")
        );
        // Truncated or garbage input: None, never a panic.
        for n in [0, 1, 10, der.len() / 2, der.len() - 1] {
            let _ = subject_dn(&der[..n]);
        }
        assert_eq!(subject_dn(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }
}
