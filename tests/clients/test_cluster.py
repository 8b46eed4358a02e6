"""Several real brokers under one metadata quorum on this machine: node k listens on 127.0.0.k
(every 127.0.0.x address binds with no setup), one shard each. Faults are real: kill -9,
SIGTERM (controlled shutdown), and an nftables partition of one node."""
import contextlib
import shutil
import signal
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, flumen_bin, free_port

SESSION_MS = 2000


class Cluster:
    """`n` voters, then `observers` brokers that follow the metadata log without voting."""

    def __init__(self, tmp, n, extra=None, observers=0):
        self.nodes = []
        ports = [(free_port(), free_port()) for _ in range(n + observers)]
        voters = [f"{k + 1}@127.0.0.{k + 1}:{ports[k][1]}" for k in range(n)]
        for k in range(n + observers):
            d = tmp / f"node{k + 1}"
            d.mkdir()
            config = {
                "node_id": k + 1,
                "controller_listen": f"127.0.0.{k + 1}:{ports[k][1]}",
                "controller_quorum_voters": voters,
                "broker_session_timeout_ms": SESSION_MS,
                "broker_heartbeat_interval_ms": 250,
                "offsets_topic_partitions": 6,
                "transaction_state_partitions": 3,
            }
            config.update(extra or {})
            b = Broker(d, shards=1, config=config, host=f"127.0.0.{k + 1}")
            b.port = ports[k][0]
            b.bootstrap = f"127.0.0.{k + 1}:{b.port}"
            self.nodes.append(b)

    def start(self):
        for b in self.nodes:
            b.start()
        self.wait_live(range(1, len(self.nodes) + 1))
        return self

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def bootstrap(self, exclude=()):
        return ",".join(b.bootstrap for i, b in enumerate(self.nodes, 1) if i not in exclude and b.proc)

    def metadata(self, via):
        return AdminClient({"bootstrap.servers": self.node(via).bootstrap}).list_topics(timeout=10)

    def wait_live(self, ids, via=None, timeout=30):
        """Until `via` (default: each listed node) reports exactly `ids` as live brokers and
        the internal topics exist."""
        want = set(ids)
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            ok = True
            for v in [via] if via else want:
                try:
                    md = self.metadata(v)
                except Exception as e:  # not reachable yet
                    last, ok = e, False
                    break
                last = (v, set(md.brokers), md.controller_id, sorted(md.topics))
                if set(md.brokers) != want or "__consumer_offsets" not in md.topics or md.controller_id not in want:
                    ok = False
                    break
            if ok:
                return
            time.sleep(0.2)
        raise AssertionError(f"cluster did not settle on brokers {want}: {last}\n{self.logs()}")

    def logs(self):
        return "\n".join(f"==== node {i} ====\n{b.log()[-6000:]}" for i, b in enumerate(self.nodes, 1))

    def stop(self):
        """SIGTERM to every node at once, then each must exit 0 (the last ones have no quorum
        left to release their leaderships through; they stop anyway, after a short wait)."""
        running = [b for b in self.nodes if b.proc and b.proc.poll() is None]
        for b in running:
            b.proc.send_signal(signal.SIGTERM)
        for b in running:
            b.stop_or_kill()


@pytest.fixture
def cluster_factory(tmp_path, request):
    made = []

    def make(n, extra=None, observers=0):
        d = tmp_path / f"c{len(made)}"
        d.mkdir()
        c = Cluster(d, n, extra, observers)
        made.append(c)
        return c

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    for c in made:
        if failed:
            print(c.logs())
        c.stop()


