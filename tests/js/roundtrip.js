// kafkajs: admin createTopics, produce with keys, headers and timestamps (acks -1, uncompressed
// and gzip), consume the topic in a consumer group from the beginning, check every record once
// and in order per partition, commit, and read the committed offsets back with the admin client.
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');

const [bootstrap, topic] = process.argv.slice(2);
const N = 500;
const PARTS = 3;

function fail(msg) {
  console.error('FAIL ' + msg);
  process.exit(1);
}

(async () => {
  const kafka = new Kafka({ clientId: 'flumen-test', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  if (!(await admin.createTopics({ topics: [{ topic, numPartitions: PARTS }] }))) fail('createTopics');

  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < N; i++) {
    messages.push({
      key: 'k' + i, value: 'v' + i, headers: { seq: String(i) }, partition: i % PARTS,
      timestamp: String(1700000000000 + i),
    });
  }
  // The first half uncompressed, the second half gzip (built into kafkajs).
  const half = N / 2;
  for (const [msgs, compression] of [[messages.slice(0, half), CompressionTypes.None],
    [messages.slice(half), CompressionTypes.GZIP]]) {
    const res = await producer.send({ topic, acks: -1, compression, messages: msgs });
    if (res.length !== PARTS || res.some(r => r.errorCode !== 0)) fail('send ' + JSON.stringify(res));
  }
  await producer.disconnect();

  const groupId = 'g-' + topic;
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000 });
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
      if (count === N) finish();
    },
  });
  const timer = setTimeout(() => fail('timed out with ' + count + ' of ' + N), 30000);
  await done;
  clearTimeout(timer);
  await consumer.disconnect(); // commits the consumed offsets

  for (let p = 0; p < PARTS; p++) {
    const msgs = got[p] || [];
    msgs.forEach((m, j) => {
      const i = p + j * PARTS;
      if (m.offset !== String(j)) fail(`p${p} offset ${m.offset} != ${j}`);
      if (m.key.toString() !== 'k' + i || m.value.toString() !== 'v' + i) fail(`p${p} record ${j}`);
      if (m.headers.seq.toString() !== String(i)) fail(`p${p} header ${j}`);
      if (m.timestamp !== String(1700000000000 + i)) fail(`p${p} timestamp ${j} ${m.timestamp}`);
    });
    if (msgs.length !== Math.ceil((N - p) / PARTS)) fail(`p${p} has ${msgs.length}`);
  }
  const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
  const offs = committed[0].partitions.sort((a, b) => a.partition - b.partition).map(x => x.offset);
  const expect = [...Array(PARTS).keys()].map(p => String(Math.ceil((N - p) / PARTS)));
  if (JSON.stringify(offs) !== JSON.stringify(expect)) fail('committed ' + offs + ' != ' + expect);
  const ends = await admin.fetchTopicOffsets(topic);
  if (ends.some(e => e.high !== expect[e.partition])) fail('high watermarks ' + JSON.stringify(ends));
  await admin.disconnect();
  console.log('OK ' + count);
})().catch(e => fail(e.stack || String(e)));
