#!/usr/bin/env python3
"""Seed corpora for the fuzz targets from real client traffic.

  python3 fuzz/make_corpus.py [--flumen target/release/flumen]

Starts a broker and a recording TCP proxy in front of it, runs confluent-kafka (librdkafka)
and kafka-python through the proxy (plain, compressed, idempotent and transactional
produce, a consumer group, offsets, metadata, admin), and writes:
  fuzz/corpus/request/   every request frame (after the size prefix), deduplicated
  fuzz/corpus/batch/     the record sets of the produce requests, and each stored batch
  fuzz/corpus/recovery/  the first 32 KiB of each non-empty segment the broker wrote"""
import argparse
import hashlib
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save(kind, data):
    if len(data) > 16384:  # small seeds fuzz faster; the big ones add nothing new
        return
    d = HERE / "corpus" / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        c = sock.recv(n - len(out))
        if not c:
            return None
        out += c
    return out


def produce_records(frame):
    """Record sets of a Produce v3+ request frame (non-flexible versions only)."""
    key, version = struct.unpack(">hh", frame[:4])
    if key != 0 or not 3 <= version <= 8:
        return []
    at = 8
    (cl,) = struct.unpack(">h", frame[at:at + 2])
    at += 2 + max(cl, 0)
    (tl,) = struct.unpack(">h", frame[at:at + 2])  # transactional id
    at += 2 + max(tl, 0)
    at += 2 + 4  # acks, timeout
    out = []
    (nt,) = struct.unpack(">i", frame[at:at + 4])
    at += 4
    for _ in range(nt):
        (n,) = struct.unpack(">h", frame[at:at + 2])
        at += 2 + n
        (np_,) = struct.unpack(">i", frame[at:at + 4])
        at += 4
        for _ in range(np_):
            _, rl = struct.unpack(">ii", frame[at:at + 8])
            at += 8
            if rl > 0:
                out.append(frame[at:at + rl])
                at += rl
    return out


def proxy(listen_port, target_port, stop):
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", listen_port))
    lst.listen(64)
    lst.settimeout(0.2)

    def pump_up(c, u):
        try:
            while True:
                head = read_exact(c, 4)
                if head is None:
                    break
                body = read_exact(c, struct.unpack(">i", head)[0])
                if body is None:
                    break
                save("request", body)
                for r in produce_records(body):
                    save("batch", r)
                u.sendall(head + body)
        except OSError:
            pass
        for s in (c, u):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pump_down(c, u):
        try:
            while True:
                d = u.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass

    while not stop.is_set():
        try:
            c, _ = lst.accept()
        except socket.timeout:
            continue
        u = socket.create_connection(("127.0.0.1", target_port))
        threading.Thread(target=pump_up, args=(c, u), daemon=True).start()
        threading.Thread(target=pump_down, args=(c, u), daemon=True).start()


def traffic(bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name in ("corpus", "corpus-kp"):
        admin.create_topics([NewTopic(name, 3, 1)])[name].result(20)
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                      "linger.ms": 5, "enable.idempotence": codec == "zstd"})
        for i in range(200):
            p.produce("corpus", key=b"k%d" % i, value=b"value %d " % i * 3,
                      headers={"h": b"v"}, partition=i % 3)
        p.flush(20)
    t = Producer({"bootstrap.servers": bootstrap, "transactional.id": "corpus-tx"})
    t.init_transactions(20)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "corpus-g",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "enable.auto.commit": False})
    for commit in (True, False):
        t.begin_transaction()
        for i in range(20):
            t.produce("corpus", value=b"tx %d" % i, partition=0)
        t.send_offsets_to_transaction([TopicPartition("corpus", 0, 5)],
                                      c.consumer_group_metadata(), 20)
        (t.commit_transaction if commit else t.abort_transaction)(20)
    c.subscribe(["corpus"])
    deadline = time.time() + 15
    n = 0
    while n < 300 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            n += 1
    c.commit(asynchronous=False)
    c.close()
    from kafka import KafkaConsumer, KafkaProducer
    kp = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip")
    for i in range(50):
        kp.send("corpus-kp", b"kafka-python %d" % i, partition=1)
    kp.flush()
    kp.close()
    kc = KafkaConsumer("corpus-kp", bootstrap_servers=bootstrap, group_id="corpus-kp",
                       auto_offset_reset="earliest", consumer_timeout_ms=3000)
    for _ in kc:
        pass
    kc.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flumen", default=str(HERE.parent / "target" / "release" / "flumen"))
    a = ap.parse_args()
    broker_port, proxy_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        cfg = Path(tmp) / "flumen.toml"
        cfg.write_text(f'advertise = "127.0.0.1:{proxy_port}"\ngroup_initial_rebalance_delay_ms = 100\n')
        b = subprocess.Popen([a.flumen, "serve", "--listen", f"127.0.0.1:{broker_port}",
                              "--data-dir", str(data), "--shards", "2", "--config", str(cfg)],
                             stderr=subprocess.DEVNULL)
        stop = threading.Event()
        threading.Thread(target=proxy, args=(proxy_port, broker_port, stop), daemon=True).start()
        time.sleep(1.5)
        try:
            traffic(f"127.0.0.1:{proxy_port}")
        finally:
            stop.set()
            b.terminate()
            b.wait(20)
        for log in data.glob("*/*.log"):
            whole = log.read_bytes()
            if whole:
                save("recovery", whole[:16384])
            at = 0  # and each stored batch, as produced (base offset aside)
            while at + 12 <= len(whole):
                n = 12 + struct.unpack(">i", whole[at + 8:at + 12])[0]
                if n <= 12 or at + n > len(whole):
                    break
                save("batch", whole[at:at + n])
                at += n
    for kind in ("request", "batch", "recovery"):
        print(kind, len(list((HERE / "corpus" / kind).iterdir())), file=sys.stderr)


if __name__ == "__main__":
    main()