def eventually(check, timeout=10, what="condition"):
    """Metadata reaches the other brokers a heartbeat later (as in Kafka): wait for it."""
    deadline = time.time() + timeout
    while True:
        try:
            r = check()
            if r:
                return r
        except Exception:
            if time.time() > deadline:
                raise
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def cut_off(node_id):
    """An nftables partition of node `node_id` while the block runs: every packet between
    127.0.0.<node_id> and another address is dropped silently, both ways. Clients talk from
    127.0.0.1 (the kernel's source for every 127.x address), so node 1 cannot be cut off this
    way without cutting the test off too, and a client reaches a cut-off node only from a
    socket bound to the node's own address."""
    table = "flumen_partition_test"
    a = f"127.0.0.{node_id}"
    rules = (f"table ip {table} {{\n chain out {{\n type filter hook output priority 0;\n"
             f" ip saddr {a} ip daddr != {a} drop\n"
             f" ip daddr {a} ip saddr != {a} drop\n }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], check=True)


def create(bootstrap, name, partitions, rf=1, config=None, assignment=None):
    """`config`: topic configs; `assignment`: the replicas of each partition, leader first
    (then it gives the partition count and the replication factor)."""
    a = AdminClient({"bootstrap.servers": bootstrap})
    if assignment:
        assert len(assignment) == partitions, assignment
        topic = NewTopic(name, partitions, replica_assignment=assignment, config=config or {})
    else:
        topic = NewTopic(name, partitions, rf, config=config or {})
    for _, f in a.create_topics([topic], operation_timeout=20).items():
        f.result(timeout=30)


def produce(bootstrap, topic, values, errors=None):
    """Idempotent acks=all producer; answers the acknowledged (partition, offset, value)."""
    acked = []
    errs = [] if errors is None else errors
    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": 120000,
    })

    def done(err, msg):
        if err:
            errs.append(err)
        else:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    for v in values:
        while True:
            try:
                p.produce(topic, value=v, key=v, on_delivery=done)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(120) == 0
    assert errs == [], errs
    return acked


def consume_all(bootstrap, topic, expected, group, timeout=60):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    got = []
    deadline = time.time() + timeout
    while len(got) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            assert m.error().code() in (KafkaError._PARTITION_EOF,) or m.error().retriable(), m.error()
            continue
        got.append((m.partition(), m.offset(), m.value()))
    c.close()
    return got


def assert_leaders_balanced(md):
    """Leaders spread evenly over the live brokers, counting every partition of the cluster
    (which topics were placed while which brokers had registered varies from run to run)."""
    leads = {b: 0 for b in md.brokers}
    for t in md.topics.values():
        for p in t.partitions.values():
            leads[p.leader] = leads.get(p.leader, 0) + 1
    assert max(leads.values()) - min(leads.values()) <= 1, leads


def check_history(acked, consumed):
    """Every acknowledged record read back exactly once at its offset, and offsets within a
    partition increase in acknowledgement order."""
    assert sorted(consumed) == sorted(acked), (len(acked), len(consumed))
    last = {}
    for p, off, _ in acked:
        assert off > last.get(p, -1), f"partition {p}: offset {off} acknowledged after {last[p]}"
        last[p] = off


