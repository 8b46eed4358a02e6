"""Idempotent producers: retried batches are not written twice, across a kill -9."""
import time

from confluent_kafka import Producer

import rawkafka as rk
from util import create_topic, read_all, topic_name


def test_idempotent_producer_across_kill9(broker_factory):
    b = broker_factory(shards=2)
    topic = create_topic(b.bootstrap, topic_name("idem"), 2)
    acked, errors = [], []

    def cb(err, msg):
        (errors if err else acked).append((err, msg.partition(), msg.value()))

    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True, "linger.ms": 2,
                  "message.timeout.ms": 60000, "reconnect.backoff.ms": 50,
                  "reconnect.backoff.max.ms": 200})
    n = 40000
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=b"%d" % i, partition=i % 2, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
    # Kill while batches are in flight: some are written but not yet acknowledged and will be
    # retried against the restarted broker.
    killed = False
    deadline = time.time() + 30
    while time.time() < deadline:
        p.poll(0.005)
        if len(acked) > n // 4:
            b.kill9()
            b.start()
            killed = True
            break
    assert killed, "the broker acknowledged too little to kill it mid-stream"
    assert p.flush(90) == 0
    assert not errors, errors[:3]
    assert len(acked) == n
    got = read_all(b.bootstrap, topic, 2)
    for part in range(2):
        values = [int(m.value()) for m in got[part]]
        assert values == list(range(part, n, 2)), "duplicates or gaps after the retries"


def test_sequence_gap_and_old_epoch_are_refused(broker):
    topic = create_topic(broker.bootstrap, topic_name("seq"), 1)
    s = rk.connect(broker.bootstrap)

    def send(pid, epoch, seq, corr):
        return send_seq(s, topic, pid, epoch, seq, corr)

    assert send(1000, 0, 0, 1) == (0, 0, 0)
    assert send(1000, 0, 1, 2) == (0, 0, 1)
    assert send(1000, 0, 1, 3) == (0, 0, 1), "a retry gets its original offset"
    assert send(1000, 0, 5, 4)[1] == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert send(1000, 1, 0, 5) == (0, 0, 2)  # a new epoch starts over
    assert send(1000, 0, 2, 6)[1] == 47  # INVALID_PRODUCER_EPOCH: the old epoch is fenced
    assert send(2000, 0, 3, 7)[1] == 45  # a new producer must start at 0
    s.close()
    assert len(read_all(broker.bootstrap, topic, 1)[0]) == 3


def send_seq(s, topic, pid, epoch, seq, corr, values=(b"x",)):
    """Produces one batch with the given producer id, epoch and base sequence over a raw socket;
    answers (partition, error code, base offset)."""
    batch = bytearray(rk.record_batch(list(values)))
    # producer id, epoch and base sequence sit after the CRC: rewrite and re-checksum
    batch[43:51] = pid.to_bytes(8, "big", signed=True)
    batch[51:53] = epoch.to_bytes(2, "big", signed=True)
    batch[53:57] = seq.to_bytes(4, "big", signed=True)
    batch[17:21] = rk.crc32c(bytes(batch[21:])).to_bytes(4, "big")
    s.sendall(rk.produce_v3(topic, 0, bytes(batch), corr=corr))
    return rk.parse_produce_v3(rk.read_frame(s))[1][0]


def test_producer_state_survives_restart_and_kill9(broker_factory):
    # Small segments so the state comes from a snapshot taken at a roll plus the batches after it.
    b = broker_factory(config={"segment_bytes": 65536, "flush_interval_ms": 0})
    topic = create_topic(b.bootstrap, topic_name("pstate"), 1)
    s = rk.connect(b.bootstrap)
    pad = b"v" * 4000
    for seq in range(40):
        assert send_seq(s, topic, 77, 3, seq, seq + 1, [pad]) == (0, 0, seq)
    s.close()
    assert len(list(b.data_dir.glob("**/*.snapshot"))) >= 1, "no producer snapshot at a roll"
    for how in ("restart", "kill9"):
        if how == "restart":
            b.restart()
        else:
            b.kill9()
            b.start()
        s = rk.connect(b.bootstrap)
        # the last batch again: its original offset, not a second copy
        assert send_seq(s, topic, 77, 3, 39, 100, [pad]) == (0, 0, 39), how
        assert send_seq(s, topic, 77, 3, 35, 101, [pad]) == (0, 0, 35), how
        assert send_seq(s, topic, 77, 3, 41, 102, [pad])[1] == 45, how  # still a gap
        assert send_seq(s, topic, 77, 2, 40, 103, [pad])[1] == 47, how  # still fenced
        s.close()
    s = rk.connect(b.bootstrap)
    assert send_seq(s, topic, 77, 3, 40, 104, [pad]) == (0, 0, 40)
    s.close()
    assert len(read_all(b.bootstrap, topic, 1)[0]) == 41


