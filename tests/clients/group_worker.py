"""A confluent-kafka group consumer in its own process, so tests can kill it for real.

argv: bootstrap group topic name config-json. Prints one JSON object per line: assign/revoke
events and every record consumed (committed synchronously before it is printed unless
enable.auto.commit is on). Exits on SIGTERM after closing the consumer (LeaveGroup), or when
told "pause" on stdin stops polling (to exceed max.poll.interval.ms)."""
import json
import select
import signal
import sys

from confluent_kafka import Consumer

bootstrap, group, topic, name, extra = sys.argv[1:6]
conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        "client.id": name}
conf.update(json.loads(extra))
auto = conf.get("enable.auto.commit", False)
stop = False


def emit(**kv):
    print(json.dumps(kv), flush=True)


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
c = Consumer(conf)
c.subscribe([topic],
            on_assign=lambda c, ps: emit(ev="assign", parts=sorted(p.partition for p in ps)),
            on_revoke=lambda c, ps: emit(ev="revoke", parts=sorted(p.partition for p in ps)))
emit(ev="start")
paused = False
while not stop:
    if select.select([sys.stdin], [], [], 0)[0]:
        line = sys.stdin.readline().strip()
        if line == "pause":
            paused = True
            emit(ev="paused")
        elif line == "":
            break
    if paused:
        import time
        time.sleep(0.1)
        continue
    m = c.poll(0.2)
    if m is None:
        continue
    if m.error():
        emit(ev="error", err=str(m.error()))
        continue
    if not auto:
        c.commit(m, asynchronous=False)
    emit(ev="msg", p=m.partition(), o=m.offset(), v=m.value().decode())
c.close()
emit(ev="closed")
