"""ACLs (issue 16): Kafka's model with `authorizer_enabled`, managed with confluent-kafka's
AdminClient and `flumen acls`, enforced on every API a client calls. For each API an allowed
principal (alice) succeeds and a denied one (mallory) gets Kafka's *_AUTHORIZATION_FAILED code
and no data; topic names do not leak through Metadata; a DENY wins over an ALLOW; super users
pass; anonymous PLAINTEXT clients are User:ANONYMOUS; the ACLs survive a restart."""
import json
import os
import re
import subprocess
import time

import pytest
from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, AlterConfigOpType,
                                   ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, ResourcePatternType,
                                   ResourceType)

import rawkafka
from conftest import flumen_bin, free_port
from test_cluster import cluster_factory  # noqa: F401
from util import topic_name

USERS = {"admin": "admin-pw", "alice": "alice-pw", "mallory": "mallory-pw"}


@pytest.fixture
def secured(broker_factory, tmp_path):
    users = tmp_path / "users.toml"
    users.write_text("".join(f'{u} = "{p}"\n' for u, p in USERS.items()))
    port = free_port()
    b = broker_factory(config={
        "listeners": ["PLAINTEXT://{bootstrap}", f"SASL_PLAINTEXT://127.0.0.1:{port}"],
        "sasl_plain_users_file": str(users),
        "authorizer_enabled": True,
        "super_users": ["User:admin"],
    })
    b.sasl = f"127.0.0.1:{port}"
    return b


def conf(b, user, **more):
    return {"bootstrap.servers": b.sasl, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": USERS[user],
            **more}


