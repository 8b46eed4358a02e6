"""Transactions with real clients (confluent-kafka / librdkafka, kafkajs): commits and aborts
seen through read_committed and read_uncommitted, the last stable offset, consume-transform-
produce across a kill -9 of the processor, a producer killed inside a transaction (aborted at
its timeout), a live producer past its timeout (aborted and fenced), and fencing by a second
producer with the same transactional.id."""
import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import (OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)

from util import create_topic, read_isolated, topic_name, wait_until, watermarks_at

PROCESSOR = Path(__file__).with_name("txn_processor.py")
JS = Path(__file__).resolve().parents[1] / "js"
# Fast first rebalance, short sessions (a killed processor's member leaves in 3 s), and the
# timed-out-transaction check every 200 ms instead of every second.
TXN_CONFIG = {"group_initial_rebalance_delay_ms": 300, "group_min_session_timeout_ms": 1000,
              "transaction_abort_check_interval_ms": 200}
# What librdkafka reports when the coordinator or a partition says this producer's epoch is
# stale: it normalizes INVALID_PRODUCER_EPOCH and PRODUCER_FENCED to the fatal _FENCED.
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


def txn_producer(bootstrap, txn_id, **extra):
    conf = {"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5}
    conf.update(extra)
    return Producer(conf)


class Deliveries:
    """Delivery reports of one producer: every record must be acknowledged without error."""

    def __init__(self):
        self.ok, self.errors = 0, []

    def __call__(self, err, msg):
        if err:
            self.errors.append(err)
        else:
            self.ok += 1

    def check(self, n):
        assert not self.errors, f"delivery errors: {self.errors[:3]}"
        assert self.ok == n, f"{self.ok} of {n} records acknowledged"


def values(msgs):
    return [m.value() for m in msgs]


def offsets(msgs):
    return [m.offset() for m in msgs]


class Proc:
    """txn_processor.py in its own process; its JSON events collected from stdout, its stderr
    (librdkafka logs) in a file shown on failure."""

    def __init__(self, tmp_path, name, *args):
        self.log_path = tmp_path / f"{name}.log"
        self.p = subprocess.Popen([sys.executable, str(PROCESSOR), *args], stdout=subprocess.PIPE,
                                  stderr=open(self.log_path, "w"), text=True)
        self.events = []
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "garbage", "line": line}
            self.events.append(ev)
            self.q.put(ev)

    def log(self):
        try:
            return self.log_path.read_text()[-6000:]
        except OSError:
            return ""

    def wait(self, pred, timeout, what):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; events {self.events[-5:]}; "
                                     f"exit {self.p.poll()}; stderr:\n{self.log()}")
            try:
                ev = self.q.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.p.poll() is not None and self.q.empty():
                    time.sleep(0.2)  # the reader thread may still be delivering the last lines
                    if self.q.empty():
                        raise AssertionError(f"{what}: the process exited {self.p.returncode}; "
                                             f"events {self.events[-5:]}; stderr:\n{self.log()}")
                continue
            if pred(ev):
                return ev

    def kill9(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)

    def exit_code(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


@pytest.fixture
def procs():
    made = []
    yield made
    for p in made:
        p.kill9()


def test_interleaved_commits_and_aborts(broker_factory):
    """10 transactions over 2 topics x 3 partitions, 50 records per partition each, the odd ones
    aborted after their records were acknowledged. Per partition transaction t occupies offsets
    t*51 .. t*51+49 and its marker t*51+50. While a transaction is open the last stable offset
    (ListOffsets read_committed) stays at its first offset and the high watermark is past its
    records; read_committed sees exactly the committed records, read_uncommitted all of them."""
    b = broker_factory(shards=2, config=TXN_CONFIG)
    topics = [create_topic(b.bootstrap, topic_name("txa"), 3),
              create_topic(b.bootstrap, topic_name("txb"), 3)]
    per, ntx = 50, 10
    val = lambda ti, t, part, i: b"%d-%d-%d-%d" % (ti, t, part, i)
    p = txn_producer(b.bootstrap, "tx-" + topics[0])
    p.init_transactions(30)
    dr = Deliveries()
    rc = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "wm-rc",
                   "isolation.level": "read_committed"})
    ru = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "wm-ru",
                   "isolation.level": "read_uncommitted"})
    wm = lambda c, topic, part: c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
    try:
        for t in range(ntx):
            p.begin_transaction()
            for i in range(per):
                for ti, topic in enumerate(topics):
                    for part in range(3):
                        p.produce(topic, key=b"%d" % t, value=val(ti, t, part, i), partition=part,
                                  on_delivery=dr)
            assert p.flush(30) == 0
            dr.check((t + 1) * per * 6)
            for topic in topics:
                for part in range(3):
                    assert wm(rc, topic, part) == (0, t * 51), \
                        f"read_committed end (LSO) with transaction {t} open, {topic}/{part}"
                    assert wm(ru, topic, part) == (0, t * 51 + per), \
                        f"high watermark with transaction {t} open, {topic}/{part}"
            if t % 2:
                p.abort_transaction(30)
            else:
                p.commit_transaction(30)
        # The last markers may be written after EndTxn is answered (Kafka writes them
        # asynchronously); they must land within a few seconds.
        end = ntx * 51
        for topic in topics:
            for part in range(3):
                wait_until(lambda: wm(rc, topic, part) == (0, end), 10,
                           f"LSO {end} on {topic}/{part} after the last transaction")
                assert wm(ru, topic, part) == (0, end)
    finally:
        rc.close()
        ru.close()
    dr.check(ntx * per * 6)

    for ti, topic in enumerate(topics):
        committed = read_isolated(b.bootstrap, topic, 3, "read_committed")
        everything = read_isolated(b.bootstrap, topic, 3, "read_uncommitted")
        for part in range(3):
            even = [t for t in range(ntx) if t % 2 == 0]
            assert values(committed[part]) == [val(ti, t, part, i) for t in even for i in range(per)], \
                f"read_committed {topic}/{part}: aborted records shown or committed ones missing"
            assert offsets(committed[part]) == [t * 51 + i for t in even for i in range(per)]
            assert [m.key() for m in committed[part]] == [b"%d" % t for t in even for _ in range(per)]
            assert values(everything[part]) == [val(ti, t, part, i) for t in range(ntx)
                                                for i in range(per)], \
                f"read_uncommitted {topic}/{part} must show committed and aborted records"
            assert offsets(everything[part]) == [t * 51 + i for t in range(ntx) for i in range(per)]


