"""Log compaction (cleanup.policy=compact) through real clients: a keyed workload with updates
and tombstones read back after cleaning (exactly the latest value of each key, tombstones gone
after delete.retention.ms), keyless records refused per record (KIP-467), kill -9 while the
cleaner rewrites segments, and a follower replicating a compacted leader."""
import os
import shutil
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from test_cluster import cluster_factory, create  # noqa: F401
from test_replication import wait_isr, wait_partitions
from util import create_topic, read_all, topic_name, wait_until, watermarks

# A cleaner that looks every 100 ms, and topics whose segments roll every 64 KiB (the
# smallest segment.bytes Flumen takes) so a small workload spans many segments.
FAST_CLEANER = {"log_cleaner_backoff_ms": 100}
COMPACT = {"cleanup.policy": "compact", "segment.bytes": "65536",
           "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "1000"}
VALUE_BYTES = 300


def value(key, round_):
    return f"{key}:{round_}:".encode().ljust(VALUE_BYTES, b"x")


def produce_keyed(bootstrap, topic, keys, rounds, tombstones=(), partition=0):
    """`rounds` values for each of `keys` (round r of every key before round r+1), then a
    tombstone for each key in `tombstones`, then enough records of key "filler" to roll the
    segment holding them. Answers the latest value of each key (None: deleted)."""
    # Small batches: the 64 KiB segments roll at batch boundaries.
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 16384,
                  "enable.idempotence": True})
    errors = []

    def done(err, _msg):
        if err is not None:
            errors.append(err)

    latest = {}
    for r in range(rounds):
        for k in keys:
            p.produce(topic, key=k.encode(), value=value(k, r), partition=partition,
                      on_delivery=done)
            latest[k] = value(k, r)
        p.poll(0)
    for k in tombstones:
        p.produce(topic, key=k.encode(), value=None, partition=partition, on_delivery=done)
        latest[k] = None
    for i in range(300):
        p.produce(topic, key=b"filler", value=value("filler", i), partition=partition,
                  on_delivery=done)
    latest["filler"] = value("filler", 299)
    assert p.flush(30) == 0
    assert not errors, errors
    return latest


def log_bytes(data_dir, topic, partition=0):
    d = os.path.join(data_dir, f"{topic}-{partition}")
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".log"))


def cleanable_bytes(data_dir, topic, partition=0):
    """Bytes of every segment but the active one (the highest base offset), which is never
    cleaned and whose file is preallocated to segment.bytes however little it holds."""
    d = os.path.join(data_dir, f"{topic}-{partition}")
    logs = sorted((int(f[:-4]), f) for f in os.listdir(d)
                  if f.endswith(".log") and f[:-4].isdigit())
    return sum(os.path.getsize(os.path.join(d, f)) for _, f in logs[:-1])


def value_bytes(keys, rounds):
    """The bytes of values produce_keyed sends for `keys` before the filler: a fixed figure to
    compare the cleaned log against (the log's own size after producing is not one, since
    the cleaner is already at work while the producer runs)."""
    return len(keys) * rounds * VALUE_BYTES


def check_compacted(records, latest, tombstones_gone):
    """Offsets increase; every key but "filler" (whose last records sit in the active segment,
    never cleaned) appears once, with its latest value; a deleted key appears at most as its
    tombstone, and not at all once `tombstones_gone`."""
    offsets = [m.offset() for m in records]
    assert offsets == sorted(set(offsets)), "offsets repeat or go back"
    seen = {}
    for m in records:
        seen.setdefault(m.key().decode(), []).append(m.value())
    for k, want in latest.items():
        if k == "filler":
            assert seen[k][-1] == want
            continue
        got = seen.get(k, [])
        if want is None:
            assert got in ([], [None]), f"deleted key {k} reads back {got[:3]}"
            if tombstones_gone:
                assert got == [], f"tombstone of {k} outlived delete.retention.ms"
        else:
            assert got == [want], f"key {k}: {len(got)} records, want only the latest"


