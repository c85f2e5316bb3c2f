// sumu.js against a real `sumu-node --dev` process on a run-time port
// (binary: $SUMU_NODE_BIN, else target/release/sumu-node). Needs a global
// WebSocket: run with `node --experimental-websocket --test node/tests/js/`
// (Node 20), as infra/local/test-all does.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SumuClient, SumuError } from '../../static/sumu.js';
import { DevNode, FakeClock, eventually, nextEvent, repo } from './helpers.mjs';

assert.equal(typeof WebSocket, 'function', 'run node with --experimental-websocket');

const nodes = [];
const clients = [];
after(async () => {
  for (const c of clients) c.close();
  for (const n of nodes) await n.stop();
});

async function devNode() {
  const n = new DevNode();
  nodes.push(n);
  return n.start();
}

function track(c) {
  clients.push(c);
  const states = [];
  c.on('state', (e) => states.push(e));
  return states;
}

async function metric(node, line) {
  const text = await (await fetch(`${node.http}/metrics`)).text();
  const row = text.split('\n').find((l) => l.startsWith(line + ' '));
  return row ? Number(row.split(' ').at(-1)) : 0;
}

test('publish and send are acked by id; pings measure the round trip; data arrives', async () => {
  const node = await devNode();
  const c = new SumuClient({ url: node.ws, token: () => node.token('alice') });
  const states = track(c);
  const firstPong = nextEvent(c, 'pong');
  c.connect();
  await nextEvent(c, 'open');
  const pong = await firstPong;
  assert.match(pong.connectionId, /^[0-9a-f]{32}$/);
  assert.ok(pong.rttMs >= 0 && pong.rttMs < 1000);
  assert.deepEqual(states.map((s) => s.state), ['connecting', 'open']);

  const ack1 = await c.publish({ text: 'one' });
  const ack2 = await c.send({ text: 'two' });
  assert.equal(ack1.type, 'ack');
  assert.equal(ack1.statusCode, 200);
  assert.notEqual(ack1.id, ack2.id);
  assert.equal(typeof (await c.ping()), 'number');

  const got = nextEvent(c, 'data');
  const r = await node.notify({ users: ['alice'], data: { type: 'news', message: { n: 1 } } });
  assert.equal(r.status, 202);
  const d = await got;
  assert.deepEqual(d.data, { type: 'news', message: { n: 1 } });
  assert.equal(d.raw, '{"type":"news","message":{"n":1}}');

  // An id-less error frame (bad JSON from the server's view) is an 'error' event.
  c.close();
  assert.equal(c.state, 'closed');
  await assert.rejects(c.publish({}), (e) => e instanceof SumuError && e.code === 'not_open');
});

test('a refused token is refreshed through the provider, and the client connects', async () => {
  const node = await devNode();
  const calls = [];
  const c = new SumuClient({
    url: node.ws,
    baseDelayMs: 50,
    token: async ({ refresh }) => {
      calls.push(refresh);
      return refresh ? node.token('refreshed') : 'expired.or.bogus';
    },
  });
  const states = track(c);
  c.connect();
  await nextEvent(c, 'open');
  assert.deepEqual(calls, [false, true]);
  assert.deepEqual(
    states.map((s) => `${s.state}${s.reason ? ':' + s.reason : ''}`),
    ['connecting', 'reconnecting:failed_connect', 'open'],
  );
  assert.equal(states[1].code, 1006, 'a refused upgrade looks like 1006, as in browsers');
  assert.equal(await metric(node, 'sumu_auth_failures_total{reason="malformed_token"}'), 1);
  c.close();
});

test('a token the node keeps refusing ends in closed/refused after maxFailedConnects, no loop', async () => {
  const node = await devNode();
  let calls = 0;
  const c = new SumuClient({
    url: node.ws,
    baseDelayMs: 20,
    maxFailedConnects: 3,
    token: () => {
      calls++;
      return 'not-a-token';
    },
  });
  const states = track(c);
  c.connect();
  const closed = await nextEvent(c, 'state', (e) => e.state === 'closed');
  assert.equal(closed.reason, 'refused');
  assert.equal(calls, 3);
  assert.equal(await metric(node, 'sumu_auth_failures_total{reason="malformed_token"}'), 3);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(calls, 3, 'no attempt after giving up');
  assert.equal(states.at(-1).state, 'closed');
});

test('the node killed and restarted on the same port: reconnecting, then open with a new token', async () => {
  const node = await devNode();
  const calls = [];
  let cached = null;
  const c = new SumuClient({
    url: node.ws,
    baseDelayMs: 100,
    maxDelayMs: 400,
    token: async ({ refresh }) => {
      calls.push(refresh);
      if (!cached || refresh) cached = await node.token('phoenix');
      return cached;
    },
  });
  const states = track(c);
  c.connect();
  await nextEvent(c, 'pong');
  const firstId = c.connectionId;

  const lost = nextEvent(c, 'state', (e) => e.state === 'reconnecting');
  await node.stop('SIGKILL');
  const r = await lost;
  assert.equal(r.reason, 'closed_by_server');
  assert.equal(r.code, 1006);
  await new Promise((res) => setTimeout(res, 300)); // a few attempts fail while it is down
  await node.start(); // same address
  const back = await nextEvent(c, 'pong', () => true, 15000);
  assert.notEqual(back.connectionId, firstId);
  assert.equal(c.state, 'open');
  // The restarted node has a new dev key: the cached token was refused, and
  // the provider was asked for a fresh one.
  assert.ok(calls.includes(true), `provider calls: ${calls}`);
  assert.equal((await c.publish({ text: 'after restart' })).type, 'ack');
  assert.ok(states.some((s) => s.state === 'reconnecting' && s.reason === 'failed_connect'));
  c.close();
});

