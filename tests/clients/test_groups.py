"""Consumer groups with real clients: assignment, exactly-once consumption with manual commits,
members leaving and dying, static membership, cooperative-sticky, max.poll.interval.ms,
committed offsets across a broker restart, and kafka-python / kafkajs groups."""
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from util import create_topic, topic_name

WORKER = Path(__file__).with_name("group_worker.py")
# Fast first rebalance for tests; the Kafka default (3 s) is the broker's default.
GROUP_CONFIG = {"group_initial_rebalance_delay_ms": 500}


class Worker:
    def __init__(self, bootstrap, group, topic, name, **conf):
        self.name = name
        self.p = subprocess.Popen([sys.executable, str(WORKER), bootstrap, group, topic, name,
                                   json.dumps(conf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        self.events = queue.Queue()
        self.msgs = []
        self.assigned = set()
        self.history = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            ev = json.loads(line)
            self.history.append(ev)
            if ev["ev"] == "msg":
                self.msgs.append((ev["p"], ev["o"], ev["v"]))
            elif ev["ev"] == "assign":
                self.assigned |= set(ev["parts"])
            elif ev["ev"] == "revoke":
                self.assigned -= set(ev["parts"])
            self.events.put(ev)

    def assignments(self):
        return [e["parts"] for e in self.history if e["ev"] == "assign"]

    def revokes(self):
        return [e["parts"] for e in self.history if e["ev"] == "revoke"]

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(timeout=30)

    def kill(self):
        self.p.kill()
        self.p.wait(timeout=10)


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def produce(bootstrap, topic, n, partitions, start=0):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + n):
        p.produce(topic, value=str(i).encode(), partition=i % partitions)
    assert p.flush(15) == 0


def committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)],
                                                timeout=10)]
    finally:
        c.close()


def test_three_members_share_six_partitions_then_leave_and_die(broker_factory):
    b = broker_factory(shards=2, config=GROUP_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("grp"), 6)
    produce(b.bootstrap, topic, 600, 6)
    group = "g-" + topic
    ws = [Worker(b.bootstrap, group, topic, f"c{i}") for i in range(3)]
    try:
        wait_for(lambda: sorted(len(w.assigned) for w in ws) == [2, 2, 2], 30, "2 partitions each")
        assert sorted(p for w in ws for p in w.assigned) == list(range(6))
        wait_for(lambda: sum(len(w.msgs) for w in ws) >= 600, 30, "all 600 records")
        consumed = sorted(int(v) for w in ws for (_, _, v) in w.msgs)
        assert consumed == list(range(600)), "each record exactly once across the group"
        assert committed(b.bootstrap, group, topic, 6) == [100] * 6

        # A clean close (LeaveGroup): the two others take its partitions.
        ws[0].stop()
        wait_for(lambda: sorted(p for w in ws[1:] for p in w.assigned) == list(range(6)), 30,
                 "the others to take over after a leave")
        produce(b.bootstrap, topic, 60, 6, start=600)
        wait_for(lambda: sum(len(w.msgs) for w in ws) >= 660, 30, "records after the leave")

        # kill -9 (no LeaveGroup): its partitions move after the session timeout (6 s).
        killed_at = time.time()
        ws[1].kill()
        wait_for(lambda: ws[2].assigned == set(range(6)), 40, "the survivor to own all partitions")
        assert time.time() - killed_at >= 4, "moved before the session timeout could expire"
        produce(b.bootstrap, topic, 60, 6, start=660)
        wait_for(lambda: sum(len(w.msgs) for w in ws) >= 720, 30, "records after the kill")
        everything = sorted(int(v) for w in ws for (_, _, v) in w.msgs)
        assert set(everything) == set(range(720))
        assert committed(b.bootstrap, group, topic, 6) == [120] * 6
    finally:
        for w in ws:
            w.stop()


def test_static_member_restart_keeps_partitions_without_rebalance(broker_factory):
    b = broker_factory(config=GROUP_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("st"), 4)
    group = "g-" + topic
    conf = {"session.timeout.ms": 15000}
    a = Worker(b.bootstrap, group, topic, "a", **{"group.instance.id": "inst-a"}, **conf)
    c = Worker(b.bootstrap, group, topic, "c", **{"group.instance.id": "inst-c"}, **conf)
    try:
        wait_for(lambda: len(a.assigned) == 2 and len(c.assigned) == 2, 30, "2 + 2")
        time.sleep(1)
        before_a, c_events = set(a.assigned), len(c.history)
        a.stop()  # a static member leaves no LeaveGroup behind
        a2 = Worker(b.bootstrap, group, topic, "a2", **{"group.instance.id": "inst-a"}, **conf)
        wait_for(lambda: len(a2.assigned) == 2, 30, "the restarted member's assignment")
        assert a2.assigned == before_a
        time.sleep(2)
        others = [e for e in c.history[c_events:] if e["ev"] in ("assign", "revoke")]
        assert others == [], f"the other member saw a rebalance: {others}"
        a2.stop()
    finally:
        a.stop()
        c.stop()


