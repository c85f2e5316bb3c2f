// sumu.js against a `sumu-node --engine aws --dev` on the ministack emulator
// (installed by `infra/local/emulator install`, which test-all runs): an ack
// means AWS accepted the message, and when AWS refuses it the node's error
// frame carries the same id and rejects exactly that promise.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { SumuClient, SumuError } from '../../static/sumu.js';
import { DevNode, binary, eventually, nextEvent, repo } from './helpers.mjs';

const ministack = `${repo}/infra/local/.venv/bin/ministack`;
let emulator = null;
let node = null;
let client = null;

after(async () => {
  client?.close();
  await node?.stop();
  if (emulator && emulator.exitCode === null) {
    const exited = new Promise((r) => emulator.once('exit', r));
    emulator.kill('SIGKILL');
    await exited;
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** An SNS query-API call to the emulator (it takes unsigned requests). */
async function sns(endpoint, params) {
  const r = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params).toString(),
  });
  return { status: r.status, body: await r.text() };
}

test('acks once AWS accepted; an AWS refusal rejects the promise with the same id', async () => {
  assert.ok(existsSync(ministack), 'ministack is not installed: run infra/local/emulator install');
  const port = await freePort();
  emulator = spawn(ministack, [], {
    env: { ...process.env, BIND_HOST: '127.0.0.1', GATEWAY_PORT: String(port), IOT_MTLS_ENABLED: '0', SFTP_ENABLED: '0', LOG_LEVEL: 'WARNING' },
    stdio: 'ignore',
  });
  const endpoint = `http://127.0.0.1:${port}`;
  await eventually(
    () => fetch(`${endpoint}/_ministack/health`).then((r) => r.ok, () => false),
    30000,
    'ministack',
  );
  const env = {
    ...process.env,
    SUMU_ENGINE: 'aws',
    SUMU_AWS_ENDPOINT: endpoint,
    SUMU_AWS_REGION: 'us-east-1',
    SUMU_NAME_PREFIX: 'JsTest',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    SUMU_LOG: 'error',
  };
  const vars = Object.fromEntries(
    execFileSync(binary, ['bootstrap'], { env, encoding: 'utf8', timeout: 60000 })
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => l.split(/=(.*)/s).slice(0, 2)),
  );
  const topic = vars.SUMU_MESSAGES_TOPIC_ARN;
  assert.ok(topic, 'bootstrap printed the messages topic');

  node = await new DevNode(['--node-id', 'js-aws'], { env: { ...env, ...vars } }).start();

  client = new SumuClient({ url: node.ws, token: () => node.token('carla') });
  client.connect();
  await nextEvent(client, 'open', () => true, 15000);
  const ack = await client.publish({ text: 'accepted by SNS' });
  assert.equal(ack.type, 'ack');
  assert.equal((await client.send({ text: 'accepted by SQS' })).type, 'ack');

  // Take the topic away: the node's PublishBatch fails, and it says so by id.
  const del = await sns(endpoint, { Action: 'DeleteTopic', TopicArn: topic });
  assert.equal(del.status, 200, del.body);
  const refused = client.publish({ text: 'no topic any more' });
  const meanwhile = client.send({ text: 'the queue still works' });
  await assert.rejects(refused, (e) => e instanceof SumuError && e.code === 'server' && e.statusCode === 502);
  assert.equal((await meanwhile).type, 'ack');
  assert.equal(client.state, 'open', 'an error frame does not close the socket');
});
