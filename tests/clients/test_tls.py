"""TLS listeners (issue 16): SSL and SASL_SSL with confluent-kafka, kafkajs and kcat; mTLS with
the client certificate's subject as the principal; a plain client on the TLS port, an
untrusted or expired certificate refused while the broker serves everyone else; a renewed
certificate served without a restart."""
import datetime
import ipaddress
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import rawkafka
from conftest import free_port
from test_security import round_trip
from util import topic_name, wait_until


def name(cn, ou=None):
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Flumen Test")]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


class Pki:
    """A CA and certificates it signs, written as PEM files under `d`."""

    def __init__(self, d: Path, label="ca"):
        self.d = d
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name(f"Test {label}"))
                     .issuer_name(name(f"Test {label}")).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = d / f"{label}.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, file_stem, cn, ou=None, server=True, expired=False):
        """(cert file, key file) for `cn`, valid for 127.0.0.1 and localhost."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
        if expired:
            start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
        b = (x509.CertificateBuilder().subject_name(name(cn, ou)).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        cf, kf = self.d / f"{file_stem}.pem", self.d / f"{file_stem}.key"
        cf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        return cf, kf


def tls_broker(broker_factory, tmp_path, client_auth="none", env=None, **extra):
    pki = Pki(tmp_path)
    cert, key = pki.issue("server", "broker")
    ssl_port, sasl_ssl_port = free_port(), free_port()
    b = broker_factory(config={
        "listeners": ["PLAINTEXT://{bootstrap}", f"SSL://127.0.0.1:{ssl_port}",
                      f"SASL_SSL://127.0.0.1:{sasl_ssl_port}"],
        "ssl_certificate_file": str(cert), "ssl_key_file": str(key),
        "ssl_client_auth": client_auth, "ssl_truststore_file": str(pki.ca_file),
        **extra,
    }, env=env)
    b.ssl, b.sasl_ssl, b.pki, b.server_cert = (f"127.0.0.1:{ssl_port}", f"127.0.0.1:{sasl_ssl_port}",
                                              pki, cert)
    return b


def tls_socket(addr, ca, cert=None):
    host, port = addr.split(":")
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(*cert)
    raw = socket.create_connection((host, int(port)), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=host)


def test_ssl_and_sasl_ssl_with_real_clients(broker_factory, tmp_path):
    b = tls_broker(broker_factory, tmp_path)
    ca = str(b.pki.ca_file)
    ssl_conf = {"bootstrap.servers": b.ssl, "security.protocol": "SSL", "ssl.ca.location": ca}
    round_trip(ssl_conf)
    # Clients of the SSL listener are sent to it, not to the PLAINTEXT one.
    md = AdminClient(ssl_conf).list_topics(timeout=15)
    assert [(x.host, x.port) for x in md.brokers.values()] == [("127.0.0.1", int(b.ssl.split(":")[1]))]

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    u = UserScramCredentialUpsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                     b"erin-secret")
    for f in admin.alter_user_scram_credentials([u]).values():
        f.result(30)
    sasl_ssl = {"bootstrap.servers": b.sasl_ssl, "security.protocol": "SASL_SSL",
                "ssl.ca.location": ca, "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "erin", "sasl.password": "erin-secret"}
    round_trip(sasl_ssl)

    # A large record set through TLS records (several per response).
    t = topic_name("tls-big")
    p = Producer({**ssl_conf, "linger.ms": 20})
    for i in range(2000):
        p.produce(t, bytes([i % 251]) * 1000, partition=0)
    assert p.flush(60) == 0
    c = Consumer({**ssl_conf, "group.id": "big", "auto.offset.reset": "earliest"})
    c.subscribe([t])
    n = 0
    deadline = time.time() + 60
    while n < 2000 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            assert m.value() == bytes([n % 251]) * 1000
            n += 1
    c.close()
    assert n == 2000

    # kafkajs over SASL_SSL.
    js = Path(__file__).resolve().parents[1] / "js" / "sasl.js"
    r = subprocess.run(["node", str(js), b.sasl_ssl, topic_name("tls-js"), "SCRAM-SHA-512", "erin",
                        "erin-secret", "ok"], capture_output=True, text=True, timeout=90,
                       env={**__import__("os").environ, "FLUMEN_TLS_CA": ca})
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr

    # kcat (librdkafka 2.0.2 with Debian's OpenSSL) over SSL.
    import shutil
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.fail("kcat is not installed (apt-get install kcat)")
    tk = topic_name("tls-kcat")
    opts = ["-X", "security.protocol=ssl", "-X", f"ssl.ca.location={ca}"]
    r = subprocess.run([kcat, "-b", b.ssl, *opts, "-P", "-t", tk, "-p", "0"], input="over-tls\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([kcat, "-b", b.ssl, *opts, "-C", "-t", tk, "-p", "0", "-e", "-f", "%s\n"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "over-tls", r.stdout + r.stderr


def test_bad_tls_clients_are_closed_and_everyone_else_served(broker_factory, tmp_path):
    b = tls_broker(broker_factory, tmp_path)
    host, port = b.ssl.split(":")
    # A Kafka request in plain text on the TLS port: closed (after a TLS alert), nothing else.
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(rawkafka.api_versions())
    data = s.recv(4096)
    assert data == b"" or data[:1] == b"\x15", data  # closed, or an alert record first
    assert s.recv(4096) == b""
    s.close()
    # A client that opens and says nothing is closed at the idle timeout, not kept; a
    # half handshake the same. (The broker's other clients are served meanwhile.)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
    ok = tls_socket(b.ssl, b.pki.ca_file)
    ok.sendall(rawkafka.api_versions())
    assert rawkafka.read_frame(ok) is not None
    ok.close()
    s.close()
    # A client that does not trust the broker's CA refuses it.
    other = Pki(tmp_path, "other-ca")
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_socket(b.ssl, other.ca_file)
    # The broker serves on: PLAINTEXT and TLS alike.
    round_trip({"bootstrap.servers": b.bootstrap}, n=3)
    round_trip({"bootstrap.servers": b.ssl, "security.protocol": "SSL",
                "ssl.ca.location": str(b.pki.ca_file)}, n=3)


def test_mtls_principal_untrusted_and_expired_client_certificates(broker_factory, tmp_path):
    b = tls_broker(broker_factory, tmp_path, client_auth="required",
                   env={"FLUMEN_LOG": "info,openraft=error,flumen::net=debug"})
    ca = b.pki.ca_file
    alice = b.pki.issue("alice", "alice", ou="eng", server=False)
    conf = {"bootstrap.servers": b.ssl, "security.protocol": "SSL", "ssl.ca.location": str(ca),
            "ssl.certificate.location": str(alice[0]), "ssl.key.location": str(alice[1])}
    round_trip(conf)
    # The principal is the certificate's subject, as Kafka's default mapping writes it.
    wait_until(lambda: "principal=User:CN=alice,OU=eng,O=Flumen Test,C=US" in b.log(), 10,
               "the mTLS principal in the broker's log")
    # Without a certificate, with one from another CA, with an expired one: refused.
    other = Pki(tmp_path, "other-ca")
    mallory = other.issue("mallory", "mallory", server=False)
    expired = b.pki.issue("old", "old", server=False, expired=True)
    for cert in [None, mallory, expired]:
        try:
            s = tls_socket(b.ssl, ca, cert)
            # TLS 1.3: the client learns of the refusal at its first read.
            s.sendall(rawkafka.api_versions())
            assert rawkafka.read_frame(s) is None, cert
            s.close()
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    round_trip(conf, n=3)


def test_a_renewed_certificate_is_served_without_a_restart(broker_factory, tmp_path):
    b = tls_broker(broker_factory, tmp_path)

    def served_serial():
        s = tls_socket(b.ssl, b.pki.ca_file)
        der = s.getpeercert(binary_form=True)
        s.close()
        return x509.load_der_x509_certificate(der).serial_number

    first = served_serial()
    time.sleep(1.1)  # a new modification time
    cert, key = b.pki.issue("server-next", "broker")
    Path(b.server_cert).write_bytes(cert.read_bytes())
    (tmp_path / "server.key").write_bytes(key.read_bytes())
    renewed = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    assert renewed != first
    wait_until(lambda: served_serial() == renewed, 10, "the renewed certificate")
    # A renewal that does not load (a key that does not match) keeps the one in use.
    time.sleep(1.1)
    (tmp_path / "server.key").write_bytes((tmp_path / "server.key").read_bytes()[:40])
    assert served_serial() == renewed
    assert "reload failed" in b.log()
