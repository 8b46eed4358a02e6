"""Hostile and broken frames over a raw socket: each gets an error response or a closed
connection, and the broker keeps serving everyone else."""
import struct

import pytest
from confluent_kafka import Producer

import rawkafka as rk
from util import create_topic, read_all, topic_name


def still_serving(broker, topic):
    s = rk.connect(broker.bootstrap)
    s.sendall(rk.api_versions(0, corr=77))
    corr, err, keys = rk.parse_api_versions_v0(rk.read_frame(s))
    s.close()
    assert (corr, err) == (77, 0) and 0 in keys and 1 in keys
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topic, value=b"still-ok")
    assert p.flush(10) == 0
    assert read_all(broker.bootstrap, topic, 1)[0][-1].value() == b"still-ok"


@pytest.fixture
def topic(broker):
    return create_topic(broker.bootstrap, topic_name("bad"), 1)


def test_api_versions_lists_what_is_implemented(broker, topic):
    s = rk.connect(broker.bootstrap)
    s.sendall(rk.api_versions(0))
    corr, err, keys = rk.parse_api_versions_v0(rk.read_frame(s))
    assert err == 0
    assert keys[0] == (0, 9) and keys[1] == (4, 12) and keys[18] == (0, 3)
    assert keys[22] == (0, 4)  # InitProducerId (idempotent producers)
    assert keys[24] == (0, 3) and keys[26] == (0, 3)  # AddPartitionsToTxn, EndTxn
    assert 57 not in keys  # UpdateFeatures: not implemented, not advertised


def test_produce_v2_is_answered_unsupported_version(broker, topic):
    # Advertised from v0 for librdkafka's sake, but message format v0/v1 is not stored: the
    # client gets UNSUPPORTED_VERSION (35) and nothing is written.
    s = rk.connect(broker.bootstrap)
    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"old"]), corr=11, version=2))
    corr, parts = rk.parse_produce_v3(rk.read_frame(s))
    assert corr == 11 and parts == [(0, 35, -1)]
    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"old"]), corr=12, version=2, acks=0))
    assert rk.read_frame(s) is None  # acks=0 cannot carry the error: the connection is closed
    still_serving(broker, topic)
    assert [m.value() for m in read_all(broker.bootstrap, topic, 1)[0]] == [b"still-ok"]


def test_unsupported_api_versions_version_gets_v0_answer(broker, topic):
    s = rk.connect(broker.bootstrap)
    s.sendall(rk.frame(rk.header(18, 99, 5)))
    corr, err, keys = rk.parse_api_versions_v0(rk.read_frame(s))
    assert (corr, err) == (5, 35)  # UNSUPPORTED_VERSION
    assert keys[18] == (0, 3)
    still_serving(broker, topic)


@pytest.mark.parametrize("payload", [
    struct.pack(">i", -5),                      # negative size
    struct.pack(">i", 200 * 1024 * 1024),       # over max_request_bytes
    rk.frame(rk.header(999, 0, 1)),             # unknown API key
    rk.frame(rk.header(0, 99, 1)),              # Produce at an unknown version
    rk.frame(rk.header(57, 0, 1)),              # an API that is not implemented
    rk.frame(rk.header(3, 9, 1) + b"\xff"),     # Metadata with a body that does not parse
    rk.frame(b"\x00\x00"),                      # a frame too short for a header
    # Metadata v8 claiming ~2^28 topics in 14 bytes: the decoder sizes its Vec from that
    # (found by fuzz/ target `request`; it aborted the broker before flumen::alloc)
    rk.frame(bytes.fromhex("000300080700" "3a0000002dffff00")),
])
def test_bad_frames_close_the_connection(broker, topic, payload):
    s = rk.connect(broker.bootstrap)
    s.sendall(payload)
    assert rk.read_frame(s) is None
    s.close()
    still_serving(broker, topic)


def test_truncated_frame_then_close(broker, topic):
    s = rk.connect(broker.bootstrap)
    full = rk.api_versions(0)
    s.sendall(full[:len(full) - 3])
    # A connection stuck in the middle of a frame holds up nobody else...
    still_serving(broker, topic)
    s.close()
    # ...and its close mid-frame is harmless.
    still_serving(broker, topic)


def test_good_produce_then_wrong_crc_and_magic(broker, topic):
    s = rk.connect(broker.bootstrap)
    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"a", b"b"]), corr=10))
    corr, parts = rk.parse_produce_v3(rk.read_frame(s))
    assert corr == 10 and parts == [(0, 0, 0)]

    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"c"], corrupt_crc=True), corr=11))
    corr, parts = rk.parse_produce_v3(rk.read_frame(s))
    assert corr == 11 and parts[0][1] == 2  # CORRUPT_MESSAGE

    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"d"], magic=1), corr=12))
    corr, parts = rk.parse_produce_v3(rk.read_frame(s))
    assert corr == 12 and parts[0][1] != 0

    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"e"])[:30], corr=13))
    corr, parts = rk.parse_produce_v3(rk.read_frame(s))
    assert corr == 13 and parts[0][1] == 2

    s.sendall(rk.produce_v3(topic, 7, rk.record_batch([b"f"]), corr=14))
    corr, parts = rk.parse_produce_v3(rk.read_frame(s))
    assert corr == 14 and parts[0][1] == 3  # UNKNOWN_TOPIC_OR_PARTITION

    # Same connection still works, and nothing bad was stored.
    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"g"]), corr=15))
    corr, parts = rk.parse_produce_v3(rk.read_frame(s))
    assert parts == [(0, 0, 2)]
    s.close()
    assert [m.value() for m in read_all(broker.bootstrap, topic, 1)[0]] == [b"a", b"b", b"g"]


def test_configured_max_request_and_batch_bytes(broker_factory):
    b = broker_factory(config={"max_request_bytes": 1048576, "max_batch_bytes": 524288})
    topic = create_topic(b.bootstrap, topic_name("max"), 1)
    s = rk.connect(b.bootstrap)
    s.sendall(struct.pack(">i", 2 * 1048576) + rk.header(18, 0, 1))  # announced size too big
    assert rk.read_frame(s) is None
    s.close()
    s = rk.connect(b.bootstrap)
    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"y" * 400_000]), corr=3))
    assert rk.parse_produce_v3(rk.read_frame(s)) == (3, [(0, 0, 0)])
    # A batch over max_batch_bytes (in a frame under max_request_bytes) is refused by itself.
    s.sendall(rk.produce_v3(topic, 0, rk.record_batch([b"z" * 600_000]), corr=4))
    corr, parts = rk.parse_produce_v3(rk.read_frame(s))
    assert corr == 4 and parts[0][1] == 10  # MESSAGE_TOO_LARGE
    s.close()
    still_serving(b, topic)
    assert [len(m.value()) for m in read_all(b.bootstrap, topic, 1)[0]] == [400_000, 8]
