"""DeleteRecords with confluent-kafka's admin client: the log start (low watermark) moves,
readers below it are refused, the segments wholly below it are deleted, a restart keeps it,
bad offsets get Kafka's errors; in a cluster the followers follow it, so a new leader keeps it."""
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from test_cluster import cluster_factory, create  # noqa: F401
from test_replication import ALL, wait_isr
from util import watermarks


def produce_n(bootstrap, topic, n, size=2000):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                  "batch.num.messages": 1})
    for i in range(n):
        p.produce(topic, b"%06d" % i + b"x" * size, partition=0)
    assert p.flush(60) == 0


def delete_before(admin, topic, offset):
    tp = TopicPartition(topic, 0, offset)
    return admin.delete_records([tp])[tp].result(30).low_watermark


def first_read(bootstrap, topic, offset):
    """The first record read when starting at `offset` (auto.offset.reset=error), or the error."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "dr-" + str(time.time()),
                  "auto.offset.reset": "error", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, offset)])
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            return m.error() if m.error() else m.offset()
        raise AssertionError("nothing read")
    finally:
        c.close()


def test_delete_records_moves_the_log_start_and_keeps_it(broker_factory):
    b = broker_factory()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("dr", 1, 1, config={"segment.bytes": "65536"})])["dr"].result(30)
    produce_n(b.bootstrap, "dr", 200)
    part_dir = next(b.data_dir.glob("dr-0*"))
    segments_before = len(list(part_dir.glob("*.log")))
    assert segments_before >= 4, segments_before

    assert delete_before(admin, "dr", 150) == 150
    assert watermarks(b.bootstrap, "dr", 0) == (150, 200)
    assert first_read(b.bootstrap, "dr", 150) == 150
    err = first_read(b.bootstrap, "dr", 10)
    assert isinstance(err, KafkaError) and err.code() == KafkaError._AUTO_OFFSET_RESET, err
    # The segments wholly below 150 are gone from the disk.
    assert len(list(part_dir.glob("*.log"))) < segments_before
    # Not backwards, not past the high watermark, not on a missing partition.
    assert delete_before(admin, "dr", 20) == 150
    # (librdkafka finds a missing topic has no leader before asking any broker.)
    for topic, offset, codes in [("dr", 201, ["OFFSET_OUT_OF_RANGE"]),
                                 ("missing", 1, ["UNKNOWN_TOPIC_OR_PART", "No leaders found"])]:
        with pytest.raises(Exception) as e:
            delete_before(admin, topic, offset)
        assert any(c in str(e.value) for c in codes), e.value
    assert watermarks(b.bootstrap, "dr", 0) == (150, 200)

    # A restart keeps the log start, even inside a segment.
    b.restart()
    assert watermarks(b.bootstrap, "dr", 0) == (150, 200)
    assert first_read(b.bootstrap, "dr", 150) == 150
    # -1: everything up to the high watermark.
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert delete_before(admin, "dr", -1) == 200
    produce_n(b.bootstrap, "dr", 3)
    assert watermarks(b.bootstrap, "dr", 0) == (200, 203)


def test_followers_follow_the_log_start(cluster_factory):
    """RF 3: after DeleteRecords on the leader, the leader killed, the new leader (a former
    follower) answers the same log start."""
    c = cluster_factory(3).start()
    create(c.node(1).bootstrap, "drc", 1, rf=3, config={"segment.bytes": "65536"})
    lead = wait_isr(c, 1, "drc", ALL)[0].leader
    produce_n(c.bootstrap(), "drc", 100)
    admin = AdminClient({"bootstrap.servers": c.node(lead).bootstrap})
    assert delete_before(admin, "drc", 60) == 60
    time.sleep(1.5)  # a follower fetch or two: they learn the leader's log start
    c.node(lead).kill9()
    rest = [i for i in ALL if i != lead]

    def moved():
        parts = wait_isr(c, rest[0], "drc", rest, timeout=30)
        return parts[0].leader in rest

    deadline = time.time() + 30
    while not moved() and time.time() < deadline:
        time.sleep(0.5)
    assert watermarks(c.bootstrap(exclude=(lead,)), "drc", 0) == (60, 100)


def produce_batches(bootstrap, topic, batches, per_batch):
    """`batches` record batches of `per_batch` records each to partition 0."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5000,
                  "batch.num.messages": per_batch})
    for _ in range(batches):
        for i in range(per_batch):
            p.produce(topic, b"r%d" % i, partition=0)
        assert p.flush(60) == 0


@pytest.mark.parametrize("start", [120, 125], ids=["at-a-batch", "inside-a-batch"])
def test_follower_below_the_leaders_log_start_starts_over_there(cluster_factory, start):
    """A follower away while DeleteRecords moved the leader's log start past its whole log
    (Kafka's "follower below the leader's log start") restarts its log, empty, at the leader's
    log start, catches up and rejoins the ISR. Its directory then holds one segment, based at
    the start, or, when the start is inside a batch (batches of 10 here, 125 inside 120..129),
    at that batch's base, which the leader sends whole; the start itself is kept."""
    c = cluster_factory(3).start()
    ctrl = c.metadata(1).controller_id
    create(c.node(1).bootstrap, "drf", 1, rf=3, config={"segment.bytes": "65536"})
    lead = wait_isr(c, 1, "drf", ALL)[0].leader
    away = next(i for i in ALL if i not in (lead, ctrl))
    produce_batches(c.bootstrap(), "drf", 5, 10)
    c.node(away).kill9()
    rest = [i for i in ALL if i != away]
    wait_isr(c, lead, "drf", rest, timeout=30)
    produce_batches(c.bootstrap(exclude=(away,)), "drf", 10, 10)
    admin = AdminClient({"bootstrap.servers": c.node(lead).bootstrap})
    assert delete_before(admin, "drf", start) == start
    c.node(away).start()
    wait_isr(c, lead, "drf", ALL, timeout=60)
    [part_dir] = list(c.node(away).data_dir.glob("drf-0*"))
    segments = sorted(p.name for p in part_dir.glob("*.log"))
    assert segments[0] == "%020d.log" % 120, segments
    assert (part_dir / "log-start-offset").read_text().strip() == str(start)
    assert watermarks(c.bootstrap(), "drf", 0) == (start, 150)
