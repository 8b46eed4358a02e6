#!/usr/bin/env python3
"""What idempotence and transactions cost on one broker, measured against plain produce in
the same run (this machine is shared: only ratios mean something).

  python3 benches/txn_overhead.py --bootstrap 127.0.0.1:9092 [--records 200000] [--size 1024]

Produces the same records with confluent-kafka (librdkafka) as: acks=all; idempotent;
transactional with commits every 100, 1,000 and 10,000 records. Prints records/s, the ratio
to plain acks=all and, for transactions, the commit_transaction latency (p50/p99)."""
import argparse
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def run(bootstrap, topic, n, size, conf, txn_size=None):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 1_000_000, **conf})
    value = b"v" * size
    commits = []
    if txn_size:
        p.init_transactions(30)
    start = time.perf_counter()
    i = 0
    while i < n:
        if txn_size:
            p.begin_transaction()
        end = min(n, i + (txn_size or n))
        while i < end:
            try:
                p.produce(topic, value=value, partition=i % 8)
                i += 1
            except BufferError:
                p.poll(0.001)
        if txn_size:
            t0 = time.perf_counter()
            p.commit_transaction(60)
            commits.append(time.perf_counter() - t0)
    assert p.flush(60) == 0
    elapsed = time.perf_counter() - start
    return n / elapsed, sorted(commits)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    cases = [("acks=all", {"acks": "all"}, None),
             ("idempotent", {"enable.idempotence": True}, None)]
    for t in (100, 1000, 10000):
        cases.append((f"transactions of {t}", {"transactional.id": "bench-" + uuid.uuid4().hex}, t))
    base = None
    print(f"{'mode':<24}{'records/s':>12}{'vs acks=all':>13}{'commit p50':>12}{'commit p99':>12}")
    for name, conf, txn in cases:
        topic = "bench-txn-" + uuid.uuid4().hex[:8]
        admin.create_topics([NewTopic(topic, 8, 1)])[topic].result(30)
        rate, commits = run(a.bootstrap, topic, a.records, a.size, conf, txn)
        base = base or rate
        p50 = f"{commits[len(commits) // 2] * 1000:.1f} ms" if commits else "-"
        p99 = f"{commits[min(len(commits) - 1, len(commits) * 99 // 100)] * 1000:.1f} ms" if commits else "-"
        print(f"{name:<24}{rate:>12,.0f}{rate / base:>12.0%} {p50:>12}{p99:>12}")


if __name__ == "__main__":
    main()
