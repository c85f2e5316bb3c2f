// sumu.js against a scripted WebSocket and a fake clock: the exact backoff
// delays, when attempts happen, when the client gives up, keepalive and
// dead-connection detection, and how publish/send promises settle. The same
// behaviours against a real sumu-node are in sumu.node.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SumuClient, SumuError, backoffDelay } from '../../static/sumu.js';
import { FakeClock } from './helpers.mjs';

/** A WebSocket the test drives by hand; every instance is recorded. */
function scriptedSockets() {
  const made = [];
  class ScriptedSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      made.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // test side
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    receive(obj) {
      this.onmessage?.({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) });
    }
    drop(code) {
      this.readyState = 3;
      this.onclose?.({ code });
    }
  }
  return { made, ScriptedSocket };
}

const flush = () => new Promise((r) => setImmediate(r));

function client(extra = {}) {
  const clock = new FakeClock();
  const { made, ScriptedSocket } = scriptedSockets();
  const states = [];
  const tokenCalls = [];
  const c = new SumuClient({
    url: 'ws://sumu.test/push',
    token: async (req) => {
      tokenCalls.push(req);
      return `tok${tokenCalls.length}`;
    },
    clock: clock.api,
    random: () => 0.5,
    WebSocket: ScriptedSocket,
    ...extra,
  });
  c.on('state', (e) => states.push(e));
  return { c, clock, made, states, tokenCalls };
}

test('backoffDelay is full jitter under an exponential, capped ceiling', () => {
  const o = { baseDelayMs: 500, maxDelayMs: 30000 };
  assert.equal(backoffDelay(0, o, () => 0.999999), 499);
  assert.equal(backoffDelay(3, o, () => 0.5), 2000);
  assert.equal(backoffDelay(6, o, () => 0.5), 15000);
  assert.equal(backoffDelay(7, o, () => 0.999999), 29999);
  assert.equal(backoffDelay(500, o, () => 0.5), 15000);
  assert.equal(backoffDelay(4, o, () => 0), 0);
});

test('the token rides in the query string and the provider is asked before each attempt', async () => {
  const { c, made, tokenCalls } = client();
  c.connect();
  await flush();
  assert.equal(made.length, 1);
  assert.equal(made[0].url, 'ws://sumu.test/push?authorization=tok1');
  assert.deepEqual(tokenCalls, [{ refresh: false, attempt: 0 }]);
  c.close();
});

test('failed connects back off exponentially with jitter, refresh the token, then give up', async () => {
  const { c, clock, made, states, tokenCalls } = client({ maxFailedConnects: 4 });
  c.connect();
  await flush();
  const expected = [250, 500, 1000]; // 0.5 * 500 * 2^n
  for (let i = 0; i < expected.length; i++) {
    made[i].drop(1006); // refused before open: what a browser shows for an HTTP 401
    const s = states.at(-1);
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.reason, 'failed_connect');
    assert.equal(s.delayMs, expected[i]);
    assert.deepEqual(clock.pending(), [expected[i]]);
    clock.advance(expected[i] - 1);
    await flush();
    assert.equal(made.length, i + 1, 'no attempt before the delay is over');
    clock.advance(1);
    await flush();
    assert.equal(made.length, i + 2, 'an attempt when the delay is over');
    assert.equal(tokenCalls.at(-1).refresh, true, 'a fresh token after a failed connect');
  }
  made[3].drop(1006);
  assert.equal(c.state, 'closed');
  assert.equal(states.at(-1).reason, 'refused');
  assert.equal(c.closeReason, 'refused');
  assert.deepEqual(clock.pending(), [], 'no timer left: no loop');
  clock.advance(3_600_000);
  await flush();
  assert.equal(made.length, 4);
});

test('an error event without a close event (Node 20 undici) is a failed connect too', async () => {
  const { c, made, states } = client();
  c.connect();
  await flush();
  made[0].onerror?.({});
  assert.equal(c.state, 'reconnecting');
  assert.equal(states.at(-1).reason, 'failed_connect');
  made[0].drop(1006); // a late close of the same socket changes nothing
  assert.equal(states.filter((s) => s.state === 'reconnecting').length, 1);
  c.close();
});

test('the backoff grows across quick drops and resets after a stable connection', async () => {
  const { c, clock, made, states } = client({ stableAfterMs: 10000 });
  c.connect();
  await flush();
  made[0].open();
  made[0].drop(1012); // quick drop (service restart)
  assert.equal(states.at(-1).delayMs, 250);
  assert.equal(states.at(-1).code, 1012);
  clock.advance(250);
  await flush();
  made[1].open();
  made[1].drop(1001);
  assert.equal(states.at(-1).delayMs, 500, 'second quick drop: attempt 1');
  clock.advance(500);
  await flush();
  made[2].open();
  clock.advance(10000); // stable
  made[2].receive({ type: 'pong', statusCode: 200, connectionId: 'x' });
  made[2].drop(1006);
  assert.equal(states.at(-1).delayMs, 250, 'reset after a stable connection');
  c.close();
});

