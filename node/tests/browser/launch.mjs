// Shared launcher for sumu's browser tests.
//
// Drives Debian's Chromium (/usr/bin/chromium, installed by infra/local/browser)
// with playwright-core; no Playwright-downloaded browser is ever used.
//
//   import { launchBrowser } from './launch.mjs';
//   const browser = await launchBrowser();
//   const page = await browser.newPage();
//   ...
//   await browser.close();   // also removes the temporary user-data-dir
//
// Environment overrides: CHROMIUM_PATH (executable), BROWSER_HEADED=1 (drop --headless,
// needs a display).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// The background-networking flags matter: this machine's network is closed, and
// without them Chromium keeps trying (and failing) to reach Google services.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Launch a fresh Chromium with a brand-new, empty user-data-dir.
 * Returns a playwright BrowserContext-like object: a persistent context, whose
 * `close()` closes the browser and deletes the profile directory.
 * `newPage()`, `pages()`, `route()`, etc. work as on any BrowserContext.
 *
 * @param {object} [opts]
 * @param {string[]} [opts.extraArgs]  more Chromium switches
 * @param {number}   [opts.timeoutMs]  launch timeout (default 30000)
 * @param {object}   [opts.contextOptions] extra options for launchPersistentContext
 */
export async function launchBrowser(opts = {}) {
  const { extraArgs = [], timeoutMs = 30000, contextOptions = {} } = opts;
  const userDataDir = mkdtempSync(join(tmpdir(), 'sumu-chromium-'));
  const headed = process.env.BROWSER_HEADED === '1';
  const args = CHROMIUM_ARGS.filter((a) => !(headed && a === '--headless')).concat(extraArgs);
  let context;
  try {
    // launchPersistentContext is how playwright takes a user-data-dir; Playwright
    // adds its own --headless unless headless:false, so we pass headless:false and
    // control the switch ourselves through `args`.
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: false,
      args,
      timeout: timeoutMs,
      ...contextOptions,
    });
  } catch (err) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw err;
  }
  const close = context.close.bind(context);
  context.close = async (...a) => {
    try {
      await close(...a);
    } finally {
      rmSync(userDataDir, { recursive: true, force: true });
    }
  };
  context.userDataDir = userDataDir;
  return context;
}

/**
 * Launch Chromium as a playwright Browser, for tests that need several
 * isolated BrowserContexts (one per simulated user). Each context gets its own
 * storage; `close()` ends the process.
 *
 * @param {object} [opts]
 * @param {string[]} [opts.extraArgs]  more Chromium switches
 * @param {number}   [opts.timeoutMs]  launch timeout (default 30000)
 */
export async function launchChromium(opts = {}) {
  const { extraArgs = [], timeoutMs = 30000 } = opts;
  const headed = process.env.BROWSER_HEADED === '1';
  const args = CHROMIUM_ARGS.filter((a) => !(headed && a === '--headless')).concat(extraArgs);
  // As above: headless is controlled through `args`, not playwright's switch.
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: false, args, timeout: timeoutMs });
}
