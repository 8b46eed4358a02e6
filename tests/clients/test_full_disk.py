"""A full disk: produce gets a clear, retriable error (KAFKA_STORAGE_ERROR, "no disk space")
and nothing is half-written; reads keep working; what was written stays intact; once space is
freed producing works again without a restart. The data dir is a small ext4 file system on a
loop device (root only, as the rest of the suite's setup)."""
import os
import shutil
import subprocess

import pytest
from confluent_kafka import KafkaError, Producer

from util import create_topic, read_all, topic_name


@pytest.fixture
def small_fs(tmp_path):
    img, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "96M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    r = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True)
    assert r.returncode == 0, f"mounting a loop file system needs root: {r.stderr.decode()}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path, leave_bytes):
    """Fills the file system holding `path` until `leave_bytes` are free."""
    free = shutil.disk_usage(path.parent).free
    with open(path, "wb") as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(max(0, (free - leave_bytes) >> 20)):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def produce(bootstrap, topic, prefix, n, errors_ok):
    acked, errors = [], []

    def cb(err, msg):
        (errors if err else acked).append(err or msg.value())

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                  "message.timeout.ms": 4000, "retry.backoff.ms": 200})
    value = b"v" * 4000
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=b"%s-%d|" % (prefix, i) + value, partition=0,
                          on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush(30)
    if not errors_ok:
        assert not errors, errors[:3]
    return acked, errors


def test_full_disk_refuses_then_recovers(broker_factory, small_fs):
    data = small_fs / "data"
    b = broker_factory(config={"flush_interval_ms": 0})
    # Move it onto the small file system.
    b.stop()
    b.data_dir = data
    b.start()
    topic = create_topic(b.bootstrap, topic_name("full"), 1)
    first, _ = produce(b.bootstrap, topic, b"a", 500, errors_ok=False)  # ~2 MB
    filler = small_fs / "filler"
    fill(filler, 24 << 20)
    # ~80 MB, more than fits (24 MiB, the root-reserved blocks and what the first records'
    # preallocation left): the disk fills in the middle.
    acked, errors = produce(b.bootstrap, topic, b"b", 20000, errors_ok=True)
    assert errors, "the disk never filled up"
    assert acked, "nothing fitted before the disk was full"
    codes = {e.code() for e in errors}
    assert codes <= {KafkaError.KAFKA_STORAGE_ERROR, KafkaError._MSG_TIMED_OUT}, codes
    assert "no disk space" in b.log() or "No space left" in b.log()
    # Reads keep working and show every acknowledged record, once, intact (the consumer
    # checks CRCs). A record reported failed may still be there: librdkafka reports a request
    # that outlived message.timeout.ms as timed out even when the broker wrote it.
    def check(expected_acked):
        got = [m.value() for m in read_all(b.bootstrap, topic, 1)[0]]
        assert len(got) == len(set(got)), "a record was written twice"
        assert not set(expected_acked) - set(got), "an acknowledged record is gone"
        return got

    got = check(first + acked)
    assert len(got) < len(first) + 20000, "everything fitted: the disk was not full"
    # Space back: producing works again, without a restart.
    filler.unlink()
    more, _ = produce(b.bootstrap, topic, b"c", 300, errors_ok=False)
    assert check(first + acked + more)[-300:] == more
    # And all of it survives a restart.
    b.restart()
    check(first + acked + more)
    b.stop()