test('reconnects on 1001, 1006, 1011, 1012, 1013 and other closes, never after 1008', async () => {
  for (const code of [1000, 1001, 1006, 1011, 1012, 1013, 4000]) {
    const { c, made } = client();
    c.connect();
    await flush();
    made[0].open();
    made[0].drop(code);
    assert.equal(c.state, 'reconnecting', `close ${code}`);
    c.close();
  }
  const { c, clock, made, states } = client();
  c.connect();
  await flush();
  made[0].open();
  made[0].drop(1008);
  assert.equal(c.state, 'closed');
  assert.equal(states.at(-1).reason, 'policy_violation');
  assert.equal(states.at(-1).code, 1008);
  clock.advance(3_600_000);
  await flush();
  assert.equal(made.length, 1);
});

test('keepalive pings below the idle timeout; a missing pong means a dead connection', async () => {
  const { c, clock, made, states } = client({ pingIntervalMs: 20000, pongTimeoutMs: 5000 });
  const rtts = [];
  c.on('pong', (e) => rtts.push(e.rttMs));
  c.connect();
  await flush();
  const ws = made[0];
  ws.open();
  assert.deepEqual(ws.sent, [{ action: 'ping' }], 'a ping right after open');
  clock.advance(30);
  ws.receive({ type: 'pong', statusCode: 200, connectionId: 'conn-1' });
  assert.deepEqual(rtts, [30]);
  assert.equal(c.connectionId, 'conn-1');
  clock.advance(19970); // the period runs from the open
  assert.equal(ws.sent.length, 2);
  clock.advance(1000);
  ws.receive({ type: 'pong', statusCode: 200, connectionId: 'conn-1' });
  assert.deepEqual(rtts, [30, 1000]);
  clock.advance(19000); // third ping, never answered
  assert.equal(ws.sent.length, 3);
  assert.equal(c.state, 'open');
  clock.advance(4999);
  assert.equal(c.state, 'open');
  clock.advance(1);
  assert.equal(c.state, 'reconnecting');
  assert.equal(states.at(-1).reason, 'no_pong');
  assert.equal(ws.closedWith.code, 4000, 'the dead socket is closed by the client');
  c.close();
});

test('publish and send settle by ack, by error frame with the same id, by timeout, or on loss', async () => {
  const { c, clock, made } = client({ ackTimeoutMs: 3000 });
  c.connect();
  await flush();
  const ws = made[0];
  ws.open();
  const p1 = c.publish({ text: 'a' });
  const p2 = c.send({ text: 'b' });
  const p3 = c.publish({ text: 'c' });
  const [f1, f2, f3] = ws.sent.slice(1);
  assert.equal(f1.action, 'publish');
  assert.deepEqual(f1.message, { text: 'a' });
  assert.equal(f2.action, 'send');
  assert.notEqual(f1.id, f2.id);
  ws.receive({ type: 'ack', statusCode: 200, id: f2.id });
  ws.receive({ type: 'error', statusCode: 502, message: 'message not accepted, try again', id: f1.id });
  assert.deepEqual(await p2, { type: 'ack', statusCode: 200, id: f2.id });
  await assert.rejects(p1, (e) => e instanceof SumuError && e.code === 'server' && e.statusCode === 502);
  clock.advance(3000);
  await assert.rejects(p3, (e) => e.code === 'ack_timeout');
  assert.equal(f3.id.length > 0, true);

  const p4 = c.send({ text: 'd' });
  ws.drop(1006);
  await assert.rejects(p4, (e) => e.code === 'connection_lost');
  await assert.rejects(c.publish({}), (e) => e.code === 'not_open');
  c.close();
});

test('data frames, presence and id-less error frames are events; node frames are not data', async () => {
  const { c, made } = client();
  const data = [];
  const presence = [];
  const errors = [];
  c.on('data', (e) => data.push(e.data));
  c.on('presence', (e) => presence.push(e));
  c.on('error', (e) => errors.push(e));
  c.connect();
  await flush();
  const ws = made[0];
  ws.open();
  ws.receive({ type: 'pong', statusCode: 200, connectionId: 'x' });
  ws.receive({ type: 'message', message: { text: 'hi' } });
  ws.receive({ type: 'presence', message: { user_id: 'bob', status: 'ONLINE', timestamp: 5 } });
  ws.receive({ type: 'error', statusCode: 429, message: 'rate limit exceeded' });
  ws.receive('not json');
  assert.deepEqual(data, [
    { type: 'message', message: { text: 'hi' } },
    { type: 'presence', message: { user_id: 'bob', status: 'ONLINE', timestamp: 5 } },
    undefined,
  ]);
  assert.deepEqual(presence, [{ user_id: 'bob', status: 'ONLINE', timestamp: 5 }]);
  assert.deepEqual(errors, [{ statusCode: 429, message: 'rate limit exceeded' }]);
  c.close();
});

