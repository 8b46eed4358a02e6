// kafkajs transactions: a transactional producer (idempotent, one request in flight) commits
// records 0-99, aborts 100-199 (with offsets sent for a group, which must not stick), commits
// 200-299 with offsets sent for the same group. Record i: key k<i>, value v<i>, partition i % 2.
// Then a read_committed consumer (readUncommitted: false, the default) must see exactly the
// committed records with their offsets (per partition 50 records then a marker per
// transaction), a read_uncommitted one all 300, and the group the committed offset only.
// Prints "OK ..." and exits 0, or prints FAIL and exits 1.
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic] = process.argv.slice(2);
const PARTS = 2;
const src = topic + '-src';
const offsetsGroup = 'txn-offsets-' + topic;

function fail(msg) {
  console.error('FAIL ' + msg);
  process.exit(1);
}

function records(from, to) {
  const out = [];
  for (let i = from; i < to; i++) out.push({ key: 'k' + i, value: 'v' + i, partition: i % PARTS });
  return out;
}

async function groupOffset(admin) {
  const res = await admin.fetchOffsets({ groupId: offsetsGroup, topics: [src] });
  const p = res[0].partitions.find(x => x.partition === 0);
  return p ? p.offset : 'none';
}

// Reads the topic with a fresh group until `expect` records have arrived, then 1.5 s more to
// catch extras. Answers {partition: [message]}.
async function readAll(kafka, readUncommitted, expect) {
  const consumer = kafka.consumer({ groupId: 'read-' + readUncommitted + '-' + topic, readUncommitted,
    sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = {};
  let count = 0;
  let finish;
  const done = new Promise(res => { finish = res; });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      (got[partition] = got[partition] || []).push(message);
      count++;
      if (count === expect) finish();
    },
  });
  const timer = setTimeout(() => fail(`readUncommitted=${readUncommitted}: timed out with ${count} of ${expect}`), 30000);
  await done;
  clearTimeout(timer);
  await new Promise(res => setTimeout(res, 1500));
  await consumer.disconnect();
  if (count !== expect) fail(`readUncommitted=${readUncommitted}: ${count} records, expected ${expect}`);
  return got;
}

function check(got, label, wanted) {
  // wanted: list of [i, offset] per partition
  for (let p = 0; p < PARTS; p++) {
    const msgs = got[p] || [];
    const exp = wanted(p);
    if (msgs.length !== exp.length) fail(`${label} p${p}: ${msgs.length} records, expected ${exp.length}`);
    exp.forEach(([i, off], j) => {
      const m = msgs[j];
      if (m.value.toString() !== 'v' + i || m.key.toString() !== 'k' + i || m.offset !== String(off)) {
        fail(`${label} p${p} #${j}: got ${m.key}/${m.value}@${m.offset}, expected k${i}/v${i}@${off}`);
      }
    });
  }
}

(async () => {
  const kafka = new Kafka({ clientId: 'flumen-txn-test', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  if (!(await admin.createTopics({ topics: [{ topic, numPartitions: PARTS }, { topic: src, numPartitions: 1 }] }))) {
    fail('createTopics');
  }

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1,
    transactionalId: 'js-txn-' + topic, transactionTimeout: 30000 });
  await producer.connect();

  let txn = await producer.transaction();
  await txn.send({ topic, acks: -1, messages: records(0, 100) });
  await txn.commit();

  txn = await producer.transaction();
  await txn.send({ topic, acks: -1, messages: records(100, 200) });
  await txn.sendOffsets({ consumerGroupId: offsetsGroup,
    topics: [{ topic: src, partitions: [{ partition: 0, offset: '7' }] }] });
  await txn.abort();
  const afterAbort = await groupOffset(admin);
  if (afterAbort !== '-1') fail(`group offset after the aborted transaction: ${afterAbort}, expected -1`);

  txn = await producer.transaction();
  await txn.send({ topic, acks: -1, messages: records(200, 300) });
  await txn.sendOffsets({ consumerGroupId: offsetsGroup,
    topics: [{ topic: src, partitions: [{ partition: 0, offset: '42' }] }] });
  await txn.commit();
  await producer.disconnect();

  // Per partition: txn 1 at 0-49 (marker 50), txn 2 at 51-100 (marker 101), txn 3 at 102-151
  // (marker 152). Record i is the (i div 2)-th of its partition.
  const offsetOf = i => (i < 100 ? 0 : i < 200 ? 51 - 50 : 102 - 100) + Math.floor(i / PARTS);
  const idx = (p, pred) => [...Array(300).keys()].filter(i => i % PARTS === p && pred(i)).map(i => [i, offsetOf(i)]);

  const committed = await readAll(kafka, false, 200);
  check(committed, 'read_committed', p => idx(p, i => i < 100 || i >= 200));
  const everything = await readAll(kafka, true, 300);
  check(everything, 'read_uncommitted', p => idx(p, () => true));

  const final = await groupOffset(admin);
  if (final !== '42') fail(`group offset after the committed transaction: ${final}, expected 42`);
  const ends = await admin.fetchTopicOffsets(topic);
  if (ends.length !== PARTS || ends.some(e => e.high !== '153')) fail('end offsets ' + JSON.stringify(ends));
  await admin.disconnect();
  console.log('OK committed 200 of 300, offsets 42');
})().catch(e => fail(e.stack || String(e)));
