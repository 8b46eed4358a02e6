#!/usr/bin/env python3
"""Cluster failover times on this machine, with real processes (the test harness's Cluster).

- controller kill -9 -> another broker reports a new live controller; and -> the first metadata
  write (CreateTopics) that succeeds after the kill.
- broker kill -9 -> that broker fenced and its partitions taken off it (Metadata from another
  broker no longer names it as leader of any partition).

With `--partitions` (default 1000) spread over the 3 brokers. Several rounds, medians reported.
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp), 3, {"broker_session_timeout_ms": args.session_ms,
                                   "max_partitions_per_topic": max(args.partitions, 1000)})
        c.start()
        try:
            create(c.node(1).bootstrap, "load", args.partitions)
            controller_elected, controller_write, fenced = [], [], []
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
                ctl = c.metadata(1).controller_id
                victim = next(i for i in (1, 2, 3) if i != ctl)
                watcher = next(i for i in (1, 2, 3) if i != victim)
                led = sum(1 for p in c.metadata(watcher).topics["load"].partitions.values() if p.leader == victim)
                t0 = time.time()
                c.node(victim).kill9()
                t1 = poll(lambda: all(p.leader != victim
                                      for p in c.metadata(watcher).topics["load"].partitions.values()))
                fenced.append(t1 - t0)
                print(f"round {r}: controller elected {controller_elected[-1]:.2f}s, "
                      f"first write {controller_write[-1]:.2f}s; broker {victim} "
                      f"({led} partitions) fenced after {fenced[-1]:.2f}s", flush=True)
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
        finally:
            c.stop()


if __name__ == "__main__":
    main()