def wait_compacted(bootstrap, topic, latest, tombstones_gone, timeout=60):
    """Until a read of `topic` passes `check_compacted` (a pass swaps its groups one by one:
    half-way through, older values are still there); answers the records read."""
    deadline = time.time() + timeout
    while True:
        records = read_all(bootstrap, topic, 1)[0]
        try:
            check_compacted(records, latest, tombstones_gone)
            return records
        except AssertionError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_keyed_workload_keeps_the_latest_value_per_key_and_drops_old_tombstones(broker_factory):
    b = broker_factory(config=FAST_CLEANER)
    t = create_topic(b.bootstrap, topic_name("compact"), config=COMPACT)
    keys = [f"k{i}" for i in range(100)]
    deleted = keys[:10]
    latest = produce_keyed(b.bootstrap, t, keys, rounds=20, tombstones=deleted)
    produced = value_bytes(keys, rounds=20)
    # 100 keys x 20 rounds x 300 bytes: about 600 KB across ten segments, of which a
    # twentieth is live; the cleaner must bring the cleanable segments down to a fraction.
    wait_until(lambda: cleanable_bytes(b.data_dir, t) < produced / 4, 30,
               f"the cleaner to shrink {t} from {produced} bytes of values")
    # delete.retention.ms is 1 s: a pass after it drops the tombstones too, though nothing
    # new was written.
    records = wait_compacted(b.bootstrap, t, latest, tombstones_gone=True)
    # The same records survive a restart (the swapped segments and their indexes).
    b.restart()
    again = read_all(b.bootstrap, t, 1)[0]
    assert [(m.offset(), m.key(), m.value()) for m in again] == \
        [(m.offset(), m.key(), m.value()) for m in records]


def test_kafka_python_reads_a_compacted_log_with_gaps(broker_factory):
    from kafka import KafkaConsumer, TopicPartition as KTP
    b = broker_factory(config=FAST_CLEANER)
    t = create_topic(b.bootstrap, topic_name("compact-kp"), config=COMPACT)
    keys = [f"k{i}" for i in range(50)]
    latest = produce_keyed(b.bootstrap, t, keys, rounds=20)
    wait_compacted(b.bootstrap, t, latest, tombstones_gone=False)
    end = read_all(b.bootstrap, t, 1)[0][-1].offset() + 1
    c = KafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=5000)
    c.assign([KTP(t, 0)])
    c.seek_to_beginning()
    got = []
    deadline = time.time() + 30
    while (not got or got[-1].offset < end - 1) and time.time() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            got.extend(recs)
    c.close()
    last = {}
    for m in got:
        last.setdefault(m.key.decode(), []).append(m.value)
    for k in keys:
        assert last[k] == [latest[k]], k
    assert got[-1].offset == end - 1