def test_three_brokers_one_cluster_clients_follow_leaders(cluster_factory):
    c = cluster_factory(3).start()
    create(c.node(1).bootstrap, "spread", 6)
    create(c.node(2).bootstrap, "three", 3, rf=3)
    # Every broker serves the same metadata.
    for i in (1, 2, 3):
        eventually(lambda: {"spread", "three"} <= set(c.metadata(i).topics), what=f"topics on {i}")
    views = [c.metadata(i) for i in (1, 2, 3)]
    for md in views:
        assert set(md.brokers) == {1, 2, 3}
        assert md.brokers[2].host == "127.0.0.2"
        assert md.controller_id == views[0].controller_id
        assert "spread" in md.topics and "three" in md.topics
    assert {p.leader for p in views[0].topics["spread"].partitions.values()} == {1, 2, 3}
    assert_leaders_balanced(views[0])
    for p in views[0].topics["three"].partitions.values():
        assert sorted(p.replicas) == [1, 2, 3]
        assert p.leader == p.replicas[0]
    for md in views[1:]:
        for t in ("spread", "three"):
            assert {p.id: p.leader for p in md.topics[t].partitions.values()} == {
                p.id: p.leader for p in views[0].topics[t].partitions.values()}
    # Explicit assignments are placed as given; one naming an unknown broker is refused.
    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    admin1 = KafkaAdminClient(bootstrap_servers=c.node(1).bootstrap)
    admin1.create_topics([KNewTopic("placed", -1, -1, replica_assignments={0: [2, 3], 1: [3, 1]})])
    md = eventually(lambda: (m := c.metadata(1)) and "placed" in m.topics and m, what="placed")
    assert [p.replicas for _, p in sorted(md.topics["placed"].partitions.items())] == [[2, 3], [3, 1]]
    assert [p.leader for _, p in sorted(md.topics["placed"].partitions.items())] == [2, 3]
    with pytest.raises(Exception) as e:
        admin1.create_topics([KNewTopic("nowhere", -1, -1, replica_assignments={0: [9]})])
    assert "[Error 39]" in str(e.value), e.value  # INVALID_REPLICA_ASSIGNMENT
    admin1.close()
    # DescribeCluster (what admin tools call) names the same brokers and controller.
    admin = AdminClient({"bootstrap.servers": c.node(3).bootstrap})
    d = admin.describe_cluster(request_timeout=10).result()
    assert sorted(n.id for n in d.nodes) == [1, 2, 3]
    assert d.controller.id == views[0].controller_id
    assert d.cluster_id == views[0].cluster_id
    # A replication factor larger than the cluster is refused with Kafka's code.
    with pytest.raises(Exception) as e:
        create(c.node(3).bootstrap, "too-many", 1, rf=4)
    assert "INVALID_REPLICATION_FACTOR" in str(e.value) or "eplication" in str(e.value)
    # Produce through one broker, consume as a group through another: the clients follow
    # each partition to its leader and the group to its coordinator.
    values = [f"v{i}".encode() for i in range(900)]
    acked = produce(c.node(3).bootstrap, "spread", values)
    check_history(acked, consume_all(c.node(2).bootstrap, "spread", len(values), "g-spread"))
    # kcat (librdkafka 2.0) sees the three brokers too.
    if shutil.which("kcat"):
        out = subprocess.run(["kcat", "-b", c.node(1).bootstrap, "-L", "-t", "spread"],
                             capture_output=True, text=True, timeout=30).stdout
        assert "3 brokers" in out, out
        assert "controller" in out, out


def test_kafkajs_across_brokers(cluster_factory):
    """kafkajs: createTopics, produce acks=-1 and consume in a group with three partitions led
    by three brokers (tests/js/roundtrip.js, the same script as on a single node)."""
    from pathlib import Path
    js = Path(__file__).resolve().parents[1] / "js"
    if shutil.which("node") is None or not (js / "node_modules" / "kafkajs").exists():
        pytest.fail("kafkajs missing: run `npm ci` in tests/js (.ci/run does)")
    c = cluster_factory(3).start()
    r = subprocess.run(["node", str(js / "roundtrip.js"), c.node(2).bootstrap, "js-cluster"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("OK 500"), r.stdout + r.stderr
    md = c.metadata(1)
    assert len({p.leader for p in md.topics["js-cluster"].partitions.values()}) > 1
    assert_leaders_balanced(md)


def test_transactions_span_brokers(cluster_factory):
    """A transaction over partitions led by all three brokers: the coordinator writes the
    markers of remote partitions with WriteTxnMarkers to their leaders. read_committed sees
    exactly the committed records, on every partition (each one's last stable offset moved
    past the markers), and offsets sent with the transaction become committed."""
    from confluent_kafka import TopicPartition
    c = cluster_factory(3).start()
    create(c.node(1).bootstrap, "txt", 6)
    p = Producer({"bootstrap.servers": c.bootstrap(), "transactional.id": "tx-cluster"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(60):
        p.produce("txt", value=f"c{i}".encode(), partition=i % 6)
    group = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "g-tx"})
    p.send_offsets_to_transaction([TopicPartition("txt", 0, 7)], group.consumer_group_metadata(), 30)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(60):
        p.produce("txt", value=f"a{i}".encode(), partition=i % 6)
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(6):
        p.produce("txt", value=f"d{i}".encode(), partition=i)
    p.commit_transaction(30)
    leaders = {q.leader for q in c.metadata(1).topics["txt"].partitions.values()}
    assert leaders == {1, 2, 3}
    r = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "g-read",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "enable.partition.eof": True})
    r.assign([TopicPartition("txt", i, 0) for i in range(6)])
    got, eof = [], set()
    deadline = time.time() + 60
    while len(eof) < 6 and time.time() < deadline:
        m = r.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
            continue
        got.append(m.value().decode())
    r.close()
    assert eof == set(range(6)), f"stuck partitions (no marker?): {set(range(6)) - eof}"
    assert sorted(got) == sorted([f"c{i}" for i in range(60)] + [f"d{i}" for i in range(6)])
    committed = group.committed([TopicPartition("txt", 0)], timeout=30)
    assert committed[0].offset == 7
    group.close()


