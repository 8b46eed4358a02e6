"""Several data directories (JBOD): partitions spread over disks and shards and stay where they
are across restarts; a disk that dies (a real ext4 forced into shutdown: every I/O on it fails
with EIO) takes its own partitions offline with KAFKA_STORAGE_ERROR while the partitions on the
other disk keep taking writes and serving reads, and the broker stays up."""
import fcntl
import os
import struct
import subprocess

import pytest
from confluent_kafka import Producer

from util import create_topic, read_all, topic_name, watermarks

FS_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
FS_GOING_FLAGS_NOLOGFLUSH = 2


def partition_dirs(data_dir, topic):
    if not data_dir.exists():
        return set()
    return {int(d.name.rsplit("-", 1)[1]) for d in data_dir.iterdir()
            if d.is_dir() and d.name.rsplit("-", 1)[0] == topic}


def produce(bootstrap, topic, partitions, n, tag, timeout_ms=30000):
    """n records to each of `partitions`; (acknowledged, failed) records per partition."""
    acked = {p: [] for p in partitions}
    failed = {p: [] for p in partitions}

    def cb(err, msg):
        (failed if err else acked)[msg.partition()].append(err or msg.value())

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                  "message.timeout.ms": timeout_ms, "retry.backoff.ms": 100})
    for part in partitions:
        for i in range(n):
            p.produce(topic, b"%s-%d-%d" % (tag, part, i), partition=part, on_delivery=cb)
    p.flush(timeout_ms / 1000 + 30)
    return acked, failed


def test_partitions_spread_over_disks_and_stay_there(broker_factory, tmp_path):
    dirs = [tmp_path / "disk1", tmp_path / "disk2"]
    b = broker_factory(shards=2, data_dirs=dirs)
    topic = create_topic(b.bootstrap, topic_name("jbod"), 8)
    where = [partition_dirs(d, topic) for d in dirs]
    assert where[0] | where[1] == set(range(8)) and not where[0] & where[1], where
    # Even spread: two shards, two disks, each shard's partitions alternating.
    assert len(where[0]) == len(where[1]) == 4, where
    assert (dirs[0] / "flumen-meta.toml").exists(), "the broker metadata is in the first dir"
    assert not (dirs[1] / "flumen-meta.toml").exists()
    acked, failed = produce(b.bootstrap, topic, range(8), 200, b"a")
    assert not any(failed.values())
    b.stop()
    b.start()
    assert [partition_dirs(d, topic) for d in dirs] == where, "partitions stay on their disk"
    got = read_all(b.bootstrap, topic, 8)
    assert {p: [m.value() for m in v] for p, v in got.items()} == acked


@pytest.fixture
def two_disks(tmp_path):
    mounts = []
    for name in ("disk1", "disk2"):
        img, mnt = tmp_path / f"{name}.img", tmp_path / name
        mnt.mkdir()
        subprocess.run(["truncate", "-s", "128M", str(img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
        r = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True)
        assert r.returncode == 0, f"mounting a loop file system needs root: {r.stderr.decode()}"
        mounts.append(mnt)
    try:
        yield mounts
    finally:
        for m in mounts:
            subprocess.run(["umount", "-l", str(m)], check=False)


def kill_disk(mnt):
    """Forces the file system into shutdown: from now on every read, write and fsync on it
    fails with EIO, as on a disk that died."""
    fd = os.open(mnt, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_SHUTDOWN, struct.pack("I", FS_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def test_a_dead_disk_takes_only_its_partitions_offline(broker_factory, two_disks):
    dirs = [m / "data" for m in two_disks]
    # No tail cache: reads go to the files, so the dead disk's reads fail as they would once
    # the cache had moved on.
    b = broker_factory(shards=2, data_dirs=dirs, config={"tail_cache_bytes": 0})
    topic = create_topic(b.bootstrap, topic_name("dead"), 4)
    on = [partition_dirs(d, topic) for d in dirs]
    assert on[0] and on[1], on
    before, failed = produce(b.bootstrap, topic, range(4), 100, b"before")
    assert not any(failed.values())

    kill_disk(two_disks[1])
    after, failed = produce(b.bootstrap, topic, range(4), 100, b"after", timeout_ms=5000)
    for p in on[0]:
        assert len(after[p]) == 100 and not failed[p], f"partition {p} on the good disk"
    for p in on[1]:
        assert not after[p], f"partition {p} on the dead disk acknowledged a write"
        assert failed[p], f"partition {p}: no error reported"
    # The good disk serves everything, old and new; the dead disk's partitions answer with an
    # error instead of data.
    got = read_all(b.bootstrap, topic, sorted(on[0]))
    for p in on[0]:
        assert [m.value() for m in got[p]] == before[p] + after[p]
    with pytest.raises(Exception) as e:
        read_all(b.bootstrap, topic, sorted(on[1]), timeout=10)
    assert "KAFKA_STORAGE_ERROR" in str(e.value) or "Storage" in str(e.value), str(e.value)
    # The broker is up: metadata, and watermarks of the good partitions.
    for p in on[0]:
        assert watermarks(b.bootstrap, topic, p)[1] == 200
    assert "partition offline" in b.log()


def test_describe_log_dirs_shows_each_disk_and_its_partitions(broker_factory, tmp_path):
    """DescribeLogDirs (kafka-python's admin client): both data dirs, each with exactly the
    partitions whose directories are on it, sizes that grow with what was written, and the
    filesystem's capacity."""
    from kafka.admin import KafkaAdminClient
    dirs = [tmp_path / "disk1", tmp_path / "disk2"]
    b = broker_factory(shards=2, data_dirs=dirs)
    topic = create_topic(b.bootstrap, topic_name("logdirs"), 4)
    acked, failed = produce(b.bootstrap, topic, range(4), 100, b"b" * 1000)
    assert not any(failed.values())
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        [answer] = admin.describe_log_dirs()
    finally:
        admin.close()
    text = str(answer)
    by_dir = {r["log_dir"]: r for r in answer["log_dirs"]}
    assert set(by_dir) == {str(d) for d in dirs}, text
    total = 0
    for d in dirs:
        r = by_dir[str(d)]
        assert r["error_code"] == 0, r
        held = {p["partition_index"] for t in r["topics"] if t["name"] == topic for p in t["partitions"]}
        assert held == partition_dirs(d, topic), (d, r)
        total += sum(p["partition_size"] for t in r["topics"] if t["name"] == topic for p in t["partitions"])
        assert r["total_bytes"] > 0 and 0 <= r["usable_bytes"] <= r["total_bytes"], r
    # 400 records of 1000 bytes each, plus batch and record headers.
    assert 400_000 <= total < 600_000, total
