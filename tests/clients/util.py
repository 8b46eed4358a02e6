"""Helpers shared by the client tests: topic creation and exact read-back with confluent-kafka."""
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def topic_name(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                       config=config or {})])
    for f in fs.values():
        f.result(timeout=15)
    return name


def read_all(bootstrap, topic, partitions, timeout=30.0, start=0, isolation="read_uncommitted"):
    """Every record of every partition from `start` up to the end ListOffsets gives for
    `isolation` when the read starts (the high watermark, or the last stable offset for
    read_committed), by partition. `partitions`: a count (0..n) or a list of partitions."""
    parts = list(range(partitions)) if isinstance(partitions, int) else list(partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "enable.partition.eof": True, "check.crcs": True,
                  "isolation.level": isolation})
    try:
        ends = {}
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = hi
        c.assign([TopicPartition(topic, p, start) for p in parts])
        out = {p: [] for p in parts}
        done = {p for p in parts if ends[p] <= start}
        deadline = time.time() + timeout
        while len(done) < len(parts):
            if time.time() > deadline:
                raise AssertionError(f"timed out reading {topic} ({isolation}): have "
                                     f"{ {p: len(v) for p, v in out.items()} } of {ends}")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    if m.offset() >= ends[m.partition()]:
                        done.add(m.partition())
                    continue
                raise KafkaException(m.error())
            if m.offset() >= ends[m.partition()]:
                continue  # beyond the end taken at the start (appended since)
            out[m.partition()].append(m)
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
        return out
    finally:
        c.close()


def watermarks(bootstrap, topic, partition):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm-" + uuid.uuid4().hex})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def watermarks_at(bootstrap, topic, partition, isolation):
    """(low, high) as ListOffsets answers it for an isolation level: with "read_committed" the
    high end is the last stable offset (the first offset of the oldest open transaction), with
    "read_uncommitted" the high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm-" + uuid.uuid4().hex,
                  "isolation.level": isolation})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def read_isolated(bootstrap, topic, partitions, isolation, timeout=30.0):
    """Every record of every partition from offset 0 up to the end for `isolation`
    ("read_committed": the last stable offset, aborted records skipped; "read_uncommitted": the
    high watermark, aborted records included), by partition. Control records (transaction
    markers) are never delivered; they show as gaps in the offsets."""
    return read_all(bootstrap, topic, partitions, timeout, 0, isolation)


def wait_until(cond, timeout, what, interval=0.1):
    """Polls cond() until it is truthy; answers its value or fails naming `what`."""
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