def produce_plain(bootstrap, topic, n, partitions):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    dr = Deliveries()
    for i in range(n):
        p.produce(topic, key=b"k%d" % i, value=b"%d" % i, partition=i % partitions, on_delivery=dr)
    assert p.flush(30) == 0
    dr.check(n)


def group_committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, q) for q in range(partitions)],
                                                timeout=15)]
    finally:
        c.close()


def test_consume_transform_produce_exactly_once_across_kill9(broker_factory, tmp_path, procs):
    """txn_processor.py turns input i (key k<i>, value <i>, partition i % 3) into key k<i>,
    value out-<i> on the same output partition, committing its input offsets in the same
    transaction. It is killed -9 with a transaction open (records written, not committed) after
    at least 3 commits, then restarted with the same transactional.id: the output read
    read_committed has every input's result exactly once, in input order per partition, and the
    group's committed offsets are the input's ends."""
    b = broker_factory(shards=2, config=TXN_CONFIG)
    src = create_topic(b.bootstrap, topic_name("ctp-in"), 3)
    dst = create_topic(b.bootstrap, topic_name("ctp-out"), 3)
    n = 3000
    produce_plain(b.bootstrap, src, n, 3)
    group, txn_id = "g-" + src, "proc-" + src
    expected = {q: [b"out-%d" % i for i in range(q, n, 3)] for q in range(3)}
    expected_keys = {q: [b"k%d" % i for i in range(q, n, 3)] for q in range(3)}
    args = [b.bootstrap, src, dst, group, txn_id]

    first = Proc(tmp_path, "proc1", "process", *args, "1.0", "100")
    procs.append(first)
    opened = first.wait(lambda e: e["ev"] == "open" and e["txns"] >= 3, 60,
                        "an open transaction after 3 commits")
    first.kill9()
    time.sleep(0.3)  # let the reader thread take the last lines
    assert first.events[-1] == opened, \
        f"the processor got past its open transaction before the kill: {first.events[-3:]}"
    committed_n = sum(e["n"] for e in first.events if e["ev"] == "committed")
    assert 0 < committed_n and committed_n + opened["n"] < n, "killed too late to be mid-way"

    # The killed transaction stays open (its timeout is 60 s): read_committed ends at it.
    visible = read_isolated(b.bootstrap, dst, 3, "read_committed")
    for q in range(3):
        got = values(visible[q])
        assert got == expected[q][:len(got)], f"output {q} before the restart is not a prefix"
    assert sum(len(v) for v in visible.values()) == committed_n, \
        "read_committed must show exactly the committed transactions' records"
    raw = read_isolated(b.bootstrap, dst, 3, "read_uncommitted")
    assert sum(len(v) for v in raw.values()) == committed_n + opened["n"], \
        "read_uncommitted shows the open transaction's records too"
    # (a partition the processor has not reached yet has no committed offset: -1001)
    assert group_committed(b.bootstrap, group, src, 3) == \
        [len(visible[q]) or OFFSET_INVALID for q in range(3)], \
        "the group's offsets are those of the committed transactions"

    second = Proc(tmp_path, "proc2", "process", *args, "0", "100")
    procs.append(second)
    started = time.time()
    second.wait(lambda e: e["ev"] == "done", 120, "the restarted processor to finish")
    assert second.exit_code(30) == 0, second.log()
    # Its init_transactions aborted the killed one's transaction at once, not at its 60 s timeout
    # (until then read_committed consumers of the output, and so this check, would be stuck).
    assert time.time() - started < 40, "the restarted processor waited for the old transaction"

    out = read_isolated(b.bootstrap, dst, 3, "read_committed")
    for q in range(3):
        got = values(out[q])
        dups = len(got) - len(set(got))
        missing = len(set(expected[q]) - set(got))
        assert got == expected[q], (f"output partition {q}: {len(got)} records, {dups} duplicates, "
                                    f"{missing} missing")
        assert [m.key() for m in out[q]] == expected_keys[q]
    raw = read_isolated(b.bootstrap, dst, 3, "read_uncommitted")
    assert sum(len(v) for v in raw.values()) == n + opened["n"], \
        "the log holds every result once plus the aborted transaction's records"
    assert group_committed(b.bootstrap, group, src, 3) == [1000, 1000, 1000]


