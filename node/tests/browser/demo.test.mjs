// The --dev demo page in a real headless Chromium: get a dev token, connect
// over WebSocket, ping, publish, and receive a notification sent through the
// page's notify form and one sent by a backend over HTTP.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { launchBrowser } from './launch.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const binary = process.env.SUMU_NODE_BIN || join(repo, 'target', 'release', 'sumu-node');

let node;
let base;
let browser;

before(async () => {
  node = spawn(binary, ['--dev', '--listen', '127.0.0.1:0'], {
    env: { ...process.env, SUMU_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('node did not start')), 15000);
    node.on('exit', (code) => reject(new Error(`node exited ${code}`)));
    createInterface({ input: node.stdout }).on('line', (line) => {
      const m = line.match(/^sumu-node listening on (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(`http://${m[1]}`);
      }
    });
  });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (node) node.kill('SIGTERM');
});

test('demo page connects, pings, publishes and receives notifications', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(base + '/');
  await page.fill('#user', 'browser-user');
  await page.click('#connect');
  await page.waitForSelector('#status[data-state="open"]', { timeout: 10000 });

  await page.click('#ping');
  await page.waitForFunction(() => document.querySelector('#log').textContent.includes('"type":"pong"'));

  await page.click('#publish');
  await page.waitForFunction(() => document.querySelector('#log').textContent.includes('"type":"ack"'));

  // The page's own notify form (broadcast).
  await page.fill('#data', '{"type":"chat","message":{"text":"from the form"}}');
  await page.click('#notify');
  await page.waitForFunction(() => document.querySelector('#log').textContent.includes('from the form'));

  // A backend unicast over the HTTP API reaches the browser byte-for-byte.
  const data = '{"type":"news", "message":{"n":1}}';
  const r = await fetch(base + '/api/notify', {
    method: 'POST',
    headers: { authorization: 'Bearer dev', 'content-type': 'application/json' },
    body: `{"users":["browser-user"],"data":${data}}`,
  });
  assert.equal(r.status, 202);
  assert.equal((await r.json()).deliveries, 1);
  await page.waitForFunction((d) => document.querySelector('#log').textContent.includes(d), data);

  await page.click('#disconnect');
  await page.waitForSelector('#status[data-state="closed"]');
  assert.deepEqual(errors, []);
});

test('an upgrade with a bad token never opens a socket', async () => {
  const page = await browser.newPage();
  await page.goto(base + '/');
  const outcome = await page.evaluate(
    (url) =>
      new Promise((resolve) => {
        const ws = new WebSocket(url);
        ws.onopen = () => resolve('open');
        ws.onclose = (e) => resolve('closed ' + e.code);
      }),
    base.replace('http', 'ws') + '/push?authorization=bogus',
  );
  assert.equal(outcome, 'closed 1006');
});