test('a provider without a token closes; a failing provider is a failed connect', async () => {
  let n = 0;
  const { c, clock, made, states } = client({
    token: async () => {
      n++;
      if (n === 1) throw new Error('offline');
      return '';
    },
  });
  c.connect();
  await flush();
  assert.equal(c.state, 'reconnecting');
  assert.equal(states.at(-1).reason, 'token_provider_failed');
  clock.advance(states.at(-1).delayMs);
  await flush();
  assert.equal(c.state, 'closed');
  assert.equal(states.at(-1).reason, 'no_token');
  assert.equal(made.length, 0);
});

test('connect() during the backoff wait tries at once; close() stops everything', async () => {
  const { c, clock, made } = client();
  c.connect();
  await flush();
  made[0].open();
  made[0].drop(1006);
  assert.equal(c.state, 'reconnecting');
  c.connect();
  await flush();
  assert.equal(made.length, 2);
  made[1].open();
  assert.equal(c.state, 'open');
  c.close();
  assert.equal(c.state, 'closed');
  assert.equal(made[1].closedWith.code, 4000);
  assert.deepEqual(clock.pending(), []);
});

test('an attempt that never opens times out as a failed connect', async () => {
  const { c, clock, made, states } = client({ connectTimeoutMs: 5000 });
  c.connect();
  await flush();
  clock.advance(4999);
  assert.equal(c.state, 'connecting');
  clock.advance(1);
  assert.equal(c.state, 'reconnecting');
  assert.equal(states.at(-1).reason, 'connect_timeout');
  assert.equal(made[0].closedWith.code, 4000, 'the hanging socket is abandoned');
  c.close();
});

test('with recover: recover=1, then since= the newest cursor; envelopes are data; outcomes are events', async () => {
  const { c, made } = client({ recover: true, cursor: 'C0' });
  const data = [];
  const outcomes = [];
  c.on('data', (e) => data.push(e));
  c.on('recovered', (e) => outcomes.push(['recovered', e]));
  c.on('recovery_failed', (e) => outcomes.push(['recovery_failed', e]));
  c.connect();
  await flush();
  assert.equal(made[0].url, 'ws://sumu.test/push?authorization=tok1&recover=1&since=C0');
  const ws = made[0];
  ws.open();
  assert.equal(c.resuming, true);
  ws.receive({ type: 'notification', cursor: 'C1', data: { type: 'message', message: 1 } });
  ws.receive({ type: 'recovered', cursor: 'C2', replayed: 1 });
  ws.receive({ type: 'notification', cursor: 'C3', data: { type: 'presence', message: { user_id: 'b', status: 'ONLINE', timestamp: 1 } } });
  assert.equal(c.resuming, false);
  assert.deepEqual(
    data.map((e) => [e.data?.type, e.replayed, e.cursor]),
    [['message', true, 'C1'], ['presence', false, 'C3']],
  );
  assert.deepEqual(outcomes, [['recovered', { replayed: 1, cursor: 'C2' }]]);
  assert.equal(c.cursor, 'C3');
  // The next socket resumes from the newest cursor; a failure updates it.
  ws.drop(1013);
  await flush();
  c.connect();
  await flush();
  assert.equal(made[1].url, 'ws://sumu.test/push?authorization=tok2&recover=1&since=C3');
  made[1].open();
  made[1].receive({ type: 'recovery_failed', code: 'position_expired', cursor: 'C9' });
  assert.deepEqual(outcomes[1], ['recovery_failed', { code: 'position_expired', cursor: 'C9' }]);
  assert.equal(c.cursor, 'C9');
  c.close();
});

test('without recover, no recover parameter, and envelope-shaped data is plain data', async () => {
  const { c, made } = client();
  const data = [];
  let recovered = 0;
  c.on('data', (e) => data.push(e.data));
  c.on('recovered', () => recovered++);
  c.connect();
  await flush();
  assert.equal(made[0].url, 'ws://sumu.test/push?authorization=tok1');
  made[0].open();
  const backendData = { type: 'recovered', cursor: 'x', replayed: 3 };
  made[0].receive(backendData);
  assert.deepEqual(data, [backendData]);
  assert.equal(recovered, 0);
  assert.equal(c.cursor, null);
  c.close();
});