def test_killed_producer_holds_lso_until_its_transaction_times_out(broker_factory, tmp_path, procs):
    """A producer killed -9 inside a transaction (transaction.timeout.ms 6000) leaves it open:
    records another transactional producer commits after it are invisible to read_committed
    (the LSO stays at the open transaction's first offset) until the broker aborts it at its
    timeout; then read_committed moves past it, never showing the killed producer's records."""
    b = broker_factory(shards=2, config=TXN_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("hung"), 1)
    timeout_s = 6.0
    other = txn_producer(b.bootstrap, "other-" + topic)
    other.init_transactions(30)
    dr = Deliveries()

    def committed_txn(vals):
        other.begin_transaction()
        for v in vals:
            other.produce(topic, value=v, partition=0, on_delivery=dr)
        other.commit_transaction(30)

    pre = [b"pre-%d" % i for i in range(10)]
    hung = [b"hung-%d" % i for i in range(20)]
    post = [b"post-%d" % i for i in range(30)]
    committed_txn(pre)  # offsets 0-9, marker 10
    h = Proc(tmp_path, "hang", "hang", b.bootstrap, topic, "hung-" + topic,
             str(int(timeout_s * 1000)), str(len(hung)))
    procs.append(h)
    began = h.wait(lambda e: e["ev"] == "ready", 30, "the hung producer's records")["begin"]
    h.kill9()  # its records are at 11-30, its transaction open
    committed_txn(post)  # 31-60, marker 61
    dr.check(len(pre) + len(post))

    assert time.time() < began + timeout_s - 1, "too slow to look before the timeout"
    assert watermarks_at(b.bootstrap, topic, 0, "read_committed") == (0, 11), \
        "the LSO must stay at the open transaction's first offset"
    assert watermarks_at(b.bootstrap, topic, 0, "read_uncommitted") == (0, 62)

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "rc-" + topic,
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        seen, first_post_at = [], None
        deadline = began + timeout_s + 15
        while len(seen) < len(pre) + len(post) and time.time() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            assert not m.error(), m.error()
            if m.value().startswith(b"post-") and first_post_at is None:
                first_post_at = time.time()
            seen.append(m)
            if time.time() < began + timeout_s - 1:
                assert not m.value().startswith(b"post-"), \
                    "read_committed showed a record after an open transaction"
        assert values(seen) == pre + post, "read_committed: the killed producer's records shown, " \
                                           "or the later committed ones missing"
        assert offsets(seen) == list(range(10)) + list(range(31, 61))
        assert first_post_at >= began + timeout_s, \
            f"the transaction was aborted {began + timeout_s - first_post_at:.1f}s before its timeout"
        # nothing after the abort marker
        assert c.poll(1.0) is None
    finally:
        c.close()
    assert watermarks_at(b.bootstrap, topic, 0, "read_committed") == (0, 63)
    assert watermarks_at(b.bootstrap, topic, 0, "read_uncommitted") == (0, 63)
    everything = read_isolated(b.bootstrap, topic, 1, "read_uncommitted")[0]
    assert values(everything) == pre + hung + post
    assert offsets(everything) == list(range(10)) + list(range(11, 61))

    # The transactional.id is usable again: a new producer gets a bumped epoch and commits.
    again = txn_producer(b.bootstrap, "hung-" + topic)
    again.init_transactions(30)
    again.begin_transaction()
    again.produce(topic, value=b"after", partition=0)
    again.commit_transaction(30)
    assert values(read_isolated(b.bootstrap, topic, 1, "read_committed")[0]) == pre + post + [b"after"]


