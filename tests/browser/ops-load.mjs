// Measures the operations page under a running system's load, in headless
// chromium: how smoothly it draws (animation frames per second and the longest
// gap between two) and how many WebSocket frames per second it takes, over 10 s.
//
//   node tests/browser/ops-load.mjs http://127.0.0.1:8080 "$ADMIN_TOKEN"
//
// Start the load first, e.g. `logi up --simulate --simulate-drivers 5000`.
// Environment, as for ops.mjs: LOGI_PLAYWRIGHT_CORE (default: what
// .ci/tools/chromium installs) and LOGI_CHROMIUM (default /usr/bin/chromium).
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const [base, token] = process.argv.slice(2);
if (!base || !token) {
  process.stderr.write('usage: node tests/browser/ops-load.mjs <edge base URL> <admin token>\n');
  process.exit(2);
}
const core = process.env.LOGI_PLAYWRIGHT_CORE
  || resolve('target/tools/browser/node_modules/playwright-core');
const { chromium } = createRequire(join(core, 'package.json'))('playwright-core');
const browser = await chromium.launch({
  executablePath: process.env.LOGI_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
const page = await (await browser.newContext({ viewport: { width: 1440, height: 900 } })).newPage();
let frames = 0;
page.on('websocket', (ws) => ws.on('framereceived', () => { frames += 1; }));
await page.goto(`${base}/ops/#token=${encodeURIComponent(token)}`);
await page.waitForFunction(() => window.opsState().connection === 'live', null, { timeout: 15_000 });
await page.waitForTimeout(3_000);
const before = frames;
const drawn = await page.evaluate(() => new Promise((done) => {
  let count = 0;
  let worst = 0;
  const start = performance.now();
  let last = start;
  const tick = (now) => {
    count += 1;
    worst = Math.max(worst, now - last);
    last = now;
    if (now - start < 10_000) requestAnimationFrame(tick);
    else done({ seconds: (now - start) / 1000, count, worst });
  };
  requestAnimationFrame(tick);
}));
const state = await page.evaluate(() => window.opsState());
console.log(JSON.stringify({
  drivers_shown: Object.keys(state.drivers).length,
  connection: state.connection,
  animation_frames_per_s: +(drawn.count / drawn.seconds).toFixed(1),
  longest_frame_gap_ms: +drawn.worst.toFixed(1),
  ws_frames_per_s: +((frames - before) / drawn.seconds).toFixed(0),
}));
await browser.close();
