// The demo page in headless Chromium, as several users at once (one browser
// context each), against a real `sumu-node --dev` and the demo backend:
// presence both ways, BROADCAST / UNICAST / MULTICAST reach exactly their
// targets, a closed page goes OFFLINE for the others, a killed and restarted
// node shows "reconnecting" and recovers, and a hostile user id stays text.
// Screenshots go to node/tests/browser/artifacts/ (gitignored).
//
// The chat needs the demo backend. If the node runs it in-process
// (`/dev/config` says `"demo_backend": true`) nothing else is started;
// otherwise the test runs `sumu-demo-backend --node-url` beside the node
// (binary: $SUMU_DEMO_BACKEND_BIN, else target/release/sumu-demo-backend).
//
// A negative check ("X did not get it") is made exact with a marker: a later
// BROADCAST that X must get. The backend handles messages in order, so once
// the marker is there, the earlier message would have been there too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { launchChromium } from './launch.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const nodeBin = process.env.SUMU_NODE_BIN || join(repo, 'target', 'release', 'sumu-node');
const backendBin = process.env.SUMU_DEMO_BACKEND_BIN || join(repo, 'target', 'release', 'sumu-demo-backend');
const artifacts = join(here, 'artifacts');
mkdirSync(artifacts, { recursive: true });

const HOSTILE = '<img src=x onerror=alert(1)>';
const T = 15000;

let node = null;
let backend = null;
let addr = null;
let base = null;
let browser = null;
const dialogs = [];
const pageErrors = [];