def test_live_producer_past_its_timeout_is_aborted_and_fenced(broker_factory):
    """A producer that keeps its transaction open past transaction.timeout.ms (3000): the broker
    aborts it (the LSO moves past an abort marker) and bumps the epoch, so its commit fails with
    a fatal fenced error and its records are never visible to read_committed."""
    b = broker_factory(config=TXN_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("tmo"), 1)
    p = txn_producer(b.bootstrap, "tmo-" + topic, **{"transaction.timeout.ms": 3000})
    p.init_transactions(30)
    dr = Deliveries()
    began = time.time()
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, value=b"late-%d" % i, partition=0, on_delivery=dr)
    assert p.flush(30) == 0
    dr.check(5)
    assert watermarks_at(b.bootstrap, topic, 0, "read_committed") == (0, 0)
    wait_until(lambda: watermarks_at(b.bootstrap, topic, 0, "read_committed") == (0, 6), 15,
               "the timed-out transaction's abort marker")
    assert time.time() >= began + 3.0, "aborted before its timeout"
    with pytest.raises(KafkaException) as exc:
        p.commit_transaction(30)
    err = exc.value.args[0]
    assert err.code() in FENCED and err.fatal(), f"expected a fatal fenced error, got {err}"
    assert read_isolated(b.bootstrap, topic, 1, "read_committed")[0] == []
    assert values(read_isolated(b.bootstrap, topic, 1, "read_uncommitted")[0]) == \
        [b"late-%d" % i for i in range(5)]


def test_second_producer_with_same_transactional_id_fences_the_first(broker_factory):
    """p1 has a transaction open with records written; p2 calls init_transactions with the same
    transactional.id: p1's transaction is aborted, p1's further records and its commit fail with
    a fatal fenced error (nothing of it written), and p2's transaction commits."""
    b = broker_factory(shards=2, config=TXN_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("fence"), 2)
    txn_id = "fence-" + topic
    p1 = txn_producer(b.bootstrap, txn_id)
    p1.init_transactions(30)
    dr1 = Deliveries()
    p1.begin_transaction()
    for i in range(10):
        p1.produce(topic, value=b"p1-a-%d" % i, partition=i % 2, on_delivery=dr1)
    assert p1.flush(30) == 0
    dr1.check(10)

    p2 = txn_producer(b.bootstrap, txn_id)
    started = time.time()
    p2.init_transactions(30)
    assert time.time() - started < 15, "init_transactions waited for the old transaction's timeout"

    late = []
    for i in range(10):
        p1.produce(topic, value=b"p1-b-%d" % i, partition=i % 2,
                   on_delivery=lambda err, msg: late.append(err))
    with pytest.raises(KafkaException) as exc:
        p1.commit_transaction(30)
    err = exc.value.args[0]
    assert err.code() in FENCED and err.fatal(), f"expected a fatal fenced error, got {err}"
    p1.flush(10)
    assert len(late) == 10 and all(e is not None for e in late), \
        f"the fenced producer's records must all fail: {late}"

    dr2 = Deliveries()
    p2.begin_transaction()
    for i in range(10):
        p2.produce(topic, value=b"p2-%d" % i, partition=i % 2, on_delivery=dr2)
    p2.commit_transaction(30)
    dr2.check(10)

    committed = read_isolated(b.bootstrap, topic, 2, "read_committed")
    everything = read_isolated(b.bootstrap, topic, 2, "read_uncommitted")
    for part in range(2):
        assert values(committed[part]) == [b"p2-%d" % i for i in range(part, 10, 2)]
        assert values(everything[part]) == [b"p1-a-%d" % i for i in range(part, 10, 2)] + \
            [b"p2-%d" % i for i in range(part, 10, 2)], "the fenced records must not be written"