def test_cooperative_sticky_revokes_only_moved_partitions(broker_factory):
    b = broker_factory(config=GROUP_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("coop"), 6)
    group = "g-" + topic
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a = Worker(b.bootstrap, group, topic, "a", **conf)
    try:
        wait_for(lambda: a.assigned == set(range(6)), 30, "a owns all six")
        b2 = Worker(b.bootstrap, group, topic, "b", **conf)
        try:
            wait_for(lambda: len(a.assigned) == 3 and len(b2.assigned) == 3, 40, "3 + 3")
            revoked = [p for r in a.revokes() for p in r]
            assert len(revoked) == 3, f"a gave up only what moved, got {a.revokes()}"
            assert set(revoked) == b2.assigned
        finally:
            b2.stop()
    finally:
        a.stop()


def test_member_past_max_poll_interval_is_replaced(broker_factory):
    b = broker_factory(config=GROUP_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("mp"), 4)
    group = "g-" + topic
    conf = {"max.poll.interval.ms": 7000}
    slow = Worker(b.bootstrap, group, topic, "slow", **conf)
    fast = Worker(b.bootstrap, group, topic, "fast", **conf)
    try:
        wait_for(lambda: len(slow.assigned) == 2 and len(fast.assigned) == 2, 30, "2 + 2")
        slow.send("pause")
        wait_for(lambda: fast.assigned == set(range(4)), 40, "fast to take over from slow")
        produce(b.bootstrap, topic, 40, 4)
        wait_for(lambda: len(fast.msgs) >= 40, 30, "fast to consume everything")
    finally:
        slow.kill()
        fast.stop()


def test_commits_survive_broker_restart_and_consumers_resume(broker_factory):
    b = broker_factory(shards=2, config=GROUP_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("rs"), 2)
    produce(b.bootstrap, topic, 100, 2)
    manual, auto = "manual-" + topic, "auto-" + topic
    w1 = Worker(b.bootstrap, manual, topic, "m")
    w2 = Worker(b.bootstrap, auto, topic, "a", **{"enable.auto.commit": True,
                                                    "auto.commit.interval.ms": 200})
    wait_for(lambda: len(w1.msgs) >= 100 and len(w2.msgs) >= 100, 30, "both consumed 100")
    time.sleep(1)  # an auto-commit interval or five
    w1.stop()
    w2.stop()
    assert committed(b.bootstrap, manual, topic, 2) == [50, 50]
    assert committed(b.bootstrap, auto, topic, 2) == [50, 50]
    b.restart()
    assert committed(b.bootstrap, manual, topic, 2) == [50, 50]
    produce(b.bootstrap, topic, 10, 2, start=100)
    w3 = Worker(b.bootstrap, manual, topic, "m2")
    try:
        wait_for(lambda: len(w3.msgs) >= 10, 30, "the new records")
        time.sleep(1)
        assert sorted(int(v) for (_, _, v) in w3.msgs) == list(range(100, 110)), \
            "resumed exactly at the committed offsets"
    finally:
        w3.stop()


def test_commits_survive_kill9(broker_factory):
    b = broker_factory(config=dict(GROUP_CONFIG, flush_interval_ms=0))
    topic = create_topic(b.bootstrap, topic_name("k9"), 1)
    produce(b.bootstrap, topic, 30, 1)
    group = "g-" + topic
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 17)], asynchronous=False)
    c.close()
    b.kill9()
    b.start()
    assert committed(b.bootstrap, group, topic, 1) == [17]


def test_kafka_python_group(broker_factory):
    from kafka import KafkaConsumer
    b = broker_factory(config=GROUP_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("kpg"), 3)
    produce(b.bootstrap, topic, 90, 3)
    group = "g-" + topic
    c = KafkaConsumer(topic, bootstrap_servers=b.bootstrap, group_id=group,
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=8000)
    got = []
    for m in c:
        got.append(int(m.value))
        if len(got) == 90:
            break
    c.commit()
    c.close()
    assert sorted(got) == list(range(90))
    assert committed(b.bootstrap, group, topic, 3) == [30, 30, 30]


def test_flumen_groups_admin(broker_factory):
    from conftest import flumen_bin
    b = broker_factory(config=GROUP_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("adm"), 2)
    produce(b.bootstrap, topic, 20, 2)
    group = "g-" + topic
    w = Worker(b.bootstrap, group, topic, "w")
    try:
        wait_for(lambda: len(w.msgs) >= 20, 30, "consumed")
        run = lambda *a: subprocess.run([flumen_bin(), "groups", "--bootstrap", b.bootstrap, *a],
                                        capture_output=True, text=True, timeout=30)
        out = run("list")
        assert out.returncode == 0 and group in out.stdout and "Stable" in out.stdout
        out = run("describe", group)
        assert out.returncode == 0, out.stderr
        assert "1 member(s)" in out.stdout
        rows = [l.split() for l in out.stdout.splitlines() if l.startswith(topic)]
        assert [(r[1], r[2], r[3], r[4]) for r in rows] == [("0", "10", "10", "0"), ("1", "10", "10", "0")]
        refused = run("reset-offsets", group, "--topic", topic, "--to-earliest")
        assert refused.returncode != 0 and "active member" in refused.stderr
    finally:
        w.stop()
    out = run("reset-offsets", group, "--topic", topic, "--to-offset", "3")
    assert out.returncode == 0, out.stderr
    assert committed(b.bootstrap, group, topic, 2) == [3, 3]
    out = run("reset-offsets", group, "--topic", topic, "--to-earliest")
    assert committed(b.bootstrap, group, topic, 2) == [0, 0]
