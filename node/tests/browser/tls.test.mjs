// One wss:// run in headless Chromium: a real `sumu-node --dev --dev-tls`
// with its TLS listener on a run-time port serves the demo page over https
// (the dev issuer and /dev/config included); the page builds its socket URL
// from its origin, so it connects with wss://, signs in and gets its own
// UNICAST back from the in-process demo backend. Chromium trusts the
// throwaway dev CA through --ignore-certificate-errors: acceptable in tests
// only. The plain http:// page of the same node keeps using ws://.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { launchChromium } from './launch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const nodeBin = process.env.SUMU_NODE_BIN || join(repo, 'target', 'release', 'sumu-node');
const T = 15000;

let node = null;
let plain = null;
let tls = null;
let browser = null;

/** Starts the node; resolves with its plain and TLS addresses. */
function startNode() {
  node = spawn(
    nodeBin,
    ['--dev', '--dev-tls', '--listen', '127.0.0.1:0', '--tls-listen', '127.0.0.1:0'],
    { env: { ...process.env, SUMU_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('sumu-node did not start')), T);
    node.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`sumu-node exited ${code}`));
    });
    const found = {};
    createInterface({ input: node.stdout }).on('line', (line) => {
      const m = line.match(/^sumu-node listening on (\S+)( \(tls\))?$/);
      if (!m) return;
      found[m[2] ? 'tls' : 'plain'] = m[1];
      if (found.tls && found.plain) {
        clearTimeout(timer);
        resolve(found);
      }
    });
  });
}

before(async () => {
  ({ plain, tls } = await startNode());
  browser = await launchChromium({ extraArgs: ['--ignore-certificate-errors'] });
});

after(async () => {
  if (browser) await browser.close();
  if (node && node.exitCode === null && node.signalCode === null) {
    const exited = new Promise((r) => node.once('exit', r));
    node.kill('SIGTERM');
    await exited;
  }
  // --dev-tls wrote its throwaway CA and certificate here.
  if (node) rmSync(join(tmpdir(), `sumu-dev-tls-${node.pid}`), { recursive: true, force: true });
});

/** Signs `name` in on the page at `base`; answers the page and its socket URLs. */
async function signIn(base, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(`${base}/`);
  await page.fill('#name', name);
  await page.click('#join');
  await page.waitForSelector('#state[data-state="open"]', { timeout: T });
  return { context, page, sockets };
}

test('the demo page over https talks to the node over wss', async () => {
  const base = `https://${tls}`;
  const cfg = await browser.newContext().then(async (c) => {
    const p = await c.newPage();
    const r = await p.goto(`${base}/dev/config`);
    assert.equal(r.status(), 200);
    const body = await r.json();
    await c.close();
    return body;
  });
  assert.equal(cfg.demo_backend, true, 'the dev node runs the demo backend in process');

  const alice = await signIn(base, 'alice');
  assert.ok(alice.sockets.length > 0, 'no WebSocket opened');
  for (const url of alice.sockets) assert.ok(url.startsWith(`wss://${tls}/`), url);

  const text = 'hello over wss';
  await alice.page.click('label:has(input[name="mode"][value="UNICAST"]) span');
  await alice.page.fill('#text', text);
  await alice.page.click('#send');
  await alice.page.waitForSelector(`#feed .msg.out.acked >> text=${JSON.stringify(text)}`, { timeout: T });
  await alice.page.waitForSelector(`#feed .msg.in[data-from="alice"] >> text=${JSON.stringify(text)}`, {
    timeout: T,
  });
  await alice.context.close();
});

test('the plain page of the same node still uses ws://', async () => {
  const bob = await signIn(`http://${plain}`, 'bob');
  assert.ok(bob.sockets.length > 0);
  for (const url of bob.sockets) assert.ok(url.startsWith(`ws://${plain}/`), url);
  await bob.context.close();
});
