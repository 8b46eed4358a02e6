"""kafka-python: produce and consume round trip, offsets by time and end offsets."""
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from util import topic_name


def test_kafka_python_round_trip(broker):
    topic = topic_name("kp")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    # kafka-python 3 is idempotent by default (InitProducerId + sequence numbers).
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type="gzip")
    futures = [p.send(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"%d" % i)],
                      partition=i % 3, timestamp_ms=1_700_000_000_000 + i) for i in range(300)]
    p.flush()
    offsets = [f.get(timeout=10).offset for f in futures]
    assert offsets == [i // 3 for i in range(300)]
    p.close()

    tps = [TopicPartition(topic, i) for i in range(3)]
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                      consumer_timeout_ms=5000, enable_auto_commit=False)
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = {}
    for m in c:
        got.setdefault(m.partition, []).append((m.offset, m.key, m.value, m.headers, m.timestamp))
        if sum(len(v) for v in got.values()) == 300:
            break
    for part in range(3):
        expect = [(j, b"k%d" % i, b"v%d" % i, [("h", b"%d" % i)], 1_700_000_000_000 + i)
                  for j, i in enumerate(range(part, 300, 3))]
        assert got[part] == expect
    assert c.end_offsets(tps) == {tp: 100 for tp in tps}
    found = c.offsets_for_times({tps[1]: 1_700_000_000_000 + 151})
    # Partition 1 holds records 1, 4, 7, ...: record 151 (offset 50) is the first at or after it.
    assert found[tps[1]].offset == 50
    c.close()
