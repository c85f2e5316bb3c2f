// A node's drain seen by sockette (the client SUMU's own demo uses) in
// headless Chromium: sockette reconnects after a close code unless it is
// 1000, 1001 or 1005. A drain that closed with 1001 left every sockette
// client disconnected for good; sumu drains with 1012 "service restart"
// (`--drain-close-code`), so the client comes back, here to a node restarted
// on the same port (with the same `--hs256-secret`, so its dev token still
// verifies). The control run drains with 1001 and shows the client staying
// away: the test can tell the two apart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { launchChromium } from './launch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const nodeBin = process.env.SUMU_NODE_BIN || join(repo, 'target', 'release', 'sumu-node');
const SOCKETTE = readFileSync(join(here, 'node_modules', 'sockette', 'dist', 'sockette.min.js'), 'utf8');
const T = 15000;

let browser = null;
const children = new Set();

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  for (const c of children) await stop(c, 'SIGKILL');
});

/** A free loopback port (the node is restarted on the same one). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A `--dev` node on `port` sharing `secret`; resolves once it listens. */
function startNode(port, extra = []) {
  const args = ['--dev', '--listen', `127.0.0.1:${port}`, '--hs256-secret', 'sockette-test-secret', '--drain-secs', '1', ...extra];
  const child = spawn(nodeBin, args, { env: { ...process.env, SUMU_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('sumu-node did not start')), T);
    child.on('exit', (code) => {
      clearTimeout(timer);
      children.delete(child);
      reject(new Error(`sumu-node exited ${code}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith('sumu-node listening on ')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
  });
}

async function stop(child, signal) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
  children.delete(child);
}

/** A page running sockette against `url`, recording its events. It is
 * loaded from the node's own origin (`/healthz`: no CSP), as an app would
 * be; Chromium refuses loopback sockets from an opaque `about:blank`. */
async function socketteClient(origin, url) {
  const page = await browser.newPage();
  await page.goto(`${origin}/healthz`);
  await page.addScriptTag({ content: SOCKETTE });
  await page.evaluate((u) => {
    window.events = [];
    window.ws = new window.sockette(u, {
      timeout: 300,
      maxAttempts: 100,
      onopen: () => window.events.push('open'),
      onclose: (e) => window.events.push(`close:${e.code}`),
      onreconnect: () => window.events.push('reconnect'),
    });
  }, url);
  return page;
}

const events = (page) => page.evaluate(() => window.events.slice());

async function waitFor(page, what, check, ms = T) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ev = await events(page);
    if (check(ev)) return ev;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`${what}; sockette saw ${JSON.stringify(await events(page))}`);
}

/** Drains a node with `code` under a connected sockette client; answers its events after a restart. */
async function drainAndRestart(drainCode) {
  const port = await freePort();
  const extra = drainCode ? ['--drain-close-code', String(drainCode)] : [];
  let node = await startNode(port, extra);
  const { token } = await (await fetch(`http://127.0.0.1:${port}/dev/token?sub=sockette-user`)).json();
  const page = await socketteClient(`http://127.0.0.1:${port}`, `ws://127.0.0.1:${port}/push?authorization=${token}`);
  await waitFor(page, 'sockette never opened', (ev) => ev.includes('open'));
  await stop(node, 'SIGTERM');
  const closed = await waitFor(page, 'no close seen', (ev) => ev.some((e) => e.startsWith('close:')));
  node = await startNode(port, extra);
  return { page, node, closed };
}

test('sockette reconnects after a drain (close 1012) to the restarted node', async () => {
  const { page, node, closed } = await drainAndRestart(null);
  assert.equal(closed.find((e) => e.startsWith('close:')), 'close:1012', 'the drain closes with 1012 by default');
  const ev = await waitFor(page, 'sockette did not come back', (e) => e.filter((x) => x === 'open').length >= 2);
  assert.ok(ev.includes('reconnect'), JSON.stringify(ev));
  await page.close();
  await stop(node, 'SIGTERM');
});

test('control: after a 1001 drain sockette never reconnects', async () => {
  const { page, node, closed } = await drainAndRestart(1001);
  assert.equal(closed.find((e) => e.startsWith('close:')), 'close:1001');
  // The restarted node is up; give sockette more than enough time to come back.
  await new Promise((r) => setTimeout(r, 3000));
  const ev = await events(page);
  assert.equal(ev.filter((x) => x === 'open').length, 1, `sockette reconnected after 1001: ${JSON.stringify(ev)}`);
  assert.ok(!ev.includes('reconnect'), JSON.stringify(ev));
  await page.close();
  await stop(node, 'SIGTERM');
});