def test_kafkajs_transactions(broker_factory):
    """tests/js/transactions.js: kafkajs commits, aborts, and sends offsets in transactions, and
    checks its read_committed and read_uncommitted consumers and the group's offsets; then the
    same topic read back with confluent-kafka."""
    if shutil.which("node") is None or not (JS / "node_modules" / "kafkajs").exists():
        pytest.fail("kafkajs missing: run `npm ci` in tests/js (.ci/run does)")
    b = broker_factory(shards=2, config=TXN_CONFIG)
    topic = topic_name("jstx")
    r = subprocess.run(["node", str(JS / "transactions.js"), b.bootstrap, topic],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    # transactions.js: records i = 0..299, value v<i>, partition i % 2; 0-99 committed, 100-199
    # aborted, 200-299 committed; per partition 50 records then a marker per transaction.
    committed = read_isolated(b.bootstrap, topic, 2, "read_committed")
    everything = read_isolated(b.bootstrap, topic, 2, "read_uncommitted")
    for part in range(2):
        keep = [i for i in range(part, 300, 2) if not 100 <= i < 200]
        assert values(committed[part]) == [b"v%d" % i for i in keep]
        assert offsets(committed[part]) == list(range(0, 50)) + list(range(102, 152))
        assert values(everything[part]) == [b"v%d" % i for i in range(part, 300, 2)]
        assert offsets(everything[part]) == list(range(0, 50)) + list(range(51, 101)) + \
            list(range(102, 152))


def test_transactions_survive_broker_kill9_and_restart(broker_factory):
    """Committed and aborted transactions over several segments (64 KiB segments), then one left
    open, then kill -9 of the broker: after the restart read_committed still hides the aborted
    transactions and stops at the open one (LSO), and the same producer instance commits it
    (the coordinator's state came back from __transaction_state). A clean restart after that
    changes nothing."""
    b = broker_factory(config=dict(TXN_CONFIG, segment_bytes=65536))
    topic = create_topic(b.bootstrap, topic_name("txk9"), 2)
    per, ntx, pad = 40, 6, b"." * 1000
    val = lambda t, part, i: b"%d-%d-%d-" % (t, part, i) + pad
    p = txn_producer(b.bootstrap, "k9-" + topic, **{"transaction.timeout.ms": 60000,
                                                    "reconnect.backoff.ms": 50,
                                                    "reconnect.backoff.max.ms": 200})
    p.init_transactions(30)
    dr = Deliveries()
    for t in range(ntx + 1):
        p.begin_transaction()
        for i in range(per):
            for part in range(2):
                p.produce(topic, value=val(t, part, i), partition=part, on_delivery=dr)
        assert p.flush(30) == 0
        dr.check((t + 1) * per * 2)
        if t == ntx:
            break  # left open
        if t % 2:
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
    open_at = ntx * (per + 1)
    assert len(list(b.data_dir.glob(f"{topic}-0/*.log"))) >= 3, "expected several segments"

    def check(label, last_committed):
        shown = [t for t in range(ntx + 1) if t % 2 == 0 and (t < ntx or last_committed)]
        everything = read_isolated(b.bootstrap, topic, 2, "read_uncommitted")
        committed = read_isolated(b.bootstrap, topic, 2, "read_committed")
        for part in range(2):
            assert values(committed[part]) == [val(t, part, i) for t in shown for i in range(per)], \
                f"{label}: read_committed of partition {part}"
            assert offsets(committed[part]) == [t * (per + 1) + i for t in shown for i in range(per)]
            assert values(everything[part]) == [val(t, part, i) for t in range(ntx + 1)
                                                for i in range(per)], \
                f"{label}: read_uncommitted of partition {part}"

    for part in range(2):
        assert watermarks_at(b.bootstrap, topic, part, "read_committed") == (0, open_at)
    check("before the kill", False)
    b.kill9()
    b.start()
    for part in range(2):
        assert watermarks_at(b.bootstrap, topic, part, "read_committed") == (0, open_at), \
            "after kill -9 the open transaction must still hold the LSO"
        assert watermarks_at(b.bootstrap, topic, part, "read_uncommitted") == (0, open_at + per)
    check("after kill -9", False)

    p.commit_transaction(60)  # the producer outlived the broker: its transaction goes on
    for part in range(2):
        wait_until(lambda: watermarks_at(b.bootstrap, topic, part, "read_committed") ==
                   (0, open_at + per + 1), 10, f"the commit marker on partition {part}")
    check("after the commit", True)
    b.restart()
    check("after a clean restart", True)


def test_kafka_python_transactions(broker_factory):
    """kafka-python's transactional producer (other request versions than librdkafka's): a
    committed, an aborted and a committed transaction with send_offsets_to_transaction; its
    read_committed consumer and confluent-kafka both see only the committed records, and the
    group's offset is the committed one."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata

    b = broker_factory(config=TXN_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("kptx"), 2)
    src = create_topic(b.bootstrap, topic_name("kptx-src"), 1)
    group = "kp-offsets-" + topic
    p = KafkaProducer(bootstrap_servers=b.bootstrap, transactional_id="kp-" + topic,
                      enable_idempotence=True)
    try:
        p.init_transactions()
        for t, (lo, hi) in enumerate([(0, 20), (20, 40), (40, 60)]):
            p.begin_transaction()
            futures = [p.send(topic, value=b"kp-%d" % i, partition=i % 2) for i in range(lo, hi)]
            p.flush()
            for f in futures:
                f.get(timeout=10)
            p.send_offsets_to_transaction({KTP(src, 0): OffsetAndMetadata(10 * (t + 1), "", -1)},
                                          group)
            if t == 1:
                p.abort_transaction()
            else:
                p.commit_transaction()
    finally:
        p.close(timeout=10)
    keep = [i for i in range(60) if not 20 <= i < 40]
    committed = read_isolated(b.bootstrap, topic, 2, "read_committed")
    for part in range(2):
        assert values(committed[part]) == [b"kp-%d" % i for i in keep if i % 2 == part]
        assert offsets(committed[part]) == list(range(0, 10)) + list(range(22, 32))
    assert values(read_isolated(b.bootstrap, topic, 2, "read_uncommitted")[0]) == \
        [b"kp-%d" % i for i in range(0, 60, 2)]
    assert group_committed(b.bootstrap, group, src, 1) == [30], \
        "the aborted transaction's offset (20) must not stick, the last committed one (30) must"

    c = KafkaConsumer(bootstrap_servers=b.bootstrap, isolation_level="read_committed",
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      consumer_timeout_ms=3000)
    try:
        c.assign([KTP(topic, 0), KTP(topic, 1)])
        got = sorted((m.partition, m.offset, m.value) for m in c)
    finally:
        c.close()
    assert got == sorted([(i % 2, (i // 2) if i < 20 else (i // 2 + 2), b"kp-%d" % i) for i in keep])


def test_offsets_of_an_open_transaction_are_unstable_for_read_committed(broker_factory):
    """Between send_offsets_to_transaction and the commit, a read_committed consumer asking for
    the group's offsets (OffsetFetch require_stable) is told UNSTABLE_OFFSET_COMMIT and retries
    instead of taking the older commit (KIP-447: otherwise a rebalanced partition would be
    processed twice); a read_uncommitted one gets the older commit at once. After the commit
    both see the new offset."""
    b = broker_factory(config=TXN_CONFIG)
    topic = create_topic(b.bootstrap, topic_name("unstable"), 1)
    group = "g-" + topic
    tp = [TopicPartition(topic, 0)]
    p = txn_producer(b.bootstrap, "tx-" + topic)
    p.init_transactions(30)
    c0 = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
    p.begin_transaction()
    p.produce(topic, value=b"x", partition=0)
    p.send_offsets_to_transaction([TopicPartition(topic, 0, 17)], c0.consumer_group_metadata(), 30)
    assert p.flush(30) == 0
    rc = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                   "isolation.level": "read_committed"})
    ru = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                   "isolation.level": "read_uncommitted"})
    try:
        assert ru.committed(tp, timeout=10)[0].offset == OFFSET_INVALID
        with pytest.raises(KafkaException):
            rc.committed(tp, timeout=3)  # retried on UNSTABLE_OFFSET_COMMIT until the timeout
        p.commit_transaction(30)
        assert rc.committed(tp, timeout=10)[0].offset == 17
        assert ru.committed(tp, timeout=10)[0].offset == 17
    finally:
        for c in (c0, rc, ru):
            c.close()
