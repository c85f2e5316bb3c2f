// The demo page in headless Chromium recovers what was sent while its node
// was down: a 2-node fleet (infra/local/cluster: the emulator, aws-engine
// nodes with --recovery-window-secs, HAProxy as the balancer), the page
// served and connected through the balancer; the node holding the page's
// socket is SIGKILLed, three messages are sent to the user meanwhile (a
// unicast, a multicast, a broadcast, routed by the surviving node), and the
// page, reconnected through the balancer to the other node, shows them once,
// marked "recovered", and says "3 missed messages recovered".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { launchChromium } from './launch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const script = join(repo, 'infra', 'local', 'cluster');
const artifacts = join(here, 'artifacts');
mkdirSync(artifacts, { recursive: true });
const T = 30000;

const dir = mkdtempSync(join(tmpdir(), 'sumu-browser-cluster-'));
let vars = null;
let browser = null;

/** Runs `infra/local/cluster ARGS` on this test's own state directory. */
function cluster(...args) {
  const r = spawnSync(script, args, {
    env: { ...process.env, SUMU_CLUSTER_DIR: dir, SUMU_LOG: 'warn' },
    encoding: 'utf8',
    timeout: 240000,
  });
  if (r.status !== 0) throw new Error(`cluster ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

before(async () => {
  const out = cluster('up', '--nodes', '2', '--', '--recovery-window-secs', '120', '--presence-source', 'none');
  vars = Object.fromEntries(
    out
      .split('\n')
      .map((l) => l.match(/^([A-Z0-9_]+)=(.*)$/))
      .filter(Boolean)
      .map((m) => [m[1], m[2]]),
  );
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  cluster('down');
});

async function usersOf(url) {
  const r = await fetch(`${url}/api/users`, { headers: { authorization: 'Bearer dev' } });
  return r.ok ? (await r.json()).users : [];
}

async function notify(url, request) {
  const r = await fetch(`${url}/api/notify`, {
    method: 'POST',
    headers: { authorization: 'Bearer dev', 'content-type': 'application/json' },
    body: JSON.stringify(request),
  });
  assert.equal(r.status, 202, await r.text());
}

const message = (text) => ({ type: 'message', message: { text, user_id: 'bob', timestamp: Date.now() } });

test('the demo page recovers what was sent while its node was down', async () => {
  const nodes = vars.SUMU_CLUSTER_NODES.split(',');
  const urls = vars.SUMU_CLUSTER_NODE_URLS.split(',');
  const page = await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
  await page.goto(`${vars.SUMU_URL}/`);
  await page.fill('#name', 'rosa');
  await page.click('#join');
  await page.waitForSelector('#state[data-state="open"]', { timeout: T });
  // A live message first: the page holds a cursor past it.
  await notify(urls[0], { users: ['rosa'], data: message('before') });
  await page.waitForSelector('#feed .msg.in >> text="before"', { timeout: T });
  let holder = -1;
  for (let i = 0; i < urls.length; i++) if ((await usersOf(urls[i])).includes('rosa')) holder = i;
  assert.ok(holder >= 0, 'no node holds the page');
  const other = urls[1 - holder];
  // The page stays away until the messages are sent: its first reconnect
  // (through the balancer, to the other node) may come within milliseconds,
  // and what it would then get is live, not missed.
  await page.context().setOffline(true);
  cluster('kill', nodes[holder]);
  await page.waitForSelector('#state[data-state="reconnecting"]', { timeout: T });
  await notify(other, { users: ['rosa'], data: message('missed unicast') });
  await notify(other, { users: ['rosa', 'sam'], data: message('missed multicast') });
  await notify(other, { exclude_users: ['sam'], data: message('missed broadcast') });
  await notify(other, { exclude_users: ['rosa'], data: message('not for rosa') });
  await page.context().setOffline(false);
  await page.waitForSelector('#feed .sys.recovered >> text="3 missed messages recovered"', { timeout: 60000 });
  await page.screenshot({ path: join(artifacts, 'recovered.png'), fullPage: true });
  for (const text of ['missed unicast', 'missed multicast', 'missed broadcast']) {
    const entries = page.locator(`#feed .msg.in.replayed >> text=${JSON.stringify(text)}`);
    assert.equal(await entries.count(), 1, `${text}: once, marked recovered`);
  }
  assert.equal(await page.locator('#feed .msg.in >> text="not for rosa"').count(), 0);
  assert.equal(await page.locator('#feed .msg.in >> text="before"').count(), 1, 'no replay of what it had');
  // Live again on the other node.
  await notify(other, { users: ['rosa'], data: message('after') });
  await page.waitForSelector('#feed .msg.in >> text="after"', { timeout: T });
  assert.equal(await page.locator('#feed .msg.in.replayed >> text="after"').count(), 0);
});
