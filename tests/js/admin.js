// kafkajs admin: describeConfigs, alterConfigs (AlterConfigs: the given entries replace the
// topic's overrides), createPartitions, deleteTopicRecords (DeleteRecords), fetchTopicOffsets,
// deleteTopics, and an invalid config refused with INVALID_CONFIG. Prints "OK" on success.
const { Kafka, logLevel, ConfigResourceTypes } = require('kafkajs');

const [bootstrap, topic] = process.argv.slice(2);

function fail(msg) {
  console.error('FAIL ' + msg);
  process.exit(1);
}

function configOf(res, name) {
  const entry = res.resources[0].configEntries.find((e) => e.configName === name);
  if (!entry) fail(`no ${name} in ${JSON.stringify(res.resources[0].configEntries.map((e) => e.configName))}`);
  return entry;
}

(async () => {
  const kafka = new Kafka({ clientId: 'flumen-admin-test', brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic, numPartitions: 2, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
  });
  const describe = () =>
    admin.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false });
  let res = await describe();
  if (configOf(res, 'retention.ms').configValue !== '3600000') fail('retention.ms after create');

  await admin.alterConfigs({
    validateOnly: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'max.message.bytes', value: '65536' }] }],
  });
  res = await describe();
  if (configOf(res, 'max.message.bytes').configValue !== '65536') fail('max.message.bytes after alter');
  if (configOf(res, 'retention.ms').configValue === '3600000') fail('AlterConfigs kept an override it did not name');

  let refused = null;
  try {
    await admin.alterConfigs({
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: 'soon' }] }],
    });
  } catch (e) {
    refused = e;
  }
  if (!refused || !/INVALID_CONFIG|not valid|invalid/i.test(`${refused.type} ${refused.message}`)) {
    fail(`a bad value was not refused with INVALID_CONFIG: ${refused && refused.type} ${refused && refused.message}`);
  }

  await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] });
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  if (md.topics[0].partitions.length !== 4) fail(`partitions after createPartitions: ${md.topics[0].partitions.length}`);

  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: Array.from({ length: 10 }, (_, i) => ({ partition: 0, value: `v${i}` })) });
  await producer.disconnect();
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '6' }] });
  const offsets = await admin.fetchTopicOffsets(topic);
  const p0 = offsets.find((o) => o.partition === 0);
  if (p0.low !== '6' || p0.high !== '10') fail(`watermarks after deleteTopicRecords: ${JSON.stringify(p0)}`);

  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log('OK');
})().catch((e) => fail(e.stack || String(e)));