class DroppingProxy:
    """A TCP proxy in front of the broker that cuts the connection instead of delivering every
    `every`-th Produce response: the request was written, the client never hears so and
    retries it on a new connection."""

    def __init__(self, target_port, every=5):
        import socket
        import threading
        self.target_port = target_port
        self.every = every
        self.produce_responses = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            pending = []  # api keys of requests in flight, in order
            threading.Thread(target=self._up, args=(client, upstream, pending), daemon=True).start()
            threading.Thread(target=self._down, args=(client, upstream, pending), daemon=True).start()

    @staticmethod
    def _frame(sock):
        head = b""
        while len(head) < 4:
            c = sock.recv(4 - len(head))
            if not c:
                return None
            head += c
        n = int.from_bytes(head, "big")
        body = b""
        while len(body) < n:
            c = sock.recv(n - len(body))
            if not c:
                return None
            body += c
        return head + body

    def _up(self, client, upstream, pending):
        try:
            while True:
                f = self._frame(client)
                if f is None:
                    break
                pending.append(int.from_bytes(f[4:6], "big", signed=True))
                upstream.sendall(f)
        except OSError:
            pass
        self._cut(client, upstream)

    def _down(self, client, upstream, pending):
        try:
            while True:
                f = self._frame(upstream)
                if f is None:
                    break
                key = pending.pop(0) if pending else -1
                if key == 0:
                    with self.lock:
                        self.produce_responses += 1
                        drop = self.produce_responses % self.every == 0
                        if drop:
                            self.dropped += 1
                    if drop:
                        break
                client.sendall(f)
        except OSError:
            pass
        self._cut(client, upstream)

    @staticmethod
    def _cut(*socks):
        import socket
        # shutdown, not just close: the other thread is blocked in recv on these sockets, and a
        # close alone would not send the FIN until that recv returns.
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.stopped = True
        self.listener.close()


def test_idempotent_producer_with_dropped_responses(broker_factory):
    # The broker must advertise the proxy, so the client's reconnects go through it too.
    proxy = DroppingProxy(0)
    b = broker_factory(config={"advertise": f"127.0.0.1:{proxy.port}"})
    proxy.target_port = b.port
    try:
        topic = create_topic(b.bootstrap, topic_name("drop"), 1)
        acked, errors = [], []
        p = Producer({"bootstrap.servers": f"127.0.0.1:{proxy.port}", "enable.idempotence": True,
                      "linger.ms": 5, "batch.num.messages": 100, "message.timeout.ms": 60000,
                      "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100})
        n = 5000
        for i in range(n):
            while True:
                try:
                    p.produce(topic, value=b"%d" % i,
                              on_delivery=lambda e, m: (errors if e else acked).append(e))
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 100 == 99:
                p.poll(0.02)  # let batches go one by one, so many responses cross the proxy
        assert p.flush(90) == 0
        assert not errors, errors[:3]
        assert len(acked) == n
        assert proxy.dropped >= 3, f"the proxy dropped only {proxy.dropped} produce responses"
        values = [int(m.value()) for m in read_all(b.bootstrap, topic, 1)[0]]
        assert values == list(range(n)), "a retried batch was written twice or lost"
    finally:
        proxy.close()


def test_idle_producer_ids_expire(broker_factory):
    # Kafka's producer.id.expiration.ms: state of a producer idle that long is dropped, so
    # the table does not grow with every producer ever seen; one that comes back starts at 0.
    b = broker_factory(config={"producer_id_expiration_ms": 1000,
                               "retention_check_interval_ms": 200})
    topic = create_topic(b.bootstrap, topic_name("expire"), 1)
    s = rk.connect(b.bootstrap)
    assert send_seq(s, topic, 5000, 0, 0, 1) == (0, 0, 0)
    assert send_seq(s, topic, 5000, 0, 1, 2) == (0, 0, 1)
    assert send_seq(s, topic, 5000, 0, 1, 3) == (0, 0, 1), "remembered while active"
    time.sleep(2.5)
    assert send_seq(s, topic, 5000, 0, 2, 4)[1] == 45, "forgotten: sequence 2 is a gap now"
    assert send_seq(s, topic, 5000, 0, 0, 5) == (0, 0, 2)
    s.close()
