"""SASL listeners (issue 16): PLAIN and SCRAM-SHA-256/512 with confluent-kafka, kafkajs,
kafka-python and kcat; SCRAM users created with confluent-kafka's AdminClient and with
`flumen users`, stored salted and hashed; wrong passwords and unauthenticated requests
refused with Kafka's codes; re-authentication (KIP-368) cutting off a deleted user; and each
listener advertising its own address."""
import json
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

import rawkafka
from conftest import flumen_bin, free_port
from util import topic_name, wait_until

PLAIN_USERS = 'alice = "alice-secret"\n'


def sasl_broker(broker_factory, tmp_path, **extra):
    """A broker with a PLAINTEXT listener (its usual address) and a SASL_PLAINTEXT one."""
    users = tmp_path / "plain-users.toml"
    users.write_text(PLAIN_USERS)
    port = free_port()
    b = broker_factory(config={
        "listeners": ["PLAINTEXT://{bootstrap}", f"SASL_PLAINTEXT://127.0.0.1:{port}"],
        "sasl_plain_users_file": str(users),
        **extra,
    })
    b.sasl = f"127.0.0.1:{port}"
    return b


def client(b, mechanism, user, password, **more):
    return {"bootstrap.servers": b.sasl, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            **more}


def round_trip(conf, topic=None, n=10):
    """Produces n records with `conf` to a topic of its own (auto-created) and reads them
    back; fails with what went wrong. (test_tls uses it too.)"""
    topic = topic or topic_name("rt")
    errors = []
    p = Producer({**conf, "acks": "all", "error_cb": errors.append})
    for i in range(n):
        p.produce(topic, f"v{i}".encode(), partition=0)
    assert p.flush(30) == 0, [e.str() for e in errors]
    c = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [f"v{i}".encode() for i in range(n)], got


def add_scram(admin, user, password, mechanism, iterations=8192):
    u = UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations),
                                     password.encode())
    for f in admin.alter_user_scram_credentials([u]).values():
        f.result(30)


def cli(*args, input=None):
    return subprocess.run([flumen_bin(), *args], capture_output=True, text=True, input=input,
                          timeout=60)


