"""The broker's own house rules, with real clients: internal topics are the coordinators' alone
(no client deletes them or produces to them), and a bug (a panic on any shard) stops the
whole process, after which a restart recovers every acknowledged record."""
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import rawkafka
from util import create_topic, read_all, topic_name

INTERNAL = ("__consumer_offsets", "__transaction_state")
TOPIC_EXCEPTION = 17  # INVALID_TOPIC_EXCEPTION


def partition_counts(bootstrap):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items() if name in INTERNAL}


def test_internal_topics_cannot_be_deleted_or_produced_to(broker_factory):
    b = broker_factory(shards=2)
    before = partition_counts(b.bootstrap)
    assert set(before) == set(INTERNAL), before

    # DeleteTopics: an error per internal topic, and they stay.
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for name, fut in admin.delete_topics(list(INTERNAL), operation_timeout=10).items():
        try:
            fut.result(timeout=15)
            raise AssertionError(f"deleting {name} succeeded")
        except KafkaException as e:
            assert e.args[0].code() == KafkaError.INVALID_REQUEST, e

    # Produce with librdkafka: every record fails with TOPIC_EXCEPTION, none is acknowledged.
    errors = []
    p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 10000, "retries": 0})
    for name in INTERNAL:
        p.produce(name, value=b"intruder", partition=0,
                  on_delivery=lambda err, msg: errors.append((msg.topic(), err)))
    assert p.flush(15) == 0
    assert sorted(t for t, _ in errors) == sorted(INTERNAL)
    for t, err in errors:
        assert err is not None and err.code() == TOPIC_EXCEPTION, (t, err)

    # Produce on the wire: the partition's error code, nothing stored.
    for name in INTERNAL:
        s = rawkafka.connect(b.bootstrap)
        s.sendall(rawkafka.produce_v3(name, 0, rawkafka.record_batch([b"raw intruder"])))
        _, parts = rawkafka.parse_produce_v3(rawkafka.read_frame(s))
        s.close()
        assert parts == [(0, TOPIC_EXCEPTION, -1)], (name, parts)

    assert partition_counts(b.bootstrap) == before

    # Groups and transactions still work: a committed offset and a committed transaction.
    topic = create_topic(b.bootstrap, topic_name("house"), partitions=2)
    txp = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "tx-" + topic})
    txp.init_transactions(15)
    txp.begin_transaction()
    for i in range(10):
        txp.produce(topic, value=b"v%d" % i, partition=i % 2)
    txp.commit_transaction(15)
    got = read_all(b.bootstrap, topic, 2, isolation="read_committed")
    assert sorted(m.value() for ms in got.values() for m in ms) == sorted(b"v%d" % i for i in range(10))

    group = "g-" + uuid.uuid4().hex[:8]
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)], asynchronous=False)
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    c.close()
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, 3), (1, 4)]

    # And all of it survives a restart, the internal topics included.
    b.restart()
    assert partition_counts(b.bootstrap) == before
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    c.close()
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, 3), (1, 4)]


def test_a_panicking_shard_stops_the_broker_and_a_restart_recovers(broker_factory):
    """FLUMEN_DEBUG_PANIC_TOPIC=boom makes a produce to `boom` panic its shard, as a bug would.
    The process must exit non-zero (not keep serving from the other shard), and a restart
    must serve every record acknowledged before."""
    b = broker_factory(shards=2, env={"FLUMEN_DEBUG_PANIC_TOPIC": "boom"})
    topic = create_topic(b.bootstrap, topic_name("kept"), partitions=4)
    create_topic(b.bootstrap, "boom", partitions=1)
    acked = []
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 2,
                  "enable.idempotence": True})
    for i in range(2000):
        p.produce(topic, value=b"r%d" % i, partition=i % 4,
                  on_delivery=lambda err, msg: err is None and acked.append(msg.value()))
    assert p.flush(30) == 0
    assert len(acked) == 2000

    boom = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 3000, "retries": 0})
    boom.produce("boom", value=b"trigger")
    boom.flush(5)
    rc = b.proc.wait(timeout=20)
    assert rc != 0, f"broker exited {rc} after a shard panicked"
    assert "panicked" in b.log() and "FLUMEN_DEBUG_PANIC_TOPIC" in b.log()
    b.proc = None

    # Restart without the switch: everything acknowledged is there, once, in order per partition.
    b.env = None
    b.start()
    got = read_all(b.bootstrap, topic, 4)
    for part in range(4):
        values = [m.value() for m in got[part]]
        assert values == [b"r%d" % i for i in range(part, 2000, 4)], part
    # And the broker works on: a new record is acknowledged and read back.
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    p.produce(topic, value=b"after", partition=0)
    assert p.flush(15) == 0
    deadline = time.time() + 15
    while time.time() < deadline:
        if [m.value() for m in read_all(b.bootstrap, topic, [0], start=500)[0]] == [b"after"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the record produced after the restart was not read back")


def test_a_deleted_topics_leftover_directory_is_not_taken_for_a_new_topic(broker_factory):
    """A crash between a delete's metadata write and the removal of its files leaves the old
    partition directory behind (simulated here by putting it back). A new topic of the same
    name must start empty: partition directories carry their topic id (partition.metadata),
    and one of another id is removed before the name is reused."""
    import shutil
    b = broker_factory()
    topic = topic_name("reuse")
    create_topic(b.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(5):
        p.produce(topic, value=f"old{i}".encode(), partition=0)
    assert p.flush(30) == 0
    part_dir = b.data_dir / f"{topic}-0"
    assert (part_dir / "partition.metadata").read_text().startswith("version: 0\ntopic_id: ")
    b.stop()
    saved = b.data_dir.parent / "saved-partition"
    shutil.copytree(part_dir, saved)
    b.start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.delete_topics([topic])[topic].result(30)
    b.stop()
    assert not part_dir.exists()
    shutil.copytree(saved, part_dir)  # the leftover a crash would have left
    b.start()
    create_topic(b.bootstrap, topic, 1)
    got = []
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce(topic, value=b"new", partition=0, on_delivery=lambda e, m: got.append((e, m.offset())))
    assert p.flush(30) == 0
    assert got == [(None, 0)], got
    values = [m.value() for m in read_all(b.bootstrap, topic, 1)[0]]
    assert values == [b"new"], values
