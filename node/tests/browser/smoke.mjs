// Minimal check that playwright-core can drive /usr/bin/chromium here.
// Run: infra/local/browser smoke   (or: cd node/tests/browser && node smoke.mjs)
import { launchBrowser } from './launch.mjs';

const browser = await launchBrowser();
try {
  const page = await browser.newPage();
  await page.goto('data:text/html,<title>sumu-smoke</title><p>ok</p>');
  const title = await page.title();
  console.log(title);
  if (title !== 'sumu-smoke') {
    console.error(`unexpected title: ${JSON.stringify(title)}`);
    process.exitCode = 1;
  }
} finally {
  await browser.close();
}