def offset_for_leader_epoch(bootstrap, topic, partition, current_epoch, epoch):
    """OffsetForLeaderEpoch v2 by hand (no Python client exposes it): (error, epoch, end)."""
    import socket
    import struct
    host, port = bootstrap.split(":")
    t = topic.encode()
    body = struct.pack(">i", 1) + struct.pack(">h", len(t)) + t + struct.pack(">i", 1)
    body += struct.pack(">iii", partition, current_epoch, epoch)
    head = struct.pack(">hhih", 23, 2, 7, 4) + b"test"
    frame = head + body
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        n = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        r = s.recv(n, socket.MSG_WAITALL)
    corr, _throttle, _nt, tlen = struct.unpack(">iiih", r[:14])
    assert corr == 7
    rest = r[14 + tlen:]
    _np, err, part, ep, end = struct.unpack(">ihiiq", rest[:22])
    assert part == partition
    return err, ep, end


def test_leader_epochs_follow_leadership_changes(cluster_factory):
    """Each leadership change bumps the partition's leader epoch; new batches carry it, and
    OffsetForLeaderEpoch answers where each epoch ends (what librdkafka checks after a
    leader change, KIP-320), fencing callers with a stale or unknown current epoch."""
    c = cluster_factory(3).start()
    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    k = KafkaAdminClient(bootstrap_servers=c.node(1).bootstrap)
    k.create_topics([KNewTopic("ep", -1, -1, replica_assignments={0: [2]})])
    k.close()
    eventually(lambda: "ep" in c.metadata(1).topics, what="ep")
    produce(c.bootstrap(), "ep", [f"e0-{i}".encode() for i in range(5)])
    assert offset_for_leader_epoch(c.node(2).bootstrap, "ep", 0, 0, 0) == (0, 0, 5)
    # Not the leader: NOT_LEADER_OR_FOLLOWER (6).
    assert offset_for_leader_epoch(c.node(1).bootstrap, "ep", 0, 0, 0)[0] == 6
    c.node(2).kill9()
    eventually(lambda: c.metadata(1).topics["ep"].partitions[0].leader == -1, timeout=20, what="fenced")
    c.node(2).start()
    c.wait_live([1, 2, 3])
    eventually(lambda: c.metadata(1).topics["ep"].partitions[0].leader == 2, what="back")
    # Fenced (epoch 1), then leading again (epoch 2).
    produce(c.bootstrap(), "ep", [f"e2-{i}".encode() for i in range(3)])
    assert offset_for_leader_epoch(c.node(2).bootstrap, "ep", 0, 2, 0) == (0, 0, 5)
    assert offset_for_leader_epoch(c.node(2).bootstrap, "ep", 0, 2, 1) == (0, 0, 5)
    assert offset_for_leader_epoch(c.node(2).bootstrap, "ep", 0, 2, 2) == (0, 2, 8)
    assert offset_for_leader_epoch(c.node(2).bootstrap, "ep", 0, 1, 2)[0] == 74  # FENCED_LEADER_EPOCH
    assert offset_for_leader_epoch(c.node(2).bootstrap, "ep", 0, 9, 2)[0] == 75  # UNKNOWN_LEADER_EPOCH
    # A consumer reads both epochs' records through the change.
    got = consume_all(c.bootstrap(), "ep", 8, "g-ep")
    assert [v for _, _, v in sorted(got)] == [f"e0-{i}".encode() for i in range(5)] + [
        f"e2-{i}".encode() for i in range(3)]


