"""Transactional helpers run as their own process, so tests can kill -9 them for real.

  txn_processor.py process BOOTSTRAP SRC DST GROUP TXN_ID SLOW_S BATCH
      Consume-transform-produce, exactly once: a read_committed group consumer (no auto commit)
      on SRC and a transactional producer with the fixed TXN_ID. Each loop: poll up to BATCH
      records, begin, produce key=<input key> value=b"out-"+<input value> to the same partition
      of DST, send the consumer's positions with send_offsets_to_transaction, commit. With
      SLOW_S > 0 every transaction is flushed (its records are in the log) and reported as
      {"ev": "open"} before sleeping SLOW_S seconds, so the parent can kill -9 it with an open
      transaction. Exits 0 with {"ev": "done"} once every partition of SRC has been consumed up
      to the high watermark SRC had when the process started.

  txn_processor.py hang BOOTSTRAP TOPIC TXN_ID TIMEOUT_MS N
      init_transactions, begin, produce N records b"hung-<i>" to partition 0, flush, report
      {"ev": "ready", "begin": <time.time() before begin_transaction>}, then sleep (to be
      killed with its transaction open).

Prints one JSON object per line on stdout; librdkafka logs go to stderr."""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def emit(**kv):
    print(json.dumps(kv), flush=True)


def delivery_checker():
    errors = []

    def cb(err, msg):
        if err:
            errors.append(str(err))
    return errors, cb


def process(bootstrap, src, dst, group, txn_id, slow, batch):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "transaction.timeout.ms": 60000, "linger.ms": 5})
    # Before the consumer starts: a previous incarnation's open transaction (its records and
    # its offsets) is aborted, and it is fenced.
    p.init_transactions(30)
    emit(ev="init")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 3000,
                  "heartbeat.interval.ms": 500})
    parts = sorted(c.list_topics(src, timeout=10).topics[src].partitions)
    ends = {q: c.get_watermark_offsets(TopicPartition(src, q), timeout=10)[1] for q in parts}
    c.subscribe([src])
    errors, cb = delivery_checker()
    pos = {}  # partition -> next input offset, as far as this process knows
    txns = 0

    def done():
        return all(pos.get(q, -1) >= ends[q] for q in parts)

    while True:
        msgs = c.consume(batch, 0.5)
        for m in msgs:
            if m.error():
                raise KafkaException(m.error())
        if not msgs:
            # Partitions finished by an earlier incarnation yield nothing: ask the group.
            asg = c.assignment()
            if len(asg) == len(parts) and not done():
                for tp in c.committed(asg, timeout=10):
                    if tp.offset >= 0:
                        pos[tp.partition] = max(pos.get(tp.partition, -1), tp.offset)
            if done():
                break
            continue
        p.begin_transaction()
        for m in msgs:
            while True:
                try:
                    p.produce(dst, key=m.key(), value=b"out-" + m.value(), partition=m.partition(),
                              on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.05)
        if slow > 0:
            assert p.flush(30) == 0
            if errors:
                raise RuntimeError(f"delivery failed: {errors[:3]}")
            emit(ev="open", txns=txns, n=len(msgs))
            time.sleep(slow)
        offsets = [tp for tp in c.position(c.assignment()) if tp.offset >= 0]
        p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        if errors:
            raise RuntimeError(f"delivery failed in a committed transaction: {errors[:3]}")
        for m in msgs:
            pos[m.partition()] = max(pos.get(m.partition(), -1), m.offset() + 1)
        txns += 1
        emit(ev="committed", txns=txns, n=len(msgs),
             offsets={tp.partition: tp.offset for tp in offsets})
        if done():
            break
    c.close()
    emit(ev="done", txns=txns)


def hang(bootstrap, topic, txn_id, timeout_ms, n):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "transaction.timeout.ms": timeout_ms, "linger.ms": 5})
    p.init_transactions(30)
    errors, cb = delivery_checker()
    began = time.time()
    p.begin_transaction()
    for i in range(n):
        p.produce(topic, value=b"hung-%d" % i, partition=0, on_delivery=cb)
    assert p.flush(30) == 0
    if errors:
        raise RuntimeError(f"delivery failed: {errors[:3]}")
    emit(ev="ready", begin=began)
    time.sleep(600)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "process":
        bootstrap, src, dst, group, txn_id, slow, batch = args
        process(bootstrap, src, dst, group, txn_id, float(slow), int(batch))
    elif mode == "hang":
        bootstrap, topic, txn_id, timeout_ms, n = args
        hang(bootstrap, topic, txn_id, int(timeout_ms), int(n))
    else:
        sys.exit(f"unknown mode {mode}")