def test_keyless_records_are_refused_per_record(broker_factory):
    b = broker_factory()
    t = create_topic(b.bootstrap, topic_name("compact-nokey"), config={"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 50, "retries": 0})
    results = []
    p.produce(t, value=b"no key", on_delivery=lambda e, m: results.append(e))
    assert p.flush(15) == 0
    assert results and results[0] is not None
    assert results[0].code() == KafkaError.INVALID_RECORD, results[0]
    # Nothing was appended; a keyed record still is.
    p.produce(t, key=b"k", value=b"v", on_delivery=lambda e, m: results.append(e))
    assert p.flush(15) == 0
    assert results[1] is None
    recs = read_all(b.bootstrap, t, 1)[0]
    assert [(m.offset(), m.key()) for m in recs] == [(0, b"k")]
    # The raw response names the record: KIP-467's record_errors.
    from rawkafka import produce_record_errors
    code, errors = produce_record_errors(b.bootstrap, t, [b"k1", None, b"k3", None])
    assert code == 87 and [i for i, _ in errors] == [1, 3], (code, errors)


def test_kill_9_while_cleaning_loses_no_key(broker_factory):
    # 300 KB/s: the first pass over ~1.3 MB takes seconds, long enough to be killed in it.
    b = broker_factory(config={**FAST_CLEANER, "log_cleaner_io_max_bytes_per_second": 300_000})
    t = create_topic(b.bootstrap, topic_name("compact-kill"), config=COMPACT)
    keys = [f"k{i}" for i in range(200)]
    latest = produce_keyed(b.bootstrap, t, keys, rounds=20)
    d = os.path.join(b.data_dir, f"{t}-0")
    killed = 0
    for _ in range(3):
        wait_until(lambda: any(f.endswith(".cleaned") for f in os.listdir(d)), 30,
                   "a cleaning pass to be writing")
        time.sleep(0.2 * killed)
        b.kill9()
        killed += 1
        b.start()
        left = [f for f in os.listdir(d) if f.endswith((".cleaned", ".swap"))]
        assert not left, f"start-up left {left}"
        recs = read_all(b.bootstrap, t, 1)[0]
        offsets = [m.offset() for m in recs]
        assert offsets == sorted(set(offsets)), "offsets repeat or go back after the kill"
        have = {m.key().decode(): m.value() for m in recs}
        for k in keys:
            assert have.get(k) == latest[k], f"key {k} lost its latest value after kill {killed}"
        if log_bytes(b.data_dir, t) < 200_000:
            break
    b.stop()
    b.start()
    wait_compacted(b.bootstrap, t, latest, tombstones_gone=False)


def test_a_follower_copies_a_compacted_leaders_log(cluster_factory):
    """Node 2 (the preferred leader) loses its copy; it fetches the compacted log of the new
    leader, gaps between batches included, rejoins the ISR, leads again after the preferred
    election and serves every key's latest value."""
    c = cluster_factory(3, extra={**FAST_CLEANER, "leader_imbalance_check_interval_ms": 1000}).start()
    t = topic_name("compact-rep")
    create(c.node(1).bootstrap, t, 1, config=COMPACT, assignment=[[2, 1, 3]])
    wait_isr(c, 1, t, [1, 2, 3])
    keys = [f"k{i}" for i in range(50)]
    latest = produce_keyed(c.bootstrap(), t, keys, rounds=20)
    produced = value_bytes(keys, rounds=20)
    for n in c.nodes:
        wait_until(lambda: cleanable_bytes(n.data_dir, t) < produced / 4, 30,
                   f"the cleaner of {n.bootstrap}")
    c.node(2).kill9()
    shutil.rmtree(os.path.join(c.node(2).data_dir, f"{t}-0"))
    c.node(2).start()
    wait_partitions(c, 1, t, lambda p: p.leader == 2 and sorted(p.isrs) == [1, 2, 3],
                    "node 2 back in the ISR and leading", timeout=60)
    copied = cleanable_bytes(c.node(2).data_dir, t)
    assert copied < produced / 4, f"node 2 copied {copied} bytes of a log cleaned to less"
    have = {}
    def read():
        # The client's metadata may still name the old leader for a moment.
        try:
            return read_all(c.bootstrap(), t, 1)[0]
        except KafkaException as e:
            print("retrying the read:", e)
            return None
    for m in wait_until(read, 30, "a read from the new leader", interval=0.5):
        have[m.key().decode()] = m.value()
    for k in keys:
        assert have.get(k) == latest[k], k


def test_consumer_offsets_are_compacted_and_the_latest_commit_survives(broker_factory):
    """__consumer_offsets is compacted: thousands of commits of one partition shrink to the
    latest, which a restart (the coordinator reloading the compacted log) still answers."""
    from confluent_kafka import Consumer, TopicPartition
    b = broker_factory(config={**FAST_CLEANER, "offsets_topic_partitions": 1,
                               "offsets_topic_segment_bytes": 65536})
    t = create_topic(b.bootstrap, topic_name("committed"), partitions=2)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-compact",
                  "enable.auto.commit": False})
    last = 0
    for i in range(1, 2501):
        c.commit(offsets=[TopicPartition(t, 0, i), TopicPartition(t, 1, 2 * i)],
                 asynchronous=False)
        last = i
    c.close()
    offsets_dir = os.path.join(b.data_dir, "__consumer_offsets-0")
    segments = lambda: len([f for f in os.listdir(offsets_dir) if f.endswith(".log")])
    # 5,000 commit records of ~100 bytes went in: about eight 64 KiB segments' worth.
    _, end = watermarks(b.bootstrap, "__consumer_offsets", 0)
    assert end >= 5000, end
    # The active segment's file is preallocated to 64 KiB; the cleaned ones hold two records.
    wait_until(lambda: log_bytes(b.data_dir, "__consumer_offsets") < 2 * 65536, 30,
               "the cleaner to compact __consumer_offsets below two segments")
    print(f"__consumer_offsets: {end} records in "
          f"{log_bytes(b.data_dir, '__consumer_offsets')} bytes, {segments()} segments")
    b.restart()
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-compact"})
    got = c.committed([TopicPartition(t, 0), TopicPartition(t, 1)], timeout=15)
    c.close()
    assert [(p.partition, p.offset) for p in got] == [(0, last), (1, 2 * last)]


def test_kafkajs_reads_a_compacted_log_to_its_end(broker_factory):
    import json
    import subprocess
    from pathlib import Path
    js = Path(__file__).resolve().parents[1] / "js"
    b = broker_factory(config=FAST_CLEANER)
    t = create_topic(b.bootstrap, topic_name("compact-js"), config=COMPACT)
    keys = [f"k{i}" for i in range(50)]
    latest = produce_keyed(b.bootstrap, t, keys, rounds=20, tombstones=keys[:5])
    recs = wait_compacted(b.bootstrap, t, latest, tombstones_gone=False)
    end = recs[-1].offset() + 1
    r = subprocess.run(["node", str(js / "compacted.js"), b.bootstrap, t, str(end)],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and r.stdout.startswith("OK "), r.stdout + r.stderr
    got = json.loads(r.stdout[3:])
    for k, v in latest.items():
        want = None if v is None else v.decode()
        assert got.get(k) == want, (k, got.get(k), want)