def test_delete_and_recreate_across_brokers(cluster_factory):
    """DeleteTopics through one broker removes the topic everywhere; a new topic of the same
    name starts empty on every broker (the old partition directories are gone or refused by
    their topic id)."""
    from confluent_kafka import TopicPartition
    c = cluster_factory(3).start()
    create(c.node(1).bootstrap, "del", 3)
    produce(c.bootstrap(), "del", [f"old{i}".encode() for i in range(30)])
    admin = AdminClient({"bootstrap.servers": c.node(2).bootstrap})
    admin.delete_topics(["del"])["del"].result(30)
    for i in (1, 2, 3):
        eventually(lambda: "del" not in c.metadata(i).topics, what=f"del gone on {i}")
    create(c.node(3).bootstrap, "del", 3)
    for i in (1, 2, 3):
        eventually(lambda: "del" in c.metadata(i).topics, what=f"del back on {i}")
    acked = produce(c.bootstrap(), "del", [f"new{i}".encode() for i in range(6)])
    by_part = {}
    for part, off, _ in acked:
        by_part.setdefault(part, []).append(off)
    for part, offs in by_part.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {part} did not start empty: {offs}"
    check_history(acked, consume_all(c.bootstrap(), "del", 6, "g-del"))


def test_controller_kill_new_controller_metadata_intact(cluster_factory):
    c = cluster_factory(5).start()
    create(c.node(1).bootstrap, "before", 5)
    before = eventually(lambda: c.metadata(2).topics["before"], what="before on node 2")
    old = c.metadata(2).controller_id
    c.node(old).kill9()
    t0 = time.time()
    others = [i for i in range(1, 6) if i != old]
    deadline = time.time() + 30
    new = None
    while time.time() < deadline:
        md = c.metadata(others[0])
        if md.controller_id not in (old, -1):
            new = md.controller_id
            break
        time.sleep(0.1)
    assert new is not None, c.logs()
    print(f"new controller {new} after {time.time() - t0:.2f}s")
    # The metadata survived: same topic, same partitions; and it still takes changes.
    create(c.node(others[1]).bootstrap, "after", 2)
    for i in others:
        md = eventually(lambda: (m := c.metadata(i)) and "after" in m.topics and m, what=f"after on {i}")
        assert len(md.topics["before"].partitions) == len(before.partitions)
    # The killed node comes back and catches up with what changed while it was gone.
    c.node(old).start()
    c.wait_live(range(1, 6), via=old)
    eventually(lambda: "after" in c.metadata(old).topics, what="the restarted node catching up")


def test_broker_kill_is_fenced_and_rejoins(cluster_factory):
    c = cluster_factory(3).start()
    create(c.node(1).bootstrap, "t", 6)
    acked = produce(c.bootstrap(), "t", [f"a{i}".encode() for i in range(300)])
    md = c.metadata(1)
    led_by_2 = {p.id for p in md.topics["t"].partitions.values() if p.leader == 2}
    assert led_by_2 and len(led_by_2) < 6, led_by_2
    c.node(2).kill9()
    # Fenced after the session timeout: gone from Metadata, its partitions without a leader
    # (it is their only in-sync replica: no other broker holds their records).
    c.wait_live([1, 3], via=1, timeout=SESSION_MS / 1000 + 20)
    md = c.metadata(3)
    for p in md.topics["t"].partitions.values():
        if p.id in led_by_2:
            assert p.leader == -1 and p.error is not None and p.error.code() == KafkaError.LEADER_NOT_AVAILABLE
        else:
            assert p.leader in (1, 3) and p.error is None
    # The other partitions keep taking writes.
    p = Producer({"bootstrap.servers": c.bootstrap(exclude=(2,)), "acks": "all"})
    delivered = []
    live = sorted(set(range(6)) - led_by_2)
    for i in range(60):
        p.produce("t", value=f"b{i}".encode(), partition=live[i % len(live)],
                  on_delivery=lambda e, m: delivered.append((e, m.partition(), m.offset(), m.value())))
    assert p.flush(30) == 0
    assert all(e is None for e, *_ in delivered), delivered
    acked += [(part, off, v) for _, part, off, v in delivered]
    # Back: registered again, leads its partitions again, nothing it held is lost.
    c.node(2).start()
    c.wait_live([1, 2, 3])
    md = c.metadata(1)
    assert {p.id for p in md.topics["t"].partitions.values() if p.leader == 2} == led_by_2
    check_history(acked, consume_all(c.bootstrap(), "t", len(acked), "g-rejoin"))


