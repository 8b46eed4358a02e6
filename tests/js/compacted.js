// kafkajs reads a compacted topic from the beginning in a consumer group: the log has gaps
// between batches (the cleaner dropped whole batches) and batches without records (producers'
// last batches). Prints `OK <json of key -> last value>` once it has read up to the offset
// given, or fails after 60 s (a consumer stuck at a gap or an empty batch never gets there).
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, endArg] = process.argv.slice(2);
const end = Number(endArg);

function fail(msg) {
  console.error('FAIL ' + msg);
  process.exit(1);
}

(async () => {
  const kafka = new Kafka({ clientId: 'flumen-compacted', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const consumer = kafka.consumer({ groupId: 'compacted-' + Date.now() });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const latest = {};
  let last = -1;
  let offsets = [];
  const timer = setTimeout(() => fail(`stuck after offset ${last} of ${end}`), 60000);
  await new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ message }) => {
        const o = Number(message.offset);
        offsets.push(o);
        latest[message.key.toString()] = message.value === null ? null : message.value.toString();
        last = o;
        if (o >= end - 1) resolve();
      },
    });
  });
  clearTimeout(timer);
  await consumer.disconnect();
  for (let i = 1; i < offsets.length; i++) {
    if (offsets[i] <= offsets[i - 1]) fail(`offset ${offsets[i]} after ${offsets[i - 1]}`);
  }
  console.log('OK ' + JSON.stringify(latest));
})().catch((e) => fail(e.stack || String(e)));