test('a draining node closes with a restart code and the client reconnects elsewhere', async () => {
  const node = await devNode();
  const c = new SumuClient({ url: node.ws, baseDelayMs: 100, token: () => node.token('drained') });
  track(c);
  c.connect();
  await nextEvent(c, 'open');
  const lost = nextEvent(c, 'state', (e) => e.state === 'reconnecting');
  const stopping = node.stop('SIGTERM');
  const r = await lost;
  assert.ok([1001, 1012].includes(r.code), `close code ${r.code}`);
  await stopping;
  await node.start();
  await nextEvent(c, 'open', () => true, 15000);
  c.close();
});

test('backoff timing from a fake clock: attempts happen exactly when the delays end', async () => {
  const node = await devNode();
  const clock = new FakeClock();
  const rolls = [0.9, 0.5, 0.25, 0.75];
  let roll = 0;
  const c = new SumuClient({
    url: node.ws,
    clock: clock.api,
    random: () => rolls[roll++ % rolls.length],
    baseDelayMs: 1000,
    maxDelayMs: 3000,
    token: () => node.token('timed'),
  });
  const states = track(c);
  c.connect();
  await nextEvent(c, 'open');
  let prev = states.length;
  await node.stop('SIGKILL');
  const expected = [900, 1000, 750, 2250]; // rolls x min(3000, 1000 * 2^n)
  for (let i = 0; i < expected.length; i++) {
    await eventually(() => states.length > prev, 5000, `reconnecting #${i}`);
    prev = states.length;
    const s = states.at(-1);
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.delayMs, expected[i], `delay #${i}`);
    assert.equal(s.attempt, i);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(states.length, prev, 'nothing happens while the fake clock stands still');
    if (i === expected.length - 1) await node.start();
    clock.advance(s.delayMs);
  }
  await nextEvent(c, 'open', () => true, 10000);
  assert.equal(c.state, 'open');
  c.close();
});

// A node that does not serve /sumu.js fails this test: it never skips (a skip
// passes under node:test, exactly when the feature is broken).
test('every node serves /sumu.js byte-for-byte; the demo page only with --dev', async () => {
  const plain = new DevNode(['--hs256-secret', 'not-a-dev-node'], { dev: false });
  nodes.push(plain);
  await plain.start();
  const source = readFileSync(`${repo}/node/static/sumu.js`, 'utf8');
  for (const n of [plain, await devNode()]) {
    const r = await fetch(`${n.http}/sumu.js`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/javascript/);
    assert.equal(await r.text(), source);
  }
  assert.equal((await fetch(`${plain.http}/`)).status, 404);
  assert.equal((await fetch(`${plain.http}/app.js`)).status, 404);
  assert.equal((await fetch(`${plain.http}/dev/token?sub=x`)).status, 404);
});

test('recover: what was sent while the socket was away is replayed once, before recovered, then live', async () => {
  const node = await devNode();
  let gate = null; // while set, the token provider waits: the client stays away
  const c = new SumuClient({
    url: node.ws,
    recover: true,
    baseDelayMs: 50,
    maxDelayMs: 100,
    token: async () => {
      if (gate) await gate.promise;
      return node.token('rita');
    },
  });
  track(c);
  const seen = [];
  c.on('data', (e) => seen.push([e.data, e.replayed]));
  c.connect();
  const first = await nextEvent(c, 'recovered');
  assert.equal(first.replayed, 0);
  await node.notify({ users: ['rita'], data: 'live-1' });
  await eventually(() => seen.length === 1, 5000, 'the first live notification');
  // The network drops; what is sent meanwhile must come back.
  let release;
  gate = { promise: new Promise((r) => (release = r)) };
  const away = nextEvent(c, 'state', (e) => e.state === 'reconnecting');
  c._ws.close();
  await away;
  await node.notify({ users: ['rita'], data: 'missed-1' });
  await node.notify({ data: 'missed-2' });
  await node.notify({ exclude_users: ['rita'], data: 'not-for-rita' });
  const back = nextEvent(c, 'recovered', () => true, 15000);
  gate = null;
  release();
  const r = await back;
  assert.equal(r.replayed, 2);
  await node.notify({ users: ['rita'], data: 'live-2' });
  await eventually(() => seen.length === 4, 5000, 'the live notification after the resume');
  assert.deepEqual(seen, [
    ['live-1', false],
    ['missed-1', true],
    ['missed-2', true],
    ['live-2', false],
  ]);
  c.close();
});

test('recover: a restarted memory node cannot prove the past: recovery_failed, then live', async () => {
  const node = await devNode();
  const c = new SumuClient({ url: node.ws, recover: true, baseDelayMs: 100, token: () => node.token('max') });
  track(c);
  c.connect();
  await nextEvent(c, 'recovered');
  const failed = nextEvent(c, 'recovery_failed', () => true, 20000);
  await node.stop('SIGTERM');
  await node.start();
  assert.equal((await failed).code, 'position_expired');
  const got = nextEvent(c, 'data');
  await node.notify({ users: ['max'], data: 'after' });
  assert.equal((await got).data, 'after');
  c.close();
});