def test_rolling_restart_with_controlled_shutdown(cluster_factory):
    c = cluster_factory(3).start()
    create(c.node(1).bootstrap, "roll", 6)
    errors = []
    acked = []
    stop = threading.Event()

    def run():
        p = Producer({
            "bootstrap.servers": c.bootstrap(),
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": 120000,
        })
        i = 0

        def done(err, msg):
            if err:
                errors.append(err)
            else:
                acked.append((msg.partition(), msg.offset(), msg.value()))

        while not stop.is_set():
            try:
                p.produce("roll", value=f"r{i}".encode(), on_delivery=done)
                i += 1
            except BufferError:
                pass
            p.poll(0.005)
        p.flush(120)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1)
    for k in (1, 2, 3):
        c.node(k).stop()  # SIGTERM: controlled shutdown, must exit 0
        time.sleep(0.5)
        c.node(k).start()
        c.wait_live([1, 2, 3])
        time.sleep(0.5)
    stop.set()
    t.join(timeout=150)
    # No error reached the application: only retriable ones happened, and librdkafka retried.
    assert errors == [], errors[:5]
    assert len(acked) > 100
    check_history(acked, consume_all(c.bootstrap(), "roll", len(acked), "g-roll", timeout=90))


def test_observer_broker_grows_the_cluster(cluster_factory):
    """A broker outside the voter list joins as an observer (a Raft learner): it gets the
    metadata log, takes partitions, serves clients, and is fenced and rejoins like any broker."""
    c = cluster_factory(3, observers=1).start()
    create(c.node(4).bootstrap, "wide", 8)
    md = eventually(lambda: (m := c.metadata(1)) and "wide" in m.topics and m, what="wide")
    assert set(md.brokers) == {1, 2, 3, 4}
    assert md.controller_id in (1, 2, 3)
    assert {p.leader for p in md.topics["wide"].partitions.values()} == {1, 2, 3, 4}
    # The internal topics may have been placed before the observer registered, so "wide"
    # alone need not be even; the cluster as a whole is.
    assert_leaders_balanced(md)
    acked = produce(c.node(4).bootstrap, "wide", [f"w{i}".encode() for i in range(400)])
    c.node(4).kill9()
    c.wait_live([1, 2, 3], via=1, timeout=SESSION_MS / 1000 + 20)
    c.node(4).start()
    c.wait_live([1, 2, 3, 4])
    eventually(lambda: all(p.leader != -1 for p in c.metadata(4).topics["wide"].partitions.values()),
               what="broker 4 leading again")
    check_history(acked, consume_all(c.node(4).bootstrap, "wide", len(acked), "g-wide"))