def test_scram_and_plain_clients_over_a_sasl_listener(broker_factory, tmp_path):
    b = sasl_broker(broker_factory, tmp_path)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    add_scram(admin, "bob", "bob-secret", ScramMechanism.SCRAM_SHA_256)
    add_scram(admin, "bob", "bob-secret", ScramMechanism.SCRAM_SHA_512, iterations=4096)
    r = cli("users", "create", "carol", "--bootstrap", b.bootstrap, input="carol-secret\n")
    assert r.returncode == 0, r.stdout + r.stderr
    # Described without secrets: mechanisms and iterations only.
    d = admin.describe_user_scram_credentials(["bob"])["bob"].result(30)
    assert sorted((i.mechanism, i.iterations) for i in d.scram_credential_infos) == \
        sorted([(ScramMechanism.SCRAM_SHA_256, 8192), (ScramMechanism.SCRAM_SHA_512, 4096)])
    listed = json.loads(cli("users", "list", "--json", "--bootstrap", b.bootstrap).stdout)
    assert {u["user"] for u in listed} == {"bob", "carol"}, listed
    # The metadata file holds no password.
    meta = (Path(b.data_dir) / "flumen-meta.toml").read_text()
    assert "scram_users" in meta and "bob-secret" not in meta and "carol-secret" not in meta

    for mech, user, pw in [("SCRAM-SHA-512", "bob", "bob-secret"),
                           ("SCRAM-SHA-256", "bob", "bob-secret"),
                           ("PLAIN", "alice", "alice-secret"),   # from the users file
                           ("PLAIN", "carol", "carol-secret"),   # a SCRAM user, by PLAIN
                           ("SCRAM-SHA-512", "carol", "carol-secret")]:
        round_trip(client(b, mech, user, pw), topic_name("sasl"))
    t = topic_name("sasl")
    # Clients of the SASL listener are told its address, not the PLAINTEXT one.
    md = AdminClient(client(b, "PLAIN", "alice", "alice-secret")).list_topics(timeout=15)
    assert [(x.host, x.port) for x in md.brokers.values()] == [("127.0.0.1", int(b.sasl.split(":")[1]))]

    # kafkajs: SCRAM-SHA-512 and PLAIN, and a wrong password refused.
    js = Path(__file__).resolve().parents[1] / "js" / "sasl.js"
    for mech, user, pw, expect in [("SCRAM-SHA-512", "bob", "bob-secret", "ok"),
                                   ("PLAIN", "alice", "alice-secret", "ok"),
                                   ("SCRAM-SHA-256", "bob", "nope", "refused")]:
        r = subprocess.run(["node", str(js), b.sasl, t, mech, user, pw, expect],
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 0 and r.stdout.startswith("OK"), (mech, expect, r.stdout + r.stderr)

    # kafka-python: SCRAM-SHA-256.
    from kafka import KafkaProducer
    kp = KafkaProducer(bootstrap_servers=b.sasl, security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="bob",
                       sasl_plain_password="bob-secret")
    kp.send(t, b"from-kafka-python", partition=0).get(timeout=30)
    kp.close()

    # kcat (Debian's librdkafka 2.0.2): PLAIN, and SCRAM, which librdkafka before 2.4 ends
    # with its own nonce repeated in front of the server's (Kafka accepts that; so must we).
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.fail("kcat is not installed (apt-get install kcat)")
    sasl = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
            "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret"]
    r = subprocess.run([kcat, "-b", b.sasl, *sasl, "-P", "-t", t, "-p", "0"], input="from-kcat\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    scram = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-256",
             "-X", "sasl.username=bob", "-X", "sasl.password=bob-secret"]
    r = subprocess.run([kcat, "-b", b.sasl, *scram, "-P", "-t", t, "-p", "0"],
                       input="from-kcat-scram\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([kcat, "-b", b.sasl, *sasl, "-C", "-t", t, "-p", "0", "-e", "-f", "%s\n"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "from-kafka-python" in r.stdout, r.stderr
    assert "from-kcat\n" in r.stdout and "from-kcat-scram" in r.stdout, r.stdout

    # Credentials survive a restart (the metadata holds them); a deleted user is refused.
    b.restart()
    round_trip(client(b, "SCRAM-SHA-512", "bob", "bob-secret"), topic_name("sasl"))
    r = cli("users", "delete", "bob", "--bootstrap", b.bootstrap)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bob" not in cli("users", "list", "--bootstrap", b.bootstrap).stdout
    s = socket.create_connection(("127.0.0.1", int(b.sasl.split(":")[1])), timeout=10)
    assert rawkafka.sasl_handshake(s, "PLAIN")[0] == 0
    code, message, _, _ = rawkafka.sasl_authenticate(s, b"\0bob\0bob-secret")
    assert code == 58, (code, message)  # SASL_AUTHENTICATION_FAILED
    s.close()


def test_wrong_passwords_and_unauthenticated_requests_are_refused(broker_factory, tmp_path):
    b = sasl_broker(broker_factory, tmp_path, sasl_enabled_mechanisms=["PLAIN", "SCRAM-SHA-512"])
    host, port = b.sasl.split(":")
    connect = lambda: socket.create_connection((host, int(port)), timeout=10)  # noqa: E731

    # confluent-kafka with a wrong password: an authentication error, no data.
    errors = []
    p = Producer({**client(b, "PLAIN", "alice", "wrong"), "error_cb": errors.append})
    p.produce("never", b"x")
    wait_until(lambda: (p.poll(0.2), errors)[1], 30,
               "an authentication error for the wrong password")
    assert any(e.code() == -169 or "Authentication" in e.str() or "SASL" in e.str()
               for e in errors), [e.str() for e in errors]  # -169: _AUTHENTICATION
    p.purge()

    # Before authenticating, only ApiVersions and SASL: Metadata closes the connection.
    s = connect()
    assert rawkafka.metadata_v1(s) is None
    s.close()
    # An unknown or disabled mechanism: UNSUPPORTED_SASL_MECHANISM and the enabled list.
    for mech in ["SCRAM-SHA-256", "GSSAPI"]:
        s = connect()
        assert rawkafka.sasl_handshake(s, mech) == (33, ["PLAIN", "SCRAM-SHA-512"]), mech
        assert rawkafka.metadata_v1(s) is None  # and then closed, as Kafka does
        s.close()
    # SaslAuthenticate without a handshake that chose a mechanism: ILLEGAL_SASL_STATE.
    s = connect()
    r = rawkafka.sasl_authenticate(s, b"\0alice\0alice-secret")
    assert r[0] == 34, r
    assert rawkafka.metadata_v1(s) is None  # and the connection is gone
    s.close()
    # Before authenticating, a frame over 512 KiB closes the connection before its body.
    s = connect()
    s.sendall(struct.pack(">i", 100 << 20))
    assert rawkafka.read_frame(s) is None
    s.close()
    # A failed authentication with requests pipelined behind it: none of them is served,
    # though the connection had authenticated before.
    s = connect()
    assert rawkafka.sasl_handshake(s, "PLAIN")[0] == 0
    assert rawkafka.sasl_authenticate(s, b"\0alice\0alice-secret")[0] == 0
    hs = rawkafka.frame(rawkafka.header(17, 1, 31) + struct.pack(">h", 5) + b"PLAIN")
    bad = b"\0alice\0wrong"
    auth = rawkafka.frame(rawkafka.header(36, 1, 32) + struct.pack(">i", len(bad)) + bad)
    meta = rawkafka.frame(rawkafka.header(3, 1, 33) + struct.pack(">i", -1))
    s.sendall(hs + auth + meta)
    assert rawkafka.read_frame(s) is not None          # the handshake's answer
    failed = rawkafka.read_frame(s)                    # SASL_AUTHENTICATION_FAILED
    assert struct.unpack(">ih", failed[:6])[1] == 58
    assert rawkafka.read_frame(s) is None              # no Metadata answer: closed
    s.close()
    # A wrong PLAIN password: SASL_AUTHENTICATION_FAILED with a message, then closed.
    s = connect()
    assert rawkafka.sasl_handshake(s, "PLAIN")[0] == 0
    code, message, _, _ = rawkafka.sasl_authenticate(s, b"\0alice\0wrong")
    assert code == 58 and "Invalid username or password" in message, (code, message)
    assert rawkafka.metadata_v1(s) is None
    s.close()
    # Garbage in place of a SCRAM message: refused, the broker stays up.
    s = connect()
    assert rawkafka.sasl_handshake(s, "SCRAM-SHA-512")[0] == 0
    assert rawkafka.sasl_authenticate(s, b"\xff\x00garbage")[0] == 58
    s.close()
    # SaslHandshake on the PLAINTEXT listener: ILLEGAL_SASL_STATE (as Kafka answers).
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    assert rawkafka.sasl_handshake(s, "PLAIN")[0] == 34
    assert rawkafka.metadata_v1(s) is not None  # still a PLAINTEXT connection
    s.close()
    # The right password works after all that.
    s = connect()
    assert rawkafka.sasl_handshake(s, "PLAIN")[0] == 0
    assert rawkafka.sasl_authenticate(s, b"\0alice\0alice-secret")[0] == 0
    assert rawkafka.metadata_v1(s) is not None
    s.close()
    # Bad listener configs stop the broker at start-up with a clear error.
    for listeners, why in [(["SSL://127.0.0.1:1"], "needs ssl_certificate_file"),
                           (["KERBEROS://127.0.0.1:1"], "unknown security protocol"),
                           (["PLAINTEXT://127.0.0.1:1", "PLAINTEXT://127.0.0.1:2"], "twice")]:
        d = tmp_path / f"bad-{why.split()[0]}"
        d.mkdir()
        (d / "f.toml").write_text("listeners = [" + ",".join(f'"{x}"' for x in listeners) + "]\n")
        r = subprocess.run([flumen_bin(), "serve", "--data-dir", str(d / "data"), "--config",
                            str(d / "f.toml")], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and why in r.stderr + r.stdout, r.stderr + r.stdout


def test_reauthentication_renews_sessions_and_cuts_off_a_deleted_user(broker_factory, tmp_path):
    b = sasl_broker(broker_factory, tmp_path, connections_max_reauth_ms=1500)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    add_scram(admin, "dave", "dave-secret", ScramMechanism.SCRAM_SHA_512)
    host, port = b.sasl.split(":")

    def login(s):
        assert rawkafka.sasl_handshake(s, "PLAIN")[0] == 0
        return rawkafka.sasl_authenticate(s, b"\0dave\0dave-secret")

    s = socket.create_connection((host, int(port)), timeout=10)
    code, _, _, lifetime = login(s)
    assert (code, lifetime) == (0, 1500)
    assert rawkafka.metadata_v1(s) is not None
    time.sleep(1.7)
    # Past its lifetime the session must authenticate again; it does, and goes on.
    assert login(s)[0] == 0
    assert rawkafka.metadata_v1(s) is not None
    # A client that does not re-authenticate is cut off at its next request.
    time.sleep(1.7)
    assert rawkafka.metadata_v1(s) is None
    s.close()

    # librdkafka re-authenticates on its own (KIP-368) and keeps producing across several
    # lifetimes.
    t = topic_name("reauth")
    conf = client(b, "SCRAM-SHA-512", "dave", "dave-secret")
    errors = []
    p = Producer({**conf, "acks": "all", "error_cb": errors.append})
    for i in range(10):
        p.produce(t, f"r{i}".encode())
        p.poll(0.5)
    assert p.flush(30) == 0 and not errors, [e.str() for e in errors]

    # Deleted: the next re-authentication fails, and so the connection ends.
    s = socket.create_connection((host, int(port)), timeout=10)
    assert login(s)[0] == 0
    r = cli("users", "delete", "dave", "--bootstrap", b.bootstrap)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(1.7)
    assert login(s)[0] == 58
    assert rawkafka.metadata_v1(s) is None
    s.close()