def acls(b, *args):
    """`flumen acls ...` as admin (SASL PLAIN from the environment)."""
    env = dict(os.environ, FLUMEN_SASL_USERNAME="admin", FLUMEN_SASL_PASSWORD="admin-pw")
    r = subprocess.run([flumen_bin(), "acls", *args, "--bootstrap", b.sasl], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def sasl_socket(b, user):
    """A raw connection to the SASL listener, logged in as `user` with PLAIN."""
    s = rawkafka.connect(b.sasl)
    assert rawkafka.sasl_handshake(s, "PLAIN")[0] == 0
    assert rawkafka.sasl_authenticate(s, f"\0{user}\0{USERS[user]}".encode())[0] == 0
    return s


def code_of(exc):
    """The Kafka error code of what confluent-kafka raised (a KafkaException, or for some
    admin results the KafkaError itself)."""
    if isinstance(exc, KafkaError):
        return exc.code()
    e = exc.args[0]
    return e.code() if isinstance(e, KafkaError) else e


def fails_with(code, fn):
    with pytest.raises(KafkaException) as ei:
        fn()
    assert code_of(ei.value) == code, ei.value
    return ei.value


def produce(b, user, topic, n=3, **more):
    """Produces n records; answers the delivery errors (empty when all landed)."""
    errors = []
    p = Producer(conf(b, user, **more))
    for i in range(n):
        p.produce(topic, f"v{i}".encode(), partition=0,
                  on_delivery=lambda e, m: e and errors.append(e.code()))
    p.flush(30)
    return errors


def consume(b, user, topic, n, group=None):
    """Reads partition 0 from the start (assigned, or subscribed in `group`): (values, errors)."""
    c = Consumer(conf(b, user, **{"group.id": group or "unused", "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False}))
    if group:
        c.subscribe([topic])
    else:
        c.assign([TopicPartition(topic, 0, 0)])
    got, errors = [], []
    deadline = time.time() + 20
    while len(got) < n and not errors and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            # Assigned, librdkafka still looks up the coordinator of its group.id.
            if group or m.error().code() != KafkaError.GROUP_AUTHORIZATION_FAILED:
                errors.append(m.error().code())
        else:
            got.append(m.value())
    if group and got:
        c.commit(asynchronous=False)
    c.close()
    return got, errors


def test_acl_matrix_allowed_and_denied_principal_per_api(secured):
    b = secured
    t = topic_name("acl")
    group = f"g-{t}"
    admin = AdminClient(conf(b, "admin"))
    for f in admin.create_topics([NewTopic(t, 2, 1)]).values():
        f.result(30)
    # alice's ACLs: some through confluent-kafka's AdminClient, some through `flumen acls`.
    bind = lambda rt, name, op, pattern=ResourcePatternType.LITERAL, who="User:alice", \
        perm=AclPermissionType.ALLOW: AclBinding(rt, name, pattern, who, "*", op, perm)  # noqa
    created = admin.create_acls([
        bind(ResourceType.TOPIC, t, AclOperation.WRITE),
        bind(ResourceType.TOPIC, t, AclOperation.READ),
        bind(ResourceType.GROUP, group, AclOperation.READ),
    ])
    for f in created.values():
        f.result(30)
    acls(b, "add", "--principal", "User:alice", "--topic", "alice-", "--prefixed",
         "--operation", "CREATE,DELETE,ALTER,ALTER_CONFIGS")
    acls(b, "add", "--principal", "User:alice", "--transactional-id", "tx-alice",
         "--operation", "WRITE")
    listed = json.loads(acls(b, "list", "--principal", "User:alice", "--json"))
    assert len(listed) == 8, listed

    # Produce.
    assert produce(b, "alice", t) == []
    assert produce(b, "mallory", t) == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3
    # Fetch (assigned: no group involved), and ListOffsets.
    got, errs = consume(b, "alice", t, 3)
    assert (len(got), errs) == (3, [])
    # librdkafka does not even fetch a partition whose metadata it was refused, so mallory's
    # Fetch is sent raw: the error and no records.
    for user, want in [("mallory", KafkaError.TOPIC_AUTHORIZATION_FAILED), ("alice", 0)]:
        s = sasl_socket(b, user)
        s.sendall(rawkafka.fetch_v4(t, 0, 0, max_wait_ms=0))
        _, [(_, err, _, records)] = rawkafka.parse_fetch_v4(rawkafka.read_frame(s))
        s.close()
        assert err == want and (len(records) > 0) == (want == 0), (user, err, len(records))
    assert Consumer(conf(b, "alice", **{"group.id": "x"})).get_watermark_offsets(
        TopicPartition(t, 0), timeout=15) == (0, 3)
    for user, want in [("mallory", (KafkaError.TOPIC_AUTHORIZATION_FAILED, -1)), ("alice", (0, 3))]:
        s = sasl_socket(b, user)
        assert rawkafka.list_offsets_v1(s, t, 0) == want, user
        s.close()
    # Metadata: mallory is not told the topic exists, alice is.
    assert t in AdminClient(conf(b, "alice")).list_topics(timeout=15).topics
    assert t not in AdminClient(conf(b, "mallory")).list_topics(timeout=15).topics
    named = AdminClient(conf(b, "mallory")).list_topics(t, timeout=15).topics[t]
    assert named.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # And the anonymous PLAINTEXT client sees nothing and writes nothing.
    assert [x for x in AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(
        timeout=15).topics if not x.startswith("__")] == []

    # Groups: JoinGroup/SyncGroup/OffsetCommit/OffsetFetch need READ on the group.
    got, errs = consume(b, "alice", t, 3, group=group)
    assert (len(got), errs) == (3, []), errs
    got, errs = consume(b, "mallory", t, 3, group=group)
    assert got == [] and KafkaError.GROUP_AUTHORIZATION_FAILED in errs, errs
    m_admin = AdminClient(conf(b, "mallory"))
    a_admin = AdminClient(conf(b, "alice"))
    asked = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, 0)])]
    offsets = a_admin.list_consumer_group_offsets(asked)[group].result(30)
    assert [(p.offset, p.error) for p in offsets.topic_partitions] == [(3, None)]
    # FindCoordinator needs DESCRIBE on the group.
    fails_with(KafkaError.GROUP_AUTHORIZATION_FAILED,
               lambda: m_admin.list_consumer_group_offsets(asked)[group].result(30))
    # ListGroups filters by DESCRIBE, DescribeGroups needs it.
    assert group in [g.group_id for g in a_admin.list_consumer_groups().result(30).valid]
    assert group not in [g.group_id for g in m_admin.list_consumer_groups().result(30).valid]
    fails_with(KafkaError.GROUP_AUTHORIZATION_FAILED,
               lambda: m_admin.describe_consumer_groups([group])[group].result(30))
    # With DESCRIBE on the group, mallory may see it and fetch its offsets, but not of a topic
    # it may not describe; and DeleteGroups still needs DELETE.
    acls(b, "add", "--principal", "User:mallory", "--group", group, "--operation", "DESCRIBE")
    assert group in [g.group_id for g in m_admin.list_consumer_groups().result(30).valid]
    assert m_admin.describe_consumer_groups([group])[group].result(30).group_id == group
    offsets = m_admin.list_consumer_group_offsets(asked)[group].result(30)
    assert [p.error.code() for p in offsets.topic_partitions] == \
        [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    fails_with(KafkaError.GROUP_AUTHORIZATION_FAILED,
               lambda: m_admin.delete_consumer_groups([group])[group].result(30))

    # CreateTopics, CreatePartitions, configs, DeleteRecords, DeleteTopics.
    mine = f"alice-{t}"
    a_admin.create_topics([NewTopic(mine, 1, 1)])[mine].result(30)
    fails_with(KafkaError.TOPIC_AUTHORIZATION_FAILED,
               lambda: m_admin.create_topics([NewTopic(f"m-{t}", 1, 1)])[f"m-{t}"].result(30))
    a_admin.create_partitions([NewPartitions(mine, 2)])[mine].result(30)
    fails_with(KafkaError.TOPIC_AUTHORIZATION_FAILED,
               lambda: m_admin.create_partitions([NewPartitions(t, 4)])[t].result(30))
    # ALTER_CONFIGS on alice- topics implies DESCRIBE_CONFIGS there; READ/WRITE on t does not.
    res, own = ConfigResource(ResourceType.TOPIC, t), ConfigResource(ResourceType.TOPIC, mine)
    assert "retention.ms" in a_admin.describe_configs([own])[own].result(30)
    fails_with(KafkaError.TOPIC_AUTHORIZATION_FAILED,
               lambda: a_admin.describe_configs([res])[res].result(30))
    fails_with(KafkaError.TOPIC_AUTHORIZATION_FAILED,
               lambda: m_admin.describe_configs([res])[res].result(30))
    set_retention = lambda name: ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", "3600000",
                    incremental_operation=AlterConfigOpType.SET)])  # noqa: E731
    a_admin.incremental_alter_configs([set_retention(mine)])[own].result(30)
    fails_with(KafkaError.TOPIC_AUTHORIZATION_FAILED,
               lambda: a_admin.incremental_alter_configs([set_retention(t)])[res].result(30))
    bres = ConfigResource(ResourceType.BROKER, "0")
    fails_with(KafkaError.CLUSTER_AUTHORIZATION_FAILED,
               lambda: m_admin.describe_configs([bres])[bres].result(30))
    # DESCRIBE lets mallory see the topic (librdkafka asks DeleteRecords only of leaders it
    # knows), not delete from it.
    acls(b, "add", "--principal", "User:mallory", "--topic", t, "--operation", "DESCRIBE")
    assert t in m_admin.list_topics(timeout=15).topics
    from confluent_kafka import TopicPartition as TP
    fails_with(KafkaError.TOPIC_AUTHORIZATION_FAILED,
               lambda: _raise_partition_error(m_admin.delete_records([TP(t, 0, 1)])))
    fails_with(KafkaError.TOPIC_AUTHORIZATION_FAILED,
               lambda: m_admin.delete_topics([t])[t].result(30))
    a_admin.delete_topics([mine])[mine].result(30)
    assert t in admin.list_topics(timeout=15).topics  # mallory deleted nothing

    # Transactions: WRITE on the transactional id; an idempotent producer needs WRITE on some
    # topic (KIP-679), which mallory has not.
    p = Producer(conf(b, "alice", **{"transactional.id": "tx-alice"}))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(t, b"in-txn", partition=1)
    p.commit_transaction(30)
    mp = Producer(conf(b, "mallory", **{"transactional.id": "tx-alice"}))
    fails_with(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, lambda: mp.init_transactions(15))
    assert produce(b, "alice", t, **{"enable.idempotence": True}) == []
    # librdkafka makes the refused InitProducerId a fatal error.
    e = fails_with(KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                   lambda: produce(b, "mallory", t, **{"enable.idempotence": True}))
    assert e.args[0].fatal()

    # The security APIs themselves: ALTER / DESCRIBE on the cluster.
    fails_with(KafkaError.CLUSTER_AUTHORIZATION_FAILED, lambda: [
        f.result(30) for f in m_admin.create_acls([bind(
            ResourceType.TOPIC, "*", AclOperation.ALL, who="User:mallory")]).values()])
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    # confluent-kafka 2.16 answers an empty list for a refused DescribeAcls; kafka-python
    # raises the broker's error.
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, KafkaAdminClient, ResourcePatternFilter)
    from kafka.admin import ResourceType as KpResourceType
    from kafka.errors import ClusterAuthorizationFailedError
    kp = KafkaAdminClient(bootstrap_servers=b.sasl, security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism="PLAIN", sasl_plain_username="mallory",
                          sasl_plain_password=USERS["mallory"])
    any_acl = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                        permission_type=ACLPermissionType.ANY,
                        resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                               ACLResourcePatternType.ANY))
    with pytest.raises(ClusterAuthorizationFailedError):
        kp.describe_acls(any_acl)
    kp.close()
    fails_with(KafkaError.CLUSTER_AUTHORIZATION_FAILED,
               lambda: [f.result(30) for f in m_admin.delete_acls([flt]).values()])
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)
    up = UserScramCredentialUpsertion("mallory2", ScramCredentialInfo(
        ScramMechanism.SCRAM_SHA_512, 4096), b"pw")
    fails_with(KafkaError.CLUSTER_AUTHORIZATION_FAILED,
               lambda: m_admin.alter_user_scram_credentials([up])["mallory2"].result(30))
    # Raw: DescribeLogDirs and a follower's Fetch need the cluster.
    s = sasl_socket(b, "mallory")
    assert rawkafka.describe_log_dirs_error(s) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert rawkafka.follower_fetch_error(s) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    s.close()
    s = sasl_socket(b, "admin")
    assert rawkafka.describe_log_dirs_error(s) == 0
    s.close()
    # The admin (a super user) saw everything all along.
    assert len(admin.describe_acls(flt).result(30)) == 10