def test_reassign_partitions_onto_a_new_broker(cluster_factory):
    """Growing the cluster: `flumen topics reassign` moves partitions from brokers 1 and 2 to
    a broker that joined later (an observer, 4) and to 3. The new replicas copy the data
    from the leader, join the ISR, then the old replicas go (their directories too) and the
    leadership moves; nothing acknowledged is lost and clients follow."""
    c = cluster_factory(3, observers=1).start()
    boot = c.node(1).bootstrap
    create(boot, "mv", 2, assignment=[[1, 2], [2, 1]])
    acked = produce(boot, "mv", [f"m{i}".encode() for i in range(3000)])

    def flumen(*args):
        r = subprocess.run([flumen_bin(), "topics", "--bootstrap", boot, *args],
                           capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout + r.stderr

    rc, out = flumen("reassign", "--topic", "mv", "--cancel")
    assert rc != 0 and "85" in out, out  # NO_REASSIGNMENT_IN_PROGRESS
    rc, out = flumen("reassign", "--topic", "mv", "--replicas", "4,9")
    assert rc != 0 and "39" in out, out  # INVALID_REPLICA_ASSIGNMENT: no broker 9
    rc, out = flumen("reassign", "--topic", "mv", "--replicas", "4,3", "--wait")
    assert rc == 0 and "done" in out, out
    rc, out = flumen("reassignments")
    assert rc == 0 and "mv" not in out, out
    md = eventually(lambda: (m := c.metadata(1)) and all(
        p.replicas == [4, 3] and p.leader == 4 and sorted(p.isrs) == [3, 4]
        for p in m.topics["mv"].partitions.values()) and m, timeout=30, what="mv on 4 and 3")
    assert len(md.topics["mv"].partitions) == 2
    # The old replicas' data is gone from brokers 1 and 2.
    for n in (1, 2):
        data = c.node(n).data_dir
        eventually(lambda: not [d for d in data.glob("mv-*") if d.is_dir()], timeout=20,
                   what=f"mv gone from broker {n}: {list(data.glob('mv-*'))}")
    assert [d for d in c.node(4).data_dir.glob("mv-*") if d.is_dir()], "broker 4 holds mv"
    more = produce(c.node(3).bootstrap, "mv", [f"n{i}".encode() for i in range(200)])
    got = consume_all(c.node(4).bootstrap, "mv", len(acked) + len(more), "g-mv")
    check_history(acked + more, got)


def test_create_partitions_on_a_single_node_and_a_cluster(broker_factory, cluster_factory):
    from confluent_kafka.admin import NewPartitions
    single = broker_factory()
    c = cluster_factory(3).start()
    for bootstrap, via in ((single.bootstrap, None), (c.node(2).bootstrap, 1)):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        create(bootstrap, "grow", 2)
        admin.create_partitions([NewPartitions("grow", 5)])["grow"].result(30)
        md = eventually(lambda: (m := AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10))
                        and len(m.topics["grow"].partitions) == 5 and m, what="5 partitions")
        if via:
            leaders = sorted(p.leader for p in md.topics["grow"].partitions.values())
            assert set(leaders) == {1, 2, 3}, leaders
        # The new partitions take records; a smaller count and an internal topic are refused.
        p = Producer({"bootstrap.servers": bootstrap})
        got = []
        p.produce("grow", value=b"x", partition=4, on_delivery=lambda e, m: got.append((e, m.partition())))
        assert p.flush(30) == 0 and got == [(None, 4)], got
        with pytest.raises(Exception) as e:
            admin.create_partitions([NewPartitions("grow", 3)])["grow"].result(30)
        assert "INVALID_PARTITIONS" in str(e.value) or "must be larger" in str(e.value)
        with pytest.raises(Exception) as e:
            admin.create_partitions([NewPartitions("__consumer_offsets", 100)])["__consumer_offsets"].result(30)
        assert "POLICY_VIOLATION" in str(e.value) or "internal" in str(e.value)


def test_elect_leaders_preferred_and_unclean(cluster_factory):
    from confluent_kafka import ElectionType, TopicPartition
    c = cluster_factory(3).start()
    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    k = KafkaAdminClient(bootstrap_servers=c.node(1).bootstrap)
    k.create_topics([KNewTopic("two", -1, -1, replica_assignments={0: [2, 1]})])
    k.close()
    eventually(lambda: "two" in c.metadata(3).topics, what="two")

    def elect(kind):
        # A fresh client each time: librdkafka keeps sending admin requests to the controller
        # it knew, and the test kills brokers.
        admin = AdminClient({"bootstrap.servers": c.node(3).bootstrap})
        f = admin.elect_leaders(kind, [TopicPartition("two", 0)])
        return f.result(30)[TopicPartition("two", 0)]

    # The preferred replica leads already.
    err = elect(ElectionType.PREFERRED)
    assert err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED, err
    acked = produce(c.node(3).bootstrap, "two", [b"before"])
    assert acked
    eventually(lambda: sorted(c.metadata(3).topics["two"].partitions[0].isrs) == [1, 2], what="ISR 1, 2")
    c.node(2).kill9()
    # Broker 1 is in sync: it leads, with every acknowledged record; nothing unclean to do.
    part = eventually(lambda: (p := c.metadata(3).topics["two"].partitions[0]) and p.leader == 1 and p,
                      timeout=20, what="broker 1 leading")
    assert part.isrs == [1]
    err = elect(ElectionType.UNCLEAN)
    assert err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED, err
    assert len(produce(c.node(3).bootstrap, "two", [b"after"])) == 1
    # Broker 2 back: not in sync yet, so a preferred election is refused until it caught up.
    c.node(2).start()
    c.wait_live([1, 2, 3])
    # (Metadata may come from broker 2 itself, whose image lags for a moment after its start:
    # the controller's answer to the election is what counts.)
    eventually(lambda: sorted(c.metadata(3).topics["two"].partitions[0].isrs) == [1, 2],
               timeout=30, what="broker 2 back in sync")

    def preferred_done():
        err = elect(ElectionType.PREFERRED)
        assert err is None or err.code() in (KafkaError.PREFERRED_LEADER_NOT_AVAILABLE,
                                             KafkaError.ELECTION_NOT_NEEDED), err
        return err is None or err.code() == KafkaError.ELECTION_NOT_NEEDED
    eventually(preferred_done, timeout=30, what="preferred election back to broker 2")
    part = eventually(lambda: (p := c.metadata(3).topics["two"].partitions[0]) and p.leader == 2 and p,
                      what="broker 2 leading again")
    got = consume_all(c.node(2).bootstrap, "two", 2, group="elect")
    assert got == [(0, 0, b"before"), (0, 1, b"after")], got


