#!/usr/bin/env python3
"""Cluster failover times on this machine, with real processes (the test harness's Cluster).

- controller kill -9 -> another broker reports a new live controller; and -> the first metadata
  write (CreateTopics) that succeeds after the kill.
- broker kill -9 -> that broker fenced and its partitions taken off it (Metadata from another
  broker no longer names it as leader of any partition).
- broker kill -9 -> every partition it led writable again: an `acks=all` record sent at the
  kill to each of them (confluent-kafka, which retries and refreshes its metadata as a user's
  producer does) is acknowledged by the new leader; the time to the last acknowledgement, and
  the median over the partitions.

With `--partitions` (default 1000) spread over the 3 brokers, replication factor `--rf`
(default 3; min.insync.replicas 2 with RF 3). Several rounds, medians reported.
Needs a built flumen (FLUMEN_BIN or target/release) and confluent-kafka.

    python3 benches/cluster_failover.py --rounds 5 --partitions 1000
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "clients"))
from confluent_kafka import ElectionType, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from test_cluster import Cluster, create  # noqa: E402


def poll(cond, timeout=60, step=0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return time.time()
        except Exception:
            pass
        time.sleep(step)
    raise TimeoutError("condition not reached")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--session-ms", type=int, default=2000)
    ap.add_argument("--rf", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp), 3, {"broker_session_timeout_ms": args.session_ms,
                                   "max_partitions_per_topic": max(args.partitions, 1000)})
        c.start()
        try:
            config = {"min.insync.replicas": "2"} if args.rf >= 3 else {}
            create(c.node(1).bootstrap, "load", args.partitions, rf=args.rf, config=config)
            controller_elected, controller_write, fenced, writable_all, writable_med = [], [], [], [], []
            for r in range(args.rounds):
                # Controller kill.
                old = c.metadata(1).controller_id
                other = next(i for i in (1, 2, 3) if i != old)
                t0 = time.time()
                c.node(old).kill9()
                t1 = poll(lambda: c.metadata(other).controller_id not in (old, -1))
                create(c.node(other).bootstrap, f"after-{r}", 1)
                t2 = time.time()
                controller_elected.append(t1 - t0)
                controller_write.append(t2 - t0)
                c.node(old).start()
                c.wait_live([1, 2, 3], timeout=60)
                # Broker kill (not the controller, so only the fencing is timed).
                # Every replica back in sync first: a partition whose only in-sync replica is
                # killed stays offline (unclean election off), which is not failover.
                poll(lambda: all(len(p.isrs) == args.rf
                                 for p in c.metadata(1).topics["load"].partitions.values()),
                     timeout=120, step=0.2)
                # Leaders back on their preferred replicas (restarted brokers lead none until
                # then), so each kill takes about a third of the partitions.
                admin = AdminClient({"bootstrap.servers": c.bootstrap()})
                try:
                    admin.elect_leaders(ElectionType.PREFERRED, None).result(60)
                except Exception:
                    pass  # ELECTION_NOT_NEEDED for those already there
                # The non-controller leading the most partitions (a broker just restarted
                # leads none until the preferred-leader rebalance gives them back).
                ctl = c.metadata(1).controller_id
                parts = c.metadata(ctl).topics["load"].partitions.values()
                victim = max((i for i in (1, 2, 3) if i != ctl),
                             key=lambda i: sum(1 for p in parts if p.leader == i))
                watcher = next(i for i in (1, 2, 3) if i != victim)
                led_by = [p.id for p in c.metadata(watcher).topics["load"].partitions.values()
                          if p.leader == victim]
                led = len(led_by)
                producer = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all",
                                     "linger.ms": 0, "retry.backoff.ms": 20,
                                     "retry.backoff.max.ms": 100, "message.timeout.ms": 120000})
                producer.list_topics("load", timeout=10)  # metadata before the kill
                acked = {}

                def done(err, msg, acked=acked):
                    if err is None:
                        acked[msg.partition()] = time.time()

                t0 = time.time()
                c.node(victim).kill9()
                for p in led_by:
                    producer.produce("load", b"after-kill", partition=p, on_delivery=done)
                t1 = poll(lambda: all(p.leader != victim
                                      for p in c.metadata(watcher).topics["load"].partitions.values()))
                fenced.append(t1 - t0)
                producer.flush(120)
                if len(acked) != led:
                    raise RuntimeError(f"only {len(acked)} of {led} partitions took the write")
                writable_all.append(max(acked.values()) - t0)
                writable_med.append(statistics.median(acked.values()) - t0)
                print(f"round {r}: controller elected {controller_elected[-1]:.2f}s, "
                      f"first write {controller_write[-1]:.2f}s; broker {victim} "
                      f"({led} partitions) fenced after {fenced[-1]:.2f}s, all writable after "
                      f"{writable_all[-1]:.2f}s (median partition {writable_med[-1]:.2f}s)", flush=True)
                c.node(victim).start()
                c.wait_live([1, 2, 3], timeout=60)
            med = statistics.median
            print(f"\n{args.partitions} partitions, 3 brokers, broker_session_timeout_ms={args.session_ms}, "
                  f"{args.rounds} rounds (medians):")
            print(f"  controller kill -> new controller:   {med(controller_elected):.2f}s "
                  f"(min {min(controller_elected):.2f}, max {max(controller_elected):.2f})")
            print(f"  controller kill -> first write ok:   {med(controller_write):.2f}s")
            print(f"  broker kill -> fenced, leaders off:  {med(fenced):.2f}s "
                  f"(session timeout {args.session_ms / 1000:.1f}s of it)")
            print(f"  broker kill -> its partitions take acks=all (RF {args.rf}): all "
                  f"{med(writable_all):.2f}s (max {max(writable_all):.2f}), median partition "
                  f"{med(writable_med):.2f}s")
        finally:
            c.stop()


if __name__ == "__main__":
    main()
