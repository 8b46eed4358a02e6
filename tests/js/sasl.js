// kafkajs over a SASL_PLAINTEXT listener (SASL_SSL with FLUMEN_TLS_CA): produce and consume with the mechanism and
// credentials given; with a wrong password, expects the authentication to be refused.
// Usage: node sasl.js BOOTSTRAP TOPIC MECHANISM USER PASSWORD ok|refused. Prints "OK".
const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, mechanism, username, password, expect] = process.argv.slice(2);

function fail(msg) {
  console.error('FAIL ' + msg);
  process.exit(1);
}

(async () => {
  // FLUMEN_TLS_CA: a SASL_SSL listener, trusting that CA file.
  const ca = process.env.FLUMEN_TLS_CA;
  const kafka = new Kafka({
    clientId: 'flumen-sasl-test',
    brokers: [bootstrap],
    ssl: ca ? { ca: [require('fs').readFileSync(ca, 'utf8')] } : false,
    sasl: { mechanism: mechanism.toLowerCase(), username, password },
    logLevel: logLevel.NOTHING,
    retry: { retries: 2 },
  });
  const producer = kafka.producer();
  if (expect === 'refused') {
    try {
      await producer.connect();
    } catch (e) {
      if (e.type !== 'SASL_AUTHENTICATION_FAILED' && !/SASL|authentication/i.test(e.message)) {
        fail('refused, but not by SASL: ' + e.type + ' ' + e.message);
      }
      console.log('OK refused: ' + e.message);
      process.exit(0);
    }
    fail('a wrong password was accepted');
  }
  await producer.connect();
  const values = [];
  for (let i = 0; i < 20; i++) values.push({ value: 'v' + i, partition: 0 });
  await producer.send({ topic, acks: -1, messages: values });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: 'sasl-js-' + mechanism });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out reading back, got ' + got.length)), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        got.push(message.value.toString());
        if (got.length >= 20) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  }).catch((e) => fail(e.message));
  await consumer.disconnect();
  if (got.slice(0, 20).join(',') !== values.map((m) => m.value).join(',')) fail('read back ' + got.join(','));
  console.log('OK');
})().catch((e) => fail(e.stack || String(e)));