@pytest.mark.skipif(shutil.which("nft") is None, reason="nftables is installed by .ci/run")
def test_partitioned_node_is_fenced_minority_changes_nothing(cluster_factory):
    c = cluster_factory(3).start()
    create(c.node(1).bootstrap, "t", 3)
    with cut_off(3):
        # The majority fences node 3 and keeps changing metadata without it.
        c.wait_live([1, 2], via=1, timeout=30)
        create(c.node(2).bootstrap, "during", 2)
        eventually(lambda: "during" in c.metadata(1).topics, what="during on 1")
        time.sleep(1)
    # Healed: node 3 is back, with the majority's metadata (it committed nothing alone).
    c.wait_live([1, 2, 3], timeout=30)
    eventually(lambda: "during" in c.metadata(3).topics, what="node 3 catching up")
    m1, m3 = c.metadata(1), c.metadata(3)
    assert set(m3.topics) == set(m1.topics)
    log3 = c.node(3).log()
    assert "registered" in log3


def test_bad_cluster_configuration_is_refused_at_start(tmp_path, cluster_factory):
    port = free_port()

    def serve(data, *args):
        cmd = [flumen_bin(), "serve", "--shards", "1", "--listen", f"127.0.0.1:{port}",
               "--data-dir", str(data), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return r.returncode, r.stdout + r.stderr

    # A one-voter cluster that ran once: its data dir now belongs to node 1 of that cluster.
    c = cluster_factory(1).start()
    create(c.node(1).bootstrap, "kept", 1)
    c.stop()
    data = c.node(1).data_dir
    listen = c.node(1).config_path.read_text().split("controller_listen = ")[1].split("\n")[0].strip('"')
    voters = f"1@{listen}"
    other = f"2@127.0.0.2:{free_port()}"
    # An observer (not a voter) that claims a voter's controller address.
    rc, out = serve(tmp_path / "x", "--node-id", "2", "--controller-listen", listen, "--voters", voters)
    assert rc != 0 and "is voter 1's address" in out, out
    # A cluster node without a controller address.
    rc, out = serve(tmp_path / "x", "--node-id", "2", "--voters", voters)
    assert rc != 0 and "set controller_listen" in out, out
    # A malformed voter.
    rc, out = serve(tmp_path / "x", "--node-id", "1", "--voters", "one@somewhere")
    assert rc != 0 and "is not a number" in out, out
    # Another node id on this node's data dir.
    rc, out = serve(data, "--node-id", "2", "--controller-listen", other.split("@")[1],
                    "--voters", f"{voters},{other}")
    assert rc != 0 and "belongs to node 1" in out, out
    # A voter list that disagrees with the quorum this node belongs to.
    rc, out = serve(data, "--node-id", "1", "--controller-listen", listen, "--voters", f"{voters},{other}")
    assert rc != 0 and "differ from the quorum" in out, out
    # Nothing was overwritten: the node starts as before, with its topic.
    c.node(1).start()
    c.wait_live([1])
    eventually(lambda: "kept" in c.metadata(1).topics, what="kept")
    c.node(1).stop()
    # A single node's data dir with topics is not taken over by a cluster node.
    (tmp_path / "single").mkdir()
    single = Broker(tmp_path / "single")
    single.start()
    create(single.bootstrap, "mine", 1)
    single.stop()
    rc, out = serve(single.data_dir, "--node-id", "1", "--controller-listen", listen, "--voters", voters)
    assert rc != 0 and "single-node broker" in out, out
