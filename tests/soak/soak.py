#!/usr/bin/env python3
"""Bounded soak (not in CI): mixed produce / consume / consumer-group traffic from real
clients for --minutes, with a clean broker restart and a kill -9 in the middle. At the end:
every acknowledged record was consumed by the group exactly as produced (no loss; duplicates
only where at-least-once allows, counted), no client error other than the expected
disconnects around the restarts, and the broker's RSS sampled each 10 s stays flat
(the last third's maximum within 25% of the first third's, after warm-up).

  python3 tests/soak/soak.py [--flumen target/release/flumen] [--minutes 10]

Prints one line per sample and a verdict; exits non-zero on a failed check."""
import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, data, port):
        self.cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                    "--shards", "2"]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stderr=open(Path(self.cmd[-3]).parent / "broker.log", "a"))
        time.sleep(2.0)

    def rss_mib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flumen", default=str(ROOT / "target" / "release" / "flumen"))
    ap.add_argument("--minutes", type=float, default=10)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flumen-soak-"))
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    b = Broker(a.flumen, tmp / "data", port)
    b.start()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("soak", 6, 1)])["soak"].result(30)
    end = time.time() + a.minutes * 60
    stop = threading.Event()
    acked, consumed, errors = set(), {}, []
    lock = threading.Lock()

    def produce():
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "linger.ms": 5, "message.timeout.ms": 120000})
        i = 0

        def cb(err, msg):
            if err:
                errors.append(f"produce: {err}")
            else:
                with lock:
                    acked.add(msg.value())
        while not stop.is_set():
            try:
                p.produce("soak", value=b"%012d" % i, on_delivery=cb)
                i += 1
            except BufferError:
                p.poll(0.05)
            if i % 500 == 0:
                p.poll(0)
                time.sleep(0.01)  # ~ tens of thousands of records a second, not a flat-out test
        p.flush(120)

    def consume(n):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-group",
                      "auto.offset.reset": "earliest", "enable.auto.commit": True,
                      "session.timeout.ms": 10000})
        c.subscribe(["soak"])
        while not stop.is_set() or time.time() < drain_until[0]:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() != -191:
                    errors.append(f"consume: {m.error()}")
                continue
            with lock:
                consumed[m.value()] = consumed.get(m.value(), 0) + 1
        c.close()

    drain_until = [float("inf")]
    threads = [threading.Thread(target=produce)] + [threading.Thread(target=consume, args=(k,))
                                                    for k in range(2)]
    for t in threads:
        t.start()
    samples = []
    restarted = killed = False
    start = time.time()
    while time.time() < end:
        time.sleep(10)
        elapsed = time.time() - start
        samples.append(b.rss_mib())
        print(f"{elapsed:6.0f}s rss {samples[-1]:7.1f} MiB acked {len(acked):>9} "
              f"consumed {len(consumed):>9} errors {len(errors)}", flush=True)
        if not restarted and elapsed > a.minutes * 60 / 3:
            print("-- clean restart", flush=True)
            b.stop()
            b.start()
            restarted = True
        elif not killed and elapsed > a.minutes * 60 * 2 / 3:
            print("-- kill -9 and restart", flush=True)
            b.stop(signal.SIGKILL)
            b.start()
            killed = True
    stop.set()
    threads[0].join()
    drain_until[0] = time.time() + 60
    deadline = time.time() + 60
    while time.time() < deadline and not acked <= set(consumed):
        time.sleep(1)
    drain_until[0] = 0
    for t in threads[1:]:
        t.join()
    b.stop()
    missing = acked - set(consumed)
    dups = sum(n - 1 for n in consumed.values())
    # Disconnects around the restarts are expected transport errors, not failures.
    real_errors = [e for e in errors if "Disconnected" not in e and "Connection refused" not in e
                   and "_TRANSPORT" not in e and "Broker transport failure" not in e]
    third = max(1, len(samples) // 3)
    first = max(samples[1:third + 1] or samples[:1])
    last = max(samples[-third:])
    print(f"acked {len(acked)}, consumed {len(consumed)} distinct, missing {len(missing)}, "
          f"redelivered {dups}, errors {len(real_errors)} (+{len(errors) - len(real_errors)} "
          f"transport), RSS first third max {first:.1f} MiB, last third max {last:.1f} MiB")
    ok = not missing and not real_errors and last <= first * 1.25
    print("PASS" if ok else f"FAIL {real_errors[:3]}")
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