def _raise_partition_error(futs):
    for f in futs.values():
        tp = f.result(30)
        if tp.error:
            raise KafkaException(tp.error)


def test_deny_wins_prefixes_and_wildcards_and_acls_survive_a_restart(secured):
    b = secured
    t, secret = topic_name("pub"), topic_name("secret")
    admin = AdminClient(conf(b, "admin"))
    for f in admin.create_topics([NewTopic(t, 1, 1), NewTopic(secret, 1, 1)]).values():
        f.result(30)
    # Everyone may do anything to every topic, but alice may not touch `secret`.
    acls(b, "add", "--principal", "User:*", "--topic", "*", "--operation", "ALL")
    acls(b, "add", "--principal", "User:alice", "--topic", secret, "--operation", "ALL", "--deny")
    assert produce(b, "mallory", secret) == []
    assert produce(b, "alice", t) == []
    assert produce(b, "alice", secret) == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3
    assert secret not in AdminClient(conf(b, "alice")).list_topics(timeout=15).topics
    # A DENY only from another host does not apply.
    acls(b, "remove", "--principal", "User:alice", "--topic", secret, "--deny")
    acls(b, "add", "--principal", "User:alice", "--topic", secret, "--operation", "WRITE",
         "--deny", "--host", "10.9.9.9")
    assert produce(b, "alice", secret) == []
    # kcat (librdkafka 2.0) is refused the same way by a DENY for its host.
    acls(b, "add", "--principal", "User:alice", "--topic", secret, "--operation", "READ",
         "--deny", "--host", "127.0.0.1")
    r = subprocess.run(["kcat", "-C", "-b", b.sasl, "-t", secret, "-p", "0", "-o", "beginning",
                        "-e", "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
                        "-X", "sasl.username=alice", "-X", "sasl.password=alice-pw"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "authoriz" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr

    before = json.loads(acls(b, "list", "--json"))
    b.restart()
    after = json.loads(acls(b, "list", "--json"))
    assert sorted(map(json.dumps, before)) == sorted(map(json.dumps, after)) and len(after) == 3
    assert produce(b, "alice", t) == []
    # A named resource lists every ACL that applies to it, the wildcard included.
    applies = json.loads(acls(b, "list", "--topic", secret, "--json"))
    assert {(a["name"], a["permission"]) for a in applies} == {("*", "ALLOW"), (secret, "DENY")}
    # Removing the wildcard takes alice's access away.
    removed = acls(b, "remove", "--principal", "User:*", "--topic", "*")
    assert "ALL" in removed
    assert produce(b, "alice", t) == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3


def test_authorizer_off_allows_everything_and_refuses_acl_changes(broker):
    """The default: no checks, as before; the ACL APIs answer SECURITY_DISABLED as Kafka's do
    without an authorizer (else anyone could stage grants for themselves)."""
    t = topic_name("open")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    b = AclBinding(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, "User:bob", "*",
                   AclOperation.READ, AclPermissionType.ALLOW)
    fails_with(KafkaError.SECURITY_DISABLED, lambda: admin.create_acls([b])[b].result(30))
    flt = AclBindingFilter(ResourceType.TOPIC, None, ResourcePatternType.ANY, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    fails_with(KafkaError.SECURITY_DISABLED, lambda: admin.delete_acls([flt])[flt].result(30))
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(t, b"x")
    assert p.flush(30) == 0


def test_bad_bindings_and_hosts_written_differently(secured):
    b = secured
    admin = AdminClient(conf(b, "admin"))
    t = topic_name("bad")
    bad = AclBinding(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, "bob", "*",
                     AclOperation.READ, AclPermissionType.ALLOW)
    fails_with(KafkaError.INVALID_REQUEST, lambda: admin.create_acls([bad])[bad].result(30))
    # An IPv4-mapped IPv6 host is the IPv4 address, as the client's is compared.
    acls(b, "add", "--principal", "User:*", "--topic", t, "--operation", "ALL")
    acls(b, "add", "--principal", "User:alice", "--topic", t, "--operation", "WRITE", "--deny",
         "--host", "::ffff:127.0.0.1")
    listed = json.loads(acls(b, "list", "--topic", t, "--json"))
    assert {a["host"] for a in listed} == {"*", "127.0.0.1"}, listed
    assert produce(b, "alice", t) == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3
    assert produce(b, "mallory", t) == []
    flt = AclBindingFilter(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    assert len(admin.delete_acls([flt])[flt].result(30)) == 2
    assert produce(b, "alice", t) == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3


def test_a_secured_cluster_brokers_log_in_to_each_other(cluster_factory, tmp_path):
    """Three brokers whose only listener is SASL_PLAINTEXT: they replicate and write
    transaction markers to each other as User:broker (a super user), ACLs made through one
    broker hold on all of them, and a principal without them gets nothing from any."""
    users = tmp_path / "cluster-users.toml"
    logins = {**USERS, "broker": "broker-pw"}
    users.write_text("".join(f'{u} = "{p}"\n' for u, p in logins.items()))
    c = cluster_factory(3, extra={
        "listeners": ["SASL_PLAINTEXT://{bootstrap}"],
        "sasl_plain_users_file": str(users),
        "authorizer_enabled": True,
        "super_users": ["User:admin", "User:broker"],
        "inter_broker_sasl_username": "broker",
        "inter_broker_sasl_password": "broker-pw",
    })
    for b in c.nodes:
        # The cluster picks each node's port after its config is written: name it here.
        text = b.config_path.read_text()
        b.config_path.write_text(re.sub(r'SASL_PLAINTEXT://[^"]*', f"SASL_PLAINTEXT://{b.bootstrap}",
                                        text))
        b.start()
        b.sasl = b.bootstrap
    via = lambda k, user, **more: conf(c.node(k), user, **more)  # noqa: E731
    admin = AdminClient(via(1, "admin"))
    deadline = time.time() + 30
    while True:
        md = admin.list_topics(timeout=10)
        if set(md.brokers) == {1, 2, 3} and "__transaction_state" in md.topics:
            break
        assert time.time() < deadline, (md.brokers, md.topics, c.logs())
        time.sleep(0.2)
    t = topic_name("sec")
    admin.create_topics([NewTopic(t, 3, 3)])[t].result(30)
    acls(c.node(2), "add", "--principal", "User:alice", "--topic", t, "--operation", "READ,WRITE")
    acls(c.node(2), "add", "--principal", "User:alice", "--group", f"g-{t}", "--operation", "READ")
    acls(c.node(3), "add", "--principal", "User:alice", "--transactional-id", "tx", "--operation",
         "WRITE")
    # acks=all needs the followers to fetch as brokers (CLUSTER_ACTION): they logged in.
    p = Producer(via(3, "alice", acks="all"))
    for i in range(30):
        p.produce(t, f"plain-{i}".encode(), partition=i % 3)
    assert p.flush(30) == 0
    # A transaction over the three partitions: markers go from the coordinator to the other
    # leaders through the brokers' own logins.
    tp = Producer(via(2, "alice", **{"transactional.id": "tx"}))
    tp.init_transactions(30)
    tp.begin_transaction()
    for i in range(3):
        tp.produce(t, f"txn-{i}".encode(), partition=i)
    tp.commit_transaction(30)
    got = []
    cons = Consumer(via(1, "alice", **{"group.id": f"g-{t}", "auto.offset.reset": "earliest",
                                       "isolation.level": "read_committed"}))
    cons.subscribe([t])
    deadline = time.time() + 30
    while len(got) < 33 and time.time() < deadline:
        m = cons.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    cons.close()
    assert len(got) == 33 and sum(v.startswith(b"txn-") for v in got) == 3, len(got)
    # Every broker refuses mallory, and none names the topic to it.
    for k in (1, 2, 3):
        assert produce(c.node(k), "mallory", t) == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3
        assert t not in AdminClient(via(k, "mallory")).list_topics(timeout=15).topics
    # A client that does not log in is closed, as on any SASL listener.
    s = rawkafka.connect(c.node(1).bootstrap)
    assert rawkafka.metadata_v1(s) is None
    s.close()
    # The followers really copied the log: stop partition 0's leader and read it all from
    # the broker that takes over (only an in-sync replica may).
    leader = admin.list_topics(t, timeout=15).topics[t].partitions[0].leader
    c.node(leader).stop()
    rest = [k for k in (1, 2, 3) if k != leader]
    cons = Consumer({**via(rest[0], "alice", **{"group.id": f"g-{t}",
                                                "isolation.level": "read_committed"}),
                     "bootstrap.servers": ",".join(c.node(k).bootstrap for k in rest)})
    cons.assign([TopicPartition(t, 0, 0)])
    got = []
    deadline = time.time() + 40
    while len(got) < 11 and time.time() < deadline:
        m = cons.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    cons.close()
    assert sorted(got) == sorted([f"plain-{i}".encode() for i in range(0, 30, 3)] + [b"txn-0"])