/** Spawns `bin args`, resolves with the first capture of `pattern` on stdout. */
function spawnUntil(bin, args, pattern, what) {
  const child = spawn(bin, args, {
    env: { ...process.env, SUMU_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start`)), T);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited ${code}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = line.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  return { child, ready };
}

async function startNode(listen) {
  const s = spawnUntil(nodeBin, ['--dev', '--listen', listen], /^sumu-node listening on (\S+)/, 'sumu-node');
  node = s.child;
  return s.ready;
}

async function kill(child, signal = 'SIGKILL') {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}

before(async () => {
  addr = await startNode('127.0.0.1:0');
  base = `http://${addr}`;
  // A node that does not serve the page fails every test here: node:test
  // passes a skipped test, so skipping would hide exactly this breakage.
  const page = await fetch(`${base}/app.js`);
  assert.equal(page.status, 200, 'a --dev node must serve the demo page (/app.js)');
  const cfg = await (await fetch(`${base}/dev/config`)).json();
  if (!cfg.demo_backend) {
    const s = spawnUntil(backendBin, ['--node-url', base, '--api-key', 'dev'], /^sumu-demo-backend ready: (.*)/, 'sumu-demo-backend');
    backend = s.child;
    await s.ready;
  }
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  await kill(backend, 'SIGTERM');
  await kill(node, 'SIGTERM');
});

/** A new user in a fresh browser context, signed in and online. */
async function signIn(name, viewport = { width: 1200, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
  await page.goto(`${base}/`);
  await page.fill('#name', name);
  await page.click('#join');
  await page.waitForSelector('#state[data-state="open"]', { timeout: T });
  return { name, context, page };
}

const sel = (user) => `[data-user=${JSON.stringify(user)}]`;
const msgFrom = (user, text) => `#feed .msg.in[data-from=${JSON.stringify(user)}] >> text=${JSON.stringify(text)}`;

async function sees(who, user) {
  await who.page.waitForSelector(`#users li${sel(user)}`, { timeout: T });
}

async function say(who, text, mode, to = []) {
  await who.page.click(`label:has(input[name="mode"][value="${mode}"]) span`);
  for (const u of to) await who.page.check(`#users li${sel(u)} input.pick`);
  await who.page.fill('#text', text);
  await who.page.click('#send');
  await who.page.waitForSelector(`#feed .msg.out.acked >> text=${JSON.stringify(text)}`, { timeout: T });
  for (const u of to) await who.page.uncheck(`#users li${sel(u)} input.pick`);
}

async function gets(who, from, text) {
  await who.page.waitForSelector(msgFrom(from, text), { timeout: T });
}

async function count(who, from, text) {
  return who.page.locator(msgFrom(from, text)).count();
}

async function shot(who, name) {
  await who.page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

let alice;
let bob;
let carol;
let marker = 0;

/** Sends a BROADCAST from `from` and waits until every one of `to` has it. */
async function barrier(from, to) {
  const text = `marker ${++marker}`;
  await say(from, text, 'BROADCAST');
  for (const w of to) await gets(w, from.name, text);
}

test('two users see each other come online', async () => {
  alice = await signIn('alice');
  bob = await signIn('bob');
  await sees(alice, 'bob');
  await sees(bob, 'alice');
  await alice.page.waitForSelector(`#feed .sys${sel('bob')} >> text=bob is online`, { timeout: T });
  assert.equal(await alice.page.textContent('#online-count'), '2');
});

test('BROADCAST reaches the other user and not the sender', async () => {
  await say(alice, 'hello everyone', 'BROADCAST');
  await gets(bob, 'alice', 'hello everyone');
  await barrier(bob, [alice]);
  assert.equal(await count(alice, 'alice', 'hello everyone'), 0, 'the sender got its own broadcast');
});

test('UNICAST echoes only to the sender', async () => {
  await say(bob, 'note to self', 'UNICAST');
  await gets(bob, 'bob', 'note to self');
  await barrier(bob, [alice]);
  assert.equal(await count(alice, 'bob', 'note to self'), 0, 'a unicast leaked to another user');
  await shot(bob, 'desktop-chat');
});

test('MULTICAST reaches only the chosen user', async () => {
  carol = await signIn('carol');
  await sees(alice, 'carol');
  await sees(carol, 'bob');
  await alice.page.click('label:has(input[value="MULTICAST"]) span');
  await shot(alice, 'desktop-multicast-picker');
  await say(alice, 'just for bob', 'MULTICAST', ['bob']);
  await gets(bob, 'alice', 'just for bob');
  await barrier(alice, [bob, carol]);
  assert.equal(await count(carol, 'alice', 'just for bob'), 0, 'carol got a multicast meant for bob');
  assert.equal(await count(alice, 'alice', 'just for bob'), 0, 'the sender was not chosen');
});

test('closing a page makes the others see that user go offline', async () => {
  await carol.context.close();
  for (const w of [alice, bob]) {
    await w.page.waitForSelector(`#feed .sys${sel('carol')} >> text=carol went offline`, { timeout: T });
    await w.page.waitForSelector(`#users li${sel('carol')}`, { state: 'detached', timeout: T });
  }
});

test('a hostile user id is shown as text, never as HTML', async () => {
  const mallory = await signIn(HOSTILE);
  await sees(alice, HOSTILE);
  await say(mallory, '<b>bold?</b><script>alert(2)</script>', 'BROADCAST');
  await gets(alice, HOSTILE, '<b>bold?</b><script>alert(2)</script>');
  const li = alice.page.locator(`#users li${sel(HOSTILE)} .name`);
  assert.equal(await li.textContent(), HOSTILE);
  for (const w of [alice, mallory]) {
    assert.equal(await w.page.locator('#users img, #feed img, #feed b, #feed script, #me img').count(), 0);
  }
  assert.equal(await mallory.page.textContent('#me'), HOSTILE);
  await shot(alice, 'desktop-hostile-name');
  await mallory.context.close();
  await alice.page.waitForSelector(`#users li${sel(HOSTILE)}`, { state: 'detached', timeout: T });
  assert.deepEqual(dialogs, [], 'a script ran');
});

test('the page is readable at phone width', async () => {
  const phone = await signIn('pat', { width: 390, height: 844 });
  await sees(phone, 'alice');
  await say(phone, 'hi from a phone', 'BROADCAST');
  await gets(alice, 'pat', 'hi from a phone');
  await say(alice, 'welcome, pat', 'BROADCAST');
  await gets(phone, 'alice', 'welcome, pat');
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px at phone width`);
  await shot(phone, 'phone-chat');
  await phone.context.close();
  const signin = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const p = await signin.newPage();
  await p.goto(`${base}/`);
  await p.screenshot({ path: join(artifacts, 'phone-signin.png') });
  await signin.close();
});

test('killing and restarting the node shows reconnecting, then recovers by itself', async () => {
  await kill(node, 'SIGKILL');
  for (const w of [alice, bob]) {
    await w.page.waitForSelector('#state[data-state="reconnecting"]', { timeout: T });
    await w.page.waitForSelector('#banner:not([hidden])', { timeout: T });
  }
  await shot(alice, 'desktop-reconnecting');
  await new Promise((r) => setTimeout(r, 500));
  await startNode(addr); // same port
  for (const w of [alice, bob]) {
    await w.page.waitForSelector('#state[data-state="open"]', { timeout: 30000 });
    await w.page.waitForSelector('#banner', { state: 'hidden', timeout: T });
  }
  await sees(alice, 'bob');
  await sees(bob, 'alice');
  // The backend found the node again too: chat works end to end.
  await say(alice, 'back again', 'BROADCAST');
  await gets(bob, 'alice', 'back again');
  await shot(alice, 'desktop-recovered');
  assert.deepEqual(pageErrors, []);
});

test('signing in with a pasted JWT and URL uses the token\'s subject; frames are shown on demand', async () => {
  const { token } = await (await fetch(`${base}/dev/token?sub=${encodeURIComponent('jwt user')}`)).json();
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.click('#advanced summary');
  await page.fill('#jwt', token);
  await page.fill('#url', `ws://${addr}/push`);
  await page.click('#join');
  await page.waitForSelector('#state[data-state="open"]', { timeout: T });
  assert.equal(await page.textContent('#me'), 'jwt user');
  await sees(alice, 'jwt user');
  await page.click('#frames-panel summary');
  await page.waitForFunction(() =>
    [...document.querySelectorAll('#frames li.in')].some((li) => li.textContent.includes('"type":"pong"')),
  );
  await page.screenshot({ path: join(artifacts, 'desktop-frames.png'), fullPage: true });
  await context.close();
});

test('sumu.js in Chromium: a refused token ends in closed/refused, not a loop', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/`);
  const outcome = await page.evaluate(async (url) => {
    const { SumuClient } = await import('/sumu.js');
    const refresh = [];
    const c = new SumuClient({
      url,
      baseDelayMs: 20,
      maxFailedConnects: 3,
      token: (req) => {
        refresh.push(req.refresh);
        return 'bogus';
      },
    });
    const codes = [];
    c.on('state', (e) => e.code && codes.push(e.code));
    const closed = new Promise((resolve) => c.on('state', (e) => e.state === 'closed' && resolve(e.reason)));
    c.connect();
    return { reason: await closed, refresh, codes };
  }, `ws://${addr}/push`);
  assert.deepEqual(outcome, { reason: 'refused', refresh: [false, true, true], codes: [1006, 1006, 1006] });
  await context.close();
});
